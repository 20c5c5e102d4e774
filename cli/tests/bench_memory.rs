//! `busbar bench` on memory://: reports, the raw baseline, and the SVG chart.

mod common;

use common::run;
use serde_json::Value;

fn report(args: &[&str]) -> Value {
    let done = run(args);
    done.expect_ok();
    let lines = done.json_lines();
    assert_eq!(lines.len(), 1, "{done:?}");
    lines.into_iter().next().unwrap()
}

#[test]
fn every_workload_counts_every_message() {
    for (workload, expected) in [("pubsub", 6000), ("queue", 3000), ("rpc", 3000)] {
        let report = report(&[
            "bench",
            workload,
            "--msgs",
            "3000",
            "--size",
            "200",
            "--publishers",
            "2",
            "--subscribers",
            "2",
            "--inflight",
            "4",
            "--json",
        ]);
        assert_eq!(report["workload"], workload);
        assert_eq!(report["url"], "memory://");
        assert_eq!(report["complete"], true, "{report}");
        let busbar = &report["busbar"];
        assert_eq!(busbar["expected"], expected, "{report}");
        assert_eq!(busbar["received"], expected, "{report}");
        assert_eq!(busbar["sent"], 3000, "{report}");
        for zero in ["lost", "duplicates", "errors", "send_errors"] {
            assert_eq!(busbar[zero], 0, "{zero}: {report}");
        }
        let latency = &busbar["latency_us"];
        let p = |k: &str| latency[k].as_f64().unwrap();
        assert!(p("p50") > 0.0 && p("p50") <= p("p90"), "{latency}");
        assert!(p("p90") <= p("p99") && p("p99") <= p("p999") && p("p999") <= p("max"));
        assert!(busbar["throughput"].as_f64().unwrap() > 0.0);
        assert!(
            (190..=210).contains(&report["size"].as_u64().unwrap()),
            "{report}"
        );
        assert!(report["raw"].is_null());
    }
}

#[test]
fn raw_baseline_runs_the_same_workload() {
    let report = report(&["bench", "rpc", "--msgs", "2000", "--raw", "--json"]);
    assert_eq!(report["raw"]["label"], "raw tokio channels");
    assert_eq!(report["raw"]["received"], 2000);
    assert!(
        report["overhead"]["throughput"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn table_has_percentiles_and_overhead_without_a_progress_bar() {
    let done = run(&["bench", "queue", "--msgs", "1000", "--raw"]);
    done.expect_ok();
    for row in [
        "throughput",
        "latency p50",
        "latency p90",
        "latency p99",
        "latency p99.9",
        "lost",
        "lagged",
        "busbar memory://",
        "raw tokio channels",
        "overhead",
    ] {
        assert!(done.stdout.contains(row), "{row} missing:\n{}", done.stdout);
    }
    // stdout is a pipe here: no progress bar anywhere.
    assert!(!done.stderr.contains('['), "{}", done.stderr);
}

#[test]
fn lost_messages_fail_the_run_with_their_own_code() {
    // A one-slot buffer and many fast publishers: the subscriber lags and the
    // drops are counted, never hidden.
    let done = run(&[
        "bench",
        "pubsub",
        "--msgs",
        "20000",
        "--capacity",
        "1",
        "--publishers",
        "4",
        "--inflight",
        "16",
        "--idle",
        "500ms",
        "--json",
    ]);
    let report = &done.json_lines()[0];
    if report["complete"] == false {
        done.expect_code(4);
        let busbar = &report["busbar"];
        assert!(busbar["lost"].as_u64().unwrap() > 0, "{report}");
        assert!(busbar["lagged"].as_u64().unwrap() > 0, "{report}");
        assert!(done.stderr.contains("incomplete run"), "{done:?}");
    } else {
        // The subscriber kept up after all: then nothing may be missing.
        done.expect_ok();
        assert_eq!(report["busbar"]["lost"], 0);
    }
}

#[test]
fn plot_writes_a_valid_svg_with_both_charts() {
    let dir = std::env::temp_dir().join(format!("busbar-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bench.svg");
    let path_text = path.to_str().unwrap();
    let done = run(&[
        "bench", "pubsub", "--msgs", "5000", "--raw", "--plot", path_text,
    ]);
    done.expect_ok();
    assert!(done.stderr.contains("wrote"), "{done:?}");
    let svg = std::fs::read_to_string(&path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the plot is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().trim().to_owned())
        .collect();
    for label in [
        "Latency distribution",
        "Throughput over time",
        "busbar memory:// latency",
        "raw tokio channels latency",
        "busbar memory:// throughput",
        "raw tokio channels throughput",
        "percentile",
        "latency (µs, log scale)",
        "time (s)",
        "messages/s",
        "99%",
    ] {
        assert!(
            texts.iter().any(|t| t == label),
            "{label} missing: {texts:?}"
        );
    }
    // Each run is drawn in its own colour: a latency curve (one point per
    // percentile), a throughput line and two legend marks.
    for colour in ["#1F77B4", "#D62728"] {
        let points: Vec<usize> = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| {
                n.attribute("stroke")
                    .is_some_and(|s| s.eq_ignore_ascii_case(colour))
            })
            .map(|n| {
                n.attribute("points")
                    .unwrap_or_default()
                    .split_whitespace()
                    .count()
            })
            .collect();
        assert!(points.len() >= 4, "{colour}: {points:?}");
        assert!(
            points.iter().any(|&n| n >= 10),
            "{colour}: no latency curve in {points:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rate_paces_the_senders() {
    // 200 messages at 1000/s: the last one leaves about 199 ms after the first.
    let report = report(&[
        "bench", "pubsub", "--msgs", "200", "--rate", "1000", "--json",
    ]);
    assert_eq!(report["rate"], 1000.0);
    assert_eq!(report["complete"], true, "{report}");
    let send_s = report["busbar"]["send_s"].as_f64().unwrap();
    assert!((0.19..5.0).contains(&send_s), "{report}");
    run(&["bench", "pubsub", "--rate", "0"]).expect_code(2);
}

#[test]
fn acknowledged_queue_counts_every_item_once() {
    let report = report(&[
        "bench",
        "queue",
        "--ack",
        "--msgs",
        "2000",
        "--subscribers",
        "3",
        "--json",
    ]);
    assert_eq!(report["ack"], true);
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["busbar"]["received"], 2000, "{report}");
    assert_eq!(report["busbar"]["duplicates"], 0, "{report}");
}
