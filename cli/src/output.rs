//! What commands print: JSON lines on stdout, status lines on stderr.

use busbar::{ContentType, Latencies, Message, StatsSnapshot};
use serde::de::IgnoredAny;
use serde_json::{json, Value};
use std::io::Write;

/// Writes one line on stdout and flushes it, so pipes see it at once.
pub(crate) fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes one JSON value as a line on stdout.
pub(crate) fn print_json(value: &Value) -> std::io::Result<()> {
    print_line(&value.to_string())
}

/// A status line on stderr: `busbar: ...`.
pub(crate) fn status(text: &str) {
    eprintln!("busbar: {text}");
}

/// An event as printed by `busbar sub`, one JSON line (format in cli/README.md):
/// `{"topic": .., "headers": [[key, value], ..], "payload": ..}`.
///
/// Every header is kept, in order, repeats included. A payload is printed as
/// its own JSON text, compacted but otherwise verbatim (no number is rounded),
/// when its content type is JSON and it is valid JSON; any other payload is
/// `"payload_base64"` instead, exactly its bytes. A content type other than
/// JSON is printed as `"content_type"`.
pub(crate) fn message_line(message: &Message) -> String {
    let envelope = message.envelope();
    let mut line = String::with_capacity(64 + 2 * message.payload().len());
    line.push_str("{\"topic\":");
    line.push_str(&Value::from(message.topic().as_str()).to_string());
    line.push_str(",\"headers\":");
    line.push_str(&json!(message.headers()).to_string());
    let json = envelope.content_type == ContentType::JSON;
    if !json {
        line.push_str(",\"content_type\":");
        line.push_str(&Value::from(envelope.content_type.as_str()).to_string());
    }
    match std::str::from_utf8(message.payload()) {
        Ok(text) if json && serde_json::from_str::<IgnoredAny>(text).is_ok() => {
            line.push_str(",\"payload\":");
            compact_json(text, &mut line);
        }
        _ => {
            line.push_str(",\"payload_base64\":\"");
            base64(message.payload(), &mut line);
            line.push('"');
        }
    }
    line.push('}');
    line
}

/// Appends valid JSON `text` without its insignificant whitespace, so it fits
/// on one line; strings and numbers are copied as they are.
fn compact_json(text: &str, out: &mut String) {
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
}

/// Appends `bytes` in standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
}

/// A bus's counters as a JSON object.
pub(crate) fn stats_json(s: &StatsSnapshot) -> Value {
    json!({
        "published": s.published,
        "delivered": s.delivered,
        "lagged": s.lagged,
        "decode_errors": s.decode_errors,
        "rejected": s.rejected,
        "enqueued": s.enqueued,
        "dequeued": s.dequeued,
        "redelivered": s.redelivered,
        "dead_lettered": s.dead_lettered,
        "rpc_calls": s.rpc_calls,
        "rpc_errors": s.rpc_errors,
        "rpc_timeouts": s.rpc_timeouts,
        "rpc_served": s.rpc_served,
        "handlers_cancelled": s.handlers_cancelled,
        "disconnects": s.disconnects,
        "reconnects": s.reconnects,
        "rpc_latency_us": latency_json(&s.rpc_latency),
    })
}

/// Call latencies as quantile upper bounds in microseconds (within a factor of two).
fn latency_json(latencies: &Latencies) -> Value {
    let micros = |q| latencies.quantile(q).map(|d| d.as_micros() as u64);
    json!({
        "count": latencies.count(),
        "p50": micros(0.5),
        "p90": micros(0.9),
        "p99": micros(0.99),
        "p99.9": micros(0.999),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(content_type: ContentType, headers: &[(&str, &str)], payload: &[u8]) -> Message {
        let mut envelope = busbar::Envelope::new(
            busbar::Kind::Event,
            busbar::Name::new("a.b").unwrap(),
            content_type,
            bytes::Bytes::copy_from_slice(payload),
        );
        envelope.headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        <Message as busbar::FromEnvelope>::from_envelope(envelope).unwrap()
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = String::new();
            base64(input.as_bytes(), &mut out);
            assert_eq!(out, expected, "{input}");
        }
        let mut out = String::new();
        base64(&[0xff, 0xfe, 0x00], &mut out);
        assert_eq!(out, "//4A");
    }

    #[test]
    fn every_header_is_printed_in_order() {
        let line = message_line(&message(
            ContentType::JSON,
            &[("a", "1"), ("b", "x"), ("a", "2")],
            b"1",
        ));
        assert_eq!(
            line,
            r#"{"topic":"a.b","headers":[["a","1"],["b","x"],["a","2"]],"payload":1}"#
        );
    }

    #[test]
    fn json_payloads_are_compacted_verbatim() {
        let payload =
            b" {\"big\": 123456789012345678901234567890,\n \"s\": \"a \\\" b\\n\", \"f\": 1.50}\n";
        let line = message_line(&message(ContentType::JSON, &[], payload));
        assert_eq!(
            line,
            r#"{"topic":"a.b","headers":[],"payload":{"big":123456789012345678901234567890,"s":"a \" b\n","f":1.50}}"#
        );
        let _: Value = serde_json::from_str(&line).unwrap();
    }

    #[test]
    fn other_payloads_are_base64() {
        let line = message_line(&message(ContentType::JSON, &[], b"not json"));
        assert_eq!(
            line,
            r#"{"topic":"a.b","headers":[],"payload_base64":"bm90IGpzb24="}"#
        );
        let line = message_line(&message(ContentType::new("image/png"), &[], b"1"));
        assert_eq!(
            line,
            r#"{"topic":"a.b","headers":[],"content_type":"image/png","payload_base64":"MQ=="}"#
        );
        let line = message_line(&message(ContentType::JSON, &[], &[b'"', 0xff, b'"']));
        assert!(line.ends_with(r#""payload_base64":"Iv8i"}"#), "{line}");
    }

    #[test]
    fn stats_have_every_counter() {
        let s = StatsSnapshot {
            delivered: 3,
            ..Default::default()
        };
        let v = stats_json(&s);
        assert_eq!(v["delivered"], 3);
        assert_eq!(v.as_object().unwrap().len(), 17);
        assert_eq!(v["rpc_latency_us"]["count"], 0);
    }
}
