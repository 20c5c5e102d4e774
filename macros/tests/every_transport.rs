//! The same `#[subscriber]` and `#[remote]` handlers, unchanged, on `memory://`,
//! `zmq://` (an in-process broker) and `redis://` (a test-started redis-server).

use busbar::{Bus, Error, Event};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize, Event)]
#[event(topic = "everywhere.ping")]
struct Ping {
    n: u64,
    reply_to: String,
}

/// Answers a ping by publishing its number on the topic the ping names.
#[busbar::subscriber]
async fn on_ping(ping: Ping, bus: &Bus) -> busbar::Result<()> {
    bus.publish_to(&ping.reply_to, &ping.n).await
}

#[busbar::remote(name = "everywhere.product")]
fn product(a: i64, b: i64) -> i64 {
    a * b
}

#[derive(Debug, Serialize, Deserialize)]
enum StockError {
    OutOfStock { wanted: u32 },
}

impl std::fmt::Display for StockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StockError::OutOfStock { wanted } => write!(f, "only 5 left, {wanted} wanted"),
        }
    }
}

#[busbar::remote(name = "everywhere.reserve")]
async fn reserve(quantity: u32) -> Result<u32, StockError> {
    if quantity > 5 {
        Err(StockError::OutOfStock { wanted: quantity })
    } else {
        Ok(quantity)
    }
}

async fn exercise(url: &str) {
    let bus = Bus::connect(url).await.expect("connect");
    let _running = bus
        .start_endpoints([&on_ping::ENDPOINT, &product::ENDPOINT, &reserve::ENDPOINT])
        .await
        .expect("start the handlers");

    let reply_to = "everywhere.pong".to_string();
    let mut pongs = bus.subscribe_to::<u64>(&reply_to).await.unwrap();
    bus.publish(&Ping { n: 7, reply_to }).await.unwrap();
    let pong = tokio::time::timeout(WAIT, pongs.next())
        .await
        .expect("a pong in time");
    assert_eq!(pong.unwrap().unwrap(), 7, "the subscriber ran on {url}");

    assert_eq!(
        product::call(&bus, 6, 7).await.unwrap(),
        42,
        "remote on {url}"
    );
    assert_eq!(reserve::call(&bus, 2).await.unwrap(), 2);
    match reserve::call(&bus, 9).await {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "OutOfStock");
            assert_eq!(message, "only 5 left, 9 wanted");
        }
        other => panic!("expected Remote(OutOfStock) on {url}, got {other:?}"),
    }
    let all = product::stub(&bus)
        .timeout(WAIT)
        .call_all(&(2, 3))
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(*all[0].as_ref().unwrap(), 6);
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_on_memory() {
    exercise("memory://every-transport").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_on_zmq() {
    let broker = busbar::zmq::Broker::bind("tcp://127.0.0.1:0")
        .await
        .unwrap();
    exercise(&broker.url()).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_on_redis() {
    let server = busbar_test_support::RedisServer::start();
    exercise(&server.url()).await;
}
