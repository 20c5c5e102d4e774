//! Typed RPC: exposing handlers and calling them through stubs.

use crate::bus::Bus;
use crate::codec::{self, ContentType};
use crate::envelope::{Envelope, Kind};
use crate::error::{Error, Fault, Result};
use crate::name::Name;
use crate::reply;
use crate::stats::Stats;
use crate::transport::{Guard, Handler};
use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Default time a [`Stub`] waits for an answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A method served by [`Bus::expose`](crate::Bus::expose). Dropping it stops serving;
/// [`detach`](Provider::detach) keeps serving until the bus shuts down.
#[must_use = "dropping a Provider stops serving; call .detach() to keep it running"]
pub struct Provider {
    guard: Option<Guard>,
}

impl Provider {
    pub(crate) fn new(guard: Guard) -> Self {
        Provider { guard: Some(guard) }
    }

    /// Keeps serving until the bus shuts down.
    pub fn detach(mut self) {
        std::mem::forget(self.guard.take());
    }

    /// Stops serving now.
    pub fn stop(self) {}
}

/// Adapts a typed async function to the transport's [`Handler`].
pub(crate) struct TypedHandler<F, A> {
    pub(crate) function: F,
    pub(crate) _args: PhantomData<fn(A)>,
}

#[async_trait]
impl<F, A, Fut, R, E> Handler for TypedHandler<F, A>
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize,
    E: Into<Fault>,
{
    async fn handle(&self, request: Envelope) -> Result<Bytes, Fault> {
        let args: A = codec::decode(&request.content_type, &request.payload)
            .map_err(|err| Fault::new("bad_request", err.to_string()))?;
        let value = (self.function)(args).await.map_err(Into::into)?;
        codec::encode(&value).map_err(|err| Fault::new("bad_response", err.to_string()))
    }
}

/// A typed client for one method: `Args` go out, `Ret` comes back.
pub struct Stub<Args, Ret> {
    bus: Bus,
    method: Name,
    timeout: Duration,
    _types: PhantomData<fn(Args) -> Ret>,
}

impl<Args, Ret> Clone for Stub<Args, Ret> {
    fn clone(&self) -> Self {
        Stub {
            bus: self.bus.clone(),
            method: self.method.clone(),
            timeout: self.timeout,
            _types: PhantomData,
        }
    }
}

impl<Args: Serialize, Ret: DeserializeOwned> Stub<Args, Ret> {
    pub(crate) fn new(bus: Bus, method: Name) -> Self {
        Stub {
            bus,
            method,
            timeout: DEFAULT_TIMEOUT,
            _types: PhantomData,
        }
    }

    /// The method called.
    pub fn method(&self) -> &Name {
        &self.method
    }

    /// Sets how long a call waits; the deadline travels with the request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls one provider and decodes its answer.
    ///
    /// Fails with [`Error::NoResponders`] at once when nobody serves the method,
    /// [`Error::Timeout`] at the deadline, [`Error::Remote`] when the handler
    /// returned an error or panicked, and [`Error::ProviderLost`] when the
    /// provider that took the call died before answering (see
    /// [`liveness`](crate::liveness) for how soon).
    pub async fn call(&self, args: &Args) -> Result<Ret> {
        let request = self.request(args)?;
        let transport = self.bus.transport_checked()?;
        let stats = transport.stats().clone();
        Stats::incr(&stats.rpc_calls);
        let span = tracing::debug_span!("busbar.call", method = %self.method, correlation_id = %request.id);
        let started = Instant::now();
        let reply = transport.call(request).instrument(span).await;
        if reply.is_ok() {
            stats.rpc_latency.record(started.elapsed());
        }
        let outcome = reply
            .and_then(reply::into_result)
            .and_then(|payload| codec::decode(&ContentType::JSON, &payload));
        count_failure(&stats, &outcome);
        outcome
    }

    /// Calls every provider and gathers one entry per provider: its answer, its
    /// error, [`Error::ProviderLost`] if it died before answering, or
    /// [`Error::Timeout`] if it missed the deadline. Returns as soon as every
    /// provider that got the request has answered.
    pub async fn call_all(&self, args: &Args) -> Result<Vec<Result<Ret>>> {
        let request = self.request(args)?;
        let transport = self.bus.transport_checked()?;
        let stats = transport.stats().clone();
        Stats::incr(&stats.rpc_calls);
        let span = tracing::debug_span!("busbar.call_all", method = %self.method, correlation_id = %request.id);
        let started = Instant::now();
        let replies = transport.call_all(request).instrument(span).await;
        if replies.is_ok() {
            stats.rpc_latency.record(started.elapsed());
        }
        count_failure(&stats, &replies);
        Ok(replies?
            .into_iter()
            .map(|reply| {
                let outcome = reply
                    .and_then(reply::into_result)
                    .and_then(|payload| codec::decode(&ContentType::JSON, &payload));
                count_failure(&stats, &outcome);
                outcome
            })
            .collect())
    }

    fn request(&self, args: &Args) -> Result<Envelope> {
        let payload = codec::encode(args)?;
        self.bus.check_size(payload.len())?;
        Ok(Envelope::new(
            Kind::Request,
            self.method.clone(),
            ContentType::JSON,
            payload,
        )
        .with_timeout(self.timeout))
    }
}

fn count_failure<T>(stats: &Stats, outcome: &Result<T>) {
    match outcome {
        Ok(_) => {}
        Err(Error::Timeout) => Stats::incr(&stats.rpc_timeouts),
        Err(_) => Stats::incr(&stats.rpc_errors),
    }
}

/// Wraps a handler in the transport [`Handler`] interface.
pub(crate) fn handler<F, A, Fut, R, E>(function: F) -> Arc<dyn Handler>
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + 'static,
    E: Into<Fault> + 'static,
{
    Arc::new(TypedHandler {
        function,
        _args: PhantomData,
    })
}
