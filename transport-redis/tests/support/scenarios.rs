//! Fault scenarios run against a single server and against a cluster alike.

use super::{
    bus, bus_with, next, produce, provider_is_live, reports_interruption, stats_reach,
    subscription_is_live, RECOVERY,
};
use busbar_core::{Bus, Error, Fault, Subscription};
use busbar_test_support::{RedisCluster, RedisServer};
use futures::StreamExt;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// Redis as the fault scenarios see it: one server or a whole cluster.
pub(crate) trait Target {
    /// The URL buses connect to.
    fn url(&self) -> String;
    /// `CLIENT KILL` of every normal and pub/sub connection (on every node).
    fn kill_clients(&self);
    /// Kills the server(s), like a crash.
    fn stop(&mut self);
    /// Starts them again on the same ports and data, and waits until they serve.
    fn resume(&mut self);
    /// Runs a command on the node holding its keys; the raw reply.
    fn command(&self, args: &[&str]) -> String;
}

fn kill(command: impl Fn(&[&str]) -> std::io::Result<String>) {
    for kind in ["normal", "pubsub"] {
        let reply = command(&["CLIENT", "KILL", "TYPE", kind]).expect("CLIENT KILL");
        assert!(reply.starts_with(':'), "CLIENT KILL answered {reply:?}");
    }
}

impl Target for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }
    fn kill_clients(&self) {
        kill(|args| self.command(args));
    }
    fn stop(&mut self) {
        RedisServer::stop(self);
    }
    fn resume(&mut self) {
        RedisServer::resume(self);
    }
    fn command(&self, args: &[&str]) -> String {
        RedisServer::command(self, args).expect("a command")
    }
}

impl Target for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }
    fn kill_clients(&self) {
        for node in 0..self.ports().len() {
            kill(|args| self.node_command(node, args));
        }
    }
    fn stop(&mut self) {
        RedisCluster::stop(self);
    }
    fn resume(&mut self) {
        RedisCluster::resume(self);
    }
    fn command(&self, args: &[&str]) -> String {
        // A node that does not own the keys answers MOVED, doing nothing.
        (0..self.ports().len())
            .map(|node| self.node_command(node, args).expect("a command"))
            .find(|reply| !reply.contains("MOVED"))
            .expect("a node owning the keys")
    }
}

/// `CLIENT KILL` of every connection, three times: subscriptions (literal and
/// wildcard) are told events may have been missed, they and providers come
/// back, and no event arrives twice after.
pub(crate) async fn client_kill_restores_subscriptions_and_providers(target: &impl Target) {
    let url = target.url();
    let (listener, client) = (bus(&url).await, bus(&url).await);
    let mut literal: Subscription<u32> = listener.subscribe_to("kill.one").await.unwrap();
    let mut wildcard: Subscription<u32> = listener.subscribe_to("kill.*").await.unwrap();
    let _provider = listener
        .expose("kill.inc", |x: u32| async move { Ok::<_, Fault>(x + 1) })
        .await
        .unwrap();
    subscription_is_live(&client, "kill.one", &mut literal).await;
    provider_is_live(&client, "kill.inc").await;

    for round in 1..=3u64 {
        target.kill_clients();
        reports_interruption(&mut literal).await;
        reports_interruption(&mut wildcard).await;
        subscription_is_live(&client, "kill.one", &mut literal).await;
        subscription_is_live(&client, "kill.two", &mut wildcard).await;
        provider_is_live(&client, "kill.inc").await;
        stats_reach(&listener, "listener reconnected", |s| {
            s.disconnects >= round && s.reconnects >= round
        })
        .await;
    }
    // The wildcard subscription also saw the literal topic's markers: drain them,
    // then check nothing arrives twice for one publish.
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
}

/// `CLIENT KILL` of every connection at three points of two queue streams
/// (one taken with `get`, one with acknowledged `receive`): no item is lost.
pub(crate) async fn client_kill_loses_no_queue_item(target: &impl Target) {
    const N: u32 = 3_000;
    let url = target.url();
    let producer = bus(&url).await;
    // A take whose reply dies with the connection comes back after this.
    let consumer = bus_with(&url, |c| c.get_visibility = Duration::from_secs(1)).await;
    let acking = bus(&url).await;
    let producing = produce(producer, "lossless.get", N);
    let producing_acked = produce(bus(&url).await, "lossless.ack", N);
    let q = consumer.queue::<u32>("lossless.get").unwrap();
    let acked = acking
        .queue::<u32>("lossless.ack")
        .unwrap()
        .visibility_timeout(Duration::from_secs(1));

    let mut seen = HashSet::new();
    let mut seen_acked = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut kills = 0;
    while seen.len() < N as usize || seen_acked.len() < N as usize {
        assert!(
            Instant::now() < deadline,
            "lost items: get saw {}/{N}, receive saw {}/{N}",
            seen.len(),
            seen_acked.len()
        );
        // Kill every connection at three points of the stream.
        let progress = (seen.len() + seen_acked.len()) as u32;
        if kills < 3 && progress > (kills + 1) * N / 2 {
            kills += 1;
            target.kill_clients();
        }
        if seen.len() < N as usize {
            if let Ok(Some(item)) = q.get(Duration::from_millis(200)).await {
                seen.insert(item);
            }
        }
        if seen_acked.len() < N as usize {
            if let Ok(Some(delivery)) = acked.receive(Duration::from_millis(200)).await {
                let item = *delivery;
                // A failed ack only means the item comes again: at least once.
                if delivery.ack().await.is_ok() {
                    seen_acked.insert(item);
                }
            }
        }
    }
    assert_eq!(kills, 3);
    producing.await.unwrap();
    producing_acked.await.unwrap();
    assert!(consumer.stats().reconnects >= 1, "{:?}", consumer.stats());
}

/// A crash (`kill -9`) and restart of the persistent server(s) in the middle
/// of the traffic: publishes are buffered up to the bound, then fail clearly;
/// calls fail rather than hang; subscribers hear of the outage while it
/// lasts; afterwards subscriptions and providers are back and every stored
/// queue item is still there.
pub(crate) async fn restart_mid_stream(target: &mut impl Target) {
    let url = target.url();
    let listener = bus(&url).await;
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
        let item = consumer
            .get(Duration::from_secs(5))
            .await
            .unwrap()
            .expect("an item");
        seen.insert(item);
    }
    subscription_is_live(&client, "restart.a", &mut sub).await;

    target.stop();
    // Publishes are buffered up to the bound, then fail clearly.
    let mut accepted = 0;
    let err = loop {
        match client.publish_to("restart.buffered", &1u32).await {
            Ok(()) => accepted += 1,
            Err(err) => break err,
        }
        assert!(
            accepted < 10_000,
            "publishing never failed during the outage"
        );
    };
    assert!(accepted >= 8, "only {accepted} publishes were buffered");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    stats_reach(&client, "the client noticed the outage", |s| {
        s.disconnects >= 1
    })
    .await;
    // Calls fail too (not hang).
    let stub = client
        .stub::<u32, u32>("restart.inc")
        .unwrap()
        .timeout(Duration::from_secs(1));
    assert!(stub.call(&1).await.is_err());
    reports_interruption(&mut sub).await;

    tokio::task::block_in_place(|| target.resume());

    subscription_is_live(&client, "restart.b", &mut sub).await;
    provider_is_live(&client, "restart.inc").await;
    // Every item stored before the crash is still there.
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
    for bus in [&listener, &client] {
        stats_reach(bus, "reconnected", |s| s.reconnects >= 1).await;
    }
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

/// A get blocked on the server, abandoned by its caller, while a put races the
/// unblock: the item is never swallowed, and comes back at once.
pub(crate) async fn cancelled_blocking_get_does_not_eat_the_next_item(target: &impl Target) {
    let url = target.url();
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

/// Gets and receives dropped after a few polls, while their take is on its
/// way to Redis or back, with items waiting: every item not returned to a
/// caller is back at once.
pub(crate) async fn abandoned_gets_put_items_back_at_once(target: &impl Target) {
    const N: u32 = 300;
    let url = target.url();
    let (consumer, producer) = (slow_to_reap(&url).await, bus(&url).await);
    let q = consumer.queue::<u32>("abandon.q").unwrap();
    let p = producer.queue::<u32>("abandon.q").unwrap();
    for i in 0..N {
        p.put(&i).await.unwrap();
    }
    let mut seen = HashSet::new();
    for i in 0..N {
        // Odd rounds receive (a TAKE in flight), even rounds get (a lane).
        // Only the take is abandoned: an ack dropped on its way may leave
        // its item in flight until the visibility timeout, as documented.
        let receive = i % 2 == 1;
        enum Took {
            Got(u32),
            Received(Box<busbar_core::Delivery<u32>>),
        }
        let mut take = std::pin::pin!(async {
            if receive {
                let delivery = q.receive(Duration::from_secs(5)).await?;
                Ok::<_, Error>(delivery.map(|d| Took::Received(Box::new(d))))
            } else {
                Ok(q.get(Duration::from_secs(5)).await?.map(Took::Got))
            }
        });
        for _ in 0..i % 5 {
            if let std::task::Poll::Ready(took) = futures::poll!(take.as_mut()) {
                let item = match took.unwrap() {
                    Some(Took::Received(delivery)) => {
                        let item = **delivery;
                        delivery.ack().await.unwrap();
                        Some(item)
                    }
                    Some(Took::Got(item)) => Some(item),
                    None => None,
                };
                if let Some(item) = item {
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

/// Items taken with `get` are settled for good, whether a later take carried
/// the settlement or the flusher sent it (the last gets of a stream): none
/// comes back after its visibility timeout, which here is short and reaped
/// often.
pub(crate) async fn got_items_never_come_back(target: &impl Target) {
    const N: usize = 400;
    const GETTERS: usize = 8;
    // Long enough that a settlement delayed by a loaded machine is not
    // overtaken by a redelivery; each getter settles within a take or 1 ms.
    const VISIBILITY: Duration = Duration::from_secs(1);
    let url = target.url();
    let quick = |c: &mut busbar_redis::Config| {
        c.get_visibility = VISIBILITY;
        c.reap_interval = Duration::from_millis(20);
    };
    let (consumer, watcher, producer) = (
        bus_with(&url, quick).await,
        bus_with(&url, quick).await,
        bus(&url).await,
    );
    let p = producer.queue::<u32>("settle.q").unwrap();
    for i in 0..N as u32 {
        p.put(&i).await.unwrap();
    }
    // Concurrent gets on one bus, so one take carries several settlements.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let getters: Vec<_> = (0..GETTERS)
        .map(|_| {
            let q = consumer.queue::<u32>("settle.q").unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                while seen.lock().unwrap().len() < N {
                    assert!(Instant::now() < deadline, "the items were not all got");
                    if let Some(item) = q.get(Duration::from_millis(100)).await.unwrap() {
                        seen.lock().unwrap().insert(item);
                    }
                }
            })
        })
        .collect();
    for getter in getters {
        getter.await.unwrap();
    }
    // Shutting down sends the settlements still waiting for a take (through the
    // flusher's path), so what follows does not depend on its timing.
    consumer.shutdown().await.unwrap();
    // Another bus reaps, and must find nothing come back within three
    // visibility timeouts.
    let q = watcher.queue::<u32>("settle.q").unwrap();
    let back = q.get(VISIBILITY * 3).await.unwrap();
    assert_eq!(back, None, "a got item was delivered again");
}

/// A `get` lane whose bus is gone (it died between its pop and settling, and
/// its registration lapsed) holds an item: the reaper of a live bus puts it
/// back at the head of the queue with its return counted, and `len` counts it.
pub(crate) async fn lapsed_lanes_come_back(target: &impl Target) {
    let url = target.url();
    let bus = bus(&url).await;
    let q = bus.queue::<u32>("lapsed.q").unwrap();
    for item in [1, 2] {
        q.put(&item).await.unwrap();
    }
    let base = "busbar:q:{lapsed.q}";
    let lane = format!("{base}:g:gone:0");
    let moved = target.command(&["LMOVE", base, &lane, "RIGHT", "LEFT"]);
    assert!(!moved.starts_with('-'), "LMOVE answered {moved:?}");
    target.command(&["ZADD", &format!("{base}:gs"), "1", "gone:0"]);
    assert_eq!(
        q.len().await.unwrap(),
        2,
        "the lapsed lane's item waits again"
    );
    let acked = bus
        .queue::<u32>("lapsed.q")
        .unwrap()
        .visibility_timeout(Duration::from_secs(5));
    let first = acked
        .receive(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("an item");
    assert_eq!(
        (*first, first.attempt()),
        (1, 2),
        "the oldest item comes first, its return counted"
    );
    first.ack().await.unwrap();
    assert_eq!(target.command(&["EXISTS", &lane]).trim(), ":0");
    assert_eq!(
        target
            .command(&["ZSCORE", &format!("{base}:gs"), "gone:0"])
            .trim(),
        "$-1",
        "the lapsed lane is forgotten"
    );
}
