//! RPC under faults: handlers that outlive their caller's deadline, and
//! providers lost while they handle a call.

use crate::{has_rpc, ok, within, Harness};
use busbar_core::{Error, Fault};
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
