use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, busbar::Event)]
#[event(name = "orders.created")]
struct OrderCreated {}

fn main() {}
