//! One writer task per client: sends (through the [`Pump`]) what the broker
//! queued for the client, batching consecutive events into one EVENT message,
//! never handing the socket more than its [`Flow`] allows.

use super::flow::{frames_len, Flow, Marks};
use super::pump::Pump;
use super::{cmd, Internal};
use crate::protocol;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use zeromq::ZmqMessage;

/// Most events packed into one EVENT message.
pub(crate) const MAX_EVENTS_PER_MESSAGE: usize = 256;
/// How long a dropped client's writer may still flush what was queued.
const FLUSH_ON_CLOSE: std::time::Duration = std::time::Duration::from_secs(1);
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
    /// Dropped with the outbox: stops the writer even while it waits for room
    /// for a client that stopped reading (a frozen or dead process).
    _stop: oneshot::Sender<()>,
    key: u64,
    identity: Bytes,
    pump: Pump,
    /// Items handed to the writer and not sent yet. While it is 0 the broker
    /// sends messages itself, saving a task hop; otherwise they queue behind
    /// the writer's, keeping the order.
    unsent: Arc<AtomicUsize>,
    /// What is queued for the client, here and in the socket.
    pub(crate) flow: Arc<Flow>,
}

impl Outbox {
    /// Starts the writer of the client `key` whose routing identity is `identity`.
    pub(crate) fn start(
        key: u64,
        identity: Bytes,
        pump: Pump,
        marks: Marks,
        batches: bool,
        closing: Arc<AtomicBool>,
        internal: mpsc::UnboundedSender<Internal>,
    ) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop) = oneshot::channel();
        let unsent = Arc::new(AtomicUsize::new(0));
        let flow = Flow::new(key, marks, internal);
        let writer = Writer {
            key,
            identity: identity.clone(),
            pump: pump.clone(),
            unsent: unsent.clone(),
            flow: flow.clone(),
            batches,
        };
        tokio::spawn(async move {
            let run = writer.run(rx);
            tokio::pin!(run);
            tokio::select! {
                () = &mut run => return,
                _ = stop => {}
            }
            // The broker let go of the client: flush what is queued (a GOODBYE),
            // but never wait long on a client that stopped reading, and not at
            // all when the whole broker stops.
            if !closing.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(FLUSH_ON_CLOSE, run).await;
            }
        });
        Outbox {
            tx,
            _stop: stop_tx,
            key,
            identity,
            pump,
            unsent,
            flow,
        }
    }

    /// Queues events; returns whether the client is now above its high-water
    /// mark (publishers must wait for it).
    pub(crate) fn events(&self, events: Vec<(Bytes, Bytes)>) -> bool {
        let n = events.len();
        let bytes = pairs_len(&events);
        let above = self.flow.queue_events(n, bytes);
        self.unsent.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Out::Events(events)).is_err() {
            self.flow.unqueue_events(n, bytes);
        }
        above
    }

    /// Sends a whole message: at once when nothing is queued before it (and
    /// the socket has room for it), else through the writer.
    pub(crate) fn send(&self, mut frames: Vec<Bytes>) {
        if self.unsent.load(Ordering::Acquire) != 0 || !self.flow.has_room() {
            self.unsent.fetch_add(1, Ordering::AcqRel);
            self.flow.backlog(1, frames_len(&frames));
            let _ = self.tx.send(Out::Frames(frames));
            return;
        }
        self.flow.track(&mut frames, 0, 0);
        // A failure shows in the flow; the writer then drains.
        let _ = self
            .pump
            .send(self.key, to_message(&self.identity, frames), &self.flow);
    }
}

fn pairs_len(pairs: &[(Bytes, Bytes)]) -> usize {
    pairs.iter().map(|(subs, env)| subs.len() + env.len()).sum()
}

fn to_message(identity: &Bytes, frames: Vec<Bytes>) -> ZmqMessage {
    let mut message = ZmqMessage::from(identity.clone());
    for frame in frames {
        message.push_back(frame);
    }
    message
}

struct Writer {
    key: u64,
    identity: Bytes,
    pump: Pump,
    unsent: Arc<AtomicUsize>,
    flow: Arc<Flow>,
    batches: bool,
}

/// Events waiting in the writer, with how many of each `Out::Events` remain.
#[derive(Default)]
struct EventQueue {
    pairs: VecDeque<(Bytes, Bytes)>,
    items: VecDeque<usize>,
}

impl EventQueue {
    fn push(&mut self, events: Vec<(Bytes, Bytes)>) {
        if events.is_empty() {
            self.items.push_back(0);
        } else {
            self.items.push_back(events.len());
            self.pairs.extend(events);
        }
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// After `n` pairs were sent: how many whole `Out::Events` items are done.
    fn sent(&mut self, mut n: usize) -> usize {
        let mut done = 0;
        while let Some(front) = self.items.front_mut() {
            if *front > n {
                *front -= n;
                break;
            }
            n -= *front;
            self.items.pop_front();
            done += 1;
        }
        done
    }
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Out>) {
        let mut events = EventQueue::default();
        let mut held: Option<Out> = None;
        loop {
            if events.is_empty() && held.is_none() {
                match rx.recv().await {
                    None => return,
                    Some(Out::Events(more)) => events.push(more),
                    Some(other) => held = Some(other),
                }
            }
            // Take what is already there, keeping the order: nothing after a
            // held message may overtake it.
            while held.is_none() && events.pairs.len() < MAX_EVENTS_PER_MESSAGE {
                match rx.try_recv() {
                    Ok(Out::Events(more)) => events.push(more),
                    Ok(other) => held = Some(other),
                    Err(_) => break,
                }
            }
            if !events.is_empty() {
                // Wait before packing: what arrives meanwhile joins this message.
                self.flow.room().await;
                while held.is_none() && events.pairs.len() < MAX_EVENTS_PER_MESSAGE {
                    match rx.try_recv() {
                        Ok(Out::Events(more)) => events.push(more),
                        Ok(other) => held = Some(other),
                        Err(_) => break,
                    }
                }
                let mut frames = protocol::message(cmd::EVENT, []);
                let mut bytes = 0;
                let mut n = 0;
                while n < MAX_EVENTS_PER_MESSAGE && bytes < MAX_BATCH_BYTES {
                    let Some((subs, envelope)) = events.pairs.pop_front() else {
                        break;
                    };
                    bytes += subs.len() + envelope.len();
                    frames.push(subs);
                    frames.push(envelope);
                    n += 1;
                }
                let ok = n == 0 || self.send(frames, n, bytes);
                let done = events.sent(n);
                self.unsent.fetch_sub(done, Ordering::AcqRel);
                if !ok {
                    return self.drain(events, rx).await;
                }
                continue;
            }
            let ok = match held.take() {
                None => continue,
                Some(Out::Events(more)) => {
                    events.push(more);
                    continue;
                }
                Some(Out::Frames(frames)) if !self.batches => {
                    self.flow.room().await;
                    self.flow.backlog(-1, frames_len(&frames));
                    self.send(frames, 0, 0)
                }
                Some(Out::Frames(frames)) => {
                    self.flow.room().await;
                    self.flow.backlog(-1, frames_len(&frames));
                    let mut messages = vec![frames];
                    while messages.len() < protocol::MAX_BATCH_COMMANDS {
                        match rx.try_recv() {
                            Ok(Out::Frames(frames)) => {
                                self.flow.backlog(-1, frames_len(&frames));
                                messages.push(frames);
                            }
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let count = messages.len();
                    let frames = if count == 1 {
                        messages.pop().unwrap_or_default()
                    } else {
                        protocol::batch(cmd::BROKER_BATCH, messages)
                    };
                    let ok = self.send(frames, 0, 0);
                    // The first one is counted below, with the single-item cases.
                    self.unsent.fetch_sub(count - 1, Ordering::AcqRel);
                    ok
                }
            };
            self.unsent.fetch_sub(1, Ordering::AcqRel);
            if !ok {
                return self.drain(events, rx).await;
            }
        }
    }

    /// Sends one message carrying `events` events of `event_bytes`; the caller
    /// waited for room. False once a send to the client failed (the message
    /// is dropped).
    fn send(&mut self, mut frames: Vec<Bytes>, events: usize, event_bytes: usize) -> bool {
        if self.flow.is_gone() {
            self.flow.unqueue_events(events, event_bytes);
            return false;
        }
        self.flow.track(&mut frames, events, event_bytes);
        // A failed send dropped the message, and its events with it.
        self.pump
            .send(self.key, to_message(&self.identity, frames), &self.flow)
    }

    /// The client is going away: keep the counters right until the broker drops it.
    async fn drain(self, events: EventQueue, mut rx: mpsc::UnboundedReceiver<Out>) {
        let pairs: Vec<(Bytes, Bytes)> = events.pairs.into();
        self.flow.unqueue_events(pairs.len(), pairs_len(&pairs));
        // From now on every message goes through here and is dropped.
        self.unsent.fetch_add(1, Ordering::AcqRel);
        while let Some(out) = rx.recv().await {
            match out {
                Out::Events(events) => self.flow.unqueue_events(events.len(), pairs_len(&events)),
                Out::Frames(frames) => self.flow.backlog(-1, frames_len(&frames)),
            }
        }
    }
}
