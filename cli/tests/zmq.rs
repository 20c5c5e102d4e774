//! Every command across processes over ZeroMQ: a `busbar broker` child on a free
//! loopback port, and separate `busbar` processes as clients.

mod common;

use common::{run, scenarios, BrokerProcess};

#[test]
fn broker_prints_its_url_and_stats_and_stops_on_interrupt() {
    let broker = BrokerProcess::start();
    run(&["pub", "hello.world", "1", "--url", &broker.url]).expect_ok();
    let (code, stderr) = broker.process.interrupt();
    assert_eq!(code, Some(0), "{stderr:?}");
    assert!(
        stderr.iter().any(|l| l.contains("\"events_in\"")),
        "{stderr:?}"
    );
    assert!(
        stderr.iter().any(|l| l.contains("broker stopped")),
        "{stderr:?}"
    );
}

#[test]
fn logs_follow_rust_log_and_are_off_by_default() {
    let quiet = BrokerProcess::start();
    let (_, stderr) = quiet.process.interrupt();
    assert!(
        stderr.iter().all(|l| l.starts_with("busbar: ")),
        "unexpected log lines without RUST_LOG: {stderr:?}"
    );

    let mut verbose = common::Running::start_with_env(
        &["broker", "--bind", "tcp://127.0.0.1:0"],
        &[("RUST_LOG", "busbar_zmq=info")],
    );
    let line = verbose.wait_stderr("zmq broker listening");
    assert!(line.contains("INFO"), "{line}");
}

#[test]
fn broker_bind_failure_is_a_transport_error() {
    let broker = BrokerProcess::start();
    let endpoint = broker.url.replace("zmq://", "tcp://");
    let failed = run(&["broker", "--bind", &endpoint]);
    failed.expect_code(19);
    assert!(
        failed.stderr.contains("cannot start the broker"),
        "{failed:?}"
    );
}

#[test]
fn pub_sub() {
    let broker = BrokerProcess::start();
    scenarios::pub_sub(&broker.url);
}

#[test]
fn sub_until_interrupted() {
    let broker = BrokerProcess::start();
    scenarios::sub_until_interrupted(&broker.url);
}

#[test]
fn call_and_serve() {
    let broker = BrokerProcess::start();
    scenarios::call_and_serve(&broker.url);
}

#[test]
fn call_all_and_serve_count() {
    let broker = BrokerProcess::start();
    scenarios::call_all_and_serve_count(&broker.url);
}

#[test]
fn queue() {
    let broker = BrokerProcess::start();
    scenarios::queue(&broker.url);
}

#[test]
fn bench() {
    let broker = BrokerProcess::start();
    scenarios::bench(&broker.url, "raw zeromq sockets");
}

#[test]
fn no_broker_is_a_transport_error() {
    // A loopback port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let failed = run(&[
        "pub",
        "a.b",
        "1",
        "--url",
        &format!("zmq://127.0.0.1:{port}"),
    ]);
    failed.expect_code(19);
    assert!(
        failed.stderr.contains("cannot connect to zmq://"),
        "{failed:?}"
    );
    assert!(failed.stderr.contains("[transport]"), "{failed:?}");
}

#[test]
fn call_timeout_bounds_connecting_to_no_broker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let failed = run(&[
        "call",
        "math.double",
        "21",
        "--timeout",
        "500ms",
        "--url",
        &format!("zmq://127.0.0.1:{port}"),
    ]);
    let elapsed = started.elapsed();
    failed.expect_code(19);
    assert!(failed.stderr.contains("unreachable"), "{failed:?}");
    assert!(failed.stderr.contains("[transport]"), "{failed:?}");
    // The connect wait alone is 5 s: --timeout must cut it (slack for a
    // loaded machine starting a process).
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "call --timeout 500ms took {elapsed:?}"
    );
}
