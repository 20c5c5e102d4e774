//! The transport SPI: what `memory://`, `zmq://` and `redis://` each implement.
//!
//! Users never call this directly; they hold a [`Bus`](crate::Bus), which encodes
//! typed values into [`Envelope`]s and calls an `Arc<dyn EventBus>`. Every method
//! is non-generic and returns a boxed `Send` future, so the trait is object safe
//! and the transport can be chosen at run time from a URL.

use crate::envelope::Envelope;
use crate::error::{Error, Fault, Result};
use crate::mailbox::{Incoming, MailboxReceiver};
use crate::name::{Name, Pattern};
use crate::stats::Stats;
use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// What a transport implements. The conformance suite checks that every missing
/// capability answers [`Error::Unsupported`] rather than a wrong result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Wildcard patterns (`*`, `>`) in subscriptions.
    pub patterns: bool,
    /// Named work queues with `put`/`get`/`len`.
    pub queues: bool,
    /// Acknowledged queue receive with redelivery.
    pub acks: bool,
    /// Request/reply to one provider.
    pub rpc: bool,
    /// Request to every provider, gathering each answer.
    pub call_all: bool,
    /// Queue items outlive the processes that put them.
    pub persistence: bool,
    /// Several processes can share the bus.
    pub cross_process: bool,
}

impl Capabilities {
    /// Every capability.
    pub const FULL: Capabilities = Capabilities {
        patterns: true,
        queues: true,
        acks: true,
        rpc: true,
        call_all: true,
        persistence: true,
        cross_process: true,
    };
}

/// Options for one subscription.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Events buffered for a slow subscriber before it lags.
    pub capacity: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions { capacity: 4096 }
    }
}

/// A guard that runs its clean-up (unsubscribe, unregister) once, when dropped.
pub struct Guard(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Guard {
    /// A guard running `cleanup` on drop.
    pub fn new(cleanup: impl FnOnce() + Send + Sync + 'static) -> Self {
        Guard(Some(Box::new(cleanup)))
    }

    /// A guard with nothing to clean up.
    pub fn noop() -> Self {
        Guard(None)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(cleanup) = self.0.take() {
            cleanup();
        }
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

/// A live subscription as a transport returns it: a stream of [`Incoming`] that
/// unsubscribes when dropped.
pub struct RawSubscription {
    pattern: Pattern,
    receiver: MailboxReceiver,
    filter: Option<MessageFilter>,
    _guard: Guard,
}

/// What [`RawSubscription::filter_map_messages`] applies to each message.
type MessageFilter = Box<dyn FnMut(Envelope) -> Option<Envelope> + Send + Sync>;

/// Messages a filter may drop in one poll before the stream yields to the runtime.
const FILTER_BUDGET: usize = 64;

impl RawSubscription {
    /// Wraps a mailbox receiver; `guard` unsubscribes on drop.
    pub fn new(pattern: Pattern, receiver: MailboxReceiver, guard: Guard) -> Self {
        RawSubscription {
            pattern,
            receiver,
            filter: None,
            _guard: guard,
        }
    }

    /// Passes every message through `f` before it is yielded: `Some` delivers the
    /// (possibly changed) envelope, `None` drops it. Notices
    /// ([`Incoming::Lagged`], [`Incoming::Interrupted`]) pass unchanged. A layer (such as [`security`](crate::security)) uses this
    /// to verify or transform what a transport delivers; filters added later run
    /// after earlier ones.
    pub fn filter_map_messages(
        mut self,
        mut f: impl FnMut(Envelope) -> Option<Envelope> + Send + Sync + 'static,
    ) -> Self {
        self.filter = Some(match self.filter.take() {
            None => Box::new(f),
            Some(mut first) => Box::new(move |envelope| first(envelope).and_then(&mut f)),
        });
        self
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// Takes the guard out: the subscription then ends when the returned guard
    /// drops (its stream ends too), not when this stream is dropped.
    pub fn take_guard(&mut self) -> Guard {
        std::mem::replace(&mut self._guard, Guard::noop())
    }
}

impl Stream for RawSubscription {
    type Item = Incoming;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let this = &mut *self;
        let Some(filter) = &mut this.filter else {
            return Pin::new(&mut this.receiver).poll_next(cx);
        };
        for _ in 0..FILTER_BUDGET {
            match futures::ready!(Pin::new(&mut this.receiver).poll_next(cx)) {
                Some(Incoming::Message(envelope)) => {
                    if let Some(envelope) = filter(envelope) {
                        return Poll::Ready(Some(Incoming::Message(envelope)));
                    }
                }
                other => return Poll::Ready(other),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Settles one queue delivery with the transport.
#[async_trait]
pub trait Acker: Send + Sync + 'static {
    /// The item is done; remove it for good.
    async fn ack(&self) -> Result<()>;
    /// The item was not processed; make it available again.
    async fn nack(&self) -> Result<()>;
}

/// A queue item handed out by an acknowledged receive. Must be [`ack`](Self::ack)ed;
/// dropping it unacknowledged puts the item back (a `nack`).
pub struct RawDelivery {
    envelope: Envelope,
    attempt: u32,
    acker: Option<Box<dyn Acker>>,
}

impl RawDelivery {
    /// A delivery of `envelope`, the `attempt`-th time it is handed out (1 = first).
    pub fn new(envelope: Envelope, attempt: u32, acker: Box<dyn Acker>) -> Self {
        RawDelivery {
            envelope,
            attempt,
            acker: Some(acker),
        }
    }

    /// The item.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Replaces the item handed on, keeping the acknowledgement of the original
    /// (a layer swaps in the verified, decrypted envelope).
    pub fn set_envelope(&mut self, envelope: Envelope) {
        self.envelope = envelope;
    }

    /// How many times the item has been handed out, this one included.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Removes the item for good.
    pub async fn ack(mut self) -> Result<()> {
        match self.acker.take() {
            Some(acker) => acker.ack().await,
            None => Err(Error::Closed),
        }
    }

    /// Puts the item back for another consumer.
    pub async fn nack(mut self) -> Result<()> {
        match self.acker.take() {
            Some(acker) => acker.nack().await,
            None => Err(Error::Closed),
        }
    }
}

impl Drop for RawDelivery {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            // Without a runtime the transport's visibility timeout brings the item back.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(err) = acker.nack().await {
                        tracing::debug!(%err, "nack of a dropped delivery failed");
                    }
                });
            }
        }
    }
}

impl std::fmt::Debug for RawDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDelivery")
            .field("envelope", &self.envelope)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// Answers RPC requests for one method.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one request, returning the encoded result or a fault.
    async fn handle(&self, request: Envelope) -> Result<Bytes, Fault>;

    /// Checks a request before it is handled; `None` drops it unanswered (the
    /// caller times out). [`reply::respond`](crate::reply::respond) calls it
    /// first. The default admits every request unchanged; the
    /// [`security`](crate::security) layer verifies and decrypts here.
    fn admit(&self, request: Envelope) -> Option<Envelope> {
        Some(request)
    }

    /// Finishes a reply before the transport sends it; `None` sends nothing.
    /// [`reply::respond`](crate::reply::respond) calls it last. The default
    /// keeps the reply unchanged; the security layer seals and signs here.
    fn finish(&self, reply: Envelope) -> Option<Envelope> {
        Some(reply)
    }
}

/// The transport SPI. Each method's contract is in `docs/semantics.md`; the
/// conformance suite checks it.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// A short name for errors and logs: `memory`, `redis`, `zmq`.
    fn name(&self) -> &'static str;

    /// What this transport implements.
    fn capabilities(&self) -> Capabilities;

    /// This bus's counters.
    fn stats(&self) -> &Arc<Stats>;

    /// Publishes an event to every matching subscription.
    async fn publish(&self, event: Envelope) -> Result<()>;

    /// Publishes like [`publish`](EventBus::publish) and tells how many
    /// subscriptions the event reached, where the transport knows (Redis
    /// `PUBLISH` answers it, a broker can count). `None` when it cannot tell.
    ///
    /// [`RpcOverPubSub`](crate::fallback::RpcOverPubSub) needs it to answer
    /// `NoResponders` at once and to know how many `call_all` answers to await.
    async fn publish_reaching(&self, event: Envelope) -> Result<Option<usize>> {
        self.publish(event).await.map(|()| None)
    }

    /// Subscribes to `pattern`; the subscription is live end to end on return.
    async fn subscribe(
        &self,
        pattern: &Pattern,
        options: SubscribeOptions,
    ) -> Result<RawSubscription>;

    /// Appends an item to the queue named by its subject.
    async fn queue_put(&self, item: Envelope) -> Result<()>;

    /// Takes the next item of `queue`, waiting up to `timeout`; `Ok(None)` on timeout.
    async fn queue_get(&self, queue: &Name, timeout: Duration) -> Result<Option<Envelope>>;

    /// Takes the next item of `queue` for acknowledged processing, waiting up to
    /// `timeout`. Unless acknowledged within `visibility`, it is delivered again.
    async fn queue_receive(
        &self,
        queue: &Name,
        timeout: Duration,
        visibility: Duration,
    ) -> Result<Option<RawDelivery>>;

    /// Items waiting in `queue` (not those in flight).
    async fn queue_len(&self, queue: &Name) -> Result<usize>;

    /// Serves `method` with `handler` until the returned guard is dropped.
    async fn serve(&self, method: &Name, handler: Arc<dyn Handler>) -> Result<Guard>;

    /// Sends `request` to one provider of its method and waits for the reply
    /// (a [`Kind::Reply`](crate::Kind::Reply) or
    /// [`Kind::ErrorReply`](crate::Kind::ErrorReply)) until its deadline.
    async fn call(&self, request: Envelope) -> Result<Envelope>;

    /// Sends `request` to every provider of its method and gathers one entry per
    /// provider: its reply, [`Error::ProviderLost`] if it died before
    /// answering, or [`Error::Timeout`] if it missed the deadline.
    async fn call_all(&self, request: Envelope) -> Result<Vec<Result<Envelope>>>;

    /// Stops taking work, lets in-flight handlers finish (bounded) and releases
    /// every broker-side resource.
    async fn shutdown(&self) -> Result<()>;

    /// A test hook, not for applications: dies as a crashed process would.
    /// Drops every connection at once, aborts running handlers, says no
    /// goodbye and sends nothing more; later calls are [`Error::Closed`].
    /// The conformance suite uses it to lose a provider mid-call. A transport
    /// that cannot do it answers [`Error::Unsupported`], which fails the suite.
    #[doc(hidden)]
    fn kill(&self) -> Result<()> {
        Err(Error::Unsupported {
            transport: self.name(),
            operation: "kill (a test hook)",
        })
    }
}

/// Opens a transport for a URL scheme. Transport crates register one with
/// [`register_connector!`](crate::register_connector), and
/// [`Bus::connect`](crate::Bus::connect) finds it by scheme.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The URL schemes this connector opens, e.g. `["redis", "rediss"]`.
    fn schemes(&self) -> &'static [&'static str];

    /// Opens a transport for `url`.
    async fn connect(&self, url: &str) -> Result<Arc<dyn EventBus>>;
}
