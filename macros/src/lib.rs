//! Procedural macros for [busbar](https://docs.rs/busbar): `#[subscriber]`,
//! `#[remote]`, `#[service]` and `#[derive(Event)]`.
//!
//! Use them through the `busbar` crate (feature `macros`, on by default); the
//! generated code names only `::busbar::__private`. Each macro is documented where
//! `busbar` re-exports it.
#![deny(missing_docs)]

mod event;
mod names;
mod remote;
mod service;
mod signature;
mod subscriber;

use proc_macro::TokenStream;

/// Runs a function for each event it takes, once started on a bus.
///
/// The function, sync or async, takes the event by value, optionally followed by
/// `&Bus` (or `Bus`) and `&Message` (the received message: topic, id, timestamp,
/// headers), and returns `()` or `Result<(), E>` with `E: Display` (errors are
/// logged). Handlers run one event at a time, in order; an event whose payload
/// does not decode is counted, logged and skipped.
///
/// - `#[subscriber]`: the parameter's type implements `Event`; its `TOPIC` is used;
/// - `#[subscriber(topic = "legacy.orders")]`: another topic, any payload type;
/// - `#[subscriber(pattern = "orders.*")]`: a wildcard pattern; take
///   `busbar::Message` for the raw message and its metadata, or a payload type.
///
/// Every subscriber is registered for `Bus::start_registered`. A companion item of
/// the same name holds `subscribe(&bus)`, `PATTERN` and `ENDPOINT` (for
/// `Bus::start_endpoints`).
///
/// ```
/// use busbar::{Bus, Message};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, busbar::Event)]
/// #[event(topic = "orders.created")]
/// struct OrderCreated { id: u64 }
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize, busbar::Event)]
/// #[event(topic = "orders.confirmed")]
/// struct OrderConfirmed { id: u64 }
///
/// #[busbar::subscriber]
/// async fn confirm(order: OrderCreated, bus: &Bus) -> busbar::Result<()> {
///     bus.publish(&OrderConfirmed { id: order.id }).await
/// }
///
/// #[busbar::subscriber(pattern = "orders.*")]
/// fn audit(message: Message) {
///     println!("{} on {}", message.id(), message.topic());
/// }
///
/// #[busbar::subscriber]
/// fn log(order: OrderCreated, message: &Message) {
///     println!("order {} sent at {} ms", order.id, message.timestamp_ms());
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> busbar::Result<()> {
/// use futures::StreamExt;
/// let bus = Bus::connect("memory://doc-subscriber").await?;
/// let mut confirmed = bus.subscribe::<OrderConfirmed>().await?;
/// let _running = bus
///     .start_endpoints([&confirm::ENDPOINT, &audit::ENDPOINT, &log::ENDPOINT])
///     .await?;
/// bus.publish(&OrderCreated { id: 7 }).await?;
/// assert_eq!(confirmed.next().await.unwrap()?, OrderConfirmed { id: 7 });
/// # Ok(()) }
/// ```
#[proc_macro_attribute]
pub fn subscriber(attr: TokenStream, item: TokenStream) -> TokenStream {
    with_item(subscriber::expand(attr.into(), item.clone().into()), item)
}

/// Serves a function over RPC and generates its typed client.
///
/// The function, sync or async, takes any number of owned serde arguments (they
/// travel as a JSON array; none travel as `null`), plus optionally `&Bus` (the bus
/// it is served on, not sent by callers), and returns a value or a
/// `Result<T, E>`: a return type whose last path segment is `Result` is taken as
/// fallible. With `E: Display + Serialize`, callers get `Error::Remote` whose
/// kind is the serde variant name; `busbar::Result<T>` and `Fault` work too.
///
/// The method name is `#[remote(name = "inventory.reserve")]`, or by default the
/// segments of `module_path!()` after the crate name, then the function name,
/// joined by dots: `fn product` in `my_crate::math` is `math.product`, and in the
/// crate root just `product`. Moving the function to another module renames it,
/// and the crate name is not part of it: give a name to keep it stable.
///
/// The companion item of the same name holds `NAME`, `call(&bus, args..)`,
/// `stub(&bus)` (for a timeout or `call_all`), `serve(&bus)` and `ENDPOINT`;
/// the function is registered for `Bus::start_registered`.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// mod math {
///     #[busbar::remote]
///     pub async fn product(a: i64, b: i64) -> i64 {
///         a * b
///     }
/// }
///
/// #[derive(Debug, Serialize, Deserialize)]
/// enum StockError { OutOfStock }
///
/// impl std::fmt::Display for StockError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("out of stock")
///     }
/// }
///
/// #[busbar::remote(name = "inventory.reserve")]
/// fn reserve(sku: String) -> Result<u32, StockError> {
///     Err(StockError::OutOfStock)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> busbar::Result<()> {
/// let bus = busbar::Bus::connect("memory://doc-remote").await?;
/// let _running = bus.start_endpoints([&math::product::ENDPOINT, &reserve::ENDPOINT]).await?;
/// assert_eq!(math::product::NAME, "math.product");
/// assert_eq!(math::product::call(&bus, 6, 7).await?, 42);
/// let all = math::product::stub(&bus)
///     .timeout(std::time::Duration::from_secs(1))
///     .call_all(&(2, 3))
///     .await?;
/// assert_eq!(all.len(), 1);
/// match reserve::call(&bus, "lamp".into()).await {
///     Err(busbar::Error::Remote { kind, .. }) => assert_eq!(kind, "OutOfStock"),
///     other => panic!("{other:?}"),
/// }
/// # Ok(()) }
/// ```
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    with_item(remote::expand(attr.into(), item.clone().into()), item)
}

/// Serves the methods of a value over RPC as `<prefix>.<method>`, and generates a
/// typed `<Type>Client`.
///
/// On an inherent `impl` block: every method taking `&self` that is not private
/// (`pub`, `pub(crate)`, ...) is served, and so is a private one marked
/// `#[remote]`; other methods are left alone. Arguments follow the `#[remote]`
/// rules, `&Bus` included. The prefix is
/// `#[service(prefix = "shop.inventory")]`, or by default the type name in
/// snake_case. Start it with `bus.serve(value)` (or `bus.serve(arc)` to keep a
/// handle, or `bus.serve_as(value, prefix)` for several instances).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// #[derive(Default)]
/// struct Counter { value: AtomicU32 }
///
/// #[busbar::service]
/// impl Counter {
///     pub fn add(&self, by: u32) -> u32 {
///         self.value.fetch_add(by, Ordering::SeqCst) + by
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> busbar::Result<()> {
/// let bus = busbar::Bus::connect("memory://doc-service").await?;
/// let _served = bus.serve(Counter::default()).await?;
/// let counter = CounterClient::new(&bus);
/// assert_eq!(counter.add(2).await?, 2);
/// assert_eq!(bus.stub::<(u32,), u32>("counter.add")?.call(&(3,)).await?, 5);
/// # Ok(()) }
/// ```
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    with_item(service::expand(attr.into(), item.clone().into()), item)
}

/// Implements `busbar::Event`: the topic is `#[event(topic = "orders.created")]`,
/// or by default the type name in snake_case.
///
/// The default rule puts `_` before an uppercase letter that follows a lowercase
/// letter or digit, or that starts a word after an acronym, and lowercases
/// everything: `OrderCreated` → `order_created`, `HTTPRequest` → `http_request`.
/// It ignores the module, so two types of one name share a topic: declare one.
///
/// ```
/// use busbar::Event;
///
/// #[derive(serde::Serialize, serde::Deserialize, Event)]
/// #[event(topic = "orders.created")]
/// struct OrderCreated { id: u64 }
///
/// #[derive(serde::Serialize, serde::Deserialize, Event)]
/// struct SensorReading { celsius: f64 }
///
/// assert_eq!(OrderCreated::TOPIC, "orders.created");
/// assert_eq!(SensorReading::TOPIC, "sensor_reading");
/// ```
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(item: TokenStream) -> TokenStream {
    event::expand(item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// The expansion, or the error followed by the unchanged item (so one mistake
/// does not also report every use of the item as missing).
fn with_item(expansion: syn::Result<proc_macro2::TokenStream>, item: TokenStream) -> TokenStream {
    match expansion {
        Ok(tokens) => tokens.into(),
        Err(err) => {
            let mut tokens = err.into_compile_error();
            tokens.extend(proc_macro2::TokenStream::from(item));
            tokens.into()
        }
    }
}
