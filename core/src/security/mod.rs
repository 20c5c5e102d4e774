//! Signed and encrypted envelopes, size limits and replay protection, as a layer
//! around any transport.
//!
//! [`SecureLayer`] wraps an `Arc<dyn EventBus>` into a [`Secured`] one, so every
//! transport gets the same protection:
//!
//! - **outgoing** envelopes (events, queue items, RPC requests and the replies
//!   this bus's handlers produce) are checked against the [`Limits`], optionally
//!   sealed ([`seal`](mod@seal): ChaCha20-Poly1305 of the payload under a
//!   per-sender subkey), then signed ([`sign`](mod@sign): HMAC-SHA256 over
//!   [`wire::encode_unsigned`](crate::wire::encode_unsigned));
//! - **incoming** envelopes (subscription items, queue items, requests reaching
//!   handlers, replies reaching callers) are checked against the limits, their
//!   signature is verified in constant time, their signed subject and kind are
//!   checked against where they arrived (pattern, queue, method, request id),
//!   their age and id are checked ([`replay`]), and only then is the payload
//!   decrypted. Anything refused is
//!   counted in [`Stats::rejected`](crate::Stats) and logged with the identity the
//!   sender claims (subject, id, key id), and never delivered.
//!
//! What happens to what is refused:
//!
//! - an event is dropped from the subscription stream;
//! - an RPC request gets no answer at all (the caller times out: nothing tells an
//!   unauthenticated caller that a provider exists);
//! - a reply makes the call fail with [`Error::Malformed`] naming the reason;
//! - a queue item is moved, as received, to the dead-letter queue `_dead.<queue>`
//!   with a `busbar-rejected` header giving the reason (through the transport
//!   underneath, unsigned by this bus), and the consumer waits on for a valid item.
//!   It is not lost (a producer signing with a key not yet rolled out can be
//!   recovered from there) and never consumed as valid.
//!
//! Configure it in code with [`SecureLayer`], or in the URL given to
//! [`Bus::connect`](crate::Bus::connect):
//! `memory://?key_id=k1&key_file=/etc/busbar/k1.key&encrypt=true` (see
//! [`SecureLayer::from_url`] and `docs/security.md`).

mod config;
pub mod keys;
mod layer;
pub mod replay;
pub mod seal;
pub mod sign;

pub use keys::{Key, KeyError, KeyRing};
pub use layer::{SecureLayer, Secured, REJECTED_HEADER};
pub use replay::Freshness;
pub use sign::{sign, verify, verify_wire};

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use std::fmt;

/// Size bounds applied to every envelope sent and received through the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest wire form of a whole envelope, in bytes.
    pub max_envelope: usize,
    /// Largest payload, in bytes (after sealing, on the wire).
    pub max_payload: usize,
    /// Most headers.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_envelope: crate::wire::DEFAULT_MAX_ENVELOPE,
            max_payload: crate::DEFAULT_MAX_PAYLOAD + seal::SEAL_OVERHEAD,
            max_headers: crate::wire::MAX_HEADERS,
        }
    }
}

impl Limits {
    /// Checks `envelope` (cheaply: no encoding) against the limits.
    pub fn check(&self, envelope: &Envelope) -> Result<()> {
        if envelope.payload.len() > self.max_payload {
            return Err(Error::TooLarge {
                size: envelope.payload.len(),
                limit: self.max_payload,
            });
        }
        if envelope.headers.len() > self.max_headers {
            return Err(Error::Malformed(format!(
                "{} headers exceed the limit of {}",
                envelope.headers.len(),
                self.max_headers
            )));
        }
        let size = wire_len(envelope);
        if size > self.max_envelope {
            return Err(Error::TooLarge {
                size,
                limit: self.max_envelope,
            });
        }
        Ok(())
    }
}

/// The exact length of `envelope`'s [`wire`](crate::wire) form, computed without
/// encoding it.
pub fn wire_len(e: &Envelope) -> usize {
    4 + 16
        + 8
        + e.deadline_ms.map_or(0, |_| 8)
        + e.correlation_id.map_or(0, |_| 16)
        + 2
        + e.subject.len()
        + e.reply_to.as_ref().map_or(0, |r| 2 + r.len())
        + 1
        + e.content_type.as_str().len()
        + 2
        + e.headers
            .iter()
            .map(|(k, v)| 4 + k.len() + v.len())
            .sum::<usize>()
        + 4
        + e.payload.len()
        + 2
        + e.signature.len()
}

/// Why an incoming envelope was refused. Carries no key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No signature, where one is required.
    Unsigned,
    /// The signature field is not `scheme | key id | mac`.
    BadSignatureFormat,
    /// Signed with a key id this bus does not accept.
    UnknownKey,
    /// The MAC does not match: altered in transit, or another key under the same id.
    BadSignature,
    /// Older than the freshness window.
    Stale,
    /// Timestamped further in the future than the allowed clock skew.
    FromTheFuture,
    /// An id this stream already accepted.
    Replayed,
    /// Validly signed, but for another channel than the one it arrived on (a
    /// subject outside the subscription's pattern, another queue, another
    /// method, a reply to another request).
    Misrouted,
    /// Larger than a limit (payload, headers or whole envelope).
    TooLarge,
    /// Not sealed, where this bus requires encryption.
    NotSealed,
    /// The sealed payload did not decrypt (wrong cipher, truncated, or altered).
    BadSeal,
    /// Not a valid envelope (fields too long to encode, bad wire form).
    Malformed,
}

impl Rejection {
    /// A short, stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::BadSignatureFormat => "bad_signature_format",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::Stale => "stale",
            Rejection::FromTheFuture => "from_the_future",
            Rejection::Replayed => "replayed",
            Rejection::Misrouted => "misrouted",
            Rejection::TooLarge => "too_large",
            Rejection::NotSealed => "not_sealed",
            Rejection::BadSeal => "bad_seal",
            Rejection::Malformed => "malformed",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests;
