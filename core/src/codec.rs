//! Payload encoding. JSON (serde_json) is the default and, for now, the only codec.

use crate::error::{Error, Result};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

/// The media type naming how a payload is encoded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContentType(Cow<'static, str>);

impl ContentType {
    /// `application/json`, the default.
    pub const JSON: ContentType = ContentType(Cow::Borrowed("application/json"));

    /// `application/octet-stream`: bytes of no known encoding (such as a dead
    /// letter wrapping something that was not an envelope).
    pub const OCTET_STREAM: ContentType = ContentType(Cow::Borrowed("application/octet-stream"));

    /// A content type from its media type text.
    pub fn new(media_type: impl Into<Cow<'static, str>>) -> Self {
        ContentType(media_type.into())
    }

    /// The media type text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ContentType {
    fn default() -> Self {
        ContentType::JSON
    }
}

impl fmt::Debug for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Encodes a value as a JSON payload.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(Error::codec)
}

/// Decodes a payload of `content_type` as `T`.
///
/// A payload that is not JSON, or does not fit `T`, is an [`Error::Codec`] naming the
/// expected type, so the caller sees a clear message instead of a wrong value.
pub fn decode<T: DeserializeOwned>(content_type: &ContentType, payload: &[u8]) -> Result<T> {
    if *content_type != ContentType::JSON {
        return Err(Error::codec(format!(
            "cannot decode content type {content_type} (expected application/json)"
        )));
    }
    serde_json::from_slice(payload).map_err(|err| {
        Error::codec(format!(
            "payload does not decode as {}: {err}",
            std::any::type_name::<T>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_json() {
        let bytes = encode(&(1, "two")).unwrap();
        let back: (i32, String) = decode(&ContentType::JSON, &bytes).unwrap();
        assert_eq!(back, (1, "two".to_string()));
    }

    #[test]
    fn wrong_type_is_a_codec_error_naming_the_type() {
        let bytes = encode(&"text").unwrap();
        let err = decode::<u32>(&ContentType::JSON, &bytes).unwrap_err();
        assert!(matches!(err, Error::Codec(_)));
        assert!(err.to_string().contains("u32"), "{err}");
    }

    #[test]
    fn unknown_content_type_is_refused() {
        let err = decode::<u32>(&ContentType::new("application/msgpack"), b"1").unwrap_err();
        assert!(err.to_string().contains("msgpack"), "{err}");
    }
}
