//! Per-message cost of the security layer, and its effect on memory:// pub/sub.
//!
//! Run with `cargo bench -p busbar-core --bench security` (add `-- quick` for a
//! shorter run). Prints ns/message for sign, verify, seal and open at 100 B and
//! 1 KiB (thread CPU time, so other load on the machine inflates them little),
//! the pure-Rust XChaCha20-Poly1305 for comparison, and memory:// events/s with
//! no layer, signing, and signing + encryption, all in one run (wall time).

use busbar_core::security::{seal, sign, verify, KeyRing, SecureLayer};
use busbar_core::{Bus, ContentType, Envelope, EventBus, Kind, Message, Name};
use bytes::Bytes;
use futures::StreamExt;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// CPU time of this thread, in ns: unlike wall time, it does not count the time
/// the thread waits for a core, so the figures hold on a shared, loaded machine.
fn thread_cpu_ns() -> u128 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128
}

/// Median over 5 rounds of the CPU ns one `op` takes.
fn ns_per_op(iterations: u32, mut op: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        op();
    }
    let round = (iterations / 5).max(1);
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let start = thread_cpu_ns();
            for _ in 0..round {
                op();
            }
            (thread_cpu_ns() - start) as f64 / round as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn envelope(size: usize) -> Envelope {
    Envelope::new(
        Kind::Event,
        Name::new("bench.orders.created").unwrap(),
        ContentType::JSON,
        Bytes::from(vec![b'x'; size]),
    )
}

fn crypto(iterations: u32) {
    let keys = KeyRing::new("bench", &[7; 32]).unwrap();
    let key = keys.signing();
    println!("per message (CPU ns, median of 5 rounds), {iterations} iterations each:");
    println!(
        "{:>6}  {:>8} {:>8} {:>8} {:>8} {:>12} {:>12}",
        "size", "sign", "verify", "seal", "open", "xchacha seal", "xchacha open"
    );
    for size in [100, 1024] {
        let plain = envelope(size);
        let sign_ns = ns_per_op(iterations, || {
            let mut e = plain.clone();
            sign(&mut e, &keys).unwrap();
            black_box(e);
        });
        let mut signed = plain.clone();
        sign(&mut signed, &keys).unwrap();
        let verify_ns = ns_per_op(iterations, || {
            black_box(verify(black_box(&signed), &keys).unwrap());
        });
        let seal_ns = ns_per_op(iterations, || {
            let mut e = plain.clone();
            seal::seal(&mut e, key).unwrap();
            black_box(e);
        });
        let mut sealed = plain.clone();
        seal::seal(&mut sealed, key).unwrap();
        let open_ns = ns_per_op(iterations, || {
            let mut e = sealed.clone();
            seal::open(&mut e, key).unwrap();
            black_box(e);
        });
        let (x_seal_ns, x_open_ns) = xchacha(iterations, size);
        println!(
            "{size:>6}  {sign_ns:>8.0} {verify_ns:>8.0} {seal_ns:>8.0} {open_ns:>8.0} {x_seal_ns:>12.0} {x_open_ns:>12.0}"
        );
    }
}

/// The pure-Rust XChaCha20-Poly1305 (`chacha20poly1305` crate, random 192-bit
/// nonces) over the same sizes, with the same copy into a fresh buffer that
/// `seal`/`open` do: the alternative to `ring` that was measured and not chosen.
fn xchacha(iterations: u32, size: usize) -> (f64, f64) {
    use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
    use chacha20poly1305::XChaCha20Poly1305;
    let cipher = XChaCha20Poly1305::new(&[7; 32].into());
    let plain = vec![b'x'; size];
    let seal_ns = ns_per_op(iterations, || {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut buffer = plain.clone();
        let tag = cipher
            .encrypt_in_place_detached(&nonce, b"bench.orders.created", &mut buffer)
            .unwrap();
        black_box((buffer, tag));
    });
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut sealed = plain.clone();
    let tag = cipher
        .encrypt_in_place_detached(&nonce, b"bench.orders.created", &mut sealed)
        .unwrap();
    let open_ns = ns_per_op(iterations, || {
        let mut buffer = sealed.clone();
        cipher
            .decrypt_in_place_detached(&nonce, b"bench.orders.created", &mut buffer, &tag)
            .unwrap();
        black_box(buffer);
    });
    (seal_ns, open_ns)
}

/// Events/s from one publisher to one subscriber on a fresh memory:// hub.
async fn pubsub(label: &str, layer: Option<SecureLayer>, events: u64) {
    static HUB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let hub = HUB.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let open = || {
        let raw: Arc<dyn EventBus> = Arc::new(busbar_memory::MemoryBus::connect(&format!(
            "bench-security-{hub}"
        )));
        Bus::from_transport(match &layer {
            Some(layer) => layer.layer(raw),
            None => raw,
        })
    };
    let (publisher, subscriber) = (open(), open());
    let mut sub = subscriber
        .subscribe_with::<Message>(
            busbar_core::Pattern::new("bench.events").unwrap(),
            busbar_core::SubscribeOptions {
                capacity: events as usize + 16,
            },
        )
        .await
        .unwrap();
    let payload = serde_json::json!({"order": 12345, "sku": "ABC-123", "qty": 2});
    let start = Instant::now();
    let receive = async {
        let mut got = 0;
        while got < events {
            match sub.next().await {
                Some(Ok(_)) => got += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let send = async {
        for _ in 0..events {
            publisher
                .publish_to("bench.events", &payload)
                .await
                .unwrap();
        }
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        futures::future::join(send, receive),
    )
    .await
    .expect("the pub/sub run finished in time");
    let elapsed = start.elapsed();
    println!(
        "memory:// pub/sub {label:<22} {:>10.0} events/s ({events} events in {elapsed:.2?})",
        events as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (iterations, events) = if quick {
        (20_000, 20_000)
    } else {
        (200_000, 200_000)
    };
    crypto(iterations);
    let keys = KeyRing::new("bench", &[7; 32]).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        pubsub("plain", None, events).await;
        pubsub("signed", Some(SecureLayer::new(keys.clone())), events).await;
        pubsub(
            "signed + encrypted",
            Some(SecureLayer::new(keys).encrypt(true)),
            events,
        )
        .await;
    });
}
