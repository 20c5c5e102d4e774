//! Errors have a clear message and a distinct exit code. These need no broker:
//! they fail before anything is sent, or on `memory://`, where this one process
//! is the whole bus.

mod common;

use common::{busbar, run, run_with_input};

#[test]
fn unknown_scheme_is_invalid_url() {
    let failed = run(&["pub", "a.b", "1", "--url", "carrier-pigeon://coop"]);
    failed.expect_code(11);
    assert!(failed.stderr.contains("unknown scheme"), "{failed:?}");
    assert!(failed.stderr.contains("[invalid_url]"), "{failed:?}");
}

#[test]
fn bad_names_are_invalid_name() {
    let failed = run(&["pub", "bad topic", "1", "--url", "memory://"]);
    failed.expect_code(10);
    assert!(failed.stderr.contains("invalid name"), "{failed:?}");
    run(&["sub", "orders.>.x", "--url", "memory://"]).expect_code(10);
    run(&["queue", "len", "", "--url", "memory://"]).expect_code(10);
    run(&["call", "a..b", "--url", "memory://"]).expect_code(10);
}

#[test]
fn bad_json_is_bad_input() {
    let failed = run(&["pub", "a.b", "{oops", "--url", "memory://"]);
    failed.expect_code(3);
    assert!(failed.stderr.contains("not valid JSON"), "{failed:?}");
    let failed = run_with_input(&["queue", "put", "q", "--url", "memory://"], "1\nnope\n");
    failed.expect_code(3);
    assert!(failed.stderr.contains("stdin line 2"), "{failed:?}");
}

#[test]
fn call_stdin_request_must_be_json() {
    let empty = run_with_input(&["call", "m", "-", "--url", "memory://"], " \n");
    empty.expect_code(3);
    assert!(empty.stderr.contains("stdin is empty"), "{empty:?}");
    let bad = run_with_input(&["call", "m", "-", "--url", "memory://"], "{\"a\":\n");
    bad.expect_code(3);
    assert!(bad.stderr.contains("not valid JSON"), "{bad:?}");
    // A valid request gets as far as the call: nobody serves it here.
    let sent = run_with_input(&["call", "m", "-", "--url", "memory://"], "[1,\n 2]\n");
    sent.expect_code(12);
}

#[test]
fn call_without_provider_is_no_responders() {
    let failed = run(&["call", "nobody.home", "--url", "memory://"]);
    failed.expect_code(12);
    assert!(failed.stderr.contains("no responders"), "{failed:?}");
    assert!(failed.stderr.contains("busbar serve"), "{failed:?}");
}

#[test]
fn empty_queue_is_timeout() {
    let failed = run(&[
        "queue",
        "get",
        "q.empty",
        "--timeout",
        "50ms",
        "--url",
        "memory://",
    ]);
    failed.expect_code(13);
    assert!(failed.stderr.contains("no item arrived"), "{failed:?}");
}

#[test]
fn busbar_url_comes_from_the_environment() {
    let out = busbar()
        .args(["queue", "len", "q.env"])
        .env("BUSBAR_URL", "memory://")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

#[test]
fn a_closed_stdout_ends_quietly() {
    // `busbar pub ... | head -0`: publishing works, and nothing is printed anyway;
    // here the reader of `queue len` goes away before it prints.
    let mut child = busbar()
        .args(["queue", "len", "q.pipe", "--url", "memory://"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
