//! The connect policy (`busbar_core::connect`) on `zmq://`: `Bus::connect`
//! retries a broker it cannot reach, with jittered backoff, until
//! `connect_timeout`, then fails naming the address and the last cause.

use busbar_core::{Bus, Error};
use busbar_zmq::Broker;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago: nothing listens there.
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_a_broker_that_comes_up() {
    let port = unused_port();
    let url = format!("zmq://127.0.0.1:{port}?connect_timeout=30000");
    let connecting = tokio::spawn(async move { Bus::connect(&url).await });
    let broker = Broker::bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .expect("bind the broker");
    let bus = tokio::time::timeout(Duration::from_secs(30), connecting)
        .await
        .expect("connect ends within its timeout")
        .unwrap()
        .expect("connected once the broker was up");
    let q = bus.queue::<u32>("connect.q").unwrap();
    q.put(&7).await.unwrap();
    assert_eq!(q.get(Duration::from_secs(5)).await.unwrap(), Some(7));
    bus.shutdown().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_fails_at_the_connect_timeout_naming_the_address() {
    let port = unused_port();
    let started = Instant::now();
    let err = Bus::connect(&format!("zmq://127.0.0.1:{port}?connect_timeout=400"))
        .await
        .expect_err("nothing listens");
    let elapsed = started.elapsed();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("attempts"), "retried: {text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    // The documented bound: the timeout plus one attempt's floor; generous slack.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_connect_timeout_tries_once() {
    let port = unused_port();
    let started = Instant::now();
    let err = Bus::connect(&format!("zmq://127.0.0.1:{port}?connect_timeout=0"))
        .await
        .expect_err("nothing listens");
    assert!(err.to_string().contains(" 1 attempt "), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
