//! Properties of signing, sealing, limits and the decoder, over generated input.

use super::*;
use crate::envelope::{Kind, MessageId};
use crate::wire;
use crate::{ContentType, Name};
use bytes::Bytes;
use proptest::prelude::*;

fn keys() -> KeyRing {
    KeyRing::new("k1", &[0x11; 32]).unwrap()
}

fn other_keys() -> KeyRing {
    KeyRing::new("k1", &[0x22; 32]).unwrap()
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    let ids = (
        any::<u128>(),
        any::<u64>(),
        any::<Option<u64>>(),
        any::<Option<u128>>(),
    );
    let text = (
        "[a-z]{1,8}(\\.[a-z0-9_-]{1,8}){0,3}",
        proptest::option::of(".{0,24}"),
        "[a-z/+.-]{0,30}",
        proptest::collection::vec((".{0,10}", ".{0,16}"), 0..4),
    );
    (
        1u8..=5,
        ids,
        text,
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(
            |(kind, (id, ts, deadline, corr), (subject, reply_to, ct, headers), payload)| {
                let mut e = Envelope::new(
                    Kind::from_u8(kind).unwrap(),
                    Name::new(&subject).unwrap(),
                    ContentType::new(ct),
                    Bytes::from(payload),
                );
                e.id = MessageId(id);
                e.timestamp_ms = ts;
                e.deadline_ms = deadline;
                e.correlation_id = corr.map(MessageId);
                e.reply_to = reply_to;
                e.headers = headers;
                e
            },
        )
}

fn signed_bytes(mut e: Envelope) -> Bytes {
    sign(&mut e, &keys()).unwrap();
    wire::encode(&e).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sign_then_verify_round_trips(e in arb_envelope()) {
        let mut signed = e.clone();
        sign(&mut signed, &keys()).unwrap();
        prop_assert!(verify(&signed, &keys()).is_ok());
        prop_assert_eq!(verify(&signed, &other_keys()).err(), Some(Rejection::BadSignature));
        let bytes = wire::encode(&signed).unwrap();
        let back = verify_wire(&bytes, &keys(), wire::DEFAULT_MAX_ENVELOPE).unwrap();
        prop_assert_eq!(back, signed);
    }

    #[test]
    fn any_single_byte_change_is_rejected(
        e in arb_envelope(),
        at in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let bytes = signed_bytes(e);
        let mut changed = bytes.to_vec();
        let i = at.index(changed.len());
        changed[i] ^= delta;
        let changed = Bytes::from(changed);
        prop_assert!(verify_wire(&changed, &keys(), wire::DEFAULT_MAX_ENVELOPE).is_err());
        // The envelope-level path (what the layer does after a transport decoded).
        if let Ok(decoded) = wire::decode(&changed, wire::DEFAULT_MAX_ENVELOPE) {
            prop_assert!(verify(&decoded, &keys()).is_err(), "byte {} accepted", i);
        }
    }

    #[test]
    fn wire_len_is_exact(e in arb_envelope(), signed in any::<bool>()) {
        let mut e = e;
        if signed {
            sign(&mut e, &keys()).unwrap();
        }
        prop_assert_eq!(wire_len(&e), wire::encode(&e).unwrap().len());
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_payload(e in arb_envelope()) {
        let key = keys();
        let mut sealed = e.clone();
        seal::seal(&mut sealed, key.signing()).unwrap();
        prop_assert_eq!(sealed.payload.len(), e.payload.len() + seal::SEAL_OVERHEAD);
        if e.payload.len() >= 8 {
            prop_assert!(!sealed.payload.windows(e.payload.len()).any(|w| w == &e.payload[..]));
        }
        let mut wrong = sealed.clone();
        prop_assert_eq!(seal::open(&mut wrong, other_keys().signing()), Err(Rejection::BadSeal));
        let mut moved = sealed.clone();
        moved.id = MessageId(moved.id.0 ^ 1);
        prop_assert_eq!(seal::open(&mut moved, key.signing()), Err(Rejection::BadSeal));
        seal::open(&mut sealed, key.signing()).unwrap();
        prop_assert_eq!(sealed, e);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let input = Bytes::from(input);
        let _ = wire::decode(&input, wire::DEFAULT_MAX_ENVELOPE);
        let _ = verify_wire(&input, &keys(), wire::DEFAULT_MAX_ENVELOPE);
    }

    #[test]
    fn decoder_never_panics_on_mangled_envelopes(
        e in arb_envelope(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = signed_bytes(e).to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let input = Bytes::from(bytes);
        if let Ok(decoded) = wire::decode(&input, wire::DEFAULT_MAX_ENVELOPE) {
            // Canonical: what decodes re-encodes to the very bytes received, so
            // the MAC over a re-encoding stands for the bytes on the wire.
            prop_assert_eq!(&wire::encode(&decoded).unwrap()[..], &input[..]);
            let _ = verify(&decoded, &keys());
            let mut opened = decoded;
            let _ = seal::open(&mut opened, keys().signing());
        }
        let _ = verify_wire(&input, &keys(), wire::DEFAULT_MAX_ENVELOPE);
    }
}

#[test]
fn signature_layout_is_scheme_key_id_mac() {
    let mut e = Envelope::new(
        Kind::Event,
        Name::new("a").unwrap(),
        ContentType::JSON,
        Bytes::from_static(b"{}"),
    );
    sign(&mut e, &keys()).unwrap();
    assert_eq!(e.signature[0], sign::SCHEME_HMAC_SHA256);
    assert_eq!(&e.signature[1..4], b"\x02k1");
    assert_eq!(e.signature.len(), 4 + sign::MAC_LEN);
    assert_eq!(sign::claimed_key_id(&e.signature), Some("k1"));
}

#[test]
fn rotation_accepts_old_and_new_keys() {
    let old = KeyRing::new("old", &[1; 32]).unwrap();
    let new = KeyRing::new("new", &[2; 32])
        .unwrap()
        .accept("old", &[1; 32])
        .unwrap();
    let mut e = Envelope::new(
        Kind::Event,
        Name::new("a").unwrap(),
        ContentType::JSON,
        Bytes::new(),
    );
    sign(&mut e, &old).unwrap();
    assert_eq!(verify(&e, &new).unwrap().id(), "old");
    sign(&mut e, &new).unwrap();
    assert_eq!(verify(&e, &old).err(), Some(Rejection::UnknownKey));
    e.signature = Bytes::new();
    assert_eq!(verify(&e, &new).err(), Some(Rejection::Unsigned));
}

#[test]
fn limits_name_what_is_too_large() {
    let limits = Limits {
        max_envelope: 200,
        max_payload: 100,
        max_headers: 2,
    };
    let mut e = Envelope::new(
        Kind::Event,
        Name::new("a").unwrap(),
        ContentType::JSON,
        Bytes::from(vec![0; 101]),
    );
    assert!(matches!(
        limits.check(&e),
        Err(crate::Error::TooLarge {
            size: 101,
            limit: 100
        })
    ));
    e.payload = Bytes::from(vec![0; 100]);
    assert!(limits.check(&e).is_ok());
    e.headers = vec![("a".into(), "b".repeat(60)); 2];
    assert!(matches!(
        limits.check(&e),
        Err(crate::Error::TooLarge { limit: 200, .. })
    ));
    e.headers = vec![("a".into(), "b".into()); 3];
    assert!(matches!(limits.check(&e), Err(crate::Error::Malformed(_))));
}

/// A test vector computed independently (Python's `hmac`/`hashlib`, following
/// `docs/security.md` and `docs/wire.md`), pinning the signature format for
/// implementations in other languages.
#[test]
fn signature_matches_the_published_test_vector() {
    const SIGNATURE: &str =
        "01026b311f969e52084291b04d7d87351536c11f16036bbdb407298212c569e0d94e3607";
    const WIRE: &str = "bb0101000102030405060708090a0b0c0d0e0f100000018bcfe56800000e6f72646572732e63726561746564106170706c69636174696f6e2f6a736f6e0001000574726163650003742d31000000097b226964223a34327d002401026b311f969e52084291b04d7d87351536c11f16036bbdb407298212c569e0d94e3607";
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut e = Envelope::new(
        Kind::Event,
        Name::new("orders.created").unwrap(),
        ContentType::JSON,
        Bytes::from_static(br#"{"id":42}"#),
    );
    e.id = MessageId(u128::from_be_bytes(std::array::from_fn(|i| i as u8 + 1)));
    e.timestamp_ms = 1_700_000_000_000;
    e.headers.push(("trace".into(), "t-1".into()));
    sign(&mut e, &keys()).unwrap();
    assert_eq!(hex(&e.signature), SIGNATURE);
    let bytes = wire::encode(&e).unwrap();
    assert_eq!(hex(&bytes), WIRE);
    assert_eq!(
        verify_wire(&bytes, &keys(), wire::DEFAULT_MAX_ENVELOPE).unwrap(),
        e
    );
}

/// A sealed payload made independently (Python's `cryptography` ChaCha20Poly1305
/// with the subkey, nonce and associated data of `docs/security.md`): salt
/// `a0..af`, counter 7, plaintext `{"id":42}`, for the event of the signature
/// test vector.
#[test]
fn open_reads_the_published_seal_test_vector() {
    const SEALED: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf0000000000000007950fa0bed88d1173e74acd3f0ee0dda9450c105292fbe96782";
    let payload: Vec<u8> = (0..SEALED.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&SEALED[i..i + 2], 16).unwrap())
        .collect();
    let mut e = Envelope::new(
        Kind::Event,
        Name::new("orders.created").unwrap(),
        ContentType::JSON,
        Bytes::from(payload),
    );
    e.id = MessageId(u128::from_be_bytes(std::array::from_fn(|i| i as u8 + 1)));
    e.headers
        .push((seal::SEAL_HEADER.into(), seal::CHACHA20_POLY1305_S1.into()));
    seal::open(&mut e, keys().signing()).unwrap();
    assert_eq!(&e.payload[..], br#"{"id":42}"#);
    assert!(e.headers.is_empty());
}
