#[derive(busbar::Event)]
#[event(topic = "orders.created")]
struct OrderCreated {}

fn main() {}
