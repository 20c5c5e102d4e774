//! Typed subscriptions: a stream form and a handler form.

use crate::error::{Error, Result};
use crate::event::FromEnvelope;
use crate::mailbox::Incoming;
use crate::stats::Stats;
use crate::transport::RawSubscription;
use futures::{Stream, StreamExt};
use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A live subscription yielding `T` for each matching event. Dropping it unsubscribes.
///
/// Items are `Ok(value)`, or an error the subscription survives:
/// [`Error::Lagged`] when this subscriber fell behind and missed events,
/// [`Error::Interrupted`] when the transport lost its connection (events
/// published until it is restored are missed), and [`Error::Codec`] when an
/// event's payload does not decode as `T`.
pub struct Subscription<T> {
    raw: RawSubscription,
    stats: Arc<Stats>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Subscription<T> {
    pub(crate) fn new(raw: RawSubscription, stats: Arc<Stats>) -> Self {
        Subscription {
            raw,
            stats,
            _type: PhantomData,
        }
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &crate::Pattern {
        self.raw.pattern()
    }
}

impl<T: FromEnvelope> Stream for Subscription<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        Poll::Ready(match futures::ready!(self.raw.poll_next_unpin(cx)) {
            None => None,
            Some(Incoming::Lagged(missed)) => Some(Err(Error::Lagged { missed })),
            Some(Incoming::Interrupted) => Some(Err(Error::Interrupted)),
            Some(Incoming::Message(envelope)) => {
                tracing::trace!(topic = %envelope.subject, id = %envelope.id, "event delivered");
                Some(T::from_envelope(envelope).inspect_err(|_| {
                    Stats::incr(&self.stats.decode_errors);
                }))
            }
        })
    }
}

/// What a subscriber handler may return: nothing, or a `Result` whose error is logged.
pub trait Outcome: Send + 'static {
    /// Logs a failure, if this is one.
    fn report(self, pattern: &str);
}

impl Outcome for () {
    fn report(self, _: &str) {}
}

impl<E: Display + Send + 'static> Outcome for Result<(), E> {
    fn report(self, pattern: &str) {
        if let Err(err) = self {
            tracing::warn!(%pattern, %err, "subscriber handler failed");
        }
    }
}

/// A handler subscribed with [`Bus::on`](crate::Bus::on). Dropping it unsubscribes;
/// [`detach`](Listener::detach) keeps it running until the bus shuts down.
#[must_use = "dropping a Listener unsubscribes it; call .detach() to keep it running"]
pub struct Listener {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Listener {
    /// Keeps the handler running until the bus shuts down.
    pub fn detach(mut self) {
        self.task.take();
    }

    /// Unsubscribes now.
    pub fn stop(self) {}
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Runs `handler` for each item of `subscription`, one at a time, in order.
pub(crate) fn listen<T, F, Fut>(mut subscription: Subscription<T>, handler: F) -> Listener
where
    T: FromEnvelope,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Outcome,
{
    let task = tokio::spawn(async move {
        let pattern = subscription.pattern().to_string();
        while let Some(item) = subscription.next().await {
            match item {
                Ok(value) => handler(value).await.report(&pattern),
                Err(err) => tracing::warn!(%pattern, %err, "subscription item skipped"),
            }
        }
    });
    Listener { task: Some(task) }
}
