//! Lifecycle: connecting by URL, and what `shutdown` stops, finishes and releases.

use crate::pubsub::OrderPlaced;
use crate::{assert_closed, next_ok, ok, within, Harness, WAIT};
use busbar_core::{Bus, Error, Fault};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// After `shutdown()`, every call on the bus and its clones is `Error::Closed`:
/// publish, subscribe, handlers, queue operations, calls and `expose`.
pub async fn shutdown_makes_every_call_closed(h: Harness) {
    let bus = h.bus().await;
    let clone = bus.clone();
    let topic = h.name("closed");
    let queue = ok("queue", bus.queue::<u32>(&h.name("closed.q")));
    let stub = ok("stub", bus.stub::<u32, u32>(&h.name("closed.m")));
    ok("shutdown", bus.shutdown().await);
    assert!(
        bus.is_closed() && clone.is_closed(),
        "every clone shares the shutdown"
    );
    ok(
        "a second shutdown",
        within("shutdown", clone.shutdown()).await,
    );

    assert_closed("publish_to", clone.publish_to(&topic, &1u32).await);
    assert_closed(
        "publish",
        bus.publish(&OrderPlaced {
            run: topic.clone(),
            id: 1,
        })
        .await,
    );
    assert_closed("subscribe_to", bus.subscribe_to::<u32>(&topic).await);
    assert_closed(
        "subscribe_pattern",
        bus.subscribe_pattern(&h.name("closed.*")).await,
    );
    assert_closed("subscribe", bus.subscribe::<OrderPlaced>().await);
    assert_closed(
        "on_pattern",
        bus.on_pattern(&topic, |_: u32| async {}).await,
    );
    assert_closed("queue put", queue.put(&1).await);
    assert_closed("queue get", queue.get(Duration::from_millis(100)).await);
    assert_closed(
        "queue receive",
        queue.receive(Duration::from_millis(100)).await,
    );
    assert_closed("queue len", queue.len().await);
    let later = ok("queue", bus.queue::<u32>(&h.name("closed.q2")));
    assert_closed("put on a queue made after shutdown", later.put(&1).await);
    assert_closed("call", stub.call(&1).await);
    assert_closed("call_all", stub.call_all(&1).await);
    let fresh = ok("stub", clone.stub::<u32, u32>(&h.name("closed.m2")));
    assert_closed("call on a stub made after shutdown", fresh.call(&1).await);
    assert_closed(
        "expose",
        bus.expose(
            &h.name("closed.m"),
            |x: u32| async move { Ok::<_, Fault>(x) },
        )
        .await,
    );
}

/// Shutting one bus down leaves the other buses on the same backend working:
/// events, queues and calls among them go on.
pub async fn shutdown_leaves_other_buses_working(h: Harness) {
    let doomed = h.bus().await;
    let a = h.bus().await;
    let b = h.bus().await;
    let topic = h.name("survivors");
    let _doomed_sub = ok("subscribe", doomed.subscribe_to::<u32>(&topic).await);
    let mut sub = ok("subscribe", b.subscribe_to::<u32>(&topic).await);
    ok("shutdown", doomed.shutdown().await);

    ok("publish", a.publish_to(&topic, &1u32).await);
    assert_eq!(next_ok("an event between live buses", &mut sub).await, 1);
    let mut late = ok("subscribe", a.subscribe_to::<u32>(&topic).await);
    ok("publish", b.publish_to(&topic, &2u32).await);
    assert_eq!(
        next_ok("an event to a new subscription", &mut late).await,
        2
    );

    if crate::has_queues(&a, &h.name("survivors.q")).await {
        let name = h.name("survivors.q");
        ok("put", ok("queue", a.queue::<u32>(&name)).put(&3).await);
        let got = ok(
            "get",
            within("get", ok("queue", b.queue::<u32>(&name)).get(WAIT)).await,
        );
        assert_eq!(got, Some(3));
    }
    if crate::has_rpc(&a, &h.name("survivors.m")).await {
        let method = h.name("survivors.m");
        let _provider = ok(
            "expose",
            a.expose(&method, |x: u32| async move { Ok::<_, Fault>(x + 1) })
                .await,
        );
        let stub = ok("stub", b.stub::<u32, u32>(&method));
        assert_eq!(ok("call", within("call", stub.call(&4)).await), 5);
    }
}

/// A subscription of a bus that shuts down ends: its stream returns `None`.
pub async fn shutdown_ends_subscriptions(h: Harness) {
    let bus = h.bus().await;
    let mut sub = ok(
        "subscribe",
        bus.subscribe_to::<u32>(&h.name("ending")).await,
    );
    let mut raw = ok("subscribe", bus.subscribe_pattern(&h.name("ending2")).await);
    ok("shutdown", bus.shutdown().await);
    if let Some(item) = within("the subscription to end", sub.next()).await {
        panic!("no event was published, the stream must end, got {item:?}");
    }
    assert!(within("the raw subscription to end", raw.next())
        .await
        .is_none());
}

/// `shutdown()` lets an in-flight RPC handler finish before it returns, and the
/// caller gets the answer.
pub async fn shutdown_lets_in_flight_handler_finish(h: Harness) {
    let method = h.name("draining");
    let server = h.bus().await;
    let client = h.bus().await;
    if !crate::has_rpc(&server, &method).await {
        return;
    }
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let finished = Arc::new(AtomicBool::new(false));
    let provider = {
        let finished = finished.clone();
        ok(
            "expose",
            server
                .expose(&method, move |x: u32| {
                    let started_tx = started_tx.clone();
                    let finished = finished.clone();
                    async move {
                        let _ = started_tx.send(());
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        finished.store(true, Ordering::SeqCst);
                        Ok::<_, Fault>(x * 3)
                    }
                })
                .await,
        )
    };
    provider.detach();
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(WAIT);
    let call = tokio::spawn(async move { stub.call(&5).await });
    within("the handler to start", started.recv()).await;
    ok("shutdown", within("shutdown", server.shutdown()).await);
    assert!(
        finished.load(Ordering::SeqCst),
        "shutdown must let the in-flight handler finish before returning"
    );
    let answer = ok("call task", within("the in-flight call", call).await);
    assert_eq!(ok("the in-flight call's answer", answer), 15);
}

/// After the provider's bus shut down (even with a detached provider), callers
/// get `NoResponders`, promptly.
pub async fn shutdown_provider_bus_gives_no_responders(h: Harness) {
    let method = h.name("retired");
    let server = h.bus().await;
    let client = h.bus().await;
    if !crate::has_rpc(&server, &method).await {
        return;
    }
    let served = server
        .expose(&method, |x: u32| async move { Ok::<_, Fault>(x) })
        .await;
    ok("expose", served).detach();
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(Duration::from_secs(8));
    assert_eq!(ok("call", within("a call", stub.call(&1)).await), 1);
    ok("shutdown", server.shutdown().await);
    let started = Instant::now();
    match within("a call after the shutdown", stub.call(&1)).await {
        Err(Error::NoResponders { .. }) => {}
        other => panic!("expected NoResponders once the provider's bus shut down, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "NoResponders must come promptly"
    );
}

/// An item received (not acked) by a consumer whose bus shuts down is not lost:
/// another consumer gets it.
pub async fn unacked_item_of_a_shut_consumer_is_redelivered(h: Harness) {
    let name = h.name("orphan");
    let consumer = h.bus().await;
    let other = h.bus().await;
    if !crate::has_acks(&consumer, &name).await {
        return;
    }
    let queue =
        ok("queue", consumer.queue::<u32>(&name)).visibility_timeout(Duration::from_secs(2));
    ok("put", queue.put(&77).await);
    let held = ok("receive", within("receive", queue.receive(WAIT)).await).expect("the item");
    ok("shutdown", consumer.shutdown().await);
    let again = ok(
        "receive",
        within(
            "the orphaned item",
            ok("queue", other.queue::<u32>(&name)).receive(WAIT),
        )
        .await,
    )
    .expect("an item in flight at a shut consumer must come back");
    assert_eq!(*again, 77);
    assert!(again.is_redelivery());
    ok("ack", again.ack().await);
    drop(held);
}

/// `Bus::connect` with a scheme no transport serves is `Error::InvalidUrl`
/// naming the problem.
pub async fn unknown_scheme_is_invalid_url(h: Harness) {
    let _ = h.name("unused");
    for url in ["carrier-pigeon://coop", "no-scheme-at-all"] {
        match Bus::connect(url).await {
            Err(Error::InvalidUrl { url: shown, reason }) => {
                assert_eq!(shown, url);
                assert!(!reason.is_empty());
            }
            Err(err) => panic!("{url}: expected InvalidUrl, got {err:?}"),
            Ok(_) => panic!("{url}: expected InvalidUrl, got a bus"),
        }
    }
}
