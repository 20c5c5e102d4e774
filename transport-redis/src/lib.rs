//! The Redis transport of busbar: `redis://` and `rediss://`.
//!
//! ```no_run
//! # async fn demo() -> busbar_core::Result<()> {
//! use busbar_redis as _; // registers redis:// and rediss:// (the `busbar` facade does this)
//! let bus = busbar_core::Bus::connect("redis://127.0.0.1:6379/?namespace=myapp").await?;
//! bus.publish_to("orders.created", &42).await?;
//! # Ok(()) }
//! ```
//!
//! - **Events** are `PUBLISH`ed on `{<namespace>:e}:<topic>` by one ordered writer
//!   that pipelines concurrent publishes; wildcard subscriptions `PSUBSCRIBE` a
//!   coarser glob and filter exactly on the client ([`pubsub`]).
//! - **Queues** are lists; `get` moves an item into a processing list of its
//!   lane, `receive` into an in-flight table with a visibility timeout, on the
//!   server before the reply leaves, so no item is ever lost, only redelivered
//!   ([`queue`]).
//! - **RPC** pushes a request onto a per-method list popped by one provider, and
//!   `call_all` publishes to every provider, counting the receivers ([`rpc`]).
//! - A lost connection is restored with backoff, and every subscription, queue
//!   consumer and RPC provider with it; `stats().disconnects`/`reconnects` count
//!   it. Publishes made meanwhile are buffered up to `publish_buffer`, then fail.
//!   Queue puts, acks and nacks caught by the loss are sent again on the new
//!   connection for up to `outage_wait_ms`, then fail saying whether they may
//!   have been done. A put sent again skips its item if it is among the
//!   newest 1024 of the queue (its reply was all that was lost); one already
//!   taken or buried deeper is stored twice (at least once).
//!
//! # URL
//!
//! `redis://[user:password@]host[:port][/db][?query]`, or a cluster (below).
//! Query parameters read by busbar (the rest is passed to the Redis client):
//!
//! | parameter | default | meaning |
//! | --- | --- | --- |
//! | `namespace` | `busbar` | prefix of every key and channel |
//! | `publish_buffer` | `65536` | publishes buffered while disconnected |
//! | `connect_timeout` | `5000` | ms `connect` keeps trying an unreachable server (`0`: once); see [`busbar_core::connect`] |
//! | `outage_wait_ms` | `10000` | how long an operation waits for a reconnect |
//! | `reap_interval_ms` | `100` | how often waiting consumers look for expired items |
//! | `get_batch` | `64` | most items one round trip takes for a bus whose gets come quickly (`1`: one per get) |
//! | `tls_ca` | system roots | `rediss://`: PEM file of the CA to trust |
//! | `tls_cert`, `tls_key` | none | `rediss://`: client certificate and key (PEM files) |
//!
//! The connection always speaks RESP3 with `TCP_NODELAY`.
//!
//! # Guarantees
//!
//! - Events: at most once (Redis pub/sub keeps nothing for a disconnected
//!   subscriber); in order per publisher; live when `subscribe` returns.
//! - Queue items: at least once; an item stays until acknowledged, for as long as
//!   Redis keeps data (its persistence settings). FIFO for one consumer; items a
//!   bus took ahead and gave back, like nacked ones, go back to the head of the
//!   queue, so competing consumers may meet newer items first.
//! - RPC: each call reaches at most one provider; `NoResponders` after one round
//!   trip when nobody serves the method.
//!
//!
//! # Redis Cluster
//!
//! `redis+cluster://[user:password@]host:port,host:port[?query]` (or
//! `rediss+cluster://`) names seed nodes; the rest of the cluster is discovered,
//! and redirections and node reconnects are followed by the client. Everything
//! above holds on a cluster, laid out so no operation spans two nodes:
//!
//! - a queue's keys share one hash slot (`ns:q:{queue}`, `:p`, `:fly`, ...), so
//!   its Lua scripts run on one node; blocking pops go to that node;
//! - events use plain `PUBLISH`/`PSUBSCRIBE`, which a cluster forwards to every
//!   node, so wildcard subscriptions work; the `{<namespace>:e}` hash tag puts
//!   every event channel and glob of a namespace in one slot, so publishes and
//!   subscriptions meet on one node: per-publisher order holds, and a new
//!   subscription never hears an event published before it (forwarding between
//!   nodes is asynchronous, and would allow both);
//! - RPC presence and inboxes are sharded channels (`SSUBSCRIBE`/`SPUBLISH`) in
//!   the slot of the method's request list, so the subscriber count that `call`
//!   and `call_all` rely on is complete on the node that reads it (a plain
//!   channel's count only covers the node it is asked on);
//! - the ordered writer sends one pipeline per hash slot.
//!
//! A lost node connection is restored by the cluster client (redis-rs), which
//! retries a command a few times; when a command fails even so, busbar replaces
//! the whole cluster connection with backoff, buffering publishes meanwhile as
//! on a single server, and replays subscriptions.
//!
//! Redis 7.0 or later is needed (`BLMPOP`, sharded pub/sub). The tests run the
//! conformance suite and fault tests on a local three-master cluster, and the
//! conformance suite again over TLS (`rediss+cluster://`, same settings as
//! `rediss://`) on one whose nodes share a CA and run `tls-cluster yes`, so
//! they give TLS clients their TLS ports.
#![deny(missing_docs)]

mod command;
mod connection;
mod kill;
mod outage;
pub mod pubsub;
pub mod queue;
pub mod rpc;
mod url;

use async_trait::async_trait;
use busbar_core::connect::{ConnectPolicy, Failure};
use busbar_core::inflight::InFlight;
use busbar_core::transport::{
    Capabilities, Connector, EventBus, Guard, Handler, RawDelivery, RawSubscription,
    SubscribeOptions,
};
use busbar_core::{redact_url, Envelope, Error, Kind, MessageId, Name, Pattern, Result, Stats};
use connection::{BlockingPool, CommandLink, Opener, Writer};
use dashmap::DashMap;
use pubsub::Subscriber;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::{cluster_nodes, connection_info, decode_path};

/// Settings of a Redis bus. Built from a URL with [`Config::from_url`]; every
/// field can then be changed before [`RedisBus::connect_with`].
#[derive(Debug, Clone)]
pub struct Config {
    url: String,
    /// For `redis+cluster://`: one URL per seed node (the rest is discovered).
    cluster_nodes: Option<Vec<String>>,
    /// Prefix of every Redis key and channel, so several applications can share a server.
    pub namespace: String,
    /// Publishes buffered while Redis is unreachable before `publish` fails.
    pub publish_buffer: usize,
    /// How long an operation waits for a lost connection to come back.
    pub outage_wait: Duration,
    /// Timeout of one non-blocking command.
    pub response_timeout: Duration,
    /// How long `connect` keeps trying a server it cannot reach (URL parameter
    /// `connect_timeout`, in ms; `0`: one attempt), with jittered backoff
    /// between attempts: see [`busbar_core::connect`].
    pub connect_timeout: Duration,
    /// Timeout of one connection attempt (TCP, TLS and handshake), for
    /// reconnects and new connections of a connected bus.
    pub attempt_timeout: Duration,
    /// First delay between reconnect attempts (it doubles up to `reconnect_max`).
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts.
    pub reconnect_max: Duration,
    /// How long the lane a `get` takes on stays registered without being renewed
    /// (at half of it): an item its bus took and never settled, because the bus
    /// died, comes back this long after. A lane whose connection is lost returns
    /// its item at once, and a `get` whose caller gives up puts back what Redis
    /// handed it at once. Long enough (30 s) that a bus stalled for a while is
    /// not overtaken by a redelivery.
    pub get_visibility: Duration,
    /// How many items one round trip takes at most for a bus whose `get`s of a
    /// queue come quickly (URL parameter `get_batch`; default 64, at most 256;
    /// `1` takes one item per round trip). The batch follows the bus's pace:
    /// what its gets use up in 2.5 ms. Items no get asks for within 5 ms go
    /// back to the head of the queue.
    pub get_batch: usize,
    /// How often a bus whose consumers wait looks for items whose visibility expired.
    pub reap_interval: Duration,
    /// Requests one RPC provider runs at once.
    pub handler_concurrency: usize,
    /// How long `shutdown` waits for running handlers.
    pub shutdown_grace: Duration,
    /// Largest envelope accepted from the wire, in bytes.
    pub max_envelope: usize,
    /// For `rediss://`: the PEM file of the CA that signed the server's
    /// certificate (URL parameter `tls_ca`); without it the system's roots are used.
    pub tls_ca: Option<std::path::PathBuf>,
    /// For `rediss://` with client certificates: PEM certificate and key files
    /// (URL parameters `tls_cert` and `tls_key`).
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Config {
    /// Parses a `redis://`, `rediss://`, `redis+cluster://` or
    /// `rediss+cluster://` URL (see the crate docs for its query parameters).
    pub fn from_url(url: &str) -> Result<Config> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected redis://host:port".into()))?;
        let (scheme, cluster) = match scheme {
            "redis" | "rediss" => (scheme, false),
            "redis+cluster" => ("redis", true),
            "rediss+cluster" => ("rediss", true),
            _ => {
                return Err(invalid(format!(
                    "the redis transport does not open {scheme}:// URLs"
                )))
            }
        };
        let mut config = Config {
            url: String::new(),
            cluster_nodes: None,
            namespace: "busbar".into(),
            publish_buffer: 65_536,
            outage_wait: Duration::from_secs(10),
            response_timeout: Duration::from_secs(5),
            connect_timeout: busbar_core::connect::DEFAULT_TIMEOUT,
            attempt_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_secs(2),
            get_visibility: Duration::from_secs(30),
            get_batch: 64,
            reap_interval: Duration::from_millis(100),
            handler_concurrency: 256,
            shutdown_grace: Duration::from_secs(5),
            max_envelope: busbar_core::wire::DEFAULT_MAX_ENVELOPE,
            tls_ca: None,
            tls_client: None,
        };
        let mut tls_cert = None;
        let mut tls_key = None;
        let (base, query) = match rest.split_once('?') {
            Some((base, query)) => (base, query),
            None => (rest, ""),
        };
        let mut passed = Vec::new();
        let mut policy = ConnectPolicy::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if policy.read_param(key, value).map_err(invalid)? {
                continue;
            }
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| invalid(format!("{key} must be a number, not {value:?}")))
            };
            match key {
                "namespace" | "prefix" => {
                    if value.is_empty()
                        || value.contains(|c: char| c.is_whitespace() || c.is_control())
                    {
                        return Err(invalid(
                            "namespace must be non-empty, without whitespace".into(),
                        ));
                    }
                    config.namespace = value.to_owned();
                }
                "publish_buffer" => config.publish_buffer = number()?.max(1) as usize,
                "get_batch" => config.get_batch = number()?.clamp(1, 256) as usize,
                "outage_wait_ms" => config.outage_wait = Duration::from_millis(number()?),
                "reap_interval_ms" => {
                    config.reap_interval = Duration::from_millis(number()?.max(1))
                }
                "protocol" => {} // always RESP3
                "tls_ca" => config.tls_ca = Some(decode_path(value)),
                "tls_cert" => tls_cert = Some(decode_path(value)),
                "tls_key" => tls_key = Some(decode_path(value)),
                _ => passed.push(pair),
            }
        }
        config.connect_timeout = policy.timeout;
        config.tls_client = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(invalid("tls_cert and tls_key go together".into())),
        };
        if scheme != "rediss" && (config.tls_ca.is_some() || config.tls_client.is_some()) {
            return Err(invalid(
                "tls_ca, tls_cert and tls_key need rediss://".into(),
            ));
        }
        let query = if passed.is_empty() {
            String::new()
        } else {
            format!("?{}", passed.join("&"))
        };
        if cluster {
            let nodes = cluster_nodes(scheme, base).map_err(invalid)?;
            config.url = format!("{scheme}+cluster://{base}{query}");
            config.cluster_nodes = Some(nodes.iter().map(|n| format!("{n}{query}")).collect());
        } else {
            config.url = format!("{scheme}://{base}{query}");
        }
        config.connection_infos()?;
        Ok(config)
    }

    /// True for `rediss://` and `rediss+cluster://` (TLS).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss")
    }

    /// True for `redis+cluster://` and `rediss+cluster://` (Redis Cluster).
    pub fn is_cluster(&self) -> bool {
        self.cluster_nodes.is_some()
    }

    /// The URL given to the Redis client, without busbar's own parameters.
    pub fn redis_url(&self) -> &str {
        &self.url
    }

    /// The TLS settings of a `rediss://` URL, with its files read (`None`
    /// without TLS). Installs the process-wide rustls provider on first use.
    fn tls_certificates(&self) -> Result<Option<redis::TlsCertificates>> {
        if !self.is_tls() {
            return Ok(None);
        }
        // One process-wide provider; an error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|err| Error::InvalidUrl {
                url: redact_url(self.redis_url()),
                reason: format!("cannot read {}: {err}", path.display()),
            })
        };
        let root_cert = self.tls_ca.as_deref().map(read).transpose()?;
        let client_tls = match &self.tls_client {
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            None => None,
        };
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }

    /// A plain redis-rs client for the server of a single-server URL, with the
    /// same TLS settings, for tools that work beside the bus (such as the raw
    /// baselines of `busbar bench`). A cluster URL is an error.
    pub fn redis_client(&self) -> Result<redis::Client> {
        if self.is_cluster() {
            return Err(Error::InvalidUrl {
                url: redact_url(self.redis_url()),
                reason: "a plain client needs one server, not a cluster".into(),
            });
        }
        let client = match self.tls_certificates()? {
            Some(certificates) => redis::Client::build_with_tls(self.redis_url(), certificates),
            None => redis::Client::open(self.redis_url()),
        };
        client.map_err(Error::transport)
    }

    /// The server to connect to, or every seed node of a cluster.
    fn connection_infos(&self) -> Result<Vec<redis::ConnectionInfo>> {
        match &self.cluster_nodes {
            Some(nodes) => nodes.iter().map(|node| connection_info(node)).collect(),
            None => Ok(vec![connection_info(&self.url)?]),
        }
    }
}

/// What every part of the bus shares.
pub(crate) struct Shared {
    config: Arc<Config>,
    stats: Arc<Stats>,
    uid: String,
    inbox_name: String,
    inbox_prefix: String,
    link: Arc<CommandLink>,
    writer: Writer,
    subscriber: Arc<Subscriber>,
    pool: BlockingPool,
    pending: rpc::Pending,
    inbox: tokio::sync::OnceCell<Guard>,
    /// Providers of each method on this bus (each answers a `call_all`).
    providers: DashMap<String, usize>,
    /// Live providers, stopped at shutdown.
    serving: DashMap<MessageId, Arc<rpc::Serving>>,
    inflight: InFlight,
    /// Queues (base keys) with consumers waiting on this bus, and how many.
    waiting: DashMap<String, usize>,
    /// Notified when a wait ends.
    waiting_changed: tokio::sync::Notify,
    /// Becomes true at shutdown: blocked consumers give up.
    closing: tokio::sync::watch::Sender<bool>,
    /// Deliveries handed out and not yet settled: put back at shutdown.
    unsettled: DashMap<(String, [u8; 16]), ()>,
    /// Queue bookkeeping: acknowledgements waiting to ride with the next take,
    /// and the Redis clock as last seen.
    queues: queue::Local,
    /// Connection tasks, stopped last.
    core_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The writer: on drop it is left to send what was queued, then ends.
    writer_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Reaper and provider loops, stopped first.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Shared {
    /// The topic for a channel whose subscribers are counted (RPC presence and
    /// inboxes): sharded on a cluster, where a plain channel's count is one node's.
    pub(crate) fn counted_topic(&self, channel: String) -> pubsub::Topic {
        if self.link.is_cluster() {
            pubsub::Topic::Shard(channel)
        } else {
            pubsub::Topic::Channel(channel)
        }
    }

    /// The command publishing on a [`counted_topic`](Self::counted_topic).
    pub(crate) fn counted_publish(&self) -> &'static str {
        if self.link.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

/// A bus over one Redis server. Usually opened through `Bus::connect("redis://...")`.
pub struct RedisBus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("url", &redact_url(&self.shared.config.url))
            .field("namespace", &self.shared.config.namespace)
            .finish()
    }
}

impl RedisBus {
    /// Connects to the server named by `url`.
    pub async fn connect(url: &str) -> Result<RedisBus> {
        Self::connect_with(Config::from_url(url)?).await
    }

    /// Connects with explicit settings. A server that cannot be reached is
    /// tried again with jittered backoff for `connect_timeout`, then the error
    /// names it and the last cause; a refused password fails at once.
    pub async fn connect_with(config: Config) -> Result<RedisBus> {
        let config = Arc::new(config);
        let stats = Arc::new(Stats::default());
        let opener = Arc::new(Opener::new(config.clone())?);
        let policy = ConnectPolicy::with_timeout(config.connect_timeout);
        let address = redact_url(config.redis_url());
        let (link, link_task, subscriber, subscriber_task) = policy
            .connect(&address, |_limit| {
                let (opener, stats) = (opener.clone(), stats.clone());
                async move {
                    let (link, link_task) =
                        CommandLink::connect(opener.clone(), stats.clone()).await?;
                    match Subscriber::connect(opener, stats).await {
                        Ok((subscriber, task)) => Ok((link, link_task, subscriber, task)),
                        Err(err) => {
                            link.close();
                            link_task.abort();
                            Err(Failure::from(err))
                        }
                    }
                }
            })
            .await?;
        let uid = format!("{}", MessageId::new());
        // On a cluster, each bus publishes its events through the node of its id.
        let (writer, writer_task) = Writer::start(link.clone(), &config);
        let shared = Arc::new(Shared {
            inbox_name: rpc::inbox_channel(&config.namespace, &uid),
            inbox_prefix: rpc::inbox_prefix(&config.namespace),
            uid,
            stats,
            link,
            writer,
            subscriber,
            pool: BlockingPool::new(opener),
            pending: rpc::Pending::default(),
            inbox: tokio::sync::OnceCell::new(),
            providers: DashMap::new(),
            serving: DashMap::new(),
            inflight: InFlight::default(),
            waiting: DashMap::new(),
            waiting_changed: tokio::sync::Notify::new(),
            closing: tokio::sync::watch::Sender::new(false),
            unsettled: DashMap::new(),
            queues: Default::default(),
            core_tasks: Mutex::new(vec![link_task, subscriber_task]),
            writer_task: Mutex::new(Some(writer_task)),
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            config,
        });
        let reaper = tokio::spawn(reap_loop(Arc::downgrade(&shared)));
        shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(reaper);
        Ok(RedisBus { shared })
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        // The writer is not stopped: it sends what was published before the drop,
        // then ends when the last reference to the bus goes.
        kill::abort_tasks(&self.shared);
    }
}

/// While consumers of this bus wait, brings back items whose visibility expired.
async fn reap_loop(bus: std::sync::Weak<Shared>) {
    let interval = match bus.upgrade() {
        Some(bus) => bus.config.reap_interval,
        None => return,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(bus) = bus.upgrade() else { return };
        let bases: Vec<String> = bus.waiting.iter().map(|e| e.key().clone()).collect();
        for base in bases {
            if let Err(err) = queue::reap(&bus, &base).await {
                tracing::debug!(%err, "queue reaper failed");
            }
        }
    }
}

fn check_kind(envelope: &Envelope, kind: Kind) -> Result<()> {
    if envelope.kind == kind {
        Ok(())
    } else {
        Err(Error::Malformed(format!(
            "expected a {kind:?}, got a {:?}",
            envelope.kind
        )))
    }
}

#[async_trait]
impl EventBus for RedisBus {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FULL
    }

    fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    async fn publish(&self, event: Envelope) -> Result<()> {
        self.shared.check_open()?;
        check_kind(&event, Kind::Event)?;
        pubsub::publish(&self.shared, event).await
    }

    async fn subscribe(
        &self,
        pattern: &Pattern,
        options: SubscribeOptions,
    ) -> Result<RawSubscription> {
        self.shared.check_open()?;
        pubsub::subscribe(&self.shared, pattern, options).await
    }

    async fn queue_put(&self, item: Envelope) -> Result<()> {
        self.shared.check_open()?;
        queue::put(&self.shared, item).await
    }

    async fn queue_get(&self, queue: &Name, timeout: Duration) -> Result<Option<Envelope>> {
        self.shared.check_open()?;
        queue::get(&self.shared, queue, timeout).await
    }

    async fn queue_receive(
        &self,
        queue: &Name,
        timeout: Duration,
        visibility: Duration,
    ) -> Result<Option<RawDelivery>> {
        self.shared.check_open()?;
        queue::receive(&self.shared, queue, timeout, visibility).await
    }

    async fn queue_len(&self, queue: &Name) -> Result<usize> {
        self.shared.check_open()?;
        queue::len(&self.shared, queue).await
    }

    async fn serve(&self, method: &Name, handler: Arc<dyn Handler>) -> Result<Guard> {
        self.shared.check_open()?;
        rpc::serve(&self.shared, method, handler).await
    }

    async fn call(&self, request: Envelope) -> Result<Envelope> {
        self.shared.check_open()?;
        check_kind(&request, Kind::Request)?;
        rpc::call(&self.shared, request).await
    }

    async fn call_all(&self, request: Envelope) -> Result<Vec<Result<Envelope>>> {
        self.shared.check_open()?;
        check_kind(&request, Kind::Request)?;
        rpc::call_all(&self.shared, request).await
    }

    async fn shutdown(&self) -> Result<()> {
        let bus = &self.shared;
        if bus.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Stop taking work: providers first (callers of a method nobody else
        // serves get "no responders" now instead of a timeout), then the rest.
        let serving: Vec<_> = bus.serving.iter().map(|e| e.value().clone()).collect();
        bus.serving.clear();
        futures::future::join_all(serving.iter().map(|s| s.stop(bus))).await;
        bus.subscriber.close();
        // Wake blocked consumers: they return Closed and put back what they popped.
        bus.closing.send_replace(true);
        let deadline = tokio::time::Instant::now() + bus.config.response_timeout;
        while !bus.waiting.is_empty() {
            let changed = bus.waiting_changed.notified();
            if bus.waiting.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                tracing::warn!("shutdown: blocked consumers did not stop in time");
                break;
            }
        }
        for task in bus
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
        bus.pool.close();
        // Let running handlers finish and their replies leave.
        if !bus.inflight.wait_idle(bus.config.shutdown_grace).await {
            tracing::warn!("shutdown: handlers still running after the grace period");
        }
        // Put back what this bus took and did not settle.
        let unsettled: Vec<_> = bus.unsettled.iter().map(|e| e.key().clone()).collect();
        for (base, id) in unsettled {
            if bus.unsettled.remove(&(base.clone(), id)).is_some() {
                if let Err(err) = queue::nack(bus, &base, &id).await {
                    tracing::warn!(%err, "shutdown: could not put an unacknowledged item back");
                }
            }
        }
        queue::close_lanes(bus).await;
        // Flush the writer: a PING through the command link after queued writes.
        flush(bus).await;
        bus.pending.fail_all();
        for task in bus
            .core_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
        if let Some(task) = bus
            .writer_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        bus.link.close();
        Ok(())
    }

    fn kill(&self) -> Result<()> {
        kill::kill(&self.shared);
        Ok(())
    }
}

/// Waits (bounded) until the writer has sent what was queued before.
async fn flush(bus: &Shared) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if bus.writer.send(connection::Job::Flush(tx)).await.is_ok() {
        let _ = tokio::time::timeout(bus.config.response_timeout, rx).await;
    }
}

/// Opens `redis://`, `rediss://`, `redis+cluster://` and `rediss+cluster://`
/// URLs for `Bus::connect`.
pub struct RedisConnector;

#[async_trait]
impl Connector for RedisConnector {
    fn schemes(&self) -> &'static [&'static str] {
        &["redis", "rediss", "redis+cluster", "rediss+cluster"]
    }

    async fn connect(&self, url: &str) -> Result<Arc<dyn EventBus>> {
        Ok(Arc::new(RedisBus::connect(url).await?))
    }
}

busbar_core::register_connector!(RedisConnector);
