//! Stopping a bus's tasks at once: when it is dropped, and as a crashed
//! process would ([`EventBus::kill`](busbar_core::EventBus::kill), a test hook).

use crate::Shared;
use std::sync::atomic::Ordering;

/// Aborts the reaper, provider and connection tasks and closes the blocking
/// pool; the writer is left alone.
pub(crate) fn abort_tasks(bus: &Shared) {
    for tasks in [&bus.tasks, &bus.core_tasks] {
        for task in tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }
    for serving in bus.serving.iter() {
        serving.value().abort();
    }
    bus.pool.close();
}

/// Dies: no handler, reply, working notice or goodbye leaves after this, and
/// every connection closes, so Redis forgets this bus's subscriptions.
pub(crate) fn kill(bus: &Shared) {
    bus.closed.store(true, Ordering::Release);
    // Handlers first, so that nothing they do is sent.
    bus.inflight.kill();
    abort_tasks(bus);
    bus.serving.clear();
    if let Some(task) = bus
        .writer_task
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        task.abort();
    }
    bus.link.close();
}
