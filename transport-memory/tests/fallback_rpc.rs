//! The whole conformance suite on `memory://` with RPC served by core's
//! `RpcOverPubSub` layer (pub/sub + queues) instead of the transport's own RPC:
//! the fallback keeps the same contract.

use busbar_core::fallback::RpcOverPubSub;
use busbar_core::Bus;
use busbar_memory::MemoryBus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static HUB: AtomicU64 = AtomicU64::new(0);

fn connect() -> impl Fn() -> futures::future::BoxFuture<'static, Bus> + Send + Sync + Clone {
    let hub = format!("fallback-{}", HUB.fetch_add(1, Ordering::Relaxed));
    move || {
        let memory = Arc::new(MemoryBus::connect(&hub));
        Box::pin(async move { Bus::from_transport(Arc::new(RpcOverPubSub::new(memory))) })
    }
}

busbar_conformance::suite!(connect());
