//! The whole conformance suite against `memory://`, each test on a hub of its own.

use std::sync::atomic::{AtomicU64, Ordering};

static HUB: AtomicU64 = AtomicU64::new(0);

fn connect(
) -> impl Fn() -> futures::future::BoxFuture<'static, busbar_core::Bus> + Send + Sync + Clone {
    let hub = HUB.fetch_add(1, Ordering::Relaxed);
    move || {
        Box::pin(async move {
            busbar_core::Bus::from_transport(std::sync::Arc::new(
                busbar_memory::MemoryBus::connect(&format!("conformance-{hub}")),
            ))
        })
    }
}

busbar_conformance::suite!(connect());
