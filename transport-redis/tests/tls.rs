//! `rediss://` and `rediss+cluster://`: TLS to a redis-server, and to a
//! cluster whose nodes share a test CA.

use busbar_core::{Bus, Error, Fault};
use busbar_test_support::{RedisCluster, RedisServer};
use futures::StreamExt;
use std::time::Duration;

use busbar_redis as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queues_and_calls_over_tls() {
    let server = RedisServer::start_tls();
    events_queues_and_calls(&server.tls_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queues_and_calls_over_tls_on_a_cluster() {
    let cluster = RedisCluster::start_tls();
    let url = cluster.tls_url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    events_queues_and_calls(&url).await;
}

/// An event, a queue item and a call between two buses on `url`.
async fn events_queues_and_calls(url: &str) {
    let (a, b) = (
        Bus::connect(url).await.unwrap(),
        Bus::connect(url).await.unwrap(),
    );
    let mut sub = a.subscribe_to::<u32>("tls.*").await.unwrap();
    b.publish_to("tls.one", &1u32).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    assert_eq!(got.unwrap().unwrap().unwrap(), 1);
    b.queue::<u32>("tls.q").unwrap().put(&2).await.unwrap();
    let q = a.queue::<u32>("tls.q").unwrap();
    assert_eq!(q.get(Duration::from_secs(5)).await.unwrap(), Some(2));
    let _provider = a
        .expose("tls.inc", |x: u32| async move { Ok::<_, Fault>(x + 1) })
        .await
        .unwrap();
    assert_eq!(
        b.stub::<u32, u32>("tls.inc")
            .unwrap()
            .call(&41)
            .await
            .unwrap(),
        42
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_is_refused() {
    let server = RedisServer::start_tls();
    // Trust another CA than the one that signed the server's certificate.
    let other = RedisServer::start_tls();
    let url = server.tls_url();
    let (base, _) = url.split_once("?tls_ca=").unwrap();
    let (_, other_ca) = other
        .tls_url()
        .split_once("?tls_ca=")
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let err = Bus::connect(&format!("{base}?tls_ca={other_ca}"))
        .await
        .expect_err("untrusted");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn plain_redis_urls_refuse_tls_parameters() {
    let err = Bus::connect("redis://127.0.0.1:1?tls_ca=/x.pem")
        .await
        .expect_err("tls_ca needs rediss");
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
}
