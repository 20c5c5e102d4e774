//! Faults: connections killed by the server (`CLIENT KILL`) and a server restart
//! in the middle of the traffic (scenarios shared with `cluster_faults.rs`),
//! abandoned takes, and a flushed script cache. Each test runs its own
//! redis-server, so killing clients never disturbs another test.
//!
//! Every wait is bounded and waits for the event itself (a delivery, a reply, a
//! counter moving), retrying the operation that proves recovery.

mod support;

use busbar_core::Bus;
use busbar_test_support::RedisServer;
use std::collections::HashSet;
use std::time::Duration;
use support::{bus, bus_with, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_restores_subscriptions_and_providers() {
    scenarios::client_kill_restores_subscriptions_and_providers(&RedisServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_loses_no_queue_item() {
    scenarios::client_kill_loses_no_queue_item(&RedisServer::start()).await;
}

/// Well below `get_visibility`: an item that comes back within this was put
/// back, not reaped.
const PROMPT: Duration = Duration::from_secs(1);

/// A consumer whose items, if left in flight, would only come back after 30 s.
async fn slow_to_reap(url: &str) -> Bus {
    bus_with(url, |c| c.get_visibility = Duration::from_secs(30)).await
}

/// Takes the next item of `q` within [`PROMPT`], acknowledged; it must be a
/// first attempt (an item put back for a caller that left is not counted).
async fn promptly(q: &busbar_core::Queue<u32>, what: &str) -> u32 {
    let delivery = tokio::time::timeout(PROMPT, q.receive(PROMPT))
        .await
        .unwrap_or_else(|_| panic!("{what}: receive hung"))
        .unwrap_or_else(|err| panic!("{what}: {err}"))
        .unwrap_or_else(|| panic!("{what}: not back within {PROMPT:?}"));
    assert_eq!(
        delivery.attempt(),
        1,
        "{what}: a put-back counts no attempt"
    );
    let item = *delivery;
    delivery.ack().await.expect("ack");
    item
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_blocking_get_does_not_eat_the_next_item() {
    let server = RedisServer::start();
    let url = server.url();
    let (consumer, producer) = (slow_to_reap(&url).await, bus(&url).await);
    let q = consumer.queue::<u32>("cancel.q").unwrap();
    let p = producer.queue::<u32>("cancel.q").unwrap();
    for round in 0..20u32 {
        // A get blocked on the server, abandoned by its caller; the put races
        // the unblock, and the pop may take the item for nobody: it must come
        // back at once, not after get_visibility.
        let waiting =
            tokio::time::timeout(Duration::from_millis(30), q.get(Duration::from_secs(30))).await;
        assert!(waiting.is_err(), "nothing was there to get");
        p.put(&round).await.unwrap();
        let got = promptly(&q, &format!("round {round}")).await;
        assert_eq!(got, round, "round {round}: the item must not be swallowed");
    }
}

/// Gets dropped after a few polls, while their take is on its way to Redis or
/// back, with items waiting: every item not returned by a get is back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_gets_put_items_back_at_once() {
    const N: u32 = 300;
    let server = RedisServer::start();
    let url = server.url();
    let (consumer, producer) = (slow_to_reap(&url).await, bus(&url).await);
    let q = consumer.queue::<u32>("abandon.q").unwrap();
    let p = producer.queue::<u32>("abandon.q").unwrap();
    for i in 0..N {
        p.put(&i).await.unwrap();
    }
    let mut seen = HashSet::new();
    for i in 0..N {
        let mut get = std::pin::pin!(q.get(Duration::from_secs(5)));
        for _ in 0..i % 5 {
            if let std::task::Poll::Ready(got) = futures::poll!(get.as_mut()) {
                if let Some(item) = got.unwrap() {
                    assert!(seen.insert(item), "item {item} twice");
                }
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    while seen.len() < N as usize {
        let item = promptly(&q, &format!("{} of {N} seen", seen.len())).await;
        assert!(seen.insert(item), "item {item} twice");
    }
    assert_eq!(q.len().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_stream() {
    scenarios::restart_mid_stream(&mut RedisServer::start_persistent()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_strand_no_item() {
    let server = RedisServer::start();
    let url = server.url();
    let (consumer, producer) = (bus(&url).await, bus(&url).await);
    let q = consumer.queue::<u32>("flush.q").unwrap();
    let p = producer.queue::<u32>("flush.q").unwrap();
    for round in 0..3u32 {
        let reply = server.command(&["SCRIPT", "FLUSH"]).expect("SCRIPT FLUSH");
        assert!(reply.starts_with("+OK"), "{reply:?}");
        p.put(&round).await.unwrap();
        let got = q.get(Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, Some(round));
        let delivery = q.receive(Duration::from_millis(100)).await.unwrap();
        assert!(delivery.is_none(), "nothing else is there");
    }
    assert_eq!(q.len().await.unwrap(), 0);
}
