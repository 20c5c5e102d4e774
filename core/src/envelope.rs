//! The envelope: what every transport carries, whatever the payload.
//!
//! Its binary form is [`wire`](crate::wire), documented in `docs/wire.md`.

use crate::codec::ContentType;
use crate::name::Name;
use bytes::Bytes;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A pub/sub event; `subject` is its topic.
    Event = 1,
    /// A work-queue item; `subject` is the queue.
    QueueItem = 2,
    /// An RPC request; `subject` is the method.
    Request = 3,
    /// A successful RPC reply; `correlation_id` names the request.
    Reply = 4,
    /// A failed RPC reply; the payload is a JSON `{"kind": .., "message": ..}`.
    ErrorReply = 5,
}

impl Kind {
    /// The kind for a wire byte, if it names one.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Event,
            2 => Kind::QueueItem,
            3 => Kind::Request,
            4 => Kind::Reply,
            5 => Kind::ErrorReply,
            _ => return None,
        })
    }
}

/// A 128-bit message identifier, unique per process run and very likely globally.
///
/// The high 64 bits are random per process, the low 64 bits count up, so ids are
/// cheap to make and never repeat within a process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub u128);

impl MessageId {
    /// A fresh id.
    pub fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        MessageId(((process_prefix() as u128) << 64) | n as u128)
    }
}

fn process_prefix() -> u64 {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        hasher.write_u32(std::process::id());
        hasher.finish()
    })
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `d` in whole milliseconds, rounded up, for protocols that count in
/// milliseconds: a timeout sent that way never makes anyone wait less than asked.
pub fn ceil_millis(d: Duration) -> u64 {
    let millis = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// One message with its metadata.
#[derive(Clone, PartialEq)]
pub struct Envelope {
    /// Unique id of this message.
    pub id: MessageId,
    /// Event, queue item, request or reply.
    pub kind: Kind,
    /// The topic, queue or method.
    pub subject: Name,
    /// When the message was made, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// For requests: when the caller stops waiting, in milliseconds since the Unix epoch.
    pub deadline_ms: Option<u64>,
    /// For requests: where the reply goes (transport-specific address).
    pub reply_to: Option<String>,
    /// For replies: the id of the request answered.
    pub correlation_id: Option<MessageId>,
    /// Free-form headers, in order.
    pub headers: Vec<(String, String)>,
    /// How the payload is encoded.
    pub content_type: ContentType,
    /// The encoded payload.
    pub payload: Bytes,
    /// Authentication data; empty when unsigned.
    pub signature: Bytes,
}

impl Envelope {
    /// A new message of `kind` to `subject`, stamped now, with a fresh id.
    pub fn new(kind: Kind, subject: Name, content_type: ContentType, payload: Bytes) -> Self {
        Envelope {
            id: MessageId::new(),
            kind,
            subject,
            timestamp_ms: now_millis(),
            deadline_ms: None,
            reply_to: None,
            correlation_id: None,
            headers: Vec::new(),
            content_type,
            payload,
            signature: Bytes::new(),
        }
    }

    /// A reply (or error reply) to this request, correlated to it.
    pub fn reply(&self, kind: Kind, content_type: ContentType, payload: Bytes) -> Envelope {
        let mut reply = Envelope::new(kind, self.subject.clone(), content_type, payload);
        reply.correlation_id = Some(self.id);
        reply
    }

    /// Sets the deadline to `timeout` from now.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.deadline_ms = Some(now_millis().saturating_add(timeout.as_millis() as u64));
        self
    }

    /// True when the deadline has passed.
    pub fn is_expired(&self) -> bool {
        self.deadline_ms
            .is_some_and(|deadline| now_millis() > deadline)
    }

    /// Time left before the deadline; `None` when there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline_ms
            .map(|deadline| Duration::from_millis(deadline.saturating_sub(now_millis())))
    }

    /// The value of the first header named `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("subject", &self.subject)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("deadline_ms", &self.deadline_ms)
            .field("reply_to", &self.reply_to)
            .field("correlation_id", &self.correlation_id)
            .field("headers", &self.headers)
            .field("content_type", &self.content_type)
            .field("payload_len", &self.payload.len())
            .field("signed", &!self.signature.is_empty())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_millis_never_shortens() {
        assert_eq!(ceil_millis(Duration::ZERO), 0);
        assert_eq!(ceil_millis(Duration::from_millis(1200)), 1200);
        assert_eq!(ceil_millis(Duration::from_nanos(1_199_999_700)), 1200);
        assert_eq!(ceil_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_millis(Duration::MAX), u64::MAX);
    }
}
