//! Replay protection: a timestamp window plus a bounded memory of message ids.
//!
//! Every signed envelope carries its creation time and id under the signature.
//! A receiver refuses envelopes made more than [`Freshness::max_age`] ago or more
//! than [`Freshness::max_skew`] in the future (clock skew between hosts), and
//! remembers the ids it accepted within that window, up to a bound, refusing a
//! second copy. The memory is per stream (one subscription, one served method),
//! because the same event legitimately reaches every subscription once.
//!
//! Limits, stated plainly: when more than `capacity` messages arrive within the
//! window, the oldest ids are forgotten early (logged once per stream at debug
//! level), and a copy of one of those replayed inside the window is accepted.
//! Queue items are exempt from both checks: they may wait in a queue for days,
//! and a redelivery after a `nack` legitimately repeats an id (queues are
//! at-least-once; consumers must be idempotent).

use super::Rejection;
use crate::envelope::{now_millis, Envelope};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// Default [`Freshness::max_age`]: two minutes.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(120);
/// Default [`Freshness::max_skew`]: thirty seconds.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(30);
/// Default number of ids remembered per stream.
pub const DEFAULT_REPLAY_MEMORY: usize = 4096;

/// The accepted age of events, requests and replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Oldest accepted message, by its signed timestamp.
    pub max_age: Duration,
    /// Furthest in the future a timestamp may be.
    pub max_skew: Duration,
    /// Ids remembered per stream to refuse duplicates (0 turns the memory off).
    pub capacity: usize,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            max_age: DEFAULT_MAX_AGE,
            max_skew: DEFAULT_MAX_SKEW,
            capacity: DEFAULT_REPLAY_MEMORY,
        }
    }
}

impl Freshness {
    /// Checks the timestamp window against now.
    pub(crate) fn check_time(&self, envelope: &Envelope) -> Result<(), Rejection> {
        check_time_at(self, envelope.timestamp_ms, now_millis())
    }
}

fn check_time_at(freshness: &Freshness, timestamp_ms: u64, now_ms: u64) -> Result<(), Rejection> {
    if timestamp_ms > now_ms.saturating_add(freshness.max_skew.as_millis() as u64) {
        return Err(Rejection::FromTheFuture);
    }
    if timestamp_ms < now_ms.saturating_sub(freshness.max_age.as_millis() as u64) {
        return Err(Rejection::Stale);
    }
    Ok(())
}

/// The ids one stream accepted recently, oldest first.
#[derive(Debug)]
pub(crate) struct SeenIds {
    ids: HashSet<u128>,
    order: VecDeque<(u128, u64)>,
    capacity: usize,
    /// Whether forgetting ids inside the window was logged already.
    logged_full: bool,
}

impl SeenIds {
    pub(crate) fn new(capacity: usize) -> Self {
        SeenIds {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity,
            logged_full: false,
        }
    }

    /// Remembers `id`; refuses it if it was seen. Forgets ids older than `max_age`.
    pub(crate) fn check(
        &mut self,
        envelope: &Envelope,
        max_age: Duration,
    ) -> Result<(), Rejection> {
        if self.capacity == 0 {
            return Ok(());
        }
        let horizon = now_millis().saturating_sub(max_age.as_millis() as u64);
        while let Some(&(old, timestamp)) = self.order.front() {
            if timestamp >= horizon && self.order.len() < self.capacity {
                break;
            }
            if timestamp >= horizon && !self.logged_full {
                self.logged_full = true;
                tracing::debug!(
                    capacity = self.capacity,
                    "replay memory full: forgetting ids inside the freshness window"
                );
            }
            self.order.pop_front();
            self.ids.remove(&old);
        }
        if !self.ids.insert(envelope.id.0) {
            return Err(Rejection::Replayed);
        }
        self.order.push_back((envelope.id.0, envelope.timestamp_ms));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContentType, Kind, Name};
    use bytes::Bytes;

    fn event() -> Envelope {
        Envelope::new(
            Kind::Event,
            Name::new("a.b").unwrap(),
            ContentType::JSON,
            Bytes::new(),
        )
    }

    #[test]
    fn window_bounds_both_sides() {
        let f = Freshness::default();
        let now = 1_000_000_000;
        assert!(check_time_at(&f, now, now).is_ok());
        assert!(check_time_at(&f, now - 119_000, now).is_ok());
        assert_eq!(check_time_at(&f, now - 121_000, now), Err(Rejection::Stale));
        assert!(check_time_at(&f, now + 29_000, now).is_ok());
        assert_eq!(
            check_time_at(&f, now + 31_000, now),
            Err(Rejection::FromTheFuture)
        );
    }

    #[test]
    fn duplicates_are_refused_and_memory_is_bounded() {
        let mut seen = SeenIds::new(3);
        let first = event();
        assert!(seen.check(&first, DEFAULT_MAX_AGE).is_ok());
        assert_eq!(
            seen.check(&first, DEFAULT_MAX_AGE),
            Err(Rejection::Replayed)
        );
        for _ in 0..10 {
            assert!(seen.check(&event(), DEFAULT_MAX_AGE).is_ok());
        }
        assert!(seen.ids.len() <= 3 && seen.order.len() <= 3);
    }
}
