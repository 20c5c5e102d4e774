//! Requests waiting for replies, keyed by request id: the client half of RPC for
//! transports whose replies arrive on a shared inbox (Redis, ZeroMQ).

use crate::envelope::{Envelope, MessageId};
use crate::error::{Error, Result};
use crate::liveness::{self, Heard, Notice};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

type Sender = mpsc::UnboundedSender<Heard<Envelope>>;

/// In-flight calls awaiting replies. Replies that match nothing (late, or for a
/// call that was cancelled) are dropped.
#[derive(Default)]
pub struct PendingCalls {
    waiting: Mutex<HashMap<MessageId, Sender>>,
}

/// One in-flight call; dropping it forgets the call.
pub struct PendingCall<'a> {
    calls: &'a PendingCalls,
    id: MessageId,
    replies: mpsc::UnboundedReceiver<Heard<Envelope>>,
}

impl PendingCalls {
    /// Starts waiting for replies to the request `id`. Register before sending.
    pub fn register(&self, id: MessageId) -> PendingCall<'_> {
        let (tx, replies) = mpsc::unbounded_channel();
        self.lock().insert(id, tx);
        PendingCall {
            calls: self,
            id,
            replies,
        }
    }

    /// Routes a reply to its call; false if no call waits for it.
    pub fn complete(&self, reply: Envelope) -> bool {
        let Some(id) = reply.correlation_id else {
            return false;
        };
        match self.lock().get(&id) {
            Some(tx) => tx.send(Heard::Answer(reply)).is_ok(),
            None => false,
        }
    }

    /// Routes a handler's [`Notice`] to the call `id`; false if no call waits.
    pub fn notice(&self, id: MessageId, notice: Notice) -> bool {
        match self.lock().get(&id) {
            Some(tx) => tx.send(Heard::Notice(notice)).is_ok(),
            None => false,
        }
    }

    /// Calls still waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no call is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fails every waiting call (used when the connection is lost or the bus shuts down).
    pub fn fail_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, Sender>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PendingCall<'_> {
    /// The first reply; [`Error::Timeout`] after `timeout`, or
    /// [`Error::ProviderLost`] when the handler that took the call falls
    /// silent (see [`liveness`]).
    pub async fn one(mut self, timeout: Duration, method: &str) -> Result<Envelope> {
        let deadline = tokio::time::Instant::now() + timeout;
        liveness::one(&mut self.replies, deadline)
            .await
            .map_err(|why| match why {
                liveness::Unanswered::Closed => {
                    Error::transport("connection lost while waiting for the reply")
                }
                other => other.into_error(method),
            })
    }

    /// Up to `expected` replies, returning as soon as all arrived or at `timeout`
    /// with a [`Error::Timeout`] entry for each missing one
    /// ([`Error::ProviderLost`] for a handler that fell silent).
    pub async fn gather(
        mut self,
        expected: usize,
        timeout: Duration,
        method: &str,
    ) -> Vec<Result<Envelope>> {
        let deadline = tokio::time::Instant::now() + timeout;
        liveness::gather(&mut self.replies, expected, deadline, method, |_| 0).await
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        self.calls.lock().remove(&self.id);
    }
}
