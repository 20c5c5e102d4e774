use busbar::{Bus, Message};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, busbar::Event)]
#[event(topic = "orders.created")]
struct OrderCreated {
    id: u64,
}

#[busbar::subscriber]
fn sync_handler(_order: OrderCreated) {}

#[busbar::subscriber]
async fn async_handler(order: OrderCreated, bus: &Bus) -> busbar::Result<()> {
    bus.publish(&order).await
}

#[busbar::subscriber]
fn owned_bus(_order: OrderCreated, _bus: Bus) -> Result<(), String> {
    Ok(())
}

#[busbar::subscriber(pattern = "orders.*")]
async fn raw(_message: Message) {}

#[busbar::subscriber(pattern = "sensors.>")]
fn typed_pattern(_reading: f64) {}

#[busbar::subscriber(topic = "legacy.orders")]
fn other_topic((id, _note): (u64, String)) {
    let _ = id;
}

#[busbar::subscriber]
fn with_metadata(_order: OrderCreated, _message: &Message, _bus: &Bus) {}

#[busbar::subscriber(pattern = "orders.*")]
async fn metadata_first(_order: OrderCreated, _message: &Message) {}

fn main() {
    let _ = (
        sync_handler::PATTERN,
        raw::ENDPOINT.name(),
        other_topic::PATTERN,
    );
    let _ = async_handler::subscribe;
    let _ = owned_bus::subscribe;
    let _ = typed_pattern::subscribe;
    let _ = (with_metadata::subscribe, metadata_first::subscribe);
}
