//! Shared keys: which key signs, which keys are accepted, and how each is loaded.
//!
//! A key is a secret of at least [`MIN_SECRET_LEN`] bytes named by a public key
//! id. Two working keys are derived from the secret with HMAC-SHA256 (one signs,
//! one seals: see [`seal`](super::seal)), so the secret itself is never used
//! directly and is not kept in memory. No key material appears in `Debug`, `Display`, logs or errors:
//! only key ids do.

use super::seal::SealKey;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// HMAC-SHA256, the signature algorithm.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Fewest bytes a secret may have.
pub const MIN_SECRET_LEN: usize = 32;

/// Longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 64;

/// Why a key or key ring could not be built. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key id is empty, too long, or has characters other than printable ASCII
    /// without whitespace or `:`.
    #[error("invalid key id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("the secret of key {id:?} has {len} bytes; at least {MIN_SECRET_LEN} are required")]
    TooShort {
        /// The key id.
        id: String,
        /// The secret's length.
        len: usize,
    },
    /// Two keys of one ring share an id.
    #[error("key id {id:?} appears twice in the key ring")]
    Duplicate {
        /// The repeated id.
        id: String,
    },
    /// The operating system gave no randomness for the sealing salt.
    #[error("no randomness available from the operating system")]
    NoRandomness,
    /// A key file could not be read.
    #[error("cannot read the file of key {id:?} at {path:?}: {source}")]
    File {
        /// The key id.
        id: String,
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

/// One shared key: its id and the working keys derived from its secret.
pub struct Key {
    id: String,
    mac: HmacSha256,
    seal: SealKey,
}

impl Key {
    /// A key named `id` with `secret` (at least [`MIN_SECRET_LEN`] bytes).
    pub fn new(id: &str, secret: &[u8]) -> Result<Key, KeyError> {
        check_id(id)?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::TooShort {
                id: id.to_owned(),
                len: secret.len(),
            });
        }
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
                .expect("HMAC accepts keys of any length");
            mac.update(label);
            mac.finalize().into_bytes().into()
        };
        let mac_key = derive(b"busbar/v1/sign");
        let seal_key = derive(b"busbar/v1/seal");
        Ok(Key {
            id: id.to_owned(),
            mac: <HmacSha256 as KeyInit>::new_from_slice(&mac_key)
                .expect("HMAC accepts keys of any length"),
            seal: SealKey::new(&seal_key).ok_or(KeyError::NoRandomness)?,
        })
    }

    /// A key named `id` whose secret is in the file at `path`: either hex text
    /// (at least 64 hex digits, surrounding whitespace ignored) or raw bytes.
    pub fn from_file(id: &str, path: impl AsRef<Path>) -> Result<Key, KeyError> {
        let path = path.as_ref();
        let contents = std::fs::read(path).map_err(|source| KeyError::File {
            id: id.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        match decode_hex(contents.trim_ascii()) {
            Some(secret) if secret.len() >= MIN_SECRET_LEN => Key::new(id, &secret),
            _ => Key::new(id, &contents),
        }
    }

    /// The key's public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A fresh HMAC state keyed with this key (the key schedule is done once).
    pub(crate) fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    /// The sealing half of the key.
    pub(crate) fn seal(&self) -> &SealKey {
        &self.seal
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The keys of one bus: one signs what it sends, every one is accepted on receipt.
///
/// Rotation: add the new key as accepted everywhere, then make it the signing key
/// everywhere, then remove the old one (see `docs/security.md`).
///
/// ```
/// use busbar_core::security::KeyRing;
/// let keys = KeyRing::new("k2", &[7u8; 32])?
///     .accept("k1", &[9u8; 32])?;
/// assert_eq!(keys.signing_key_id(), "k2");
/// # Ok::<_, busbar_core::security::KeyError>(())
/// ```
#[derive(Clone)]
pub struct KeyRing {
    signing: Arc<Key>,
    accepted: Vec<Arc<Key>>,
}

impl KeyRing {
    /// A ring whose signing (and only accepted) key is `id` with `secret`.
    pub fn new(id: &str, secret: &[u8]) -> Result<KeyRing, KeyError> {
        Ok(KeyRing::from_key(Key::new(id, secret)?))
    }

    /// A ring whose signing key is read from the file at `path` (see [`Key::from_file`]).
    pub fn from_file(id: &str, path: impl AsRef<Path>) -> Result<KeyRing, KeyError> {
        Ok(KeyRing::from_key(Key::from_file(id, path)?))
    }

    /// A ring signing with `key`.
    pub fn from_key(key: Key) -> KeyRing {
        let signing = Arc::new(key);
        KeyRing {
            accepted: vec![signing.clone()],
            signing,
        }
    }

    /// Also accepts messages signed with `id`/`secret`.
    pub fn accept(self, id: &str, secret: &[u8]) -> Result<KeyRing, KeyError> {
        self.accept_key(Key::new(id, secret)?)
    }

    /// Also accepts messages signed with the key in the file at `path`.
    pub fn accept_file(self, id: &str, path: impl AsRef<Path>) -> Result<KeyRing, KeyError> {
        self.accept_key(Key::from_file(id, path)?)
    }

    /// Also accepts messages signed with `key`.
    pub fn accept_key(mut self, key: Key) -> Result<KeyRing, KeyError> {
        if self.get(key.id()).is_some() {
            return Err(KeyError::Duplicate {
                id: key.id().to_owned(),
            });
        }
        self.accepted.push(Arc::new(key));
        Ok(self)
    }

    /// The id of the key that signs outgoing messages.
    pub fn signing_key_id(&self) -> &str {
        self.signing.id()
    }

    /// The ids of every accepted key, the signing key first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.accepted.iter().map(|key| key.id())
    }

    /// The key that signs.
    pub fn signing(&self) -> &Key {
        &self.signing
    }

    /// The accepted key named `id`. Key ids are public, so this lookup need not
    /// be constant time; the MAC comparison is.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.accepted
            .iter()
            .find(|key| key.id() == id)
            .map(|key| &**key)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing", &self.signing_key_id())
            .field("accepted", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

/// Checks the key id rules: 1 to [`MAX_KEY_ID_LEN`] bytes of printable ASCII, no
/// whitespace, no `:` (used to separate an id from a path in URLs).
pub(crate) fn check_id(id: &str) -> Result<(), KeyError> {
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_KEY_ID_LEN {
        "longer than 64 bytes"
    } else if !id.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        "only printable ASCII without whitespace or ':' is allowed"
    } else {
        return Ok(());
    };
    Err(KeyError::InvalidId {
        id: id.chars().take(MAX_KEY_ID_LEN).collect(),
        reason,
    })
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_ids_only() {
        let secret = [0xABu8; 32];
        let ring = KeyRing::new("k1", &secret)
            .unwrap()
            .accept("k0", &[0xCD; 40])
            .unwrap();
        let text = format!("{ring:?} {:?}", ring.signing());
        assert!(text.contains("k1") && text.contains("k0"), "{text}");
        for needle in ["ab", "AB", "171", "cd", "205"] {
            assert!(!text.contains(needle), "{text} shows {needle}");
        }
    }

    #[test]
    fn ids_and_lengths_are_checked() {
        assert!(matches!(
            Key::new("k", &[1; 31]),
            Err(KeyError::TooShort { len: 31, .. })
        ));
        for bad in ["", "a b", "a:b", &"x".repeat(65), "é"] {
            assert!(
                matches!(Key::new(bad, &[1; 32]), Err(KeyError::InvalidId { .. })),
                "{bad:?}"
            );
        }
        let ring = KeyRing::new("a", &[1; 32]).unwrap();
        assert!(matches!(
            ring.accept("a", &[2; 32]),
            Err(KeyError::Duplicate { .. })
        ));
    }

    #[test]
    fn key_files_hold_hex_or_raw_bytes() {
        let dir = std::env::temp_dir().join(format!("busbar-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hex = dir.join("hex");
        std::fs::write(&hex, format!("{}\n", "0f".repeat(32))).unwrap();
        let raw = dir.join("raw");
        std::fs::write(&raw, [0x0f; 32]).unwrap();
        let a = Key::from_file("a", &hex).unwrap();
        let b = Key::from_file("a", &raw).unwrap();
        let tag = |k: &Key| k.mac().chain_update(b"x").finalize().into_bytes();
        assert_eq!(tag(&a), tag(&b));
        let err = Key::from_file("a", dir.join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
