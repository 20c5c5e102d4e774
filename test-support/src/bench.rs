//! What the benchmark harnesses share: sizing from `BENCH_SCALE` and best-of-three
//! timing.

use std::future::Future;
use std::time::Duration;

/// `base` operations scaled by the `BENCH_SCALE` environment variable (default 1,
/// `0.1` for a quick pass), rounded down to a multiple of 64 and at least 64, so
/// work splits evenly over up to 64 concurrent tasks.
pub fn count(base: f64) -> u64 {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((base * scale) as u64).max(64) / 64 * 64
}

/// The best of three runs of `run` (each doing `n` operations and returning how
/// long they took), as operations per second.
pub async fn best_rate<F, Fut>(n: u64, run: F) -> f64
where
    F: Fn() -> Fut,
    Fut: Future<Output = Duration>,
{
    let mut best = Duration::MAX;
    for _ in 0..3 {
        best = best.min(run().await);
    }
    n as f64 / best.as_secs_f64()
}
