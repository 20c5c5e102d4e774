//! The frames RPC travels in over Redis (see the parent module's doc), and
//! the caller's side: calls waiting for replies and notices on the inbox.

use super::{DONE, REPLY_FRAME, REQUEST_FRAME, WORKING};
use crate::pubsub::{decode, Route};
use crate::Shared;
use busbar_core::liveness::{Heard, Notice};
use busbar_core::{Envelope, Kind, MessageId, Stats};
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Weak;
use tokio::sync::mpsc;

pub(super) fn frame_request(reply_to: &str, envelope: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + reply_to.len() + envelope.len());
    out.push(REQUEST_FRAME);
    out.extend_from_slice(&(reply_to.len() as u16).to_be_bytes());
    out.extend_from_slice(reply_to.as_bytes());
    out.extend_from_slice(envelope);
    out
}

/// The reply channel and the envelope bytes of a request frame.
pub(super) fn unframe_request(frame: &Bytes) -> Option<(&str, Bytes)> {
    if frame.first() != Some(&REQUEST_FRAME) || frame.len() < 3 {
        return None;
    }
    let len = u16::from_be_bytes([frame[1], frame[2]]) as usize;
    let reply_to = std::str::from_utf8(frame.get(3..3 + len)?).ok()?;
    Some((reply_to, frame.slice(3 + len..)))
}

pub(super) fn frame_reply(status: u8, providers: usize, source: &str, envelope: &[u8]) -> Vec<u8> {
    let source = &source.as_bytes()[..source.len().min(255)];
    let mut out = Vec::with_capacity(5 + source.len() + envelope.len());
    out.push(REPLY_FRAME);
    out.push(status);
    out.extend_from_slice(&(providers.min(u16::MAX as usize) as u16).to_be_bytes());
    out.push(source.len() as u8);
    out.extend_from_slice(source);
    out.extend_from_slice(envelope);
    out
}

pub(super) fn frame_notice(source: &str, call: MessageId, notice: Notice) -> Vec<u8> {
    let mut ids = [0u8; 32];
    ids[..16].copy_from_slice(&call.0.to_be_bytes());
    ids[16..].copy_from_slice(&notice.worker.0.to_be_bytes());
    let status = if notice.done { DONE } else { WORKING };
    frame_reply(status, 0, source, &ids)
}

/// The call and the notice of a notice frame.
pub(super) fn unframe_notice(frame: &Bytes) -> Option<(MessageId, Notice)> {
    let done = match *frame.get(1)? {
        WORKING => false,
        DONE => true,
        _ => return None,
    };
    let start = 5 + *frame.get(4)? as usize;
    let ids: [u8; 32] = frame.get(start..)?.try_into().ok()?;
    let call = MessageId(u128::from_be_bytes(ids[..16].try_into().ok()?));
    let worker = MessageId(u128::from_be_bytes(ids[16..].try_into().ok()?));
    Some((call, Notice { worker, done }))
}

/// A reply as its frame tells it.
pub(super) struct Reply {
    pub(super) status: u8,
    pub(super) providers: usize,
    pub(super) source: Bytes,
    pub(super) envelope: Envelope,
}

pub(super) fn unframe_reply(frame: &Bytes, bus: &Shared) -> Option<Reply> {
    if frame.first() != Some(&REPLY_FRAME) || frame.len() < 5 {
        return None;
    }
    let status = frame[1];
    let providers = u16::from_be_bytes([frame[2], frame[3]]) as usize;
    let len = frame[4] as usize;
    let source = frame.slice(5..(5 + len).min(frame.len()));
    let envelope = decode(
        &frame.slice((5 + len).min(frame.len())..),
        bus.config.max_envelope,
        &bus.stats,
    )?;
    Some(Reply {
        status,
        providers,
        source,
        envelope,
    })
}

/// Calls waiting for replies, by request id.
#[derive(Default)]
pub(crate) struct Pending {
    waiting: DashMap<MessageId, mpsc::UnboundedSender<Heard<Reply>>>,
}

pub(super) struct Waiter<'a> {
    pending: &'a Pending,
    id: MessageId,
    pub(super) replies: mpsc::UnboundedReceiver<Heard<Reply>>,
}

impl Pending {
    pub(super) fn register(&self, id: MessageId) -> Waiter<'_> {
        let (tx, replies) = mpsc::unbounded_channel();
        self.waiting.insert(id, tx);
        Waiter {
            pending: self,
            id,
            replies,
        }
    }

    fn complete(&self, reply: Reply) {
        if let Some(id) = reply.envelope.correlation_id {
            if let Some(tx) = self.waiting.get(&id) {
                let _ = tx.send(Heard::Answer(reply));
            }
        }
    }

    fn notice(&self, call: MessageId, notice: Notice) {
        if let Some(tx) = self.waiting.get(&call) {
            let _ = tx.send(Heard::Notice(notice));
        }
    }

    pub(crate) fn fail_all(&self) {
        self.waiting.clear();
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.pending.waiting.remove(&self.id);
    }
}

/// Routes replies arriving on this bus's inbox.
pub(crate) struct InboxRoute {
    pub(crate) bus: Weak<Shared>,
}

impl Route for InboxRoute {
    fn deliver(&self, _channel: &[u8], payload: &Bytes) {
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        if payload.first() == Some(&REPLY_FRAME)
            && matches!(payload.get(1), Some(&WORKING) | Some(&DONE))
        {
            match unframe_notice(payload) {
                Some((call, notice)) => bus.pending.notice(call, notice),
                None => {
                    Stats::incr(&bus.stats.rejected);
                    tracing::warn!("rejected a malformed working notice on the reply channel");
                }
            }
            return;
        }
        let Some(reply) = unframe_reply(payload, &bus) else {
            if payload.first() != Some(&REPLY_FRAME) {
                Stats::incr(&bus.stats.rejected);
                tracing::warn!("rejected a message on the reply channel that is not a reply frame");
            }
            return;
        };
        if !matches!(reply.envelope.kind, Kind::Reply | Kind::ErrorReply) {
            Stats::incr(&bus.stats.rejected);
            tracing::warn!(kind = ?reply.envelope.kind, "rejected a non-reply on the reply channel");
            return;
        }
        bus.pending.complete(reply);
    }
}
