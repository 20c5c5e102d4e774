//! Security settings read from a bus URL's query.

use super::{KeyRing, Limits, SecureLayer};
use crate::error::{Error, Result};
use crate::registry::redact_url;
use std::time::Duration;

/// The query parameters the security layer takes; every other one is left for
/// the transport.
const PARAMS: &[&str] = &[
    "key_id",
    "key_file",
    "accept",
    "encrypt",
    "max_envelope",
    "max_payload",
    "max_headers",
    "max_age_ms",
];

impl SecureLayer {
    /// Reads the security settings from `url`'s query and returns the URL
    /// without them (for the transport) and the layer they describe, if any.
    ///
    /// | parameter | meaning |
    /// |---|---|
    /// | `key_id=ID&key_file=PATH` | sign with this key (file: hex or raw, ≥ 32 bytes); accept only signed messages |
    /// | `accept=ID:PATH` | also accept this key (repeatable; for rotation) |
    /// | `encrypt=true` | seal payloads; refuse unsealed ones |
    /// | `max_envelope=N`, `max_payload=N`, `max_headers=N` | limits, in bytes and headers |
    /// | `max_age_ms=N` | oldest accepted event, request or reply |
    ///
    /// Errors are [`Error::InvalidUrl`]; they name key ids and paths, never a key.
    ///
    /// ```
    /// use busbar_core::security::SecureLayer;
    /// let (url, layer) = SecureLayer::from_url("redis://h/0?protocol=resp3&max_headers=16")?;
    /// assert_eq!(url, "redis://h/0?protocol=resp3");
    /// assert!(layer.is_some());
    /// # Ok::<_, busbar_core::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<(String, Option<SecureLayer>)> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None));
        };
        let mut kept = Vec::new();
        let mut key_id = None;
        let mut key_file = None;
        let mut accept = Vec::new();
        let mut encrypt = false;
        let mut limits = Limits::default();
        let mut max_age = None;
        let mut any = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !PARAMS.contains(&name) {
                kept.push(pair);
                continue;
            }
            any = true;
            let value = percent_decode(value)
                .ok_or_else(|| invalid(format!("{name}: bad percent-encoding")))?;
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|_| invalid(format!("{name} must be a number, got {value:?}")))
            };
            match name {
                "key_id" => key_id = Some(value.clone()),
                "key_file" => key_file = Some(value.clone()),
                "accept" => {
                    let (id, path) = value
                        .split_once(':')
                        .ok_or_else(|| invalid("accept must be ID:PATH".into()))?;
                    accept.push((id.to_owned(), path.to_owned()));
                }
                "encrypt" => {
                    encrypt = match value.as_str() {
                        "true" | "1" | "yes" | "on" => true,
                        "false" | "0" | "no" | "off" => false,
                        other => {
                            return Err(invalid(format!(
                                "encrypt must be true or false, got {other:?}"
                            )))
                        }
                    }
                }
                "max_envelope" => limits.max_envelope = number()?,
                "max_payload" => limits.max_payload = number()?,
                "max_headers" => limits.max_headers = number()?,
                "max_age_ms" => max_age = Some(Duration::from_millis(number()? as u64)),
                _ => unreachable!("every name of PARAMS is handled"),
            }
        }
        let transport_url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        if !any {
            return Ok((transport_url, None));
        }
        let keys = match (key_id, key_file) {
            (Some(id), Some(path)) => {
                let mut keys =
                    KeyRing::from_file(&id, &path).map_err(|e| invalid(e.to_string()))?;
                for (id, path) in accept {
                    keys = keys
                        .accept_file(&id, &path)
                        .map_err(|e| invalid(e.to_string()))?;
                }
                Some(keys)
            }
            (None, None) if accept.is_empty() && !encrypt => None,
            (None, None) => {
                return Err(invalid(
                    "accept and encrypt need a signing key: add key_id and key_file".into(),
                ))
            }
            _ => return Err(invalid("key_id and key_file go together".into())),
        };
        let mut layer = match keys {
            Some(keys) => SecureLayer::new(keys).encrypt(encrypt),
            None => SecureLayer::limits_only(limits),
        }
        .limits(limits);
        if let Some(max_age) = max_age {
            layer.freshness.max_age = max_age;
        }
        Ok((transport_url, Some(layer)))
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_other_parameters_to_the_transport() {
        let (url, layer) = SecureLayer::from_url("memory://x").unwrap();
        assert_eq!(url, "memory://x");
        assert!(layer.is_none());
        let (url, layer) = SecureLayer::from_url("redis://h?a=1&max_payload=10&b=2").unwrap();
        assert_eq!(url, "redis://h?a=1&b=2");
        assert_eq!(layer.unwrap().limits.max_payload, 10);
        let (url, _) = SecureLayer::from_url("memory://x?max_headers=3").unwrap();
        assert_eq!(url, "memory://x");
    }

    #[test]
    fn errors_name_the_problem_not_the_key() {
        let dir = std::env::temp_dir().join(format!("busbar-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "secretsecret").unwrap();
        let url = format!("memory://?key_id=k&key_file={}", short.display());
        let err = SecureLayer::from_url(&url).unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
        assert!(!err.contains("secretsecret"), "{err}");
        for (url, needle) in [
            ("memory://?key_id=k", "go together"),
            ("memory://?encrypt=true", "need a signing key"),
            ("memory://?encrypt=maybe", "true or false"),
            ("memory://?max_payload=x", "number"),
            ("memory://?accept=nocolon", "ID:PATH"),
        ] {
            let err = SecureLayer::from_url(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
    }
}
