//! Faults on a Redis Cluster: every node kills every client connection
//! (`CLIENT KILL`) in the middle of the traffic. Each test runs its own cluster.

mod support;

use busbar_core::{Error, Fault, Subscription};
use busbar_test_support::RedisCluster;
use futures::StreamExt;
use std::collections::HashSet;
use std::time::Duration;
use support::{
    bus_with, next, produce, provider_is_live, stats_reach, subscription_is_live, RECOVERY,
};
use tokio::time::Instant;

fn kill_clients(cluster: &RedisCluster) {
    for node in 0..cluster.ports().len() {
        for kind in ["normal", "pubsub"] {
            let reply = cluster
                .node_command(node, &["CLIENT", "KILL", "TYPE", kind])
                .expect("CLIENT KILL");
            assert!(reply.starts_with(':'), "CLIENT KILL answered {reply:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_on_every_node_restores_subscriptions_and_providers() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let (listener, client) = (bus_with(&url, |_| {}).await, bus_with(&url, |_| {}).await);
    let mut literal: Subscription<u32> = listener.subscribe_to("kill.one").await.unwrap();
    let mut wildcard: Subscription<u32> = listener.subscribe_to("kill.*").await.unwrap();
    let _provider = listener
        .expose("kill.inc", |x: u32| async move { Ok::<_, Fault>(x + 1) })
        .await
        .unwrap();
    subscription_is_live(&client, "kill.one", &mut literal).await;
    provider_is_live(&client, "kill.inc").await;

    for _round in 1..=3 {
        kill_clients(&cluster);
        subscription_is_live(&client, "kill.one", &mut literal).await;
        subscription_is_live(&client, "kill.two", &mut wildcard).await;
        provider_is_live(&client, "kill.inc").await;
    }
    assert!(listener.stats().disconnects >= 1, "{:?}", listener.stats());
    // Nothing arrives twice after the reconnects.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), wildcard.next()).await {
    }
    client.publish_to("kill.one", &7u32).await.unwrap();
    assert_eq!(next(&mut wildcard).await, 7);
    assert_eq!(next(&mut literal).await, 7);
    client.publish_to("kill.one", &8u32).await.unwrap();
    assert_eq!(
        next(&mut wildcard).await,
        8,
        "each event once per subscription"
    );
    assert_eq!(
        next(&mut literal).await,
        8,
        "each event once per subscription"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_on_every_node_loses_no_queue_item() {
    const N: u32 = 2_000;
    let cluster = RedisCluster::start();
    let url = cluster.url();
    // Two queues whose keys live on different nodes.
    let consumer = bus_with(&url, |c| c.get_visibility = Duration::from_secs(1)).await;
    let producing = produce(bus_with(&url, |_| {}).await, "lossless.a", N);
    let producing_too = produce(bus_with(&url, |_| {}).await, "lossless.b", N);
    let (a, b) = (
        consumer.queue::<u32>("lossless.a").unwrap(),
        consumer
            .queue::<u32>("lossless.b")
            .unwrap()
            .visibility_timeout(Duration::from_secs(1)),
    );
    let (mut seen_a, mut seen_b) = (HashSet::new(), HashSet::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut kills = 0;
    while seen_a.len() < N as usize || seen_b.len() < N as usize {
        assert!(
            Instant::now() < deadline,
            "lost items: a saw {}/{N}, b saw {}/{N}",
            seen_a.len(),
            seen_b.len()
        );
        let progress = (seen_a.len() + seen_b.len()) as u32;
        if kills < 3 && progress > (kills + 1) * N / 2 {
            kills += 1;
            kill_clients(&cluster);
        }
        if seen_a.len() < N as usize {
            if let Ok(Some(item)) = a.get(Duration::from_millis(200)).await {
                seen_a.insert(item);
            }
        }
        if seen_b.len() < N as usize {
            if let Ok(Some(delivery)) = b.receive(Duration::from_millis(200)).await {
                let item = *delivery;
                if delivery.ack().await.is_ok() {
                    seen_b.insert(item);
                }
            }
        }
    }
    assert_eq!(kills, 3);
    producing.await.unwrap();
    producing_too.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_mid_stream() {
    let mut cluster = RedisCluster::start_persistent();
    let url = cluster.url();
    let listener = bus_with(&url, |_| {}).await;
    let client = bus_with(&format!("{url}?publish_buffer=8"), |c| {
        c.outage_wait = Duration::from_millis(200);
    })
    .await;
    let mut sub: Subscription<u32> = listener.subscribe_to("restart.>").await.unwrap();
    let _provider = listener
        .expose("restart.inc", |x: u32| async move { Ok::<_, Fault>(x + 1) })
        .await
        .unwrap();
    let q = client.queue::<u32>("restart.q").unwrap();
    let consumer = listener.queue::<u32>("restart.q").unwrap();
    for i in 0..100u32 {
        q.put(&i).await.unwrap();
    }
    let mut seen = HashSet::new();
    while seen.len() < 50 {
        let item = consumer.get(Duration::from_secs(5)).await.unwrap();
        seen.insert(item.expect("an item"));
    }
    subscription_is_live(&client, "restart.a", &mut sub).await;

    cluster.stop();
    // Publishes are buffered up to the bound, then fail clearly.
    let mut accepted = 0;
    let err = loop {
        match client.publish_to("restart.buffered", &1u32).await {
            Ok(()) => accepted += 1,
            Err(err) => break err,
        }
        assert!(
            accepted < 100_000,
            "publishing never failed during the outage"
        );
    };
    assert!(accepted >= 8, "only {accepted} publishes were buffered");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    stats_reach(&client, "the client noticed the outage", |s| {
        s.disconnects >= 1
    })
    .await;
    let stub = client
        .stub::<u32, u32>("restart.inc")
        .unwrap()
        .timeout(Duration::from_secs(1));
    assert!(stub.call(&1).await.is_err(), "calls fail during the outage");

    tokio::task::block_in_place(|| cluster.resume());

    subscription_is_live(&client, "restart.b", &mut sub).await;
    provider_is_live(&client, "restart.inc").await;
    let deadline = Instant::now() + RECOVERY;
    while seen.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "items lost in the restart: {} of 100 seen",
            seen.len()
        );
        if let Ok(Some(item)) = consumer.get(Duration::from_millis(200)).await {
            seen.insert(item);
        }
    }
    stats_reach(&client, "reconnected", |s| s.reconnects >= 1).await;
}
