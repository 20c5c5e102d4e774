//! Throughput of `redis://` beside raw redis-rs doing the same work against the
//! same server in the same run.
//!
//! Run with: `CARGO_TARGET_DIR=/work/target-redis cargo bench -p busbar-redis --bench redis`
//! (`BENCH_SCALE=0.2` for a quick pass; `BENCH_ONLY=queue` for the queue row
//! alone, with its raw baseline; `BENCH_ONLY=queue-allocs` counts that row's
//! heap allocations per item, busbar's and raw's). It starts its own
//! redis-server on a free port;
//! set `BUSBAR_REDIS_URL` to use another server.
//!
//! - pub/sub: events received per second by one subscriber (on its own
//!   connection) from one publisher calling `publish().await` in a loop, against
//!   raw `PUBLISH` pipelined 100 at a time of the same encoded bytes to a RESP3
//!   subscriber; either publisher stays within 20,000 events of its subscriber;
//! - RPC: calls per second, one at a time and with 64 in flight, against a raw
//!   request/reply over pub/sub (PUBLISH request, PUBLISH reply);
//! - queue: items per second through 4 producers and 4 consumers (`put`/`get`),
//!   against raw `LPUSH`/`BRPOP` with the same number of connections.

use busbar_core::transport::SubscribeOptions;
use busbar_core::{Bus, Envelope, Event, Kind, Name, Pattern};
use busbar_test_support::bench::{self, best_rate, count};
use busbar_test_support::{RedisCluster, RedisServer};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use busbar_redis as _;

/// Counts heap allocations while `COUNTING` is on (`BENCH_ONLY=queue-allocs`):
/// allocations per item are what this 2-core machine's throughput turned out
/// to track (contended allocator locks, measured with `perf`). Off, it costs
/// one relaxed load per allocation.
struct CountingAlloc;

static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static ALLOCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
            ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        if COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
            ALLOCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Allocations (and reallocations) per item while `run` runs.
async fn allocs_per_item<F: std::future::Future<Output = Duration>>(n: u64, run: F) -> f64 {
    ALLOCS.store(0, std::sync::atomic::Ordering::Relaxed);
    COUNTING.store(true, std::sync::atomic::Ordering::Relaxed);
    run.await;
    COUNTING.store(false, std::sync::atomic::Ordering::Relaxed);
    ALLOCS.load(std::sync::atomic::Ordering::Relaxed) as f64 / n as f64
}

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
        sensor: "sensor-0001-with-a-longer-name-to-make-100-bytes".into(),
        value: 0.5,
    }
}

struct Setup {
    url: String,
    round: std::sync::atomic::AtomicU64,
}

impl Setup {
    /// A fresh namespace per run, so runs never see each other's traffic.
    fn url(&self) -> String {
        let n = self
            .round
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}?namespace=bench{n}", self.url)
    }

    async fn bus(&self, url: &str) -> Bus {
        Bus::connect(url).await.expect("connect")
    }

    async fn raw(&self, push: Option<mpsc::UnboundedSender<PushInfo>>) -> MultiplexedConnection {
        let client = redis::Client::open(format!("{}?protocol=resp3", self.url)).unwrap();
        let mut config = AsyncConnectionConfig::new().set_response_timeout(None);
        if let Some(push) = push {
            config = config.set_push_sender(push);
        }
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap()
    }
}

// ----- pub/sub -----

/// How far a publisher may run ahead of its subscriber. Without a bound, a
/// subscriber that falls behind piles events up in Redis until Redis drops its
/// connection (`client-output-buffer-limit pubsub`, 32 MB), and the run measures
/// that buffer instead of a sustained rate (or never ends).
const WINDOW: u64 = 20_000;

/// Events received so far, for the publisher to keep within [`WINDOW`].
#[derive(Default)]
struct Received {
    count: std::sync::atomic::AtomicU64,
    more: tokio::sync::Notify,
}

impl Received {
    /// Counts one; wakes the publisher now and then.
    fn one(&self) {
        let count = self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if count.is_multiple_of(1024) {
            self.more.notify_one();
        }
    }

    /// Waits until `sent` is within [`WINDOW`] of what was received.
    async fn room_for(&self, sent: u64) {
        while sent > self.count.load(std::sync::atomic::Ordering::Relaxed) + WINDOW {
            self.more.notified().await;
        }
    }
}

/// How long a subscriber may hear nothing before the run is declared broken.
const SILENCE: Duration = Duration::from_secs(10);

fn silent(got: u64, n: u64) -> ! {
    panic!(
        "the subscriber received {got} of {n} events, then nothing for {SILENCE:?} \
         (did Redis drop a slow subscriber? see client-output-buffer-limit in its log)"
    )
}

async fn busbar_pubsub(setup: &Setup, n: u64) -> Duration {
    let url = setup.url();
    let (subscriber, publisher) = (setup.bus(&url).await, setup.bus(&url).await);
    let options = SubscribeOptions {
        capacity: n as usize,
    };
    let mut sub = subscriber
        .subscribe_with::<Tick>(Pattern::new(Tick::TOPIC).unwrap(), options)
        .await
        .unwrap();
    let received = Arc::new(Received::default());
    let start = Instant::now();
    let consumer = tokio::spawn({
        let received = received.clone();
        async move {
            for expected in 0..n {
                let Ok(next) = tokio::time::timeout(SILENCE, sub.next()).await else {
                    silent(expected, n)
                };
                assert_eq!(next.unwrap().unwrap().seq, expected);
                received.one();
            }
        }
    });
    for seq in 0..n {
        received.room_for(seq).await;
        publisher.publish(&tick(seq)).await.unwrap();
    }
    consumer.await.unwrap();
    start.elapsed()
}

/// The bytes busbar would publish for one tick.
fn encoded_tick() -> Vec<u8> {
    let payload = serde_json::to_vec(&tick(1)).unwrap();
    let envelope = Envelope::new(
        Kind::Event,
        Name::new(Tick::TOPIC).unwrap(),
        busbar_core::ContentType::JSON,
        payload.into(),
    );
    busbar_core::wire::encode(&envelope).unwrap().to_vec()
}

async fn raw_pubsub(setup: &Setup, n: u64) -> Duration {
    let channel = format!("raw:{}", setup.url());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sub = setup.raw(Some(tx)).await;
    sub.subscribe(&channel).await.unwrap();
    let mut publisher = setup.raw(None).await;
    let payload = encoded_tick();
    let received = Arc::new(Received::default());
    let start = Instant::now();
    let consumer = tokio::spawn({
        let received = received.clone();
        async move {
            let mut got = 0;
            while got < n {
                let Ok(push) = tokio::time::timeout(SILENCE, rx.recv()).await else {
                    silent(got, n)
                };
                if push.unwrap().kind == PushKind::Message {
                    got += 1;
                    received.one();
                }
            }
        }
    });
    let mut sent = 0;
    while sent < n {
        received.room_for(sent).await;
        let mut pipe = redis::pipe();
        for _ in 0..100.min(n - sent) {
            pipe.cmd("PUBLISH").arg(&channel).arg(&payload).ignore();
            sent += 1;
        }
        pipe.exec_async(&mut publisher).await.unwrap();
    }
    consumer.await.unwrap();
    let elapsed = start.elapsed();
    drop(sub);
    elapsed
}

// ----- RPC -----

async fn busbar_rpc(setup: &Setup, n: u64, in_flight: u64) -> Duration {
    let url = setup.url();
    let (server, client) = (setup.bus(&url).await, setup.bus(&url).await);
    bench::rpc(&server, &client, n, in_flight).await
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<i64>>>>;

fn message_payload(push: PushInfo) -> Option<Vec<u8>> {
    if push.kind != PushKind::Message {
        return None;
    }
    match push.data.into_iter().nth(1) {
        Some(Value::BulkString(bytes)) => Some(bytes),
        _ => None,
    }
}

/// Request/reply over plain pub/sub: `id a b` to the provider, `id sum` back.
async fn raw_rpc(setup: &Setup, n: u64, in_flight: u64) -> Duration {
    let tag = setup.url();
    let (requests, replies) = (format!("rawreq:{tag}"), format!("rawrep:{tag}"));
    // Provider.
    let (req_tx, mut req_rx) = mpsc::unbounded_channel();
    let mut provider_sub = setup.raw(Some(req_tx)).await;
    provider_sub.subscribe(&requests).await.unwrap();
    let provider_out = setup.raw(None).await;
    let reply_channel = replies.clone();
    let provider = tokio::spawn(async move {
        while let Some(push) = req_rx.recv().await {
            let Some(body) = message_payload(push) else {
                continue;
            };
            let text = String::from_utf8(body).unwrap();
            let mut parts = text.split(' ').map(|p| p.parse::<i64>().unwrap());
            let (id, a, b) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let mut out = provider_out.clone();
            let channel = reply_channel.clone();
            tokio::spawn(async move {
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(format!("{id} {}", a + b))
                    .query_async(&mut out)
                    .await
                    .unwrap();
            });
        }
    });
    // Caller.
    let waiting: Waiting = Arc::default();
    let (rep_tx, mut rep_rx) = mpsc::unbounded_channel();
    let mut caller_sub = setup.raw(Some(rep_tx)).await;
    caller_sub.subscribe(&replies).await.unwrap();
    let router = {
        let waiting = waiting.clone();
        tokio::spawn(async move {
            while let Some(push) = rep_rx.recv().await {
                let Some(body) = message_payload(push) else {
                    continue;
                };
                let text = String::from_utf8(body).unwrap();
                let (id, sum) = text.split_once(' ').unwrap();
                if let Some(tx) = waiting.lock().unwrap().remove(&id.parse().unwrap()) {
                    let _ = tx.send(sum.parse().unwrap());
                }
            }
        })
    };
    let caller = setup.raw(None).await;
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            let (waiting, mut caller, requests) =
                (waiting.clone(), caller.clone(), requests.clone());
            tokio::spawn(async move {
                for i in 0..n / in_flight {
                    let id = w * n + i;
                    let (tx, rx) = oneshot::channel();
                    waiting.lock().unwrap().insert(id, tx);
                    let _: i64 = redis::cmd("PUBLISH")
                        .arg(&requests)
                        .arg(format!("{id} {id} 1"))
                        .query_async(&mut caller)
                        .await
                        .unwrap();
                    assert_eq!(rx.await.unwrap(), id as i64 + 1);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = start.elapsed();
    provider.abort();
    router.abort();
    drop((provider_sub, caller_sub));
    elapsed
}

// ----- queues -----

const PRODUCERS: u64 = 4;
const CONSUMERS: u64 = 4;

/// Items taken so far, and when the last of `n` was: the run's time is that
/// moment, not when the consumers notice and leave (up to a get timeout later,
/// which measured the benchmark's exit, not the queue).
struct Taken {
    n: u64,
    count: std::sync::atomic::AtomicU64,
    start: Instant,
    last: std::sync::OnceLock<Duration>,
}

impl Taken {
    fn new(n: u64) -> Arc<Taken> {
        Arc::new(Taken {
            n,
            count: Default::default(),
            start: Instant::now(),
            last: Default::default(),
        })
    }

    fn more(&self) -> bool {
        self.count.load(std::sync::atomic::Ordering::Relaxed) < self.n
    }

    fn one(&self) {
        if self
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
            == self.n
        {
            let _ = self.last.set(self.start.elapsed());
        }
    }

    fn elapsed(&self) -> Duration {
        *self.last.get().expect("every item was taken")
    }
}

async fn busbar_queue(setup: &Setup, n: u64) -> Duration {
    let url = setup.url();
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        producers.push(setup.bus(&url).await);
    }
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        consumers.push(setup.bus(&url).await);
    }
    let taken = Taken::new(n);
    let mut tasks = Vec::new();
    for bus in consumers {
        let queue = bus.queue::<Tick>("bench.jobs").unwrap();
        let taken = taken.clone();
        tasks.push(tokio::spawn(async move {
            while taken.more() {
                if queue
                    .get(Duration::from_millis(100))
                    .await
                    .unwrap()
                    .is_some()
                {
                    taken.one();
                }
            }
        }));
    }
    for (p, bus) in producers.into_iter().enumerate() {
        let queue = bus.queue::<Tick>("bench.jobs").unwrap();
        tasks.push(tokio::spawn(async move {
            for seq in 0..n / PRODUCERS {
                queue.put(&tick(p as u64 * n + seq)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    taken.elapsed()
}

async fn raw_queue(setup: &Setup, n: u64) -> Duration {
    let key = format!("rawq:{}", setup.url());
    let payload = encoded_tick();
    let mut conns = Vec::new();
    for _ in 0..CONSUMERS + PRODUCERS {
        conns.push(setup.raw(None).await);
    }
    let taken = Taken::new(n);
    let mut tasks = Vec::new();
    for _ in 0..CONSUMERS {
        let mut conn = conns.pop().unwrap();
        let (key, taken) = (key.clone(), taken.clone());
        tasks.push(tokio::spawn(async move {
            while taken.more() {
                let item: Option<(Vec<u8>, Vec<u8>)> = redis::cmd("BRPOP")
                    .arg(&key)
                    .arg(0.1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if item.is_some() {
                    taken.one();
                }
            }
        }));
    }
    for _ in 0..PRODUCERS {
        let mut conn = conns.pop().unwrap();
        let (key, payload) = (key.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / PRODUCERS {
                let _: i64 = redis::cmd("LPUSH")
                    .arg(&key)
                    .arg(&payload)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    taken.elapsed()
}

fn main() {
    let server = std::env::var("BUSBAR_REDIS_URL")
        .is_err()
        .then(RedisServer::start);
    let url = std::env::var("BUSBAR_REDIS_URL")
        .unwrap_or_else(|_| server.as_ref().map(RedisServer::url).unwrap_or_default());
    let setup = Setup {
        url,
        round: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let setup = &setup;
        // BENCH_ONLY=cluster|rpc1|rpc64|queue|queue-busbar|queue-raw|queue-split|queue-allocs|rpc-allocs|probe runs one
        // workload (for profiling); rpc1 and queue also run their raw baseline, for a
        // ratio from the same run.
        match std::env::var("BENCH_ONLY").as_deref() {
            Ok("rpc64") => {
                let calls = count(100_000.0);
                let r = best_rate(calls, || busbar_rpc(setup, calls, 64)).await;
                println!("busbar RPC with 64 in flight: {r:.0}/s");
                return;
            }
            Ok("rpc1") => {
                let calls = count(20_000.0);
                let r = best_rate(calls, || busbar_rpc(setup, calls, 1)).await;
                let raw = best_rate(calls, || raw_rpc(setup, calls, 1)).await;
                println!("RPC sequential: busbar {r:.0}/s, raw {raw:.0}/s");
                return;
            }
            Ok("probe") => {
                let url = setup.url();
                let bus = setup.bus(&url).await;
                let stub = bus.stub::<(i64, i64), i64>("bench.nobody").unwrap();
                let n = 20_000;
                let start = Instant::now();
                for _ in 0..n {
                    assert!(stub.call(&(1, 2)).await.is_err());
                }
                let nobody = n as f64 / start.elapsed().as_secs_f64();
                let mut raw = setup.raw(None).await;
                let start = Instant::now();
                for _ in 0..n {
                    let _: i64 = redis::cmd("PUBLISH")
                        .arg("x")
                        .arg("y")
                        .query_async(&mut raw)
                        .await
                        .unwrap();
                }
                let publish = n as f64 / start.elapsed().as_secs_f64();
                println!(
                    "no-responder calls {nobody:.0}/s, raw PUBLISH round trips {publish:.0}/s"
                );
                return;
            }
            Ok("queue-split") => {
                let url = setup.url();
                let n = 20_000u64;
                let mut buses = Vec::new();
                for _ in 0..4 {
                    buses.push(setup.bus(&url).await);
                }
                let start = Instant::now();
                let tasks: Vec<_> = buses
                    .iter()
                    .map(|bus| {
                        let q = bus.queue::<Tick>("bench.split").unwrap();
                        tokio::spawn(async move {
                            for seq in 0..n / 4 {
                                q.put(&tick(seq)).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                let puts = n as f64 / start.elapsed().as_secs_f64();
                let start = Instant::now();
                let tasks: Vec<_> = buses
                    .iter()
                    .map(|bus| {
                        let q = bus.queue::<Tick>("bench.split").unwrap();
                        tokio::spawn(async move {
                            for _ in 0..n / 4 {
                                q.get(Duration::from_secs(1)).await.unwrap().unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                let gets = n as f64 / start.elapsed().as_secs_f64();
                let key = format!("rawsplit:{}", setup.url());
                let payload = encoded_tick();
                let mut conns = Vec::new();
                for _ in 0..4 {
                    conns.push(setup.raw(None).await);
                }
                let start = Instant::now();
                let tasks: Vec<_> = conns
                    .iter()
                    .map(|conn| {
                        let (mut conn, key, payload) = (conn.clone(), key.clone(), payload.clone());
                        tokio::spawn(async move {
                            for _ in 0..n / 4 {
                                let _: i64 = redis::cmd("LPUSH")
                                    .arg(&key)
                                    .arg(&payload)
                                    .query_async(&mut conn)
                                    .await
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                let raw_puts = n as f64 / start.elapsed().as_secs_f64();
                let start = Instant::now();
                let tasks: Vec<_> = conns
                    .iter()
                    .map(|conn| {
                        let (mut conn, key) = (conn.clone(), key.clone());
                        tokio::spawn(async move {
                            for _ in 0..n / 4 {
                                let _: (Vec<u8>, Vec<u8>) = redis::cmd("BRPOP")
                                    .arg(&key)
                                    .arg(1)
                                    .query_async(&mut conn)
                                    .await
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                let raw_gets = n as f64 / start.elapsed().as_secs_f64();
                println!("4 producers alone: {puts:.0} puts/s (raw LPUSH {raw_puts:.0}); 4 consumers of a full queue: {gets:.0} gets/s (raw BRPOP {raw_gets:.0})");
                return;
            }
            Ok("queue-busbar") => {
                let items = count(200_000.0);
                let r = best_rate(items, || busbar_queue(setup, items)).await;
                println!("busbar {r:.0} items/s");
                return;
            }
            Ok("rpc-allocs") => {
                let calls = count(50_000.0);
                let busbar = allocs_per_item(calls, busbar_rpc(setup, calls, 64)).await;
                let raw = allocs_per_item(calls, raw_rpc(setup, calls, 64)).await;
                println!("allocations per call, 64 in flight: busbar {busbar:.1}, raw {raw:.1}");
                return;
            }
            Ok("queue-allocs") => {
                let items = count(100_000.0);
                let busbar = allocs_per_item(items, busbar_queue(setup, items)).await;
                let raw = allocs_per_item(items, raw_queue(setup, items)).await;
                println!("allocations per item: busbar {busbar:.1}, raw {raw:.1}");
                return;
            }
            Ok("queue-raw") => {
                let items = count(200_000.0);
                let r = best_rate(items, || raw_queue(setup, items)).await;
                println!("raw {r:.0} items/s");
                return;
            }
            Ok("cluster") => {
                // The same busbar workloads on a local three-master cluster and
                // on the single server, in one run.
                let cluster = RedisCluster::start();
                let on_cluster = Setup {
                    url: cluster.url(),
                    round: Default::default(),
                };
                let (events, calls, items) =
                    (count(300_000.0), count(100_000.0), count(200_000.0));
                println!("| workload | redis:// | redis+cluster:// (3 masters) | cluster / single |");
                println!("|---|---:|---:|---:|");
                for (name, single, clustered) in [
                    (
                        "pub/sub events/s (1 subscriber)",
                        best_rate(events, || busbar_pubsub(setup, events)).await,
                        best_rate(events, || busbar_pubsub(&on_cluster, events)).await,
                    ),
                    (
                        "RPC calls/s, sequential",
                        best_rate(calls / 10, || busbar_rpc(setup, calls / 10, 1)).await,
                        best_rate(calls / 10, || busbar_rpc(&on_cluster, calls / 10, 1)).await,
                    ),
                    (
                        "RPC calls/s, 64 in flight",
                        best_rate(calls, || busbar_rpc(setup, calls, 64)).await,
                        best_rate(calls, || busbar_rpc(&on_cluster, calls, 64)).await,
                    ),
                    (
                        "queue items/s, 4 producers / 4 consumers",
                        best_rate(items, || busbar_queue(setup, items)).await,
                        best_rate(items, || busbar_queue(&on_cluster, items)).await,
                    ),
                ] {
                    println!(
                        "| {name} | {single:.0} | {clustered:.0} | {:.0}% |",
                        100.0 * clustered / single
                    );
                }
                return;
            }
            Ok("queue") => {
                let items = count(200_000.0);
                let r = best_rate(items, || busbar_queue(setup, items)).await;
                let raw = best_rate(items, || raw_queue(setup, items)).await;
                println!(
                    "queue, 4 producers / 4 consumers: busbar {r:.0} items/s, raw LPUSH/BRPOP {raw:.0} items/s ({:.0}%)",
                    100.0 * r / raw
                );
                return;
            }
            _ => {}
        }
        let events = count(300_000.0);
        let items = count(200_000.0);
        let calls = count(100_000.0);
        let rows = [
            (
                "pub/sub events/s (1 subscriber)",
                best_rate(events, || busbar_pubsub(setup, events)).await,
                "raw PUBLISH, pipelined 100",
                best_rate(events, || raw_pubsub(setup, events)).await,
            ),
            (
                "RPC calls/s, sequential",
                best_rate(calls / 10, || busbar_rpc(setup, calls / 10, 1)).await,
                "raw req/reply over pub/sub",
                best_rate(calls / 10, || raw_rpc(setup, calls / 10, 1)).await,
            ),
            (
                "RPC calls/s, 64 in flight",
                best_rate(calls, || busbar_rpc(setup, calls, 64)).await,
                "raw req/reply over pub/sub",
                best_rate(calls, || raw_rpc(setup, calls, 64)).await,
            ),
            (
                "queue items/s, 4 producers / 4 consumers",
                best_rate(items, || busbar_queue(setup, items)).await,
                "raw LPUSH / BRPOP",
                best_rate(items, || raw_queue(setup, items)).await,
            ),
        ];
        println!("| workload (redis://) | busbar | baseline | baseline/s | busbar / baseline |");
        println!("|---|---:|---|---:|---:|");
        for (name, busbar, baseline, raw) in rows {
            println!(
                "| {name} | {busbar:.0} | {baseline} | {raw:.0} | {:.0}% |",
                100.0 * busbar / raw
            );
        }
    });
}
