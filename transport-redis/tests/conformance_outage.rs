//! The conformance suite's outage rules against `redis://`: each test runs
//! its own redis-server (append-only, fsynced on every write), which the rule
//! kills and starts again on the same port and data directory.

use busbar_conformance::{Broker, Harness};
use busbar_redis as _;
use busbar_test_support::RedisServer;
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};

/// A test's own server, stopped and started by the rules.
struct Restartable(Arc<Mutex<RedisServer>>);

impl Broker for Restartable {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            tokio::task::block_in_place(|| self.0.lock().unwrap().stop());
        })
    }

    fn start(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            tokio::task::block_in_place(|| self.0.lock().unwrap().resume());
        })
    }

    fn keeps_items(&self) -> bool {
        true // append-only, fsynced on every write
    }
}

busbar_conformance::outage_suite!(|| async {
    let server = Arc::new(Mutex::new(RedisServer::start_persistent()));
    let url = server.lock().unwrap().url();
    Harness::new(move || {
        let url = url.clone();
        async move {
            busbar_core::Bus::connect(&url)
                .await
                .expect("connect to the test redis-server")
        }
    })
    .with_broker(Restartable(server))
});
