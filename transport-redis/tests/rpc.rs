//! Redis-specific RPC behaviour: several providers of one method on one bus
//! (one subscription, several answers), and stopping providers under load.

use busbar_core::{Bus, Error, Fault};
use busbar_test_support::RedisServer;
use std::time::{Duration, Instant};

use busbar_redis as _;

async fn bus() -> Bus {
    Bus::connect(&RedisServer::shared().url()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_all_counts_every_provider_of_a_bus() {
    let (double, single, client) = (bus().await, bus().await, bus().await);
    let _a = double
        .expose("many.id", |x: u32| async move { Ok::<_, Fault>(x) })
        .await
        .unwrap();
    let _b = double
        .expose("many.id", |x: u32| async move { Ok::<_, Fault>(x + 1) })
        .await
        .unwrap();
    let _c = single
        .expose("many.id", |x: u32| async move { Ok::<_, Fault>(x + 2) })
        .await
        .unwrap();
    let stub = client
        .stub::<u32, u32>("many.id")
        .unwrap()
        .timeout(Duration::from_secs(8));
    let started = Instant::now();
    let answers = stub.call_all(&10).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "call_all must end when all answered"
    );
    let mut values: Vec<u32> = answers.into_iter().map(Result::unwrap).collect();
    values.sort();
    assert_eq!(values, vec![10, 11, 12]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_when_a_provider_stops_are_answered_or_refused() {
    let (server, backup, client) = (bus().await, bus().await, bus().await);
    let slow = server
        .expose("stop.work", |x: u32| async move {
            tokio::task::yield_now().await;
            Ok::<_, Fault>(x)
        })
        .await
        .unwrap();
    let _backup = backup
        .expose("stop.work", |x: u32| async move { Ok::<_, Fault>(x) })
        .await
        .unwrap();
    let stub = client
        .stub::<u32, u32>("stop.work")
        .unwrap()
        .timeout(Duration::from_secs(5));
    let calls: Vec<_> = (0..200u32)
        .map(|i| {
            let stub = stub.clone();
            tokio::spawn(async move { (i, stub.call(&i).await) })
        })
        .collect();
    drop(slow);
    for call in calls {
        let (i, outcome) = call.await.unwrap();
        // With a provider left, nothing times out: requests the stopping one
        // had popped go back to the list for the backup.
        assert_eq!(outcome.unwrap(), i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_calls_get_no_responders_when_the_last_provider_stops() {
    let (server, client) = (bus().await, bus().await);
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let provider = server
        .expose("last.one", move |x: u32| {
            let (entered_tx, mut release) = (entered_tx.clone(), release.clone());
            async move {
                let _ = entered_tx.send(x);
                let _ = release.wait_for(|r| *r).await;
                Ok::<_, Fault>(x)
            }
        })
        .await
        .unwrap();
    let stub = client
        .stub::<u32, u32>("last.one")
        .unwrap()
        .timeout(Duration::from_secs(8));
    let first = tokio::spawn({
        let stub = stub.clone();
        async move { stub.call(&1).await }
    });
    assert_eq!(entered.recv().await, Some(1), "the first call runs");
    drop(provider);
    let started = Instant::now();
    match stub.call(&2).await {
        Err(Error::NoResponders { .. }) => {}
        other => panic!("expected NoResponders, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    release_tx.send_replace(true);
    // The call that was running still gets its answer.
    assert_eq!(first.await.unwrap().unwrap(), 1);
}
