//! A broker shared by one test binary, on a free loopback port, in a runtime of its own.

#![allow(dead_code, unreachable_pub)]

use std::sync::OnceLock;

/// The URL of this test binary's broker, started on first use.
pub fn broker_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_test_writer()
            .try_init();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("zmq-broker".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("broker runtime");
                runtime.block_on(async move {
                    let broker = busbar_zmq::Broker::bind("tcp://127.0.0.1:0")
                        .await
                        .expect("bind the broker");
                    tx.send(broker.url()).expect("hand over the url");
                    // Serve for as long as the test binary runs.
                    std::future::pending::<()>().await;
                    drop(broker);
                });
            })
            .expect("broker thread");
        rx.recv().expect("the broker started")
    })
}
