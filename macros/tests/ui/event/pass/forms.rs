use busbar::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
#[event(topic = "orders.created")]
struct OrderCreated {
    id: u64,
}

#[derive(Serialize, Deserialize, Event)]
enum SensorReading {
    Celsius(f64),
}

#[derive(Serialize, Deserialize, Event)]
#[event(topic = "wrapped")]
struct Wrapped<T> {
    inner: T,
}

fn topic<E: Event>() -> &'static str {
    E::TOPIC
}

fn main() {
    assert_eq!(topic::<OrderCreated>(), "orders.created");
    assert_eq!(topic::<SensorReading>(), "sensor_reading");
    assert_eq!(topic::<Wrapped<u8>>(), "wrapped");
}
