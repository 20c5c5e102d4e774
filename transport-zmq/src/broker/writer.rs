//! One writer task per client: sends what the broker queued for it, batching
//! consecutive events into one EVENT message, and reports when it drained.

use super::{cmd, Internal};
use crate::protocol;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use zeromq::{SocketSend, ZmqMessage};

/// Most events packed into one EVENT message.
pub(crate) const MAX_EVENTS_PER_MESSAGE: usize = 256;
/// Most bytes of envelopes packed into one EVENT message.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// What the broker queues for a client.
pub(crate) enum Out {
    /// Events, each for the listed subscriptions (a u64s frame) of this client.
    Events(Vec<(Bytes, Bytes)>),
    /// A whole message (signature and command included).
    Frames(Vec<Bytes>),
}

/// The broker's handle on one client's writer.
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    /// Events queued and not yet handed to the socket.
    pub(crate) queued: Arc<AtomicUsize>,
    /// Set when `queued` went above the high-water mark; cleared by the writer
    /// (with a [`Internal::Drained`]) once below the low-water mark.
    pub(crate) above: Arc<AtomicBool>,
}

impl Outbox {
    /// Starts the writer of the client `key` whose routing identity is `identity`.
    pub(crate) fn start(
        key: u64,
        identity: Bytes,
        socket: zeromq::RouterSendHalf,
        low_water: usize,
        batches: bool,
        internal: mpsc::UnboundedSender<Internal>,
    ) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let above = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            key,
            identity,
            socket,
            queued: queued.clone(),
            above: above.clone(),
            low_water,
            batches,
            internal,
        };
        tokio::spawn(writer.run(rx));
        Outbox { tx, queued, above }
    }

    /// Queues events; returns the number of events now queued.
    pub(crate) fn events(&self, events: Vec<(Bytes, Bytes)>) -> usize {
        let n = events.len();
        let queued = self.queued.fetch_add(n, Ordering::Relaxed) + n;
        if self.tx.send(Out::Events(events)).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
        queued
    }

    /// Queues a whole message.
    pub(crate) fn send(&self, frames: Vec<Bytes>) {
        let _ = self.tx.send(Out::Frames(frames));
    }
}

struct Writer {
    key: u64,
    identity: Bytes,
    socket: zeromq::RouterSendHalf,
    queued: Arc<AtomicUsize>,
    above: Arc<AtomicBool>,
    low_water: usize,
    batches: bool,
    internal: mpsc::UnboundedSender<Internal>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Out>) {
        let mut events: VecDeque<(Bytes, Bytes)> = VecDeque::new();
        let mut held: Option<Vec<Bytes>> = None;
        loop {
            if events.is_empty() && held.is_none() {
                match rx.recv().await {
                    None => return,
                    Some(Out::Events(more)) => events.extend(more),
                    Some(Out::Frames(frames)) => held = Some(frames),
                }
            }
            // Take what is already there, keeping the order: nothing after a
            // held message may overtake it.
            while held.is_none() && events.len() < MAX_EVENTS_PER_MESSAGE {
                match rx.try_recv() {
                    Ok(Out::Events(more)) => events.extend(more),
                    Ok(Out::Frames(frames)) => held = Some(frames),
                    Err(_) => break,
                }
            }
            if !events.is_empty() {
                let mut frames = protocol::message(cmd::EVENT, []);
                let mut bytes = 0;
                let mut n = 0;
                while n < MAX_EVENTS_PER_MESSAGE && bytes < MAX_BATCH_BYTES {
                    let Some((subs, envelope)) = events.pop_front() else {
                        break;
                    };
                    bytes += envelope.len();
                    frames.push(subs);
                    frames.push(envelope);
                    n += 1;
                }
                let result = self.send(frames).await;
                let left = self.queued.fetch_sub(n, Ordering::Relaxed) - n;
                if left <= self.low_water && self.above.swap(false, Ordering::AcqRel) {
                    let _ = self.internal.send(Internal::Drained(self.key));
                }
                if result.is_err() {
                    return self.drain(rx).await;
                }
                continue;
            }
            let Some(frames) = held.take() else {
                continue;
            };
            let frames = if self.batches {
                let mut messages = vec![frames];
                while messages.len() < protocol::MAX_BATCH_COMMANDS {
                    match rx.try_recv() {
                        Ok(Out::Frames(frames)) => messages.push(frames),
                        Ok(Out::Events(more)) => {
                            events.extend(more);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if messages.len() == 1 {
                    messages.pop().unwrap_or_default()
                } else {
                    protocol::batch(cmd::BROKER_BATCH, messages)
                }
            } else {
                frames
            };
            if self.send(frames).await.is_err() {
                return self.drain(rx).await;
            }
        }
    }

    async fn send(&mut self, frames: Vec<Bytes>) -> Result<(), ()> {
        let mut message = ZmqMessage::from(self.identity.clone());
        for frame in frames {
            message.push_back(frame);
        }
        self.socket.send(message).await.map_err(|err| {
            tracing::debug!(client = self.key, %err, "broker could not send to a client; it is going away");
        })
    }

    /// The client is going away: keep the counters right until the broker drops it.
    async fn drain(self, mut rx: mpsc::UnboundedReceiver<Out>) {
        while let Some(out) = rx.recv().await {
            if let Out::Events(events) = out {
                self.queued.fetch_sub(events.len(), Ordering::Relaxed);
            }
        }
    }
}
