//! Counters every bus keeps, readable with [`Bus::stats`](crate::Bus::stats).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of one bus (shared by every clone of it).
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// How long RPC calls made by this bus took, answered ones only.
            pub rpc_latency: LatencyHistogram,
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
            /// How long RPC calls made by this bus took, answered ones only.
            pub rpc_latency: Latencies,
        }

        impl Stats {
            /// Copies every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    rpc_latency: self.rpc_latency.snapshot(),
                }
            }
        }
    };
}

counters!(
    /// Events published.
    published,
    /// Events handed to subscriptions.
    delivered,
    /// Events a slow subscription missed because its buffer was full.
    lagged,
    /// Payloads that did not decode as the subscriber's or handler's type.
    decode_errors,
    /// Messages from the wire rejected as malformed, oversized or badly signed.
    rejected,
    /// Queue items put.
    enqueued,
    /// Queue items handed to consumers.
    dequeued,
    /// Queue items delivered again after a nack, a lost consumer or a visibility timeout.
    redelivered,
    /// Queue items moved to their dead-letter queue `_dead.<queue>` because they
    /// did not decode; the consumer skipped them and went on.
    dead_lettered,
    /// RPC calls made.
    rpc_calls,
    /// RPC calls that ended in an error other than a timeout.
    rpc_errors,
    /// RPC calls that timed out.
    rpc_timeouts,
    /// RPC requests handled by this bus's providers.
    rpc_served,
    /// Handlers of this bus's providers cancelled (their future dropped) because
    /// they were still running at their caller's deadline.
    handlers_cancelled,
    /// Times the connection to a broker was lost.
    disconnects,
    /// Times the connection to a broker was restored.
    reconnects,
);

impl Stats {
    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to `counter`.
    #[inline]
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Buckets of a [`LatencyHistogram`]: bucket `b` counts durations below `2^b` µs
/// (and from `2^(b-1)` µs), the last one everything longer.
pub const LATENCY_BUCKETS: usize = 32;

/// A lock-free histogram of durations in power-of-two buckets of microseconds:
/// recording is one atomic add, and quantiles are exact to within a factor of two.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl LatencyHistogram {
    /// Counts one duration.
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = (u64::BITS - micros.leading_zeros()) as usize;
        self.buckets[bucket.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the buckets.
    pub fn snapshot(&self) -> Latencies {
        Latencies {
            buckets: std::array::from_fn(|b| self.buckets[b].load(Ordering::Relaxed)),
        }
    }
}

/// A copy of a [`LatencyHistogram`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// Bucket `b` counts durations in `[2^(b-1), 2^b)` µs (bucket 0: under 1 µs).
    pub buckets: [u64; LATENCY_BUCKETS],
}

impl Latencies {
    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// An upper bound, within a factor of two, of the `q` quantile (`0.5` for the
    /// median, `0.99`...); `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let bucket = self
            .buckets
            .iter()
            .position(|&n| {
                seen += n;
                seen >= rank
            })
            .unwrap_or(LATENCY_BUCKETS - 1);
        Some(Duration::from_micros(1u64 << bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_bound_what_was_recorded() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.snapshot().quantile(0.5), None);
        for micros in [0, 3, 3, 3, 100, 100, 100, 100, 100, 5_000] {
            histogram.record(Duration::from_micros(micros));
        }
        let latencies = histogram.snapshot();
        assert_eq!(latencies.count(), 10);
        // The median (5th of 10) is 100 µs, in the bucket [64, 128).
        assert_eq!(latencies.quantile(0.5), Some(Duration::from_micros(128)));
        assert_eq!(latencies.quantile(0.1), Some(Duration::from_micros(1)));
        assert_eq!(latencies.quantile(1.0), Some(Duration::from_micros(8192)));
    }

    #[test]
    fn very_long_durations_land_in_the_last_bucket() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_secs(365 * 24 * 3600));
        assert_eq!(histogram.snapshot().buckets[LATENCY_BUCKETS - 1], 1);
    }
}
