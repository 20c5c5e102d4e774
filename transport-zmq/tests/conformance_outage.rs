//! The conformance suite's outage rules against `zmq://`: each test runs its
//! own in-process broker on a free loopback port, which the rule shuts down
//! and binds again on the same port. The broker keeps queues in its memory,
//! so what it held is lost with it (`keeps_items` is false).

use busbar_conformance::{Broker as Restartable, Harness};
use busbar_zmq::Broker;
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::Mutex;

/// A test's own broker, stopped and started by the rules.
struct OwnBroker {
    endpoint: String,
    running: Mutex<Option<Broker>>,
}

impl Restartable for OwnBroker {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(broker) = self.running.lock().await.take() {
                broker.shutdown().await;
            }
        })
    }

    fn start(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let broker = Broker::bind(&self.endpoint)
                .await
                .expect("bind the broker again on its port");
            *self.running.lock().await = Some(broker);
        })
    }

    fn keeps_items(&self) -> bool {
        false
    }
}

busbar_conformance::outage_suite!(|| async {
    let broker = Broker::bind("tcp://127.0.0.1:0")
        .await
        .expect("bind the broker");
    let url = broker.url();
    let own = OwnBroker {
        endpoint: broker.endpoint().to_owned(),
        running: Mutex::new(Some(broker)),
    };
    let url = Arc::new(url);
    Harness::new(move || {
        let url = url.clone();
        async move {
            busbar_core::Bus::connect(&url)
                .await
                .expect("connect to the test broker")
        }
    })
    .with_broker(own)
});
