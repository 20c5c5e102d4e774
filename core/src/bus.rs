//! [`Bus`]: the handle users hold.

use crate::codec::{self, ContentType};
use crate::envelope::{Envelope, Kind};
use crate::error::{Error, Fault, Result};
use crate::event::{topic_of, Event, FromEnvelope, Message};
use crate::name::{Name, Pattern};
use crate::queue::Queue;
use crate::rpc::{self, Provider, Stub};
use crate::stats::{Stats, StatsSnapshot};
use crate::subscription::{self, Listener, Outcome, Subscription};
use crate::transport::{Capabilities, EventBus, SubscribeOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::Instrument;

/// Default upper bound on an encoded payload, in bytes (8 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// A connection to a message bus: pub/sub events, work queues and RPC.
///
/// Cheap to clone; every clone shares one connection. The transport is chosen
/// by the URL scheme (`memory://`, `redis://`, `zmq://`).
///
/// ```
/// # async fn demo() -> busbar_core::Result<()> {
/// # let bus = busbar_core::Bus::connect("memory://").await?;
/// let stub = bus.stub::<(i32, i32), i32>("math.product")?;
/// let _provider = bus.expose("math.product", |(a, b): (i32, i32)| async move {
///     Ok::<_, busbar_core::Fault>(a * b)
/// }).await?;
/// assert_eq!(stub.call(&(6, 7)).await?, 42);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Arc<dyn EventBus>,
    closed: AtomicBool,
    max_payload: usize,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("transport", &self.inner.transport.name())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Bus {
    /// Connects to the transport named by `url`'s scheme.
    ///
    /// A scheme whose transport was not compiled in is [`Error::InvalidUrl`]
    /// naming the cargo feature to enable.
    pub async fn connect(url: &str) -> Result<Bus> {
        Ok(Bus::from_transport(crate::registry::connect(url).await?))
    }

    /// Wraps an already opened transport.
    pub fn from_transport(transport: Arc<dyn EventBus>) -> Bus {
        Bus {
            inner: Arc::new(Inner {
                transport,
                closed: AtomicBool::new(false),
                max_payload: DEFAULT_MAX_PAYLOAD,
            }),
        }
    }

    /// The transport underneath, for transport-level (envelope) operations.
    pub fn transport(&self) -> &Arc<dyn EventBus> {
        &self.inner.transport
    }

    /// What the transport implements.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.transport.capabilities()
    }

    /// A copy of this bus's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.transport.stats().snapshot()
    }

    /// True once [`shutdown`](Bus::shutdown) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    pub(crate) fn transport_checked(&self) -> Result<&Arc<dyn EventBus>> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(&self.inner.transport)
        }
    }

    pub(crate) fn check_size(&self, size: usize) -> Result<()> {
        if size > self.inner.max_payload {
            return Err(Error::TooLarge {
                size,
                limit: self.inner.max_payload,
            });
        }
        Ok(())
    }

    // ----- pub/sub -----

    /// Publishes `event` on its type's topic.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<()> {
        self.publish_on(topic_of::<E>()?, event).await
    }

    /// Publishes any serializable value on `topic`.
    pub async fn publish_to<T: Serialize + ?Sized>(&self, topic: &str, value: &T) -> Result<()> {
        self.publish_on(Name::new(topic)?, value).await
    }

    async fn publish_on<T: Serialize + ?Sized>(&self, topic: Name, value: &T) -> Result<()> {
        let transport = self.transport_checked()?;
        let payload = codec::encode(value)?;
        self.check_size(payload.len())?;
        let event = Envelope::new(Kind::Event, topic, ContentType::JSON, payload);
        let span = tracing::debug_span!("busbar.publish", topic = %event.subject, id = %event.id);
        transport.publish(event).instrument(span).await?;
        Stats::incr(&transport.stats().published);
        Ok(())
    }

    /// Subscribes to events of type `E` on its topic; live end to end on return.
    pub async fn subscribe<E: Event>(&self) -> Result<Subscription<E>> {
        self.subscribe_with(Pattern::from(topic_of::<E>()?), SubscribeOptions::default())
            .await
    }

    /// Subscribes to every topic matching `pattern` (`orders.*`, `sensors.>`),
    /// decoding each payload as `T`. Use [`Message`] for `T` to get raw messages.
    pub async fn subscribe_to<T: FromEnvelope>(&self, pattern: &str) -> Result<Subscription<T>> {
        self.subscribe_with(Pattern::new(pattern)?, SubscribeOptions::default())
            .await
    }

    /// Subscribes to every topic matching `pattern`, yielding raw [`Message`]s.
    pub async fn subscribe_pattern(&self, pattern: &str) -> Result<Subscription<Message>> {
        self.subscribe_to(pattern).await
    }

    /// Subscribes with explicit options (buffer capacity).
    pub async fn subscribe_with<T: FromEnvelope>(
        &self,
        pattern: Pattern,
        options: SubscribeOptions,
    ) -> Result<Subscription<T>> {
        let transport = self.transport_checked()?;
        if !pattern.is_literal() && !transport.capabilities().patterns {
            return Err(Error::Unsupported {
                transport: transport.name(),
                operation: "wildcard subscriptions",
            });
        }
        let raw = transport.subscribe(&pattern, options).await?;
        Ok(Subscription::new(raw, transport.stats().clone()))
    }

    /// Runs `handler` for every event of type `E`, one at a time, in order.
    ///
    /// The handler may return `()` or `Result<(), E>` (errors are logged).
    /// Events that fail to decode are counted and logged, and the handler keeps running.
    pub async fn on<E, F, Fut>(&self, handler: F) -> Result<Listener>
    where
        E: Event,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        Ok(subscription::listen(self.subscribe::<E>().await?, handler))
    }

    /// Runs `handler` for every event matching `pattern`, decoded as `T`.
    pub async fn on_pattern<T, F, Fut>(&self, pattern: &str, handler: F) -> Result<Listener>
    where
        T: FromEnvelope,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        Ok(subscription::listen(
            self.subscribe_to::<T>(pattern).await?,
            handler,
        ))
    }

    // ----- queues -----

    /// The work queue `name` of items of type `T`; created on first use.
    pub fn queue<T>(&self, name: &str) -> Result<Queue<T>> {
        Ok(Queue::new(self.clone(), Name::new(name)?))
    }

    // ----- RPC -----

    /// Serves `method` with an async function of any deserializable arguments
    /// (use a tuple for several) returning `Result<R, E>`.
    ///
    /// A handler that cannot fail returns `Ok::<_, Fault>(value)`.
    /// `E` travels to the caller as [`Error::Remote`] with its kind (the serde
    /// variant name for enums) and its message. A panic is answered the same way,
    /// with kind `panic`, and the provider keeps serving.
    pub async fn expose<F, A, Fut, R, E>(&self, method: &str, function: F) -> Result<Provider>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + 'static,
        E: Into<Fault> + 'static,
    {
        let method = Name::new(method)?;
        let transport = self.transport_checked()?;
        let guard = transport.serve(&method, rpc::handler(function)).await?;
        Ok(Provider::new(guard))
    }

    /// A typed client for `method`.
    pub fn stub<Args: Serialize, Ret: DeserializeOwned>(
        &self,
        method: &str,
    ) -> Result<Stub<Args, Ret>> {
        Ok(Stub::new(self.clone(), Name::new(method)?))
    }

    // ----- lifecycle -----

    /// Stops taking new work, lets in-flight handlers finish (bounded) and releases
    /// broker-side resources. Every later call on any clone is [`Error::Closed`].
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.transport.shutdown().await
    }

    /// A test hook, not for applications: dies as a crashed process would (see
    /// [`EventBus::kill`]). Every later call on any clone is [`Error::Closed`].
    #[doc(hidden)]
    pub fn __kill(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.transport.kill()
    }
}
