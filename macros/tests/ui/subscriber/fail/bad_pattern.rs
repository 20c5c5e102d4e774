#[busbar::subscriber(pattern = "sensors.>.temperature")]
fn on_reading(_reading: f64) {}

fn main() {}
