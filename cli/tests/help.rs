//! `--help` is complete and usage errors are clear.

mod common;

use common::run;

#[test]
fn help_lists_every_subcommand_and_exit_code() {
    let help = run(&["--help"]);
    help.expect_ok();
    for command in ["pub", "sub", "call", "serve", "queue", "broker", "bench"] {
        assert!(
            help.stdout.contains(&format!("\n  {command} ")),
            "--help does not list {command}:\n{}",
            help.stdout
        );
    }
    for text in [
        "no_responders",
        "timeout",
        "remote",
        "BUSBAR_URL",
        "RUST_LOG",
    ] {
        assert!(
            help.stdout.contains(text),
            "{text} missing:\n{}",
            help.stdout
        );
    }
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["pub", "--help"][..],
        &["sub", "--help"],
        &["call", "--help"],
        &["serve", "--help"],
        &["queue", "--help"],
        &["queue", "put", "--help"],
        &["queue", "get", "--help"],
        &["queue", "len", "--help"],
        &["broker", "--help"],
        &["bench", "--help"],
    ] {
        let help = run(args);
        help.expect_ok();
        assert!(help.stdout.contains("Usage: busbar"), "{args:?}: {help:?}");
    }
    let queue = run(&["queue", "--help"]);
    for op in ["put", "get", "len"] {
        assert!(queue.stdout.contains(&format!("\n  {op} ")), "{queue:?}");
    }
    let bench = run(&["bench", "--help"]);
    for flag in [
        "--msgs",
        "--size",
        "--inflight",
        "--publishers",
        "--subscribers",
        "--raw",
        "--json",
        "--plot",
        "--url",
    ] {
        assert!(bench.stdout.contains(flag), "{flag} missing: {bench:?}");
    }
    for workload in ["pubsub", "queue", "rpc"] {
        assert!(bench.stdout.contains(workload), "{bench:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let missing_url = run(&["sub", "orders.*"]);
    missing_url.expect_code(2);
    assert!(missing_url.stderr.contains("--url"), "{missing_url:?}");
    run(&["serve", "m"]).expect_code(2); // neither --echo nor --exec
    run(&["queue", "get", "q", "--ack", "--nack", "--url", "memory://"]).expect_code(2);
    run(&["call", "m", "--timeout", "soon", "--url", "memory://"]).expect_code(2);
    run(&["frobnicate"]).expect_code(2);
}

#[test]
fn sub_help_says_which_events_a_full_buffer_drops() {
    let help = run(&["sub", "--help"]);
    help.expect_ok();
    let text = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("newer events are dropped"), "{text}");
    assert!(!text.contains("oldest are dropped"), "{text}");
}

#[test]
fn sub_help_describes_the_output_lines() {
    let help = run(&["sub", "--help"]);
    help.expect_ok();
    for text in ["[[key, value], ..]", "payload_base64", "content_type"] {
        assert!(
            help.stdout.contains(text),
            "{text} missing:\n{}",
            help.stdout
        );
    }
}
