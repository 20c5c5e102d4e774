//! The same end-to-end checks for every networked transport: each runs the
//! real binary as separate processes against the bus at `url`.

use super::{run, run_with_input, unique, Running};
use serde_json::{json, Value};

/// `sub` prints matching events as {topic, headers, payload} lines; `pub` sends
/// from the argument and from stdin; `--count` and `--stats` work.
pub fn pub_sub(url: &str) {
    let base = unique("orders");
    let pattern = format!("{base}.*");
    let mut sub =
        Running::start(&["sub", &pattern, "--count", "3", "--stats", "--url", url]).ready();

    run(&[
        "pub",
        &format!("{base}.x.deep"),
        "{\"skip\":true}",
        "--url",
        url,
    ])
    .expect_ok();
    let one = run(&[
        "pub",
        &format!("{base}.created"),
        "{\"id\":1}",
        "-H",
        "trace=abc=1",
        "--header",
        "source=cli",
        "--url",
        url,
    ]);
    one.expect_ok();
    assert!(one.stderr.contains("published 1 events"), "{one:?}");
    run_with_input(
        &["pub", &format!("{base}.paid"), "--url", url],
        "{\"id\":2}\n\n\"text\"\n",
    )
    .expect_ok();

    let events: Vec<Value> = (0..3).map(|_| sub.next_json()).collect();
    assert_eq!(events[0]["topic"], json!(format!("{base}.created")));
    assert_eq!(events[0]["payload"], json!({"id": 1}));
    assert_eq!(
        events[0]["headers"],
        json!([["trace", "abc=1"], ["source", "cli"]]),
        "{}",
        events[0]
    );
    assert_eq!(events[1]["headers"], json!([]), "{}", events[1]);
    assert_eq!(events[1]["topic"], json!(format!("{base}.paid")));
    assert_eq!(events[1]["payload"], json!({"id": 2}));
    assert_eq!(events[2]["payload"], json!("text"));
    let (code, stderr) = sub.wait_exit();
    assert_eq!(code, Some(0), "{stderr:?}");
    let stats = stderr
        .iter()
        .find_map(|l| l.strip_prefix("busbar: stats "))
        .unwrap_or_else(|| panic!("no stats line in {stderr:?}"));
    let stats: Value = serde_json::from_str(stats).unwrap();
    assert_eq!(stats["delivered"], 3, "{stats}");
}

/// `sub` without `--count` runs until interrupted, then exits 0.
pub fn sub_until_interrupted(url: &str) {
    let topic = unique("ticks");
    let mut sub = Running::start(&["sub", &topic, "--url", url]).ready();
    run(&["pub", &topic, "7", "--count", "2", "--url", url]).expect_ok();
    assert_eq!(sub.next_json()["payload"], 7);
    assert_eq!(sub.next_json()["payload"], 7);
    let (code, stderr) = sub.interrupt();
    assert_eq!(code, Some(0), "{stderr:?}");
}

/// `serve --echo` and `serve --exec` answer `call`; failures have distinct exit
/// codes: remote 14, no responders 12, timeout 13.
pub fn call_and_serve(url: &str) {
    let echo = unique("math.echo");
    let _echo = Running::start(&["serve", &echo, "--echo", "--url", url]).ready();
    let answer = run(&["call", &echo, "{\"a\":[1,2]}", "--url", url]);
    answer.expect_ok();
    assert_eq!(answer.json_lines(), vec![json!({"a": [1, 2]})]);

    let upper = unique("text.upper");
    let _upper = Running::start(&["serve", &upper, "--exec", "tr a-z A-Z", "--url", url]).ready();
    let answer = run(&["call", &upper, "\"hello\"", "--url", url]);
    answer.expect_ok();
    assert_eq!(answer.json_lines(), vec![json!("HELLO")]);

    let failing = unique("jobs.fail");
    let _failing = Running::start(&[
        "serve",
        &failing,
        "--exec",
        "echo disk full >&2; exit 3",
        "--url",
        url,
    ])
    .ready();
    let failed = run(&["call", &failing, "--url", url]);
    failed.expect_code(14);
    assert!(failed.stderr.contains("exit_status"), "{failed:?}");
    assert!(failed.stderr.contains("disk full"), "{failed:?}");
    assert!(failed.stdout.is_empty(), "{failed:?}");

    let nobody = run(&["call", &unique("nobody.home"), "--url", url]);
    nobody.expect_code(12);
    assert!(nobody.stderr.contains("no responders"), "{nobody:?}");

    let slow = unique("jobs.slow");
    let _slow = Running::start(&["serve", &slow, "--exec", "sleep 5", "--url", url]).ready();
    let timed_out = run(&["call", &slow, "--timeout", "300ms", "--url", url]);
    timed_out.expect_code(13);
    assert!(timed_out.stderr.contains("timed out"), "{timed_out:?}");
}

/// `call --all` gathers one line per provider; `serve --count` exits after N.
pub fn call_all_and_serve_count(url: &str) {
    let method = unique("fleet.ping");
    let one = Running::start(&[
        "serve", &method, "--exec", "echo 1", "--count", "1", "--url", url,
    ])
    .ready();
    let two = Running::start(&[
        "serve", &method, "--exec", "echo 2", "--count", "1", "--url", url,
    ])
    .ready();
    let all = run(&["call", &method, "--all", "--url", url]);
    all.expect_ok();
    let mut answers: Vec<Value> = all.json_lines();
    answers.sort_by_key(|v| v["ok"].as_i64());
    assert_eq!(answers, vec![json!({"ok": 1}), json!({"ok": 2})]);
    for server in [one, two] {
        let (code, stderr) = server.wait_exit();
        assert_eq!(code, Some(0), "{stderr:?}");
        assert!(
            stderr.iter().any(|l| l.contains("answered 1 requests")),
            "{stderr:?}"
        );
    }

    // One provider fails: its line says why, the others still answer, and the
    // exit code is the failure's.
    let mixed = unique("fleet.mixed");
    let _good = Running::start(&["serve", &mixed, "--echo", "--url", url]).ready();
    let _bad = Running::start(&["serve", &mixed, "--exec", "exit 5", "--url", url]).ready();
    let all = run(&["call", &mixed, "\"hi\"", "--all", "--url", url]);
    all.expect_code(14);
    let lines = all.json_lines();
    assert_eq!(lines.len(), 2, "{all:?}");
    assert!(lines.contains(&json!({"ok": "hi"})), "{all:?}");
    let error = lines
        .iter()
        .find_map(|l| l.get("error"))
        .unwrap_or_else(|| panic!("no error line: {all:?}"));
    assert_eq!(error["kind"], "remote", "{all:?}");
    assert_eq!(error["remote_kind"], "exit_status", "{all:?}");
    assert!(all.stderr.contains("1 of 2 providers"), "{all:?}");
}

/// `queue put|get|len`, with `--nack` giving an item back and `--ack` showing
/// the redelivery; an empty queue is exit code 13.
pub fn queue(url: &str) {
    let name = unique("jobs.resize");
    let put = run_with_input(&["queue", "put", &name, "--url", url], "1\n2\n3\n");
    put.expect_ok();
    assert!(put.stderr.contains("put 3 items"), "{put:?}");
    let len = run(&["queue", "len", &name, "--url", url]);
    assert_eq!(len.expect_ok().lines(), vec!["3"]);

    let first = run(&["queue", "get", &name, "--url", url]);
    assert_eq!(first.expect_ok().json_lines(), vec![json!(1)]);

    let nacked = run(&["queue", "get", &name, "--nack", "--url", url]);
    assert_eq!(nacked.expect_ok().json_lines(), vec![json!(2)]);
    assert!(nacked.stderr.contains("nacked (attempt 1)"), "{nacked:?}");

    let acked = run(&[
        "queue",
        "get",
        &name,
        "--ack",
        "--count",
        "2",
        "--timeout",
        "10s",
        "--url",
        url,
    ]);
    let mut items = acked.expect_ok().json_lines();
    items.sort_by_key(|v| v.as_i64());
    assert_eq!(items, vec![json!(2), json!(3)]);
    assert!(
        acked.stderr.contains("attempt 2, a redelivery"),
        "{acked:?}"
    );
    assert_eq!(
        acked.stderr.matches("acked (attempt").count(),
        2,
        "{acked:?}"
    );

    let len = run(&["queue", "len", &name, "--url", url]);
    assert_eq!(len.expect_ok().lines(), vec!["0"]);
    let empty = run(&["queue", "get", &name, "--timeout", "200ms", "--url", url]);
    empty.expect_code(13);
    assert!(empty.stderr.contains("no item arrived"), "{empty:?}");
}

/// `bench` on the transport: every workload completes with nothing lost, and
/// `--raw` runs the same workload on the library underneath (`raw_label`).
pub fn bench(url: &str, raw_label: &str) {
    for (workload, extra) in [
        ("pubsub", &["--subscribers", "2"][..]),
        ("queue", &["--subscribers", "2", "--publishers", "2"][..]),
        ("rpc", &["--inflight", "4"][..]),
        ("queue", &["--ack", "--subscribers", "2"][..]),
    ] {
        let mut args = vec!["bench", workload, "--msgs", "500", "--json", "--url", url];
        args.extend_from_slice(extra);
        let done = run(&args);
        done.expect_ok();
        let report = &done.json_lines()[0];
        assert_eq!(report["complete"], true, "{report}");
        let expected = if workload == "pubsub" { 1000 } else { 500 };
        assert_eq!(report["busbar"]["received"], expected, "{report}");
        assert_eq!(report["busbar"]["lost"], 0, "{report}");
    }
    for workload in ["pubsub", "queue", "rpc"] {
        let done = run(&[
            "bench", workload, "--msgs", "300", "--raw", "--json", "--url", url,
        ]);
        done.expect_ok();
        let report = &done.json_lines()[0];
        assert_eq!(report["complete"], true, "{report}");
        let raw = &report["raw"];
        assert_eq!(raw["label"], raw_label, "{report}");
        assert_eq!(raw["expected"], 300, "{report}");
        if workload == "pubsub" {
            // Raw PUB/SUB may drop under load; what it lost is counted.
            let (received, lost) = (raw["received"].as_u64(), raw["lost"].as_u64());
            assert_eq!(received.unwrap() + lost.unwrap(), 300, "{report}");
        } else {
            assert_eq!(raw["received"], 300, "{report}");
        }
        assert!(
            report["overhead"]["throughput"].as_f64().unwrap() > 0.0,
            "{report}"
        );
    }
}
