//! Waits shared by the fault tests: each retries the operation that proves
//! recovery until it succeeds, bounded by [`RECOVERY`]; none sleeps.
#![allow(dead_code)] // each test binary uses its own part

use busbar_core::{Bus, Error, Subscription};
use busbar_redis::{Config, RedisBus};
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest any recovery may take.
pub(crate) const RECOVERY: Duration = Duration::from_secs(20);
/// Marker events carry this value.
pub(crate) const MARK: u32 = u32::MAX;

/// A bus on `url` with settings changed by `tune`.
pub(crate) async fn bus_with(url: &str, tune: impl FnOnce(&mut Config)) -> Bus {
    let mut config = Config::from_url(url).expect("config");
    tune(&mut config);
    let bus = RedisBus::connect_with(config).await.expect("connect");
    Bus::from_transport(Arc::new(bus))
}

/// A bus on `url` with the default settings.
pub(crate) async fn bus(url: &str) -> Bus {
    bus_with(url, |_| {}).await
}

/// Polls the stats until `check` holds (like waiting for PING), bounded.
pub(crate) async fn stats_reach(
    bus: &Bus,
    what: &str,
    check: impl Fn(&busbar_core::StatsSnapshot) -> bool,
) {
    let deadline = Instant::now() + RECOVERY;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while !check(&bus.stats()) {
        assert!(Instant::now() < deadline, "{what}: stats {:?}", bus.stats());
        tick.tick().await;
    }
}

/// Retries `attempt` until it yields `Some`, failing after [`RECOVERY`].
pub(crate) async fn recovered<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + RECOVERY;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not recover within {RECOVERY:?}"
        );
    }
}

/// Publishes markers until the subscription receives one: proof it is live again.
pub(crate) async fn subscription_is_live(
    publisher: &Bus,
    topic: &str,
    sub: &mut Subscription<u32>,
) {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let _ = publisher.publish_to(topic, &MARK).await;
        match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            Ok(Some(Ok(MARK))) => return,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("the subscription ended"),
        }
        assert!(
            Instant::now() < deadline,
            "the subscription did not recover within {RECOVERY:?}"
        );
    }
}

/// Waits for the subscription to report that its connection was lost; only
/// markers published before may come first.
pub(crate) async fn reports_interruption(sub: &mut Subscription<u32>) {
    loop {
        match tokio::time::timeout(RECOVERY, sub.next()).await {
            Ok(Some(Err(Error::Interrupted))) => return,
            Ok(Some(Ok(MARK))) => continue,
            other => panic!("expected the lost connection to be reported, got {other:?}"),
        }
    }
}

/// Calls until the provider answers: proof it serves again.
pub(crate) async fn provider_is_live(client: &Bus, method: &str) {
    let stub = client
        .stub::<u32, u32>(method)
        .expect("stub")
        .timeout(Duration::from_millis(500));
    recovered("the provider", || async {
        match stub.call(&20).await {
            Ok(answer) => {
                assert_eq!(answer, 21);
                Some(())
            }
            Err(_) => None,
        }
    })
    .await;
}

/// The next event that is not a marker. Notices of a lost connection are
/// skipped too: on a cluster, the kill that reaches one node after the bus
/// reconnected to it takes the new connection as well, and that is reported.
pub(crate) async fn next(sub: &mut Subscription<u32>) -> u32 {
    loop {
        match tokio::time::timeout(RECOVERY, sub.next()).await {
            Ok(Some(Ok(MARK) | Err(Error::Interrupted))) => continue,
            Ok(Some(Ok(n))) => return n,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Puts `0..n`, retrying a put that failed (it may then be stored twice).
pub(crate) fn produce(bus: Bus, queue: &str, n: u32) -> tokio::task::JoinHandle<()> {
    let q = bus.queue::<u32>(queue).unwrap();
    tokio::spawn(async move {
        for i in 0..n {
            recovered("a put", || async { q.put(&i).await.ok() }).await;
        }
    })
}

pub(crate) mod scenarios;
