#[busbar::subscriber]
fn on_nothing() {}

fn main() {}
