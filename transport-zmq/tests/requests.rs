//! Bad input from a client, sent frame by frame with a raw DEALER: the broker
//! validates every envelope before storing or forwarding it, and answers every
//! request whose number (subscription id, provider id, batch number, request
//! id) it could read, so no client waits for its timeout. Each broker here is
//! the test's own, on a free loopback port.

use busbar_core::{wire, ContentType, Envelope, Error, EventBus, Kind, MessageId, Name};
use busbar_zmq::{Broker, BrokerConfig, ZmqBus};
use bytes::Bytes;
use std::time::Duration;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

const WAIT: Duration = Duration::from_secs(10);

const PUBLISH: u8 = 0x12;
const SUBSCRIBE: u8 = 0x10;
const PUT: u8 = 0x20;
const FETCH: u8 = 0x21;
const ACK: u8 = 0x22;
const LEN: u8 = 0x24;
const SERVE: u8 = 0x30;
const CALL: u8 = 0x32;
const CALL_ALL: u8 = 0x33;
const REPLY: u8 = 0x34;
const BATCH: u8 = 0x7F;

const SUBSCRIBED: u8 = 0x90;
const EVENT: u8 = 0x91;
const PUBACK: u8 = 0x92;
const SUBSCRIBE_ERROR: u8 = 0x93;
const PUBLISH_ERROR: u8 = 0x94;
const OK: u8 = 0xA0;
const ITEM: u8 = 0xA1;
const COUNT: u8 = 0xA3;
const ERROR: u8 = 0xAF;
const SERVING: u8 = 0xB0;
const REQUEST: u8 = 0xB1;
const SERVE_ERROR: u8 = 0xB7;
const CALL_ERROR: u8 = 0xB8;
const BROKER_BATCH: u8 = 0xFF;

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

async fn broker() -> Broker {
    // Steady heartbeats: a busy machine never makes a raw client look dead.
    let config = BrokerConfig {
        heartbeat: Duration::from_millis(500),
        liveness: 6,
        ..BrokerConfig::default()
    };
    Broker::bind_with("tcp://127.0.0.1:0", config)
        .await
        .unwrap()
}

fn u64b(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn u32b(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

fn envelope(kind: Kind, subject: &str) -> Envelope {
    Envelope::new(
        kind,
        Name::new(subject).unwrap(),
        ContentType::JSON,
        Bytes::from_static(b"1"),
    )
}

fn encoded(kind: Kind, subject: &str) -> Vec<u8> {
    wire::encode(&envelope(kind, subject)).unwrap().to_vec()
}

/// Three envelopes the client decoder refuses though their head is fine: one
/// byte short, one byte too long, and 300 headers (the limit is 256).
fn malformed(kind: Kind, subject: &str) -> Vec<Vec<u8>> {
    let good = encoded(kind, subject);
    let truncated = good[..good.len() - 1].to_vec();
    let mut trailing = good.clone();
    trailing.push(0);
    // Header count sits after the fixed head, the subject and the content type.
    let at = 28 + 2 + subject.len() + 1 + ContentType::JSON.as_str().len();
    let mut headers = good[..at].to_vec();
    headers.extend_from_slice(&300u16.to_be_bytes());
    for _ in 0..300 {
        headers.extend_from_slice(&[0, 1, b'k', 0, 1, b'v']);
    }
    headers.extend_from_slice(&good[at + 2..]);
    for bad in [&truncated, &trailing, &headers] {
        assert!(wire::decode(&Bytes::from(bad.clone()), 1 << 20).is_err());
    }
    vec![truncated, trailing, headers]
}

/// A hand-driven client speaking the protocol frame by frame.
struct Raw {
    socket: zeromq::DealerSocket,
}

impl Raw {
    async fn hello_with(endpoint: &str, features: Option<&str>) -> Raw {
        let mut socket = zeromq::DealerSocket::new();
        socket.connect(endpoint).await.unwrap();
        let mut raw = Raw { socket };
        match features {
            None => raw.send(&[b"BBZ1", &[0x01], b"raw-test"]).await,
            Some(f) => {
                raw.send(&[b"BBZ1", &[0x01], b"raw-test", f.as_bytes()])
                    .await
            }
        }
        raw.expect(0x81).await;
        raw
    }

    async fn hello(endpoint: &str) -> Raw {
        Raw::hello_with(endpoint, None).await
    }

    async fn send(&mut self, parts: &[&[u8]]) {
        let mut message = ZmqMessage::from(Bytes::copy_from_slice(parts[0]));
        for part in &parts[1..] {
            message.push_back(Bytes::copy_from_slice(part));
        }
        self.socket.send(message).await.unwrap();
    }

    /// The next message other than a heartbeat.
    async fn next(&mut self) -> Vec<Bytes> {
        within("a message from the broker", async {
            loop {
                let message = self.socket.recv().await.unwrap().into_vec();
                if message.get(1).map(|c| c.as_ref()) != Some(&[0x82]) {
                    return message;
                }
            }
        })
        .await
    }

    /// The next message, which must be `command`.
    async fn expect(&mut self, command: u8) -> Vec<Bytes> {
        let message = self.next().await;
        assert_eq!(
            message[1].as_ref(),
            [command],
            "expected command 0x{command:02x}, got {message:?}"
        );
        message
    }

    /// The next message must be the error answer `command` naming `id`.
    async fn expect_error(&mut self, command: u8, id: &[u8]) -> String {
        let message = self.expect(command).await;
        assert_eq!(message[2].as_ref(), id, "{message:?}");
        String::from_utf8_lossy(message.last().unwrap()).into_owned()
    }

    async fn len(&mut self, queue: &str) -> u64 {
        self.send(&[b"BBZ1", &[LEN], &u64b(7), queue.as_bytes()])
            .await;
        let count = self.expect(COUNT).await;
        u64::from_be_bytes(count[3].as_ref().try_into().unwrap())
    }
}

/// Item 2 of issue 14: malformed envelopes were stored by PUT (and answered OK)
/// and forwarded by PUBLISH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelopes_are_refused_before_storing_or_forwarding() {
    let broker = broker().await;
    let mut raw = Raw::hello(broker.endpoint()).await;
    for (i, bad) in malformed(Kind::QueueItem, "bad.env.q").iter().enumerate() {
        let req = u64b(100 + i as u64);
        raw.send(&[b"BBZ1", &[PUT], &req, bad]).await;
        let why = raw.expect_error(ERROR, &req).await;
        assert!(!why.is_empty());
    }
    assert_eq!(
        raw.len("bad.env.q").await,
        0,
        "nothing malformed was stored"
    );
    assert_eq!(broker.stats().rejected, 3);

    let mut subscriber = Raw::hello(broker.endpoint()).await;
    subscriber
        .send(&[b"BBZ1", &[SUBSCRIBE], &u64b(1), b"bad.env.t"])
        .await;
    subscriber.expect(SUBSCRIBED).await;
    let good = encoded(Kind::Event, "bad.env.t");
    let bad = malformed(Kind::Event, "bad.env.t");
    raw.send(&[
        b"BBZ1",
        &[PUBLISH],
        &u64b(1),
        &bad[0],
        &good,
        &bad[1],
        &bad[2],
    ])
    .await;
    let sentinel = encoded(Kind::Event, "bad.env.t");
    raw.send(&[b"BBZ1", &[PUBLISH], &u64b(2), &sentinel]).await;
    let mut seen = Vec::new();
    while !seen.contains(&Bytes::from(sentinel.clone())) {
        let message = subscriber.expect(EVENT).await;
        seen.extend(message[2..].chunks(2).map(|pair| pair[1].clone()));
    }
    assert_eq!(
        seen,
        vec![Bytes::from(good), Bytes::from(sentinel)],
        "only the well-formed events are forwarded"
    );
    assert_eq!(
        broker.stats().rejected,
        6,
        "each refused envelope is counted"
    );
}

/// Item 3 of issue 14: requests with a readable number got no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_with_a_readable_number_gets_an_answer() {
    let broker = broker().await;
    let mut raw = Raw::hello(broker.endpoint()).await;
    let item = encoded(Kind::QueueItem, "answers.q");
    let event = encoded(Kind::Event, "answers.t");
    let reply = encoded(Kind::Reply, "answers.t");

    // Requests with a request number: ERROR req message.
    let (ten, zero) = (u32b(10), u32b(0));
    let errors: Vec<(u64, Vec<&[u8]>)> = vec![
        (11, vec![&[PUT]]),
        (12, vec![&[PUT], &item, b"extra"]),
        (13, vec![&[FETCH], b"answers.q"]),
        (14, vec![&[FETCH], &[0xff, 0xfe], &ten, &zero]),
        (15, vec![&[FETCH], b"answers.q", &[0, 1], &zero]),
        (16, vec![&[LEN], &[0xff]]),
        (17, vec![&[ACK], &[1, 2, 3]]),
        (18, vec![&[PUT], &event]),
    ];
    for (req, parts) in &errors {
        let req = u64b(*req);
        let mut message: Vec<&[u8]> = vec![b"BBZ1", parts[0], &req];
        message.extend(&parts[1..]);
        raw.send(&message).await;
        let why = raw.expect_error(ERROR, &req).await;
        assert!(!why.is_empty(), "{message:?}");
    }

    // A subscription the broker refuses, with its id.
    raw.send(&[b"BBZ1", &[SUBSCRIBE], &u64b(21), b"a.>.b"])
        .await;
    let why = raw.expect_error(SUBSCRIBE_ERROR, &u64b(21)).await;
    assert!(why.contains("a.>.b"), "{why}");
    // A provider the broker refuses, with its id.
    raw.send(&[b"BBZ1", &[SERVE], &u64b(22), b"bad method"])
        .await;
    raw.expect_error(SERVE_ERROR, &u64b(22)).await;

    // A call whose envelope is not a request: CALL_ERROR with its id, at once.
    let wrong = envelope(Kind::Event, "answers.m");
    let bytes = wire::encode(&wrong).unwrap();
    for command in [CALL, CALL_ALL] {
        raw.send(&[b"BBZ1", &[command], &bytes]).await;
        raw.expect_error(CALL_ERROR, &wrong.id.0.to_be_bytes())
            .await;
    }

    // PUBLISH without an envelope, or with one that is not an event: each
    // refused envelope is named, then the batch is acknowledged as usual.
    raw.send(&[b"BBZ1", &[PUBLISH], &u64b(31)]).await;
    raw.expect_error(PUBLISH_ERROR, &u64b(31)).await;
    raw.expect_error(PUBACK, &u64b(31)).await;
    raw.send(&[b"BBZ1", &[PUBLISH], &u64b(32), &event, &reply])
        .await;
    let refused = raw.expect(PUBLISH_ERROR).await;
    assert_eq!(refused[2].as_ref(), u64b(32));
    assert_eq!(refused[3].as_ref(), u32b(1), "the second envelope is named");
    raw.expect_error(PUBACK, &u64b(32)).await;
    assert_eq!(broker.stats().rejected, 14);
}

/// A provider's REPLY the broker cannot forward fails the call at once
/// (CALL_ERROR, as a refused call) instead of leaving the caller to its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_reply_fails_the_call() {
    let broker = broker().await;
    let mut provider = Raw::hello(broker.endpoint()).await;
    provider
        .send(&[b"BBZ1", &[SERVE], &u64b(1), b"answers.m"])
        .await;
    provider.expect(SERVING).await;
    let mut caller = Raw::hello(broker.endpoint()).await;
    let request = envelope(Kind::Request, "answers.m").with_timeout(Duration::from_secs(60));
    let bad_replies = [
        // Not a reply at all.
        encoded(Kind::Event, "answers.m"),
        // A reply to another request.
        {
            let mut reply = envelope(Kind::Reply, "answers.m");
            reply.correlation_id = Some(MessageId(12345));
            wire::encode(&reply).unwrap().to_vec()
        },
    ];
    for bad in &bad_replies {
        caller
            .send(&[b"BBZ1", &[CALL], &wire::encode(&request).unwrap()])
            .await;
        let forwarded = provider.expect(REQUEST).await;
        provider
            .send(&[b"BBZ1", &[REPLY], &forwarded[2], bad])
            .await;
        let why = caller
            .expect_error(CALL_ERROR, &request.id.0.to_be_bytes())
            .await;
        assert!(why.contains("reply"), "{why}");
    }
}

/// The Rust client turns the new answers into errors at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_surfaces_refusals_as_errors() {
    let broker = broker().await;
    let bus = ZmqBus::connect(&broker.url()).await.unwrap();
    let mut wrong = envelope(Kind::Event, "answers.m");
    wrong.deadline_ms = Some(busbar_core::now_millis() + 60_000);
    let err = within("a refused call", bus.call(wrong.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Malformed(_)), "{err:?}");
    let err = within("a refused call_all", bus.call_all(wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Malformed(_)), "{err:?}");
}

/// Item 5 of issue 14: an ACK of an unknown tag said "redelivered".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_says_why_its_tag_is_unknown() {
    let broker = broker().await;
    let mut raw = Raw::hello(broker.endpoint()).await;
    async fn ack(raw: &mut Raw, req: u64, tag: Bytes) -> (u8, String) {
        raw.send(&[b"BBZ1", &[ACK], &u64b(req), &tag]).await;
        let message = raw.next().await;
        let why = message
            .get(3)
            .map(|m| String::from_utf8_lossy(m).into_owned());
        (message[1][0], why.unwrap_or_default())
    }
    /// Puts one item and receives it with `visibility` ms: its delivery tag.
    async fn fetch(raw: &mut Raw, visibility: u32) -> Bytes {
        let item = encoded(Kind::QueueItem, "tags.q");
        raw.send(&[b"BBZ1", &[PUT], &u64b(1), &item]).await;
        raw.expect(OK).await;
        raw.send(&[
            b"BBZ1",
            &[FETCH],
            &u64b(2),
            b"tags.q",
            &u32b(5000),
            &u32b(visibility),
        ])
        .await;
        raw.expect(ITEM).await[3].clone()
    }

    let (answer, why) = ack(&mut raw, 10, Bytes::copy_from_slice(&u64b(999_999))).await;
    assert_eq!(answer, ERROR);
    assert!(why.contains("never issued"), "{why}");
    assert!(!why.contains("visibility"), "{why}");

    let tag = fetch(&mut raw, 60_000).await;
    assert_eq!(ack(&mut raw, 11, tag.clone()).await.0, OK);
    let (answer, why) = ack(&mut raw, 12, tag).await;
    assert_eq!(answer, ERROR);
    assert!(why.contains("already settled"), "{why}");

    // Held for 1 ms: redelivered long before the ack comes.
    let tag = fetch(&mut raw, 1).await;
    raw.send(&[
        b"BBZ1",
        &[FETCH],
        &u64b(3),
        b"tags.q",
        &u32b(5000),
        &u32b(60_000),
    ])
    .await;
    let again = raw.expect(ITEM).await;
    assert_eq!(again[4].as_ref(), u32b(2), "the second attempt");
    let (answer, why) = ack(&mut raw, 13, tag).await;
    assert_eq!(answer, ERROR);
    assert!(why.contains("visibility timeout"), "{why}");
}

/// Item 6 of issue 14: a client that asked for `batch` never got a
/// BROKER_BATCH. The answers to one BATCH now come back in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_to_a_batch_come_back_in_one_broker_batch() {
    let broker = broker().await;
    let mut raw = Raw::hello_with(broker.endpoint(), Some("batch")).await;
    let mut frames: Vec<Vec<u8>> = vec![b"BBZ1".to_vec(), vec![BATCH]];
    for req in 1..=10u64 {
        frames.push(vec![LEN, 0, 2]);
        frames.push(u64b(req).to_vec());
        frames.push(b"batch.q".to_vec());
    }
    let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    raw.send(&parts).await;
    let message = raw.expect(BROKER_BATCH).await;
    // 10 × (head, req, count)
    assert_eq!(message.len(), 2 + 30, "{message:?}");
    for (i, answer) in message[2..].chunks(3).enumerate() {
        assert_eq!(answer[0].as_ref(), [COUNT, 0, 2]);
        assert_eq!(answer[1].as_ref(), u64b(i as u64 + 1));
    }

    // A PUBLISH in a batch: its events do not overtake the answers before it.
    let event = encoded(Kind::Event, "batch.t");
    let (one, eleven) = (u64b(1), u64b(11));
    let parts: Vec<&[u8]> = vec![
        b"BBZ1",
        &[BATCH],
        &[SUBSCRIBE, 0, 2],
        &one,
        b"batch.t",
        &[PUBLISH, 0, 2],
        &one,
        &event,
        &[LEN, 0, 2],
        &eleven,
        b"batch.q",
    ];
    raw.send(&parts).await;
    raw.expect_error(SUBSCRIBED, &u64b(1)).await;
    assert_eq!(raw.expect(EVENT).await[3], Bytes::from(event));
    let message = raw.expect(BROKER_BATCH).await;
    assert_eq!(message.len(), 2 + 2 + 3, "{message:?}");
    assert_eq!(message[2].as_ref(), [PUBACK, 0, 1]);
    assert_eq!(message[4].as_ref(), [COUNT, 0, 2]);

    // Without the feature, each answer comes alone.
    let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let mut plain = Raw::hello(broker.endpoint()).await;
    plain.send(&parts).await;
    for req in 1..=10u64 {
        plain.expect_error(COUNT, &u64b(req)).await;
    }
}
