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

use crate::pubsub::Topic;
use busbar_core::connect::Failure;
use busbar_core::{Error, Stats};
use bytes::Bytes;
use redis::aio::{AsyncPushSender, ConnectionLike, MultiplexedConnection, SendError};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, RedisError, RedisFuture, Value};
use std::collections::HashMap;
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

use crate::outage::connect_failure;
pub(crate) use crate::outage::Backoff;

/// A connection to one server, or to a whole Redis Cluster (which routes each
/// command to the node holding its key, follows redirections and reconnects
/// nodes by itself).
#[derive(Clone)]
pub(crate) enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Connection {
    /// Runs `cmd` on the node holding `key`. Keyless commands that concern a
    /// connection (`CLIENT ID`, `CLIENT UNBLOCK`) must reach the node that
    /// connection is on, which is the node of the key it blocks on.
    pub(crate) async fn query_at<T: redis::FromRedisValue>(
        &mut self,
        key: &[u8],
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        match self {
            Connection::Single(conn) => cmd.query_async(conn).await,
            Connection::Cluster(conn) => {
                let value = conn
                    .route_command(cmd.clone(), RoutingInfo::SingleNode(node_of(key)))
                    .await?;
                redis::from_redis_value(value).map_err(RedisError::from)
            }
        }
    }

    /// Sends `pipe` to the node holding `key`; replies are not read.
    pub(crate) async fn exec_at(
        &mut self,
        key: &[u8],
        pipe: redis::Pipeline,
    ) -> Result<(), RedisError> {
        match self {
            Connection::Single(conn) => pipe.exec_async(conn).await,
            Connection::Cluster(conn) => {
                let count = pipe.len();
                conn.route_pipeline(pipe, 0, count, node_of(key))
                    .await
                    .map(drop)
            }
        }
    }

    /// Subscribes to a channel, glob or sharded channel.
    pub(crate) async fn subscribe(&mut self, topic: &Topic) -> Result<(), RedisError> {
        match (self, topic) {
            (Connection::Single(c), Topic::Channel(name) | Topic::Shard(name)) => {
                c.subscribe(name).await
            }
            (Connection::Single(c), Topic::Glob(glob)) => c.psubscribe(glob).await,
            (Connection::Cluster(c), Topic::Channel(name)) => c.subscribe(name).await,
            (Connection::Cluster(c), Topic::Glob(glob)) => c.psubscribe(glob).await,
            (Connection::Cluster(c), Topic::Shard(name)) => c.ssubscribe(name).await,
        }
    }

    /// Undoes [`subscribe`](Self::subscribe).
    pub(crate) async fn unsubscribe(&mut self, topic: &Topic) -> Result<(), RedisError> {
        match (self, topic) {
            (Connection::Single(c), Topic::Channel(name) | Topic::Shard(name)) => {
                c.unsubscribe(name).await
            }
            (Connection::Single(c), Topic::Glob(glob)) => c.punsubscribe(glob).await,
            (Connection::Cluster(c), Topic::Channel(name)) => c.unsubscribe(name).await,
            (Connection::Cluster(c), Topic::Glob(glob)) => c.punsubscribe(glob).await,
            (Connection::Cluster(c), Topic::Shard(name)) => c.sunsubscribe(name).await,
        }
    }
}

/// The primary serving `key`'s hash slot.
fn node_of(key: &[u8]) -> SingleNodeRoutingInfo {
    SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master))
}

/// Where connections go: one server, or the seed nodes of a cluster.
enum Target {
    Single(Client),
    Cluster {
        nodes: Vec<redis::ConnectionInfo>,
        tls: Option<redis::TlsCertificates>,
    },
}

/// Opens connections to one server or one cluster.
pub(crate) struct Opener {
    target: Target,
    config: Arc<Config>,
}

impl Opener {
    pub(crate) fn new(config: Arc<Config>) -> busbar_core::Result<Self> {
        let mut infos = config.connection_infos()?;
        let tls = config.tls_certificates()?;
        let target = if config.is_cluster() {
            Target::Cluster { nodes: infos, tls }
        } else {
            let info = infos.remove(0);
            let client = match tls {
                Some(certificates) => Client::build_with_tls(info, certificates),
                None => Client::open(info),
            };
            Target::Single(client.map_err(transport_error)?)
        };
        Ok(Opener { target, config })
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// True when connections go to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    /// A new connection; `response_timeout` `None` for blocking pops.
    pub(crate) async fn open(
        &self,
        push: Option<Arc<dyn AsyncPushSender>>,
        response_timeout: Option<Duration>,
    ) -> Result<Connection, RedisError> {
        match &self.target {
            Target::Single(client) => {
                let mut config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.config.attempt_timeout))
                    .set_response_timeout(response_timeout);
                if let Some(push) = push {
                    config = config.set_push_sender(PushAdapter(push));
                }
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Single)
            }
            Target::Cluster { nodes, tls } => {
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
                    .connection_timeout(self.config.attempt_timeout);
                if let Some(timeout) = response_timeout {
                    builder = builder.response_timeout(timeout);
                }
                if let Some(push) = push {
                    builder = builder.push_sender(PushAdapter(push));
                }
                if let Some(certificates) = tls {
                    builder = builder
                        .tls(redis::TlsMode::Secure)
                        .certs(certificates.clone());
                }
                let client = builder.build()?;
                client.get_async_connection().await.map(Connection::Cluster)
            }
        }
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
    current: Mutex<Option<(u64, Connection)>>,
    up: watch::Sender<bool>,
    lost: mpsc::UnboundedSender<u64>,
    closed: AtomicBool,
    generation: AtomicU64,
}

impl CommandLink {
    /// Connects once (failing if the server is unreachable, classified for the
    /// connect policy) and starts the supervisor.
    pub(crate) async fn connect(
        opener: Arc<Opener>,
        stats: Arc<Stats>,
    ) -> Result<(Arc<CommandLink>, tokio::task::JoinHandle<()>), Failure> {
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
        let conn = link.open(1).await.map_err(connect_failure)?;
        link.install(1, conn);
        let task = tokio::spawn(supervise(Arc::downgrade(&link), lost_rx));
        Ok((link, task))
    }

    async fn open(&self, generation: u64) -> Result<Connection, RedisError> {
        // A cluster connection replaces a lost node connection by itself; only
        // a command failing through its retries (`broken`) replaces it all.
        let watch: Option<Arc<dyn AsyncPushSender>> = if self.opener.is_cluster() {
            None
        } else {
            Some(Arc::new(DisconnectWatch {
                generation,
                lost: self.lost.clone(),
            }))
        };
        self.opener
            .open(watch, Some(self.opener.config().response_timeout))
            .await
    }

    fn install(&self, generation: u64, conn: Connection) {
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
        self.get_after(wait, None).await
    }

    /// Like [`get`](Self::get), but never the connection of generation
    /// `failed`: after a command failed on it, wait for its replacement.
    pub(crate) async fn get_after(
        &self,
        wait: Duration,
        failed: Option<u64>,
    ) -> busbar_core::Result<Conn<'_>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut up = self.up.subscribe();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let current = self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some((generation, conn)) = current.filter(|(g, _)| Some(*g) != failed) {
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

    /// Reports that the connection of `generation` failed. On a cluster this
    /// means the client's own retries failed too: the whole connection is
    /// replaced, and writes wait (buffered) meanwhile, as on a single server.
    pub(crate) fn broken(&self, generation: u64) {
        let _ = self.lost.send(generation);
    }

    /// True when connected to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.opener.is_cluster()
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
    pub(crate) conn: Connection,
}

impl Conn<'_> {
    /// Which connection this is (see [`CommandLink::get_after`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

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
    /// The server's `CLIENT ID` of this connection (on the node of `key`), for
    /// `CLIENT UNBLOCK`.
    pub(crate) client_id: i64,
    /// The key this connection blocks on; in a cluster its node gave `client_id`.
    key: Vec<u8>,
    pub(crate) conn: Connection,
}

impl BlockingPool {
    pub(crate) fn new(opener: Arc<Opener>) -> Self {
        BlockingPool {
            opener,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    /// An idle connection, or a new one, to block on `key`.
    pub(crate) async fn take(&self, key: &str) -> busbar_core::Result<Blocking> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut blocking = match idle {
            Some(blocking) if !self.opener.is_cluster() || blocking.key == key.as_bytes() => {
                return Ok(blocking)
            }
            Some(blocking) => blocking,
            None => Blocking {
                client_id: 0,
                key: Vec::new(),
                conn: self
                    .opener
                    .open(None, None)
                    .await
                    .map_err(transport_error)?,
            },
        };
        let response_timeout = self.opener.config().response_timeout;
        let mut client_id = redis::cmd("CLIENT");
        client_id.arg("ID");
        blocking.client_id = tokio::time::timeout(
            response_timeout,
            blocking.conn.query_at::<i64>(key.as_bytes(), &client_id),
        )
        .await
        .map_err(|_| Error::transport("redis did not answer CLIENT ID in time"))?
        .map_err(transport_error)?;
        blocking.key = key.as_bytes().to_vec();
        Ok(blocking)
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
    /// `PUBLISH channel payload`, or `SPUBLISH` when `sharded` (in a cluster, a
    /// sharded channel lives on the node of its hash slot).
    Publish {
        /// The full channel name.
        channel: Bytes,
        /// The encoded envelope.
        payload: Bytes,
        /// Sent with `SPUBLISH` on a cluster.
        sharded: bool,
    },
    /// Commands whose replies nobody waits for, sent together in this order to
    /// the node holding `key` (all of them must concern that node).
    Commands {
        /// The key whose hash slot routes the commands in a cluster.
        key: Bytes,
        /// The commands.
        cmds: Box<[redis::Cmd]>,
    },
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
    /// Starts the writer. On a cluster each publish goes through the node of its
    /// channel's slot; all event channels of a namespace share one slot (see
    /// `pubsub::event_prefix`), so a bus's events leave through one node, in order.
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
    let cluster = link.is_cluster();
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let pipes = pipelines(batch.drain(..), cluster, &mut flushed);
        let count: usize = pipes.iter().map(|(_, pipe)| pipe.len()).sum();
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
        // One pipeline per node; each keeps its jobs' order, and every event
        // goes through one node, so per-publisher order holds.
        let sent = futures::future::join_all(pipes.into_iter().map(|(key, pipe)| {
            let mut redis_conn = conn.conn.clone();
            async move { redis_conn.exec_at(&key, pipe).await }
        }))
        .await;
        for err in sent.into_iter().filter_map(Result::err) {
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

/// The batch as pipelines: one for a single server, one per hash slot for a
/// cluster (each named by a key of its slot).
fn pipelines(
    batch: impl Iterator<Item = Job>,
    cluster: bool,
    flushed: &mut Vec<tokio::sync::oneshot::Sender<()>>,
) -> Vec<(Bytes, redis::Pipeline)> {
    let mut pipes: Vec<(Bytes, redis::Pipeline)> = Vec::new();
    let mut slots: HashMap<Slot, usize> = HashMap::new();
    for job in batch {
        let (key, cmds) = match job {
            Job::Publish {
                channel,
                payload,
                sharded,
            } => {
                let mut publish = redis::cmd(if sharded && cluster {
                    "SPUBLISH"
                } else {
                    "PUBLISH"
                });
                publish.arg(&channel[..]).arg(&payload[..]);
                (channel, vec![publish])
            }
            Job::Commands { key, cmds } => (key, cmds.into_vec()),
            Job::Flush(done) => {
                flushed.push(done);
                continue;
            }
        };
        let slot = Slot::for_key(if cluster { &key[..] } else { b"" });
        let index = *slots.entry(slot).or_insert_with(|| {
            pipes.push((key, redis::pipe()));
            pipes.len() - 1
        });
        for cmd in cmds {
            pipes[index].1.add_command(cmd).ignore();
        }
    }
    pipes
}
