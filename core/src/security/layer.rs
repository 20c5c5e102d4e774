//! [`SecureLayer`] and the [`Secured`] transport it makes.

use super::replay::{Freshness, SeenIds};
use super::{seal, sign, KeyRing, Limits, Rejection};
use crate::envelope::{Envelope, Kind};
use crate::error::{Error, Fault, Result};
use crate::name::{Name, Pattern};
use crate::stats::Stats;
use crate::transport::{
    Capabilities, EventBus, Guard, Handler, RawDelivery, RawSubscription, SubscribeOptions,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Header added to a refused queue item moved to the dead-letter queue.
pub const REJECTED_HEADER: &str = "busbar-rejected";

/// Configures and applies the security layer: keys, encryption, limits, freshness.
///
/// ```
/// # async fn demo() -> busbar_core::Result<()> {
/// use busbar_core::security::{KeyRing, SecureLayer};
/// # let secret = [7u8; 32];
/// let keys = KeyRing::new("k1", &secret).expect("a 32-byte secret");
/// # let transport = busbar_core::Bus::connect("memory://doc-secure").await?.transport().clone();
/// let bus = busbar_core::Bus::from_transport(
///     SecureLayer::new(keys).encrypt(true).layer(transport),
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SecureLayer {
    pub(super) keys: Option<KeyRing>,
    pub(super) encrypt: bool,
    pub(super) limits: Limits,
    pub(super) freshness: Freshness,
}

impl SecureLayer {
    /// Signs everything sent with the ring's signing key and accepts only what
    /// one of its keys signed.
    pub fn new(keys: KeyRing) -> SecureLayer {
        SecureLayer {
            keys: Some(keys),
            ..SecureLayer::limits_only(Limits::default())
        }
    }

    /// Enforces `limits` only: nothing is signed or checked for a signature.
    pub fn limits_only(limits: Limits) -> SecureLayer {
        SecureLayer {
            keys: None,
            encrypt: false,
            limits,
            freshness: Freshness::default(),
        }
    }

    /// Seals every payload sent, and refuses unsealed payloads received.
    ///
    /// Needs keys: a layer made with [`limits_only`](Self::limits_only) that is
    /// asked to encrypt fails every send rather than send plaintext.
    pub fn encrypt(mut self, on: bool) -> SecureLayer {
        self.encrypt = on;
        self
    }

    /// Sets the size limits.
    pub fn limits(mut self, limits: Limits) -> SecureLayer {
        self.limits = limits;
        self
    }

    /// Sets the accepted age of messages and the replay memory.
    pub fn freshness(mut self, freshness: Freshness) -> SecureLayer {
        self.freshness = freshness;
        self
    }

    /// Wraps `inner`: everything through the result is signed, sealed and checked.
    pub fn layer(&self, inner: Arc<dyn EventBus>) -> Arc<dyn EventBus> {
        Arc::new(Secured::new(inner, self.clone()))
    }
}

/// A transport with the security layer around it. Made by [`SecureLayer::layer`].
pub struct Secured {
    inner: Arc<dyn EventBus>,
    shared: Arc<Shared>,
}

struct Shared {
    config: SecureLayer,
    stats: Arc<Stats>,
    transport: &'static str,
    log: LogBudget,
}

/// Most refusals logged per second; the rest are counted, and their number is
/// logged with the next refusal logged.
const LOGS_PER_SECOND: u64 = 20;

/// Keeps a flood of forged messages from flooding the log too.
#[derive(Default)]
struct LogBudget {
    /// `second << 16 | logged in that second`.
    window: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogBudget {
    /// `Some(refusals not logged since the last one)` when this one may be logged.
    fn take(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let second = crate::now_millis() / 1000;
        let admitted = self
            .window
            .fetch_update(Relaxed, Relaxed, |window| {
                let (at, count) = (window >> 16, window & 0xffff);
                if at != second {
                    Some(second << 16 | 1)
                } else if count < LOGS_PER_SECOND {
                    Some(window + 1)
                } else {
                    None
                }
            })
            .is_ok();
        if admitted {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

impl std::fmt::Debug for Secured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secured")
            .field("transport", &self.shared.transport)
            .field("config", &self.shared.config)
            .finish()
    }
}

// ===== impl Secured =====

impl Secured {
    /// Wraps `inner` with `config`.
    pub fn new(inner: Arc<dyn EventBus>, config: SecureLayer) -> Secured {
        let shared = Arc::new(Shared {
            stats: inner.stats().clone(),
            transport: inner.name(),
            config,
            log: LogBudget::default(),
        });
        Secured { inner, shared }
    }

    /// The transport underneath.
    pub fn inner(&self) -> &Arc<dyn EventBus> {
        &self.inner
    }

    async fn dead_letter(&self, queue: &Name, mut item: Envelope, why: Rejection) {
        let Ok(dead) = Name::new(&format!("_dead.{queue}")) else {
            tracing::warn!(%queue, "no dead-letter queue name fits; the refused item is dropped");
            return;
        };
        item.subject = dead;
        item.headers
            .push((REJECTED_HEADER.to_owned(), why.as_str().to_owned()));
        match self.inner.queue_put(item).await {
            Ok(()) => Stats::incr(&self.shared.stats.dead_lettered),
            Err(err) => tracing::warn!(%queue, %err, "could not dead-letter a refused queue item"),
        }
    }
}

/// Where an incoming envelope arrived, which its signed fields must agree with:
/// a validly signed envelope moved to another channel below the layer (an event
/// replayed into a queue, a queue item into another queue, a request to another
/// method) is refused as [`Rejection::Misrouted`].
#[derive(Clone, Copy)]
enum Route<'a> {
    /// On a subscription to this pattern: the subject must match it.
    Subscription(&'a Pattern),
    /// From this queue: the subject must be its name. No freshness check (items
    /// may wait for days).
    Queue(&'a Name),
    /// To a handler of this method: a request with this subject.
    Request(&'a Name),
    /// To the caller of this request: a reply correlated to it.
    Reply(crate::MessageId),
}

impl Route<'_> {
    fn fresh(self) -> bool {
        !matches!(self, Route::Queue(_))
    }

    fn admits(self, envelope: &Envelope) -> bool {
        match self {
            Route::Subscription(pattern) => pattern.matches(envelope.subject.as_str()),
            Route::Queue(queue) => envelope.subject == *queue,
            Route::Request(method) => envelope.kind == Kind::Request && envelope.subject == *method,
            Route::Reply(request) => {
                matches!(envelope.kind, Kind::Reply | Kind::ErrorReply)
                    && envelope.correlation_id == Some(request)
            }
        }
    }
}

/// What [`Shared::incoming`] decided; a refused envelope comes back unchanged.
enum Verdict {
    Accept(Envelope),
    Refuse(Rejection, Envelope),
}

impl Shared {
    /// Limits, then seal, then sign.
    fn outgoing(&self, mut envelope: Envelope) -> Result<Envelope> {
        let config = &self.config;
        config.limits.check(&envelope)?;
        match &config.keys {
            Some(keys) => {
                if config.encrypt {
                    seal::seal(&mut envelope, keys.signing())?;
                }
                sign::sign(&mut envelope, keys)?;
                config.limits.check(&envelope)?;
            }
            None if config.encrypt => {
                return Err(Error::Malformed(
                    "encryption is on but the security layer has no keys".into(),
                ))
            }
            None => {}
        }
        Ok(envelope)
    }

    /// Limits, signature (constant time), freshness, replay, then decryption.
    fn incoming(
        &self,
        mut envelope: Envelope,
        route: Route<'_>,
        seen: Option<&mut SeenIds>,
    ) -> Verdict {
        let key = match self.verify(&envelope, route, seen) {
            Ok(Some(key)) => key,
            Ok(None) => return Verdict::Accept(envelope),
            Err(why) => return Verdict::Refuse(why, envelope),
        };
        if seal::is_sealed(&envelope) {
            if let Err(why) = seal::open(&mut envelope, key) {
                return Verdict::Refuse(why, envelope);
            }
        } else if self.config.encrypt {
            return Verdict::Refuse(Rejection::NotSealed, envelope);
        }
        envelope.signature = Bytes::new();
        Verdict::Accept(envelope)
    }

    /// Everything but decryption; the key that signed, if this layer has keys.
    fn verify(
        &self,
        envelope: &Envelope,
        route: Route<'_>,
        seen: Option<&mut SeenIds>,
    ) -> Result<Option<&super::Key>, Rejection> {
        let config = &self.config;
        config
            .limits
            .check(envelope)
            .map_err(|_| Rejection::TooLarge)?;
        let Some(keys) = &config.keys else {
            return Ok(None);
        };
        if envelope.signature.is_empty() {
            return Err(Rejection::Unsigned);
        }
        let key = sign::verify(envelope, keys)?;
        if !route.admits(envelope) {
            return Err(Rejection::Misrouted);
        }
        if route.fresh() {
            config.freshness.check_time(envelope)?;
        }
        if let Some(seen) = seen {
            seen.check(envelope, config.freshness.max_age)?;
        }
        Ok(Some(key))
    }

    /// Counts and logs a refused envelope with the identity its sender claims
    /// (at most [`LOGS_PER_SECOND`] logged; the others are counted).
    fn reject(&self, envelope: &Envelope, why: Rejection, what: &'static str) {
        Stats::incr(&self.stats.rejected);
        let Some(not_logged) = self.log.take() else {
            return;
        };
        tracing::warn!(
            transport = self.transport,
            what,
            subject = %envelope.subject,
            id = %envelope.id,
            key_id = sign::claimed_key_id(&envelope.signature).unwrap_or("-"),
            reason = %why,
            not_logged,
            "rejected an incoming envelope"
        );
    }

    /// [`incoming`](Self::incoming), counting and logging a refusal.
    fn admit(
        &self,
        envelope: Envelope,
        what: &'static str,
        route: Route<'_>,
        seen: Option<&mut SeenIds>,
    ) -> Option<Envelope> {
        match self.incoming(envelope, route, seen) {
            Verdict::Accept(envelope) => Some(envelope),
            Verdict::Refuse(why, original) => {
                self.reject(&original, why, what);
                None
            }
        }
    }

    /// Checks a reply to `request_id`; a refusal fails the call.
    fn accept_reply(&self, reply: Envelope, request_id: crate::MessageId) -> Result<Envelope> {
        match self.incoming(reply, Route::Reply(request_id), None) {
            Verdict::Accept(reply) => Ok(reply),
            Verdict::Refuse(why, original) => {
                self.reject(&original, why, "reply");
                Err(Error::Malformed(format!("the reply was rejected: {why}")))
            }
        }
    }
}

#[async_trait]
impl EventBus for Secured {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn stats(&self) -> &Arc<Stats> {
        self.inner.stats()
    }

    async fn publish(&self, event: Envelope) -> Result<()> {
        self.inner.publish(self.shared.outgoing(event)?).await
    }

    async fn publish_reaching(&self, event: Envelope) -> Result<Option<usize>> {
        self.inner
            .publish_reaching(self.shared.outgoing(event)?)
            .await
    }

    async fn subscribe(
        &self,
        pattern: &Pattern,
        options: SubscribeOptions,
    ) -> Result<RawSubscription> {
        let raw = self.inner.subscribe(pattern, options).await?;
        let shared = self.shared.clone();
        let mut seen = SeenIds::new(shared.config.freshness.capacity);
        let pattern = pattern.clone();
        Ok(raw.filter_map_messages(move |envelope| {
            shared.admit(
                envelope,
                "event",
                Route::Subscription(&pattern),
                Some(&mut seen),
            )
        }))
    }

    async fn queue_put(&self, item: Envelope) -> Result<()> {
        self.inner.queue_put(self.shared.outgoing(item)?).await
    }

    async fn queue_get(&self, queue: &Name, timeout: Duration) -> Result<Option<Envelope>> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(item) = self.inner.queue_get(queue, remaining).await? else {
                return Ok(None);
            };
            match self.shared.incoming(item, Route::Queue(queue), None) {
                Verdict::Accept(item) => return Ok(Some(item)),
                Verdict::Refuse(why, original) => {
                    self.shared.reject(&original, why, "queue item");
                    self.dead_letter(queue, original, why).await;
                }
            }
        }
    }

    async fn queue_receive(
        &self,
        queue: &Name,
        timeout: Duration,
        visibility: Duration,
    ) -> Result<Option<RawDelivery>> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(mut delivery) = self
                .inner
                .queue_receive(queue, remaining, visibility)
                .await?
            else {
                return Ok(None);
            };
            match self
                .shared
                .incoming(delivery.envelope().clone(), Route::Queue(queue), None)
            {
                Verdict::Accept(item) => {
                    delivery.set_envelope(item);
                    return Ok(Some(delivery));
                }
                Verdict::Refuse(why, original) => {
                    self.shared.reject(&original, why, "queue item");
                    self.dead_letter(queue, original, why).await;
                    if let Err(err) = delivery.ack().await {
                        tracing::warn!(%queue, %err, "could not remove a refused queue item");
                    }
                }
            }
        }
    }

    async fn queue_len(&self, queue: &Name) -> Result<usize> {
        self.inner.queue_len(queue).await
    }

    async fn serve(&self, method: &Name, handler: Arc<dyn Handler>) -> Result<Guard> {
        let secured = SecuredHandler {
            method: method.clone(),
            seen: Mutex::new(SeenIds::new(self.shared.config.freshness.capacity)),
            inner: handler,
            shared: self.shared.clone(),
        };
        self.inner.serve(method, Arc::new(secured)).await
    }

    async fn call(&self, request: Envelope) -> Result<Envelope> {
        let request = self.shared.outgoing(request)?;
        let id = request.id;
        let reply = self.inner.call(request).await?;
        self.shared.accept_reply(reply, id)
    }

    async fn call_all(&self, request: Envelope) -> Result<Vec<Result<Envelope>>> {
        let request = self.shared.outgoing(request)?;
        let id = request.id;
        let replies = self.inner.call_all(request).await?;
        Ok(replies
            .into_iter()
            .map(|reply| reply.and_then(|reply| self.shared.accept_reply(reply, id)))
            .collect())
    }

    async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown().await
    }

    fn kill(&self) -> Result<()> {
        self.inner.kill()
    }
}

/// A handler behind the layer: requests are checked before it runs, and its
/// replies are sealed and signed before the transport sends them.
struct SecuredHandler {
    method: Name,
    inner: Arc<dyn Handler>,
    shared: Arc<Shared>,
    seen: Mutex<SeenIds>,
}

#[async_trait]
impl Handler for SecuredHandler {
    async fn handle(&self, request: Envelope) -> Result<Bytes, Fault> {
        self.inner.handle(request).await
    }

    fn admit(&self, request: Envelope) -> Option<Envelope> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.admit(
            request,
            "request",
            Route::Request(&self.method),
            Some(&mut seen),
        )
    }

    fn finish(&self, reply: Envelope) -> Option<Envelope> {
        let fallback = reply.clone();
        match self.shared.outgoing(reply) {
            Ok(reply) => Some(reply),
            Err(err) => {
                tracing::warn!(method = %fallback.subject, %err, "a reply could not be sent; answering with an error");
                let body = serde_json::json!({ "kind": err.kind(), "message": err.to_string() });
                let mut error = fallback;
                error.kind = Kind::ErrorReply;
                error.payload = Bytes::from(body.to_string());
                self.shared.outgoing(error).ok()
            }
        }
    }
}

#[cfg(test)]
#[path = "layer_tests.rs"]
mod tests;
