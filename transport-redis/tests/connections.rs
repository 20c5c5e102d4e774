//! Connections a bus holds: `get` lanes borrow pooled connections for their
//! pops, so a bus getting from many queues does not keep one per queue.

use busbar_core::Bus;
use busbar_test_support::RedisServer;
use std::time::Duration;

use busbar_redis as _;

/// Connections open on `server` (`CLIENT LIST`), the asking one included.
async fn connections(server: &RedisServer) -> usize {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getting_from_many_queues_holds_few_connections() {
    const QUEUES: u32 = 40;
    let server = RedisServer::start();
    let bus = Bus::connect(&server.url()).await.unwrap();
    for n in 0..QUEUES {
        let q = bus.queue::<u32>(&format!("many.q{n}")).unwrap();
        q.put(&n).await.unwrap();
        // Quick gets, so the lane takes ahead and settles in the background.
        assert_eq!(q.get(Duration::from_secs(5)).await.unwrap(), Some(n));
        assert_eq!(q.get(Duration::ZERO).await.unwrap(), None);
    }
    let open = connections(&server).await;
    assert!(
        open < 10,
        "{open} connections open after getting from {QUEUES} queues"
    );
    bus.shutdown().await.unwrap();
}
