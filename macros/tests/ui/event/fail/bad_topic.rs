use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, busbar::Event)]
#[event(topic = "orders.")]
struct OrderCreated {}

fn main() {}
