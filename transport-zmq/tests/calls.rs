//! Calls while the broker is unreachable: a call ends at its deadline whatever
//! the connection does, waits for the broker until then, and an unreachable
//! broker is a transport error that says so, never `NoResponders`. Every
//! broker here is the test's own, on a free loopback port.

use busbar_core::{Bus, Error, Fault};
use busbar_zmq::{Broker, BrokerConfig, ZmqBus};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

fn steady() -> BrokerConfig {
    BrokerConfig {
        heartbeat: Duration::from_millis(500),
        liveness: 6,
        ..BrokerConfig::default()
    }
}

/// A broker, a bus on it and a subscription of that bus: the subscription
/// says when the bus has noticed that the broker is gone.
async fn setup() -> (Broker, Bus, busbar_core::Subscription<busbar_core::Message>) {
    let broker = Broker::bind_with("tcp://127.0.0.1:0", steady())
        .await
        .unwrap();
    let bus = Bus::from_transport(Arc::new(ZmqBus::connect(&broker.url()).await.unwrap()));
    let watch = bus.subscribe_pattern("calls.watch").await.unwrap();
    (broker, bus, watch)
}

/// Stops the broker and waits until the bus has noticed.
async fn stop(broker: Broker, watch: &mut busbar_core::Subscription<busbar_core::Message>) {
    broker.shutdown().await;
    match within("the bus to notice the broker is gone", watch.next()).await {
        Some(Err(Error::Interrupted)) => {}
        other => panic!("expected the Interrupted notice, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_while_the_broker_is_down_ends_at_its_deadline_saying_so() {
    let (broker, bus, mut watch) = setup().await;
    stop(broker, &mut watch).await;
    let timeout = Duration::from_millis(800);
    for all in [false, true] {
        let stub = bus
            .stub::<u32, u32>("calls.nobody")
            .unwrap()
            .timeout(timeout);
        let started = Instant::now();
        let error = if all {
            within("call_all", stub.call_all(&1)).await.map(|_| ())
        } else {
            within("the call", stub.call(&1)).await.map(|_| ())
        };
        let elapsed = started.elapsed();
        match error {
            Err(Error::Transport(err)) => {
                assert!(err.to_string().contains("unreachable"), "{err}")
            }
            other => {
                panic!("expected a transport error saying the broker is unreachable, got {other:?}")
            }
        }
        assert!(
            elapsed >= timeout - Duration::from_millis(20),
            "a call must wait for the broker until its deadline, gave up after {elapsed:?}"
        );
        assert!(
            elapsed < timeout + Duration::from_secs(1),
            "a call must end at its deadline, took {elapsed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_the_broker_is_down_is_answered_once_it_is_back() {
    let (broker, bus, mut watch) = setup().await;
    let endpoint = broker.endpoint().to_owned();
    bus.expose("calls.echo", |x: u32| async move { Ok::<_, Fault>(x) })
        .await
        .unwrap()
        .detach();
    stop(broker, &mut watch).await;
    let stub = bus
        .stub::<u32, u32>("calls.echo")
        .unwrap()
        .timeout(Duration::from_secs(8));
    let call = tokio::spawn(async move { stub.call(&7).await });
    let _second = Broker::bind_with(&endpoint, steady()).await.unwrap();
    // The bus replays its provider before the waiting call goes out.
    let answer = within("the call", call).await.unwrap();
    assert_eq!(answer.unwrap(), 7);
}
