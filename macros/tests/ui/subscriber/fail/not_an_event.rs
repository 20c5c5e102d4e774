use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OrderCreated {}

#[busbar::subscriber]
fn on_order(_order: OrderCreated) {}

fn main() {}
