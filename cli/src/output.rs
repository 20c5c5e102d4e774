//! What commands print: JSON lines on stdout, status lines on stderr.

use busbar::{Latencies, Message, StatsSnapshot};
use serde_json::{json, Map, Value};
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

/// An event as printed by `busbar sub`: `{topic, headers, payload}`.
///
/// A payload that is not JSON is printed as a string (lossy UTF-8).
pub(crate) fn message_json(message: &Message) -> Value {
    let headers: Map<String, Value> = message
        .headers()
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let payload = message
        .decode::<Value>()
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(message.payload()).into_owned()));
    json!({
        "topic": message.topic().as_str(),
        "headers": headers,
        "payload": payload,
    })
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

    #[test]
    fn stats_have_every_counter() {
        let s = StatsSnapshot {
            delivered: 3,
            ..Default::default()
        };
        let v = stats_json(&s);
        assert_eq!(v["delivered"], 3);
        assert_eq!(v.as_object().unwrap().len(), 16);
        assert_eq!(v["rpc_latency_us"]["count"], 0);
    }
}
