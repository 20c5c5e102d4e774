use busbar::Bus;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, busbar::Event)]
struct OrderCreated {}

#[busbar::subscriber]
fn on_order(_order: OrderCreated, _bus: &Bus, _again: Bus) {}

fn main() {}
