//! Faults: connections killed by the server (`CLIENT KILL`) and a server restart
//! in the middle of the traffic (scenarios shared with `cluster_faults.rs`),
//! abandoned takes, and a flushed script cache. Each test runs its own
//! redis-server, so killing clients never disturbs another test.
//!
//! Every wait is bounded and waits for the event itself (a delivery, a reply, a
//! counter moving), retrying the operation that proves recovery.

mod support;

use busbar_test_support::RedisServer;
use std::time::Duration;
use support::{bus, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_restores_subscriptions_and_providers() {
    scenarios::client_kill_restores_subscriptions_and_providers(&RedisServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_loses_no_queue_item() {
    scenarios::client_kill_loses_no_queue_item(&RedisServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_blocking_get_does_not_eat_the_next_item() {
    scenarios::cancelled_blocking_get_does_not_eat_the_next_item(&RedisServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn got_items_never_come_back() {
    scenarios::got_items_never_come_back(&RedisServer::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_gets_put_items_back_at_once() {
    scenarios::abandoned_gets_put_items_back_at_once(&RedisServer::start()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_lanes_come_back() {
    scenarios::lapsed_lanes_come_back(&RedisServer::start()).await;
}

/// Garbage pushed into a queue's list by someone else: `receive` and `get`
/// count it, move it to `_dead.<queue>` (wrapped in an envelope of content
/// type `application/octet-stream` saying why), hand out the next item, and
/// nothing of it stays in flight to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_queue_is_skipped_counted_and_dead_lettered() {
    let server = RedisServer::start();
    let bus = bus(&server.url()).await;
    let q = bus.queue::<u32>("garbage.q").unwrap();
    let list = "busbar:q:{garbage.q}";
    let push_garbage = |text: &str| {
        let reply = server.command(&["LPUSH", list, text]).unwrap();
        assert!(reply.starts_with(':'), "LPUSH answered {reply:?}");
    };

    push_garbage("not-an-envelope");
    q.put(&1).await.unwrap();
    let delivery = q
        .receive(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the item behind the garbage");
    assert_eq!(*delivery.value(), 1);
    delivery.ack().await.unwrap();

    push_garbage("more-garbage");
    q.put(&2).await.unwrap();
    assert_eq!(q.get(Duration::from_secs(5)).await.unwrap(), Some(2));
    assert_eq!(
        bus.stats().rejected,
        2,
        "each piece of garbage counted once"
    );
    assert_eq!(bus.stats().dead_lettered, 2, "and each moved to _dead");

    let fly = format!("{list}:fly");
    let deadline = tokio::time::Instant::now() + support::RECOVERY;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        let left = server.command(&["HLEN", &fly]).unwrap();
        if left.trim() == ":0" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the garbage stayed in flight: HLEN {left:?}"
        );
        tick.tick().await;
    }
    assert_eq!(q.len().await.unwrap(), 0, "nothing comes back");

    // Both pieces are in the dead-letter queue, in order, saying why.
    let dead = bus
        .queue::<busbar_core::Message>("_dead.garbage.q")
        .unwrap();
    assert_eq!(dead.len().await.unwrap(), 2);
    for garbage in ["not-an-envelope", "more-garbage"] {
        let letter = dead
            .get(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("a dead letter");
        assert_eq!(letter.payload(), garbage.as_bytes());
        assert_eq!(
            letter.envelope().content_type.as_str(),
            "application/octet-stream"
        );
        let why = letter.header("busbar-error").expect("a reason");
        assert!(why.contains("not a valid envelope"), "{why}");
    }
}
