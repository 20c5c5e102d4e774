//! The busbar ZeroMQ broker: one ROUTER socket, every client a DEALER.
//!
//! It routes events to matching subscriptions, holds named queues with
//! acknowledged delivery, and forwards RPC requests to providers. State lives in
//! one task ([`core::Core`]); each client has its own writer task, so a slow
//! client never stalls the others. No task ever waits for the socket's peer
//! table: a send that would wait goes to a thread of its own ([`pump`] says
//! why: a deadlock in the `zeromq` crate).

mod core;
mod flow;
mod pump;
mod writer;

use crate::protocol::{self, Malformed};
use busbar_core::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use zeromq::{Socket, SocketEvent, SocketRecv};

/// How a [`Broker`] behaves.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Interval of heartbeats, both ways; clients adopt the broker's value.
    pub heartbeat: Duration,
    /// Heartbeat intervals without any message after which a peer is dead.
    pub liveness: u32,
    /// Largest accepted envelope, in bytes.
    pub max_envelope: usize,
    /// Events queued for one client (in the broker and in its socket, not yet
    /// written into the connection) above which publishers are held back: their
    /// batches are acknowledged only once the client drained to a fifth of it.
    pub high_water: usize,
    /// Bytes of events (envelopes and subscription ids) queued for one client
    /// above which publishers are held back, as for `high_water`.
    pub high_water_bytes: usize,
    /// How long a client may leave everything the broker may hand its socket
    /// unread before it is dropped (as a dead client, counted in
    /// [`BrokerStats::stalled_clients`]). Must exceed the time the slowest
    /// client needs to read the largest message.
    pub stall_limit: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            heartbeat: Duration::from_millis(1000),
            liveness: 3,
            max_envelope: busbar_core::wire::DEFAULT_MAX_ENVELOPE,
            high_water: 50_000,
            high_water_bytes: 64 << 20,
            stall_limit: Duration::from_secs(10),
        }
    }
}

/// Counters of a running broker.
#[derive(Debug, Default)]
pub(crate) struct BrokerCounters {
    pub(crate) clients: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) events_in: AtomicU64,
    pub(crate) events_out: AtomicU64,
    pub(crate) dead_clients: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) held_batches: AtomicU64,
    pub(crate) stalled_clients: AtomicU64,
}

/// A point-in-time copy of a broker's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BrokerStats {
    /// Clients connected now.
    pub clients: u64,
    /// Messages or envelopes rejected as malformed (each also logged).
    pub rejected: u64,
    /// Events received from publishers.
    pub events_in: u64,
    /// Event deliveries sent to subscribing clients.
    pub events_out: u64,
    /// Clients dropped for missed heartbeats or a closed connection.
    pub dead_clients: u64,
    /// Queue items put back after a nack, a lost consumer or a visibility timeout.
    pub redelivered: u64,
    /// Publish batches whose acknowledgement was held back by a slow subscriber.
    pub held_batches: u64,
    /// Clients dropped because they stopped reading (see [`BrokerConfig::stall_limit`]).
    pub stalled_clients: u64,
}

impl BrokerCounters {
    fn snapshot(&self) -> BrokerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerStats {
            clients: get(&self.clients),
            rejected: get(&self.rejected),
            events_in: get(&self.events_in),
            events_out: get(&self.events_out),
            dead_clients: get(&self.dead_clients),
            redelivered: get(&self.redelivered),
            held_batches: get(&self.held_batches),
            stalled_clients: get(&self.stalled_clients),
        }
    }
}

/// A broker running on the current tokio runtime. Dropping it stops the broker
/// and closes its socket (clients then reconnect with backoff).
///
/// ```no_run
/// # async fn demo() -> busbar_core::Result<()> {
/// let broker = busbar_zmq::Broker::bind("tcp://127.0.0.1:0").await?;
/// let bus = busbar_core::Bus::connect(&broker.url()).await?;
/// # Ok(()) }
/// ```
pub struct Broker {
    endpoint: String,
    port: u16,
    counters: Arc<BrokerCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Broker {
    /// Binds a broker with the default configuration to `endpoint`
    /// (`tcp://127.0.0.1:0` picks a free port; see [`Broker::port`]).
    pub async fn bind(endpoint: &str) -> Result<Broker> {
        Broker::bind_with(endpoint, BrokerConfig::default()).await
    }

    /// Binds a broker with `config` to `endpoint`.
    pub async fn bind_with(endpoint: &str, config: BrokerConfig) -> Result<Broker> {
        let mut socket = zeromq::RouterSocket::new();
        let monitor = socket.monitor();
        // The only way to close one peer's connection (a client that stopped reading).
        let backend = socket.backend();
        let bound = socket
            .bind(endpoint)
            .await
            .map_err(|err| Error::transport(format!("cannot bind {endpoint}: {err}")))?;
        let bound = bound.to_string();
        let port = bound
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let (send, recv) = socket.split();
        let pump = pump::Pump::start(send, backend).map_err(|err| {
            Error::transport(format!("cannot start the broker's send thread: {err}"))
        })?;
        let counters = Arc::new(BrokerCounters::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let core = core::Core::new(config, pump, counters.clone());
        let task = tokio::spawn(run(core, recv, monitor, stop_rx));
        tracing::info!(endpoint = %bound, "busbar zmq broker listening");
        Ok(Broker {
            endpoint: bound,
            port,
            counters,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The bound endpoint, e.g. `tcp://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bound TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL clients connect to: `zmq://host:port`.
    pub fn url(&self) -> String {
        match self.endpoint.strip_prefix("tcp://") {
            Some(rest) => format!("zmq://{rest}"),
            None => self.endpoint.clone(),
        }
    }

    /// A copy of the broker's counters.
    pub fn stats(&self) -> BrokerStats {
        self.counters.snapshot()
    }

    /// Stops the broker and waits until its socket is closed and its port can
    /// be bound again (so a new broker can take its place at once).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        // The socket's accept loop ends on its own task, shortly after.
        let Some(addr) = self
            .endpoint
            .strip_prefix("tcp://")
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        else {
            return;
        };
        let released = async {
            loop {
                let socket = match addr {
                    std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                    std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
                };
                let bound = socket.and_then(|s| {
                    s.set_reuseaddr(true)?;
                    s.bind(addr)?;
                    s.listen(1)
                });
                if bound.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), released)
            .await
            .is_err()
        {
            tracing::warn!(endpoint = %self.endpoint, "the broker's port is still bound after shutdown");
        }
    }

    /// Runs until `stop` resolves (for the broker binary).
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) {
        stop.await;
        self.shutdown().await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Messages from the broker's own tasks to its state.
pub(crate) enum Internal {
    /// A client's writer drained below the low-water mark.
    Drained(u64),
}

async fn run(
    mut core: core::Core,
    mut recv: zeromq::RouterRecvHalf,
    mut monitor: futures::channel::mpsc::Receiver<SocketEvent>,
    mut stop: oneshot::Receiver<()>,
) {
    let (internal_tx, mut internal_rx) = mpsc::unbounded_channel();
    core.set_internal(internal_tx);
    core.start_heartbeats();
    loop {
        let next_timer = core.next_timer();
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(internal) = internal_rx.recv() => core.internal(internal),
            // Before the socket: a flood of messages must not starve the
            // timers (heartbeats, stall checks, visibility timeouts).
            _ = tokio::time::sleep_until(next_timer) => core.fire_timers(),
            Some(event) = monitor.next() => {
                if let SocketEvent::Disconnected(peer) = event {
                    let identity: Bytes = peer.into();
                    core.disconnected(&identity);
                }
            }
            message = recv.recv() => match message {
                Ok(message) => core.handle(message.into_vec()),
                Err(err) => {
                    tracing::debug!(%err, "broker receive failed");
                }
            },
        }
    }
    core.close();
    tracing::info!("busbar zmq broker stopped");
}

/// Logs and counts a rejected message.
pub(crate) fn reject(counters: &BrokerCounters, peer: &[u8], why: &Malformed) {
    counters.rejected.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(peer = %hex(peer), reason = %why, "broker rejected a malformed message");
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

pub(crate) use protocol::cmd;
