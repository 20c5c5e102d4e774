//! Handlers declared with busbar's macros: a subscriber, a remote function with
//! its typed stub, and a service.
//!
//! Run with: cargo run --example macros
//! (set `BUSBAR_URL` to run it on another transport, e.g. `redis://127.0.0.1:6379`).

use busbar::{Bus, Event};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(topic = "orders.created")]
struct OrderCreated {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize, Event)] // topic: "order_confirmed"
struct OrderConfirmed {
    id: u64,
}

/// Runs for every `OrderCreated`, with the bus it came from.
#[busbar::subscriber]
async fn confirm(order: OrderCreated, bus: &Bus) -> busbar::Result<()> {
    bus.publish(&OrderConfirmed { id: order.id }).await
}

/// Served as `math.product`: the module path after the crate name, then the fn.
mod math {
    #[busbar::remote]
    pub(crate) fn product(a: i64, b: i64) -> i64 {
        a * b
    }
}

/// Its `pub` methods are served as `stock.<method>`.
#[derive(Default)]
struct Stock {
    reserved: AtomicU32,
}

#[busbar::service]
impl Stock {
    pub(crate) fn reserve(&self, qty: u32) -> u32 {
        self.reserved.fetch_add(qty, Ordering::SeqCst) + qty
    }
}

#[tokio::main]
async fn main() -> busbar::Result<()> {
    let url = std::env::var("BUSBAR_URL").unwrap_or_else(|_| "memory://".into());
    let bus = Bus::connect(&url).await?;
    let running = bus.start_registered().await?; // every #[subscriber] and #[remote]
    println!("started {:?}", running.names().collect::<Vec<_>>());
    let _stock = bus.serve(Stock::default()).await?;

    let mut confirmed = bus.subscribe::<OrderConfirmed>().await?;
    bus.publish(&OrderCreated { id: 1 }).await?;
    println!("subscriber answered {:?}", confirmed.next().await.unwrap()?);
    println!("6 * 7 = {}", math::product::call(&bus, 6, 7).await?);
    let stock = StockClient::new(&bus);
    println!("reserved so far: {}", stock.reserve(2).await?);
    bus.shutdown().await
}
