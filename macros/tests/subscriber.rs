//! `#[subscriber]` and `#[derive(Event)]` over `memory://`.

use busbar::{Bus, EndpointKind, Event, Message};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize, busbar::Event)]
#[event(topic = "orders.created")]
struct OrderCreated {
    id: u64,
}

/// Default topic: the type name in snake_case.
#[derive(Debug, Serialize, Deserialize, busbar::Event)]
struct HTTPRequestSeen {
    path: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, busbar::Event)]
#[event(topic = "orders.confirmed")]
struct OrderConfirmed {
    id: u64,
}

/// What the sync handlers saw: (handler, value).
static SEEN: LazyLock<broadcast::Sender<(&'static str, String)>> =
    LazyLock::new(|| broadcast::channel(64).0);

fn seen(handler: &'static str, value: impl ToString) {
    let _ = SEEN.send((handler, value.to_string()));
}

/// Waits (bounded) until every `(handler, value)` pair was reported, in any order.
async fn expect_seen(
    rx: &mut broadcast::Receiver<(&'static str, String)>,
    expected: &[(&str, &str)],
) {
    let mut missing: Vec<(&str, &str)> = expected.to_vec();
    timeout(WAIT, async {
        while !missing.is_empty() {
            let (who, what) = rx.recv().await.unwrap();
            missing.retain(|&(handler, value)| (handler, value) != (who, what.as_str()));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not seen in time: {missing:?}"));
}

#[busbar::subscriber]
fn on_order_sync(order: OrderCreated) {
    seen("on_order_sync", order.id);
}

/// Async, with the bus as context: confirms each order.
#[busbar::subscriber]
async fn confirm(order: OrderCreated, bus: &Bus) -> busbar::Result<()> {
    bus.publish(&OrderConfirmed { id: order.id }).await
}

#[busbar::subscriber(pattern = "orders.*")]
fn audit(message: Message) {
    let payload = String::from_utf8_lossy(message.payload()).into_owned();
    seen("audit", format!("{} {payload}", message.topic()));
}

#[busbar::subscriber(topic = "legacy.orders")]
async fn legacy(order: OrderCreated, bus: Bus) -> Result<(), String> {
    bus.publish(&OrderConfirmed {
        id: order.id + 1000,
    })
    .await
    .map_err(|err| err.to_string())
}

/// Async, with the received message's metadata and the bus.
#[busbar::subscriber(topic = "orders.audited")]
async fn with_metadata(order: OrderCreated, message: &Message, bus: &Bus) -> busbar::Result<()> {
    assert_eq!(message.topic().as_str(), "orders.audited");
    assert!(message.timestamp_ms() > 0);
    bus.publish(&OrderConfirmed {
        id: order.id + 2000,
    })
    .await
}

/// Sync, with the metadata only.
#[busbar::subscriber(pattern = "metadata.*")]
fn sync_metadata(value: u32, message: &Message) {
    seen("sync_metadata", format!("{} {value}", message.topic()));
}

#[busbar::subscriber]
fn on_http(seen_request: HTTPRequestSeen) {
    seen("on_http", seen_request.path);
}

async fn bus(name: &str) -> Bus {
    Bus::connect(&format!("memory://macros-subscriber-{name}"))
        .await
        .unwrap()
}

#[test]
fn topics_follow_the_documented_rules() {
    assert_eq!(OrderCreated::TOPIC, "orders.created");
    assert_eq!(HTTPRequestSeen::TOPIC, "http_request_seen");
    assert_eq!(on_order_sync::PATTERN, "orders.created");
    assert_eq!(audit::PATTERN, "orders.*");
    assert_eq!(legacy::PATTERN, "legacy.orders");
    assert_eq!(audit::ENDPOINT.kind(), EndpointKind::Subscriber);
    assert_eq!(audit::ENDPOINT.name(), "orders.*");
}

#[tokio::test]
async fn a_sync_handler_runs_for_each_event() {
    let bus = bus("sync").await;
    let mut rx = SEEN.subscribe();
    let _listener = on_order_sync::subscribe(&bus).await.unwrap();
    bus.publish(&OrderCreated { id: 7 }).await.unwrap();
    bus.publish(&OrderCreated { id: 8 }).await.unwrap();
    expect_seen(&mut rx, &[("on_order_sync", "7"), ("on_order_sync", "8")]).await;
}

#[tokio::test]
async fn an_async_handler_gets_the_bus() {
    let bus = bus("async").await;
    let mut confirmed = bus.subscribe::<OrderConfirmed>().await.unwrap();
    let _listener = confirm::subscribe(&bus).await.unwrap();
    bus.publish(&OrderCreated { id: 1 }).await.unwrap();
    let got = timeout(WAIT, confirmed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, OrderConfirmed { id: 1 });
}

#[tokio::test]
async fn a_pattern_subscriber_gets_raw_messages() {
    let bus = bus("pattern").await;
    let mut rx = SEEN.subscribe();
    let _listener = audit::subscribe(&bus).await.unwrap();
    bus.publish_to("orders.shipped", &1).await.unwrap();
    bus.publish(&OrderCreated { id: 2 }).await.unwrap();
    expect_seen(
        &mut rx,
        &[
            ("audit", "orders.shipped 1"),
            ("audit", r#"orders.created {"id":2}"#),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_topic_overrides_the_event_topic() {
    let bus = bus("topic").await;
    let mut confirmed = bus.subscribe::<OrderConfirmed>().await.unwrap();
    let _listener = legacy::subscribe(&bus).await.unwrap();
    bus.publish_to("legacy.orders", &OrderCreated { id: 5 })
        .await
        .unwrap();
    let got = timeout(WAIT, confirmed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, OrderConfirmed { id: 1005 });
}

#[tokio::test]
async fn a_handler_may_take_the_message_metadata() {
    let bus = bus("metadata").await;
    let mut rx = SEEN.subscribe();
    let mut confirmed = bus.subscribe::<OrderConfirmed>().await.unwrap();
    let _async = with_metadata::subscribe(&bus).await.unwrap();
    let _sync = sync_metadata::subscribe(&bus).await.unwrap();
    bus.publish_to("orders.audited", &OrderCreated { id: 4 })
        .await
        .unwrap();
    let got = timeout(WAIT, confirmed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, OrderConfirmed { id: 2004 });
    // A payload that does not decode is skipped; the next one is handled.
    bus.publish_to("metadata.bad", &"not a number")
        .await
        .unwrap();
    bus.publish_to("metadata.good", &7u32).await.unwrap();
    expect_seen(&mut rx, &[("sync_metadata", "metadata.good 7")]).await;
    assert_eq!(bus.stats().decode_errors, 1);
}

#[tokio::test]
async fn start_registered_starts_every_subscriber_of_the_program() {
    let bus = bus("registered").await;
    let mut rx = SEEN.subscribe();
    let mut confirmed = bus.subscribe::<OrderConfirmed>().await.unwrap();
    let running = bus.start_registered().await.unwrap();
    let names: Vec<&str> = running.names().collect();
    for expected in [
        "orders.created",
        "orders.*",
        "legacy.orders",
        "http_request_seen",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    bus.publish(&OrderCreated { id: 9 }).await.unwrap();
    bus.publish(&HTTPRequestSeen { path: "/x".into() })
        .await
        .unwrap();
    expect_seen(
        &mut rx,
        &[
            ("on_order_sync", "9"),
            ("on_http", "/x"),
            ("audit", r#"orders.created {"id":9}"#),
        ],
    )
    .await;
    let got = timeout(WAIT, confirmed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, OrderConfirmed { id: 9 });
}
