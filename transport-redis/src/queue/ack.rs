//! Settling: `get` acknowledgements riding the next take (or a flusher), the
//! Redis clock the takes compute deadlines from, and the acker of `receive`.

use super::{job, nack, Waiting};
use crate::Shared;
use async_trait::async_trait;
use busbar_core::transport::Acker;
use busbar_core::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a `get`'s acknowledgement waits for the next take of its queue on
/// the same bus to carry it, before it is sent on its own.
const ACK_DELAY: Duration = Duration::from_millis(1);

/// Acknowledges a `get` soon, without waiting for Redis: the next take of the
/// same queue on this bus carries it (a consumer taking in a loop then pays no
/// write and no round trip for its acknowledgements); otherwise, after
/// [`ACK_DELAY`] or at shutdown, a flusher sends it through the ordered writer.
/// Until then the item is in flight, so a bus that dies first costs a
/// redelivery, never the item.
pub(super) fn settle_soon(bus: &Arc<Shared>, base: &str, id: &[u8; 16]) {
    if bus.queues.acks.add(base, *id) {
        tokio::spawn(flush_acks(bus.clone(), base.to_owned()));
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

/// Acknowledgements of `get`s waiting for a take to carry them (see [`settle_soon`]).
#[derive(Default)]
pub(super) struct PendingAcks {
    state: std::sync::Mutex<AckState>,
}

#[derive(Default)]
struct AckState {
    /// Per queue (base key): the ids, and when the oldest was added.
    queues: std::collections::HashMap<String, (Vec<[u8; 16]>, Instant)>,
    /// Whether a flusher task is running.
    flusher: bool,
}

impl PendingAcks {
    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an id; true when a flusher must be started.
    fn add(&self, base: &str, id: [u8; 16]) -> bool {
        let mut state = self.lock();
        match state.queues.get_mut(base) {
            Some((ids, _)) => ids.push(id),
            None => {
                state
                    .queues
                    .insert(base.to_owned(), (vec![id], Instant::now()));
            }
        }
        !std::mem::replace(&mut state.flusher, true)
    }

    /// Takes up to `max` of the ids waiting for `base`, oldest first.
    pub(super) fn drain(&self, base: &str, max: usize) -> Vec<[u8; 16]> {
        let mut state = self.lock();
        let Some((ids, _)) = state.queues.get_mut(base) else {
            return Vec::new();
        };
        if ids.len() > max {
            return ids.drain(..max).collect();
        }
        let ids = std::mem::take(ids);
        state.queues.remove(base);
        ids
    }

    /// Takes the ids that waited since `before` (all of them with `None`); `None`
    /// when nothing is left at all, and the flusher then stops.
    fn due(&self, before: Option<Instant>) -> Option<Vec<(String, Vec<[u8; 16]>)>> {
        let mut state = self.lock();
        if state.queues.is_empty() {
            state.flusher = false;
            return None;
        }
        let due: Vec<String> = state
            .queues
            .iter()
            .filter(|(_, (_, since))| before.is_none_or(|before| *since <= before))
            .map(|(base, _)| base.clone())
            .collect();
        Some(
            due.into_iter()
                .filter_map(|base| state.queues.remove(&base).map(|(ids, _)| (base, ids)))
                .collect(),
        )
    }
}

/// Sends the acknowledgements no take carried in time, until none are left.
async fn flush_acks(bus: Arc<Shared>, base: String) {
    // Shutdown waits for this flusher, which sends everything as soon as the
    // bus starts closing, before the writer's last flush.
    let _waiting = Waiting::enter(&bus, &base);
    let mut closing = bus.closing.subscribe();
    loop {
        let before = tokio::select! {
            () = tokio::time::sleep(ACK_DELAY) => Some(Instant::now() - ACK_DELAY),
            _ = closing.wait_for(|closing| *closing) => None,
        };
        let Some(due) = bus.queues.acks.due(before) else {
            return;
        };
        for (base, ids) in &due {
            if let Err(err) = bus.writer.send(job(base, settle_commands(base, ids))).await {
                tracing::warn!(%err, "could not acknowledge queue items; they will be delivered again");
            }
        }
    }
}

/// Removes the in-flight items `ids` of queue `base` for good (the same steps
/// [`TAKE`](super::scripts::TAKE) runs for the ids it carries).
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
    async fn ack(&self) -> Result<()> {
        self.settle_once()?;
        let conn = self.bus.link.get(self.bus.config.outage_wait).await?;
        let mut c = conn.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for cmd in settle_commands(&self.base, &[self.id]) {
            pipe.add_command(cmd).ignore();
        }
        let result = pipe.exec_async(&mut c).await;
        conn.check(result)
    }

    async fn nack(&self) -> Result<()> {
        self.settle_once()?;
        nack(&self.bus, &self.base, &self.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::PendingAcks;

    #[test]
    fn a_take_drains_at_most_its_share_oldest_first() {
        let acks = PendingAcks::default();
        for n in 0..5u8 {
            acks.add("q", [n; 16]);
        }
        assert_eq!(acks.drain("q", 2), vec![[0; 16], [1; 16]]);
        assert_eq!(acks.drain("other", 2), Vec::<[u8; 16]>::new());
        assert_eq!(acks.drain("q", 10), vec![[2; 16], [3; 16], [4; 16]]);
        assert_eq!(acks.drain("q", 10), Vec::<[u8; 16]>::new());
        // Nothing left anywhere: the flusher stops.
        assert!(acks.due(None).is_none());
    }
}
