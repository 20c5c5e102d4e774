//! The in-process transport for busbar: `memory://` and `memory://<name>`.
//!
//! Every bus connected to the same URL shares one hub (subscriptions, queues and
//! providers), as separate processes share a broker; `memory://` is the
//! process-wide default hub. It implements the whole contract and is the
//! reference the conformance suite is written against. Payloads still go through
//! the codec, so a type mismatch shows up in tests exactly as on the wire.
//!
//! Queue items live as long as the process (no persistence).
#![deny(missing_docs)]

mod pubsub;
mod queue;
mod rpc;

use async_trait::async_trait;
use busbar_core::inflight::InFlight;
use busbar_core::mailbox::mailbox;
use busbar_core::transport::{Connector, Guard, Handler, RawDelivery, RawSubscription};
use busbar_core::{
    Capabilities, Envelope, Error, EventBus, Name, Pattern, Result, Stats, SubscribeOptions,
};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How long `shutdown` waits for running handlers to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every bus on one `memory://<name>` URL shares.
#[derive(Default)]
struct Hub {
    subscriptions: pubsub::Table,
    queues: DashMap<Name, Arc<queue::MemoryQueue>>,
    providers: DashMap<Name, Arc<rpc::Providers>>,
}

impl Hub {
    /// The hub for `name`; hubs live as long as the process, like a broker's data.
    fn named(name: &str) -> Arc<Hub> {
        static HUBS: OnceLock<Mutex<HashMap<String, Arc<Hub>>>> = OnceLock::new();
        let hubs = HUBS.get_or_init(Default::default);
        hubs.lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn queue(&self, name: &Name) -> Arc<queue::MemoryQueue> {
        if let Some(queue) = self.queues.get(name) {
            return queue.clone();
        }
        self.queues.entry(name.clone()).or_default().clone()
    }
}

/// One connection to an in-process hub.
pub struct MemoryBus {
    hub: Arc<Hub>,
    id: u64,
    stats: Arc<Stats>,
    in_flight: InFlight,
    closed: AtomicBool,
    shutdown_signal: Notify,
}

impl MemoryBus {
    /// Connects to the hub named `name` (`""` is the process-wide default hub).
    pub fn connect(name: &str) -> MemoryBus {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        MemoryBus {
            hub: Hub::named(name),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            stats: Arc::default(),
            in_flight: InFlight::default(),
            closed: AtomicBool::new(false),
            shutdown_signal: Notify::new(),
        }
    }

    /// Connects to the hub a `memory://<name>` URL names.
    pub fn from_url(url: &str) -> Result<MemoryBus> {
        let name = url
            .strip_prefix("memory://")
            .ok_or_else(|| Error::InvalidUrl {
                url: url.to_owned(),
                reason: "expected memory://<name>".into(),
            })?;
        Ok(MemoryBus::connect(name))
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            persistence: false,
            cross_process: false,
            ..Capabilities::FULL
        }
    }

    fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    async fn publish(&self, event: Envelope) -> Result<()> {
        self.check_open()?;
        cooperate().await;
        self.hub.subscriptions.publish(&event);
        Ok(())
    }

    async fn publish_reaching(&self, event: Envelope) -> Result<Option<usize>> {
        self.check_open()?;
        cooperate().await;
        Ok(Some(self.hub.subscriptions.publish(&event)))
    }

    async fn subscribe(
        &self,
        pattern: &Pattern,
        options: SubscribeOptions,
    ) -> Result<RawSubscription> {
        self.check_open()?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mailbox(options.capacity, self.stats.clone());
        self.hub.subscriptions.insert(pubsub::Entry {
            id,
            owner: self.id,
            pattern: pattern.clone(),
            sender,
        });
        let hub: Weak<Hub> = Arc::downgrade(&self.hub);
        let key = pattern.clone();
        let guard = Guard::new(move || {
            if let Some(hub) = hub.upgrade() {
                drop(hub.subscriptions.remove_where(Some(&key), |e| e.id == id));
            }
        });
        Ok(RawSubscription::new(pattern.clone(), receiver, guard))
    }

    async fn queue_put(&self, item: Envelope) -> Result<()> {
        self.check_open()?;
        cooperate().await;
        self.hub.queue(&item.subject).put(item);
        Ok(())
    }

    async fn queue_get(&self, queue: &Name, timeout: Duration) -> Result<Option<Envelope>> {
        self.check_open()?;
        let is_closed = || self.is_closed();
        self.hub
            .queue(queue)
            .get(timeout, &self.shutdown_signal, &is_closed)
            .await
    }

    async fn queue_receive(
        &self,
        queue: &Name,
        timeout: Duration,
        visibility: Duration,
    ) -> Result<Option<RawDelivery>> {
        self.check_open()?;
        let is_closed = || self.is_closed();
        self.hub
            .queue(queue)
            .receive(timeout, visibility, &self.shutdown_signal, &is_closed)
            .await
    }

    async fn queue_len(&self, queue: &Name) -> Result<usize> {
        self.check_open()?;
        Ok(self.hub.queue(queue).len())
    }

    async fn serve(&self, method: &Name, handler: Arc<dyn Handler>) -> Result<Guard> {
        self.check_open()?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let providers = self
            .hub
            .providers
            .entry(method.clone())
            .or_default()
            .clone();
        providers.add(rpc::Provider {
            id,
            owner: self.id,
            handler,
            in_flight: self.in_flight.clone(),
            stats: self.stats.clone(),
        });
        let providers = Arc::downgrade(&providers);
        Ok(Guard::new(move || {
            if let Some(providers) = providers.upgrade() {
                providers.remove_where(|p| p.id == id);
            }
        }))
    }

    async fn call(&self, request: Envelope) -> Result<Envelope> {
        self.check_open()?;
        match self.hub.providers.get(&request.subject).map(|p| p.clone()) {
            Some(providers) => providers.call(request).await,
            None => Err(Error::NoResponders {
                method: request.subject.to_string(),
            }),
        }
    }

    async fn call_all(&self, request: Envelope) -> Result<Vec<Result<Envelope>>> {
        self.check_open()?;
        match self.hub.providers.get(&request.subject).map(|p| p.clone()) {
            Some(providers) => providers.call_all(request).await,
            None => Err(Error::NoResponders {
                method: request.subject.to_string(),
            }),
        }
    }

    async fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.shutdown_signal.notify_waiters();
        for providers in self.hub.providers.iter() {
            providers.remove_where(|p| p.owner == self.id);
        }
        drop(
            self.hub
                .subscriptions
                .remove_where(None, |e| e.owner == self.id),
        );
        if !self.in_flight.wait_idle(SHUTDOWN_GRACE).await {
            tracing::warn!(
                running = self.in_flight.running(),
                "shutdown: handlers still running after the grace period"
            );
        }
        Ok(())
    }

    fn kill(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.release();
        self.in_flight.kill();
        Ok(())
    }
}

impl MemoryBus {
    /// Releases what this bus registered on the hub, at once.
    fn release(&self) {
        self.shutdown_signal.notify_waiters();
        for providers in self.hub.providers.iter() {
            providers.remove_where(|p| p.owner == self.id);
        }
        drop(
            self.hub
                .subscriptions
                .remove_where(None, |e| e.owner == self.id),
        );
    }
}

impl Drop for MemoryBus {
    fn drop(&mut self) {
        // A bus dropped without shutdown releases what it registered on the hub.
        self.release();
    }
}

/// Publishing in-process never waits for anything, so without this a tight
/// publish loop would never yield: the subscribers it wakes (queued behind it on
/// the same worker) could not run, and would lag. This spends one unit of the
/// task's tokio budget and yields when it is used up, as tokio's channels do.
async fn cooperate() {
    tokio::task::coop::consume_budget().await;
}

struct MemoryConnector;

#[async_trait]
impl Connector for MemoryConnector {
    fn schemes(&self) -> &'static [&'static str] {
        &["memory"]
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn EventBus>> {
        Ok(Arc::new(MemoryBus::from_url(url)?))
    }
}

busbar_core::register_connector!(MemoryConnector);
