//! The message every benchmark sends: a sequence number, a send time and padding.

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One benchmark message. Encoded as JSON like any application payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// Unique over the run: 0..msgs.
    pub(crate) seq: u64,
    /// Nanoseconds since the run's start when it was sent.
    pub(crate) sent_ns: u64,
    /// Filler so the encoded message has about `--size` bytes.
    pub(crate) pad: String,
}

/// Makes samples of one size and reads the run's clock.
#[derive(Debug, Clone)]
pub(crate) struct Factory {
    start: Instant,
    pad: String,
}

impl Factory {
    /// Samples whose JSON encoding is about `size` bytes (never less than the
    /// fields themselves need).
    pub(crate) fn new(size: usize) -> Factory {
        let probe = Sample {
            seq: 1_000_000,
            sent_ns: 1_000_000_000,
            pad: String::new(),
        };
        let base = serde_json::to_vec(&probe).map_or(40, |v| v.len());
        Factory {
            start: Instant::now(),
            pad: "x".repeat(size.saturating_sub(base)),
        }
    }

    /// The same samples, with the clock restarted now (when the timed part of a
    /// run begins, after connections and subscriptions are set up).
    pub(crate) fn restarted(mut self) -> Factory {
        self.start = Instant::now();
        self
    }

    /// Nanoseconds since the run started.
    pub(crate) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Seconds since the run started.
    pub(crate) fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// A sample stamped now.
    pub(crate) fn make(&self, seq: u64) -> Sample {
        Sample {
            seq,
            sent_ns: self.now_ns(),
            pad: self.pad.clone(),
        }
    }

    /// The encoded size of a sample, in bytes.
    pub(crate) fn encoded_size(&self) -> usize {
        serde_json::to_vec(&self.make(123_456)).map_or(0, |v| v.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_have_about_the_asked_size() {
        let f = Factory::new(256);
        let size = f.encoded_size();
        assert!((240..=262).contains(&size), "{size}");
        assert!(Factory::new(1).encoded_size() < 64);
    }
}
