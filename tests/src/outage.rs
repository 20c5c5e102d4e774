//! Outages: what a bus does while its broker is down and once it is back
//! (`docs/semantics.md`, Lifecycle and Queues). Each rule stops the
//! [`Harness::broker`] and starts it again at the same address; with no
//! broker (`memory://`), the same steps run with no outage in between, and the
//! rule says so on stderr rather than skipping.
//!
//! An operation is made while the broker is down by polling it once before
//! the broker is started again, so it has begun (sent, or waiting for the
//! connection) during the outage, whichever the transport noticed first.

use crate::{has_acks, has_queues, ok, within, within_long, Harness, WAIT};
use busbar_core::Error;
use futures::FutureExt;
use std::future::Future;
use std::time::Duration;

/// How long an item received in [`ack_during_an_outage_settles_or_says_it_did_not`]
/// stays invisible: longer than a restart, a reconnect and the acks take.
const VISIBILITY: Duration = Duration::from_secs(8);

/// Runs `during` with the broker stopped: started (polled once) while it is
/// down, finished after it is back. Without a broker, just runs it.
async fn across_an_outage<T>(h: &Harness, what: &str, during: impl Future<Output = T>) -> T {
    let Some(broker) = h.broker() else {
        eprintln!("{what}: this transport has no broker to stop; checked without an outage");
        return within(what, during).await;
    };
    within("stopping the broker", broker.stop()).await;
    let mut during = std::pin::pin!(during);
    if let Some(done) = (&mut during).now_or_never() {
        within("starting the broker", broker.start()).await;
        return done;
    }
    within("starting the broker", broker.start()).await;
    within(what, during).await
}

/// Puts made while the broker is down complete once it is back (within the
/// transport's outage bound), and their items are then there to take: a
/// producer putting one item after another runs through a restart, and every
/// put returns Ok. An item may be stored twice (a reply lost with the
/// connection: at least once), and none that `put` confirmed is lost, except,
/// on a broker that does not keep items, those it confirmed before it stopped.
pub async fn put_during_an_outage_is_stored_once_the_broker_is_back(h: Harness) {
    let bus = h.bus().await;
    let name = h.name("outage.put");
    if !has_queues(&bus, &name).await {
        return;
    }
    let q = ok("queue", bus.queue::<u32>(&name));
    let (made, made_rx) = tokio::sync::watch::channel(0u32);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let producer = tokio::spawn({
        let q = q.clone();
        async move {
            let mut n = 0u32;
            while !*stop_rx.borrow() {
                if let Err(err) = q.put(&n).await {
                    return Err((n, err));
                }
                n += 1;
                made.send_replace(n);
            }
            Ok(n)
        }
    });
    // Ends early (and the test with the producer's error) if a put fails.
    let reach = |count: u32, what: &'static str| {
        let mut made_rx = made_rx.clone();
        async move {
            let reached = within(what, made_rx.wait_for(|n| *n >= count)).await;
            reached.map(|n| *n).ok()
        }
    };
    let failed = |producer: tokio::task::JoinHandle<_>| async move {
        match within("the producer to stop", producer).await {
            Ok(Err((n, err))) => panic!("put {n}, made through the outage, failed: {err:?}"),
            other => panic!("the producer stopped: {other:?}"),
        }
    };
    if reach(20, "puts before the outage").await.is_none() {
        return failed(producer).await;
    }
    // Puts go on, one in flight at any time, while the broker stops and starts.
    let restarted_after = match h.broker() {
        Some(broker) => {
            within("stopping the broker", broker.stop()).await;
            within("starting the broker", broker.start()).await;
            *made_rx.borrow()
        }
        None => {
            eprintln!("this transport has no broker to stop; checked without an outage");
            0
        }
    };
    if reach(restarted_after + 20, "puts after the outage")
        .await
        .is_none()
    {
        return failed(producer).await;
    }
    stop.send_replace(true);
    let produced = match within("the producer to stop", producer).await {
        Ok(Ok(n)) => n,
        Ok(Err((n, err))) => panic!("put {n}, made through the outage, failed: {err:?}"),
        Err(err) => panic!("the producer panicked: {err:?}"),
    };
    let mut seen = vec![0u32; produced as usize];
    while let Some(n) = ok(
        "get",
        within("get", q.get(Duration::from_millis(500))).await,
    ) {
        match seen.get_mut(n as usize) {
            Some(count) => *count += 1,
            None => panic!("got {n}, which was never put"),
        }
    }
    // The first put that began after the restart, and every later one, were
    // confirmed by the broker that is up now: a broker that does not keep
    // items lost only what came before.
    let kept_from = match h.broker() {
        Some(broker) if !broker.keeps_items() => restarted_after as usize + 1,
        _ => 0,
    };
    let lost: Vec<usize> = (kept_from..produced as usize)
        .filter(|&n| seen[n] == 0)
        .collect();
    assert!(
        lost.is_empty(),
        "confirmed puts lost: {lost:?} of {produced}"
    );
}

/// Acks made while the broker is down settle their items once it is back
/// (`Ok`: the item is never delivered again), within the transport's outage
/// bound: a consumer acking one delivery after another runs through a
/// restart. A broker that does not keep items lost them with its memory:
/// there an ack may say so (`Error::Transport`) instead.
pub async fn ack_during_an_outage_settles_or_says_it_did_not(h: Harness) {
    const ITEMS: u32 = 200;
    let bus = h.bus().await;
    let name = h.name("outage.ack");
    if !has_acks(&bus, &name).await {
        return;
    }
    let q = ok("queue", bus.queue::<u32>(&name)).visibility_timeout(VISIBILITY);
    for n in 0..ITEMS {
        ok("put", within("put", q.put(&n)).await);
    }
    let mut deliveries = Vec::new();
    for _ in 0..ITEMS {
        let delivery = ok("receive", within("receive", q.receive(WAIT)).await);
        deliveries.push(delivery.expect("an item"));
    }
    let (started, started_rx) = tokio::sync::oneshot::channel();
    let acker = tokio::spawn(async move {
        let mut started = Some(started);
        let mut outcomes = Vec::new();
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let n = *delivery;
            outcomes.push((n, delivery.ack().await));
            if i == 10 {
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
            }
        }
        outcomes
    });
    ok(
        "the acks to start",
        within("the acks to start", started_rx).await,
    );
    // Acks go on, one in flight at any time, while the broker stops and starts.
    match h.broker() {
        Some(broker) => {
            within("stopping the broker", broker.stop()).await;
            within("starting the broker", broker.start()).await;
        }
        None => eprintln!("this transport has no broker to stop; checked without an outage"),
    }
    let outcomes = ok("the acker", within_long("the acks", acker).await);
    let may_fail = h.broker().is_some_and(|b| !b.keeps_items());
    for (n, acked) in outcomes {
        match acked {
            Ok(()) => {}
            Err(Error::Transport(_)) if may_fail => {}
            Err(err) => panic!("the ack of {n}, made through the outage: {err:?}"),
        }
    }
    // Settled: past their visibility timeout, no item comes back.
    let again = within_long(
        "a receive outlasting the visibility timeout",
        q.receive(VISIBILITY + Duration::from_secs(3)),
    )
    .await;
    if let Some(item) = ok("receive after the acks", again) {
        if !may_fail {
            panic!(
                "an acknowledged item came back: {} (attempt {})",
                *item,
                item.attempt()
            );
        }
    }
    // The queue works after the outage.
    ok("put after the outage", within("put", q.put(&ITEMS)).await);
    let next = ok("get", within("get after the outage", q.get(WAIT)).await);
    assert!(next.is_some(), "the queue works after the outage");
}

/// `Bus::connect` made while the broker is down succeeds once it is back
/// within the connect timeout (`docs/semantics.md`, Lifecycle), and the bus
/// works.
pub async fn connect_during_an_outage_succeeds_once_the_broker_is_back(h: Harness) {
    let bus = across_an_outage(&h, "a connect made during the outage", h.bus()).await;
    let name = h.name("outage.connect");
    if !has_queues(&bus, &name).await {
        return;
    }
    let q = ok("queue", bus.queue::<u32>(&name));
    ok("put", within("put", q.put(&3)).await);
    assert_eq!(ok("get", within("get", q.get(WAIT)).await), Some(3));
}
