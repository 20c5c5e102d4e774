//! Pub/sub: fan-out, topics and patterns, live-on-return, order, unsubscribe,
//! slow subscribers, undecodable payloads, typed events and handlers.

use crate::{has_patterns, next_ok, ok, within, within_long, Harness};
use busbar_core::{Bus, Error, Event, Message, Pattern, SubscribeOptions, Subscription};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A small structured payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Horizontal.
    pub x: i64,
    /// Vertical.
    pub y: i64,
}

/// A typed event with a declared topic (the typed-API tests).
///
/// Its topic is fixed, so the event carries the test's unique `run` name and the
/// tests ignore events of other runs sharing a broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The test run that published it.
    pub run: String,
    /// Order number.
    pub id: u64,
}

impl Event for OrderPlaced {
    const TOPIC: &'static str = "busbar.conformance.order.placed";
}

/// A second typed event, used by the handler (`Bus::on`) test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderShipped {
    /// The test run that published it.
    pub run: String,
    /// Order number.
    pub id: u64,
}

impl Event for OrderShipped {
    const TOPIC: &'static str = "busbar.conformance.order.shipped";
}

/// Reads `sub` until the value `last` arrives and returns every value before it
/// (`last` excluded). Fails on an error item or if `last` does not come in time.
async fn until<T>(what: &str, sub: &mut Subscription<T>, last: &T) -> Vec<T>
where
    T: busbar_core::FromEnvelope + PartialEq + std::fmt::Debug,
{
    let mut before = Vec::new();
    loop {
        let value = next_ok(what, sub).await;
        if value == *last {
            return before;
        }
        before.push(value);
    }
}

/// Subscribes to a wildcard `pattern`; `None` (after checking the transport
/// answers `Unsupported`) when it declares no pattern support.
async fn pattern_sub<T: busbar_core::FromEnvelope>(
    bus: &Bus,
    pattern: &str,
) -> Option<Subscription<T>> {
    if !has_patterns(bus, pattern).await {
        return None;
    }
    Some(ok(
        "subscribing to a pattern",
        bus.subscribe_to::<T>(pattern).await,
    ))
}

/// A subscriber receives an event published after `subscribe` returned.
pub async fn smoke_publish_subscribe(h: Harness) {
    let bus = h.bus().await;
    let topic = h.name("smoke");
    let mut sub = bus.subscribe_to::<String>(&topic).await.unwrap();
    bus.publish_to(&topic, "hello").await.unwrap();
    let got = within("the event", sub.next()).await.unwrap().unwrap();
    assert_eq!(got, "hello");
}

/// At most once: publishing with no subscriber is not an error, and the event
/// is not kept for a later subscriber.
pub async fn publish_without_subscribers_is_ok(h: Harness) {
    let topic = h.name("nobody");
    let publisher = h.bus().await;
    ok(
        "publish to nobody",
        publisher.publish_to(&topic, &1u32).await,
    );
    let bus = h.bus().await;
    let mut sub = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
    ok("publish", publisher.publish_to(&topic, &2u32).await);
    assert_eq!(
        next_ok("the later event", &mut sub).await,
        2,
        "events are not stored for later subscribers"
    );
}

/// Fan-out: every live subscription (here on three separate buses) gets each
/// event exactly once.
pub async fn fan_out_to_every_subscriber(h: Harness) {
    let topic = h.name("fanout");
    let publisher = h.bus().await;
    let mut subs = Vec::new();
    let mut buses = Vec::new();
    for _ in 0..3 {
        let bus = h.bus().await;
        subs.push(ok("subscribe", bus.subscribe_to::<String>(&topic).await));
        buses.push(bus);
    }
    for event in ["a", "b", "end"] {
        ok("publish", publisher.publish_to(&topic, event).await);
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        let got = until(&format!("subscriber {i}"), sub, &"end".to_owned()).await;
        assert_eq!(
            got,
            ["a", "b"],
            "subscriber {i} must get each event once, in order"
        );
    }
}

/// A subscription on the publishing bus itself is a live subscription like any other.
pub async fn publisher_receives_its_own_events(h: Harness) {
    let topic = h.name("self");
    let bus = h.bus().await;
    let other = h.bus().await;
    let mut mine = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
    let mut theirs = ok("subscribe", other.subscribe_to::<u32>(&topic).await);
    ok("publish", bus.publish_to(&topic, &7u32).await);
    ok("publish", bus.publish_to(&topic, &8u32).await);
    assert_eq!(until("own subscription", &mut mine, &8).await, [7]);
    assert_eq!(until("other bus", &mut theirs, &8).await, [7]);
}

/// Topic isolation: a subscription to a topic gets nothing published on other
/// topics, including ones sharing its prefix (`x.orders2`, `x.orders.eu`).
pub async fn topics_are_isolated(h: Harness) {
    let sub_bus = h.bus().await;
    let publisher = h.bus().await;
    let orders = h.name("orders");
    let mut sub = ok("subscribe", sub_bus.subscribe_to::<String>(&orders).await);
    let mut other_sub = ok(
        "subscribe",
        sub_bus.subscribe_to::<String>(&h.name("payments")).await,
    );
    for (topic, text) in [
        (h.name("payments"), "payment"),
        (h.name("orders2"), "longer topic"),
        (h.name("orders.eu"), "deeper topic"),
        (h.name("order"), "shorter topic"),
        (orders.clone(), "end"),
    ] {
        ok("publish", publisher.publish_to(&topic, text).await);
    }
    let got = until("the orders subscription", &mut sub, &"end".to_owned()).await;
    assert!(got.is_empty(), "events of other topics leaked in: {got:?}");
    assert_eq!(
        next_ok("the payments subscription", &mut other_sub).await,
        "payment"
    );
}

/// Patterns: `*` matches exactly one segment, at the end.
pub async fn star_matches_exactly_one_segment(h: Harness) {
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let Some(mut sub) = pattern_sub::<Message>(&bus, &h.name("orders.*")).await else {
        return;
    };
    let expected = [h.name("orders.created"), h.name("orders.paid")];
    for topic in [
        h.name("orders.created"),
        h.name("orders"),
        h.name("orders.eu.created"),
        h.name("ordersx.created"),
        h.name("other.created"),
        h.name("orders.paid"),
    ] {
        ok("publish", publisher.publish_to(&topic, &topic).await);
    }
    for want in expected {
        let got = next_ok("a matching event", &mut sub).await;
        assert_eq!(
            got.topic().as_str(),
            want,
            "only one-segment matches may arrive, in order"
        );
        assert_eq!(ok("decode", got.decode::<String>()), want);
    }
}

/// Patterns: `*` in the middle matches one segment there, and the rest must match.
pub async fn star_matches_a_middle_segment(h: Harness) {
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let Some(mut sub) = pattern_sub::<String>(&bus, &h.name("*.created")).await else {
        return;
    };
    for topic in [
        h.name("orders.created"),
        h.name("orders.deleted"),
        h.name("a.b.created"),
        h.name("created"),
        h.name("orders.created.late"),
        h.name("users.created"),
    ] {
        ok("publish", publisher.publish_to(&topic, &topic).await);
    }
    assert_eq!(
        next_ok("first match", &mut sub).await,
        h.name("orders.created")
    );
    assert_eq!(
        next_ok("second match", &mut sub).await,
        h.name("users.created")
    );
}

/// Patterns: `>` matches one or more trailing segments, and never zero.
pub async fn gt_matches_one_or_more_trailing_segments(h: Harness) {
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let Some(mut sub) = pattern_sub::<String>(&bus, &h.name("sensors.>")).await else {
        return;
    };
    let matching = [h.name("sensors.a"), h.name("sensors.a.b.c")];
    for topic in [
        h.name("sensors.a"),
        h.name("sensors"),
        h.name("sensorsx.a"),
        h.name("other.sensors.a"),
        h.name("sensors.a.b.c"),
    ] {
        ok("publish", publisher.publish_to(&topic, &topic).await);
    }
    for want in matching {
        assert_eq!(next_ok("a matching event", &mut sub).await, want);
    }
    // Nothing else came in between: a sentinel that matches arrives next.
    let end = h.name("sensors.end");
    ok("publish", publisher.publish_to(&end, &end).await);
    assert_eq!(next_ok("the sentinel", &mut sub).await, end);
}

/// Patterns mixing `*` and `>` (`p.*.b.>`) match exactly the topics both rules allow.
pub async fn mixed_wildcards_match_exactly(h: Harness) {
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let Some(mut sub) = pattern_sub::<String>(&bus, &h.name("p.*.b.>")).await else {
        return;
    };
    let matching = [h.name("p.a.b.c"), h.name("p.x.b.c.d")];
    for topic in [
        h.name("p.a.b.c"),
        h.name("p.a.b"),
        h.name("p.a.c.d"),
        h.name("p.a.x.b.c"),
        h.name("p.b.c"),
        h.name("q.a.b.c"),
        h.name("p.x.b.c.d"),
    ] {
        ok("publish", publisher.publish_to(&topic, &topic).await);
    }
    for want in matching {
        assert_eq!(next_ok("a matching event", &mut sub).await, want);
    }
    let end = h.name("p.end.b.end");
    ok("publish", publisher.publish_to(&end, &end).await);
    assert_eq!(
        next_ok("the sentinel", &mut sub).await,
        end,
        "a non-matching topic got through"
    );
}

/// Overlapping subscriptions on one bus (`p.>`, `p.a.*` and the same `p.>`
/// twice) each get a matching event exactly once.
pub async fn overlapping_subscriptions_on_one_bus_each_deliver_once(h: Harness) {
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let Some(mut wide) = pattern_sub::<String>(&bus, &h.name("p.>")).await else {
        return;
    };
    let mut narrow = ok(
        "subscribe",
        bus.subscribe_to::<String>(&h.name("p.a.*")).await,
    );
    let mut twin = ok(
        "subscribe",
        bus.subscribe_to::<String>(&h.name("p.>")).await,
    );
    let end = "end".to_owned();
    ok(
        "publish",
        publisher.publish_to(&h.name("p.a.b"), "hit").await,
    );
    ok(
        "publish",
        publisher.publish_to(&h.name("p.a.end"), &end).await,
    );
    for (what, sub) in [
        ("p.>", &mut wide),
        ("p.a.*", &mut narrow),
        ("second p.>", &mut twin),
    ] {
        assert_eq!(
            until(what, sub, &end).await,
            ["hit"],
            "{what} must get the event exactly once"
        );
    }
}

/// A literal subscription and a `>` subscription on one bus both match a topic:
/// each gets the event exactly once.
pub async fn literal_and_gt_subscriptions_each_deliver_once(h: Harness) {
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let topic = h.name("x.y");
    let Some(mut wide) = pattern_sub::<u32>(&bus, &h.name("x.>")).await else {
        return;
    };
    let mut literal = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
    for n in [1u32, 2, 3] {
        ok("publish", publisher.publish_to(&topic, &n).await);
    }
    assert_eq!(until("x.>", &mut wide, &3).await, [1, 2]);
    assert_eq!(until("literal", &mut literal, &3).await, [1, 2]);
}

/// Live on return: an event published by another bus right after `subscribe`
/// returned is delivered, with no sleep in between (repeated on fresh
/// subscribers to catch slow joiners).
pub async fn live_on_return_across_buses(h: Harness) {
    let publisher = h.bus().await;
    for round in 0..20 {
        let topic = h.name(&format!("live{round}"));
        let bus = h.bus().await;
        let mut sub = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
        ok("publish", publisher.publish_to(&topic, &round).await);
        assert_eq!(next_ok(&format!("round {round}"), &mut sub).await, round);
    }
}

/// Live on return holds for wildcard subscriptions too.
pub async fn pattern_subscription_live_on_return(h: Harness) {
    let publisher = h.bus().await;
    for round in 0..10u32 {
        let bus = h.bus().await;
        let Some(mut sub) = pattern_sub::<u32>(&bus, &h.name(&format!("live{round}.*"))).await
        else {
            return;
        };
        ok(
            "publish",
            publisher
                .publish_to(&h.name(&format!("live{round}.x")), &round)
                .await,
        );
        assert_eq!(next_ok(&format!("round {round}"), &mut sub).await, round);
    }
}

/// Order: 10,000 events from one publisher arrive at a subscription (on another
/// bus) complete and in publish order.
pub async fn order_per_publisher_10k(h: Harness) {
    const N: u32 = 10_000;
    let topic = h.name("order");
    let sub_bus = h.bus().await;
    let publisher = h.bus().await;
    let options = SubscribeOptions {
        capacity: N as usize + 16,
    };
    let mut sub: Subscription<u32> = ok(
        "subscribe",
        sub_bus
            .subscribe_with(ok("pattern", Pattern::new(&topic)), options)
            .await,
    );
    let publishing = tokio::spawn(async move {
        for n in 0..N {
            ok("publish", publisher.publish_to(&topic, &n).await);
        }
    });
    within_long("10,000 events in order", async {
        for want in 0..N {
            match sub.next().await {
                Some(Ok(got)) => assert_eq!(got, want, "events must arrive in publish order"),
                other => panic!("event {want}: expected it, got {other:?}"),
            }
        }
    })
    .await;
    ok("publisher", publishing.await);
}

/// Order holds across topics: one publisher's events on eight topics reach a
/// wildcard subscription in publish order (on a sharded broker, topics live
/// on different nodes; the order must not depend on that).
pub async fn order_per_publisher_across_topics(h: Harness) {
    const N: u32 = 2_000;
    const TOPICS: u32 = 8;
    let sub_bus = h.bus().await;
    let publisher = h.bus().await;
    let options = SubscribeOptions {
        capacity: N as usize + 16,
    };
    let pattern = h.name("spread.*");
    if !has_patterns(&sub_bus, &pattern).await {
        return;
    }
    let pattern = ok("pattern", Pattern::new(&pattern));
    let mut sub: Subscription<u32> =
        ok("subscribe", sub_bus.subscribe_with(pattern, options).await);
    let topics: Vec<String> = (0..TOPICS)
        .map(|t| h.name(&format!("spread.t{t}")))
        .collect();
    let publishing = tokio::spawn(async move {
        for n in 0..N {
            let topic = &topics[(n % TOPICS) as usize];
            ok("publish", publisher.publish_to(topic, &n).await);
        }
    });
    within_long("events on eight topics in order", async {
        for want in 0..N {
            match sub.next().await {
                Some(Ok(got)) => assert_eq!(
                    got, want,
                    "one publisher's events must arrive in publish order, whatever their topic"
                ),
                other => panic!("event {want}: expected it, got {other:?}"),
            }
        }
    })
    .await;
    ok("publisher", publishing.await);
}

/// Order holds per publisher when two publishers interleave on one topic.
pub async fn order_per_publisher_with_two_publishers(h: Harness) {
    const N: u32 = 1_000;
    let topic = h.name("order2");
    let sub_bus = h.bus().await;
    let mut sub = ok(
        "subscribe",
        sub_bus.subscribe_to::<(u32, u32)>(&topic).await,
    );
    let mut tasks = Vec::new();
    for p in 0..2u32 {
        let bus = h.bus().await;
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..N {
                ok("publish", bus.publish_to(&topic, &(p, n)).await);
            }
        }));
    }
    let mut next = [0u32; 2];
    within_long("both publishers' events", async {
        while next != [N, N] {
            let (p, n) = next_ok("an event", &mut sub).await;
            assert_eq!(
                n, next[p as usize],
                "publisher {p}'s events must arrive in order"
            );
            next[p as usize] += 1;
        }
    })
    .await;
    for task in tasks {
        ok("publisher", task.await);
    }
}

/// Dropping a subscription unsubscribes: a new subscription on the same bus
/// gets only the later events, and the dropped one is no longer fed (the bus's
/// `delivered` counter grows by the new subscription's events only).
pub async fn drop_unsubscribes(h: Harness) {
    let topic = h.name("drop");
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let mut first = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
    ok("publish", publisher.publish_to(&topic, &1u32).await);
    assert_eq!(next_ok("the first event", &mut first).await, 1);
    drop(first);

    let mut second = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
    let before = bus.stats().delivered;
    ok("publish", publisher.publish_to(&topic, &2u32).await);
    ok("publish", publisher.publish_to(&topic, &3u32).await);
    assert_eq!(until("the new subscription", &mut second, &3).await, [2]);
    let delivered = bus.stats().delivered - before;
    assert_eq!(
        delivered, 2,
        "only the live subscription may be fed after a drop (delivered grew by {delivered})"
    );
}

/// Dropping a [`Listener`](busbar_core::Listener) stops its handler: events
/// published afterwards are not handled.
pub async fn dropped_listener_stops_handling(h: Harness) {
    let topic = h.name("listener");
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let listener = {
        let handled = handled.clone();
        ok(
            "on_pattern",
            bus.on_pattern(&topic, move |n: u32| {
                handled.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                async move {
                    let _ = tx.send(n);
                }
            })
            .await,
        )
    };
    ok("publish", publisher.publish_to(&topic, &1u32).await);
    assert_eq!(within("the handler", rx.recv()).await, Some(1));
    drop(listener);

    let mut witness = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
    ok("publish", publisher.publish_to(&topic, &2u32).await);
    ok("publish", publisher.publish_to(&topic, &3u32).await);
    assert_eq!(until("the witness", &mut witness, &3).await, [2]);
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "a dropped listener must not handle later events"
    );
}

/// Slow subscriber: with a small buffer, a subscriber that does not read is told
/// exactly how many events it missed (`Lagged`), `stats().lagged` counts them,
/// its buffer stays bounded, and the subscription keeps running.
pub async fn slow_subscriber_is_told_what_it_missed(h: Harness) {
    const CAPACITY: usize = 8;
    const N: u64 = 200;
    let topic = h.name("slow");
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let pattern = ok("pattern", Pattern::new(&topic));
    let mut slow: Subscription<u64> = ok(
        "subscribe",
        bus.subscribe_with(pattern, SubscribeOptions { capacity: CAPACITY })
            .await,
    );
    // A fast subscription on the same bus tells when every event has arrived.
    let mut witness = ok("subscribe", bus.subscribe_to::<u64>(&topic).await);
    let lagged_before = bus.stats().lagged;
    for n in 0..N {
        ok("publish", publisher.publish_to(&topic, &n).await);
    }
    for want in 0..N {
        assert_eq!(next_ok("the witness", &mut witness).await, want);
    }

    let (mut received, mut missed, mut last) = (0u64, 0u64, None::<u64>);
    within("the slow subscriber to account for every event", async {
        while received + missed < N {
            match slow.next().await {
                Some(Ok(n)) => {
                    assert!(
                        last.is_none_or(|l| n > l),
                        "events out of order: {n} after {last:?}"
                    );
                    last = Some(n);
                    received += 1;
                }
                Some(Err(Error::Lagged { missed: m })) => {
                    assert!(m > 0, "Lagged must report at least one missed event");
                    missed += m;
                }
                other => panic!("expected an event or Lagged, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(
        received + missed,
        N,
        "received + missed must equal what was published"
    );
    assert!(
        missed > 0,
        "a full buffer of {CAPACITY} cannot hold {N} events: some must be reported missed"
    );
    assert!(
        received as usize <= CAPACITY,
        "the buffer held {received} events, more than its capacity {CAPACITY}: memory grows"
    );
    assert_eq!(
        bus.stats().lagged - lagged_before,
        missed,
        "stats().lagged must count what was missed"
    );

    // The subscription survives its lag.
    ok("publish", publisher.publish_to(&topic, &N).await);
    assert_eq!(next_ok("an event after the lag", &mut slow).await, N);
}

/// A payload that does not decode as the subscriber's type is an `Err(Codec)`
/// item (and counted); the next good event still arrives.
pub async fn undecodable_event_is_reported_and_stream_continues(h: Harness) {
    let topic = h.name("points");
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let mut sub = ok("subscribe", bus.subscribe_to::<Point>(&topic).await);
    let errors_before = bus.stats().decode_errors;
    ok("publish", publisher.publish_to(&topic, "not a point").await);
    ok(
        "publish",
        publisher.publish_to(&topic, &Point { x: 1, y: 2 }).await,
    );
    match within("the bad event", sub.next()).await {
        Some(Err(Error::Codec(_))) => {}
        other => panic!("a payload of the wrong type must be Err(Codec), got {other:?}"),
    }
    assert_eq!(
        next_ok("the good event", &mut sub).await,
        Point { x: 1, y: 2 }
    );
    assert_eq!(
        bus.stats().decode_errors - errors_before,
        1,
        "decode errors must be counted"
    );
}

/// A handler (`on_pattern`) skips an event that does not decode (counting it)
/// and keeps handling the next ones.
pub async fn undecodable_event_does_not_stop_a_handler(h: Harness) {
    let topic = h.name("points");
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let errors_before = bus.stats().decode_errors;
    let _listener = ok(
        "on_pattern",
        bus.on_pattern(&topic, move |p: Point| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(p);
            }
        })
        .await,
    );
    ok("publish", publisher.publish_to(&topic, &[1, 2, 3]).await);
    ok(
        "publish",
        publisher.publish_to(&topic, &Point { x: 3, y: 4 }).await,
    );
    assert_eq!(
        within("the good event", rx.recv()).await,
        Some(Point { x: 3, y: 4 })
    );
    assert_eq!(
        bus.stats().decode_errors - errors_before,
        1,
        "the bad event must be counted"
    );
}

/// Raw subscriptions yield [`Message`]s carrying the topic and the payload as sent.
pub async fn raw_messages_carry_topic_and_payload(h: Harness) {
    let topic = h.name("raw");
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let mut sub = ok("subscribe", bus.subscribe_pattern(&topic).await);
    ok(
        "publish",
        publisher.publish_to(&topic, &Point { x: 5, y: 6 }).await,
    );
    let message = next_ok("the message", &mut sub).await;
    assert_eq!(message.topic().as_str(), topic);
    assert_eq!(
        ok("decode", message.decode::<Point>()),
        Point { x: 5, y: 6 }
    );
    let json: serde_json::Value = ok("json payload", serde_json::from_slice(message.payload()));
    assert_eq!(json, serde_json::json!({"x": 5, "y": 6}));
}

/// Typed events: `publish`/`subscribe` of a type implementing [`Event`] use its
/// declared topic, and events arrive in order.
pub async fn typed_event_publish_subscribe(h: Harness) {
    let run = h.name("typed");
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let mut sub = ok("subscribe", bus.subscribe::<OrderPlaced>().await);
    assert_eq!(sub.pattern().as_str(), OrderPlaced::TOPIC);
    let mut raw = ok("subscribe", bus.subscribe_pattern(OrderPlaced::TOPIC).await);
    for id in 1..=3 {
        let event = OrderPlaced {
            run: run.clone(),
            id,
        };
        ok("publish", publisher.publish(&event).await);
    }
    let mut ids = Vec::new();
    within("three typed events", async {
        while ids.len() < 3 {
            let event = next_ok("a typed event", &mut sub).await;
            if event.run == run {
                ids.push(event.id);
            }
        }
    })
    .await;
    assert_eq!(ids, [1, 2, 3]);
    let message = next_ok("the raw form", &mut raw).await;
    assert_eq!(
        message.topic().as_str(),
        OrderPlaced::TOPIC,
        "typed events travel on their TOPIC"
    );
}

/// The handler form `Bus::on` receives typed events.
pub async fn typed_event_handler_on(h: Harness) {
    let run = h.name("on");
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _listener = ok(
        "on",
        bus.on(move |event: OrderShipped| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
                Ok::<(), String>(())
            }
        })
        .await,
    );
    for id in [10, 11] {
        ok(
            "publish",
            publisher
                .publish(&OrderShipped {
                    run: run.clone(),
                    id,
                })
                .await,
        );
    }
    let mut ids = Vec::new();
    within("two handled events", async {
        while ids.len() < 2 {
            let event = rx.recv().await.expect("the handler channel closed");
            if event.run == run {
                ids.push(event.id);
            }
        }
    })
    .await;
    assert_eq!(
        ids,
        [10, 11],
        "a handler sees events one at a time, in order"
    );
}

/// Stats: `published` counts on the publishing bus and `delivered` on the
/// subscribing bus.
pub async fn pubsub_stats_move(h: Harness) {
    let topic = h.name("stats");
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let mut sub = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
    let (published, delivered) = (publisher.stats().published, bus.stats().delivered);
    for n in 0..3u32 {
        ok("publish", publisher.publish_to(&topic, &n).await);
    }
    assert_eq!(until("the events", &mut sub, &2).await, [0, 1]);
    assert_eq!(
        publisher.stats().published - published,
        3,
        "published must count each publish"
    );
    assert_eq!(
        bus.stats().delivered - delivered,
        3,
        "delivered must count each delivery"
    );
}
