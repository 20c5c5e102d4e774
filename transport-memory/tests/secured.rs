//! The secured suite against `memory://`, and security configured by URL.

use busbar_core::{Bus, Error};
use futures::StreamExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static HUB: AtomicU64 = AtomicU64::new(0);

fn connect(
) -> impl Fn() -> futures::future::BoxFuture<'static, busbar_core::Bus> + Send + Sync + Clone {
    let hub = HUB.fetch_add(1, Ordering::Relaxed);
    move || {
        Box::pin(async move {
            busbar_core::Bus::from_transport(std::sync::Arc::new(
                busbar_memory::MemoryBus::connect(&format!("secured-{hub}")),
            ))
        })
    }
}

busbar_conformance::secured_suite!(connect());

/// A directory of key files for one test, removed on drop.
struct KeyDir(PathBuf);

impl KeyDir {
    fn new(test: &str) -> KeyDir {
        let dir = std::env::temp_dir().join(format!("busbar-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        KeyDir(dir)
    }

    /// Writes a hex key file named `name` holding 32 bytes of `byte`.
    fn key(&self, name: &str, byte: u8) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, format!("{:02x}", byte).repeat(32) + "\n").unwrap();
        path.display().to_string()
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn next_text(sub: &mut busbar_core::Subscription<String>) -> String {
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(Ok(text))) => text,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn url_parameters_sign_encrypt_and_ignore_other_keys() {
    let keys = KeyDir::new("url-keys");
    let (k1, k2) = (keys.key("k1", 0x31), keys.key("k2", 0x32));
    let hub = format!("memory://secured-url-{}", std::process::id());
    let signed = format!("{hub}?key_id=k1&key_file={k1}&encrypt=true");
    let (publisher, subscriber) = (
        Bus::connect(&signed).await.unwrap(),
        Bus::connect(&signed).await.unwrap(),
    );
    let foreign = Bus::connect(&format!("{hub}?key_id=k1&key_file={k2}"))
        .await
        .unwrap();
    let plain = Bus::connect(&hub).await.unwrap();
    let mut sub = subscriber
        .subscribe_to::<String>("url.events")
        .await
        .unwrap();
    let mut watch = plain.subscribe_pattern("url.events").await.unwrap();
    foreign.publish_to("url.events", "foreign").await.unwrap();
    plain.publish_to("url.events", "plain").await.unwrap();
    publisher.publish_to("url.events", "secret").await.unwrap();
    assert_eq!(next_text(&mut sub).await, "secret");
    assert_eq!(subscriber.stats().rejected, 2);
    for _ in 0..2 {
        watch.next().await.unwrap().unwrap();
    }
    let below = watch.next().await.unwrap().unwrap();
    assert_eq!(
        below.envelope().header("busbar-seal"),
        Some("chacha20poly1305-s1")
    );
    assert!(!below.payload().windows(6).any(|w| w == b"secret"));
}

#[tokio::test]
async fn url_rotation_and_limits() {
    let keys = KeyDir::new("url-rotation");
    let (old, new) = (keys.key("old", 0x41), keys.key("new", 0x42));
    let hub = format!("memory://secured-rotation-{}", std::process::id());
    let old_bus = Bus::connect(&format!("{hub}?key_id=old&key_file={old}"))
        .await
        .unwrap();
    let rotating = Bus::connect(&format!(
        "{hub}?key_id=new&key_file={new}&accept=old:{old}&max_payload=64"
    ))
    .await
    .unwrap();
    let mut sub = rotating.subscribe_to::<String>("rot.events").await.unwrap();
    old_bus.publish_to("rot.events", "from old").await.unwrap();
    assert_eq!(next_text(&mut sub).await, "from old");
    match rotating.publish_to("rot.events", &"x".repeat(100)).await {
        Err(Error::TooLarge { limit: 64, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn url_errors_name_the_file_never_the_key() {
    let keys = KeyDir::new("url-errors");
    let short = keys.0.join("short");
    std::fs::write(&short, "hunter2hunter2").unwrap();
    let missing = keys.0.join("missing");
    for (file, needle) in [(&short, "at least 32"), (&missing, "missing")] {
        let url = format!("memory://x?key_id=k&key_file={}", file.display());
        match Bus::connect(&url).await {
            Err(err @ Error::InvalidUrl { .. }) => {
                let text = err.to_string();
                assert!(text.contains(needle), "{text}");
                assert!(!text.contains("hunter2"), "{text}");
            }
            other => panic!("expected InvalidUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn rpc_over_pubsub_composes_above_the_layer() {
    use busbar_core::fallback::RpcOverPubSub;
    use busbar_core::security::{KeyRing, SecureLayer};
    use std::sync::Arc;
    let hub = format!("secured-fallback-{}", std::process::id());
    let open = |byte: u8| {
        let keys = KeyRing::new("k1", &[byte; 32]).unwrap();
        let memory: Arc<dyn busbar_core::EventBus> =
            Arc::new(busbar_memory::MemoryBus::connect(&hub));
        Bus::from_transport(Arc::new(RpcOverPubSub::new(
            SecureLayer::new(keys).encrypt(true).layer(memory),
        )))
    };
    let (provider, caller, stranger) = (open(1), open(1), open(2));
    let _serving = provider
        .expose("fallback.double", |x: u32| async move {
            Ok::<_, busbar_core::Fault>(x * 2)
        })
        .await
        .unwrap();
    let stub = caller.stub::<u32, u32>("fallback.double").unwrap();
    assert_eq!(stub.call(&21).await.unwrap(), 42);
    let all = stub.call_all(&4).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(*all[0].as_ref().unwrap(), 8);
    let foreign = stranger
        .stub::<u32, u32>("fallback.double")
        .unwrap()
        .timeout(Duration::from_millis(300));
    assert!(
        foreign.call(&1).await.is_err(),
        "a caller with another key gets no answer"
    );
    assert!(provider.stats().rejected >= 1);
}

#[tokio::test]
async fn encryption_without_keys_fails_closed() {
    use busbar_core::security::{Limits, SecureLayer};
    let memory: std::sync::Arc<dyn busbar_core::EventBus> = std::sync::Arc::new(
        busbar_memory::MemoryBus::connect(&format!("secured-closed-{}", std::process::id())),
    );
    let bus = Bus::from_transport(
        SecureLayer::limits_only(Limits::default())
            .encrypt(true)
            .layer(memory),
    );
    match bus.publish_to("closed.events", "plaintext").await {
        Err(Error::Malformed(reason)) => assert!(reason.contains("no keys"), "{reason}"),
        other => panic!("expected a refusal to send plaintext, got {other:?}"),
    }
}
