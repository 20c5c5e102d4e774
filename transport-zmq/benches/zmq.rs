//! Throughput of the zmq transport through its broker, next to raw `zeromq`
//! sockets measured in the same run.
//!
//! Run with `cargo bench -p busbar-zmq --bench zmq` (add `-- quick` for a short run).
//! Everything is on 127.0.0.1 with free ports; the broker runs in this process
//! on a runtime of its own.

use busbar_core::{Bus, Fault, SubscribeOptions};
use busbar_zmq::{Broker, ZmqBus};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// A 100-byte JSON payload (a string of 98 characters plus quotes).
fn payload() -> String {
    "x".repeat(98)
}

struct Sizes {
    events: usize,
    calls: usize,
    concurrent_calls: usize,
    items: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "quick");
    // `events`, `rpc` or `queue` run only that part.
    let parts: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| ["events", "rpc", "queue"].contains(a))
        .collect();
    let run = move |part: &str| parts.is_empty() || parts.contains(&part);
    let sizes = if quick {
        Sizes {
            events: 50_000,
            calls: 2_000,
            concurrent_calls: 10_000,
            items: 20_000,
        }
    } else {
        Sizes {
            events: 300_000,
            calls: 10_000,
            concurrent_calls: 50_000,
            items: 100_000,
        }
    };
    let (url, _broker_thread) = start_broker();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        println!("busbar zmq benchmark (100-byte payloads, loopback)");
        println!("(CPU = this process's user+system time per operation, broker included)");
        if run("events") {
            events_part(&url, sizes.events).await;
        }
        if run("rpc") {
            rpc_part(&url, sizes.calls, sizes.concurrent_calls).await;
        }
        if run("queue") {
            let configured = std::env::var("BENCH_PRODUCERS").is_ok();
            let tasks: &[usize] = if configured { &[32] } else { &[32, 128] };
            for &n in tasks {
                let cpu = Cpu::start();
                let (items, producers, consumers) = queue_items(&url, sizes.items, n).await;
                println!(
                    "queue put+get ({producers} producers, {consumers} consumers): busbar {items:.0} items/s, CPU {:.1} us/item",
                    cpu.per_op(sizes.items)
                );
            }
        }
    });
}

async fn events_part(url: &str, n: usize) {
    let cpu = Cpu::start();
    let events = events_through_broker(url, n).await;
    let cpu_per_event = cpu.per_op(n);
    let cpu = Cpu::start();
    let (raw, lost) = raw_pub_sub(n).await;
    println!(
        "events: busbar {events:.0}/s, none lost unreported, CPU {cpu_per_event:.2} us/event | raw PUB->SUB {raw:.0}/s received, {lost} of {n} lost silently, CPU {:.2} us/event | ratio {}",
        cpu.per_op(n),
        if raw > 0.0 {
            format!("{:.2}", events / raw)
        } else {
            "n/a".to_owned()
        }
    );
}

async fn rpc_part(url: &str, calls: usize, concurrent_calls: usize) {
    let cpu = Cpu::start();
    let rpc = sequential_rpc(url, calls).await;
    let cpu_rpc = cpu.per_op(calls);
    let cpu = Cpu::start();
    let raw = raw_req_rep(calls).await;
    println!(
        "sequential RPC: busbar {rpc:.0} calls/s, CPU {cpu_rpc:.1} us/call | raw REQ/REP {raw:.0}/s, CPU {:.1} us/call | ratio {:.2}",
        cpu.per_op(calls),
        rpc / raw
    );
    let cpu = Cpu::start();
    let parallel = concurrent_rpc(url, concurrent_calls, 64).await;
    println!(
        "RPC with 64 in flight: busbar {parallel:.0} calls/s, CPU {:.1} us/call",
        cpu.per_op(concurrent_calls)
    );
}

/// CPU time used by this process (Linux `/proc/self/stat`), to show cost per
/// operation independently of how busy the machine is.
struct Cpu(Option<f64>);

impl Cpu {
    fn now() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let user: f64 = fields.get(11)?.parse().ok()?;
        let system: f64 = fields.get(12)?.parse().ok()?;
        Some((user + system) / 100.0)
    }

    fn start() -> Cpu {
        Cpu(Cpu::now())
    }

    /// Microseconds of CPU per operation since `start` (NaN where unknown).
    fn per_op(&self, ops: usize) -> f64 {
        match (self.0, Cpu::now()) {
            (Some(start), Some(end)) => (end - start) * 1e6 / ops as f64,
            _ => f64::NAN,
        }
    }
}

fn start_broker() -> (String, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("broker runtime");
        runtime.block_on(async move {
            let broker = Broker::bind("tcp://127.0.0.1:0").await.expect("bind");
            tx.send(broker.url()).expect("url");
            std::future::pending::<()>().await;
            drop(broker);
        });
    });
    (rx.recv().expect("broker url"), thread)
}

async fn bus(url: &str) -> Bus {
    Bus::from_transport(Arc::new(ZmqBus::connect(url).await.expect("connect")))
}

/// Events/s from one publisher to one subscriber through the broker; asserts
/// every event arrived or was reported as missed.
async fn events_through_broker(url: &str, n: usize) -> f64 {
    let publisher = bus(url).await;
    let subscriber = bus(url).await;
    let mut sub = subscriber
        .subscribe_with::<String>(
            busbar_core::Pattern::new("bench.events").expect("pattern"),
            SubscribeOptions { capacity: n + 1 },
        )
        .await
        .expect("subscribe");
    let text = payload();
    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        for _ in 0..n {
            publisher
                .publish_to("bench.events", &text)
                .await
                .expect("publish");
        }
        publisher
    });
    let (mut received, mut missed) = (0usize, 0u64);
    while received + (missed as usize) < n {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Some(Ok(_))) => received += 1,
            Ok(Some(Err(busbar_core::Error::Lagged { missed: m }))) => missed += m,
            other => panic!("event stream failed after {received}: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let _publisher = publishing.await.expect("publisher");
    assert_eq!(
        received + missed as usize,
        n,
        "every event arrived or was reported"
    );
    if missed > 0 {
        println!("  (the subscriber was told it missed {missed} events)");
    }
    n as f64 / elapsed.as_secs_f64()
}

/// Raw zeromq PUB->SUB in the same run: rate received, and how many were lost.
async fn raw_pub_sub(n: usize) -> (f64, usize) {
    let mut publisher = zeromq::PubSocket::new();
    let endpoint = publisher
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind")
        .to_string();
    let mut subscriber = zeromq::SubSocket::new();
    subscriber.connect(&endpoint).await.expect("connect");
    subscriber.subscribe("").await.expect("subscribe");
    // Slow joiner: publish probes until one arrives (raw PUB/SUB needs this).
    let probe = Bytes::from_static(b"probe");
    loop {
        publisher
            .send(ZmqMessage::from(probe.clone()))
            .await
            .expect("probe");
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), subscriber.recv()).await
        {
            break;
        }
    }
    let data = Bytes::from(payload().into_bytes());
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for _ in 0..n {
            publisher
                .send(ZmqMessage::from(data.clone()))
                .await
                .expect("send");
        }
        publisher
    });
    let mut received = 0usize;
    let mut last = started;
    while received < n {
        // Stop when nothing more came for a while: what is missing then was dropped.
        match tokio::time::timeout(Duration::from_secs(2), subscriber.recv()).await {
            Ok(Ok(message)) => {
                if message.get(0).is_some_and(|f| f.as_ref() != b"probe") {
                    received += 1;
                    last = Instant::now();
                }
            }
            _ => break,
        }
    }
    let _publisher = sender.await.expect("sender");
    let elapsed = last.duration_since(started).max(Duration::from_micros(1));
    (received as f64 / elapsed.as_secs_f64(), n - received)
}

async fn sequential_rpc(url: &str, n: usize) -> f64 {
    let server = bus(url).await;
    let client = bus(url).await;
    let _provider = server
        .expose("bench.echo", |x: u64| async move { Ok::<_, Fault>(x) })
        .await
        .expect("expose");
    let stub = client.stub::<u64, u64>("bench.echo").expect("stub");
    for i in 0..100 {
        stub.call(&i).await.expect("warm-up call");
    }
    let started = Instant::now();
    for i in 0..n as u64 {
        assert_eq!(stub.call(&i).await.expect("call"), i);
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn raw_req_rep(n: usize) -> f64 {
    let mut rep = zeromq::RepSocket::new();
    let endpoint = rep
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind")
        .to_string();
    let server = tokio::spawn(async move {
        for _ in 0..n + 100 {
            let message = rep.recv().await.expect("recv");
            rep.send(message).await.expect("send");
        }
    });
    let mut req = zeromq::ReqSocket::new();
    req.connect(&endpoint).await.expect("connect");
    let data = Bytes::from_static(b"12345678");
    for _ in 0..100 {
        req.send(ZmqMessage::from(data.clone()))
            .await
            .expect("send");
        req.recv().await.expect("recv");
    }
    let started = Instant::now();
    for _ in 0..n {
        req.send(ZmqMessage::from(data.clone()))
            .await
            .expect("send");
        req.recv().await.expect("recv");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    server.await.expect("server");
    rate
}

async fn concurrent_rpc(url: &str, n: usize, in_flight: usize) -> f64 {
    let server = bus(url).await;
    let client = bus(url).await;
    let _provider = server
        .expose("bench.echo64", |x: u64| async move { Ok::<_, Fault>(x) })
        .await
        .expect("expose");
    let stub = client.stub::<u64, u64>("bench.echo64").expect("stub");
    stub.call(&0).await.expect("warm-up call");
    let started = Instant::now();
    let per_task = n / in_flight;
    let tasks: Vec<_> = (0..in_flight)
        .map(|t| {
            let stub = stub.clone();
            tokio::spawn(async move {
                for i in 0..per_task as u64 {
                    let x = (t as u64) << 32 | i;
                    assert_eq!(stub.call(&x).await.expect("call"), x);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    (per_task * in_flight) as f64 / started.elapsed().as_secs_f64()
}

/// Items/s through one queue: `tasks` producers putting and as many consumers
/// getting (or `BENCH_PRODUCERS` / `BENCH_CONSUMERS`), until every item was taken.
async fn queue_items(url: &str, n: usize, tasks: usize) -> (f64, usize, usize) {
    let producer = bus(url).await;
    let consumer = bus(url).await;
    let producers = std::env::var("BENCH_PRODUCERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tasks);
    let consumers = std::env::var("BENCH_CONSUMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tasks);
    let per_producer = n / producers;
    let total = per_producer * producers;
    let started = Instant::now();
    let puts: Vec<_> = (0..producers)
        .map(|_| {
            let queue = producer.queue::<String>("bench.jobs").expect("queue");
            tokio::spawn(async move {
                let text = payload();
                for _ in 0..per_producer {
                    queue.put(&text).await.expect("put");
                }
            })
        })
        .collect();
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gets: Vec<_> = (0..consumers)
        .map(|_| {
            let queue = consumer.queue::<String>("bench.jobs").expect("queue");
            let taken = taken.clone();
            tokio::spawn(async move {
                while taken.load(std::sync::atomic::Ordering::Relaxed) < total {
                    if queue
                        .get(Duration::from_millis(200))
                        .await
                        .expect("get")
                        .is_some()
                    {
                        taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in puts {
        task.await.expect("producer");
    }
    for task in gets {
        task.await.expect("consumer");
    }
    (
        total as f64 / started.elapsed().as_secs_f64(),
        producers,
        consumers,
    )
}
