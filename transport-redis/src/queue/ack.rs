//! Settling: the acker of `receive`, the removal of malformed items, and the
//! Redis clock the takes compute deadlines from.

use super::{job, nack};
use crate::outage::Outcome;
use crate::Shared;
use async_trait::async_trait;
use busbar_core::transport::Acker;
use busbar_core::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Removes the in-flight item `id` of queue `base` for good, through the
/// ordered writer, without waiting: for a malformed item, which could never
/// be processed. Should the writer be full, the item comes back after its
/// visibility timeout and is met (and removed) again.
pub(super) fn drop_in_flight(bus: &Shared, base: &str, id: &[u8; 16]) {
    if !bus
        .writer
        .send_now(job(base, settle_commands(base, &[*id])))
    {
        tracing::debug!("could not queue the removal of a malformed queue item; it comes back");
    }
}

/// The Redis clock as last seen by the reaper, per queue (in a cluster each
/// queue's node has a clock of its own), so a take can send its deadline
/// instead of asking Redis for the time.
#[derive(Default)]
pub(super) struct RedisClock {
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

/// How long a reading of the Redis clock is trusted: the reaper renews it every
/// `reap_interval` while consumers take; past this, takes ask Redis again.
const CLOCK_TRUST: Duration = Duration::from_secs(5);

impl RedisClock {
    pub(super) fn saw(&self, base: &str, at: std::time::Instant, redis_ms: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(base) {
            Some(reading) => *reading = (at, redis_ms),
            None => {
                seen.insert(base.to_owned(), (at, redis_ms));
            }
        }
    }

    /// The time (ms) now on the Redis clock of `base`, if read recently.
    pub(super) fn now(&self, base: &str) -> Option<u64> {
        let (at, redis_ms) = *self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(base)?;
        let since = at.elapsed();
        (since < CLOCK_TRUST).then(|| redis_ms + since.as_millis() as u64)
    }
}

/// Removes the in-flight items `ids` of queue `base` for good.
pub(super) fn settle_commands(base: &str, ids: &[[u8; 16]]) -> [redis::Cmd; 2] {
    let mut zrem = redis::cmd("ZREM");
    zrem.arg(format!("{base}:vis"));
    let mut fly = redis::cmd("HDEL");
    fly.arg(format!("{base}:fly"));
    for id in ids {
        zrem.arg(&id[..]);
        fly.arg(&id[..]);
    }
    [zrem, fly]
}

/// Settles one delivery.
pub(super) struct RedisAcker {
    pub(super) bus: Arc<Shared>,
    pub(super) base: String,
    pub(super) id: [u8; 16],
    pub(super) settled: AtomicBool,
}

impl RedisAcker {
    fn settle_once(&self) -> Result<()> {
        if self.settled.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        if self
            .bus
            .unsettled
            .remove(&(self.base.clone(), self.id))
            .is_none()
        {
            // Shutdown already put it back.
            return Err(Error::Closed);
        }
        Ok(())
    }
}

#[async_trait]
impl Acker for RedisAcker {
    /// Removes the item from flight, riding out an outage for up to
    /// `outage_wait` (removing it twice is harmless). An ack that reaches
    /// Redis after the item's visibility timeout finds it back in the queue:
    /// it is delivered again (at least once).
    async fn ack(&self) -> Result<()> {
        self.settle_once()?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for cmd in settle_commands(&self.base, &[self.id]) {
            pipe.add_command(cmd).ignore();
        }
        let outcome = Outcome {
            not_done: "the item was not acknowledged: it comes back after its visibility timeout",
            maybe_done: "the acknowledgement may not have reached redis: if not, the item comes back after its visibility timeout",
        };
        let pipe = &pipe;
        self.bus
            .link
            .through_outage(self.bus.config.outage_wait, outcome, |mut c| async move {
                pipe.exec_async(&mut c).await
            })
            .await
    }

    async fn nack(&self) -> Result<()> {
        self.settle_once()?;
        nack(&self.bus, &self.base, &self.id).await
    }
}
