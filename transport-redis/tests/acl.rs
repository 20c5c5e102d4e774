//! ACL users from the URL: `redis://user:password@host:port`.

use busbar_core::{Bus, Error, Fault};
use busbar_test_support::RedisServer;
use futures::StreamExt;
use std::time::Duration;

use busbar_redis as _;

fn with_user(server: &RedisServer, rules: &[&str]) -> String {
    let mut args = vec!["ACL", "SETUSER", "app", "on", ">s3cret-pw"];
    args.extend_from_slice(rules);
    let reply = server.command(&args).expect("ACL SETUSER");
    assert!(reply.starts_with("+OK"), "ACL SETUSER answered {reply:?}");
    format!("redis://app:s3cret-pw@127.0.0.1:{}", server.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_from_the_url_can_do_everything_it_is_allowed() {
    let server = RedisServer::start();
    let url = with_user(&server, &["~busbar:*", "&*", "+@all"]);
    let (a, b) = (
        Bus::connect(&url).await.unwrap(),
        Bus::connect(&url).await.unwrap(),
    );
    let mut sub = a.subscribe_to::<u32>("acl.*").await.unwrap();
    b.publish_to("acl.one", &1u32).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    assert_eq!(got.unwrap().unwrap().unwrap(), 1);
    let q = b.queue::<u32>("acl.q").unwrap();
    q.put(&2).await.unwrap();
    assert_eq!(
        a.queue::<u32>("acl.q")
            .unwrap()
            .get(Duration::from_secs(5))
            .await
            .unwrap(),
        Some(2)
    );
    let _provider = a
        .expose("acl.inc", |x: u32| async move { Ok::<_, Fault>(x + 1) })
        .await
        .unwrap();
    let stub = b.stub::<u32, u32>("acl.inc").unwrap();
    assert_eq!(stub.call(&41).await.unwrap(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_without_the_password() {
    let server = RedisServer::start();
    with_user(&server, &["~*", "&*", "+@all"]);
    // A long connect timeout: a refused password is not retried, so it fails at once.
    let url = format!(
        "redis://app:wrong-pw@127.0.0.1:{}?connect_timeout=60000",
        server.port()
    );
    let started = std::time::Instant::now();
    let err = Bus::connect(&url)
        .await
        .expect_err("a wrong password must not connect");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a refused password is not retried: {:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-pw"), "the password leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outside_the_users_permissions_fail_clearly() {
    let server = RedisServer::start();
    // Allowed channels but no keys: queues cannot work.
    let url = with_user(&server, &["~other:*", "&*", "+@all"]);
    let bus = Bus::connect(&url).await.unwrap();
    let err = bus
        .queue::<u32>("acl.denied")
        .unwrap()
        .put(&1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("noperm") || format!("{err:?}").contains("NoPerm"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_is_a_prompt_clear_error() {
    let server = RedisServer::start();
    // Redis allows PSUBSCRIBE only for patterns the ACL names literally.
    let url = with_user(&server, &["~busbar:*", "&{busbar:e}:allowed", "+@all"]);
    let bus = Bus::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    let err = bus
        .subscribe_to::<u32>("denied.*")
        .await
        .err()
        .expect("NOPERM");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusals must be prompt"
    );
    // What is allowed still works on the same connection.
    let mut sub = bus.subscribe_to::<u32>("allowed").await.unwrap();
    bus.publish_to("allowed", &5u32).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.next()).await;
    assert_eq!(got.unwrap().unwrap().unwrap(), 5);
}
