//! Dead letters: the one shape every transport and the typed [`Queue`](crate::Queue)
//! give an item that cannot be processed, so a user reading `_dead.<queue>`
//! finds the same thing whichever transport put it there.
//!
//! - An item that is a valid envelope but whose payload does not decode as the
//!   consumer's type keeps its envelope (id, headers, payload) and moves to
//!   `_dead.<queue>` with a [`ERROR_HEADER`] saying why ([`undecodable`]).
//! - Bytes that are not a valid envelope at all (pushed onto a Redis list by
//!   someone else, say) are wrapped in a new envelope of content type
//!   [`OCTET_STREAM`] whose payload is those bytes, with the same header
//!   ([`malformed`]). Bytes beyond the envelope size limit are cut, and
//!   [`TRUNCATED_HEADER`] gives the original length, so a dead letter always
//!   decodes.

use crate::codec::ContentType;
use crate::envelope::{Envelope, Kind};
use crate::error::Result;
use crate::name::Name;
use bytes::Bytes;

/// The header saying why an item is a dead letter.
pub const ERROR_HEADER: &str = "busbar-error";

/// The header giving the original length of bytes cut to fit a dead letter.
pub const TRUNCATED_HEADER: &str = "busbar-truncated-from";

/// The content type of a dead letter wrapping bytes that were not an envelope.
pub const OCTET_STREAM: ContentType = ContentType::OCTET_STREAM;

/// Room left in a dead letter for everything but its payload.
const ENVELOPE_ROOM: usize = 64 * 1024;

/// The dead-letter queue of `queue`: `_dead.<queue>`.
///
/// An error when the longer name no longer fits [`MAX_NAME_LEN`](crate::MAX_NAME_LEN).
pub fn queue_of(queue: &Name) -> Result<Name> {
    Name::new(&format!("_dead.{queue}"))
}

/// `envelope`, an item of `queue` that decoded as an envelope but could not be
/// processed, readdressed to `_dead.<queue>` with `reason` in [`ERROR_HEADER`].
pub fn undecodable(mut envelope: Envelope, queue: &Name, reason: &str) -> Result<Envelope> {
    envelope.subject = queue_of(queue)?;
    envelope
        .headers
        .push((ERROR_HEADER.into(), reason.to_owned()));
    Ok(envelope)
}

/// A new dead letter for `queue` carrying `raw`, bytes found in it that are not
/// a valid envelope, with `reason` in [`ERROR_HEADER`]. At most `max_envelope`
/// bytes (less room for the envelope itself) are kept.
pub fn malformed(raw: Bytes, queue: &Name, reason: &str, max_envelope: usize) -> Result<Envelope> {
    let keep = max_envelope.saturating_sub(ENVELOPE_ROOM).max(1);
    let mut headers = vec![(ERROR_HEADER.to_owned(), reason.to_owned())];
    let payload = if raw.len() > keep {
        headers.push((TRUNCATED_HEADER.to_owned(), raw.len().to_string()));
        raw.slice(..keep)
    } else {
        raw
    };
    let mut envelope = Envelope::new(Kind::QueueItem, queue_of(queue)?, OCTET_STREAM, payload);
    envelope.headers = headers;
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    #[test]
    fn malformed_bytes_become_a_decodable_dead_letter() {
        let queue = Name::new("jobs").unwrap();
        let dead = malformed(Bytes::from_static(b"junk"), &queue, "bad", 1 << 20).unwrap();
        assert_eq!(dead.subject.as_str(), "_dead.jobs");
        assert_eq!(dead.content_type, OCTET_STREAM);
        assert_eq!(dead.header(ERROR_HEADER), Some("bad"));
        assert_eq!(&dead.payload[..], b"junk");
        let bytes = wire::encode(&dead).unwrap();
        assert_eq!(wire::decode(&bytes, 1 << 20).unwrap(), dead);
    }

    #[test]
    fn oversized_bytes_are_cut_to_fit() {
        let queue = Name::new("jobs").unwrap();
        let max = ENVELOPE_ROOM + 100;
        let dead = malformed(Bytes::from(vec![7u8; max * 2]), &queue, "big", max).unwrap();
        assert_eq!(dead.payload.len(), 100);
        assert_eq!(
            dead.header(TRUNCATED_HEADER),
            Some((max * 2).to_string().as_str())
        );
        assert!(wire::encode(&dead).unwrap().len() <= max);
    }

    #[test]
    fn an_undecodable_envelope_keeps_its_id_and_says_why() {
        let queue = Name::new("jobs").unwrap();
        let item = Envelope::new(
            Kind::QueueItem,
            queue.clone(),
            ContentType::JSON,
            Bytes::from_static(b"[]"),
        );
        let dead = undecodable(item.clone(), &queue, "not a u32").unwrap();
        assert_eq!(dead.id, item.id);
        assert_eq!(dead.subject.as_str(), "_dead.jobs");
        assert_eq!(dead.header(ERROR_HEADER), Some("not a u32"));
    }
}
