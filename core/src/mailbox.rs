//! The bounded buffer between a transport and one subscription.
//!
//! Delivering never blocks the publisher: when the buffer is full the event is
//! dropped, counted, and the subscriber receives [`Incoming::Lagged`] at the point
//! where the gap is, so nothing is lost silently and memory stays bounded. A
//! transport whose connection was lost marks the gap it leaves the same way,
//! with [`Incoming::Interrupted`].

use crate::envelope::Envelope;
use crate::stats::Stats;
use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// What a subscription yields.
// Boxing the message would cost an allocation per event to shrink the rare `Lagged`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A matching event.
    Message(Envelope),
    /// This many events were dropped here because the subscriber fell behind.
    Lagged(u64),
    /// The transport lost its connection here: events published until it was
    /// restored were not received.
    Interrupted,
}

struct State {
    queue: VecDeque<Incoming>,
    waker: Option<Waker>,
    senders: usize,
    receiver_alive: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Events buffered on both sides (the shared queue and the receiver's batch),
    /// so the bound holds however the receiver batches.
    messages: AtomicUsize,
    capacity: usize,
    stats: Arc<Stats>,
}

/// Creates a mailbox holding at most `capacity` events (at least 1).
pub fn mailbox(capacity: usize, stats: Arc<Stats>) -> (MailboxSender, MailboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(capacity.clamp(1, 1024)),
            waker: None,
            senders: 1,
            receiver_alive: true,
        }),
        messages: AtomicUsize::new(0),
        capacity: capacity.max(1),
        stats,
    });
    (
        MailboxSender {
            shared: shared.clone(),
        },
        MailboxReceiver {
            shared,
            batch: VecDeque::new(),
        },
    )
}

/// The transport's end of a mailbox. Cloneable; the stream ends when every sender is dropped.
pub struct MailboxSender {
    shared: Arc<Shared>,
}

/// What happened to a delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Queued for the subscriber.
    Queued,
    /// The buffer was full; the event was counted as lagged.
    Dropped,
    /// The subscriber is gone; the transport may forget this mailbox.
    Closed,
}

impl MailboxSender {
    /// Queues `envelope` without waiting.
    pub fn deliver(&self, envelope: Envelope) -> Delivered {
        let shared = &*self.shared;
        let waker;
        {
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if !state.receiver_alive {
                return Delivered::Closed;
            }
            if shared.messages.load(Ordering::Acquire) >= shared.capacity {
                match state.queue.back_mut() {
                    Some(Incoming::Lagged(n)) => *n += 1,
                    _ => state.queue.push_back(Incoming::Lagged(1)),
                }
                drop(state);
                Stats::incr(&shared.stats.lagged);
                return Delivered::Dropped;
            }
            state.queue.push_back(Incoming::Message(envelope));
            shared.messages.fetch_add(1, Ordering::AcqRel);
            waker = state.waker.take();
        }
        Stats::incr(&shared.stats.delivered);
        if let Some(waker) = waker {
            waker.wake();
        }
        Delivered::Queued
    }

    /// Marks where the transport lost its connection: the subscriber gets
    /// [`Incoming::Interrupted`] after what was delivered so far. Marks with
    /// nothing between them are one.
    pub fn interrupted(&self) {
        let waker = {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if !state.receiver_alive || matches!(state.queue.back(), Some(Incoming::Interrupted)) {
                return;
            }
            state.queue.push_back(Incoming::Interrupted);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// True once the subscriber has dropped its end.
    pub fn is_closed(&self) -> bool {
        !self
            .shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .receiver_alive
    }
}

impl Clone for MailboxSender {
    fn clone(&self) -> Self {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .senders += 1;
        MailboxSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for MailboxSender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The subscriber's end of a mailbox: a stream of [`Incoming`].
///
/// It takes everything queued in one lock and yields from that batch, so a busy
/// subscriber does not contend with its publishers once per event.
pub struct MailboxReceiver {
    shared: Arc<Shared>,
    batch: VecDeque<Incoming>,
}

impl Stream for MailboxReceiver {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        // Take part in tokio's cooperative budget like its own channels do, so a
        // subscriber with a full mailbox still lets its runtime run other tasks.
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let this = &mut *self;
        if this.batch.is_empty() {
            let mut state = this.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.queue.is_empty() {
                if state.senders == 0 {
                    return Poll::Ready(None);
                }
                if !state
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            std::mem::swap(&mut state.queue, &mut this.batch);
        }
        coop.made_progress();
        let item = this.batch.pop_front();
        if let Some(Incoming::Message(_)) = item {
            this.shared.messages.fetch_sub(1, Ordering::AcqRel);
        }
        Poll::Ready(item)
    }
}

impl Drop for MailboxReceiver {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.receiver_alive = false;
        state.queue.clear();
    }
}

impl MailboxReceiver {
    /// Events waiting to be yielded.
    pub fn len(&self) -> usize {
        self.shared.messages.load(Ordering::Acquire)
    }

    /// True when no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ContentType;
    use crate::envelope::Kind;
    use crate::name::Name;
    use futures::StreamExt;

    fn event(n: u8) -> Envelope {
        Envelope::new(
            Kind::Event,
            Name::new("t").unwrap(),
            ContentType::JSON,
            vec![n].into(),
        )
    }

    fn payload(item: Incoming) -> Option<u8> {
        match item {
            Incoming::Message(e) => Some(e.payload[0]),
            Incoming::Lagged(_) | Incoming::Interrupted => None,
        }
    }

    #[tokio::test]
    async fn an_interruption_is_marked_where_it_happened_once() {
        let (tx, mut rx) = mailbox(8, Arc::new(Stats::default()));
        tx.deliver(event(1));
        tx.interrupted();
        tx.interrupted();
        tx.deliver(event(2));
        tx.interrupted();
        drop(tx);
        let items: Vec<_> = rx.by_ref().collect().await;
        let shape: Vec<_> = items
            .iter()
            .map(|item| match item {
                Incoming::Message(e) => format!("event {}", e.payload[0]),
                Incoming::Lagged(n) => format!("lagged {n}"),
                Incoming::Interrupted => "interrupted".to_owned(),
            })
            .collect();
        assert_eq!(
            shape,
            ["event 1", "interrupted", "event 2", "interrupted"],
            "each mark where it happened, repeated marks with nothing between them as one"
        );
    }

    #[tokio::test]
    async fn overflow_is_reported_where_the_gap_is() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = mailbox(2, stats.clone());
        assert_eq!(tx.deliver(event(1)), Delivered::Queued);
        assert_eq!(tx.deliver(event(2)), Delivered::Queued);
        assert_eq!(tx.deliver(event(3)), Delivered::Dropped);
        assert_eq!(tx.deliver(event(4)), Delivered::Dropped);
        assert_eq!(payload(rx.next().await.unwrap()), Some(1));
        assert_eq!(tx.deliver(event(5)), Delivered::Queued);
        assert_eq!(payload(rx.next().await.unwrap()), Some(2));
        assert!(matches!(rx.next().await.unwrap(), Incoming::Lagged(2)));
        assert_eq!(payload(rx.next().await.unwrap()), Some(5));
        assert_eq!(stats.snapshot().lagged, 2);
        drop(tx);
        assert!(rx.next().await.is_none());
    }

    #[tokio::test]
    async fn dropped_receiver_closes_the_sender() {
        let (tx, rx) = mailbox(2, Arc::default());
        drop(rx);
        assert_eq!(tx.deliver(event(1)), Delivered::Closed);
        assert!(tx.is_closed());
    }
}
