//! Signed and encrypted buses: the [`security`](busbar_core::security) layer over
//! any transport.
//!
//! A transport runs these with [`secured_suite!`](crate::secured_suite) and the
//! same factory it gives [`suite!`](crate::suite): each test opens plain buses
//! on the backend and puts the layer on top with the keys it needs, so it can
//! also reach below the layer (the plain bus's transport) to inject unsigned,
//! foreign or tampered envelopes, and to look at what travels.
//!
//! To show that something is *not* delivered, a test sends it and then a valid
//! sentinel through the same underlying connection, and checks that only the
//! sentinel arrives (per-publisher order makes that sound) and that the refusals
//! were counted in `rejected`.

use crate::{has_acks, has_queues, has_rpc, next_ok, ok, within, Harness, WAIT};
use busbar_core::security::{seal, sign, KeyRing, Limits, SecureLayer};
use busbar_core::transport::RawSubscription;
use busbar_core::{
    Bus, ContentType, Envelope, Error, Fault, Kind, Name, Pattern, SubscribeOptions,
};
use futures::StreamExt;
use std::time::Duration;

/// How long a call that must get no answer waits before it times out.
const NO_ANSWER: Duration = Duration::from_millis(300);

/// A key ring signing with `id` whose secret is 32 bytes of `byte`.
pub fn ring(id: &str, byte: u8) -> KeyRing {
    ok("a key ring", KeyRing::new(id, &[byte; 32]))
}

/// The key most tests share.
pub fn shared_ring() -> KeyRing {
    ring("k1", 0x51)
}

/// `plain` (an unsecured bus) seen through `layer`: same connection, secured.
pub fn secure(plain: &Bus, layer: &SecureLayer) -> Bus {
    Bus::from_transport(layer.layer(plain.transport().clone()))
}

/// A new connection on the backend, secured with `layer`.
pub async fn secured_bus(h: &Harness, layer: &SecureLayer) -> Bus {
    secure(&h.bus().await, layer)
}

fn rejected(bus: &Bus) -> u64 {
    bus.stats().rejected
}

/// A raw subscription to `topic` on the transport of `bus`, below any layer.
async fn raw_subscribe(bus: &Bus, topic: &str) -> RawSubscription {
    ok(
        "a raw subscription",
        bus.transport()
            .subscribe(
                &ok("a pattern", Pattern::new(topic)),
                SubscribeOptions::default(),
            )
            .await,
    )
}

async fn next_raw(what: &str, sub: &mut RawSubscription) -> Envelope {
    match within(what, sub.next()).await {
        Some(busbar_core::mailbox::Incoming::Message(envelope)) => envelope,
        other => panic!("{what}: expected an envelope, got {other:?}"),
    }
}

fn event(topic: &str, text: &str) -> Envelope {
    Envelope::new(
        Kind::Event,
        ok("a topic", Name::new(topic)),
        ContentType::JSON,
        ok("json", serde_json::to_vec(text)).into(),
    )
}

/// Two buses with the same key exchange events, and nothing is rejected.
pub async fn signed_buses_exchange_events(h: Harness) {
    let layer = SecureLayer::new(shared_ring());
    let (publisher, subscriber) = (secured_bus(&h, &layer).await, secured_bus(&h, &layer).await);
    let topic = h.name("signed.events");
    let mut sub = ok("subscribe", subscriber.subscribe_to::<String>(&topic).await);
    for text in ["one", "two", "three"] {
        ok("publish", publisher.publish_to(&topic, text).await);
    }
    for text in ["one", "two", "three"] {
        assert_eq!(next_ok("a signed event", &mut sub).await, text);
    }
    assert_eq!(rejected(&subscriber), 0);
}

/// Two buses with the same key share a queue: `get`, and `receive` + `ack`.
pub async fn signed_buses_share_a_queue(h: Harness) {
    let layer = SecureLayer::new(shared_ring());
    let (producer, consumer) = (secured_bus(&h, &layer).await, secured_bus(&h, &layer).await);
    let name = h.name("signed.queue");
    if !has_queues(&producer, &name).await {
        return;
    }
    let put = ok("queue", producer.queue::<u32>(&name));
    let take = ok("queue", consumer.queue::<u32>(&name));
    ok("put", put.put(&1).await);
    ok("put", put.put(&2).await);
    assert_eq!(ok("get", within("get", take.get(WAIT)).await), Some(1));
    if has_acks(&consumer, &name).await {
        let delivery = ok("receive", within("receive", take.receive(WAIT)).await);
        let delivery = delivery.expect("the second item");
        assert_eq!(*delivery, 2);
        ok("ack", delivery.ack().await);
    } else {
        assert_eq!(ok("get", within("get", take.get(WAIT)).await), Some(2));
    }
    assert_eq!(ok("len", take.len().await), 0);
    assert_eq!(rejected(&consumer), 0);
}

/// Two buses with the same key make RPC calls: answers, `call_all` and error
/// replies (whose kind and message survive signing) all arrive.
pub async fn signed_buses_make_rpc_calls(h: Harness) {
    let layer = SecureLayer::new(shared_ring());
    let (provider, caller) = (secured_bus(&h, &layer).await, secured_bus(&h, &layer).await);
    let method = h.name("signed.product");
    if !has_rpc(&provider, &method).await {
        return;
    }
    let _serving = ok(
        "expose",
        provider
            .expose(&method, |(a, b): (i64, i64)| async move {
                if a < 0 {
                    return Err(Fault::new("Negative", "a is negative"));
                }
                Ok(a * b)
            })
            .await,
    );
    let stub = ok("stub", caller.stub::<(i64, i64), i64>(&method));
    assert_eq!(ok("call", within("call", stub.call(&(6, 7))).await), 42);
    match within("failing call", stub.call(&(-1, 7))).await {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(
                (kind.as_str(), message.as_str()),
                ("Negative", "a is negative")
            )
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    if caller.capabilities().call_all {
        let answers = ok("call_all", within("call_all", stub.call_all(&(2, 3))).await);
        assert_eq!(answers.len(), 1);
        assert_eq!(ok("the answer", answers.into_iter().next().unwrap()), 6);
    }
    assert_eq!(rejected(&caller), 0);
    assert_eq!(rejected(&provider), 0);
}

/// Events signed with another key, or not signed, are not delivered; each is
/// counted in `rejected`.
pub async fn foreign_and_unsigned_events_are_not_delivered(h: Harness) {
    let subscriber = secured_bus(&h, &SecureLayer::new(shared_ring())).await;
    let wire = h.bus().await;
    let foreign = secure(&wire, &SecureLayer::new(ring("k1", 0x99)));
    let other_id = secure(&wire, &SecureLayer::new(ring("k2", 0x51)));
    let valid = secure(&wire, &SecureLayer::new(shared_ring()));
    let topic = h.name("foreign.events");
    let mut sub = ok("subscribe", subscriber.subscribe_to::<String>(&topic).await);
    ok("publish", wire.publish_to(&topic, "unsigned").await);
    ok(
        "publish",
        foreign.publish_to(&topic, "same id, other secret").await,
    );
    ok(
        "publish",
        other_id.publish_to(&topic, "unknown key id").await,
    );
    ok("publish", valid.publish_to(&topic, "sentinel").await);
    assert_eq!(next_ok("the sentinel", &mut sub).await, "sentinel");
    assert_eq!(rejected(&subscriber), 3);
}

/// An RPC call signed with another key, or unsigned, gets no answer at all and
/// times out; the provider counts each request it refused.
pub async fn foreign_and_unsigned_calls_get_no_answer(h: Harness) {
    let provider = secured_bus(&h, &SecureLayer::new(shared_ring())).await;
    let method = h.name("foreign.echo");
    if !has_rpc(&provider, &method).await {
        return;
    }
    let _serving = ok(
        "expose",
        provider
            .expose(&method, |x: u32| async move { Ok::<_, Fault>(x) })
            .await,
    );
    let wire = h.bus().await;
    let foreign = secure(&wire, &SecureLayer::new(ring("k1", 0x99)));
    for (who, caller) in [("unsigned", &wire), ("foreign", &foreign)] {
        let stub = ok("stub", caller.stub::<u32, u32>(&method)).timeout(NO_ANSWER);
        match within("a refused call", stub.call(&1)).await {
            Err(Error::Timeout) => {}
            other => panic!("{who} call: expected a timeout, got {other:?}"),
        }
    }
    let valid = secure(&wire, &SecureLayer::new(shared_ring()));
    let stub = ok("stub", valid.stub::<u32, u32>(&method));
    assert_eq!(
        ok("valid call", within("a valid call", stub.call(&5)).await),
        5
    );
    assert_eq!(rejected(&provider), 2);
}

/// Queue items signed with another key, or unsigned, are never consumed as
/// valid: the consumer moves them to `_dead.<queue>` (with a `busbar-rejected`
/// header) and takes the next valid item.
pub async fn foreign_and_unsigned_queue_items_are_not_consumed(h: Harness) {
    let consumer = secured_bus(&h, &SecureLayer::new(shared_ring())).await;
    let name = h.name("foreign.queue");
    if !has_queues(&consumer, &name).await {
        return;
    }
    let wire = h.bus().await;
    let foreign = secure(&wire, &SecureLayer::new(ring("k1", 0x99)));
    let valid = secure(&wire, &SecureLayer::new(shared_ring()));
    ok("put", ok("queue", wire.queue::<u32>(&name)).put(&1).await);
    ok(
        "put",
        ok("queue", foreign.queue::<u32>(&name)).put(&2).await,
    );
    ok("put", ok("queue", valid.queue::<u32>(&name)).put(&3).await);
    let queue = ok("queue", consumer.queue::<u32>(&name));
    assert_eq!(ok("get", within("get", queue.get(WAIT)).await), Some(3));
    assert_eq!(rejected(&consumer), 2);
    let dead = ok("queue", wire.queue::<u32>(&format!("_dead.{name}")));
    assert_eq!(ok("dead len", dead.len().await), 2);
    let refused = ok(
        "raw get",
        wire.transport()
            .queue_get(dead.name(), Duration::from_millis(0))
            .await,
    )
    .expect("a dead letter");
    assert_eq!(refused.header("busbar-rejected"), Some("unsigned"));

    if has_acks(&consumer, &name).await {
        ok("put", ok("queue", wire.queue::<u32>(&name)).put(&4).await);
        ok("put", ok("queue", valid.queue::<u32>(&name)).put(&5).await);
        let delivery = ok("receive", within("receive", queue.receive(WAIT)).await);
        let delivery = delivery.expect("the valid item");
        assert_eq!(*delivery, 5);
        ok("ack", delivery.ack().await);
        assert_eq!(rejected(&consumer), 3);
        assert_eq!(ok("len", queue.len().await), 0);
        assert_eq!(ok("dead len", dead.len().await), 2);
    }
}

/// Envelopes signed with the right key but altered below the layer (payload,
/// header, timestamp, signature, key id), replayed, or older than the freshness
/// window are rejected and counted. A signed request altered below the layer
/// gets no answer; an intact one is answered with a signed reply, and the same
/// request sent again (a replay) gets no answer.
pub async fn tampered_envelopes_below_the_layer_are_rejected(h: Harness) {
    let keys = shared_ring();
    let subscriber = secured_bus(&h, &SecureLayer::new(keys.clone())).await;
    let wire = h.bus().await;
    let raw = wire.transport().clone();
    let topic = h.name("tampered.events");
    let mut sub = ok("subscribe", subscriber.subscribe_to::<String>(&topic).await);

    let mut genuine = event(&topic, "genuine");
    ok("sign", sign(&mut genuine, &keys));
    let mut tampered = Vec::new();
    let mut payload = genuine.clone();
    payload.payload = b"\"forged\""[..].into();
    tampered.push(payload);
    let mut header = genuine.clone();
    header.headers.push(("role".into(), "admin".into()));
    tampered.push(header);
    let mut timestamp = genuine.clone();
    timestamp.timestamp_ms += 1;
    tampered.push(timestamp);
    let mut signature = genuine.clone();
    let mut bytes = signature.signature.to_vec();
    *bytes.last_mut().unwrap() ^= 1;
    signature.signature = bytes.into();
    tampered.push(signature);
    let mut key_id = genuine.clone();
    let mut bytes = key_id.signature.to_vec();
    bytes[3] = b'9';
    key_id.signature = bytes.into();
    tampered.push(key_id);
    let mut stale = event(&topic, "stale");
    stale.timestamp_ms -= 10 * 60 * 1000;
    ok("sign", sign(&mut stale, &keys));
    tampered.push(stale);
    let count = tampered.len() as u64;

    ok("publish", raw.publish(genuine.clone()).await);
    ok("publish a replay", raw.publish(genuine).await);
    for envelope in tampered {
        ok("publish", raw.publish(envelope).await);
    }
    let mut sentinel = event(&topic, "sentinel");
    ok("sign", sign(&mut sentinel, &keys));
    ok("publish", raw.publish(sentinel).await);
    assert_eq!(next_ok("the genuine event", &mut sub).await, "genuine");
    assert_eq!(next_ok("the sentinel", &mut sub).await, "sentinel");
    assert_eq!(rejected(&subscriber), 1 + count);

    let provider = secured_bus(&h, &SecureLayer::new(keys.clone())).await;
    let method = h.name("tampered.echo");
    if !has_rpc(&provider, &method).await {
        return;
    }
    let _serving = ok(
        "expose",
        provider
            .expose(&method, |x: u32| async move { Ok::<_, Fault>(x) })
            .await,
    );
    let request = |text: &'static [u8], timeout| {
        let mut request = Envelope::new(
            Kind::Request,
            ok("method", Name::new(&method)),
            ContentType::JSON,
            text.into(),
        )
        .with_timeout(timeout);
        ok("sign", sign(&mut request, &keys));
        request
    };
    let mut forged = request(b"1", NO_ANSWER);
    forged.payload = b"2"[..].into();
    match within("a tampered call", raw.call(forged)).await {
        Err(Error::Timeout) => {}
        other => panic!("a tampered request must get no answer, got {other:?}"),
    }
    let once = request(b"7", Duration::from_secs(2));
    let reply = ok(
        "an intact call",
        within("an intact call", raw.call(once.clone())).await,
    );
    assert_eq!(&reply.payload[..], b"7");
    assert!(!reply.signature.is_empty(), "the reply is signed");
    assert!(busbar_core::security::verify(&reply, &keys).is_ok());
    match within("a replayed call", raw.call(once)).await {
        Err(Error::Timeout) => {}
        other => panic!("a replayed request must get no answer, got {other:?}"),
    }
    assert_eq!(rejected(&provider), 2);
}

/// With encryption on, the payload below the layer is not the plaintext (and
/// the envelope is marked sealed and signed), while buses with the key read it.
/// A bus that requires encryption refuses a signed but unsealed payload.
pub async fn encrypted_payloads_are_not_plaintext_below_the_layer(h: Harness) {
    const SECRET: &str = "the launch code is 0000";
    let sealed = SecureLayer::new(shared_ring()).encrypt(true);
    let wire = h.bus().await;
    let publisher = secure(&wire, &sealed);
    let plain_publisher = secure(&wire, &SecureLayer::new(shared_ring()));
    let subscriber = secured_bus(&h, &sealed).await;
    let lenient = secured_bus(&h, &SecureLayer::new(shared_ring())).await;
    let watcher = h.bus().await;
    let topic = h.name("sealed.events");
    let mut sub = ok("subscribe", subscriber.subscribe_to::<String>(&topic).await);
    let mut lenient_sub = ok("subscribe", lenient.subscribe_to::<String>(&topic).await);
    let mut raw = raw_subscribe(&watcher, &topic).await;

    ok(
        "publish",
        plain_publisher.publish_to(&topic, "unsealed").await,
    );
    ok("publish", publisher.publish_to(&topic, SECRET).await);
    let unsealed = next_raw("the unsealed event below the layer", &mut raw).await;
    assert!(!seal::is_sealed(&unsealed));
    let below = next_raw("the sealed event below the layer", &mut raw).await;
    let plaintext = ok("json", serde_json::to_vec(SECRET));
    assert!(seal::is_sealed(&below), "marked sealed: {below:?}");
    assert!(!below.signature.is_empty(), "signed");
    assert!(
        !below
            .payload
            .windows(plaintext.len())
            .any(|w| w == plaintext),
        "the plaintext travels below the layer"
    );
    assert!(!below.payload.windows(6).any(|w| w == b"launch"));
    assert_eq!(next_ok("the decrypted event", &mut sub).await, SECRET);
    assert_eq!(rejected(&subscriber), 1, "the unsealed event is refused");
    assert_eq!(
        next_ok("the unsealed event", &mut lenient_sub).await,
        "unsealed"
    );
    assert_eq!(
        next_ok("the decrypted event", &mut lenient_sub).await,
        SECRET
    );

    let name = h.name("sealed.queue");
    if has_queues(&publisher, &name).await {
        ok(
            "put",
            ok("queue", publisher.queue::<String>(&name))
                .put(&SECRET.to_owned())
                .await,
        );
        let item = ok(
            "raw get",
            watcher
                .transport()
                .queue_get(&ok("name", Name::new(&name)), WAIT)
                .await,
        )
        .expect("the sealed item");
        assert!(seal::is_sealed(&item));
        assert!(!item
            .payload
            .windows(plaintext.len())
            .any(|w| w == plaintext));
    }

    let provider = secured_bus(&h, &sealed).await;
    let method = h.name("sealed.echo");
    if has_rpc(&provider, &method).await {
        let _serving = ok(
            "expose",
            provider
                .expose(&method, |text: String| async move { Ok::<_, Fault>(text) })
                .await,
        );
        let stub = ok("stub", subscriber.stub::<String, String>(&method));
        let answer = ok(
            "call",
            within("a sealed call", stub.call(&SECRET.to_owned())).await,
        );
        assert_eq!(answer, SECRET);
        let mut request = Envelope::new(
            Kind::Request,
            ok("method", Name::new(&method)),
            ContentType::JSON,
            plaintext.clone().into(),
        )
        .with_timeout(WAIT);
        let keys = shared_ring();
        ok("seal", seal::seal(&mut request, keys.signing()));
        ok("sign", sign(&mut request, &keys));
        let reply = ok(
            "raw call",
            within("a raw call", watcher.transport().call(request)).await,
        );
        assert!(seal::is_sealed(&reply), "the reply is sealed: {reply:?}");
        assert!(!reply
            .payload
            .windows(plaintext.len())
            .any(|w| w == plaintext));
    }
}

/// Limits: a payload over the limit is refused on send with `TooLarge`; one that
/// arrives over the receiver's limits (payload or header count) is rejected and
/// counted.
pub async fn oversized_envelopes_are_refused_on_send_and_receipt(h: Harness) {
    let limits = Limits {
        max_payload: 1_000,
        max_headers: 4,
        ..Limits::default()
    };
    let strict = SecureLayer::new(shared_ring()).limits(limits);
    let wire = h.bus().await;
    let sender = secure(&wire, &strict);
    let lax = secure(&wire, &SecureLayer::new(shared_ring()));
    let subscriber = secured_bus(&h, &strict).await;
    let topic = h.name("limits.events");
    let big = "x".repeat(2_000);
    match sender.publish_to(&topic, &big).await {
        Err(Error::TooLarge { limit: 1_000, .. }) => {}
        other => panic!("expected TooLarge on send, got {other:?}"),
    }
    let mut sub = ok("subscribe", subscriber.subscribe_to::<String>(&topic).await);
    ok("publish", lax.publish_to(&topic, &big).await);
    let mut headers = event(&topic, "headers");
    headers.headers = (0..5).map(|i| (format!("h{i}"), "v".into())).collect();
    ok("publish", lax.transport().publish(headers).await);
    ok("publish", sender.publish_to(&topic, "sentinel").await);
    assert_eq!(next_ok("the sentinel", &mut sub).await, "sentinel");
    assert_eq!(rejected(&subscriber), 2);
}

/// Key rotation: a bus accepting the old and the new key reads both, while a
/// bus that dropped the old key refuses it.
pub async fn rotation_accepts_every_listed_key(h: Harness) {
    let old = ring("old", 0x01);
    let new = ok("accept", ring("new", 0x02).accept("old", &[0x01; 32]));
    let strict = ring("new", 0x02);
    let wire = h.bus().await;
    let old_sender = secure(&wire, &SecureLayer::new(old));
    let new_sender = secure(&wire, &SecureLayer::new(new.clone()));
    let rotating = secured_bus(&h, &SecureLayer::new(new)).await;
    let finished = secured_bus(&h, &SecureLayer::new(strict)).await;
    let topic = h.name("rotation.events");
    let mut rotating_sub = ok("subscribe", rotating.subscribe_to::<String>(&topic).await);
    let mut finished_sub = ok("subscribe", finished.subscribe_to::<String>(&topic).await);
    ok("publish", old_sender.publish_to(&topic, "old").await);
    ok("publish", new_sender.publish_to(&topic, "new").await);
    assert_eq!(next_ok("old-key event", &mut rotating_sub).await, "old");
    assert_eq!(next_ok("new-key event", &mut rotating_sub).await, "new");
    assert_eq!(next_ok("new-key event", &mut finished_sub).await, "new");
    assert_eq!(rejected(&finished), 1);
    assert_eq!(rejected(&rotating), 0);
}

/// A reply from a provider that is not signed with an accepted key fails the
/// call with `Malformed` (the reply is never handed over as an answer).
pub async fn unsigned_replies_are_refused(h: Harness) {
    let plain_provider = h.bus().await;
    let method = h.name("unsigned.reply");
    if !has_rpc(&plain_provider, &method).await {
        return;
    }
    let _serving = ok(
        "expose",
        plain_provider
            .expose(&method, |x: u32| async move { Ok::<_, Fault>(x) })
            .await,
    );
    let caller = secured_bus(&h, &SecureLayer::new(shared_ring())).await;
    let stub = ok("stub", caller.stub::<u32, u32>(&method));
    match within("a call answered unsigned", stub.call(&1)).await {
        Err(Error::Malformed(reason)) => {
            assert!(reason.contains("rejected: unsigned"), "{reason}")
        }
        other => panic!("expected the unsigned reply to be refused, got {other:?}"),
    }
    assert_eq!(rejected(&caller), 1);
}

/// Expands to one `#[tokio::test]` per rule of the secured suite, each opening
/// plain buses with `$connect` (the same factory [`suite!`](crate::suite) takes).
#[macro_export]
macro_rules! secured_suite {
    ($connect:expr) => {
        $crate::__secured_tests!($connect;
            signed_buses_exchange_events,
            signed_buses_share_a_queue,
            signed_buses_make_rpc_calls,
            foreign_and_unsigned_events_are_not_delivered,
            foreign_and_unsigned_calls_get_no_answer,
            foreign_and_unsigned_queue_items_are_not_consumed,
            tampered_envelopes_below_the_layer_are_rejected,
            encrypted_payloads_are_not_plaintext_below_the_layer,
            oversized_envelopes_are_refused_on_send_and_receipt,
            rotation_accepts_every_listed_key,
            unsigned_replies_are_refused,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __secured_tests {
    ($connect:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::secured::$test($crate::Harness::new($connect)).await;
            }
        )*
    };
}

/// Wraps a suite factory so every bus it opens sits behind `layer`: the whole
/// conformance suite then runs signed (or signed and sealed), which shows the
/// security layer keeps the contract on that transport.
///
/// ```ignore
/// busbar_conformance::suite!(busbar_conformance::secured::behind(connect(), sealing_layer()));
/// ```
pub fn behind<F, Fut>(
    connect: F,
    layer: SecureLayer,
) -> impl Fn() -> futures::future::BoxFuture<'static, Bus> + Send + Sync + Clone
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Bus> + Send + 'static,
{
    let layer = std::sync::Arc::new(layer);
    move || {
        let (connect, layer) = (connect.clone(), layer.clone());
        Box::pin(async move { secure(&connect().await, &layer) })
    }
}

/// A layer signing every envelope with [`shared_ring`].
pub fn signing_layer() -> SecureLayer {
    SecureLayer::new(shared_ring())
}

/// A layer sealing (encrypting) and signing every envelope with [`shared_ring`].
pub fn sealing_layer() -> SecureLayer {
    SecureLayer::new(shared_ring()).encrypt(true)
}
