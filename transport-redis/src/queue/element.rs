//! A queue element as Redis stores it: an encoded envelope, or, once the item
//! has come back (reaped or nacked), `"\x01" <count, decimal> "\x00"` followed by
//! the envelope. The scripts read the id the same way (see `scripts::PARK`).

use bytes::Bytes;

/// Marks an element that came back at least once.
const RETURNED: u8 = 1;

/// A queue element, split into what the client needs.
#[derive(Debug, PartialEq)]
pub(super) struct Element {
    /// The encoded envelope.
    pub(super) envelope: Bytes,
    /// Its delivery attempt: one more than the times it came back.
    pub(super) attempt: u32,
    /// Its key in the in-flight table: envelope bytes 4..20 (the envelope id),
    /// zero-padded when the element is too short to be an envelope.
    pub(super) id: [u8; 16],
}

impl Element {
    /// Splits `raw` exactly as the scripts do, so ids agree with Redis even for
    /// malformed elements (which must still be settled by that id).
    pub(super) fn parse(raw: Bytes) -> Element {
        let (returns, start) = match raw.first() {
            Some(&RETURNED) => match raw[1..].iter().position(|&b| b == 0) {
                Some(end) => (count(&raw[1..=end]), end + 2),
                None => (0, 0),
            },
            _ => (0, 0),
        };
        let mut id = [0u8; 16];
        let from = (start + 4).min(raw.len());
        let to = (start + 20).min(raw.len());
        id[..to - from].copy_from_slice(&raw[from..to]);
        let mut envelope = raw;
        // Advancing, unlike slicing, never copies or shares the buffer.
        bytes::Buf::advance(&mut envelope, start);
        Element {
            envelope,
            attempt: returns.saturating_add(1),
            id,
        }
    }
}

/// A return count as the scripts write it; anything unreadable counts as none.
fn count(digits: &[u8]) -> u32 {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Element;
    use bytes::Bytes;

    fn envelope() -> Vec<u8> {
        let mut bytes = vec![0xBB, 1, 0, 0];
        bytes.extend(1..=16u8);
        bytes.extend(b"rest");
        bytes
    }

    #[test]
    fn a_first_delivery_is_the_envelope_itself() {
        let element = Element::parse(Bytes::from(envelope()));
        assert_eq!(element.envelope, envelope());
        assert_eq!(element.attempt, 1);
        assert_eq!(element.id.to_vec(), (1..=16u8).collect::<Vec<_>>());
    }

    #[test]
    fn a_returned_element_carries_its_count() {
        let mut raw = b"\x0112\x00".to_vec();
        raw.extend(envelope());
        let element = Element::parse(Bytes::from(raw));
        assert_eq!(element.envelope, envelope());
        assert_eq!(element.attempt, 13);
        assert_eq!(element.id.to_vec(), (1..=16u8).collect::<Vec<_>>());
    }

    #[test]
    fn malformed_elements_get_the_scripts_id() {
        // Too short: the id is what there is, zero-padded.
        let short = Element::parse(Bytes::from_static(b"abcdefg"));
        assert_eq!(&short.id[..3], b"efg");
        assert_eq!(short.id[3..], [0; 13]);
        // A return marker without its end is read as a bare envelope.
        let unended = Element::parse(Bytes::from_static(b"\x01abcdefghijklmnopqrstu"));
        assert_eq!(unended.attempt, 1);
        assert_eq!(&unended.id, b"defghijklmnopqrs");
        // An unreadable count counts as no return.
        let garbled = Element::parse(Bytes::from_static(b"\x01x\x00abcd0123456789abcdef"));
        assert_eq!(garbled.attempt, 1);
        assert_eq!(&garbled.id, b"0123456789abcdef");
    }
}
