//! Faults: malformed frames, a broker restarted under load, consumers and
//! providers that die or go silent. Every broker here is the test's own, on a
//! free loopback port: with fast heartbeats (100 ms, 5 missed = dead) where a
//! test waits for a silent peer to be declared dead, steady ones elsewhere (so a
//! busy machine never makes a live client look dead).

use busbar_core::{Bus, Error, Fault};
use busbar_zmq::{Broker, BrokerConfig, ZmqBus, ZmqConfig};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

fn fast() -> BrokerConfig {
    BrokerConfig {
        heartbeat: Duration::from_millis(100),
        liveness: 5,
        ..BrokerConfig::default()
    }
}

fn steady() -> BrokerConfig {
    BrokerConfig {
        heartbeat: Duration::from_millis(500),
        liveness: 6,
        ..BrokerConfig::default()
    }
}

async fn broker() -> Broker {
    Broker::bind_with("tcp://127.0.0.1:0", steady())
        .await
        .unwrap()
}

async fn fast_broker() -> Broker {
    Broker::bind_with("tcp://127.0.0.1:0", fast())
        .await
        .unwrap()
}

async fn bus(url: &str) -> Bus {
    Bus::from_transport(Arc::new(ZmqBus::connect(url).await.unwrap()))
}

/// A hand-driven client speaking the protocol frame by frame.
struct Raw {
    socket: zeromq::DealerSocket,
}

fn frames(parts: &[&[u8]]) -> ZmqMessage {
    let mut message = ZmqMessage::from(Bytes::copy_from_slice(parts[0]));
    for part in &parts[1..] {
        message.push_back(Bytes::copy_from_slice(part));
    }
    message
}

impl Raw {
    async fn connect(endpoint: &str) -> Raw {
        let mut socket = zeromq::DealerSocket::new();
        socket.connect(endpoint).await.unwrap();
        Raw { socket }
    }

    async fn hello(endpoint: &str) -> Raw {
        let mut raw = Raw::connect(endpoint).await;
        raw.send(&[b"BBZ1", &[0x01], b"raw-test"]).await;
        raw.expect(0x81).await;
        raw
    }

    async fn send(&mut self, parts: &[&[u8]]) {
        self.socket.send(frames(parts)).await.unwrap();
    }

    /// The next message with command `command` (others, like heartbeats, skipped).
    async fn expect(&mut self, command: u8) -> Vec<Bytes> {
        within(&format!("command 0x{command:02x}"), async {
            loop {
                let message = self.socket.recv().await.unwrap().into_vec();
                if message.len() >= 2 && message[1].as_ref() == [command] {
                    return message;
                }
            }
        })
        .await
    }

    /// Asks LEN of a queue and waits for the answer: everything sent before
    /// has been processed by the broker once it arrives.
    async fn sync(&mut self) {
        self.send(&[b"BBZ1", &[0x24], &7u64.to_be_bytes(), b"sync.queue"])
            .await;
        self.expect(0xA3).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_are_rejected_counted_and_harmless() {
    let broker = broker().await;
    let endpoint = broker.endpoint().to_owned();
    let mut raw = Raw::hello(&endpoint).await;
    const U1: [u8; 8] = 1u64.to_be_bytes();
    const U2: [u8; 8] = 2u64.to_be_bytes();
    const U3: [u8; 8] = 3u64.to_be_bytes();
    const U4: [u8; 8] = 4u64.to_be_bytes();
    const U9: [u8; 8] = 9u64.to_be_bytes();
    let garbage: Vec<Vec<&[u8]>> = vec![
        vec![b"hello"],
        vec![b"XXXX", &[0x02]],
        vec![b"BBZ1", &[0x02, 0x03]],
        vec![b"BBZ1", &[0x6e]],
        vec![b"BBZ1", &[0x7f], &[0x20, 0, 9]],
        vec![b"BBZ1", &[0x7f], &[0x01, 0, 0]],
        vec![b"BBZ1", &[0x10], b"short"],
        vec![b"BBZ1", &[0x10], &U1, b"bad..pattern"],
        vec![
            b"BBZ1",
            &[0x12],
            &U1,
            b"not an envelope at all, but long enough",
        ],
        vec![b"BBZ1", &[0x12]],
        vec![b"BBZ1", &[0x20], &U2, &[0xBB, 1, 2, 0, 0xff]],
        vec![b"BBZ1", &[0x21], &U3, b"q", &[0, 0], &[0, 0, 0, 1]],
        vec![b"BBZ1", &[0x32], &[0xBB; 64]],
        vec![b"BBZ1", &[0x34], &U9, b"??"],
        vec![b"BBZ1", &[0x22], &[1, 2, 3]],
        vec![b"BBZ1", &[0x30], &U4, b"bad method"],
    ];
    let count = garbage.len() as u64;
    for parts in &garbage {
        raw.send(parts).await;
    }
    raw.sync().await;
    assert_eq!(
        broker.stats().rejected,
        count,
        "every malformed message is counted"
    );

    // The broker still works for everybody, the sender of garbage included.
    let bus = bus(&broker.url()).await;
    let mut sub = bus.subscribe_to::<u32>("after.garbage").await.unwrap();
    bus.publish_to("after.garbage", &7u32).await.unwrap();
    assert_eq!(within("an event", sub.next()).await.unwrap().unwrap(), 7);
    raw.sync().await;
}

/// A fake broker that welcomes a client, then sends it garbage: the client
/// counts each rejection and keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_broker_is_rejected_and_counted() {
    let mut router = zeromq::RouterSocket::new();
    let endpoint = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let fake = tokio::spawn(async move {
        let hello = router.recv().await.unwrap().into_vec();
        let peer = hello[0].clone();
        let send = |parts: Vec<Bytes>| {
            let mut message = ZmqMessage::from(peer.clone());
            for part in parts {
                message.push_back(part);
            }
            message
        };
        let b = |s: &[u8]| Bytes::copy_from_slice(s);
        let welcome = vec![
            b(b"BBZ1"),
            b(&[0x81]),
            b(&1000u32.to_be_bytes()),
            b(&3u32.to_be_bytes()),
            b(&1u64.to_be_bytes()),
        ];
        router.send(send(welcome)).await.unwrap();
        for parts in [
            vec![b(b"nope")],
            vec![b(b"BBZ1"), b(&[0xEE])],
            vec![b(b"BBZ1"), b(&[0x91]), b(&1u64.to_be_bytes())],
            vec![
                b(b"BBZ1"),
                b(&[0x91]),
                b(&1u64.to_be_bytes()),
                b(b"garbage envelope"),
            ],
            vec![b(b"BBZ1"), b(&[0xB4]), b(&[0xBB, 1, 4])],
            vec![b(b"BBZ1"), b(&[0xA1]), b(b"x")],
        ] {
            router.send(send(parts)).await.unwrap();
        }
        // Then answer the client's LEN so the test knows all of it arrived.
        loop {
            let message = router.recv().await.unwrap().into_vec();
            if message.len() >= 4 && message[2].as_ref() == [0x24] {
                let answer = vec![
                    b(b"BBZ1"),
                    b(&[0xA3]),
                    message[3].clone(),
                    b(&5u64.to_be_bytes()),
                ];
                router.send(send(answer)).await.unwrap();
                return router;
            }
        }
    });
    let url = endpoint.replace("tcp://", "zmq://");
    let client = ZmqBus::connect(&url).await.unwrap();
    let bus = Bus::from_transport(Arc::new(client));
    let queue = bus.queue::<u32>("fake.queue").unwrap();
    assert_eq!(within("len", queue.len()).await.unwrap(), 5);
    assert_eq!(
        bus.stats().rejected,
        6,
        "each malformed message from the broker is counted"
    );
    drop(within("the fake broker", fake).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_during_calls_events_and_queue_items() {
    let first = broker().await;
    let endpoint = first.endpoint().to_owned();
    let url = first.url();
    let provider = bus(&url).await;
    let caller = bus(&url).await;
    let subscriber = bus(&url).await;
    provider
        .expose("restart.echo", |x: u64| async move { Ok::<_, Fault>(x) })
        .await
        .unwrap()
        .detach();
    let mut events = subscriber
        .subscribe_to::<u64>("restart.events")
        .await
        .unwrap();
    let stub = caller
        .stub::<u64, u64>("restart.echo")
        .unwrap()
        .timeout(Duration::from_secs(1));
    let queue = caller.queue::<u64>("restart.jobs").unwrap();
    let consumer_queue = subscriber.queue::<u64>("restart.jobs").unwrap();

    // A stream of calls and queue items runs while the broker goes away and
    // comes back on the same port. Each operation ends within its bound, Ok or
    // with a clear error; none hangs and nothing panics.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let stream = {
        let stub = stub.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut n = 0u64;
            while !*stop_rx.borrow_and_update() {
                // While disconnected, operations fail at once: let others run.
                tokio::task::yield_now().await;
                n += 1;
                let started = Instant::now();
                match stub.call(&n).await {
                    Ok(answer) => {
                        assert_eq!(answer, n);
                        ok += 1;
                    }
                    Err(
                        Error::Transport(_)
                        | Error::NoResponders { .. }
                        | Error::Timeout
                        | Error::ProviderLost { .. },
                    ) => {
                        failed += 1;
                    }
                    Err(other) => panic!("unexpected error during the restart: {other:?}"),
                }
                assert!(started.elapsed() < Duration::from_secs(3), "a call hung");
                match queue.put(&n).await {
                    Ok(()) => ok += 1,
                    Err(Error::Transport(_)) => failed += 1,
                    Err(other) => panic!("unexpected put error during the restart: {other:?}"),
                }
            }
            (ok, failed)
        })
    };
    assert_eq!(
        within("a call before the restart", stub.call(&1))
            .await
            .unwrap(),
        1
    );
    first.shutdown().await;
    let second = Broker::bind_with(&endpoint, steady()).await.unwrap();

    // Calls work again without new buses: the provider was restored.
    within("a call after the restart", async {
        loop {
            if let Ok(7) = stub.call(&7).await {
                return;
            }
        }
    })
    .await;
    stop_tx.send(true).unwrap();
    let (ok, failed) = within("the stream of operations", stream).await.unwrap();
    assert!(
        ok > 0,
        "operations succeeded around the restart ({failed} failed)"
    );

    // The subscription was restored: a new event reaches it (publishes made
    // before the subscriber's replay may miss it, so publish until one arrives).
    within("an event after the restart", async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = tick.tick() => caller.publish_to("restart.events", &99u64).await.unwrap(),
                event = events.next() => {
                    if let Some(Ok(99)) = event {
                        return;
                    }
                }
            }
        }
    })
    .await;
    // Queues work on the new broker (items held by the old one died with it).
    queue.put(&4242).await.unwrap();
    let mut got = None;
    while got != Some(4242) {
        got = within("the item put after the restart", consumer_queue.get(WAIT))
            .await
            .unwrap();
    }
    for b in [&provider, &caller, &subscriber] {
        let stats = b.stats();
        assert!(stats.disconnects >= 1 && stats.reconnects >= 1, "{stats:?}");
    }
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_held_by_a_killed_consumer_are_redelivered() {
    let broker = fast_broker().await;
    let producer = bus(&broker.url()).await;
    let queue = producer.queue::<u32>("killed.jobs").unwrap();
    for n in [1, 2] {
        queue.put(&n).await.unwrap();
    }
    // A consumer takes item 1 with a long visibility timeout, then its process
    // dies: the connection closes without a word.
    let mut raw = Raw::hello(broker.endpoint()).await;
    raw.send(&[
        b"BBZ1",
        &[0x21],
        &1u64.to_be_bytes(),
        b"killed.jobs",
        &1000u32.to_be_bytes(),
        &600_000u32.to_be_bytes(),
    ])
    .await;
    let item = raw.expect(0xA1).await;
    assert_eq!(item[4].as_ref(), 1u32.to_be_bytes(), "first attempt");
    // Another consumer, frozen (no heartbeat, connection open), takes item 2.
    let mut frozen = Raw::hello(broker.endpoint()).await;
    frozen
        .send(&[
            b"BBZ1",
            &[0x21],
            &1u64.to_be_bytes(),
            b"killed.jobs",
            &1000u32.to_be_bytes(),
            &600_000u32.to_be_bytes(),
        ])
        .await;
    frozen.expect(0xA1).await;
    drop(raw);

    // Both come back long before their visibility timeout, oldest first.
    let consumer = bus(&broker.url()).await;
    let queue = consumer.queue::<u32>("killed.jobs").unwrap();
    let started = Instant::now();
    for expected in [1, 2] {
        let delivery = within("a redelivered item", queue.receive(WAIT))
            .await
            .unwrap()
            .expect("the item comes back");
        assert_eq!(*delivery, expected);
        assert_eq!(delivery.attempt(), 2);
        delivery.ack().await.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        broker.stats().dead_clients >= 1,
        "the frozen consumer was declared dead"
    );
    assert_eq!(queue.len().await.unwrap(), 0);
    drop(frozen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_stops_answering() {
    let broker = fast_broker().await;
    let caller = bus(&broker.url()).await;
    // A provider registers, then freezes: no answers, no heartbeats.
    let mut frozen = Raw::hello(broker.endpoint()).await;
    frozen
        .send(&[b"BBZ1", &[0x30], &1u64.to_be_bytes(), b"frozen.method"])
        .await;
    frozen.expect(0xB0).await;

    // A call in flight to it fails fast once the broker declares it dead,
    // with an error saying so, long before the caller's deadline.
    let stub = caller
        .stub::<u32, u32>("frozen.method")
        .unwrap()
        .timeout(Duration::from_secs(8));
    let started = Instant::now();
    match within("the call to a frozen provider", stub.call(&1)).await {
        Err(Error::ProviderLost { method }) => assert_eq!(method, "frozen.method"),
        other => panic!("expected ProviderLost naming the method, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // It is gone: callers get NoResponders at once.
    let started = Instant::now();
    match stub.call(&2).await {
        Err(Error::NoResponders { .. }) => {}
        other => panic!("expected NoResponders, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    drop(frozen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_times_out_at_the_deadline() {
    let broker = broker().await;
    let caller = bus(&broker.url()).await;
    let provider = bus(&broker.url()).await;
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let _served = provider
        .expose("slow.method", move |x: u32| {
            let mut release = release_rx.clone();
            async move {
                let _ = release.wait_for(|go| *go).await;
                Ok::<_, Fault>(x)
            }
        })
        .await
        .unwrap();
    let stub = caller
        .stub::<u32, u32>("slow.method")
        .unwrap()
        .timeout(Duration::from_millis(400));
    let started = Instant::now();
    assert!(matches!(stub.call(&1).await, Err(Error::Timeout)));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(390) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    release_tx.send(true).unwrap();
}

/// A broker that stops answering (frozen, connection open) is detected by its
/// missing heartbeats; the client reconnects when a broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_is_detected_and_replaced() {
    let mut router = zeromq::RouterSocket::new();
    let endpoint = router.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let fake = tokio::spawn(async move {
        let hello = router.recv().await.unwrap().into_vec();
        let b = |s: &[u8]| Bytes::copy_from_slice(s);
        let mut welcome = ZmqMessage::from(hello[0].clone());
        for part in [
            b(b"BBZ1"),
            b(&[0x81]),
            b(&50u32.to_be_bytes()),
            b(&3u32.to_be_bytes()),
            b(&1u64.to_be_bytes()),
        ] {
            welcome.push_back(part);
        }
        router.send(welcome).await.unwrap();
        // Then silence, with the connection open, until the client gives up on
        // it and connects again (a second HELLO).
        loop {
            let message = router.recv().await.unwrap().into_vec();
            if message.len() >= 3 && message[2].as_ref() == [0x01] {
                return;
            }
        }
    });
    let mut config = ZmqConfig::new(endpoint);
    config.connect_timeout = Duration::from_secs(2);
    let client = ZmqBus::connect_with(config).await.unwrap();
    within(
        "the client to give up on the silent broker and say hello again",
        fake,
    )
    .await
    .unwrap();
    let stats = busbar_core::EventBus::stats(&client).snapshot();
    assert!(stats.disconnects >= 1, "{stats:?}");
}

/// A subscriber that does not keep up is told how many events it missed, and
/// nothing else goes missing: received + missed = published, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_told_what_it_missed() {
    const N: u32 = 2_000;
    let broker = broker().await;
    let publisher = bus(&broker.url()).await;
    let subscriber = bus(&broker.url()).await;
    let mut slow = subscriber
        .subscribe_with::<u32>(
            busbar_core::Pattern::new("lag.events").unwrap(),
            busbar_core::SubscribeOptions { capacity: 16 },
        )
        .await
        .unwrap();
    let mut marker = subscriber.subscribe_to::<u32>("lag.done").await.unwrap();
    for n in 0..N {
        publisher.publish_to("lag.events", &n).await.unwrap();
    }
    publisher.publish_to("lag.done", &N).await.unwrap();
    // Events from one publisher arrive in order: once the marker is here, every
    // event was delivered to the slow subscription or counted as missed.
    assert_eq!(
        within("the marker", marker.next()).await.unwrap().unwrap(),
        N
    );
    let (mut received, mut missed, mut last) = (0u32, 0u64, None);
    while received as u64 + missed < N as u64 {
        match within("the slow subscription", slow.next()).await.unwrap() {
            Ok(n) => {
                assert!(last.is_none_or(|l| n > l), "in order");
                last = Some(n);
                received += 1;
            }
            Err(Error::Lagged { missed: m }) => missed += m,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received as u64 + missed, N as u64);
    assert!(missed > 0, "a 16-event buffer cannot hold {N} events");
    assert_eq!(subscriber.stats().lagged, missed);
}

/// RETURN (what a client sends for a plain get's item it no longer waits for)
/// puts the item back at the head of its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_item_goes_back_to_the_head() {
    let broker = broker().await;
    let consumer = bus(&broker.url()).await;
    let queue = consumer.queue::<u32>("returned.jobs").unwrap();
    queue.put(&2).await.unwrap();
    let item = busbar_core::Envelope::new(
        busbar_core::Kind::QueueItem,
        busbar_core::Name::new("returned.jobs").unwrap(),
        busbar_core::ContentType::JSON,
        Bytes::from_static(b"1"),
    );
    let mut raw = Raw::hello(broker.endpoint()).await;
    let encoded = busbar_core::wire::encode(&item).unwrap();
    raw.send(&[b"BBZ1", &[0x26], &0u32.to_be_bytes(), &encoded])
        .await;
    raw.sync().await;
    assert_eq!(queue.len().await.unwrap(), 2);
    assert_eq!(queue.get(WAIT).await.unwrap(), Some(1));
    assert_eq!(queue.get(WAIT).await.unwrap(), Some(2));
}

/// Flow control: with a high-water mark of 0 every publish batch waits for its
/// subscriber's writer to drain before it is acknowledged. Everything still
/// arrives, in order, and the broker counts the batches it held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_back_publish_batches_lose_nothing() {
    const N: u32 = 5_000;
    let config = BrokerConfig {
        high_water: 0,
        ..steady()
    };
    let broker = Broker::bind_with("tcp://127.0.0.1:0", config)
        .await
        .unwrap();
    let publisher = bus(&broker.url()).await;
    let subscriber = bus(&broker.url()).await;
    let mut sub = subscriber
        .subscribe_with::<u32>(
            busbar_core::Pattern::new("held.events").unwrap(),
            busbar_core::SubscribeOptions {
                capacity: N as usize,
            },
        )
        .await
        .unwrap();
    let publishing = tokio::spawn(async move {
        for n in 0..N {
            publisher.publish_to("held.events", &n).await.unwrap();
        }
        publisher
    });
    for n in 0..N {
        assert_eq!(
            within("the next event", sub.next()).await.unwrap().unwrap(),
            n
        );
    }
    drop(within("the publisher", publishing).await.unwrap());
    assert!(broker.stats().held_batches > 0, "{:?}", broker.stats());
    assert_eq!(subscriber.stats().lagged, 0);
}

/// No broker at the address: connecting fails with a clear error, in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_no_broker_fails_in_time() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let url = format!("zmq://127.0.0.1:{port}?connect_timeout_ms=300");
    match Bus::connect(&url).await {
        Err(Error::Transport(err)) => assert!(err.to_string().contains("broker"), "{err}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// While the broker is away, publishes are buffered up to a bound, then fail
/// with a clear error, and the subscriber is told it may be missing events;
/// once a broker is back the bus restores its subscription by itself and
/// events flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_during_an_outage_are_bounded_then_fail_clearly() {
    let first = broker().await;
    let endpoint = first.endpoint().to_owned();
    let bus = bus(&format!("{}?publish_buffer=4", first.url())).await;
    let mut sub = bus.subscribe_to::<u32>("outage.events").await.unwrap();
    first.shutdown().await;
    let error = within("publish to fail while the broker is away", async {
        loop {
            if let Err(err) = bus.publish_to("outage.events", &0u32).await {
                return err;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        matches!(&error, Error::Transport(e) if e.to_string().contains("publish buffer")),
        "{error:?}"
    );
    let told = within("the outage to reach the subscriber", sub.next()).await;
    assert!(matches!(told, Some(Err(Error::Interrupted))), "{told:?}");
    let _second = Broker::bind_with(&endpoint, steady()).await.unwrap();
    within("an event after the broker came back", async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = bus.publish_to("outage.events", &7u32).await;
                }
                event = sub.next() => {
                    if let Some(Ok(7)) = event {
                        return;
                    }
                }
            }
        }
    })
    .await;
    assert!(bus.stats().reconnects >= 1);
}

/// A provider's bus dropped (not shut down) while a handler runs: the call may
/// be half done, so the caller gets a clear error at once rather than a retry
/// elsewhere or a wait until its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_provider_bus_fails_its_calls_in_flight() {
    let broker = broker().await;
    let caller = bus(&broker.url()).await;
    let provider = bus(&broker.url()).await;
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    provider
        .expose("dropped.method", move |x: u32| {
            let started = started_tx.clone();
            async move {
                let _ = started.send(());
                std::future::pending::<()>().await;
                Ok::<_, Fault>(x)
            }
        })
        .await
        .unwrap()
        .detach();
    let stub = caller
        .stub::<u32, u32>("dropped.method")
        .unwrap()
        .timeout(Duration::from_secs(8));
    let call = tokio::spawn(async move { stub.call(&1).await });
    within("the handler to start", started_rx.recv())
        .await
        .unwrap();
    let started = Instant::now();
    drop(provider);
    match within("the call", call).await.unwrap() {
        Err(Error::ProviderLost { method }) => assert_eq!(method, "dropped.method"),
        other => panic!("expected ProviderLost, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// A consumer blocked in `get` when the broker restarts keeps waiting on the
/// new broker (its fetch is asked again) and gets an item put there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_consumer_survives_a_broker_restart() {
    let first = broker().await;
    let endpoint = first.endpoint().to_owned();
    let consumer = bus(&first.url()).await;
    let producer = bus(&first.url()).await;
    let blocked = consumer.queue::<u32>("restart.blocked").unwrap();
    let mut waiting = Box::pin(blocked.get(Duration::from_secs(20)));
    // Polled once, the get has sent its fetch; it is at the broker once a LEN
    // sent after it on the same bus was answered.
    assert!(futures::poll!(&mut waiting).is_pending());
    blocked.len().await.unwrap();
    first.shutdown().await;
    let _second = Broker::bind_with(&endpoint, steady()).await.unwrap();
    let queue = producer.queue::<u32>("restart.blocked").unwrap();
    within("a put on the new broker", async {
        while queue.put(&5).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(within("the blocked get", waiting).await.unwrap(), Some(5));
    assert!(consumer.stats().reconnects >= 1);
}
