//! Puts through an outage that outlasts its bound (`outage_wait_ms`): the
//! error says whether the item may have been stored, so a producer counting
//! what it stored can be exact.

mod support;

use busbar_core::Error;
use busbar_test_support::RedisServer;
use support::{bus, stats_reach};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_past_the_outage_bound_says_it_was_not_stored() {
    let mut server = RedisServer::start();
    let bus = bus(&format!("{}?outage_wait_ms=300", server.url())).await;
    let q = bus.queue::<u32>("bound.q").unwrap();
    q.put(&1).await.unwrap();
    server.stop();
    // Once the bus knows the connection is gone, nothing can reach Redis.
    stats_reach(&bus, "the loss noticed", |s| s.disconnects >= 1).await;
    match q.put(&2).await {
        Err(Error::Transport(err)) => {
            let text = err.to_string();
            assert!(text.contains("the item was not stored"), "{text}");
            assert!(text.contains("unreachable"), "{text}");
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    server.resume();
    // Back: the put that said "not stored" left nothing behind.
    // Retried only while it says "not stored", so it is stored once.
    support::recovered("a put after the restart", || async {
        match q.put(&3).await {
            Ok(()) => Some(()),
            Err(err) if err.to_string().contains("was not stored") => None,
            Err(err) => panic!("{err:?}"),
        }
    })
    .await;
    assert_eq!(q.len().await.unwrap(), 1, "only the put after the restart");
}

/// A restarted server answers `-LOADING` while it reads its data back: puts
/// and acks made then wait for it (within the outage bound) instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_and_acks_wait_for_a_server_loading_its_data() {
    let mut server =
        RedisServer::start_persistent_slow_loading(std::time::Duration::from_micros(500));
    // 6,000 keys at 0.5 ms each: about 3 s of loading after the restart.
    let filled = server
        .command(&[
            "EVAL",
            "for i=1,6000 do redis.call('SET','fill:'..i,i) end return 1",
            "0",
        ])
        .unwrap();
    assert!(filled.starts_with(":1"), "{filled}");
    let bus = bus(&server.url()).await;
    let q = bus.queue::<u32>("loading.q").unwrap();
    q.put(&1).await.unwrap();
    let delivery = q
        .receive(std::time::Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the item put before the restart");

    server.stop();
    server.resume_loading();
    let still = server.command(&["PING"]).unwrap();
    assert!(
        still.starts_with("-LOADING"),
        "the server must still be loading for this test to mean anything: {still}"
    );
    q.put(&2).await.expect("a put made while redis loads");
    delivery.ack().await.expect("an ack made while redis loads");
    assert!(
        server.command(&["PING"]).unwrap().starts_with("+PONG"),
        "answered only once loaded"
    );
    assert_eq!(
        q.get(std::time::Duration::from_secs(5)).await.unwrap(),
        Some(2)
    );
    assert_eq!(q.len().await.unwrap(), 0, "the acked item is gone");
}
