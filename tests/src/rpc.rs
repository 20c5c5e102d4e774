//! RPC: one provider per call, `call_all`, no responders, deadlines, remote
//! errors and panics, concurrency, and type mismatches.

use crate::{has_call_all, has_rpc, ok, within, Harness, WAIT};
use busbar_core::{Bus, ContentType, Envelope, Error, Fault, Kind, Name, Provider};
use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Serves `method` on `bus` with a handler doubling its argument; `None` (after
/// checking that `expose` and `call` answer `Unsupported`) when the transport
/// declares no RPC.
async fn doubler(bus: &Bus, method: &str) -> Option<Provider> {
    if !has_rpc(bus, method).await {
        return None;
    }
    let served = bus
        .expose(method, |x: i64| async move { Ok::<_, Fault>(x * 2) })
        .await;
    Some(ok("expose", served))
}

/// A single call from one bus to a provider on another returns the handler's answer.
pub async fn rpc_single_call(h: Harness) {
    let method = h.name("math.double");
    let server = h.bus().await;
    let client = h.bus().await;
    let Some(_provider) = doubler(&server, &method).await else {
        return;
    };
    let stub = ok("stub", client.stub::<i64, i64>(&method));
    assert_eq!(stub.method().as_str(), method);
    assert_eq!(ok("call", within("the call", stub.call(&21)).await), 42);
    // And from the provider's own bus.
    let local = ok("stub", server.stub::<i64, i64>(&method));
    assert_eq!(
        ok(
            "local call",
            within("the local call", local.call(&-4)).await
        ),
        -8
    );
}

/// Live on return for providers: a call from another bus right after `expose`
/// returned reaches the new provider (repeated on fresh buses and methods).
pub async fn provider_live_on_return(h: Harness) {
    let client = h.bus().await;
    if !has_rpc(&client, &h.name("fresh")).await {
        return;
    }
    for round in 0..10i64 {
        let method = h.name(&format!("fresh{round}"));
        let server = h.bus().await;
        let _provider = doubler(&server, &method).await.expect("rpc is declared");
        let stub = ok("stub", client.stub::<i64, i64>(&method));
        assert_eq!(
            ok(
                "call",
                within(&format!("round {round}"), stub.call(&round)).await
            ),
            round * 2
        );
    }
}

/// `call` is answered by exactly one provider, load-balanced: with three
/// providers on three buses, 60 calls run the handlers 60 times in all, and
/// every provider takes part.
pub async fn call_is_answered_by_exactly_one_provider(h: Harness) {
    const CALLS: usize = 60;
    let method = h.name("balance");
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
    let mut providers = Vec::new();
    let mut buses = Vec::new();
    for (id, count) in counts.iter().enumerate() {
        let bus = h.bus().await;
        let count = count.clone();
        providers.push(ok(
            "expose",
            bus.expose(&method, move |x: u32| {
                count.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, Fault>((id, x)) }
            })
            .await,
        ));
        buses.push(bus);
    }
    let stub = ok("stub", client.stub::<u32, (usize, u32)>(&method));
    for x in 0..CALLS as u32 {
        let (id, echoed) = ok("call", within("a call", stub.call(&x)).await);
        assert_eq!(echoed, x);
        assert!(id < 3);
    }
    let per_provider: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(
        per_provider.iter().sum::<usize>(),
        CALLS,
        "each call must be handled exactly once (per provider: {per_provider:?})"
    );
    assert!(
        per_provider.iter().all(|n| *n > 0),
        "calls must be balanced over the providers, got {per_provider:?}"
    );
}

/// `call_all` reaches every provider and returns each answer as soon as all
/// have answered, well before the deadline.
pub async fn call_all_gathers_every_provider_promptly(h: Harness) {
    let method = h.name("gather");
    let client = h.bus().await;
    if !has_call_all(&client, &method).await {
        return;
    }
    let mut providers = Vec::new();
    let mut buses = Vec::new();
    for id in 0..3u32 {
        let bus = h.bus().await;
        providers.push(ok(
            "expose",
            bus.expose(
                &method,
                move |x: u32| async move { Ok::<_, Fault>(x * 10 + id) },
            )
            .await,
        ));
        buses.push(bus);
    }
    let timeout = Duration::from_secs(8);
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(timeout);
    let started = Instant::now();
    let replies = ok("call_all", within("call_all", stub.call_all(&7)).await);
    let elapsed = started.elapsed();
    let mut answers: Vec<u32> = replies
        .into_iter()
        .map(|r| ok("a provider's answer", r))
        .collect();
    answers.sort_unstable();
    assert_eq!(answers, [70, 71, 72], "one answer per provider");
    assert!(
        elapsed < timeout / 2,
        "call_all must return once every provider answered, took {elapsed:?} of {timeout:?}"
    );
}

/// `call_all` with a provider slower than the deadline returns at the deadline
/// with the others' answers plus one `Timeout` entry for the slow one.
pub async fn call_all_reports_a_timeout_for_a_slow_provider(h: Harness) {
    let method = h.name("gather.slow");
    let client = h.bus().await;
    if !has_call_all(&client, &method).await {
        return;
    }
    let mut providers = Vec::new();
    let mut buses = Vec::new();
    for id in 0..3u32 {
        let bus = h.bus().await;
        providers.push(ok(
            "expose",
            bus.expose(&method, move |x: u32| async move {
                if id == 2 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Ok::<_, Fault>(x + id)
            })
            .await,
        ));
        buses.push(bus);
    }
    let timeout = Duration::from_millis(800);
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(timeout);
    let started = Instant::now();
    let replies = ok("call_all", within("call_all", stub.call_all(&100)).await);
    let elapsed = started.elapsed();
    assert_eq!(replies.len(), 3, "one entry per provider: {replies:?}");
    let mut answers = Vec::new();
    let mut timeouts = 0;
    for reply in replies {
        match reply {
            Ok(answer) => answers.push(answer),
            Err(Error::Timeout) => timeouts += 1,
            Err(err) => panic!("unexpected entry {err:?}"),
        }
    }
    answers.sort_unstable();
    assert_eq!(answers, [100, 101]);
    assert_eq!(timeouts, 1, "the slow provider must be a Timeout entry");
    assert!(
        elapsed >= timeout - Duration::from_millis(20),
        "returned before the deadline: {elapsed:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "returned long after the deadline: {elapsed:?}"
    );
}

/// With no provider, `call` fails with `NoResponders` promptly, well before its timeout.
pub async fn no_responders_promptly(h: Harness) {
    let method = h.name("nobody");
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let timeout = Duration::from_secs(8);
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(timeout);
    let started = Instant::now();
    match within("the call", stub.call(&1)).await {
        Err(Error::NoResponders { method: m }) => assert_eq!(m, method),
        other => panic!("expected NoResponders, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < timeout / 4,
        "NoResponders must come promptly, took {elapsed:?}"
    );
}

/// With no provider, `call_all` fails with `NoResponders` promptly too.
pub async fn call_all_without_providers_is_no_responders(h: Harness) {
    let method = h.name("nobody.all");
    let client = h.bus().await;
    if !has_call_all(&client, &method).await {
        return;
    }
    let timeout = Duration::from_secs(8);
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(timeout);
    let started = Instant::now();
    match within("call_all", stub.call_all(&1)).await {
        Err(Error::NoResponders { .. }) => {}
        other => panic!("expected NoResponders, got {other:?}"),
    }
    assert!(
        started.elapsed() < timeout / 4,
        "NoResponders must come promptly"
    );
}

/// A handler slower than the caller's timeout: the call fails with `Timeout`
/// at the deadline (not before, not much after).
pub async fn slow_handler_times_out_at_deadline(h: Harness) {
    let method = h.name("slow");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let _provider = ok(
        "expose",
        server
            .expose(&method, |x: u32| async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, Fault>(x)
            })
            .await,
    );
    let timeout = Duration::from_millis(500);
    let stub = ok("stub", client.stub::<u32, u32>(&method)).timeout(timeout);
    let started = Instant::now();
    match within("the call", stub.call(&1)).await {
        Err(Error::Timeout) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(20),
        "timed out early: {elapsed:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(1),
        "timed out late: {elapsed:?}"
    );
    assert!(client.stats().rpc_timeouts >= 1, "timeouts must be counted");
}

/// An error a handler may return: its serde variant name is the remote kind.
#[derive(Debug, Serialize)]
pub enum StockError {
    /// No items left.
    OutOfStock {
        /// The item asked for.
        sku: String,
    },
    /// Not sold any more.
    Discontinued,
}

impl fmt::Display for StockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StockError::OutOfStock { sku } => write!(f, "{sku} is out of stock"),
            StockError::Discontinued => f.write_str("discontinued"),
        }
    }
}

/// A handler returning an error: the caller gets `Error::Remote` with the error's
/// kind (the enum variant name) and its `Display` message; the provider keeps serving.
pub async fn remote_error_keeps_kind_and_message(h: Harness) {
    let method = h.name("stock");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let _provider = ok(
        "expose",
        server
            .expose(&method, |sku: String| async move {
                match sku.as_str() {
                    "gone" => Err(StockError::Discontinued),
                    "custom" => Err(StockError::OutOfStock { sku }),
                    _ if sku.starts_with("ok") => Ok(sku.len()),
                    _ => Err(StockError::OutOfStock { sku }),
                }
            })
            .await,
    );
    let stub = ok("stub", client.stub::<String, usize>(&method));
    match within("the call", stub.call(&"abc-1".to_owned())).await {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "OutOfStock");
            assert_eq!(message, "abc-1 is out of stock");
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    match within("the call", stub.call(&"gone".to_owned())).await {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "Discontinued");
            assert_eq!(message, "discontinued");
        }
        other => panic!("expected Remote, got {other:?}"),
    }
    assert_eq!(
        ok(
            "a good call",
            within("the call", stub.call(&"ok!".to_owned())).await
        ),
        3
    );
    assert!(
        client.stats().rpc_errors >= 2,
        "remote errors must be counted"
    );
}

/// A handler that panics: the caller gets `Error::Remote` of kind `panic`, and
/// the provider keeps serving.
pub async fn handler_panic_is_remote_and_provider_keeps_serving(h: Harness) {
    let method = h.name("panicky");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let _provider = ok(
        "expose",
        server
            .expose(&method, |x: u32| async move {
                if x == 0 {
                    panic!("division by zero requested");
                }
                Ok::<_, Fault>(100 / x)
            })
            .await,
    );
    let stub = ok("stub", client.stub::<u32, u32>(&method));
    for round in 0..2 {
        match within("the panicking call", stub.call(&0)).await {
            Err(Error::Remote { kind, message }) => {
                assert_eq!(kind, "panic", "round {round}");
                assert!(
                    message.contains("division by zero"),
                    "the panic message travels: {message:?}"
                );
            }
            other => panic!("expected Remote(panic), got {other:?}"),
        }
        assert_eq!(
            ok(
                "a call after the panic",
                within("the call", stub.call(&4)).await
            ),
            25
        );
    }
}

/// The deadline travels: a request that times out at the caller while its
/// handler is slow does not stop the provider from serving later calls.
pub async fn slow_request_times_out_and_provider_keeps_serving(h: Harness) {
    let method = h.name("sometimes.slow");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let _provider = ok(
        "expose",
        server
            .expose(&method, |slow: bool| async move {
                if slow {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Ok::<_, Fault>(slow)
            })
            .await,
    );
    let impatient =
        ok("stub", client.stub::<bool, bool>(&method)).timeout(Duration::from_millis(300));
    match within("the slow call", impatient.call(&true)).await {
        Err(Error::Timeout) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    let started = Instant::now();
    let stub = ok("stub", client.stub::<bool, bool>(&method));
    assert!(!ok(
        "a later call",
        within("the fast call", stub.call(&false)).await
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a later call must not wait behind the timed-out one"
    );
}

/// The deadline travels with the request: a request whose deadline has already
/// passed is never handled by the provider (sent through the transport SPI with
/// a deadline in the past; a normal call afterwards is handled).
pub async fn expired_request_is_never_handled(h: Harness) {
    let method = h.name("expired");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let handled = Arc::new(AtomicUsize::new(0));
    let _provider = {
        let handled = handled.clone();
        ok(
            "expose",
            server
                .expose(&method, move |x: u32| {
                    handled.fetch_add(1, Ordering::SeqCst);
                    async move { Ok::<_, Fault>(x) }
                })
                .await,
        )
    };
    let payload = ok("encode", serde_json::to_vec(&1u32));
    let mut request = Envelope::new(
        Kind::Request,
        ok("name", Name::new(&method)),
        ContentType::JSON,
        payload.into(),
    );
    request.deadline_ms = Some(busbar_core::now_millis() - 1_000);
    match within("the expired call", client.transport().call(request)).await {
        Err(Error::Timeout) => {}
        other => panic!("a request past its deadline must end in Timeout, got {other:?}"),
    }
    let stub = ok("stub", client.stub::<u32, u32>(&method));
    assert_eq!(
        ok("a normal call", within("the call", stub.call(&2)).await),
        2
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "the expired request must not be handled"
    );
}

/// 1,000 calls in flight at once from one client: each gets its own answer,
/// never another call's.
pub async fn concurrent_calls_never_cross(h: Harness) {
    let method = h.name("echo");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let _provider = ok(
        "expose",
        server
            .expose(&method, |x: u32| async move {
                // Answer out of order.
                tokio::time::sleep(Duration::from_millis(u64::from(x % 13))).await;
                Ok::<_, Fault>(format!("echo-{x}"))
            })
            .await,
    );
    let stub = ok("stub", client.stub::<u32, String>(&method)).timeout(WAIT);
    let calls = (0..1_000u32).map(|x| {
        let stub = stub.clone();
        async move { (x, stub.call(&x).await) }
    });
    let results = within("1,000 concurrent calls", futures::future::join_all(calls)).await;
    for (x, result) in results {
        assert_eq!(
            ok("a concurrent call", result),
            format!("echo-{x}"),
            "responses crossed"
        );
    }
}

/// Dropping the provider stops serving: later calls fail with `NoResponders`.
pub async fn dropped_provider_gives_no_responders(h: Harness) {
    let method = h.name("gone");
    let server = h.bus().await;
    let client = h.bus().await;
    let Some(provider) = doubler(&server, &method).await else {
        return;
    };
    let stub = ok("stub", client.stub::<i64, i64>(&method)).timeout(Duration::from_secs(8));
    assert_eq!(ok("call", within("the call", stub.call(&1)).await), 2);
    drop(provider);
    let started = Instant::now();
    match within("a call after the drop", stub.call(&1)).await {
        Err(Error::NoResponders { .. }) => {}
        other => panic!("expected NoResponders after the provider was dropped, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "NoResponders must come promptly"
    );
}

/// Arguments that do not decode as the handler's type: `Error::Remote` of kind
/// `bad_request`, and the provider keeps serving.
pub async fn wrong_argument_type_is_bad_request(h: Harness) {
    let method = h.name("typed.args");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let _provider = ok(
        "expose",
        server
            .expose(&method, |(a, b): (i32, i32)| async move {
                Ok::<_, Fault>(a + b)
            })
            .await,
    );
    let wrong = ok("stub", client.stub::<String, i32>(&method));
    match within("the call", wrong.call(&"three".to_owned())).await {
        Err(Error::Remote { kind, .. }) => assert_eq!(kind, "bad_request"),
        other => panic!("expected Remote(bad_request), got {other:?}"),
    }
    let right = ok("stub", client.stub::<(i32, i32), i32>(&method));
    assert_eq!(
        ok("a good call", within("the call", right.call(&(1, 2))).await),
        3
    );
}

/// An answer that does not decode as the caller's return type is `Error::Codec`
/// at the caller.
pub async fn wrong_return_type_is_codec_error(h: Harness) {
    let method = h.name("typed.ret");
    let server = h.bus().await;
    let client = h.bus().await;
    if !has_rpc(&client, &method).await {
        return;
    }
    let _provider = ok(
        "expose",
        server
            .expose(
                &method,
                |x: u32| async move { Ok::<_, Fault>(format!("{x}")) },
            )
            .await,
    );
    let stub = ok("stub", client.stub::<u32, u32>(&method));
    match within("the call", stub.call(&1)).await {
        Err(Error::Codec(_)) => {}
        other => panic!("expected Codec, got {other:?}"),
    }
}

/// Stats: `rpc_calls` counts on the caller's bus, `rpc_served` on the provider's.
pub async fn rpc_stats_move(h: Harness) {
    let method = h.name("counted");
    let server = h.bus().await;
    let client = h.bus().await;
    let Some(_provider) = doubler(&server, &method).await else {
        return;
    };
    let (calls, served) = (client.stats().rpc_calls, server.stats().rpc_served);
    let stub = ok("stub", client.stub::<i64, i64>(&method));
    for x in 0..3 {
        ok("call", within("a call", stub.call(&x)).await);
    }
    assert_eq!(client.stats().rpc_calls - calls, 3);
    assert_eq!(server.stats().rpc_served - served, 3);
}
