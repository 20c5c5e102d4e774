//! The PyMQ-style global bus: `busbar::init` starts every registered handler,
//! `busbar::publish` uses it, `busbar::shutdown` ends it.

use busbar::Error;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Serialize, Deserialize, busbar::Event)]
#[event(topic = "global.ping")]
struct Ping(u64);

static SEEN: OnceLock<mpsc::UnboundedSender<u64>> = OnceLock::new();

#[busbar::subscriber]
fn on_ping(ping: Ping) {
    if let Some(seen) = SEEN.get() {
        let _ = seen.send(ping.0);
    }
}

#[busbar::remote(name = "global.double")]
fn double(x: i64) -> i64 {
    x * 2
}

#[tokio::test]
async fn init_starts_registered_handlers_and_shutdown_ends_them() {
    let (tx, mut seen) = mpsc::unbounded_channel();
    SEEN.set(tx).unwrap();
    let bus = busbar::init("memory://global-test").await.unwrap();

    busbar::publish(&Ping(7)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await;
    assert_eq!(got.expect("the registered subscriber ran"), Some(7));
    assert_eq!(double::call(&bus, 21).await.unwrap(), 42);

    busbar::shutdown().await.unwrap();
    assert!(matches!(
        busbar::publish(&Ping(8)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(double::call(&bus, 1).await, Err(Error::Closed)));
}
