//! The conformance suite's outage rules on `memory://`: there is no broker to
//! stop, so each rule checks the same behaviour without an outage (and says
//! so on stderr), each test on a hub of its own.

use std::sync::atomic::{AtomicU64, Ordering};

static HUB: AtomicU64 = AtomicU64::new(0);

busbar_conformance::outage_suite!(|| async {
    let hub = format!("outage-{}", HUB.fetch_add(1, Ordering::Relaxed));
    busbar_conformance::Harness::new(move || {
        let memory = std::sync::Arc::new(busbar_memory::MemoryBus::connect(&hub));
        async move { busbar_core::Bus::from_transport(memory) }
    })
});
