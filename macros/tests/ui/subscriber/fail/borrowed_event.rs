#[busbar::subscriber(topic = "greetings")]
fn on_greeting(_greeting: &str) {}

fn main() {}
