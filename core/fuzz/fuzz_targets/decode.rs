//! Feeds arbitrary bytes to the envelope decoder and the signature check.
//!
//! Properties: nothing panics; whatever decodes re-encodes to exactly the input
//! (the wire form is canonical, which is what lets a signature over a re-encoding
//! stand for the bytes received); no decoded envelope passes verification
//! without the key.
#![no_main]

use busbar_core::security::{verify, verify_wire, KeyRing};
use busbar_core::wire;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn keys() -> &'static KeyRing {
    static KEYS: OnceLock<KeyRing> = OnceLock::new();
    KEYS.get_or_init(|| KeyRing::new("k1", &[0x11; 32]).expect("a valid key"))
}

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    if let Ok(envelope) = wire::decode(&input, wire::DEFAULT_MAX_ENVELOPE) {
        let again = wire::encode(&envelope).expect("a decoded envelope encodes");
        assert_eq!(&again[..], data, "the wire form is canonical");
        assert!(verify(&envelope, keys()).is_err(), "forged without the key");
    }
    assert!(verify_wire(&input, keys(), wire::DEFAULT_MAX_ENVELOPE).is_err());
});
