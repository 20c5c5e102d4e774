use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, busbar::Event)]
struct OrderCreated {}

struct Shop;

impl Shop {
    #[busbar::subscriber]
    fn on_order(&self, _order: OrderCreated) {}
}

fn main() {}
