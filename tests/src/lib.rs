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
//!
//! The rules live in one module per concern, each test a `pub async fn` taking a
//! [`Harness`] whose doc states the rule it checks:
//! [`pubsub`], [`queue`], [`rpc`], [`rpc_faults`], [`names`], [`limits`] and
//! [`lifecycle`].
//!
//! The rules about outages ([`outage`]) stop the broker: each test gets a
//! broker of its own, through [`outage_suite!`] and [`Harness::with_broker`],
//! in a transport's `tests/conformance_outage.rs`. A transport without a
//! broker runs them too, with no outage.
//!
//! Waits are bounded ([`within`], [`within_long`]) and never sleep: a test waits
//! for the event itself. To show that something does *not* arrive, a test
//! publishes a later sentinel and checks that nothing else came before it, which
//! per-publisher order makes sound.
#![deny(missing_docs)]

use busbar_core::{Bus, Error, Result};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub mod lifecycle;
pub mod limits;
pub mod names;
pub mod outage;
pub mod pubsub;
pub mod queue;
pub mod rpc;
pub mod rpc_faults;
pub mod secured;

pub use lifecycle::*;
pub use limits::*;
pub use names::*;
pub use outage::*;
pub use pubsub::*;
pub use queue::*;
pub use rpc::*;
pub use rpc_faults::*;

/// How long any single wait in the suite may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The bound for the few bulk tests (10,000 events or items) on a loaded machine.
pub const LONG_WAIT: Duration = Duration::from_secs(60);

type Connect = Arc<dyn Fn() -> BoxFuture<'static, Bus> + Send + Sync>;

/// A broker a test may stop and start again at the same address: the restart
/// hook of the rules about outages ([`outage`]).
pub trait Broker: Send + Sync {
    /// Stops the broker (as a crash or a restart would); buses on it lose
    /// their connection.
    fn stop(&self) -> BoxFuture<'_, ()>;
    /// Starts it again at the same address, returning once it serves.
    fn start(&self) -> BoxFuture<'_, ()>;
    /// Whether queue items (waiting and in flight) survive [`stop`](Self::stop)
    /// and [`start`](Self::start): true for a persistent Redis, false for the
    /// zmq broker, whose queues live in its memory.
    fn keeps_items(&self) -> bool;
}

/// What a test gets: a way to open buses on one backend, and a unique name
/// prefix; for the [`outage`] rules, the backend's broker.
#[derive(Clone)]
pub struct Harness {
    connect: Connect,
    prefix: String,
    broker: Option<Arc<dyn Broker>>,
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
            broker: None,
        }
    }

    /// The same harness, whose buses are clients of `broker`, which the
    /// [`outage`] rules stop and start. A transport without a broker has none:
    /// those rules then check the same behaviour without an outage.
    pub fn with_broker(mut self, broker: impl Broker + 'static) -> Harness {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// The broker behind the buses, if the transport has one to restart.
    pub fn broker(&self) -> Option<&dyn Broker> {
        self.broker.as_deref()
    }

    /// Opens a new bus on the backend (a separate connection, as another process would).
    pub async fn bus(&self) -> Bus {
        within("connecting a bus", (self.connect)()).await
    }

    /// A name unique to this test: `<prefix>.<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// The prefix every [`name`](Harness::name) of this test starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Waits for `future` at most [`WAIT`], failing the test with `what` if it takes longer.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    bounded(what, WAIT, future).await
}

/// Waits for `future` at most [`LONG_WAIT`], for bulk tests.
pub async fn within_long<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    bounded(what, LONG_WAIT, future).await
}

async fn bounded<T>(
    what: &str,
    limit: Duration,
    future: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// The next item of `stream`, which must be `Ok`, within [`WAIT`].
pub async fn next_ok<T, S>(what: &str, stream: &mut S) -> T
where
    S: Stream<Item = Result<T>> + Unpin,
{
    match within(what, stream.next()).await {
        Some(Ok(value)) => value,
        Some(Err(err)) => panic!("{what}: expected a value, got the error {err:?}"),
        None => panic!("{what}: the stream ended"),
    }
}

/// Asserts that `result` is [`Error::Unsupported`]: how a transport declines a capability.
pub fn assert_unsupported<T>(what: &str, result: Result<T>) {
    match result {
        Err(Error::Unsupported { .. }) => {}
        Err(err) => panic!("{what}: a missing capability must answer Unsupported, got {err:?}"),
        Ok(_) => panic!("{what}: a missing capability must answer Unsupported, got Ok"),
    }
}

/// True when `bus` declares work queues; otherwise asserts that `put`, `get`
/// and `len` on the queue `name` answer `Unsupported`, and returns false.
pub async fn has_queues(bus: &Bus, name: &str) -> bool {
    if bus.capabilities().queues {
        return true;
    }
    let queue = ok("queue", bus.queue::<u32>(name));
    assert_unsupported("queue put", queue.put(&1).await);
    assert_unsupported("queue get", queue.get(Duration::from_millis(200)).await);
    assert_unsupported("queue len", queue.len().await);
    false
}

/// True when `bus` declares queues with acknowledged receive; otherwise asserts
/// that the missing operations on the queue `name` answer `Unsupported`, and
/// returns false.
pub async fn has_acks(bus: &Bus, name: &str) -> bool {
    if !has_queues(bus, name).await {
        return false;
    }
    if bus.capabilities().acks {
        return true;
    }
    let queue = ok("queue", bus.queue::<u32>(name));
    assert_unsupported(
        "queue receive",
        queue.receive(Duration::from_millis(200)).await,
    );
    false
}

/// True when `bus` declares RPC; otherwise asserts that `expose` and `call` of
/// `method` answer `Unsupported`, and returns false.
pub async fn has_rpc(bus: &Bus, method: &str) -> bool {
    if bus.capabilities().rpc {
        return true;
    }
    assert_unsupported(
        "expose",
        bus.expose(
            method,
            |x: u32| async move { Ok::<_, busbar_core::Fault>(x) },
        )
        .await,
    );
    let stub = ok("stub", bus.stub::<u32, u32>(method));
    assert_unsupported("call", stub.call(&1).await);
    false
}

/// True when `bus` declares RPC and `call_all`; otherwise asserts that the
/// missing operations on `method` answer `Unsupported`, and returns false.
pub async fn has_call_all(bus: &Bus, method: &str) -> bool {
    if !has_rpc(bus, method).await {
        return false;
    }
    if bus.capabilities().call_all {
        return true;
    }
    let stub = ok("stub", bus.stub::<u32, u32>(method));
    assert_unsupported("call_all", stub.call_all(&1).await);
    false
}

/// True when `bus` declares wildcard subscriptions; otherwise asserts that
/// subscribing to `pattern` answers `Unsupported`, and returns false.
pub async fn has_patterns(bus: &Bus, pattern: &str) -> bool {
    if bus.capabilities().patterns {
        return true;
    }
    assert_unsupported(
        "a wildcard subscription",
        bus.subscribe_pattern(pattern).await,
    );
    false
}

/// Asserts that `result` is [`Error::Closed`].
pub fn assert_closed<T>(what: &str, result: Result<T>) {
    match result {
        Err(Error::Closed) => {}
        Err(err) => panic!("{what} after shutdown: expected Closed, got {err:?}"),
        Ok(_) => panic!("{what} after shutdown: expected Closed, got Ok"),
    }
}

/// Asserts that `result` is [`Error::InvalidName`].
pub fn assert_invalid_name<T>(what: &str, result: Result<T>) {
    match result {
        Err(Error::InvalidName { .. }) => {}
        Err(err) => panic!("{what}: expected InvalidName, got {err:?}"),
        Ok(_) => panic!("{what}: expected InvalidName, got Ok"),
    }
}

/// Asserts that `result` is `Ok`, naming the step that failed otherwise.
pub fn ok<T, E: Debug>(what: &str, result: std::result::Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what}: {err:?}"),
    }
}

/// Expands to one `#[tokio::test]` per rule of the suite, each opening buses with `$connect`.
#[macro_export]
macro_rules! suite {
    ($connect:expr) => {
        $crate::__suite_tests!($connect;
            // pub/sub
            smoke_publish_subscribe,
            publish_without_subscribers_is_ok,
            fan_out_to_every_subscriber,
            publisher_receives_its_own_events,
            topics_are_isolated,
            star_matches_exactly_one_segment,
            star_matches_a_middle_segment,
            gt_matches_one_or_more_trailing_segments,
            mixed_wildcards_match_exactly,
            overlapping_subscriptions_on_one_bus_each_deliver_once,
            literal_and_gt_subscriptions_each_deliver_once,
            live_on_return_across_buses,
            pattern_subscription_live_on_return,
            order_per_publisher_10k,
            order_per_publisher_across_topics,
            order_per_publisher_with_two_publishers,
            drop_unsubscribes,
            dropped_listener_stops_handling,
            slow_subscriber_is_told_what_it_missed,
            undecodable_event_is_reported_and_stream_continues,
            undecodable_event_does_not_stop_a_handler,
            raw_messages_carry_topic_and_payload,
            typed_event_publish_subscribe,
            typed_event_handler_on,
            pubsub_stats_move,
            // queues
            queue_fifo_from_one_producer,
            queue_fifo_per_producer_with_two_producers,
            queue_put_before_any_consumer,
            queue_items_survive_the_producer_bus,
            queues_are_isolated_by_name,
            blocked_get_wakes_on_put,
            competing_consumers_get_each_item_once,
            competing_receivers_ack_each_item_once,
            get_timeout_returns_none_on_time,
            timed_out_get_never_swallows_an_item,
            unasked_items_reach_another_consumer,
            len_counts_waiting_items,
            len_excludes_in_flight_items,
            ack_removes_the_item,
            nack_redelivers_with_attempt_two,
            an_item_that_came_back_is_got_like_any_other,
            dropped_delivery_comes_back,
            unacked_item_comes_back_after_visibility_timeout,
            undecodable_queue_item_goes_to_dead_letter_on_get,
            undecodable_queue_item_goes_to_dead_letter_on_receive,
            shutdown_stops_a_blocked_consumer,
            redelivery_is_counted,
            queue_stats_move,
            // RPC
            rpc_single_call,
            provider_live_on_return,
            call_is_answered_by_exactly_one_provider,
            call_all_gathers_every_provider_promptly,
            call_all_reports_a_timeout_for_a_slow_provider,
            no_responders_promptly,
            call_all_without_providers_is_no_responders,
            slow_handler_times_out_at_deadline,
            remote_error_keeps_kind_and_message,
            handler_panic_is_remote_and_provider_keeps_serving,
            slow_request_times_out_and_provider_keeps_serving,
            expired_request_is_never_handled,
            concurrent_calls_never_cross,
            dropped_provider_gives_no_responders,
            wrong_argument_type_is_bad_request,
            wrong_return_type_is_codec_error,
            rpc_stats_move,
            handler_past_its_deadline_is_cancelled,
            provider_lost_mid_call_is_provider_lost,
            provider_lost_mid_call_all_is_a_provider_lost_entry,
            // names
            invalid_topics_are_rejected_before_sending,
            invalid_patterns_are_rejected,
            invalid_queue_names_are_rejected,
            invalid_method_names_are_rejected,
            invalid_event_topic_is_rejected,
            unusual_valid_names_are_taken_literally,
            longest_name_is_accepted,
            // limits and re-entrancy
            large_payload_round_trips,
            oversized_payload_is_rejected_before_sending,
            get_with_zero_timeout_polls,
            handler_can_publish,
            handler_can_call_another_method,
            // lifecycle
            shutdown_makes_every_call_closed,
            shutdown_leaves_other_buses_working,
            shutdown_ends_subscriptions,
            shutdown_lets_in_flight_handler_finish,
            shutdown_provider_bus_gives_no_responders,
            unacked_item_of_a_shut_consumer_is_redelivered,
            unknown_scheme_is_invalid_url,
        );
    };
}

/// Expands to one `#[tokio::test]` per rule about outages ([`outage`]),
/// each on the [`Harness`] `$harness().await` builds: its own broker, which
/// the test stops and starts (so no other test shares it), or none.
#[macro_export]
macro_rules! outage_suite {
    ($harness:expr) => {
        $crate::__outage_tests!($harness;
            put_during_an_outage_is_stored_once_the_broker_is_back,
            ack_during_an_outage_settles_or_says_it_did_not,
            connect_during_an_outage_succeeds_once_the_broker_is_back,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __outage_tests {
    ($harness:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let harness: $crate::Harness = ($harness)().await;
                $crate::$test(harness).await;
            }
        )*
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
