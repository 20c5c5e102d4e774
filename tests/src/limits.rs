//! Limits and edge cases: large and oversized payloads, zero timeouts, and
//! re-entrant use of the bus from inside handlers.

use crate::{next_ok, ok, within, Harness, WAIT};
use busbar_core::{Error, Fault, DEFAULT_MAX_PAYLOAD};
use std::time::Duration;
use tokio::time::Instant;

/// A payload of 1 MiB travels intact as an event, a queue item and an RPC
/// argument and answer.
pub async fn large_payload_round_trips(h: Harness) {
    let big: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let bus = h.bus().await;
    let other = h.bus().await;
    let topic = h.name("big");
    let mut sub = ok("subscribe", bus.subscribe_to::<String>(&topic).await);
    ok("publish", other.publish_to(&topic, &big).await);
    assert!(
        next_ok("the big event", &mut sub).await == big,
        "the big event arrived changed"
    );
    if crate::has_queues(&bus, &topic).await {
        let q = ok("queue", other.queue::<String>(&topic));
        ok("put", q.put(&big).await);
        let got = ok(
            "get",
            within("get", ok("queue", bus.queue::<String>(&topic)).get(WAIT)).await,
        );
        assert!(got.as_ref() == Some(&big), "the big item arrived changed");
    }
    if crate::has_rpc(&bus, &topic).await {
        let _provider = ok(
            "expose",
            bus.expose(&topic, |s: String| async move {
                Ok::<_, Fault>(s.chars().rev().collect::<String>())
            })
            .await,
        );
        let stub = ok("stub", other.stub::<String, String>(&topic)).timeout(WAIT);
        let answer = ok("call", within("the big call", stub.call(&big)).await);
        assert!(
            answer == big.chars().rev().collect::<String>(),
            "the big answer arrived changed"
        );
    }
}

/// A payload over the size limit is `Error::TooLarge` at the call, before
/// anything is sent (events, queue items and RPC arguments).
pub async fn oversized_payload_is_rejected_before_sending(h: Harness) {
    let huge = "x".repeat(DEFAULT_MAX_PAYLOAD + 1);
    let bus = h.bus().await;
    let topic = h.name("huge");
    let published = bus.stats().published;
    match bus.publish_to(&topic, &huge).await {
        Err(Error::TooLarge { size, limit }) => {
            assert!(size > limit, "TooLarge {{ size: {size}, limit: {limit} }}");
            assert_eq!(limit, DEFAULT_MAX_PAYLOAD);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(bus.stats().published, published, "nothing may be sent");
    let q = ok("queue", bus.queue::<String>(&topic));
    match q.put(&huge).await {
        Err(Error::TooLarge { .. }) => {}
        other => panic!("put: expected TooLarge, got {other:?}"),
    }
    let stub = ok("stub", bus.stub::<String, String>(&topic));
    match stub.call(&huge).await {
        Err(Error::TooLarge { .. }) => {}
        other => panic!("call: expected TooLarge, got {other:?}"),
    }
}

/// `get(Duration::ZERO)` polls: it returns `Ok(None)` at once on an empty queue
/// (it does not block forever, as a zero timeout means on some brokers) and
/// the item when one waits.
pub async fn get_with_zero_timeout_polls(h: Harness) {
    let bus = h.bus().await;
    if !crate::has_queues(&bus, &h.name("poll")).await {
        return;
    }
    let q = ok("queue", bus.queue::<u32>(&h.name("poll")));
    let started = Instant::now();
    assert_eq!(
        ok(
            "get",
            within("a zero-timeout get", q.get(Duration::ZERO)).await
        ),
        None
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a zero-timeout get must not wait"
    );
    ok("put", q.put(&3).await);
    assert_eq!(
        ok(
            "get",
            within("a zero-timeout get", q.get(Duration::ZERO)).await
        ),
        Some(3)
    );
    if crate::has_acks(&bus, &h.name("poll")).await {
        let started = Instant::now();
        let none = ok(
            "receive",
            within("a zero-timeout receive", q.receive(Duration::ZERO)).await,
        );
        assert!(none.is_none());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a zero-timeout receive must not wait"
        );
    }
}

/// An event handler may publish: the bus is re-entrant, and the event it
/// publishes is delivered.
pub async fn handler_can_publish(h: Harness) {
    let bus = h.bus().await;
    let inbox = h.name("inbox");
    let outbox = h.name("outbox");
    let mut replies = ok("subscribe", bus.subscribe_to::<u32>(&outbox).await);
    let _forwarder = {
        let bus = bus.clone();
        let outbox = outbox.clone();
        ok(
            "on_pattern",
            bus.clone()
                .on_pattern(&inbox, move |n: u32| {
                    let (bus, outbox) = (bus.clone(), outbox.clone());
                    async move { bus.publish_to(&outbox, &(n + 1)).await }
                })
                .await,
        )
    };
    for n in [1u32, 10, 100] {
        ok("publish", bus.publish_to(&inbox, &n).await);
        assert_eq!(next_ok("the forwarded event", &mut replies).await, n + 1);
    }
}

/// An RPC handler may call another method on its own bus (nested calls do not
/// deadlock), and may publish events.
pub async fn handler_can_call_another_method(h: Harness) {
    let bus = h.bus().await;
    let client = h.bus().await;
    let inner = h.name("inner");
    let outer = h.name("outer");
    let audit = h.name("audit");
    if !crate::has_rpc(&bus, &inner).await {
        return;
    }
    let served = bus
        .expose(&inner, |x: u32| async move { Ok::<_, Fault>(x * 2) })
        .await;
    let _inner = ok("expose", served);
    let mut audit_sub = ok("subscribe", client.subscribe_to::<u32>(&audit).await);
    let stub = ok("stub", bus.stub::<u32, u32>(&inner));
    let _outer = {
        let bus = bus.clone();
        let audit = audit.clone();
        ok(
            "expose",
            bus.clone()
                .expose(&outer, move |x: u32| {
                    let (stub, bus, audit) = (stub.clone(), bus.clone(), audit.clone());
                    async move {
                        let doubled = stub.call(&x).await?;
                        bus.publish_to(&audit, &doubled).await?;
                        Ok::<_, Error>(doubled + 1)
                    }
                })
                .await,
        )
    };
    let stub = ok("stub", client.stub::<u32, u32>(&outer));
    assert_eq!(
        ok(
            "nested call",
            within("the nested call", stub.call(&20)).await
        ),
        41
    );
    assert_eq!(next_ok("the handler's event", &mut audit_sub).await, 40);
}
