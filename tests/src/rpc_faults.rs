//! RPC under faults: handlers that outlive their caller's deadline, and
//! providers lost while they handle a call.

use crate::{has_call_all, has_rpc, ok, within, Harness};
use busbar_core::liveness;
use busbar_core::{Bus, Error, Fault, Provider};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Sends on its channel when dropped: shows that a handler's future was
/// dropped (cancelled) rather than run to its end.
struct DropSignal(mpsc::UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A handler still running at its call's deadline is cancelled there: its
/// future is dropped (seen through a drop guard inside it), it never finishes,
/// it is counted in `handlers_cancelled`, and `shutdown()` of the provider's bus
/// afterwards does not wait for it.
pub async fn handler_past_its_deadline_is_cancelled(h: Harness) {
    let method = h.name("outlives");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let (finished_tx, mut finished) = mpsc::unbounded_channel();
    let provider = ok(
        "expose",
        server
            .expose(&method, move |x: u32| {
                let guard = DropSignal(dropped_tx.clone());
                let started_tx = started_tx.clone();
                let finished_tx = finished_tx.clone();
                async move {
                    let _guard = guard;
                    let _ = started_tx.send(());
                    // Far longer than any wait of this test: only cancellation ends it.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    let _ = finished_tx.send(());
                    Ok::<_, Fault>(x)
                }
            })
            .await,
    );
    provider.detach();
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(Duration::from_millis(300));
    match within("the call", stub.call(&1)).await {
        Err(Error::Timeout) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    within("the handler to start", started.recv()).await;
    within(
        "the handler's future to be dropped at the deadline",
        dropped.recv(),
    )
    .await;
    assert!(
        finished.try_recv().is_err(),
        "a cancelled handler must not run to its end"
    );
    assert_eq!(
        server.stats().handlers_cancelled,
        1,
        "the cancellation must be counted on the provider's bus"
    );
    let started_at = Instant::now();
    ok("shutdown", within("shutdown", server.shutdown()).await);
    assert!(
        started_at.elapsed() < Duration::from_secs(2),
        "shutdown must not wait for a cancelled handler, took {:?}",
        started_at.elapsed()
    );
}

/// How long the slow handlers below run before their provider is killed:
/// longer than [`liveness::FIRST_NOTICE`], so that on every transport the
/// provider has told its caller it took the call (the experiment
/// killed the provider one second into the call).
const RUN_BEFORE_KILL: Duration = Duration::from_secs(1);

/// The longest a caller may take to notice a provider lost mid-call:
/// [`liveness::LIVENESS`] plus slack for a loaded machine.
fn loss_bound() -> Duration {
    liveness::LIVENESS + Duration::from_secs(3)
}

/// Serves `method` on `bus` with a handler that runs [`RUN_BEFORE_KILL`], says
/// so on `busy`, then waits for a minute; its drop guard signals `dropped`.
async fn doomed(
    bus: &Bus,
    method: &str,
    busy: mpsc::UnboundedSender<()>,
    dropped: mpsc::UnboundedSender<()>,
) -> Provider {
    ok(
        "expose",
        bus.expose(method, move |x: u32| {
            let guard = DropSignal(dropped.clone());
            let busy = busy.clone();
            async move {
                let _guard = guard;
                tokio::time::sleep(RUN_BEFORE_KILL).await;
                let _ = busy.send(());
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, Fault>(x)
            }
        })
        .await,
    )
}

/// A provider lost mid-call (its bus killed as a crashed process would die,
/// [`Bus::__kill`]) ends the call promptly, within the documented liveness
/// interval and long before its deadline, with `Error::ProviderLost` naming
/// the method; the provider's handler is aborted.
pub async fn provider_lost_mid_call_is_provider_lost(h: Harness) {
    let method = h.name("doomed");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let (busy_tx, mut busy) = mpsc::unbounded_channel();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let _provider = doomed(&server, &method, busy_tx, dropped_tx).await;
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(Duration::from_secs(30));
    let call = tokio::spawn(async move { stub.call(&1).await });
    within("the handler to be busy", busy.recv()).await;
    ok("kill the provider's bus", server.__kill());
    let killed = Instant::now();
    let outcome = ok("call task", within("the call", call).await);
    let elapsed = killed.elapsed();
    match outcome {
        Err(Error::ProviderLost { method: m }) => assert_eq!(m, method),
        other => {
            panic!("a provider lost mid-call must end the call in ProviderLost, got {other:?}")
        }
    }
    assert!(
        elapsed < loss_bound(),
        "the loss must be noticed within the liveness interval, took {elapsed:?}"
    );
    within(
        "the killed provider's handler to be aborted",
        dropped.recv(),
    )
    .await;
}

/// `call_all` with one of two providers lost mid-call: the call ends promptly
/// (within the liveness interval) with the other provider's answer and one
/// `Error::ProviderLost` entry for the lost one.
pub async fn provider_lost_mid_call_all_is_a_provider_lost_entry(h: Harness) {
    let method = h.name("doomed.all");
    let healthy = h.bus().await;
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_call_all(&client, &method).await {
        return;
    }
    let _quick = ok(
        "expose",
        healthy
            .expose(&method, |x: u32| async move { Ok::<_, Fault>(x + 1) })
            .await,
    );
    let (busy_tx, mut busy) = mpsc::unbounded_channel();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let _provider = doomed(&server, &method, busy_tx, dropped_tx).await;
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(Duration::from_secs(30));
    let call = tokio::spawn(async move { stub.call_all(&1).await });
    within("the handler to be busy", busy.recv()).await;
    ok("kill the provider's bus", server.__kill());
    let killed = Instant::now();
    let replies = ok("call_all", ok("call task", within("call_all", call).await));
    let elapsed = killed.elapsed();
    assert_eq!(replies.len(), 2, "one entry per provider: {replies:?}");
    let mut answers = Vec::new();
    let mut lost = 0;
    for reply in replies {
        match reply {
            Ok(answer) => answers.push(answer),
            Err(Error::ProviderLost { .. }) => lost += 1,
            Err(err) => panic!("the lost provider's entry must be ProviderLost, got {err:?}"),
        }
    }
    assert_eq!(answers, [2], "the healthy provider's answer");
    assert_eq!(lost, 1, "one ProviderLost entry for the lost provider");
    assert!(
        elapsed < loss_bound(),
        "the loss must be noticed within the liveness interval, took {elapsed:?}"
    );
    within(
        "the killed provider's handler to be aborted",
        dropped.recv(),
    )
    .await;
}
