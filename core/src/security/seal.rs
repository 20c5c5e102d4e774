//! Sealing: ChaCha20-Poly1305 encryption of the payload only, with per-sender
//! subkeys so that nonces never repeat.
//!
//! The subject, ids, timestamps and headers stay readable so brokers can route;
//! the payload becomes
//!
//! ```text
//! salt [16] | counter u64 | ciphertext | tag [16]
//! ```
//!
//! and the header `busbar-seal: chacha20poly1305-s1` is appended. The associated
//! data binds the ciphertext to the envelope: `kind u8 | id [16] | subject`.
//!
//! # Nonces
//!
//! ChaCha20-Poly1305 (RFC 8439, here from `ring`, about 9× faster than the
//! pure-Rust XChaCha20-Poly1305; see `benches/security.rs`) has 96-bit nonces,
//! too short to draw at random per message. Instead each process draws a 128-bit
//! random `salt` per key from the operating system, once, and encrypts with the
//! subkey `HMAC-SHA256(seal_key, "busbar/v1/seal-subkey" | salt)` under the nonce
//! `0u32 | counter`, where `counter` counts up per subkey. A nonce therefore never
//! repeats under one subkey, and two processes share a subkey only if their
//! salts collide (probability about 2⁻¹²⁸ per pair). This is the construction of
//! XChaCha20 (a subkey from part of a long nonce), with the subkey derived once
//! per sender instead of once per message. Receivers keep a small cache of
//! subkeys by salt. The envelope is signed after sealing (encrypt-then-MAC), so a
//! receiver checks the signature before it decrypts, or derives, anything.

use super::keys::{HmacSha256, Key};
use super::Rejection;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use bytes::Bytes;
use hmac::Mac;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The header marking a sealed payload; its value names the scheme.
pub const SEAL_HEADER: &str = "busbar-seal";

/// The value of [`SEAL_HEADER`] for the scheme described in this module.
pub const CHACHA20_POLY1305_S1: &str = "chacha20poly1305-s1";

/// Bytes a sealed payload has beyond the plaintext (salt, counter and tag).
pub const SEAL_OVERHEAD: usize = SALT_LEN + COUNTER_LEN + TAG_LEN;

const SALT_LEN: usize = 16;
const COUNTER_LEN: usize = 8;
const TAG_LEN: usize = 16;
/// Subkeys of other senders remembered per key before the cache starts over.
const SUBKEY_CACHE: usize = 256;

/// The sealing half of a [`Key`]: this process's sending subkey and the
/// subkeys of senders seen.
pub(crate) struct SealKey {
    derive: HmacSha256,
    salt: [u8; SALT_LEN],
    subkey: LessSafeKey,
    counter: AtomicU64,
    received: Mutex<HashMap<[u8; SALT_LEN], Arc<LessSafeKey>>>,
}

impl SealKey {
    /// A sealing key from the derived 32-byte `seal_key`; `None` only if the
    /// operating system gives no randomness.
    pub(crate) fn new(seal_key: &[u8; 32]) -> Option<SealKey> {
        let derive = <HmacSha256 as hmac::KeyInit>::new_from_slice(seal_key).ok()?;
        let mut salt = [0; SALT_LEN];
        SystemRandom::new().fill(&mut salt).ok()?;
        let subkey = subkey(&derive, &salt);
        Some(SealKey {
            derive,
            salt,
            subkey,
            counter: AtomicU64::new(0),
            received: Mutex::new(HashMap::new()),
        })
    }

    fn subkey_for(&self, salt: &[u8; SALT_LEN]) -> Arc<LessSafeKey> {
        let mut cache = self.received.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = cache.get(salt) {
            return key.clone();
        }
        if cache.len() >= SUBKEY_CACHE {
            cache.clear();
        }
        let key = Arc::new(subkey(&self.derive, salt));
        cache.insert(*salt, key.clone());
        key
    }
}

fn subkey(derive: &HmacSha256, salt: &[u8; SALT_LEN]) -> LessSafeKey {
    let bytes = derive
        .clone()
        .chain_update(b"busbar/v1/seal-subkey")
        .chain_update(salt)
        .finalize()
        .into_bytes();
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte ChaCha20-Poly1305 key"),
    )
}

fn nonce(counter: [u8; COUNTER_LEN]) -> Nonce {
    let mut nonce = [0; 12];
    nonce[4..].copy_from_slice(&counter);
    Nonce::assume_unique_for_key(nonce)
}

fn associated_data(envelope: &Envelope) -> Vec<u8> {
    let subject = envelope.subject.as_str().as_bytes();
    let mut aad = Vec::with_capacity(17 + subject.len());
    aad.push(envelope.kind as u8);
    aad.extend_from_slice(&envelope.id.0.to_be_bytes());
    aad.extend_from_slice(subject);
    aad
}

/// True when `envelope` carries a sealed payload.
pub fn is_sealed(envelope: &Envelope) -> bool {
    envelope.headers.iter().any(|(key, _)| key == SEAL_HEADER)
}

/// Encrypts `envelope`'s payload with `key` and marks it sealed. Sign afterwards.
pub fn seal(envelope: &mut Envelope, key: &Key) -> Result<()> {
    if is_sealed(envelope) {
        return Err(Error::Malformed("the envelope is already sealed".into()));
    }
    let seal = key.seal();
    let counter = seal.counter.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let mut buffer = Vec::with_capacity(SEAL_OVERHEAD + envelope.payload.len());
    buffer.extend_from_slice(&seal.salt);
    buffer.extend_from_slice(&counter);
    buffer.extend_from_slice(&envelope.payload);
    let tag = seal
        .subkey
        .seal_in_place_separate_tag(
            nonce(counter),
            Aad::from(associated_data(envelope)),
            &mut buffer[SALT_LEN + COUNTER_LEN..],
        )
        .map_err(|_| Error::Malformed("payload too large to seal".into()))?;
    buffer.extend_from_slice(tag.as_ref());
    envelope.payload = Bytes::from(buffer);
    envelope
        .headers
        .push((SEAL_HEADER.to_owned(), CHACHA20_POLY1305_S1.to_owned()));
    Ok(())
}

/// Decrypts a sealed payload in place and removes the seal header. Call only on
/// an envelope whose signature was checked; a failure leaves it unchanged.
pub fn open(envelope: &mut Envelope, key: &Key) -> Result<(), Rejection> {
    let mut seals = envelope
        .headers
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == SEAL_HEADER);
    let (index, (_, scheme)) = seals.next().ok_or(Rejection::NotSealed)?;
    if scheme != CHACHA20_POLY1305_S1 || seals.next().is_some() {
        return Err(Rejection::BadSeal);
    }
    let payload = &envelope.payload;
    if payload.len() < SEAL_OVERHEAD {
        return Err(Rejection::BadSeal);
    }
    let (salt, rest) = payload.split_at(SALT_LEN);
    let (counter, rest) = rest.split_at(COUNTER_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let salt: [u8; SALT_LEN] = salt.try_into().map_err(|_| Rejection::BadSeal)?;
    let counter: [u8; COUNTER_LEN] = counter.try_into().map_err(|_| Rejection::BadSeal)?;
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Rejection::BadSeal)?;
    let mut plaintext = ciphertext.to_vec();
    key.seal()
        .subkey_for(&salt)
        .open_in_place_separate_tag(
            nonce(counter),
            Aad::from(associated_data(envelope)),
            Tag::from(tag),
            &mut plaintext,
            0..,
        )
        .map_err(|_| Rejection::BadSeal)?;
    envelope.headers.remove(index);
    envelope.payload = Bytes::from(plaintext);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_salts_make_nonces_unique() {
        let a = SealKey::new(&[1; 32]).unwrap();
        let b = SealKey::new(&[1; 32]).unwrap();
        assert_ne!(a.salt, b.salt, "two senders draw different salts");
        let counters: std::collections::HashSet<_> = (0..10_000)
            .map(|_| a.counter.fetch_add(1, Ordering::Relaxed))
            .collect();
        assert_eq!(counters.len(), 10_000);
    }

    #[test]
    fn the_subkey_cache_stays_bounded() {
        let key = SealKey::new(&[1; 32]).unwrap();
        for i in 0..(SUBKEY_CACHE * 2) as u32 {
            let mut salt = [0; SALT_LEN];
            salt[..4].copy_from_slice(&i.to_be_bytes());
            key.subkey_for(&salt);
        }
        assert!(key.received.lock().unwrap().len() <= SUBKEY_CACHE);
    }
}
