//! Every command across processes over Redis: a test-started `redis-server` on a
//! free loopback port (busbar-test-support), and separate `busbar` processes.

mod common;

use busbar_test_support::RedisServer;
use common::{run, scenarios};

/// The server's URL, with a namespace of its own for each test.
fn url(server: &RedisServer, test: &str) -> String {
    format!(
        "{}/?namespace={}",
        server.url().trim_end_matches('/'),
        common::unique(test)
    )
}

#[test]
fn pub_sub() {
    scenarios::pub_sub(&url(RedisServer::shared(), "pubsub"));
}

#[test]
fn sub_until_interrupted() {
    scenarios::sub_until_interrupted(&url(RedisServer::shared(), "interrupt"));
}

#[test]
fn call_and_serve() {
    scenarios::call_and_serve(&url(RedisServer::shared(), "rpc"));
}

#[test]
fn call_all_and_serve_count() {
    scenarios::call_all_and_serve_count(&url(RedisServer::shared(), "rpcall"));
}

#[test]
fn queue() {
    scenarios::queue(&url(RedisServer::shared(), "queue"));
}

#[test]
fn bench() {
    scenarios::bench(&url(RedisServer::shared(), "bench"), "raw redis-rs");
}

#[test]
fn unreachable_server_is_a_transport_error() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let failed = run(&[
        "queue",
        "len",
        "q",
        "--url",
        &format!("redis://127.0.0.1:{port}/?outage_wait_ms=200"),
    ]);
    assert!(
        matches!(failed.code, Some(19) | Some(13)),
        "expected transport (19) or timeout (13): {failed:?}"
    );
    assert!(failed.stderr.contains("busbar: error:"), "{failed:?}");
}

#[test]
fn raw_baseline_keeps_the_tls_settings() {
    let server = busbar_test_support::RedisServer::start_tls();
    let url = format!("{}&namespace={}", server.tls_url(), common::unique("tls"));
    let done = run(&[
        "bench", "rpc", "--msgs", "200", "--raw", "--json", "--url", &url,
    ]);
    done.expect_ok();
    let report = &done.json_lines()[0];
    assert_eq!(report["busbar"]["received"], 200, "{report}");
    assert_eq!(report["raw"]["label"], "raw redis-rs", "{report}");
    assert_eq!(report["raw"]["received"], 200, "{report}");
}

/// A Redis Cluster URL for `test`, with a namespace of its own.
fn cluster_url(test: &str) -> String {
    format!(
        "{}?namespace={}",
        busbar_test_support::RedisCluster::shared().url(),
        common::unique(test)
    )
}

#[test]
fn cluster_pub_sub() {
    scenarios::pub_sub(&cluster_url("cluster-pubsub"));
}

#[test]
fn cluster_call_and_serve() {
    scenarios::call_and_serve(&cluster_url("cluster-rpc"));
}

#[test]
fn cluster_queue() {
    scenarios::queue(&cluster_url("cluster-queue"));
}
