//! Connections to Redis, and everything about losing and restoring them.
//!
//! A bus holds three kinds of connection:
//!
//! - one shared **command** connection ([`CommandLink`]) for non-blocking
//!   commands, fed in order by the publish [`Writer`];
//! - one **subscriber** connection (RESP3, in [`pubsub`](crate::pubsub)) whose
//!   subscriptions are replayed on every reconnect;
//! - **blocking** connections ([`BlockingPool`]), one per blocking pop in
//!   progress, with no response timeout (the pop's own server-side timeout ends it).
//!
//! Redis errors never leave this crate: they become [`Error::Transport`].

use busbar_core::{Error, Stats};
use bytes::Bytes;
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, RedisError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

use crate::Config;

/// Turns a redis error into a busbar error.
pub(crate) fn transport_error(err: RedisError) -> Error {
    Error::transport(err)
}

/// True when `err` means the connection is gone (and so must be replaced).
pub(crate) fn is_connection_error(err: &RedisError) -> bool {
    err.is_unrecoverable_error() || err.is_io_error() || err.is_connection_dropped()
}

/// Exponential backoff between reconnect attempts, capped.
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(config: &Config) -> Self {
        Backoff {
            next: config.reconnect_min,
            min: config.reconnect_min,
            max: config.reconnect_max,
        }
    }

    /// Waits before the next attempt and grows the delay.
    pub(crate) async fn wait(&mut self) {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::time::sleep(delay).await;
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Opens connections to one server.
pub(crate) struct Opener {
    client: Client,
    config: Arc<Config>,
}

impl Opener {
    pub(crate) fn new(config: Arc<Config>) -> busbar_core::Result<Self> {
        let info = config.connection_info()?;
        let client = if config.is_tls() {
            // One process-wide provider; an error means one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|err| Error::InvalidUrl {
                    url: busbar_core::redact_url(config.redis_url()),
                    reason: format!("cannot read {}: {err}", path.display()),
                })
            };
            let root_cert = config.tls_ca.as_deref().map(read).transpose()?;
            let client_tls = match &config.tls_client {
                Some((cert, key)) => Some(redis::ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                }),
                None => None,
            };
            Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
        } else {
            Client::open(info)
        };
        Ok(Opener {
            client: client.map_err(transport_error)?,
            config,
        })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// A new multiplexed connection; `response_timeout` `None` for blocking pops.
    pub(crate) async fn open(
        &self,
        push: Option<Arc<dyn AsyncPushSender>>,
        response_timeout: Option<Duration>,
    ) -> Result<MultiplexedConnection, RedisError> {
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(response_timeout);
        if let Some(push) = push {
            config = config.set_push_sender(PushAdapter(push));
        }
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// Lets an `Arc<dyn AsyncPushSender>` be handed to redis by value.
struct PushAdapter(Arc<dyn AsyncPushSender>);

impl AsyncPushSender for PushAdapter {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        self.0.send(info)
    }
}

/// Tells a supervisor that the connection of generation `generation` closed.
struct DisconnectWatch {
    generation: u64,
    lost: mpsc::UnboundedSender<u64>,
}

impl AsyncPushSender for DisconnectWatch {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        if info.kind == PushKind::Disconnection {
            let _ = self.lost.send(self.generation);
        }
        Ok(())
    }
}

/// The shared command connection, replaced by a supervisor task when it is lost.
pub(crate) struct CommandLink {
    opener: Arc<Opener>,
    stats: Arc<Stats>,
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    up: watch::Sender<bool>,
    lost: mpsc::UnboundedSender<u64>,
    closed: AtomicBool,
    generation: AtomicU64,
}

impl CommandLink {
    /// Connects once (failing if the server is unreachable) and starts the supervisor.
    pub(crate) async fn connect(
        opener: Arc<Opener>,
        stats: Arc<Stats>,
    ) -> busbar_core::Result<(Arc<CommandLink>, tokio::task::JoinHandle<()>)> {
        let (lost, lost_rx) = mpsc::unbounded_channel();
        let link = Arc::new(CommandLink {
            opener,
            stats,
            current: Mutex::new(None),
            up: watch::Sender::new(false),
            lost,
            closed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        });
        let conn = link.open(1).await.map_err(transport_error)?;
        link.install(1, conn);
        let task = tokio::spawn(supervise(Arc::downgrade(&link), lost_rx));
        Ok((link, task))
    }

    async fn open(&self, generation: u64) -> Result<MultiplexedConnection, RedisError> {
        let watch = DisconnectWatch {
            generation,
            lost: self.lost.clone(),
        };
        self.opener
            .open(
                Some(Arc::new(watch)),
                Some(self.opener.config().response_timeout),
            )
            .await
    }

    fn install(&self, generation: u64, conn: MultiplexedConnection) {
        self.generation.store(generation, Ordering::SeqCst);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, conn));
        self.up.send_replace(true);
    }

    /// True while connected.
    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// The current connection, waiting up to `wait` for a reconnect when it is down.
    pub(crate) async fn get(&self, wait: Duration) -> busbar_core::Result<Conn<'_>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut up = self.up.subscribe();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if let Some((generation, conn)) = self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return Ok(Conn {
                    link: self,
                    generation,
                    conn,
                });
            }
            match tokio::time::timeout_at(deadline, up.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(Error::Closed),
                Err(_) => return Err(Error::transport("redis is unreachable (reconnecting)")),
            }
        }
    }

    /// Reports that the connection of `generation` failed.
    pub(crate) fn broken(&self, generation: u64) {
        let _ = self.lost.send(generation);
    }

    /// Stops reconnecting and drops the connection.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.up.send_replace(false);
    }
}

/// A command connection checked out of a [`CommandLink`]; report failures with
/// [`Conn::check`] so a lost connection gets replaced.
pub(crate) struct Conn<'a> {
    link: &'a CommandLink,
    generation: u64,
    /// The connection (a cheap clone of the shared one).
    pub(crate) conn: MultiplexedConnection,
}

impl Conn<'_> {
    /// Passes `result` through, reporting a lost connection to the supervisor.
    pub(crate) fn check<T>(&self, result: Result<T, RedisError>) -> busbar_core::Result<T> {
        result.map_err(|err| {
            if is_connection_error(&err) {
                self.link.broken(self.generation);
            }
            transport_error(err)
        })
    }
}

async fn supervise(link: std::sync::Weak<CommandLink>, mut lost: mpsc::UnboundedReceiver<u64>) {
    while let Some(generation) = lost.recv().await {
        let Some(this) = link.upgrade() else { return };
        if this.closed.load(Ordering::Acquire) {
            return;
        }
        if generation != this.generation.load(Ordering::SeqCst) || !this.is_up() {
            continue; // an old connection's late notice
        }
        this.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        this.up.send_replace(false);
        Stats::incr(&this.stats.disconnects);
        tracing::warn!("redis command connection lost; reconnecting");
        let mut backoff = Backoff::new(this.opener.config());
        let next = generation + 1;
        loop {
            if this.closed.load(Ordering::Acquire) {
                return;
            }
            match this.open(next).await {
                Ok(conn) => {
                    this.install(next, conn);
                    Stats::incr(&this.stats.reconnects);
                    tracing::info!("redis command connection restored");
                    break;
                }
                Err(err) => {
                    tracing::debug!(%err, "redis reconnect attempt failed");
                    backoff.wait().await;
                }
            }
        }
        drop(this);
    }
}

/// Idle connections for blocking pops, so each pop has a connection of its own
/// and nothing else waits behind it.
pub(crate) struct BlockingPool {
    opener: Arc<Opener>,
    idle: Mutex<Vec<Blocking>>,
    closed: AtomicBool,
}

/// A connection for blocking pops.
pub(crate) struct Blocking {
    /// The server's `CLIENT ID` of this connection, for `CLIENT UNBLOCK`.
    pub(crate) client_id: i64,
    pub(crate) conn: MultiplexedConnection,
}

impl BlockingPool {
    pub(crate) fn new(opener: Arc<Opener>) -> Self {
        BlockingPool {
            opener,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// An idle connection, or a new one.
    pub(crate) async fn take(&self) -> busbar_core::Result<Blocking> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(blocking) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(blocking);
        }
        let mut conn = self
            .opener
            .open(None, None)
            .await
            .map_err(transport_error)?;
        let response_timeout = self.opener.config().response_timeout;
        let client_id = tokio::time::timeout(
            response_timeout,
            redis::cmd("CLIENT").arg("ID").query_async::<i64>(&mut conn),
        )
        .await
        .map_err(|_| Error::transport("redis did not answer CLIENT ID in time"))?
        .map_err(transport_error)?;
        Ok(Blocking { client_id, conn })
    }

    /// Returns a healthy connection for reuse (at most a few are kept).
    pub(crate) fn give_back(&self, blocking: Blocking) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < 16 {
            idle.push(blocking);
        }
    }

    /// Drops every idle connection and refuses new ones.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// One write for the ordered [`Writer`].
pub(crate) enum Job {
    /// `PUBLISH channel payload`.
    Publish {
        /// The full channel name.
        channel: Bytes,
        /// The encoded envelope.
        payload: Bytes,
    },
    /// Any command whose reply nobody waits for.
    Command(redis::Cmd),
    /// Several such commands, sent together in this order.
    Commands(Box<[redis::Cmd]>),
    /// Answered once everything queued before it was sent.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Most writes sent to Redis in one pipeline.
const MAX_BATCH: usize = 1024;

/// Publishes (and other fire-and-forget writes) in order, pipelined in batches:
/// one task drains a bounded buffer and sends everything waiting as one pipeline,
/// so concurrent publishers never wait a round trip each, and one publisher's
/// writes reach Redis in the order it made them.
///
/// While the connection is down the buffer fills; once full, writes fail with a
/// clear error instead of waiting forever.
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    link: Arc<CommandLink>,
    capacity: usize,
    outage_wait: Duration,
}

impl Writer {
    pub(crate) fn start(
        link: Arc<CommandLink>,
        config: &Config,
    ) -> (Writer, tokio::task::JoinHandle<()>) {
        let capacity = config.publish_buffer.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(write_loop(link.clone(), rx, config.outage_wait));
        (
            Writer {
                tx,
                link,
                capacity,
                outage_wait: config.outage_wait,
            },
            task,
        )
    }

    /// Queues `job`; waits for room while connected, fails at once when the
    /// connection is down and the buffer is full.
    pub(crate) async fn send(&self, job: Job) -> busbar_core::Result<()> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
            Err(mpsc::error::TrySendError::Full(job)) => {
                if !self.link.is_up() {
                    return Err(self.full());
                }
                match tokio::time::timeout(self.outage_wait, self.tx.send(job)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(Error::Closed),
                    Err(_) => Err(self.full()),
                }
            }
        }
    }

    /// Queues `job` without waiting (for clean-up from `Drop`); false when full or closed.
    pub(crate) fn send_now(&self, job: Job) -> bool {
        self.tx.try_send(job).is_ok()
    }

    /// Queues `job` without waiting; gives it back when the buffer is full.
    pub(crate) fn try_send(&self, job: Job) -> Result<(), Job> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(job)) => Err(job),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    fn full(&self) -> Error {
        Error::transport(format!(
            "redis is unreachable and the publish buffer ({} messages) is full",
            self.capacity
        ))
    }
}

async fn write_loop(link: Arc<CommandLink>, mut rx: mpsc::Receiver<Job>, outage_wait: Duration) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flushed = Vec::new();
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let mut pipe = redis::pipe();
        for job in batch.drain(..) {
            match job {
                Job::Publish { channel, payload } => {
                    pipe.cmd("PUBLISH")
                        .arg(&channel[..])
                        .arg(&payload[..])
                        .ignore();
                }
                Job::Command(cmd) => {
                    pipe.add_command(cmd).ignore();
                }
                Job::Commands(cmds) => {
                    for cmd in cmds.into_vec() {
                        pipe.add_command(cmd).ignore();
                    }
                }
                Job::Flush(done) => flushed.push(done),
            }
        }
        let count = pipe.len();
        if count == 0 {
            for done in flushed.drain(..) {
                let _ = done.send(());
            }
            continue;
        }
        let conn = loop {
            // Once the bus is gone, wait for a reconnect only a bounded time.
            let wait = if rx.is_closed() {
                outage_wait
            } else {
                Duration::from_secs(3600)
            };
            match link.get(wait).await {
                Ok(conn) => break conn,
                Err(Error::Closed) => return,
                Err(_) if rx.is_closed() => return,
                Err(_) => continue,
            }
        };
        let mut redis_conn = conn.conn.clone();
        if let Err(err) = pipe.exec_async(&mut redis_conn).await {
            if is_connection_error(&err) {
                link.broken(conn.generation);
                tracing::warn!(%err, count, "connection lost while publishing; these messages may not have been delivered");
            } else {
                tracing::warn!(%err, "redis refused a published write");
            }
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}
