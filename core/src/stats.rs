//! Counters every bus keeps, readable with [`Bus::stats`](crate::Bus::stats).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of one bus (shared by every clone of it).
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            /// Copies every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
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
    /// RPC calls made.
    rpc_calls,
    /// RPC calls that ended in an error other than a timeout.
    rpc_errors,
    /// RPC calls that timed out.
    rpc_timeouts,
    /// RPC requests handled by this bus's providers.
    rpc_served,
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
