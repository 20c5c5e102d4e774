//! The whole conformance suite on `memory://` behind the security layer:
//! every envelope signed, then every envelope sealed and signed.

use busbar_conformance::secured::{behind, sealing_layer, signing_layer};
use std::sync::atomic::{AtomicU64, Ordering};

static HUB: AtomicU64 = AtomicU64::new(0);

fn connect(
) -> impl Fn() -> futures::future::BoxFuture<'static, busbar_core::Bus> + Send + Sync + Clone {
    let hub = format!(
        "conformance-secured-{}",
        HUB.fetch_add(1, Ordering::Relaxed)
    );
    move || {
        let memory = std::sync::Arc::new(busbar_memory::MemoryBus::connect(&hub));
        Box::pin(async move { busbar_core::Bus::from_transport(memory) })
    }
}

mod signed {
    use super::*;
    busbar_conformance::suite!(behind(connect(), signing_layer()));
}

mod sealed {
    use super::*;
    busbar_conformance::suite!(behind(connect(), sealing_layer()));
}
