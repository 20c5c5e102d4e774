//! `#[remote]` and `#[service]` over `memory://`: typed stubs, error kinds, call_all.

use busbar::{Bus, EndpointKind, Error};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Served as `math.<fn>` by the default naming rule.
mod math {
    /// Async, plain return.
    #[busbar::remote]
    pub(crate) async fn product(a: i64, b: i64) -> i64 {
        a * b
    }

    /// Sync, one argument.
    #[busbar::remote]
    pub(crate) fn sum(values: Vec<i64>) -> i64 {
        values.iter().sum()
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum StockError {
    OutOfStock { sku: String },
    UnknownSku(String),
}

impl fmt::Display for StockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StockError::OutOfStock { sku } => write!(f, "no {sku} left"),
            StockError::UnknownSku(sku) => write!(f, "unknown sku {sku}"),
        }
    }
}

#[busbar::remote(name = "inventory.reserve")]
async fn reserve(sku: String, qty: u32) -> Result<u32, StockError> {
    match sku.as_str() {
        "lamp" if qty <= 3 => Ok(3 - qty),
        "lamp" => Err(StockError::OutOfStock { sku }),
        _ => Err(StockError::UnknownSku(sku)),
    }
}

#[busbar::remote]
fn ping() -> String {
    "pong".to_string()
}

#[busbar::remote(name = "checks.even")]
fn even(n: u32) -> busbar::Result<u32> {
    if n.is_multiple_of(2) {
        Ok(n)
    } else {
        Err(Error::Remote {
            kind: "odd".into(),
            message: format!("{n} is odd"),
        })
    }
}

/// An argument named like the generated `bus` parameter.
#[busbar::remote(name = "echo.bus")]
fn echo_bus(bus: String) -> String {
    bus
}

#[derive(Debug, PartialEq, Serialize, Deserialize, busbar::Event)]
#[event(topic = "inventory.reserved")]
struct Reserved {
    sku: String,
}

/// Takes the bus it is served on; `&Bus` is not an argument on the wire.
#[busbar::remote(name = "inventory.announce")]
async fn announce(sku: String, bus: &Bus) -> busbar::Result<u32> {
    bus.publish(&Reserved { sku }).await?;
    Ok(1)
}

#[busbar::remote(name = "checks.open")]
fn open(bus: &Bus, n: u32) -> u32 {
    if bus.is_closed() {
        0
    } else {
        n
    }
}

async fn bus(name: &str) -> Bus {
    Bus::connect(&format!("memory://macros-remote-{name}"))
        .await
        .unwrap()
}

#[test]
fn names_follow_the_documented_rule() {
    // The test binary's crate (`remote`) is dropped, modules and fn joined by dots.
    assert_eq!(math::product::NAME, "math.product");
    assert_eq!(math::sum::NAME, "math.sum");
    assert_eq!(ping::NAME, "ping");
    assert_eq!(reserve::NAME, "inventory.reserve");
    assert_eq!(math::product::ENDPOINT.kind(), EndpointKind::Remote);
    assert_eq!(math::product::ENDPOINT.function(), "product");
    assert_eq!(math::product::ENDPOINT.module_path(), "remote::math");
}

#[tokio::test]
async fn typed_call_reaches_async_and_sync_functions() {
    let bus = bus("typed").await;
    let _product = math::product::serve(&bus).await.unwrap();
    let _sum = math::sum::serve(&bus).await.unwrap();
    let _ping = ping::serve(&bus).await.unwrap();
    assert_eq!(math::product::call(&bus, 6, 7).await.unwrap(), 42);
    assert_eq!(math::sum::call(&bus, vec![1, 2, 3]).await.unwrap(), 6);
    assert_eq!(ping::call(&bus).await.unwrap(), "pong");
    // The wire format is a JSON array, so an untyped stub of the same shape works.
    let raw = bus.stub::<(i64, i64), i64>("math.product").unwrap();
    assert_eq!(raw.call(&(2, 21)).await.unwrap(), 42);
}

#[tokio::test]
async fn errors_arrive_with_their_kind() {
    let bus = bus("errors").await;
    let _reserve = reserve::serve(&bus).await.unwrap();
    let _even = even::serve(&bus).await.unwrap();
    assert_eq!(reserve::call(&bus, "lamp".into(), 2).await.unwrap(), 1);
    match reserve::call(&bus, "lamp".into(), 5).await {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "OutOfStock");
            assert_eq!(message, "no lamp left");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    match reserve::call(&bus, "sofa".into(), 1).await {
        Err(Error::Remote { kind, .. }) => assert_eq!(kind, "UnknownSku"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    assert_eq!(even::call(&bus, 4).await.unwrap(), 4);
    match even::call(&bus, 3).await {
        Err(Error::Remote { kind, message }) => {
            assert_eq!((kind.as_str(), message.as_str()), ("odd", "3 is odd"))
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_remote_function_may_take_the_bus() {
    use futures::StreamExt;
    let bus = bus("with-bus").await;
    let mut reserved = bus.subscribe::<Reserved>().await.unwrap();
    let _announce = announce::serve(&bus).await.unwrap();
    let _open = open::serve(&bus).await.unwrap();
    assert_eq!(announce::call(&bus, "lamp".into()).await.unwrap(), 1);
    let event = tokio::time::timeout(Duration::from_secs(5), reserved.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event, Reserved { sku: "lamp".into() });
    assert_eq!(open::call(&bus, 5).await.unwrap(), 5);
    let raw = bus.stub::<(u32,), u32>("checks.open").unwrap();
    assert_eq!(raw.call(&(6,)).await.unwrap(), 6);
}

#[tokio::test]
async fn no_provider_fails_fast() {
    let bus = bus("nobody").await;
    let err = math::product::call(&bus, 1, 2).await.unwrap_err();
    assert!(matches!(err, Error::NoResponders { .. }), "{err:?}");
}

#[tokio::test]
async fn call_all_gathers_every_provider() {
    let bus = bus("call-all").await;
    let _first = math::product::serve(&bus).await.unwrap();
    let _second = math::product::serve(&bus).await.unwrap();
    let answers = math::product::stub(&bus)
        .timeout(Duration::from_secs(5))
        .call_all(&(3, 5))
        .await
        .unwrap();
    assert_eq!(answers.len(), 2);
    for answer in answers {
        assert_eq!(answer.unwrap(), 15);
    }
}

#[tokio::test]
async fn an_argument_may_be_called_bus() {
    let bus = bus("arg-named-bus").await;
    let _echo = echo_bus::serve(&bus).await.unwrap();
    assert_eq!(echo_bus::call(&bus, "hi".into()).await.unwrap(), "hi");
}

#[tokio::test]
async fn explicit_endpoints_start_and_stop() {
    let bus = bus("explicit").await;
    let running = bus
        .start_endpoints([&math::product::ENDPOINT, &ping::ENDPOINT])
        .await
        .unwrap();
    assert_eq!(
        running.names().collect::<Vec<_>>(),
        ["math.product", "ping"]
    );
    assert_eq!(math::product::call(&bus, 2, 3).await.unwrap(), 6);
    running.stop();
    let err = ping::call(&bus).await.unwrap_err();
    assert!(matches!(err, Error::NoResponders { .. }), "{err:?}");
}

/// A service: state shared by every call.
#[derive(Default)]
struct Counter {
    value: AtomicU32,
}

#[busbar::service]
impl Counter {
    /// Adds `by`, returning the new value.
    pub(crate) async fn add(&self, by: u32) -> u32 {
        self.value.fetch_add(by, Ordering::SeqCst) + by
    }

    /// The current value.
    pub(crate) fn get(&self) -> u32 {
        self.value.load(Ordering::SeqCst)
    }

    /// Takes the bus it is served on.
    pub(crate) async fn announce(&self, sku: String, bus: &Bus) -> busbar::Result<u32> {
        bus.publish(&Reserved { sku }).await?;
        Ok(self.value.load(Ordering::SeqCst))
    }

    /// Fails on purpose.
    pub(crate) fn fail(&self, sku: String) -> Result<(), StockError> {
        Err(StockError::OutOfStock { sku })
    }

    /// Not served: private.
    fn helper(&self) -> u32 {
        self.get()
    }

    /// Not served: no receiver.
    pub(crate) fn new() -> Self {
        Counter::default()
    }
}

#[tokio::test]
async fn a_service_serves_its_methods_under_a_prefix() {
    use busbar::Service;
    assert_eq!(Counter::PREFIX, "counter");
    assert_eq!(Counter::METHODS, ["add", "get", "announce", "fail"]);

    let bus = bus("service").await;
    let counter = Arc::new(Counter::new());
    let served = bus.serve(Arc::clone(&counter)).await.unwrap();
    assert_eq!(
        served.names().collect::<Vec<_>>(),
        [
            "counter.add",
            "counter.get",
            "counter.announce",
            "counter.fail"
        ]
    );

    let client = CounterClient::new(&bus).timeout(Duration::from_secs(5));
    assert_eq!(client.add(2).await.unwrap(), 2);
    assert_eq!(client.add(3).await.unwrap(), 5);
    assert_eq!(client.get().await.unwrap(), 5);
    assert_eq!(counter.helper(), 5, "the caller's value is the served one");
    match client.fail("lamp".into()).await {
        Err(Error::Remote { kind, .. }) => assert_eq!(kind, "OutOfStock"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    let by_name = bus.stub::<(u32,), u32>("counter.add").unwrap();
    assert_eq!(by_name.call(&(1,)).await.unwrap(), 6);
    let mut reserved = bus.subscribe::<Reserved>().await.unwrap();
    assert_eq!(client.announce("desk".into()).await.unwrap(), 6);
    let event = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut reserved),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(event, Reserved { sku: "desk".into() });
}

#[tokio::test]
async fn two_instances_serve_under_their_own_prefixes() {
    let bus = bus("service-as").await;
    let _eu = bus.serve_as(Counter::new(), "counters.eu").await.unwrap();
    let _us = bus.serve_as(Counter::new(), "counters.us").await.unwrap();
    let eu = CounterClient::with_prefix(&bus, "counters.eu").unwrap();
    let us = CounterClient::with_prefix(&bus, "counters.us").unwrap();
    assert_eq!(eu.add(10).await.unwrap(), 10);
    assert_eq!(us.add(1).await.unwrap(), 1);
    assert_eq!(eu.get().await.unwrap(), 10);
    assert!(CounterClient::with_prefix(&bus, "bad..prefix").is_err());
    assert!(bus.serve_as(Counter::new(), "bad prefix").await.is_err());
}

/// This test binary never names the helper crate (a dev-dependency like in
/// `registration.rs`), so the crate is not linked and its endpoints are absent:
/// the reason for the documented `use my_handlers as _;`.
#[test]
fn an_unnamed_crate_registers_nothing() {
    let from_helper: Vec<&str> = busbar::Endpoint::registered()
        .filter(|e| e.module_path().starts_with("busbar_macros_testhelper"))
        .map(|e| e.name())
        .collect();
    assert!(from_helper.is_empty(), "{from_helper:?}");
    assert!(busbar::Endpoint::registered().any(|e| e.name() == "math.product"));
}
