//! Requests waiting for replies, keyed by request id: the client half of RPC for
//! transports whose replies arrive on a shared inbox (Redis, ZeroMQ).

use crate::envelope::{Envelope, MessageId};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// In-flight calls awaiting replies. Replies that match nothing (late, or for a
/// call that was cancelled) are dropped.
#[derive(Default)]
pub struct PendingCalls {
    waiting: Mutex<HashMap<MessageId, mpsc::UnboundedSender<Envelope>>>,
}

/// One in-flight call; dropping it forgets the call.
pub struct PendingCall<'a> {
    calls: &'a PendingCalls,
    id: MessageId,
    replies: mpsc::UnboundedReceiver<Envelope>,
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
            Some(tx) => tx.send(reply).is_ok(),
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

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<MessageId, mpsc::UnboundedSender<Envelope>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PendingCall<'_> {
    /// The first reply, or [`Error::Timeout`] after `timeout`.
    pub async fn one(mut self, timeout: Duration) -> Result<Envelope> {
        match tokio::time::timeout(timeout, self.replies.recv()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(Error::transport(
                "connection lost while waiting for the reply",
            )),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Up to `expected` replies, returning as soon as all arrived or at `timeout`
    /// with a [`Error::Timeout`] entry for each missing one.
    pub async fn gather(mut self, expected: usize, timeout: Duration) -> Vec<Result<Envelope>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            match tokio::time::timeout_at(deadline, self.replies.recv()).await {
                Ok(Some(reply)) => out.push(Ok(reply)),
                Ok(None) => break,
                Err(_) => break,
            }
        }
        out.resize_with(expected, || Err(Error::Timeout));
        out
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        self.calls.lock().remove(&self.id);
    }
}
