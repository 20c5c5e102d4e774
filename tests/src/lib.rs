//! The conformance suite: the contract of `docs/semantics.md` as async tests that
//! every transport runs.
//!
//! A transport instantiates the whole suite in its own `tests/conformance.rs`:
//!
//! ```ignore
//! busbar_conformance::suite!(|| async { busbar_core::Bus::connect("memory://").await.unwrap() });
//! ```
//!
//! Each test gets a [`Harness`] that opens as many buses as it needs on the same
//! backend (as separate processes would) and names everything under a prefix
//! unique to the test, so tests never see each other's traffic. A capability the
//! transport does not declare is checked to answer `Error::Unsupported`; nothing
//! is skipped silently.

use busbar_core::Bus;
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long any single wait in the suite may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

type Connect = Arc<dyn Fn() -> BoxFuture<'static, Bus> + Send + Sync>;

/// What a test gets: a way to open buses on one backend, and a unique name prefix.
#[derive(Clone)]
pub struct Harness {
    connect: Connect,
    prefix: String,
}

impl Harness {
    /// A harness opening buses with `connect`.
    pub fn new<F, Fut>(connect: F) -> Harness
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Bus> + Send + 'static,
    {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("t{}x{n}", std::process::id());
        Harness {
            connect: Arc::new(move || Box::pin(connect())),
            prefix,
        }
    }

    /// Opens a new bus on the backend (a separate connection, as another process would).
    pub async fn bus(&self) -> Bus {
        (self.connect)().await
    }

    /// A name unique to this test: `<prefix>.<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }
}

/// Waits for `future` at most [`WAIT`], failing the test with `what` if it takes longer.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Expands to one `#[tokio::test]` per rule of the suite, each opening buses with `$connect`.
#[macro_export]
macro_rules! suite {
    ($connect:expr) => {
        $crate::__suite_tests!($connect;
            smoke_publish_subscribe,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __suite_tests {
    ($connect:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::$test($crate::Harness::new($connect)).await;
            }
        )*
    };
}

/// A subscriber receives an event published after `subscribe` returned.
pub async fn smoke_publish_subscribe(h: Harness) {
    use futures::StreamExt;
    let bus = h.bus().await;
    let topic = h.name("smoke");
    let mut sub = bus.subscribe_to::<String>(&topic).await.unwrap();
    bus.publish_to(&topic, "hello").await.unwrap();
    let got = within("the event", sub.next()).await.unwrap().unwrap();
    assert_eq!(got, "hello");
}
