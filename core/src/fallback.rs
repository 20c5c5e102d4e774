//! RPC built from pub/sub and queues, for a transport that has nothing better.
//!
//! [`RpcOverPubSub`] wraps any [`EventBus`] whose `publish_reaching` counts the
//! subscriptions an event reached, and serves `serve`/`call`/`call_all` with:
//!
//! - a *presence* topic `_rpc.presence.<method>` every provider subscribes to:
//!   a call first publishes a ping there, and zero subscriptions reached is
//!   `NoResponders` at once;
//! - a queue `_rpc.one.<method>` that providers consume as competing consumers,
//!   so each `call` is handled by exactly one provider;
//! - a topic `_rpc.all.<method>` for `call_all`, whose reach tells how many
//!   answers to wait for;
//! - replies published to the caller's inbox topic `_inbox.<id>`, matched to
//!   their calls by correlation id.
//!
//! Native RPC is faster (one hop instead of two); the conformance suite runs on
//! this layer too, so it keeps the same contract.

use crate::envelope::{Envelope, MessageId};
use crate::error::{Error, Result};
use crate::inflight::InFlight;
use crate::liveness::{self, Notice};
use crate::mailbox::Incoming;
use crate::name::{Name, Pattern};
use crate::pending::PendingCalls;
use crate::reply;
use crate::stats::Stats;
use crate::transport::{
    Capabilities, EventBus, Guard, Handler, RawDelivery, RawSubscription, SubscribeOptions,
};
use async_trait::async_trait;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::task::{AbortHandle, JoinHandle};

/// How long a provider waits in one queue receive before checking again.
const POLL: Duration = Duration::from_secs(1);
/// How long a provider may hold a request before another provider gets it.
const VISIBILITY: Duration = Duration::from_secs(30);
/// How long `shutdown` waits for running handlers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// An [`EventBus`] layer adding RPC over the inner transport's pub/sub and queues.
pub struct RpcOverPubSub {
    inner: Arc<dyn EventBus>,
    inbox: OnceCell<Inbox>,
    pending: Arc<PendingCalls>,
    in_flight: InFlight,
    providers: Mutex<Vec<AbortHandle>>,
}

struct Inbox {
    topic: String,
    router: JoinHandle<()>,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.router.abort();
    }
}

impl RpcOverPubSub {
    /// Wraps `inner`, whose own RPC (if any) is no longer used.
    pub fn new(inner: Arc<dyn EventBus>) -> Self {
        RpcOverPubSub {
            inner,
            inbox: OnceCell::new(),
            pending: Arc::default(),
            in_flight: InFlight::default(),
            providers: Mutex::default(),
        }
    }

    /// Subscribes this bus's reply inbox once, routing replies to waiting calls.
    async fn inbox(&self) -> Result<&str> {
        let inbox = self
            .inbox
            .get_or_try_init(|| async {
                let topic = format!("_inbox.{}", MessageId::new());
                let pattern = Pattern::new(&topic)?;
                let mut replies = self
                    .inner
                    .subscribe(&pattern, SubscribeOptions::default())
                    .await?;
                let pending = self.pending.clone();
                let router = tokio::spawn(async move {
                    while let Some(item) = replies.next().await {
                        if let Incoming::Message(reply) = item {
                            match read_notice(&reply) {
                                Some((call, notice)) => {
                                    pending.notice(call, notice);
                                }
                                None => {
                                    pending.complete(reply);
                                }
                            }
                        }
                    }
                });
                Ok::<_, Error>(Inbox { topic, router })
            })
            .await?;
        Ok(&inbox.topic)
    }

    /// Publishes a ping on the method's presence topic: how many providers heard it.
    async fn providers(&self, method: &Name) -> Result<usize> {
        let ping = Envelope::new(
            crate::Kind::Event,
            internal_name("presence", method)?,
            crate::ContentType::JSON,
            bytes::Bytes::new(),
        );
        self.inner
            .publish_reaching(ping)
            .await?
            .ok_or(Error::Unsupported {
                transport: self.inner.name(),
                operation: "counting subscribers, which RPC over pub/sub needs",
            })
    }
}

fn internal_name(kind: &str, method: &Name) -> Result<Name> {
    Name::new(&format!("_rpc.{kind}.{method}"))
}

fn timeout_of(request: &Envelope) -> Duration {
    request.remaining().unwrap_or(crate::DEFAULT_TIMEOUT)
}

/// Answers one request and publishes the reply to its inbox, with working
/// notices while the handler runs long ([`liveness`]).
async fn answer(inner: &Arc<dyn EventBus>, handler: &dyn Handler, request: Envelope) {
    let Some(reply_to) = request.reply_to.clone() else {
        Stats::incr(&inner.stats().rejected);
        tracing::warn!(id = %request.id, "RPC request without a reply address dropped");
        return;
    };
    let inbox = match Name::new(&reply_to) {
        Ok(inbox) => inbox,
        Err(err) => {
            tracing::warn!(%err, "RPC request with an invalid reply address dropped");
            return;
        }
    };
    let call = request.id;
    let work = async {
        let Some(mut reply) = reply::respond(handler, request, inner.stats()).await else {
            return;
        };
        reply.subject = inbox.clone();
        if let Err(err) = inner.publish(reply).await {
            tracing::warn!(%err, "could not publish an RPC reply");
        }
    };
    let notify = |notice: Notice| {
        let envelope = notice_envelope(inbox.clone(), call, notice);
        async move {
            if let Err(err) = inner.publish(envelope).await {
                tracing::debug!(%err, "could not publish an RPC working notice");
            }
        }
    };
    liveness::with_notices(work, notify).await;
}

/// The header of a working notice: `working:<worker>` or `done:<worker>`.
const NOTICE_HEADER: &str = "busbar-notice";

/// A handler's notice to the caller's inbox, correlated to the call.
fn notice_envelope(inbox: Name, call: MessageId, notice: Notice) -> Envelope {
    let mut envelope = Envelope::new(
        crate::Kind::Event,
        inbox,
        crate::ContentType::JSON,
        bytes::Bytes::new(),
    );
    envelope.correlation_id = Some(call);
    let state = if notice.done { "done" } else { "working" };
    envelope.headers.push((
        NOTICE_HEADER.to_owned(),
        format!("{state}:{}", notice.worker),
    ));
    envelope
}

/// The notice an inbox message carries, if it is one.
fn read_notice(envelope: &Envelope) -> Option<(MessageId, Notice)> {
    let (state, worker) = envelope.header(NOTICE_HEADER)?.split_once(':')?;
    let worker = MessageId(u128::from_str_radix(worker, 16).ok()?);
    let done = match state {
        "working" => false,
        "done" => true,
        _ => return None,
    };
    Some((envelope.correlation_id?, Notice { worker, done }))
}

/// One provider: answers broadcast requests and takes its share of the queue.
async fn provide(
    inner: Arc<dyn EventBus>,
    handler: Arc<dyn Handler>,
    queue: Name,
    mut broadcast: RawSubscription,
    mut presence: RawSubscription,
    in_flight: InFlight,
) {
    let run = |request: Envelope| {
        let inner = inner.clone();
        let handler = handler.clone();
        let running = in_flight.enter();
        let work = in_flight.clone();
        tokio::spawn(async move {
            work.abortable(answer(&inner, &*handler, request)).await;
            drop(running);
        });
    };
    // One receive stays pending across pings and broadcasts: recreating it on
    // every wake-up would send this provider to the back of the queue's waiters
    // each time a caller pings, and calls would pile onto whichever provider
    // happened to wait again first instead of going round.
    let mut receiving = inner.queue_receive(&queue, POLL, VISIBILITY);
    loop {
        tokio::select! {
            item = broadcast.next() => match item {
                Some(Incoming::Message(request)) => run(request),
                Some(Incoming::Lagged(missed)) => tracing::warn!(missed, "provider missed call_all requests"),
                Some(Incoming::Interrupted) => tracing::warn!("provider may have missed call_all requests while its connection was down"),
                None => return,
            },
            // Pings only need to be counted by the transport; drop them.
            ping = presence.next() => if ping.is_none() { return },
            delivery = &mut receiving => {
                receiving = inner.queue_receive(&queue, POLL, VISIBILITY);
                match delivery {
                    Ok(Some(delivery)) => settle(delivery, &run).await,
                    Ok(None) => {}
                    Err(Error::Closed) => return,
                    Err(err) => tracing::warn!(%err, %queue, "provider could not receive requests"),
                }
            },
        }
    }
}

async fn settle(delivery: RawDelivery, run: &impl Fn(Envelope)) {
    let request = delivery.envelope().clone();
    // Acked before running: the caller, not the queue, retries a lost request.
    if let Err(err) = delivery.ack().await {
        tracing::warn!(%err, "could not ack an RPC request");
        return;
    }
    run(request);
}

#[async_trait]
impl EventBus for RpcOverPubSub {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        let inner = self.inner.capabilities();
        Capabilities {
            rpc: inner.queues && inner.acks,
            call_all: true,
            ..inner
        }
    }

    fn stats(&self) -> &Arc<Stats> {
        self.inner.stats()
    }

    async fn publish(&self, event: Envelope) -> Result<()> {
        self.inner.publish(event).await
    }

    async fn publish_reaching(&self, event: Envelope) -> Result<Option<usize>> {
        self.inner.publish_reaching(event).await
    }

    async fn subscribe(
        &self,
        pattern: &Pattern,
        options: SubscribeOptions,
    ) -> Result<RawSubscription> {
        self.inner.subscribe(pattern, options).await
    }

    async fn queue_put(&self, item: Envelope) -> Result<()> {
        self.inner.queue_put(item).await
    }

    async fn queue_get(&self, queue: &Name, timeout: Duration) -> Result<Option<Envelope>> {
        self.inner.queue_get(queue, timeout).await
    }

    async fn queue_receive(
        &self,
        queue: &Name,
        timeout: Duration,
        visibility: Duration,
    ) -> Result<Option<RawDelivery>> {
        self.inner.queue_receive(queue, timeout, visibility).await
    }

    async fn queue_len(&self, queue: &Name) -> Result<usize> {
        self.inner.queue_len(queue).await
    }

    async fn serve(&self, method: &Name, handler: Arc<dyn Handler>) -> Result<Guard> {
        let options = SubscribeOptions::default();
        let mut broadcast = self
            .inner
            .subscribe(&internal_name("all", method)?.into(), options.clone())
            .await?;
        let mut presence = self
            .inner
            .subscribe(&internal_name("presence", method)?.into(), options)
            .await?;
        let broadcast_guard = broadcast.take_guard();
        let presence_guard = presence.take_guard();
        let task = tokio::spawn(provide(
            self.inner.clone(),
            handler,
            internal_name("one", method)?,
            broadcast,
            presence,
            self.in_flight.clone(),
        ))
        .abort_handle();
        self.providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task.clone());
        // Unsubscribing here, not in the task, makes the provider vanish at once:
        // a call right after the drop already sees nobody.
        Ok(Guard::new(move || {
            drop(presence_guard);
            drop(broadcast_guard);
            task.abort();
        }))
    }

    async fn call(&self, request: Envelope) -> Result<Envelope> {
        if self.providers(&request.subject).await? == 0 {
            return Err(Error::NoResponders {
                method: request.subject.to_string(),
            });
        }
        let timeout = timeout_of(&request);
        let call = self.pending.register(request.id);
        let mut request = request;
        request.reply_to = Some(self.inbox().await?.to_owned());
        let method = request.subject.clone();
        request.subject = internal_name("one", &method)?;
        self.inner.queue_put(request).await?;
        call.one(timeout, method.as_str()).await
    }

    async fn call_all(&self, request: Envelope) -> Result<Vec<Result<Envelope>>> {
        let timeout = timeout_of(&request);
        let call = self.pending.register(request.id);
        let method = request.subject.clone();
        let mut request = request;
        request.reply_to = Some(self.inbox().await?.to_owned());
        request.subject = internal_name("all", &method)?;
        let reached = self
            .inner
            .publish_reaching(request)
            .await?
            .ok_or(Error::Unsupported {
                transport: self.inner.name(),
                operation: "counting subscribers, which RPC over pub/sub needs",
            })?;
        if reached == 0 {
            return Err(Error::NoResponders {
                method: method.to_string(),
            });
        }
        Ok(call.gather(reached, timeout, method.as_str()).await)
    }

    async fn shutdown(&self) -> Result<()> {
        // Stop taking requests, let running handlers publish their replies, then close.
        for provider in self
            .providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            provider.abort();
        }
        if !self.in_flight.wait_idle(SHUTDOWN_GRACE).await {
            tracing::warn!(
                running = self.in_flight.running(),
                "shutdown: handlers still running after the grace period"
            );
        }
        self.pending.fail_all();
        self.inner.shutdown().await
    }

    fn kill(&self) -> Result<()> {
        for provider in self
            .providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            provider.abort();
        }
        self.in_flight.kill();
        self.inner.kill()
    }
}
