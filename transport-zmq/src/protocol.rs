//! The busbar ZeroMQ protocol (BBZ/1): frames and commands between clients
//! (DEALER) and the broker (ROUTER). `docs/zmq-protocol.md` is the normative text;
//! this module is its Rust form.
//!
//! Every message is `[SIGNATURE, command, args...]`, each part a ZMTP frame.
//! Integers are big-endian. Envelopes are `busbar_core::wire` encodings.

use busbar_core::wire;
use busbar_core::MessageId;
use bytes::{Bytes, BytesMut};

/// First frame of every message: protocol name and version.
pub(crate) const SIGNATURE: &[u8] = b"BBZ1";

/// Command bytes. Client to broker are below 0x80, broker to client at or above.
pub(crate) mod cmd {
    pub(crate) const HELLO: u8 = 0x01;
    pub(crate) const HEARTBEAT: u8 = 0x02;
    pub(crate) const BYE: u8 = 0x03;
    pub(crate) const SUBSCRIBE: u8 = 0x10;
    pub(crate) const UNSUBSCRIBE: u8 = 0x11;
    pub(crate) const PUBLISH: u8 = 0x12;
    pub(crate) const PUT: u8 = 0x20;
    pub(crate) const FETCH: u8 = 0x21;
    pub(crate) const ACK: u8 = 0x22;
    pub(crate) const NACK: u8 = 0x23;
    pub(crate) const LEN: u8 = 0x24;
    pub(crate) const CANCEL: u8 = 0x25;
    pub(crate) const RETURN: u8 = 0x26;
    pub(crate) const SERVE: u8 = 0x30;
    pub(crate) const UNSERVE: u8 = 0x31;
    pub(crate) const CALL: u8 = 0x32;
    pub(crate) const CALL_ALL: u8 = 0x33;
    pub(crate) const REPLY: u8 = 0x34;
    pub(crate) const DECLINE: u8 = 0x35;
    pub(crate) const BATCH: u8 = 0x7F;

    pub(crate) const WELCOME: u8 = 0x81;
    pub(crate) const BROKER_HEARTBEAT: u8 = 0x82;
    pub(crate) const RESET: u8 = 0x83;
    pub(crate) const GOODBYE: u8 = 0x84;
    pub(crate) const SUBSCRIBED: u8 = 0x90;
    pub(crate) const EVENT: u8 = 0x91;
    pub(crate) const PUBACK: u8 = 0x92;
    pub(crate) const SUBSCRIBE_ERROR: u8 = 0x93;
    pub(crate) const PUBLISH_ERROR: u8 = 0x94;
    pub(crate) const OK: u8 = 0xA0;
    pub(crate) const ITEM: u8 = 0xA1;
    pub(crate) const EMPTY: u8 = 0xA2;
    pub(crate) const COUNT: u8 = 0xA3;
    pub(crate) const ERROR: u8 = 0xAF;
    pub(crate) const SERVING: u8 = 0xB0;
    pub(crate) const REQUEST: u8 = 0xB1;
    pub(crate) const NO_RESPONDERS: u8 = 0xB2;
    pub(crate) const FANOUT: u8 = 0xB3;
    pub(crate) const RESULT: u8 = 0xB4;
    pub(crate) const FAILED: u8 = 0xB5;
    pub(crate) const WITHDRAWN: u8 = 0xB6;
    pub(crate) const SERVE_ERROR: u8 = 0xB7;
    pub(crate) const CALL_ERROR: u8 = 0xB8;
    pub(crate) const BROKER_BATCH: u8 = 0xFF;
}

/// A malformed message: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) type Parsed<T> = Result<T, Malformed>;

fn malformed<T>(what: impl Into<String>) -> Parsed<T> {
    Err(Malformed(what.into()))
}

/// Builds a message: signature, command, then `args`.
pub(crate) fn message(command: u8, args: impl IntoIterator<Item = Bytes>) -> Vec<Bytes> {
    let mut frames = vec![
        Bytes::from_static(SIGNATURE),
        Bytes::copy_from_slice(&[command]),
    ];
    frames.extend(args);
    frames
}

/// The feature a client names in HELLO to receive BROKER_BATCH messages.
pub(crate) const FEATURE_BATCH: &str = "batch";

/// Most commands packed into one BATCH message.
pub(crate) const MAX_BATCH_COMMANDS: usize = 64;

/// Packs whole messages (`[signature, command, args...]`) into one BATCH
/// message: after the signature and `batch_command`, each command is a 3-byte
/// head frame (command u8, argument count u16) followed by its arguments.
pub(crate) fn batch(batch_command: u8, messages: Vec<Vec<Bytes>>) -> Vec<Bytes> {
    let mut out = vec![
        Bytes::from_static(SIGNATURE),
        Bytes::copy_from_slice(&[batch_command]),
    ];
    for message in messages {
        let mut parts = message.into_iter().skip(1);
        let command = parts.next().and_then(|c| c.first().copied()).unwrap_or(0);
        let args: Vec<Bytes> = parts.collect();
        let count = (args.len() as u16).to_be_bytes();
        out.push(Bytes::copy_from_slice(&[command, count[0], count[1]]));
        out.extend(args);
    }
    out
}

/// Unpacks the arguments of a BATCH message into (command, args) pairs.
pub(crate) fn unbatch(args: &[Bytes]) -> Parsed<Vec<(u8, &[Bytes])>> {
    let mut out = Vec::new();
    let mut rest = args;
    while let Some((head, tail)) = rest.split_first() {
        let [command, hi, lo] = <[u8; 3]>::try_from(head.as_ref())
            .or_else(|_| malformed("BATCH: a command head must be 3 bytes"))?;
        let count = u16::from_be_bytes([hi, lo]) as usize;
        if count > tail.len() {
            return malformed("BATCH: a command claims more frames than remain");
        }
        if command == cmd::BATCH || command == cmd::BROKER_BATCH {
            return malformed("BATCH: batches do not nest");
        }
        out.push((command, &tail[..count]));
        rest = &tail[count..];
    }
    Ok(out)
}

/// A u64 frame.
pub(crate) fn u64_frame(value: u64) -> Bytes {
    Bytes::copy_from_slice(&value.to_be_bytes())
}

/// A u32 frame.
pub(crate) fn u32_frame(value: u32) -> Bytes {
    Bytes::copy_from_slice(&value.to_be_bytes())
}

/// A message-id frame (16 bytes).
pub(crate) fn id_frame(id: MessageId) -> Bytes {
    Bytes::copy_from_slice(&id.0.to_be_bytes())
}

/// A frame holding several u64 (subscription ids of one event).
pub(crate) fn u64s_frame(values: &[u64]) -> Bytes {
    let mut out = BytesMut::with_capacity(values.len() * 8);
    for v in values {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.freeze()
}

/// A text frame.
pub(crate) fn text_frame(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Splits a received message (signature already checked) into its command and args.
pub(crate) fn split(frames: &[Bytes]) -> Parsed<(u8, &[Bytes])> {
    match frames {
        [signature, command, args @ ..] => {
            if signature.as_ref() != SIGNATURE {
                return malformed("bad signature frame (expected BBZ1)");
            }
            if command.len() != 1 {
                return malformed("the command frame must be one byte");
            }
            Ok((command[0], args))
        }
        _ => malformed("a message needs at least a signature and a command frame"),
    }
}

/// Reads a u64 frame.
pub(crate) fn read_u64(frame: &Bytes, what: &str) -> Parsed<u64> {
    match <[u8; 8]>::try_from(frame.as_ref()) {
        Ok(bytes) => Ok(u64::from_be_bytes(bytes)),
        Err(_) => malformed(format!("{what}: expected an 8-byte integer")),
    }
}

/// Reads a u32 frame.
pub(crate) fn read_u32(frame: &Bytes, what: &str) -> Parsed<u32> {
    match <[u8; 4]>::try_from(frame.as_ref()) {
        Ok(bytes) => Ok(u32::from_be_bytes(bytes)),
        Err(_) => malformed(format!("{what}: expected a 4-byte integer")),
    }
}

/// Reads a 16-byte message id frame.
pub(crate) fn read_id(frame: &Bytes) -> Parsed<MessageId> {
    match <[u8; 16]>::try_from(frame.as_ref()) {
        Ok(bytes) => Ok(MessageId(u128::from_be_bytes(bytes))),
        Err(_) => malformed("message id: expected 16 bytes"),
    }
}

/// Reads a frame of concatenated u64s.
pub(crate) fn read_u64s(frame: &Bytes) -> Parsed<Vec<u64>> {
    if frame.is_empty() || !frame.len().is_multiple_of(8) {
        return malformed("subscription ids: expected a non-empty multiple of 8 bytes");
    }
    Ok(frame
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
        .collect())
}

/// Reads a UTF-8 text frame.
pub(crate) fn read_text<'a>(frame: &'a Bytes, what: &str) -> Parsed<&'a str> {
    std::str::from_utf8(frame).or_else(|_| malformed(format!("{what}: not UTF-8")))
}

/// Exactly `n` argument frames.
pub(crate) fn args<const N: usize>(args: &[Bytes], command: &str) -> Parsed<[Bytes; N]> {
    match <&[Bytes; N]>::try_from(args) {
        Ok(array) => Ok(array.clone()),
        Err(_) => malformed(format!(
            "{command}: expected {N} argument frames, got {}",
            args.len()
        )),
    }
}

/// Checks an envelope in full with the decoder every client uses, reading it
/// in place (nothing copied): the broker stores and forwards only envelopes a
/// client can decode.
pub(crate) fn envelope(bytes: &[u8], max_len: usize) -> Parsed<wire::View<'_>> {
    wire::check(bytes, max_len).or_else(|err| malformed(format!("envelope refused: {err}")))
}

/// The request id of a CALL's envelope, if it can be read even though the
/// envelope was refused (it starts like one and is long enough).
pub(crate) fn request_id(bytes: &[u8]) -> Option<MessageId> {
    if bytes.first() != Some(&wire::MAGIC) {
        return None;
    }
    let id: [u8; 16] = bytes.get(4..20)?.try_into().ok()?;
    Some(MessageId(u128::from_be_bytes(id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use busbar_core::{ContentType, Envelope, Kind, Name};
    use std::time::Duration;

    #[test]
    fn envelopes_are_checked_in_full() {
        let mut e = Envelope::new(
            Kind::Request,
            Name::new("math.add").unwrap(),
            ContentType::JSON,
            Bytes::from_static(b"[1,2]"),
        )
        .with_timeout(Duration::from_secs(1));
        e.correlation_id = Some(MessageId(7));
        let bytes = wire::encode(&e).unwrap();
        let view = envelope(&bytes, 1 << 20).unwrap();
        assert_eq!(view.kind, Kind::Request);
        assert_eq!(view.id, e.id);
        assert_eq!(view.subject, "math.add");
        assert_eq!(view.deadline_ms, e.deadline_ms);
        assert_eq!(request_id(&bytes), Some(e.id));
        for len in 0..bytes.len() {
            assert!(envelope(&bytes[..len], 1 << 20).is_err());
        }
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(envelope(&trailing, 1 << 20).is_err());
        assert!(envelope(&bytes, 4).is_err());
        assert_eq!(request_id(b"garbage"), None);
    }

    #[test]
    fn split_checks_signature_and_command() {
        assert!(split(&[Bytes::from_static(b"XXXX"), Bytes::from_static(&[1])]).is_err());
        assert!(split(&[Bytes::from_static(SIGNATURE)]).is_err());
        assert!(split(&[Bytes::from_static(SIGNATURE), Bytes::from_static(&[1, 2])]).is_err());
        let frames = message(cmd::HELLO, [text_frame("x")]);
        let (command, rest) = split(&frames).unwrap();
        assert_eq!(command, cmd::HELLO);
        assert_eq!(rest.len(), 1);
    }

    #[test]
    fn batches_round_trip_and_refuse_garbage() {
        let messages = vec![
            message(cmd::OK, [u64_frame(1)]),
            message(cmd::COUNT, [u64_frame(2), u64_frame(3)]),
            message(cmd::GOODBYE, []),
        ];
        let packed = batch(cmd::BROKER_BATCH, messages);
        let (command, args) = split(&packed).unwrap();
        assert_eq!(command, cmd::BROKER_BATCH);
        let unpacked = unbatch(args).unwrap();
        assert_eq!(unpacked.len(), 3);
        assert_eq!(unpacked[1].0, cmd::COUNT);
        assert_eq!(read_u64(&unpacked[1].1[1], "n").unwrap(), 3);
        assert!(unpacked[2].1.is_empty());
        assert!(unbatch(&[Bytes::from_static(&[cmd::OK, 0, 5])]).is_err());
        assert!(unbatch(&[Bytes::from_static(&[cmd::OK])]).is_err());
        assert!(unbatch(&[Bytes::from_static(&[cmd::BATCH, 0, 0])]).is_err());
    }

    #[test]
    fn integer_frames_round_trip() {
        assert_eq!(read_u64(&u64_frame(42), "x").unwrap(), 42);
        assert_eq!(read_u32(&u32_frame(7), "x").unwrap(), 7);
        assert_eq!(read_u64s(&u64s_frame(&[1, 2, 3])).unwrap(), vec![1, 2, 3]);
        assert!(read_u64s(&Bytes::from_static(&[1, 2, 3])).is_err());
        assert_eq!(read_id(&id_frame(MessageId(9))).unwrap(), MessageId(9));
    }
}
