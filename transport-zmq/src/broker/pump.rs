//! The one thread through which the broker touches the `zeromq` socket's peer
//! table: every send, and every connection the broker closes itself.
//!
//! Why a thread: the `zeromq` 0.7 ROUTER keeps its peers in an
//! `scc::HashMap`. A send locks the peer's bucket asynchronously
//! (`get_async`); a peer that went away is removed with the blocking
//! `remove_sync`, on a runtime worker, by the socket's own tasks (its
//! connection writer failed, its reader ended) and by a send that found the
//! peer gone. The bucket lock is fair: a release hands ownership straight to
//! the next waiter. When that waiter is a send *task*, it still has to be
//! polled to finish and release, and if meanwhile every runtime worker blocks
//! in `remove_sync` behind it, nothing polls it again: the broker stops for
//! good (all workers parked in `saa::Lock::lock_sync`, seen in the soak runs).
//! With few clients they all share one bucket, so any two sends can meet.
//!
//! Here the sends wait for the lock on a thread of their own
//! (`futures::executor::block_on`), one at a time: a lock handed to this
//! thread wakes it directly, whatever the workers do, and the thread holds
//! no lock while it removes a peer itself. It never waits long: the broker
//! hands each client's socket queue at most [`SOCKET_MESSAGES`] messages
//! (see [`Flow`]), far below the 100,000 at which a `zeromq` send would wait
//! for room, so a send only ever waits for the lock.
//!
//! [`SOCKET_MESSAGES`]: super::flow::SOCKET_MESSAGES

use super::flow::Flow;
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

/// A handle on the broker's send thread; it ends once every handle is dropped.
#[derive(Clone)]
pub(crate) struct Pump {
    tx: mpsc::Sender<Job>,
}

impl Pump {
    /// Starts the thread that sends through `socket` and closes connections
    /// through `backend`.
    pub(crate) fn start(
        mut socket: zeromq::RouterSendHalf,
        backend: Arc<dyn zeromq::MultiPeerBackend>,
    ) -> std::io::Result<Pump> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("busbar-zmq-send".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Send { key, message, flow } => {
                            if let Err(err) = futures::executor::block_on(socket.send(message)) {
                                tracing::debug!(client = key, %err, "broker could not send to a client; it is going away");
                                flow.lost();
                            }
                        }
                        Job::Raw(message) => {
                            let _ = futures::executor::block_on(socket.send(message));
                        }
                        Job::Disconnect(peer) => backend.peer_disconnected(&peer),
                    }
                }
            })?;
        Ok(Pump { tx })
    }

    /// Queues `message` (its first frame the routing identity) for client `key`.
    pub(crate) fn send(&self, key: u64, message: ZmqMessage, flow: &Arc<Flow>) {
        let job = Job::Send {
            key,
            message,
            flow: flow.clone(),
        };
        if self.tx.send(job).is_err() {
            // The thread is gone (it cannot be while a handle lives): the
            // message is dropped like one to a vanished peer.
            flow.lost();
        }
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
