use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, busbar::Event)]
struct OrderCreated {}

#[derive(Serialize, Deserialize, busbar::Event)]
struct OrderShipped {}

#[busbar::subscriber]
fn on_both(_created: OrderCreated, _shipped: OrderShipped) {}

fn main() {}
