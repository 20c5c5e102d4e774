//! Clients that vanish while the broker floods them must never freeze it.
//!
//! The `zeromq` 0.7 ROUTER keeps its peers in an `scc::HashMap` whose bucket
//! locks are fair and hand ownership straight to the next waiter. A send
//! locks the bucket asynchronously (`get_async`); a vanished peer is removed
//! with a blocking `remove_sync`, on a runtime worker, by the socket itself and
//! by a send that found the peer gone. When the lock is handed to a send task
//! that then waits for a worker while every worker blocks in `remove_sync`
//! behind it, the broker stops for good (seen in `scripts/soak.py events`).
//!
//! The broker runs here on a runtime of its own with two workers, like the
//! soak's machine, so a frozen broker cannot freeze the test's clock: the test
//! fails on its timeout instead.

use busbar_core::Bus;
use busbar_zmq::{Broker, BrokerConfig, ZmqBus};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// How long a fresh client may wait for the broker's WELCOME.
const ANSWER: Duration = Duration::from_secs(5);
/// Subscribers that keep reading (each a writer task contending for the socket).
const READERS: usize = 4;
/// Rounds of subscribers dropped while flooded.
const ROUNDS: usize = 300;
/// Subscribers dropped at once in each round.
const AT_ONCE: usize = 4;
/// The rounds stop earlier after this long (a slow machine).
const BUDGET: Duration = Duration::from_secs(25);

fn message(parts: &[&[u8]]) -> ZmqMessage {
    let mut message = ZmqMessage::from(Bytes::copy_from_slice(parts[0]));
    for part in &parts[1..] {
        message.push_back(Bytes::copy_from_slice(part));
    }
    message
}

/// Receives until a message whose command byte is `command`, within `limit`.
async fn expect(socket: &mut zeromq::DealerSocket, command: u8, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            let Ok(frames) = socket.recv().await else {
                return false;
            };
            let frames = frames.into_vec();
            if frames.len() >= 2 && frames[1].as_ref() == [command] {
                return true;
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// A raw client that said HELLO and subscribed to `pattern`; why not if the
/// broker did not answer within [`ANSWER`].
async fn subscriber(
    endpoint: &str,
    name: &str,
    pattern: &str,
) -> Result<zeromq::DealerSocket, String> {
    let mut socket = zeromq::DealerSocket::new();
    // The handshake needs the broker too.
    match tokio::time::timeout(ANSWER, socket.connect(endpoint)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(format!("{name} cannot connect: {err}")),
        Err(_) => return Err(format!("{name} got no handshake")),
    }
    let hello = message(&[b"BBZ1", &[0x01], name.as_bytes()]);
    socket.send(hello).await.map_err(|e| e.to_string())?;
    if !expect(&mut socket, 0x81, ANSWER).await {
        return Err(format!("{name} got no WELCOME"));
    }
    let subscribe = message(&[b"BBZ1", &[0x10], &1u64.to_be_bytes(), pattern.as_bytes()]);
    socket.send(subscribe).await.map_err(|e| e.to_string())?;
    if !expect(&mut socket, 0x90, ANSWER).await {
        return Err(format!("{name} got no SUBSCRIBED"));
    }
    Ok(socket)
}

/// One round: [`AT_ONCE`] subscribers join, events flow to them (so their
/// writers send), and they all vanish at once; then a fresh client must be
/// welcomed.
async fn round(endpoint: &str, round: usize) -> Result<(), String> {
    let mut vanishing = Vec::new();
    for i in 0..AT_ONCE {
        let name = format!("vanishing{round}.{i}");
        vanishing.push(subscriber(endpoint, &name, "drop.>").await?);
    }
    if !expect(&mut vanishing[0], 0x91, ANSWER).await {
        return Err("no EVENT reached a fresh subscriber".into());
    }
    drop(vanishing);
    if !answers(endpoint).await {
        return Err("a fresh client got no WELCOME".into());
    }
    Ok(())
}

/// Whether a fresh client gets its WELCOME within [`ANSWER`].
async fn answers(endpoint: &str) -> bool {
    let mut socket = zeromq::DealerSocket::new();
    let connected = tokio::time::timeout(ANSWER, socket.connect(endpoint)).await;
    if !matches!(connected, Ok(Ok(()))) {
        return false;
    }
    if socket
        .send(message(&[b"BBZ1", &[0x01], b"probe"]))
        .await
        .is_err()
    {
        return false;
    }
    expect(&mut socket, 0x81, ANSWER).await
}

#[derive(Serialize, Deserialize)]
struct Event {
    n: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_survives_subscribers_dropped_under_a_flood() {
    let broker_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = BrokerConfig {
        // Generous: no live client may look dead on a busy machine.
        heartbeat: Duration::from_secs(1),
        liveness: 600,
        high_water: 2_000,
        ..BrokerConfig::default()
    };
    let broker = broker_runtime
        .spawn(Broker::bind_with("tcp://127.0.0.1:0", config))
        .await
        .unwrap()
        .unwrap();
    let endpoint = broker.endpoint().to_string();

    // Readers keep every writer busy sending, so sends contend for the socket.
    let mut readers = Vec::new();
    for i in 0..READERS {
        let mut socket = subscriber(&endpoint, &format!("reader{i}"), "drop.>")
            .await
            .unwrap();
        readers.push(tokio::spawn(
            async move { while socket.recv().await.is_ok() {} },
        ));
    }
    let publisher = Bus::from_transport(Arc::new(
        ZmqBus::connect(&format!("{}?publish_buffer=1000", broker.url()))
            .await
            .unwrap(),
    ));
    let publishing = tokio::spawn(async move {
        for n in 0.. {
            // Errors are the probe's business: a frozen broker fails the test there.
            if publisher.publish_to("drop.e", &Event { n }).await.is_err() {
                return;
            }
        }
    });

    // Each round has a small chance to freeze a broken broker (two sends must
    // meet on the lock at the moment a peer vanishes): hundreds of rounds make
    // a miss unlikely.
    let started = std::time::Instant::now();
    let mut frozen = None;
    let mut rounds = 0;
    while rounds < ROUNDS && started.elapsed() < BUDGET {
        rounds += 1;
        if let Err(why) = round(&endpoint, rounds).await {
            frozen = Some(why);
            break;
        }
    }

    publishing.abort();
    for reader in readers {
        reader.abort();
    }
    let stats = broker.stats();
    drop(broker);
    // Never waits: a frozen broker's workers are stuck for good.
    broker_runtime.shutdown_background();
    if let Some(why) = frozen {
        panic!("the broker stopped answering in round {rounds} ({why}): {stats:?}");
    }
    eprintln!("{rounds} rounds of {AT_ONCE} subscribers dropped under a flood; {stats:?}");
}
