//! The in-process transport cooperates with tokio's scheduler: a publisher in a
//! tight loop yields, so a subscriber in the same runtime keeps up instead of
//! lagging. On a current-thread runtime a publisher that never yielded would
//! fill the subscriber's buffer before it ever ran.

use busbar_core::{Bus, Error};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

const EVENTS: u64 = 20_000;

#[test]
fn tight_publish_loop_does_not_starve_a_subscriber() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = Bus::from_transport(Arc::new(busbar_memory::MemoryBus::connect("cooperative")));
        let mut events = bus.subscribe_to::<u64>("coop.tick").await.unwrap();
        let consumer = tokio::spawn(async move {
            for want in 0..EVENTS {
                match events.next().await {
                    Some(Ok(n)) => assert_eq!(n, want),
                    Some(Err(Error::Lagged { missed })) => {
                        panic!("the subscriber was starved and missed {missed} events")
                    }
                    other => panic!("expected event {want}, got {other:?}"),
                }
            }
        });
        for n in 0..EVENTS {
            bus.publish_to("coop.tick", &n).await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), consumer)
            .await
            .expect("the subscriber finished")
            .unwrap();
        assert_eq!(bus.stats().lagged, 0);
    });
}
