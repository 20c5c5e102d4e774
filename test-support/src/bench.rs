//! What the benchmark harnesses share: sizing from `BENCH_SCALE`, best-of-three
//! timing, and the RPC workload every transport's benchmark runs.

use busbar_core::{Bus, Fault};
use std::future::Future;
use std::time::{Duration, Instant};

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

/// `n` calls of an adding method served on `server`, made from `client` by
/// `in_flight` concurrent callers (each checking its answers); how long they took.
/// `server` and `client` may be the same bus.
pub async fn rpc(server: &Bus, client: &Bus, n: u64, in_flight: u64) -> Duration {
    let _provider = server
        .expose("bench.add", |(a, b): (i64, i64)| async move {
            Ok::<_, Fault>(a + b)
        })
        .await
        .unwrap();
    let stub = client.stub::<(i64, i64), i64>("bench.add").unwrap();
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            let stub = stub.clone();
            tokio::spawn(async move {
                for i in 0..n / in_flight {
                    let a = (w * n + i) as i64;
                    assert_eq!(stub.call(&(a, 1)).await.unwrap(), a + 1);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    start.elapsed()
}
