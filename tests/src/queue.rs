//! Work queues: FIFO, persistence until consumed, competing consumers, `get`
//! timeouts, `len`, acknowledged receive and dead letters.

use crate::pubsub::Point;
use crate::{has_acks, has_queues, ok, within, within_long, Harness, WAIT};
use busbar_core::{Bus, Error, Message, Name, Queue};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The queue `name` on `bus`; `None` (after checking that queue operations
/// answer `Unsupported`) when the transport declares no queues.
async fn queue_on<T>(bus: &Bus, name: &str) -> Option<Queue<T>>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    has_queues(bus, name)
        .await
        .then(|| ok("queue", bus.queue::<T>(name)))
}

/// Like [`queue_on`], and also `None` (after checking `receive` answers
/// `Unsupported`) when the transport declares no acknowledged receive.
async fn acked_queue_on<T>(bus: &Bus, name: &str) -> Option<Queue<T>>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    has_acks(bus, name)
        .await
        .then(|| ok("queue", bus.queue::<T>(name)))
}

/// Takes the next item, which must come within [`WAIT`].
async fn take<T>(what: &str, queue: &Queue<T>) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    match within(what, queue.get(WAIT)).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("{what}: no item within {WAIT:?}"),
        Err(err) => panic!("{what}: {err:?}"),
    }
}

/// FIFO: 1,000 items from one producer come out in the order they were put.
pub async fn queue_fifo_from_one_producer(h: Harness) {
    let name = h.name("fifo");
    let producer = h.bus().await;
    let consumer = h.bus().await;
    let Some(q) = queue_on::<u32>(&producer, &name).await else {
        return;
    };
    let c = ok("queue", consumer.queue::<u32>(&name));
    for n in 0..1_000u32 {
        ok("put", q.put(&n).await);
    }
    within_long("1,000 items", async {
        for want in 0..1_000u32 {
            assert_eq!(
                take("an item", &c).await,
                want,
                "items must come out in the order put"
            );
        }
    })
    .await;
    assert_eq!(
        ok("len", c.get(Duration::ZERO).await),
        None,
        "the queue must be empty"
    );
}

/// FIFO per producer: with two producers putting at once, each producer's items
/// come out in its own order.
pub async fn queue_fifo_per_producer_with_two_producers(h: Harness) {
    const N: u32 = 500;
    let name = h.name("fifo2");
    let consumer = h.bus().await;
    let Some(c) = queue_on::<(u32, u32)>(&consumer, &name).await else {
        return;
    };
    let mut tasks = Vec::new();
    for p in 0..2u32 {
        let q = ok("queue", h.bus().await.queue::<(u32, u32)>(&name));
        tasks.push(tokio::spawn(async move {
            for n in 0..N {
                ok("put", q.put(&(p, n)).await);
            }
        }));
    }
    let mut next = [0u32; 2];
    within_long("both producers' items", async {
        while next != [N, N] {
            let (p, n) = take("an item", &c).await;
            assert_eq!(
                n, next[p as usize],
                "producer {p}'s items must come out in order"
            );
            next[p as usize] += 1;
        }
    })
    .await;
    for task in tasks {
        ok("producer", task.await);
    }
}

/// `put` stores items while no consumer exists; a consumer on a bus opened later
/// gets them.
pub async fn queue_put_before_any_consumer(h: Harness) {
    let name = h.name("early");
    let producer = h.bus().await;
    let Some(q) = queue_on::<String>(&producer, &name).await else {
        return;
    };
    for item in ["a", "b", "c"] {
        ok("put", q.put(&item.to_owned()).await);
    }
    let consumer = h.bus().await;
    let c = ok("queue", consumer.queue::<String>(&name));
    assert_eq!(
        ok("len", c.len().await),
        3,
        "all three items must wait for a consumer"
    );
    for want in ["a", "b", "c"] {
        assert_eq!(take("an early item", &c).await, want);
    }
}

/// Items stay in the queue after the bus that put them shuts down.
pub async fn queue_items_survive_the_producer_bus(h: Harness) {
    let name = h.name("survive");
    let consumer = h.bus().await;
    let producer = h.bus().await;
    let Some(q) = queue_on::<u32>(&producer, &name).await else {
        return;
    };
    ok("put", q.put(&42).await);
    ok("shutdown", producer.shutdown().await);
    let c = ok("queue", consumer.queue::<u32>(&name));
    assert_eq!(take("the item of a shut producer", &c).await, 42);
}

/// Queues are isolated by name: items of one never come out of another.
pub async fn queues_are_isolated_by_name(h: Harness) {
    let bus = h.bus().await;
    let Some(a) = queue_on::<String>(&bus, &h.name("qa")).await else {
        return;
    };
    let b = ok("queue", bus.queue::<String>(&h.name("qa.b")));
    let c = ok("queue", bus.queue::<String>(&h.name("qab")));
    ok("put", a.put(&"for a".to_owned()).await);
    ok("put", b.put(&"for a.b".to_owned()).await);
    assert_eq!(ok("len", c.len().await), 0);
    assert_eq!(ok("get", c.get(Duration::ZERO).await), None);
    assert_eq!(take("a's item", &a).await, "for a");
    assert_eq!(take("b's item", &b).await, "for a.b");
    assert_eq!(ok("get", a.get(Duration::ZERO).await), None);
}

/// A `get` waiting on an empty queue returns an item put afterwards by another
/// bus, as soon as it is put (not at its timeout).
pub async fn blocked_get_wakes_on_put(h: Harness) {
    let name = h.name("wake");
    let consumer = h.bus().await;
    let producer = h.bus().await;
    let Some(c) = queue_on::<u32>(&consumer, &name).await else {
        return;
    };
    let started = Instant::now();
    let waiting = tokio::spawn(async move { c.get(Duration::from_secs(30)).await });
    ok(
        "put",
        ok("queue", producer.queue::<u32>(&name)).put(&9).await,
    );
    let got = ok(
        "get",
        ok("get task", within("the waiting get", waiting).await),
    );
    assert_eq!(got, Some(9));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the get must wake on the put"
    );
}

/// Competing consumers: 4 consumers on separate buses share 10,000 items put
/// while they run; every item is taken exactly once.
pub async fn competing_consumers_get_each_item_once(h: Harness) {
    const N: u32 = 10_000;
    let name = h.name("compete");
    let producer = h.bus().await;
    let Some(q) = queue_on::<u32>(&producer, &name).await else {
        return;
    };
    let taken = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::with_capacity(N as usize)));
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let c = ok("queue", h.bus().await.queue::<u32>(&name));
        let (taken, seen) = (taken.clone(), seen.clone());
        consumers.push(tokio::spawn(async move {
            let mut mine = 0usize;
            while taken.load(Ordering::SeqCst) < N as usize {
                if let Some(n) = ok("get", c.get(Duration::from_millis(100)).await) {
                    seen.lock().unwrap().push(n);
                    taken.fetch_add(1, Ordering::SeqCst);
                    mine += 1;
                }
            }
            mine
        }));
    }
    for n in 0..N {
        ok("put", q.put(&n).await);
    }
    let counts = within_long("4 consumers to take 10,000 items", async {
        let mut counts = Vec::new();
        for consumer in consumers {
            counts.push(ok("consumer", consumer.await));
        }
        counts
    })
    .await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(
        seen.len(),
        N as usize,
        "items taken (per consumer: {counts:?})"
    );
    let distinct: HashSet<u32> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), N as usize, "an item was taken twice");
    assert!(distinct.iter().all(|n| *n < N));
    assert_eq!(ok("len", q.len().await), 0);
}

/// `get(timeout)` on an empty queue returns `Ok(None)` no earlier than the
/// timeout and not seconds late (the same for `receive`).
pub async fn get_timeout_returns_none_on_time(h: Harness) {
    let bus = h.bus().await;
    let Some(q) = queue_on::<u32>(&bus, &h.name("empty")).await else {
        return;
    };
    for timeout in [Duration::from_millis(300), Duration::from_millis(1200)] {
        let started = Instant::now();
        let got = ok("get", within("a get to time out", q.get(timeout)).await);
        let elapsed = started.elapsed();
        assert_eq!(got, None);
        assert!(
            elapsed >= timeout,
            "get({timeout:?}) returned early, after {elapsed:?}"
        );
        assert!(
            elapsed < timeout + Duration::from_secs(1),
            "get({timeout:?}) returned late, after {elapsed:?}"
        );
    }
    if has_acks(&bus, &h.name("empty")).await {
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let got = ok(
            "receive",
            within("a receive to time out", q.receive(timeout)).await,
        );
        let elapsed = started.elapsed();
        assert!(got.is_none());
        assert!(
            elapsed >= timeout,
            "receive({timeout:?}) returned early, after {elapsed:?}"
        );
        assert!(
            elapsed < timeout + Duration::from_secs(1),
            "receive returned late, after {elapsed:?}"
        );
    }
}

/// A `get` that times out never swallows an item put around that moment: 100
/// gets with a 20 ms timeout race puts made from 15 to 25 ms after each get
/// started, and every item is taken exactly once in the end.
pub async fn timed_out_get_never_swallows_an_item(h: Harness) {
    const N: u32 = 100;
    let timeout = Duration::from_millis(20);
    let name = h.name("race");
    let consumer = h.bus().await;
    let producer = h.bus().await;
    let Some(c) = queue_on::<u32>(&consumer, &name).await else {
        return;
    };
    let p = ok("queue", producer.queue::<u32>(&name));
    let mut got = Vec::new();
    within_long("racing gets and puts", async {
        for n in 0..N {
            let c = c.clone();
            let started = Instant::now();
            let getter = tokio::spawn(async move { c.get(timeout).await });
            // The stimulus, not a wait: the put lands just before, at or just
            // after the get's deadline.
            tokio::time::sleep_until(started + Duration::from_millis(15 + u64::from(n % 11))).await;
            ok("put", p.put(&n).await);
            if let Some(item) = ok("get", ok("getter", getter.await)) {
                got.push(item);
            }
        }
    })
    .await;
    let early = got.len();
    while got.len() < N as usize {
        got.push(
            take(
                &format!("item {} of {N} (timed-out gets took {early})", got.len()),
                &c,
            )
            .await,
        );
    }
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "every item exactly once");
    assert_eq!(ok("len", c.len().await), 0);
}

/// A consumer that gets part of a backlog in a quick loop, then stops asking,
/// does not sit on the rest: another consumer gets every one of them long
/// before any visibility timeout, and the first one's `len` counts
/// them as waiting (a transport may take items ahead, but gives back what
/// nobody asks for).
pub async fn unasked_items_reach_another_consumer(h: Harness) {
    const N: u32 = 300;
    const FIRST: u32 = 100;
    let name = h.name("unasked");
    let producer = h.bus().await;
    let Some(q) = queue_on::<u32>(&producer, &name).await else {
        return;
    };
    let quick_bus = h.bus().await;
    let quick = ok("queue", quick_bus.queue::<u32>(&name));
    let other = ok("queue", h.bus().await.queue::<u32>(&name));
    for round in 0..2 {
        let base = round * N;
        for n in base..base + N {
            ok("put", q.put(&n).await);
        }
        for want in base..base + FIRST {
            assert_eq!(take("a backlog item", &quick).await, want);
        }
        // The quick consumer stays open and asks for nothing more.
        if round == 1 {
            assert_eq!(
                ok("len", quick.len().await),
                (N - FIRST) as usize,
                "len counts the items a consumer has not been handed"
            );
        }
        // Given back items go to the head of the queue, so another consumer
        // may meet newer ones first: the set is what counts.
        let mut got = HashSet::new();
        for _ in FIRST..N {
            got.insert(take("an item the first consumer did not ask for", &other).await);
        }
        assert_eq!(got, (base + FIRST..base + N).collect::<HashSet<_>>());
    }
    drop(quick_bus);
}

/// `len` counts the items waiting, and goes down as they are taken.
pub async fn len_counts_waiting_items(h: Harness) {
    let bus = h.bus().await;
    let Some(q) = queue_on::<u32>(&bus, &h.name("len")).await else {
        return;
    };
    assert_eq!(ok("len", q.len().await), 0);
    assert!(ok("is_empty", q.is_empty().await));
    for n in 0..3 {
        ok("put", q.put(&n).await);
    }
    let other = ok("queue", h.bus().await.queue::<u32>(&h.name("len")));
    assert_eq!(
        ok("len", other.len().await),
        3,
        "len is the same from every bus"
    );
    take("an item", &q).await;
    assert_eq!(ok("len", q.len().await), 2);
}

/// `len` excludes items in flight (received, not yet acknowledged); a nack
/// makes the item wait again.
pub async fn len_excludes_in_flight_items(h: Harness) {
    let bus = h.bus().await;
    let Some(q) = acked_queue_on::<u32>(&bus, &h.name("inflight")).await else {
        return;
    };
    for n in 0..3 {
        ok("put", q.put(&n).await);
    }
    let delivery = ok("receive", within("receive", q.receive(WAIT)).await).expect("an item");
    assert_eq!(
        ok("len", q.len().await),
        2,
        "an in-flight item is not waiting"
    );
    ok("nack", delivery.nack().await);
    assert_eq!(ok("len", q.len().await), 3, "a nacked item waits again");
    let delivery = ok("receive", within("receive", q.receive(WAIT)).await).expect("an item");
    ok("ack", delivery.ack().await);
    assert_eq!(ok("len", q.len().await), 2, "an acked item is gone");
}

/// `ack` removes the item for good: it does not come back, even after the
/// visibility timeout.
pub async fn ack_removes_the_item(h: Harness) {
    let name = h.name("ack");
    let bus = h.bus().await;
    let Some(q) = acked_queue_on::<String>(&bus, &name).await else {
        return;
    };
    let q = q.visibility_timeout(Duration::from_millis(300));
    ok("put", q.put(&"job".to_owned()).await);
    let delivery = ok("receive", within("receive", q.receive(WAIT)).await).expect("the item");
    assert_eq!(delivery.value(), "job");
    assert_eq!(delivery.attempt(), 1);
    assert!(!delivery.is_redelivery());
    ok("ack", delivery.ack().await);
    // Waiting well past the visibility timeout: an acked item must not return.
    let other = ok("queue", h.bus().await.queue::<String>(&name));
    let again = ok(
        "receive",
        within("receive", other.receive(Duration::from_secs(1))).await,
    );
    assert!(
        again.is_none(),
        "an acked item came back: {:?}",
        again.map(|d| d.attempt())
    );
    assert_eq!(ok("len", q.len().await), 0);
}

/// `nack` puts the item back: the next receive (from another bus) gets it with
/// `attempt() == 2`.
pub async fn nack_redelivers_with_attempt_two(h: Harness) {
    let name = h.name("nack");
    let bus = h.bus().await;
    let Some(q) = acked_queue_on::<Point>(&bus, &name).await else {
        return;
    };
    ok("put", q.put(&Point { x: 1, y: 1 }).await);
    let first = ok("receive", within("receive", q.receive(WAIT)).await).expect("the item");
    assert_eq!(first.attempt(), 1);
    ok("nack", first.nack().await);
    let other = ok("queue", h.bus().await.queue::<Point>(&name));
    let second =
        ok("receive", within("redelivery", other.receive(WAIT)).await).expect("the redelivery");
    assert_eq!(*second.value(), Point { x: 1, y: 1 });
    assert_eq!(
        second.attempt(),
        2,
        "a nacked item's second delivery is attempt 2"
    );
    assert!(second.is_redelivery());
    ok("ack", second.ack().await);
}

/// An item that came back (nacked twice) is taken by `get` like any other,
/// whatever a transport stores with it to count its attempts.
pub async fn an_item_that_came_back_is_got_like_any_other(h: Harness) {
    let name = h.name("back.get");
    let bus = h.bus().await;
    let Some(q) = acked_queue_on::<Point>(&bus, &name).await else {
        return;
    };
    ok("put", q.put(&Point { x: 2, y: 3 }).await);
    for attempt in 1..=2 {
        let delivery = ok("receive", within("receive", q.receive(WAIT)).await).expect("the item");
        assert_eq!(delivery.attempt(), attempt);
        ok("nack", delivery.nack().await);
    }
    let other = ok("queue", h.bus().await.queue::<Point>(&name));
    assert_eq!(
        take("the item that came back", &other).await,
        Point { x: 2, y: 3 }
    );
    assert_eq!(ok("len", other.len().await), 0);
}

/// Dropping a delivery unacknowledged puts the item back at once (well before
/// the default 30 s visibility timeout).
pub async fn dropped_delivery_comes_back(h: Harness) {
    let name = h.name("dropped");
    let bus = h.bus().await;
    let Some(q) = acked_queue_on::<u32>(&bus, &name).await else {
        return;
    };
    ok("put", q.put(&5).await);
    let first = ok("receive", within("receive", q.receive(WAIT)).await).expect("the item");
    drop(first);
    let other = ok("queue", h.bus().await.queue::<u32>(&name));
    let again = ok(
        "receive",
        within("the dropped item", other.receive(WAIT)).await,
    )
    .expect("a dropped delivery's item must come back");
    assert_eq!(*again, 5);
    assert_eq!(again.attempt(), 2);
    ok("ack", again.ack().await);
}

/// An item received and neither acked nor nacked comes back after the
/// visibility timeout (300 ms here), not before, for another consumer.
pub async fn unacked_item_comes_back_after_visibility_timeout(h: Harness) {
    let name = h.name("visibility");
    let visibility = Duration::from_millis(300);
    let bus = h.bus().await;
    let Some(q) = acked_queue_on::<u32>(&bus, &name).await else {
        return;
    };
    let q = q.visibility_timeout(visibility);
    ok("put", q.put(&8).await);
    let held = ok("receive", within("receive", q.receive(WAIT)).await).expect("the item");
    let received = Instant::now();
    let other = ok("queue", h.bus().await.queue::<u32>(&name));
    let again = ok(
        "receive",
        within("the timed-out item", other.receive(WAIT)).await,
    )
    .expect("an unacked item must come back after the visibility timeout");
    let elapsed = received.elapsed();
    assert_eq!(*again, 8);
    assert_eq!(again.attempt(), 2);
    assert!(
        elapsed + Duration::from_millis(50) >= visibility,
        "the item came back after {elapsed:?}, before the visibility timeout {visibility:?}"
    );
    ok("ack", again.ack().await);
    drop(held);
}

/// An item that does not decode as the queue's type does not stop a consumer:
/// `get` moves it to `_dead.<queue>` (readable there raw, with the error in a
/// header), counts it, and returns the next good item within the same wait.
pub async fn undecodable_queue_item_goes_to_dead_letter_on_get(h: Harness) {
    let name = h.name("typed");
    let bus = h.bus().await;
    let Some(points) = queue_on::<Point>(&bus, &name).await else {
        return;
    };
    let strings = ok("queue", h.bus().await.queue::<String>(&name));
    ok("put", strings.put(&"not a point".to_owned()).await);
    ok("put", points.put(&Point { x: 2, y: 3 }).await);
    let before = bus.stats().dead_lettered;
    match within("the good item", points.get(WAIT)).await {
        Ok(Some(point)) => assert_eq!(point, Point { x: 2, y: 3 }),
        other => panic!("get must skip the bad item and return the good one, got {other:?}"),
    }
    assert_eq!(
        bus.stats().dead_lettered - before,
        1,
        "the skipped item is counted"
    );
    check_dead_letter(&bus, &name, "not a point").await;
}

/// The same for acknowledged receive: the bad item moves to `_dead.<queue>`,
/// is not redelivered on the queue itself, and `receive` returns the next good
/// item, or `Ok(None)` at its timeout when only bad items came.
pub async fn undecodable_queue_item_goes_to_dead_letter_on_receive(h: Harness) {
    let name = h.name("typed");
    let bus = h.bus().await;
    let Some(points) = acked_queue_on::<Point>(&bus, &name).await else {
        return;
    };
    let points = points.visibility_timeout(Duration::from_millis(300));
    let strings = ok("queue", h.bus().await.queue::<String>(&name));
    ok("put", strings.put(&"not a point".to_owned()).await);
    let before = bus.stats().dead_lettered;
    match within("the wait", points.receive(Duration::from_millis(200))).await {
        Ok(None) => {}
        other => panic!("a queue holding only a bad item must give Ok(None), got {other:?}"),
    }
    assert_eq!(
        bus.stats().dead_lettered - before,
        1,
        "the skipped item is counted"
    );
    check_dead_letter(&bus, &name, "not a point").await;
    ok("put", strings.put(&"still not a point".to_owned()).await);
    ok("put", points.put(&Point { x: 4, y: 5 }).await);
    let good = ok(
        "receive",
        within("the good item", points.receive(WAIT)).await,
    )
    .expect("the good item");
    assert_eq!(
        *good,
        Point { x: 4, y: 5 },
        "receive must skip the bad item and return the good one"
    );
    ok("ack", good.ack().await);
    check_dead_letter(&bus, &name, "still not a point").await;
}

/// The dead-letter queue of `queue` holds exactly one raw item whose payload is
/// the JSON of `text`, with the decode error in a `busbar-error` header.
async fn check_dead_letter(bus: &Bus, queue: &str, text: &str) {
    let dead_name = format!("_dead.{queue}");
    let dead = ok("dead-letter queue", bus.queue::<Message>(&dead_name));
    let raw = ok(
        "dead-letter get",
        within("the dead letter", dead.get(WAIT)).await,
    )
    .expect("the bad item must be in the dead-letter queue, not lost");
    let payload: String = ok("dead-letter payload", raw.decode());
    assert_eq!(
        payload, text,
        "the dead letter keeps the payload as it was put"
    );
    assert!(
        raw.header("busbar-error").is_some(),
        "the dead letter must say why: headers {:?}",
        raw.headers()
    );
    let dead = ok("dead-letter name", Name::new(&dead_name));
    assert_eq!(
        ok("len", bus.transport().queue_len(&dead).await),
        0,
        "exactly one dead letter"
    );
    let original = ok("queue name", Name::new(queue));
    assert_eq!(
        ok("len", bus.transport().queue_len(&original).await),
        0,
        "the bad item left the queue"
    );
}

/// Competing acknowledged consumers: 4 consumers on separate buses `receive`
/// and `ack` 1,000 items; each item is handed out once (first attempt) and none
/// is left.
pub async fn competing_receivers_ack_each_item_once(h: Harness) {
    const N: u32 = 1_000;
    let name = h.name("compete.acked");
    let producer = h.bus().await;
    let Some(q) = acked_queue_on::<u32>(&producer, &name).await else {
        return;
    };
    for n in 0..N {
        ok("put", q.put(&n).await);
    }
    let taken = Arc::new(AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let c = ok("queue", h.bus().await.queue::<u32>(&name));
        let taken = taken.clone();
        consumers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while taken.load(Ordering::SeqCst) < N as usize {
                if let Some(delivery) = ok("receive", c.receive(Duration::from_millis(100)).await) {
                    assert_eq!(delivery.attempt(), 1, "item {} handed out twice", *delivery);
                    mine.push(*delivery);
                    ok("ack", delivery.ack().await);
                    taken.fetch_add(1, Ordering::SeqCst);
                }
            }
            mine
        }));
    }
    let mut seen = Vec::new();
    within_long("4 consumers to receive 1,000 items", async {
        for consumer in consumers {
            seen.extend(ok("consumer", consumer.await));
        }
    })
    .await;
    seen.sort_unstable();
    assert_eq!(seen, (0..N).collect::<Vec<_>>(), "every item exactly once");
    assert_eq!(ok("len", q.len().await), 0);
}

/// A consumer blocked in `get` when its bus shuts down stops taking work: it
/// returns `Closed` promptly, and an item put afterwards goes to a live consumer.
///
/// Two gets wait on the doomed bus; an item put from another bus wakes one of
/// them, which shows the gets are parked in the transport (there is no other
/// signal for that). The bus then shuts down while the other get waits.
pub async fn shutdown_stops_a_blocked_consumer(h: Harness) {
    let name = h.name("stopping");
    let doomed = h.bus().await;
    let live = h.bus().await;
    let Some(blocked) = queue_on::<u32>(&doomed, &name).await else {
        return;
    };
    let (tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..2 {
        let (blocked, tx) = (blocked.clone(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(blocked.get(Duration::from_secs(30)).await);
        });
    }
    let q = ok("queue", live.queue::<u32>(&name));
    ok("put", q.put(&1).await);
    let first = within("a waiting get to take the item", done.recv()).await;
    assert_eq!(ok("get", first.expect("a get result")), Some(1));

    ok("shutdown", doomed.shutdown().await);
    match within("the blocked get to end", done.recv()).await {
        Some(Err(Error::Closed)) => {}
        other => panic!("a get blocked at shutdown must return Closed, got {other:?}"),
    }
    ok("put", q.put(&2).await);
    assert_eq!(take("the item, left for the live consumer", &q).await, 2);
}

/// Stats: `redelivered` counts items handed out again after a nack.
pub async fn redelivery_is_counted(h: Harness) {
    let name = h.name("recount");
    let bus = h.bus().await;
    let Some(q) = acked_queue_on::<u32>(&bus, &name).await else {
        return;
    };
    let before = bus.stats().redelivered;
    ok("put", q.put(&1).await);
    let first = ok("receive", within("receive", q.receive(WAIT)).await).expect("the item");
    ok("nack", first.nack().await);
    let second = ok("receive", within("receive", q.receive(WAIT)).await).expect("the redelivery");
    assert_eq!(second.attempt(), 2);
    ok("ack", second.ack().await);
    assert_eq!(
        bus.stats().redelivered - before,
        1,
        "stats().redelivered must count the redelivery"
    );
}

/// Stats: `enqueued` counts puts on the producer's bus, `dequeued` takes on the
/// consumer's.
pub async fn queue_stats_move(h: Harness) {
    let name = h.name("stats");
    let producer = h.bus().await;
    let consumer = h.bus().await;
    let Some(q) = queue_on::<u32>(&producer, &name).await else {
        return;
    };
    let c = ok("queue", consumer.queue::<u32>(&name));
    let (enqueued, dequeued) = (producer.stats().enqueued, consumer.stats().dequeued);
    for n in 0..3 {
        ok("put", q.put(&n).await);
    }
    for _ in 0..3 {
        take("an item", &c).await;
    }
    assert_eq!(producer.stats().enqueued - enqueued, 3);
    assert_eq!(consumer.stats().dequeued - dequeued, 3);
}
