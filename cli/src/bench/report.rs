//! The results table and its JSON form.

use super::harness::Outcome;
use super::Plan;
use serde_json::{json, Value};

/// Formats a count with thousands separators: 1234567 -> 1,234,567.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 publisher`, `2 publishers`: `plural` names the role; one drops the `s`.
fn counted(n: usize, plural: &str) -> String {
    if n == 1 {
        format!("1 {}", plural.strip_suffix('s').unwrap_or(plural))
    } else {
        format!("{n} {plural}")
    }
}

/// Formats microseconds with a readable unit.
fn micros(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// The rows of the table: a name and how to format one outcome's value.
type Row = (&'static str, fn(&Outcome) -> String);

const ROWS: &[Row] = &[
    ("sent", |o| thousands(o.sent)),
    ("send errors", |o| thousands(o.send_errors)),
    ("expected", |o| thousands(o.expected)),
    ("received", |o| thousands(o.received)),
    ("lost", |o| thousands(o.lost)),
    ("lagged (dropped)", |o| thousands(o.lagged)),
    ("duplicates", |o| thousands(o.duplicates)),
    ("errors", |o| thousands(o.errors)),
    ("duration", |o| format!("{:.3} s", o.duration_s)),
    ("send time", |o| format!("{:.3} s", o.send_s)),
    ("drain after send", |o| format!("{:.3} s", o.drain_s)),
    ("throughput", |o| {
        format!("{}/s", thousands(o.throughput.round() as u64))
    }),
    ("latency p50", |o| micros(o.latency_us.p50)),
    ("latency p90", |o| micros(o.latency_us.p90)),
    ("latency p99", |o| micros(o.latency_us.p99)),
    ("latency p99.9", |o| micros(o.latency_us.p999)),
    ("latency max", |o| micros(o.latency_us.max)),
];

/// Overhead of busbar over the raw baseline for a row, where it means something.
fn ratio(row: &str, busbar: &Outcome, raw: &Outcome) -> String {
    let r = |a: f64, b: f64| {
        if a > 0.0 && b > 0.0 {
            let ratio = a / b;
            // Keep small ratios readable: x0.0027, not x0.00.
            if ratio >= 0.1 {
                format!("x{ratio:.2}")
            } else {
                format!("x{ratio:.4}")
            }
        } else {
            "-".to_owned()
        }
    };
    match row {
        "duration" => r(busbar.duration_s, raw.duration_s),
        "throughput" => r(raw.throughput, busbar.throughput),
        "latency p50" => r(busbar.latency_us.p50, raw.latency_us.p50),
        "latency p90" => r(busbar.latency_us.p90, raw.latency_us.p90),
        "latency p99" => r(busbar.latency_us.p99, raw.latency_us.p99),
        "latency p99.9" => r(busbar.latency_us.p999, raw.latency_us.p999),
        _ => String::new(),
    }
}

/// The human-readable table.
pub(crate) fn table(plan: &Plan, size: usize, busbar: &Outcome, raw: Option<&Outcome>) -> String {
    let (senders, receivers) = plan.role_names();
    let mut out = format!(
        "busbar bench {}: {} messages of {} bytes, {}, {}, {} in flight each\n\n",
        plan.workload.name(),
        thousands(plan.msgs),
        size,
        counted(plan.publishers, senders),
        counted(plan.subscribers, receivers),
        plan.inflight,
    );
    if plan.ack && plan.workload == crate::cli::Workload::Queue {
        out.insert_str(out.len() - 2, ", acknowledged");
    }
    if let Some(rate) = plan.rate {
        out.insert_str(
            out.len() - 2,
            &format!(", paced at {} msg/s each", thousands(rate.round() as u64)),
        );
    }
    let mut header = vec![String::new(), busbar.label.clone()];
    if let Some(raw) = raw {
        header.push(raw.label.clone());
        header.push("overhead".to_owned());
    }
    let mut lines = vec![header];
    for (name, format) in ROWS {
        let mut line = vec![(*name).to_owned(), format(busbar)];
        if let Some(raw) = raw {
            line.push(format(raw));
            line.push(ratio(name, busbar, raw));
        }
        lines.push(line);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str("   ");
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    for outcome in std::iter::once(busbar).chain(raw) {
        if let Some(err) = &outcome.first_error {
            out.push_str(&format!("\n{}: first error: {err}", outcome.label));
        }
    }
    if raw.is_some() {
        out.push_str(
            "\noverhead: busbar / raw for times and latencies, raw / busbar for throughput (x1.00 = no overhead)\n",
        );
    }
    out
}

/// The machine-readable report.
pub(crate) fn json(
    plan: &Plan,
    url: &str,
    size: usize,
    busbar: &Outcome,
    raw: Option<&Outcome>,
) -> Value {
    let overhead = raw.map(|raw| {
        let div = |a: f64, b: f64| if b > 0.0 { json!(a / b) } else { Value::Null };
        json!({
            "throughput": div(raw.throughput, busbar.throughput),
            "p50": div(busbar.latency_us.p50, raw.latency_us.p50),
            "p99": div(busbar.latency_us.p99, raw.latency_us.p99),
        })
    });
    json!({
        "workload": plan.workload.name(),
        "url": busbar::redact_url(url),
        "msgs": plan.msgs,
        "size": size,
        "publishers": plan.publishers,
        "subscribers": plan.subscribers,
        "inflight": plan.inflight,
        "rate": plan.rate,
        "ack": plan.ack,
        "complete": busbar.is_complete(),
        "busbar": busbar,
        "raw": raw,
        "overhead": overhead,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_outcome() -> Outcome {
        Outcome {
            label: "x".into(),
            sent: 0,
            send_errors: 0,
            expected: 0,
            received: 0,
            duplicates: 0,
            lost: 0,
            lagged: 0,
            errors: 0,
            first_error: None,
            duration_s: 1.0,
            send_s: 1.0,
            drain_s: 0.0,
            throughput: 1.0,
            latency_us: Default::default(),
            timeline: Vec::new(),
            histogram: hdrhistogram::Histogram::new(3).unwrap(),
        }
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(100), "100");
        assert_eq!(micros(12.34), "12.3 µs");
        assert_eq!(micros(1500.0), "1.50 ms");
        assert_eq!(counted(1, "servers"), "1 server");
        let mut fast = sample_outcome();
        let mut slow = sample_outcome();
        fast.latency_us.p99 = 11.8;
        slow.latency_us.p99 = 4340.0;
        assert_eq!(ratio("latency p99", &fast, &slow), "x0.0027");
        assert_eq!(ratio("latency p99", &slow, &fast), "x367.80");
        assert_eq!(ratio("sent", &slow, &fast), "");
        assert_eq!(counted(3, "callers"), "3 callers");
    }
}
