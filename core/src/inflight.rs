//! Counts handlers at work so shutdown can wait for them, with a bound, and
//! aborts them all at once when the bus is killed.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Tracks running handlers.
#[derive(Default, Clone)]
pub struct InFlight {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    running: AtomicUsize,
    idle: Notify,
    killed: AtomicBool,
    kill: Notify,
}

/// Held while one handler runs.
pub struct InFlightGuard {
    inner: Arc<Inner>,
}

impl InFlight {
    /// Marks one handler as running until the guard drops.
    pub fn enter(&self) -> InFlightGuard {
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        InFlightGuard {
            inner: self.inner.clone(),
        }
    }

    /// Handlers running now.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::SeqCst)
    }

    /// Waits until no handler runs, or `limit` passes; true if idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.inner.idle.notified();
                if self.running() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Runs `work` (a handler and whatever sends its answer) until it ends, or
    /// until [`kill`](InFlight::kill): then `work` is dropped where it stands
    /// and this is `None`.
    pub async fn abortable<F: Future>(&self, work: F) -> Option<F::Output> {
        let killed = async {
            loop {
                let kill = self.inner.kill.notified();
                if self.is_killed() {
                    return;
                }
                kill.await;
            }
        };
        tokio::select! {
            biased;
            output = work => Some(output),
            () = killed => None,
        }
    }

    /// Aborts every handler running in [`abortable`](InFlight::abortable), now
    /// and later: what a crashed process does to its work.
    pub fn kill(&self) {
        self.inner.killed.store(true, Ordering::SeqCst);
        self.inner.kill.notify_waiters();
    }

    /// True once [`kill`](InFlight::kill) was called.
    pub fn is_killed(&self) -> bool {
        self.inner.killed.load(Ordering::SeqCst)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.inner.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
