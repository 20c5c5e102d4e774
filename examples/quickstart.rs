//! Events, a work queue and RPC on one bus.
//!
//! Run with: `cargo run --example quickstart`
//! (set `BUSBAR_URL` to run it on another transport, e.g. `redis://127.0.0.1:6379`).

use busbar::{Bus, Event, Fault};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct OrderCreated {
    id: u64,
    item: String,
}

impl Event for OrderCreated {
    const TOPIC: &'static str = "orders.created";
}

#[derive(Debug, Serialize, Deserialize)]
enum StockError {
    OutOfStock { item: String },
}

impl std::fmt::Display for StockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StockError::OutOfStock { item } => write!(f, "no {item} left"),
        }
    }
}

#[tokio::main]
async fn main() -> busbar::Result<()> {
    let url = std::env::var("BUSBAR_URL").unwrap_or_else(|_| "memory://".into());
    let bus = Bus::connect(&url).await?;
    println!(
        "connected to {} ({})",
        busbar::redact_url(&url),
        bus.transport().name()
    );

    // Events: every subscriber gets each event; `*` matches one segment.
    let mut orders = bus.subscribe::<OrderCreated>().await?;
    let mut everything = bus.subscribe_pattern("orders.*").await?;
    bus.publish(&OrderCreated {
        id: 1,
        item: "lamp".into(),
    })
    .await?;
    println!("typed subscriber got {:?}", orders.next().await.unwrap()?);
    let raw = everything.next().await.unwrap()?;
    println!(
        "pattern subscriber got {} bytes on {}",
        raw.payload().len(),
        raw.topic()
    );

    // Work queue: items wait until a consumer takes them; acked receive.
    let jobs = bus.queue::<String>("jobs.resize")?;
    jobs.put(&"photo-1.png".to_string()).await?;
    jobs.put(&"photo-2.png".to_string()).await?;
    println!("queue holds {} jobs", jobs.len().await?);
    let job = jobs.get(Duration::from_secs(1)).await?;
    println!("got job {job:?}");
    if let Some(delivery) = jobs.receive(Duration::from_secs(1)).await? {
        println!("processing {} (attempt {})", *delivery, delivery.attempt());
        delivery.ack().await?;
    }

    // RPC: typed stubs, remote errors with their kind, no-responder detection.
    let _product = bus
        .expose("math.product", |(a, b): (i64, i64)| async move {
            Ok::<_, Fault>(a * b)
        })
        .await?;
    let _stock = bus
        .expose("inventory.reserve", |item: String| async move {
            Err::<u32, _>(StockError::OutOfStock { item })
        })
        .await?;
    let product = bus.stub::<(i64, i64), i64>("math.product")?;
    println!("6 * 7 = {}", product.call(&(6, 7)).await?);
    let reserve = bus.stub::<String, u32>("inventory.reserve")?;
    match reserve.call(&"lamp".to_string()).await {
        Err(busbar::Error::Remote { kind, message }) => {
            println!("reserve failed: {kind}: {message}")
        }
        other => println!("unexpected: {other:?}"),
    }
    let nobody = bus
        .stub::<(), ()>("nobody.home")?
        .timeout(Duration::from_secs(2));
    println!(
        "calling a method nobody serves: {}",
        nobody.call(&()).await.unwrap_err()
    );

    println!("stats: {:?}", bus.stats());
    bus.shutdown().await
}
