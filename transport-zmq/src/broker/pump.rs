//! How the broker hands messages to the `zeromq` socket without freezing.
//!
//! The `zeromq` 0.7 ROUTER keeps its peers in an `scc::HashMap`. A send locks
//! the peer's bucket asynchronously (`get_async`); a peer that went away is
//! removed with the blocking `remove_sync`, on a runtime worker, by the
//! socket's own tasks (its connection writer failed, its reader ended) and by
//! a send that found the peer gone. The bucket lock is fair: a release hands
//! ownership straight to the next waiter. When that waiter is a send *task*,
//! it still has to be polled to finish and release, and if meanwhile every
//! runtime worker blocks in `remove_sync` behind it, nothing polls it again:
//! the broker stops for good (all workers parked in `saa::Lock::lock_sync`
//! under `peer_disconnected`, seen in the soak runs). With few clients they
//! all share one bucket, so any two sends can meet.
//!
//! So no send task ever stays queued for that lock. A send is polled once,
//! where it is made: it completes at once unless the lock is taken (the
//! peer's queue always has room, see below). If it would wait, that attempt
//! is dropped at once (which gives up its place, or the lock if it was just
//! handed over) and a copy goes to the pump: one thread of its own that waits
//! for the lock with `futures::executor::block_on`, so a lock handed to it
//! wakes it directly, whatever the workers do. A client's later messages
//! follow it through the pump until the pump sent them all, keeping the order.
//!
//! The broker hands each client's socket queue at most [`SOCKET_MESSAGES`]
//! messages (see [`Flow`]), far below the 100,000 at which a `zeromq` send
//! would wait for room after queueing the message: a send that would wait has
//! not queued its message yet, so the copy is never a duplicate, and the pump
//! only ever waits for the lock.
//!
//! [`SOCKET_MESSAGES`]: super::flow::SOCKET_MESSAGES

use super::flow::Flow;
use futures::FutureExt;
use std::sync::mpsc;
use std::sync::Arc;
use zeromq::{SocketSend, ZmqMessage};

enum Job {
    /// A message for client `key`, counted in its `flow` (told if it fails).
    Send {
        key: u64,
        message: ZmqMessage,
        flow: Arc<Flow>,
    },
    /// A message for a peer that is not a client (an answer to a stranger).
    Raw(ZmqMessage),
    /// Closes a peer's connection (a client that stopped reading).
    Disconnect(zeromq::util::PeerIdentity),
}

/// Sends through the socket, or through the broker's send thread when the
/// socket would make a task wait; the thread ends once every handle is dropped.
#[derive(Clone)]
pub(crate) struct Pump {
    tx: mpsc::Sender<Job>,
    socket: zeromq::RouterSendHalf,
}

impl Pump {
    /// Starts the thread that sends through `socket` and closes connections
    /// through `backend`.
    pub(crate) fn start(
        socket: zeromq::RouterSendHalf,
        backend: Arc<dyn zeromq::MultiPeerBackend>,
    ) -> std::io::Result<Pump> {
        let (tx, rx) = mpsc::channel();
        let mut thread_socket = socket.clone();
        std::thread::Builder::new()
            .name("busbar-zmq-send".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Send { key, message, flow } => {
                            if let Err(err) =
                                futures::executor::block_on(thread_socket.send(message))
                            {
                                tracing::debug!(client = key, %err, "broker could not send to a client; it is going away");
                                flow.lost();
                            }
                            flow.unpump();
                        }
                        Job::Raw(message) => {
                            let _ = futures::executor::block_on(thread_socket.send(message));
                        }
                        Job::Disconnect(peer) => backend.peer_disconnected(&peer),
                    }
                }
            })?;
        Ok(Pump { tx, socket })
    }

    /// Sends `message` (its first frame the routing identity) to client `key`:
    /// at once if nothing of the client waits in the pump and the socket takes
    /// it without waiting, else through the pump. False if a send to the
    /// client failed (now or before): it is going away.
    pub(crate) fn send(&self, key: u64, message: ZmqMessage, flow: &Arc<Flow>) -> bool {
        if flow.is_gone() {
            return false;
        }
        if flow.pumped() == 0 {
            let copy = message.clone();
            let mut socket = self.socket.clone();
            match socket.send(message).now_or_never() {
                Some(Ok(())) => return true,
                Some(Err(err)) => {
                    tracing::debug!(client = key, %err, "broker could not send to a client; it is going away");
                    flow.lost();
                    return false;
                }
                // Dropped before it queued the message (see the module's notes).
                None => return self.pump(key, copy, flow),
            }
        }
        self.pump(key, message, flow)
    }

    fn pump(&self, key: u64, message: ZmqMessage, flow: &Arc<Flow>) -> bool {
        flow.pump();
        let job = Job::Send {
            key,
            message,
            flow: flow.clone(),
        };
        if self.tx.send(job).is_err() {
            // The thread is gone (it cannot be while a handle lives): the
            // message is dropped like one to a vanished peer.
            flow.unpump();
            flow.lost();
            return false;
        }
        true
    }

    /// Queues a message (its first frame the routing identity) for a peer that
    /// is not a client.
    pub(crate) fn send_raw(&self, message: ZmqMessage) {
        let _ = self.tx.send(Job::Raw(message));
    }

    /// Closes `peer`'s connection, after what was queued for it before.
    pub(crate) fn disconnect(&self, peer: zeromq::util::PeerIdentity) {
        let _ = self.tx.send(Job::Disconnect(peer));
    }
}
