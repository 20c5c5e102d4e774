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
//! else stays in the client's writer, counted in [`Flow::queued`], which holds
//! publishers back.

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

/// What one client's writer and the socket hold for it, shared by the broker
/// core, the client's writer and the socket's own writer task.
pub(crate) struct Flow {
    key: u64,
    /// Events routed to the client and not yet written into its connection: in
    /// the writer's queue or in the socket's.
    pub(crate) queued: AtomicUsize,
    /// Set when `queued` went above the high-water mark; cleared (with an
    /// [`Internal::Drained`]) once it is back at the low-water mark.
    pub(crate) above: AtomicBool,
    low_water: usize,
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
    internal: mpsc::UnboundedSender<Internal>,
}

impl Flow {
    pub(crate) fn new(
        key: u64,
        low_water: usize,
        internal: mpsc::UnboundedSender<Internal>,
    ) -> Arc<Flow> {
        Arc::new(Flow {
            key,
            queued: AtomicUsize::new(0),
            above: AtomicBool::new(false),
            low_water,
            in_socket: AtomicUsize::new(0),
            in_socket_bytes: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            epoch: Instant::now(),
            written: Notify::new(),
            internal,
        })
    }

    /// Whether the socket's queue for this client may take another message.
    pub(crate) fn has_room(&self) -> bool {
        self.in_socket.load(Ordering::Acquire) < SOCKET_MESSAGES
            && self.in_socket_bytes.load(Ordering::Acquire) < SOCKET_BYTES
    }

    /// Waits until the socket's queue for this client may take a message.
    pub(crate) async fn room(&self) {
        while !self.has_room() {
            // A write between the check and this wait left a permit: no wake-up is lost.
            self.written.notified().await;
        }
    }

    /// Messages and bytes handed to the socket and not yet written.
    #[cfg(test)]
    pub(crate) fn in_socket(&self) -> (usize, usize) {
        (
            self.in_socket.load(Ordering::Acquire),
            self.in_socket_bytes.load(Ordering::Acquire),
        )
    }

    /// How long the client has been stalled: its socket queue full and nothing
    /// of it written since. `None` while it makes progress or has room.
    pub(crate) fn stalled(&self, now: Instant) -> Option<Duration> {
        if self.has_room() {
            return None;
        }
        let since = Duration::from_millis(self.progress.load(Ordering::Acquire));
        Some(now.duration_since(self.epoch).saturating_sub(since))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Marks `frames` (a whole message, its first frame the protocol
    /// signature) so this flow learns when the socket writes it, and counts it
    /// as handed to the socket. `events` of [`Flow::queued`] are released then.
    pub(crate) fn track(self: &Arc<Self>, frames: &mut [Bytes], events: usize) {
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
            bytes,
        };
        // Same bytes as before; the owner is dropped when the socket encoded
        // the message into the connection's buffer (or dropped it unsent).
        *first = Bytes::from_owner(marker);
    }

    fn written(&self, events: usize, bytes: usize) {
        self.progress.store(self.now_ms(), Ordering::Release);
        self.in_socket_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.in_socket.fetch_sub(1, Ordering::AcqRel);
        if events > 0 {
            let left = self.queued.fetch_sub(events, Ordering::SeqCst) - events;
            if left <= self.low_water && self.above.swap(false, Ordering::SeqCst) {
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
    bytes: usize,
}

impl AsRef<[u8]> for Written {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        self.flow.written(self.events, self.bytes);
    }
}

#[cfg(test)]
mod tests;
