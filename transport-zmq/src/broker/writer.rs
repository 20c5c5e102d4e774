//! One writer task per client: sends what the broker queued for it, batching
//! consecutive events into one EVENT message, and reports when it drained.

use super::{cmd, Internal};
use crate::protocol;
use bytes::Bytes;
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
    /// An event for the listed subscriptions (a u64s frame) of this client.
    Event { subs: Bytes, envelope: Bytes },
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
        tokio::spawn(write(
            key,
            identity,
            socket,
            rx,
            queued.clone(),
            above.clone(),
            low_water,
            batches,
            internal,
        ));
        Outbox { tx, queued, above }
    }

    /// Queues an event; returns the number of events now queued.
    pub(crate) fn event(&self, subs: Bytes, envelope: Bytes) -> usize {
        let n = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        if self.tx.send(Out::Event { subs, envelope }).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        n
    }

    /// Queues a whole message.
    pub(crate) fn send(&self, frames: Vec<Bytes>) {
        let _ = self.tx.send(Out::Frames(frames));
    }
}

#[allow(clippy::too_many_arguments)]
async fn write(
    key: u64,
    identity: Bytes,
    mut socket: zeromq::RouterSendHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    queued: Arc<AtomicUsize>,
    above: Arc<AtomicBool>,
    low_water: usize,
    batches: bool,
    internal: mpsc::UnboundedSender<Internal>,
) {
    let mut held: Option<Out> = None;
    loop {
        let first = match held.take() {
            Some(out) => out,
            None => match rx.recv().await {
                Some(out) => out,
                None => return,
            },
        };
        let (frames, events) = match first {
            Out::Frames(frames) if !batches => (frames, 0),
            Out::Frames(frames) => {
                let mut messages = vec![frames];
                while messages.len() < protocol::MAX_BATCH_COMMANDS {
                    match rx.try_recv() {
                        Ok(Out::Frames(frames)) => messages.push(frames),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if messages.len() == 1 {
                    (messages.pop().unwrap_or_default(), 0)
                } else {
                    (protocol::batch(cmd::BROKER_BATCH, messages), 0)
                }
            }
            Out::Event { subs, envelope } => {
                let mut frames = protocol::message(cmd::EVENT, [subs]);
                let mut bytes = envelope.len();
                frames.push(envelope);
                let mut events = 1;
                while events < MAX_EVENTS_PER_MESSAGE && bytes < MAX_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(Out::Event { subs, envelope }) => {
                            bytes += envelope.len();
                            frames.push(subs);
                            frames.push(envelope);
                            events += 1;
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                (frames, events)
            }
        };
        let mut message = ZmqMessage::from(identity.clone());
        for frame in frames {
            message.push_back(frame);
        }
        let result = socket.send(message).await;
        if events > 0 {
            let left = queued.fetch_sub(events, Ordering::Relaxed) - events;
            if left <= low_water && above.swap(false, Ordering::AcqRel) {
                let _ = internal.send(Internal::Drained(key));
            }
        }
        if let Err(err) = result {
            tracing::debug!(client = key, %err, "broker could not send to a client; it is going away");
            // Keep draining so the counters stay right until the broker drops the client.
            while let Some(out) = rx.recv().await {
                if matches!(out, Out::Event { .. }) {
                    queued.fetch_sub(1, Ordering::Relaxed);
                }
            }
            return;
        }
    }
}
