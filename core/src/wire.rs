//! The binary form of an [`Envelope`], shared by every network transport.
//!
//! Layout (all integers big-endian), documented for other languages in `docs/wire.md`:
//!
//! ```text
//! magic u8 = 0xBB | version u8 = 1 | kind u8 | flags u8
//! id [16] | timestamp_ms u64
//! [deadline_ms u64]        if flags & 1
//! [correlation_id [16]]    if flags & 2
//! subject   str16
//! [reply_to str16]         if flags & 4
//! content_type str8
//! header_count u16, then header_count × (key str16, value str16)
//! payload   u32 length + bytes
//! signature u16 length + bytes   (last; empty when unsigned)
//! ```
//! `str8`/`str16` are a u8/u16 byte length followed by that many bytes of UTF-8.

use crate::codec::ContentType;
use crate::envelope::{Envelope, Kind, MessageId};
use crate::error::{Error, Result};
use crate::name::Name;
use bytes::{BufMut, Bytes, BytesMut};

/// First byte of every encoded envelope.
pub const MAGIC: u8 = 0xBB;
/// The wire format version written and accepted.
pub const VERSION: u8 = 1;
/// Default upper bound on an encoded envelope, in bytes (16 MiB).
pub const DEFAULT_MAX_ENVELOPE: usize = 16 * 1024 * 1024;
/// Most headers an envelope may carry.
pub const MAX_HEADERS: usize = 256;

const HAS_DEADLINE: u8 = 1;
const HAS_CORRELATION: u8 = 2;
const HAS_REPLY_TO: u8 = 4;

/// Encodes `envelope`, refusing fields too long for their length prefix.
pub fn encode(envelope: &Envelope) -> Result<Bytes> {
    // Exactly sized: a buffer filled to its capacity freezes without the
    // allocation `Bytes` otherwise makes to share it.
    let mut out = BytesMut::with_capacity(body_len(envelope) + 2 + envelope.signature.len());
    encode_into(envelope, &mut out)?;
    Ok(out.freeze())
}

/// Encodes `envelope` without its signature: the bytes a signature covers.
pub fn encode_unsigned(envelope: &Envelope) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(body_len(envelope));
    encode_body(envelope, &mut out)?;
    Ok(out.freeze())
}

/// The length of `encode_body`'s output.
fn body_len(e: &Envelope) -> usize {
    let fixed = 4 + 16 + 8;
    let deadline = if e.deadline_ms.is_some() { 8 } else { 0 };
    let correlation = if e.correlation_id.is_some() { 16 } else { 0 };
    let reply_to = e.reply_to.as_ref().map_or(0, |r| 2 + r.len());
    let headers: usize = e.headers.iter().map(|(k, v)| 4 + k.len() + v.len()).sum();
    fixed
        + deadline
        + correlation
        + 2
        + e.subject.len()
        + reply_to
        + 1
        + e.content_type.as_str().len()
        + 2
        + headers
        + 4
        + e.payload.len()
}

/// Appends the encoding of `envelope` to `out`.
pub fn encode_into(envelope: &Envelope, out: &mut BytesMut) -> Result<()> {
    encode_body(envelope, out)?;
    let signature_len = u16::try_from(envelope.signature.len())
        .map_err(|_| Error::Malformed("signature longer than 65535 bytes".into()))?;
    out.put_u16(signature_len);
    out.put_slice(&envelope.signature);
    Ok(())
}

fn encode_body(e: &Envelope, out: &mut BytesMut) -> Result<()> {
    let mut flags = 0;
    if e.deadline_ms.is_some() {
        flags |= HAS_DEADLINE;
    }
    if e.correlation_id.is_some() {
        flags |= HAS_CORRELATION;
    }
    if e.reply_to.is_some() {
        flags |= HAS_REPLY_TO;
    }
    out.put_u8(MAGIC);
    out.put_u8(VERSION);
    out.put_u8(e.kind as u8);
    out.put_u8(flags);
    out.put_u128(e.id.0);
    out.put_u64(e.timestamp_ms);
    if let Some(deadline) = e.deadline_ms {
        out.put_u64(deadline);
    }
    if let Some(correlation) = e.correlation_id {
        out.put_u128(correlation.0);
    }
    put_str16(out, e.subject.as_str(), "subject")?;
    if let Some(reply_to) = &e.reply_to {
        put_str16(out, reply_to, "reply_to")?;
    }
    let content_type = e.content_type.as_str();
    let len = u8::try_from(content_type.len())
        .map_err(|_| Error::Malformed("content type longer than 255 bytes".into()))?;
    out.put_u8(len);
    out.put_slice(content_type.as_bytes());
    if e.headers.len() > MAX_HEADERS {
        return Err(Error::Malformed(format!(
            "{} headers exceed the limit of {MAX_HEADERS}",
            e.headers.len()
        )));
    }
    out.put_u16(e.headers.len() as u16);
    for (key, value) in &e.headers {
        put_str16(out, key, "header key")?;
        put_str16(out, value, "header value")?;
    }
    let payload_len = u32::try_from(e.payload.len())
        .map_err(|_| Error::Malformed("payload longer than 4 GiB".into()))?;
    out.put_u32(payload_len);
    out.put_slice(&e.payload);
    Ok(())
}

fn put_str16(out: &mut BytesMut, text: &str, field: &str) -> Result<()> {
    let len = u16::try_from(text.len())
        .map_err(|_| Error::Malformed(format!("{field} longer than 65535 bytes")))?;
    out.put_u16(len);
    out.put_slice(text.as_bytes());
    Ok(())
}

/// A decoded envelope and where its signed part ends in the input.
#[derive(Debug)]
pub struct Decoded {
    /// The envelope.
    pub envelope: Envelope,
    /// Length of the prefix of the input covered by the signature.
    pub signed_len: usize,
}

/// Decodes an envelope, refusing anything malformed, truncated, with trailing
/// bytes, or larger than `max_len`. Never panics, whatever the input.
pub fn decode(input: &Bytes, max_len: usize) -> Result<Envelope> {
    decode_with_span(input, max_len).map(|decoded| decoded.envelope)
}

/// Like [`decode`], also telling which prefix of the input the signature covers.
pub fn decode_with_span(input: &Bytes, max_len: usize) -> Result<Decoded> {
    let view = check(input, max_len)?;
    let content_type = match view.content_type {
        // The usual one costs no allocation.
        json if json == ContentType::JSON.as_str() => ContentType::JSON,
        other => ContentType::new(other.to_owned()),
    };
    let mut headers = Vec::with_capacity(view.header_count);
    let mut r = Reader {
        input: view.headers,
        pos: 0,
    };
    for _ in 0..view.header_count {
        let key = r.str16()?.to_owned();
        let value = r.str16()?.to_owned();
        headers.push((key, value));
    }
    Ok(Decoded {
        envelope: Envelope {
            id: view.id,
            kind: view.kind,
            subject: Name::checked(view.subject),
            timestamp_ms: view.timestamp_ms,
            deadline_ms: view.deadline_ms,
            reply_to: view.reply_to.map(str::to_owned),
            correlation_id: view.correlation_id,
            headers,
            content_type,
            payload: input.slice(view.payload),
            signature: input.slice(view.signature),
        },
        signed_len: view.signed_len,
    })
}

/// An encoded envelope that passed every check of [`decode`], read in place:
/// nothing copied, nothing allocated. What a broker needs to route an envelope
/// it forwards as it came.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// The message kind.
    pub kind: Kind,
    /// The message id.
    pub id: MessageId,
    /// When the message was made, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The deadline, if any.
    pub deadline_ms: Option<u64>,
    /// The id of the request a reply answers.
    pub correlation_id: Option<MessageId>,
    /// The subject (topic, queue or method), a valid name.
    pub subject: &'a str,
    /// Where replies go, if set.
    pub reply_to: Option<&'a str>,
    /// The payload's content type.
    pub content_type: &'a str,
    /// How many headers there are.
    pub header_count: usize,
    /// The encoded headers (each key and value a str16), already checked.
    headers: &'a [u8],
    payload: std::ops::Range<usize>,
    signature: std::ops::Range<usize>,
    /// Length of the prefix covered by the signature.
    pub signed_len: usize,
}

/// Checks `input` exactly as [`decode`] does (the same code) and returns a
/// borrowed view of it, without copying anything.
pub fn check(input: &[u8], max_len: usize) -> Result<View<'_>> {
    if input.len() > max_len {
        return Err(Error::TooLarge {
            size: input.len(),
            limit: max_len,
        });
    }
    let mut r = Reader { input, pos: 0 };
    if r.u8()? != MAGIC {
        return Err(malformed("not a busbar envelope (bad magic byte)"));
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(Error::Malformed(format!(
            "unsupported wire version {version}"
        )));
    }
    let kind = Kind::from_u8(r.u8()?).ok_or_else(|| malformed("unknown message kind"))?;
    let flags = r.u8()?;
    if flags & !(HAS_DEADLINE | HAS_CORRELATION | HAS_REPLY_TO) != 0 {
        return Err(malformed("unknown flag bits"));
    }
    let id = MessageId(r.u128()?);
    let timestamp_ms = r.u64()?;
    let deadline_ms = if flags & HAS_DEADLINE != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    let correlation_id = if flags & HAS_CORRELATION != 0 {
        Some(MessageId(r.u128()?))
    } else {
        None
    };
    let subject = r.str16()?;
    crate::name::validate(subject, false)?;
    let reply_to = if flags & HAS_REPLY_TO != 0 {
        Some(r.str16()?)
    } else {
        None
    };
    let content_type_len = r.u8()? as usize;
    let content_type = r.str(content_type_len)?;
    let header_count = r.u16()? as usize;
    if header_count > MAX_HEADERS {
        return Err(Error::Malformed(format!(
            "{header_count} headers exceed the limit of {MAX_HEADERS}"
        )));
    }
    let headers_start = r.pos;
    for _ in 0..header_count {
        r.str16()?;
        r.str16()?;
    }
    let headers = &input[headers_start..r.pos];
    let payload_len = r.u32()? as usize;
    let payload = r.range(payload_len)?;
    let signed_len = r.pos;
    let signature_len = r.u16()? as usize;
    let signature = r.range(signature_len)?;
    if r.pos != input.len() {
        return Err(malformed("trailing bytes after the envelope"));
    }
    Ok(View {
        kind,
        id,
        timestamp_ms,
        deadline_ms,
        correlation_id,
        subject,
        reply_to,
        content_type,
        header_count,
        headers,
        payload,
        signature,
        signed_len,
    })
}

fn malformed(what: &str) -> Error {
    Error::Malformed(what.to_owned())
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.input.len())
            .ok_or_else(|| malformed("truncated envelope"))?;
        let slice = &self.input[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn u128(&mut self) -> Result<u128> {
        Ok(u128::from_be_bytes(self.array()?))
    }

    fn str(&mut self, len: usize) -> Result<&'a str> {
        std::str::from_utf8(self.take(len)?).map_err(|_| malformed("a text field is not UTF-8"))
    }

    fn str16(&mut self) -> Result<&'a str> {
        let len = self.u16()? as usize;
        self.str(len)
    }

    /// Skips `len` bytes, returning where they are.
    fn range(&mut self, len: usize) -> Result<std::ops::Range<usize>> {
        let start = self.pos;
        self.take(len)?;
        Ok(start..self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Envelope {
        let mut e = Envelope::new(
            Kind::Request,
            Name::new("inventory.reserve").unwrap(),
            ContentType::JSON,
            Bytes::from_static(br#"[6,7]"#),
        )
        .with_timeout(Duration::from_secs(2));
        e.reply_to = Some("_inbox.abc".into());
        e.correlation_id = Some(MessageId(42));
        e.headers.push(("trace".into(), "t-1".into()));
        e.signature = Bytes::from_static(b"sig");
        e
    }

    #[test]
    fn encoding_fills_exactly_the_buffer_it_sizes() {
        let bare = Envelope::new(
            Kind::Event,
            Name::new("a").unwrap(),
            ContentType::new("text/plain"),
            Bytes::new(),
        );
        for e in [sample(), bare] {
            assert_eq!(
                encode(&e).unwrap().len(),
                body_len(&e) + 2 + e.signature.len()
            );
            assert_eq!(encode_unsigned(&e).unwrap().len(), body_len(&e));
            assert_eq!(
                decode(&encode(&e).unwrap(), DEFAULT_MAX_ENVELOPE).unwrap(),
                e
            );
        }
    }

    #[test]
    fn round_trips_every_field() {
        let e = sample();
        let bytes = encode(&e).unwrap();
        let decoded = decode_with_span(&bytes, DEFAULT_MAX_ENVELOPE).unwrap();
        assert_eq!(decoded.envelope, e);
        assert_eq!(
            &bytes[..decoded.signed_len],
            &encode_unsigned(&e).unwrap()[..]
        );
    }

    #[test]
    fn round_trips_a_minimal_envelope() {
        let e = Envelope::new(
            Kind::Event,
            Name::new("a").unwrap(),
            ContentType::JSON,
            Bytes::new(),
        );
        assert_eq!(decode(&encode(&e).unwrap(), 1024).unwrap(), e);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&sample()).unwrap();
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes.slice(..len), DEFAULT_MAX_ENVELOPE).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn check_reads_in_place_what_decode_reads() {
        let e = sample();
        let bytes = encode(&e).unwrap();
        let view = check(&bytes, DEFAULT_MAX_ENVELOPE).unwrap();
        assert_eq!(
            (view.kind, view.id, view.subject, view.reply_to),
            (e.kind, e.id, e.subject.as_str(), e.reply_to.as_deref())
        );
        assert_eq!(
            (view.correlation_id, view.deadline_ms, view.header_count),
            (e.correlation_id, e.deadline_ms, 1)
        );
        assert_eq!(view.signed_len, encode_unsigned(&e).unwrap().len());
    }

    #[test]
    fn too_many_headers_are_refused() {
        let e = Envelope::new(
            Kind::Event,
            Name::new("a.b").unwrap(),
            ContentType::JSON,
            Bytes::new(),
        );
        let mut bytes = encode(&e).unwrap().to_vec();
        let at = 28 + 2 + 3 + 1 + ContentType::JSON.as_str().len();
        bytes[at..at + 2].copy_from_slice(&(MAX_HEADERS as u16 + 1).to_be_bytes());
        let err = check(&bytes, DEFAULT_MAX_ENVELOPE).unwrap_err();
        assert!(err.to_string().contains("headers exceed"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&sample()).unwrap().to_vec();
        bytes.push(0);
        assert!(decode(&Bytes::from(bytes), DEFAULT_MAX_ENVELOPE).is_err());
    }

    #[test]
    fn oversize_is_refused_before_parsing() {
        let bytes = encode(&sample()).unwrap();
        let err = decode(&bytes, 10).unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit: 10, .. }));
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let bytes = encode(&sample()).unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut copy = bytes.to_vec();
                copy[i] ^= flip;
                let _ = decode(&Bytes::from(copy), DEFAULT_MAX_ENVELOPE);
            }
        }
    }
}
