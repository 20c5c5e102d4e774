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
