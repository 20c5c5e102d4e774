//! Registration across crates: the helper crate's handlers, started automatically
//! once the crate is linked, or explicitly.

use busbar::{Bus, Endpoint, EndpointKind};
use busbar_macros_testhelper::{text, Ping, Pong};
use futures::StreamExt;
use std::time::Duration;
use tokio::time::timeout;

// Naming the crate links it, and its endpoints with it. (Here the `use` above
// already does; a crate whose items are never named needs `use helper as _;`.)
#[allow(unused_imports)]
use busbar_macros_testhelper as _;

const WAIT: Duration = Duration::from_secs(5);

#[busbar::remote]
fn local() -> u8 {
    1
}

#[test]
fn the_linked_crates_endpoints_are_listed() {
    let listed: Vec<(EndpointKind, &str, &str)> = Endpoint::registered()
        .map(|e| (e.kind(), e.name(), e.module_path()))
        .collect();
    assert!(listed.contains(&(
        EndpointKind::Remote,
        "text.shout",
        "busbar_macros_testhelper::text"
    )));
    assert!(listed.contains(&(
        EndpointKind::Subscriber,
        "helper.ping",
        "busbar_macros_testhelper"
    )));
    assert!(listed.contains(&(EndpointKind::Remote, "local", "registration")));
}

#[tokio::test]
async fn start_registered_starts_the_other_crates_handlers() {
    let bus = Bus::connect("memory://macros-registration-auto")
        .await
        .unwrap();
    let _running = bus.start_registered().await.unwrap();
    assert_eq!(text::shout::call(&bus, "hi".into()).await.unwrap(), "HI");
    assert_eq!(local::call(&bus).await.unwrap(), 1);
    let mut pongs = bus.subscribe::<Pong>().await.unwrap();
    bus.publish(&Ping { n: 3 }).await.unwrap();
    let pong = timeout(WAIT, pongs.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Pong { n: 3 });
}

#[tokio::test]
async fn endpoints_can_be_started_explicitly() {
    let bus = Bus::connect("memory://macros-registration-explicit")
        .await
        .unwrap();
    let running = bus
        .start_endpoints([
            &text::shout::ENDPOINT,
            &busbar_macros_testhelper::on_ping::ENDPOINT,
        ])
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
    assert_eq!(text::shout::call(&bus, "abc".into()).await.unwrap(), "ABC");
    let err = local::call(&bus).await.unwrap_err();
    assert!(matches!(err, busbar::Error::NoResponders { .. }), "{err:?}");
}

#[tokio::test]
async fn detached_handlers_run_until_shutdown() {
    let bus = Bus::connect("memory://macros-registration-detach")
        .await
        .unwrap();
    text::shout::ENDPOINT.start(&bus).await.unwrap().detach();
    assert_eq!(text::shout::call(&bus, "x".into()).await.unwrap(), "X");
    bus.shutdown().await.unwrap();
    assert!(matches!(
        text::shout::call(&bus, "x".into()).await,
        Err(busbar::Error::Closed)
    ));
}
