use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, busbar::Event)]
struct OrderCreated {}

#[busbar::subscriber]
fn on_order(_order: OrderCreated) -> u32 {
    1
}

fn main() {}
