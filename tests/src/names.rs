//! Names: invalid topics, patterns, queue and method names are rejected at the
//! call; unusual valid names mean exactly themselves on every transport.

use crate::pubsub::Point;
use crate::{assert_invalid_name, next_ok, ok, within, Harness, WAIT};
use busbar_core::{Event, Fault, MAX_NAME_LEN};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Topic or queue names that break a naming rule.
const BAD_NAMES: &[&str] = &[
    "", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\nb", "a.*", "a.>", "a*b", ">",
];

/// Patterns that break a pattern rule.
const BAD_PATTERNS: &[&str] = &[
    "", "a.>.b", ">.a", "a*", "a.b*", "a.>b", "a..*", "a .*", "*.", "a\n.>",
];

/// An event whose declared topic is not a valid name.
#[derive(Debug, Serialize, Deserialize)]
pub struct BadlyNamed {
    /// Anything.
    pub n: u32,
}

impl Event for BadlyNamed {
    const TOPIC: &'static str = "bad topic";
}

/// `publish_to` with an invalid topic fails with `InvalidName` before anything
/// is sent (`published` does not move).
pub async fn invalid_topics_are_rejected_before_sending(h: Harness) {
    let bus = h.bus().await;
    let published = bus.stats().published;
    for bad in BAD_NAMES {
        assert_invalid_name(
            &format!("publish_to({bad:?})"),
            bus.publish_to(bad, &1u32).await,
        );
    }
    let too_long = "a".repeat(MAX_NAME_LEN + 1);
    assert_invalid_name(
        "publish_to(a 257-byte name)",
        bus.publish_to(&too_long, &1u32).await,
    );
    assert_eq!(
        bus.stats().published,
        published,
        "nothing may be sent for a bad name"
    );
    // The bus still works.
    let topic = h.name("fine");
    let mut sub = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
    ok("publish", bus.publish_to(&topic, &2u32).await);
    assert_eq!(next_ok("a good event", &mut sub).await, 2);
}

/// `subscribe_to` with an invalid pattern (`a.>.b`, `a*`, ...) fails with `InvalidName`.
pub async fn invalid_patterns_are_rejected(h: Harness) {
    let bus = h.bus().await;
    for bad in BAD_PATTERNS {
        let prefixed = if bad.is_empty() {
            String::new()
        } else {
            h.name(bad)
        };
        for pattern in [bad.to_string(), prefixed] {
            assert_invalid_name(
                &format!("subscribe_to({pattern:?})"),
                bus.subscribe_to::<u32>(&pattern).await,
            );
            assert_invalid_name(
                &format!("subscribe_pattern({pattern:?})"),
                bus.subscribe_pattern(&pattern).await,
            );
        }
    }
    assert_invalid_name(
        "on_pattern(\"a.>.b\")",
        bus.on_pattern(&h.name("a.>.b"), |_: u32| async {}).await,
    );
}

/// `queue("")`, `queue("a b")`, `queue("jobs.*")`... fail with `InvalidName`.
pub async fn invalid_queue_names_are_rejected(h: Harness) {
    let bus = h.bus().await;
    for bad in BAD_NAMES {
        assert_invalid_name(&format!("queue({bad:?})"), bus.queue::<u32>(bad));
    }
    assert_invalid_name(
        "queue(\"a b\") with a prefix",
        bus.queue::<u32>(&h.name("a b")),
    );
}

/// `expose("a b")` and `stub("x.*")` fail with `InvalidName`; nothing is served.
pub async fn invalid_method_names_are_rejected(h: Harness) {
    let bus = h.bus().await;
    let calls = bus.stats().rpc_calls;
    for bad in BAD_NAMES {
        assert_invalid_name(
            &format!("expose({bad:?})"),
            bus.expose(bad, |x: u32| async move { Ok::<_, Fault>(x) })
                .await,
        );
        assert_invalid_name(&format!("stub({bad:?})"), bus.stub::<u32, u32>(bad));
    }
    assert_invalid_name("stub(\"x.*\")", bus.stub::<u32, u32>(&h.name("x.*")));
    assert_eq!(
        bus.stats().rpc_calls,
        calls,
        "nothing may be sent for a bad name"
    );
}

/// An [`Event`] whose declared `TOPIC` is invalid fails with `InvalidName` on
/// `publish`, `subscribe` and `on`.
pub async fn invalid_event_topic_is_rejected(h: Harness) {
    let bus = h.bus().await;
    let published = bus.stats().published;
    assert_invalid_name(
        "publish(BadlyNamed)",
        bus.publish(&BadlyNamed { n: 1 }).await,
    );
    assert_invalid_name(
        "subscribe::<BadlyNamed>()",
        bus.subscribe::<BadlyNamed>().await,
    );
    assert_invalid_name("on::<BadlyNamed>()", bus.on(|_: BadlyNamed| async {}).await);
    assert_eq!(
        bus.stats().published,
        published,
        "nothing may be sent for a bad topic"
    );
}

/// Valid names with characters that are special to brokers (`[`, `?`, `\`,
/// `:`, `#`, `$`, non-ASCII) are taken literally by every transport: in topics,
/// patterns, queues and methods.
pub async fn unusual_valid_names_are_taken_literally(h: Harness) {
    let bus = h.bus().await;
    let publisher = h.bus().await;
    let odd = h.name("a[bc]?d\\e:f#g$h-日本.x_y");
    let lookalike = h.name("ab?d\\e:f#g$h-日本.x_y");
    let mut sub = ok("subscribe", bus.subscribe_to::<u32>(&odd).await);
    ok("publish", publisher.publish_to(&lookalike, &1u32).await);
    ok("publish", publisher.publish_to(&odd, &2u32).await);
    assert_eq!(
        next_ok("the odd topic", &mut sub).await,
        2,
        "a glob look-alike must not match"
    );
    let pattern = h.name("a[bc]?d\\e:f#g$h-日本.*");
    if crate::has_patterns(&bus, &pattern).await {
        let mut wild = ok("subscribe", bus.subscribe_to::<u32>(&pattern).await);
        ok("publish", publisher.publish_to(&lookalike, &3u32).await);
        ok("publish", publisher.publish_to(&odd, &4u32).await);
        assert_eq!(
            next_ok("the odd pattern", &mut wild).await,
            4,
            "a glob look-alike must not match"
        );
    }
    if crate::has_queues(&bus, &odd).await {
        let q = ok("queue", bus.queue::<Point>(&odd));
        let lookalike_q = ok("queue", bus.queue::<Point>(&lookalike));
        ok("put", q.put(&Point { x: 1, y: 2 }).await);
        assert_eq!(ok("len", lookalike_q.len().await), 0);
        let got = ok("get", within("get", q.get(WAIT)).await);
        assert_eq!(got, Some(Point { x: 1, y: 2 }));
    }
    if crate::has_rpc(&bus, &odd).await {
        let _provider = ok(
            "expose",
            bus.expose(&odd, |x: u32| async move { Ok::<_, Fault>(x + 1) })
                .await,
        );
        let stub = ok("stub", publisher.stub::<u32, u32>(&odd));
        assert_eq!(ok("call", within("call", stub.call(&1)).await), 2);
        let missing =
            ok("stub", publisher.stub::<u32, u32>(&lookalike)).timeout(Duration::from_secs(5));
        match within("a call to the look-alike", missing.call(&1)).await {
            Err(busbar_core::Error::NoResponders { .. }) => {}
            other => panic!("a look-alike method must have no responders, got {other:?}"),
        }
    }
}

/// A name of exactly the maximum length works end to end.
pub async fn longest_name_is_accepted(h: Harness) {
    let bus = h.bus().await;
    let base = h.name("long.");
    let topic = format!("{base}{}", "x".repeat(MAX_NAME_LEN - base.len()));
    assert_eq!(topic.len(), MAX_NAME_LEN);
    let mut sub = ok("subscribe", bus.subscribe_to::<u32>(&topic).await);
    ok("publish", bus.publish_to(&topic, &1u32).await);
    assert_eq!(next_ok("the event", &mut sub).await, 1);
    if crate::has_queues(&bus, &topic).await {
        let q = ok("queue", bus.queue::<u32>(&topic));
        ok("put", q.put(&2).await);
        assert_eq!(ok("get", within("get", q.get(WAIT)).await), Some(2));
    }
}
