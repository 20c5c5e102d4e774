//! Signing: HMAC-SHA256 over [`wire::encode_unsigned`], checked in constant time.
//!
//! The signature field of a signed envelope is
//!
//! ```text
//! scheme u8 = 1 | key_id str8 | mac [32]
//! ```
//!
//! where `mac` is HMAC-SHA256, keyed with the key's signing key, over every byte of
//! the envelope's wire form before the signature's own length field: kind, flags,
//! ids, timestamps, deadline, subject, reply-to, content type, headers and payload.

use super::keys::{Key, KeyRing};
use super::Rejection;
use crate::envelope::Envelope;
use crate::error::Result;
use crate::wire;
use bytes::{BufMut, Bytes, BytesMut};
use hmac::Mac;

/// The one signature scheme: HMAC-SHA256.
pub const SCHEME_HMAC_SHA256: u8 = 1;

/// Length of an HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;

/// Signs `envelope` with the ring's signing key, replacing any signature.
///
/// Returns the length of the signed part of its wire form.
pub fn sign(envelope: &mut Envelope, keys: &KeyRing) -> Result<usize> {
    sign_with(envelope, keys.signing())
}

/// Runs `f` on the bytes a signature covers ([`wire::encode_unsigned`]), encoded
/// into a buffer reused per thread so that signing and verifying do not allocate.
fn with_signed_part<T>(envelope: &Envelope, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
    thread_local! {
        static BUFFER: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    BUFFER.with(|buffer| {
        let Ok(mut buffer) = buffer.try_borrow_mut() else {
            return Ok(f(&wire::encode_unsigned(envelope)?));
        };
        buffer.clear();
        wire::encode_into(envelope, &mut buffer)?;
        let signed_len = buffer.len() - 2 - envelope.signature.len();
        let result = f(&buffer[..signed_len]);
        if buffer.capacity() > 64 * 1024 {
            *buffer = BytesMut::new();
        }
        Ok(result)
    })
}

pub(crate) fn sign_with(envelope: &mut Envelope, key: &Key) -> Result<usize> {
    let (tag, signed_len) = with_signed_part(envelope, |body| {
        (
            key.mac().chain_update(body).finalize().into_bytes(),
            body.len(),
        )
    })?;
    let id = key.id().as_bytes();
    let mut signature = BytesMut::with_capacity(2 + id.len() + MAC_LEN);
    signature.put_u8(SCHEME_HMAC_SHA256);
    signature.put_u8(id.len() as u8);
    signature.put_slice(id);
    signature.put_slice(&tag);
    envelope.signature = signature.freeze();
    Ok(signed_len)
}

/// The key id a signature claims, if the signature is well formed.
///
/// For logs: the id is not authenticated until the MAC checks out.
pub fn claimed_key_id(signature: &[u8]) -> Option<&str> {
    parse(signature).ok().map(|(id, _)| id)
}

fn parse(signature: &[u8]) -> Result<(&str, &[u8]), Rejection> {
    let (&scheme, rest) = signature.split_first().ok_or(Rejection::Unsigned)?;
    if scheme != SCHEME_HMAC_SHA256 {
        return Err(Rejection::BadSignatureFormat);
    }
    let (&id_len, rest) = rest.split_first().ok_or(Rejection::BadSignatureFormat)?;
    let id_len = id_len as usize;
    if rest.len() != id_len + MAC_LEN {
        return Err(Rejection::BadSignatureFormat);
    }
    let (id, mac) = rest.split_at(id_len);
    let id = std::str::from_utf8(id).map_err(|_| Rejection::BadSignatureFormat)?;
    super::keys::check_id(id).map_err(|_| Rejection::BadSignatureFormat)?;
    Ok((id, mac))
}

/// Checks `envelope`'s signature against the ring, in constant time, and returns
/// the key that made it. The payload is neither decoded nor decrypted here.
pub fn verify<'k>(envelope: &Envelope, keys: &'k KeyRing) -> Result<&'k Key, Rejection> {
    let (id, tag) = parse(&envelope.signature)?;
    let key = keys.get(id).ok_or(Rejection::UnknownKey)?;
    with_signed_part(envelope, |body| {
        key.mac().chain_update(body).verify_slice(tag)
    })
    .map_err(|_| Rejection::Malformed)?
    .map_err(|_| Rejection::BadSignature)?;
    Ok(key)
}

/// Decodes an envelope from its wire form and checks its signature over the
/// exact bytes received, before anything in the payload is looked at.
///
/// `max_len` bounds the input before parsing. This is what a network transport
/// (or a program in another language) does with the bytes it reads.
pub fn verify_wire(input: &Bytes, keys: &KeyRing, max_len: usize) -> Result<Envelope, Rejection> {
    let decoded = wire::decode_with_span(input, max_len).map_err(|err| match err {
        crate::Error::TooLarge { .. } => Rejection::TooLarge,
        _ => Rejection::Malformed,
    })?;
    let (id, tag) = parse(&decoded.envelope.signature)?;
    let key = keys.get(id).ok_or(Rejection::UnknownKey)?;
    key.mac()
        .chain_update(&input[..decoded.signed_len])
        .verify_slice(tag)
        .map_err(|_| Rejection::BadSignature)?;
    Ok(decoded.envelope)
}
