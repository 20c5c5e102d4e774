#[busbar::subscriber(topic = "orders.*")]
fn on_order(_order: String) {}

fn main() {}
