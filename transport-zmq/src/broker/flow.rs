//! Flow control per client: what the broker holds for one client, counted from
//! the moment an event is routed to it until its bytes are in the client's
//! connection.
//!
//! The `zeromq` ROUTER gives each peer a send queue of 100,000 messages and no
//! way to ask how full it is, so a client that stops reading would let that
//! queue grow to gigabytes while every send still "succeeds". The broker
//! therefore hands each client's socket queue at most [`SOCKET_MESSAGES`]
//! messages and [`SOCKET_BYTES`] bytes at a time, and learns when the socket
//! took a message out of its queue (to encode it into the connection's write
//! buffer) from a marker frame whose owner is dropped right then. Everything
//! else stays in the client's writer: events counted as queued, which holds
//! publishers back; other messages (answers, heartbeats) counted as backlog,
//! which a client that does not read can only grow for so long.

use super::Internal;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Most messages handed to one client's socket queue and not yet written.
pub(crate) const SOCKET_MESSAGES: usize = 256;
/// Most bytes handed to one client's socket queue and not yet written (one
/// larger message still goes when nothing else is in the queue).
pub(crate) const SOCKET_BYTES: usize = 1 << 20;
/// Messages other than events waiting in one client's writer above which a
/// client that makes no progress is dropped without waiting for the stall limit.
pub(crate) const MAX_BACKLOG: usize = 65_536;
/// Their bytes.
pub(crate) const MAX_BACKLOG_BYTES: usize = 64 << 20;

/// How many events, and how many bytes of them, queued for one client hold
/// its publishers back; they are released at a fifth of both.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

/// What one client's writer and the socket hold for it, shared by the broker
/// core, the client's writer and the socket's own writer task.
pub(crate) struct Flow {
    key: u64,
    /// Events routed to the client and not yet written into its connection: in
    /// the writer's queue or in the socket's.
    queued: AtomicUsize,
    /// Their bytes (subscription ids and envelopes).
    queued_bytes: AtomicUsize,
    /// Set when the queued events went above the high-water mark; cleared
    /// (with an [`Internal::Drained`]) once they are back at the low-water mark.
    above: AtomicBool,
    marks: Marks,
    /// Messages other than events waiting in the writer, and their bytes.
    backlog: AtomicUsize,
    backlog_bytes: AtomicUsize,
    /// Messages handed to the socket and not yet written.
    in_socket: AtomicUsize,
    /// Their bytes.
    in_socket_bytes: AtomicUsize,
    /// Milliseconds since `epoch` of the last progress: a message written, or
    /// one handed to a socket queue that was empty.
    progress: AtomicU64,
    epoch: Instant,
    /// Woken each time the socket writes one of this client's messages.
    written: Notify,
    /// Set when a send to the client failed: its connection is gone.
    gone: AtomicBool,
    /// Messages of the client waiting in the broker's send thread (pump.rs).
    pumped: AtomicUsize,
    internal: mpsc::UnboundedSender<Internal>,
}

impl Flow {
    pub(crate) fn new(
        key: u64,
        marks: Marks,
        internal: mpsc::UnboundedSender<Internal>,
    ) -> Arc<Flow> {
        Arc::new(Flow {
            key,
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            above: AtomicBool::new(false),
            marks,
            backlog: AtomicUsize::new(0),
            backlog_bytes: AtomicUsize::new(0),
            in_socket: AtomicUsize::new(0),
            in_socket_bytes: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            epoch: Instant::now(),
            written: Notify::new(),
            gone: AtomicBool::new(false),
            pumped: AtomicUsize::new(0),
            internal,
        })
    }

    /// Counts `n` events of `bytes` queued; returns whether the client is now
    /// above its high-water mark (its publishers must wait for it).
    pub(crate) fn queue_events(&self, n: usize, bytes: usize) -> bool {
        self.queued.fetch_add(n, Ordering::SeqCst);
        self.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
        if !self.above_high() {
            return false;
        }
        self.above.store(true, Ordering::SeqCst);
        // The socket may have written them all meanwhile, before it could see
        // `above` and report the drain.
        self.above_high()
    }

    /// Takes back events counted by [`Flow::queue_events`] that will never be sent.
    pub(crate) fn unqueue_events(&self, n: usize, bytes: usize) {
        self.queued.fetch_sub(n, Ordering::SeqCst);
        self.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
    }

    /// Whether the queued events are above the high-water mark.
    pub(crate) fn above_high(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > self.marks.events
            || self.queued_bytes.load(Ordering::SeqCst) > self.marks.bytes
    }

    fn at_low(&self) -> bool {
        self.queued.load(Ordering::SeqCst) <= self.marks.events / 5
            && self.queued_bytes.load(Ordering::SeqCst) <= self.marks.bytes / 5
    }

    /// Events queued now (for logs and tests).
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Counts a message other than events waiting in the writer (`n` = 1), or
    /// taken out of it (`n` = -1).
    pub(crate) fn backlog(&self, n: isize, bytes: usize) {
        if n > 0 {
            self.backlog.fetch_add(1, Ordering::AcqRel);
            self.backlog_bytes.fetch_add(bytes, Ordering::AcqRel);
        } else {
            self.backlog.fetch_sub(1, Ordering::AcqRel);
            self.backlog_bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Whether the socket's queue for this client may take another message.
    pub(crate) fn has_room(&self) -> bool {
        self.in_socket.load(Ordering::Acquire) < SOCKET_MESSAGES
            && self.in_socket_bytes.load(Ordering::Acquire) < SOCKET_BYTES
    }

    /// Waits until the socket's queue for this client may take a message, or
    /// a send to it failed.
    pub(crate) async fn room(&self) {
        while !self.has_room() && !self.is_gone() {
            // A write between the check and this wait left a permit: no wake-up is lost.
            self.written.notified().await;
        }
    }

    /// Records that a send to the client failed (its connection is gone), and
    /// wakes its writer if it waits for room.
    pub(crate) fn lost(&self) {
        self.gone.store(true, Ordering::Release);
        self.written.notify_one();
    }

    /// Whether a send to the client failed.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Counts a message handed to the send thread ...
    pub(crate) fn pump(&self) {
        self.pumped.fetch_add(1, Ordering::AcqRel);
    }

    /// ... and one it sent (or failed to send).
    pub(crate) fn unpump(&self) {
        self.pumped.fetch_sub(1, Ordering::AcqRel);
    }

    /// Messages of the client in the send thread: while there are any, the
    /// client's next messages must follow them there.
    pub(crate) fn pumped(&self) -> usize {
        self.pumped.load(Ordering::Acquire)
    }

    /// Messages and bytes handed to the socket and not yet written.
    #[cfg(test)]
    pub(crate) fn in_socket(&self) -> (usize, usize) {
        (
            self.in_socket.load(Ordering::Acquire),
            self.in_socket_bytes.load(Ordering::Acquire),
        )
    }

    /// Why the client must be dropped, if it must: its socket's share full
    /// and nothing of it written for longer than `limit` (it stopped reading),
    /// or more than [`MAX_BACKLOG`] messages or [`MAX_BACKLOG_BYTES`] other
    /// than events waiting for it (it sends requests faster than it reads the
    /// answers; these cannot hold it back as events hold publishers back).
    pub(crate) fn stalled(&self, now: Instant, limit: Duration) -> Option<String> {
        let (backlog, bytes) = (
            self.backlog.load(Ordering::Acquire),
            self.backlog_bytes.load(Ordering::Acquire),
        );
        if backlog > MAX_BACKLOG || bytes > MAX_BACKLOG_BYTES {
            return Some(format!(
                "{backlog} messages ({bytes} bytes) wait for it besides events"
            ));
        }
        if self.has_room() {
            return None;
        }
        let since = Duration::from_millis(self.progress.load(Ordering::Acquire));
        let idle = now.duration_since(self.epoch).saturating_sub(since);
        (idle > limit).then(|| format!("it read nothing for {} ms", idle.as_millis()))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Marks `frames` (a whole message, its first frame the protocol
    /// signature) so this flow learns when the socket writes it, and counts it
    /// as handed to the socket. Its `events` (of `event_bytes`) stop counting
    /// as queued then.
    pub(crate) fn track(self: &Arc<Self>, frames: &mut [Bytes], events: usize, event_bytes: usize) {
        let bytes = frames_len(frames);
        let Some(first) = frames.first_mut() else {
            return;
        };
        if self.in_socket.fetch_add(1, Ordering::AcqRel) == 0 {
            // The wait for the client starts now, not at its last write long ago.
            self.progress.store(self.now_ms(), Ordering::Release);
        }
        self.in_socket_bytes.fetch_add(bytes, Ordering::AcqRel);
        let marker = Written {
            flow: self.clone(),
            frame: std::mem::take(first),
            events,
            event_bytes,
            bytes,
        };
        // Same bytes as before; the owner is dropped when the socket encoded
        // the message into the connection's buffer (or dropped it unsent).
        *first = Bytes::from_owner(marker);
    }

    fn written(&self, events: usize, event_bytes: usize, bytes: usize) {
        self.progress.store(self.now_ms(), Ordering::Release);
        self.in_socket_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.in_socket.fetch_sub(1, Ordering::AcqRel);
        if events > 0 {
            self.unqueue_events(events, event_bytes);
            if self.at_low() && self.above.swap(false, Ordering::SeqCst) {
                let _ = self.internal.send(Internal::Drained(self.key));
            }
        }
        self.written.notify_one();
    }
}

/// Bytes of a message's frames.
pub(crate) fn frames_len(frames: &[Bytes]) -> usize {
    frames.iter().map(Bytes::len).sum()
}

/// The owner of a message's first frame: dropped when the socket wrote it.
struct Written {
    flow: Arc<Flow>,
    frame: Bytes,
    events: usize,
    event_bytes: usize,
    bytes: usize,
}

impl AsRef<[u8]> for Written {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        self.flow.written(self.events, self.event_bytes, self.bytes);
    }
}

#[cfg(test)]
mod tests;
