//! Throughput of `memory://` beside a raw tokio-channel baseline doing the same
//! work in the same run.
//!
//! Run with: `cargo bench --bench memory` (`BENCH_SCALE=0.1` for a quick pass).

use busbar::{Bus, Event, SubscribeOptions};
use busbar_test_support::bench::{self, best_rate, count};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Serialize, Deserialize)]
struct Tick {
    seq: u64,
    sensor: String,
    value: f64,
}

impl Event for Tick {
    const TOPIC: &'static str = "bench.tick";
}

fn tick(seq: u64) -> Tick {
    Tick {
        seq,
        sensor: "s-1".into(),
        value: 0.5,
    }
}

async fn bus() -> Bus {
    static HUB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = HUB.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Bus::connect(&format!("memory://bench-{n}")).await.unwrap()
}

async fn busbar_pubsub(n: u64) -> Duration {
    let bus = bus().await;
    let options = SubscribeOptions {
        capacity: n as usize,
    };
    let mut sub = bus
        .subscribe_with::<Tick>(busbar::Pattern::new(Tick::TOPIC).unwrap(), options)
        .await
        .unwrap();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        for expected in 0..n {
            let tick = sub.next().await.unwrap().unwrap();
            assert_eq!(tick.seq, expected);
        }
    });
    for seq in 0..n {
        bus.publish(&tick(seq)).await.unwrap();
    }
    consumer.await.unwrap();
    start.elapsed()
}

async fn raw_pubsub(n: u64) -> Duration {
    let (tx, mut rx) = mpsc::channel::<Tick>(4096);
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        for expected in 0..n {
            assert_eq!(rx.recv().await.unwrap().seq, expected);
        }
    });
    for seq in 0..n {
        tx.send(tick(seq)).await.unwrap();
    }
    consumer.await.unwrap();
    start.elapsed()
}

async fn busbar_queue(n: u64) -> Duration {
    let bus = bus().await;
    let queue = bus.queue::<Tick>("bench.jobs").unwrap();
    let start = Instant::now();
    let consumer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                queue.get(Duration::from_secs(5)).await.unwrap().unwrap();
            }
        })
    };
    for seq in 0..n {
        queue.put(&tick(seq)).await.unwrap();
    }
    consumer.await.unwrap();
    start.elapsed()
}

async fn raw_queue(n: u64) -> Duration {
    let (tx, mut rx) = mpsc::unbounded_channel::<Tick>();
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        for _ in 0..n {
            rx.recv().await.unwrap();
        }
    });
    for seq in 0..n {
        tx.send(tick(seq)).unwrap();
    }
    consumer.await.unwrap();
    start.elapsed()
}

async fn busbar_rpc(n: u64, in_flight: u64) -> Duration {
    let bus = bus().await;
    bench::rpc(&bus, &bus, n, in_flight).await
}

type RawRequest = ((i64, i64), oneshot::Sender<i64>);

async fn raw_rpc(n: u64, in_flight: u64) -> Duration {
    let (tx, mut rx) = mpsc::channel::<RawRequest>(1024);
    tokio::spawn(async move {
        while let Some(((a, b), reply)) = rx.recv().await {
            tokio::spawn(async move {
                let _ = reply.send(a + b);
            });
        }
    });
    let tx = Arc::new(tx);
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..n / in_flight {
                    let a = (w * n + i) as i64;
                    let (reply, answer) = oneshot::channel();
                    tx.send(((a, 1), reply)).await.unwrap();
                    assert_eq!(answer.await.unwrap(), a + 1);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    start.elapsed()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let events = count(1_000_000.0);
        let items = count(500_000.0);
        let calls = count(200_000.0);
        let rows = [
            (
                "pub/sub events/s (1 subscriber)",
                best_rate(events, || busbar_pubsub(events)).await,
                best_rate(events, || raw_pubsub(events)).await,
            ),
            (
                "queue items/s (put -> get)",
                best_rate(items, || busbar_queue(items)).await,
                best_rate(items, || raw_queue(items)).await,
            ),
            (
                "RPC calls/s, sequential",
                best_rate(calls / 4, || busbar_rpc(calls / 4, 1)).await,
                best_rate(calls / 4, || raw_rpc(calls / 4, 1)).await,
            ),
            (
                "RPC calls/s, 64 in flight",
                best_rate(calls, || busbar_rpc(calls, 64)).await,
                best_rate(calls, || raw_rpc(calls, 64)).await,
            ),
        ];
        println!("| workload (memory://) | busbar | raw tokio channels | busbar / raw |");
        println!("|---|---:|---:|---:|");
        for (name, busbar, raw) in rows {
            println!(
                "| {name} | {busbar:.0} | {raw:.0} | {:.0}% |",
                100.0 * busbar / raw
            );
        }
    });
}
