//! Pub/sub: events on channels, and the subscriber connection that RPC shares.
//!
//! Events travel on the channel `{<namespace>:e}:<topic>` (see
//! `event_prefix` for the braces). A literal subscription is a `SUBSCRIBE` of
//! its channel; a wildcard one is a `PSUBSCRIBE` of a glob that over-approximates
//! it (`orders.*.eu` becomes `{<ns>:e}:orders.*`), and every
//! event is filtered exactly with [`Pattern::matches`] before delivery. Each
//! subscription is routed under exactly one Redis channel or glob, so it gets an
//! event once even when several of the bus's globs match.
//!
//! All subscriptions of a bus share one RESP3 connection. Incoming messages are
//! decoded and delivered on that connection's reader (delivery never blocks).
//! Subscribe and unsubscribe go through one task in order; `subscribe` returns
//! once Redis has confirmed. When the connection is lost, every subscription
//! is told at once ([`Error::Interrupted`]: Redis keeps no pub/sub history, so
//! what is published until the reconnect is missed), and the task reconnects
//! with backoff and subscribes again to every channel and glob in use.

use crate::connection::{transport_error, Backoff, Connection, Opener};
use busbar_core::mailbox::{mailbox, MailboxSender};
use busbar_core::transport::{Guard, RawSubscription, SubscribeOptions};
use busbar_core::{wire, Envelope, Error, Kind, Pattern, Result, Stats};
use bytes::Bytes;
use redis::aio::{AsyncPushSender, SendError};
use redis::{PushInfo, PushKind, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A Redis channel or glob this bus listens to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    /// `SUBSCRIBE`d channel.
    Channel(String),
    /// `PSUBSCRIBE`d glob.
    Glob(String),
    /// A channel whose subscribers must be counted where its hash slot lives:
    /// `SSUBSCRIBE`d on a cluster, `SUBSCRIBE`d on a single server.
    Shard(String),
}

/// Something that consumes messages arriving on a channel or glob.
pub(crate) trait Route: Send + Sync + 'static {
    /// Handles one message; `channel` is where it was published.
    fn deliver(&self, channel: &[u8], payload: &Bytes);

    /// The subscriber connection was lost: messages published until it is
    /// back are not received.
    fn interrupted(&self) {}
}

/// Routes by the channel or glob they listen to, each with its id.
type Routes = HashMap<Topic, Vec<(u64, Arc<dyn Route>)>>;

/// The subscriptions of one bus, read by the connection reader on every message.
#[derive(Default)]
pub(crate) struct Registry {
    routes: RwLock<Routes>,
}

impl Registry {
    fn topics(&self) -> Vec<Topic> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn is_used(&self, topic: &Topic) -> bool {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(topic)
    }

    fn interrupted(&self) {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        for (_, route) in routes.values().flatten() {
            route.interrupted();
        }
    }

    fn dispatch(&self, topic: &Topic, channel: &[u8], payload: &Bytes) {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = routes.get(topic) {
            for (_, route) in list {
                route.deliver(channel, payload);
            }
        }
    }
}

enum Control {
    Subscribe(Topic, oneshot::Sender<std::result::Result<(), String>>),
    Unsubscribe(Topic),
    /// Answered once every change sent before it reached Redis.
    Sync(oneshot::Sender<()>),
}

/// The subscriber connection of a bus.
pub(crate) struct Subscriber {
    registry: Arc<Registry>,
    control: mpsc::UnboundedSender<Control>,
    next_id: AtomicU64,
    outage_wait: Duration,
}

impl Subscriber {
    /// Connects (failing when the server is unreachable) and starts the task
    /// that owns the connection.
    pub(crate) async fn connect(
        opener: Arc<Opener>,
        stats: Arc<Stats>,
    ) -> Result<(Arc<Subscriber>, tokio::task::JoinHandle<()>)> {
        let registry = Arc::new(Registry::default());
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        let conn = open(&opener, &registry, &lost_tx, 1)
            .await
            .map_err(transport_error)?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let subscriber = Arc::new(Subscriber {
            registry: registry.clone(),
            control,
            next_id: AtomicU64::new(1),
            outage_wait: opener.config().outage_wait,
        });
        let owner = Owner {
            opener,
            registry,
            stats,
            conn: Some(conn),
            generation: 1,
            lost_tx,
            waiting: Vec::new(),
        };
        let task = tokio::spawn(owner.run(control_rx, lost_rx));
        Ok((subscriber, task))
    }

    /// Adds `route` under `topic` and waits until Redis confirms the subscription.
    /// The returned guard removes the route (and unsubscribes when it was the last).
    pub(crate) async fn add(
        self: &Arc<Self>,
        topic: Topic,
        route: Arc<dyn Route>,
    ) -> Result<Guard> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry
            .routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(topic.clone())
            .or_default()
            .push((id, route));
        let guard = {
            let weak = Arc::downgrade(self);
            let topic = topic.clone();
            Guard::new(move || remove(weak, topic, id))
        };
        let (done, confirmed) = oneshot::channel();
        self.control
            .send(Control::Subscribe(topic, done))
            .map_err(|_| Error::Closed)?;
        match tokio::time::timeout(self.outage_wait, confirmed).await {
            Ok(Ok(Ok(()))) => Ok(guard),
            Ok(Ok(Err(refused))) => Err(Error::transport(format!(
                "redis refused the subscription: {refused}"
            ))),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::transport(
                "redis did not confirm the subscription (unreachable?)",
            )),
        }
    }

    /// Waits until every subscription change made before reached Redis.
    pub(crate) async fn sync(&self) -> Result<()> {
        let (done, synced) = oneshot::channel();
        self.control
            .send(Control::Sync(done))
            .map_err(|_| Error::Closed)?;
        match tokio::time::timeout(self.outage_wait, synced).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::transport(
                "redis did not confirm in time (unreachable?)",
            )),
        }
    }

    /// Stops the connection task (it unsubscribes by closing the connection).
    pub(crate) fn close(&self) {
        self.registry
            .routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

fn remove(subscriber: Weak<Subscriber>, topic: Topic, id: u64) {
    let Some(subscriber) = subscriber.upgrade() else {
        return;
    };
    let mut routes = subscriber
        .registry
        .routes
        .write()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(list) = routes.get_mut(&topic) {
        list.retain(|(route_id, _)| *route_id != id);
        if list.is_empty() {
            routes.remove(&topic);
            // Sent under the lock so the task sees subscribe/unsubscribe in order.
            let _ = subscriber.control.send(Control::Unsubscribe(topic));
        }
    }
}

/// The task owning the subscriber connection.
struct Owner {
    opener: Arc<Opener>,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    conn: Option<Connection>,
    generation: u64,
    lost_tx: mpsc::UnboundedSender<u64>,
    /// Subscribe requests to confirm once the connection is back.
    waiting: Vec<oneshot::Sender<std::result::Result<(), String>>>,
}

impl Owner {
    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut lost: mpsc::UnboundedReceiver<u64>,
    ) {
        loop {
            if self.conn.is_none() {
                self.reconnect().await;
            }
            tokio::select! {
                biased;
                generation = lost.recv() => {
                    if generation == Some(self.generation) {
                        self.lose("connection closed");
                    }
                }
                request = control.recv() => match request {
                    None => return,
                    Some(request) => self.execute(request).await,
                },
            }
        }
    }

    async fn execute(&mut self, request: Control) {
        if let Control::Sync(done) = request {
            // Changes are applied in order, and a reconnect replays the registry.
            let _ = done.send(());
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            if let Control::Subscribe(_, done) = request {
                self.waiting.push(done);
            }
            return;
        };
        let result = match &request {
            Control::Subscribe(topic, _) => conn.subscribe(topic).await,
            Control::Unsubscribe(topic) if self.registry.is_used(topic) => Ok(()),
            Control::Unsubscribe(topic) => conn.unsubscribe(topic).await,
            Control::Sync(_) => Ok(()),
        };
        match result {
            Ok(()) => {
                if let Control::Subscribe(_, done) = request {
                    let _ = done.send(Ok(()));
                }
            }
            Err(err) if crate::connection::is_connection_error(&err) => {
                // The registry already holds the topic: the reconnect subscribes to it.
                if let Control::Subscribe(_, done) = request {
                    self.waiting.push(done);
                }
                self.lose(&err.to_string());
            }
            Err(err) => {
                tracing::warn!(%err, "redis refused a subscription change");
                if let Control::Subscribe(_, done) = request {
                    let _ = done.send(Err(err.to_string()));
                }
            }
        }
    }

    fn lose(&mut self, why: &str) {
        if self.conn.take().is_some() {
            // Marked now, after everything the old connection delivered: what
            // is published from here until the reconnect is missed.
            self.registry.interrupted();
            Stats::incr(&self.stats.disconnects);
            tracing::warn!(
                reason = why,
                "redis subscriber connection lost; reconnecting"
            );
        }
    }

    async fn reconnect(&mut self) {
        let mut backoff = Backoff::new(self.opener.config());
        loop {
            let generation = self.generation + 1;
            match open(&self.opener, &self.registry, &self.lost_tx, generation).await {
                Ok(mut conn) => match resubscribe(&mut conn, &self.registry.topics()).await {
                    Ok(()) => {
                        self.generation = generation;
                        self.conn = Some(conn);
                        Stats::incr(&self.stats.reconnects);
                        tracing::info!(
                            "redis subscriber connection restored; subscriptions replayed"
                        );
                        for done in self.waiting.drain(..) {
                            let _ = done.send(Ok(()));
                        }
                        return;
                    }
                    Err(err) => tracing::debug!(%err, "replaying subscriptions failed"),
                },
                Err(err) => tracing::debug!(%err, "redis subscriber reconnect attempt failed"),
            }
            backoff.wait().await;
        }
    }
}

/// Subscribes again to every topic in use. Only a lost connection fails it: a
/// topic Redis refuses (its ACL changed) is logged and skipped.
async fn resubscribe(conn: &mut Connection, topics: &[Topic]) -> redis::RedisResult<()> {
    let names = |glob: bool| -> Vec<&str> {
        topics
            .iter()
            .filter_map(|t| match t {
                Topic::Glob(g) if glob => Some(g.as_str()),
                Topic::Channel(c) | Topic::Shard(c) if !glob => Some(c.as_str()),
                _ => None,
            })
            .collect()
    };
    // A single server takes them all in two commands; a cluster takes sharded
    // channels one by one (each lives on its own node).
    let all_at_once = async {
        match conn {
            Connection::Single(c) => {
                let (channels, globs) = (names(false), names(true));
                if !channels.is_empty() {
                    c.subscribe(&channels).await?;
                }
                if !globs.is_empty() {
                    c.psubscribe(&globs).await?;
                }
                Ok::<_, redis::RedisError>(true)
            }
            Connection::Cluster(_) => Ok(false),
        }
    }
    .await;
    match all_at_once {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(err) if !crate::connection::is_connection_error(&err) => {}
        Err(err) => return Err(err),
    }
    for topic in topics {
        match conn.subscribe(topic).await {
            Err(err) if crate::connection::is_connection_error(&err) => return Err(err),
            Err(err) => {
                tracing::warn!(%err, ?topic, "redis refused a subscription when reconnecting")
            }
            Ok(()) => {}
        }
    }
    Ok(())
}

async fn open(
    opener: &Opener,
    registry: &Arc<Registry>,
    lost: &mpsc::UnboundedSender<u64>,
    generation: u64,
) -> redis::RedisResult<Connection> {
    let reader = Reader {
        registry: registry.clone(),
        lost: lost.clone(),
        generation,
    };
    opener
        .open(
            Some(Arc::new(reader)),
            Some(opener.config().response_timeout),
        )
        .await
}

/// Runs on the connection's reader for every push: routes messages.
struct Reader {
    registry: Arc<Registry>,
    lost: mpsc::UnboundedSender<u64>,
    generation: u64,
}

impl AsyncPushSender for Reader {
    fn send(&self, info: PushInfo) -> std::result::Result<(), SendError> {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = info.data.into_iter();
                if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                {
                    let name = String::from_utf8_lossy(&channel).into_owned();
                    let topic = if info.kind == PushKind::SMessage {
                        Topic::Shard(name)
                    } else {
                        Topic::Channel(name)
                    };
                    self.registry
                        .dispatch(&topic, &channel, &Bytes::from(payload));
                }
            }
            PushKind::PMessage => {
                let mut data = info.data.into_iter();
                if let (
                    Some(Value::BulkString(glob)),
                    Some(Value::BulkString(channel)),
                    Some(Value::BulkString(payload)),
                ) = (data.next(), data.next(), data.next())
                {
                    let topic = Topic::Glob(String::from_utf8_lossy(&glob).into_owned());
                    self.registry
                        .dispatch(&topic, &channel, &Bytes::from(payload));
                }
            }
            PushKind::Disconnection => {
                let _ = self.lost.send(self.generation);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Decodes a message from the wire, counting and logging what is refused.
pub(crate) fn decode(payload: &Bytes, max: usize, stats: &Stats) -> Option<Envelope> {
    match wire::decode(payload, max) {
        Ok(envelope) => Some(envelope),
        Err(err) => {
            Stats::incr(&stats.rejected);
            tracing::warn!(%err, "rejected a malformed message from redis");
            None
        }
    }
}

/// What every event channel of `namespace` starts with: `{<namespace>:e}:`.
///
/// The braces are a cluster hash tag: every event channel and every glob of a
/// namespace hashes to one slot, so a bus's subscriptions and the publishes
/// they hear all meet on one node. Plain pub/sub is forwarded between cluster
/// nodes asynchronously; with subscriptions on several nodes, an event could
/// reach a subscription made after it was published, or overtake an earlier
/// event on the way. (Braces mean nothing to a glob, so patterns keep them.)
pub(crate) fn event_prefix(namespace: &str) -> String {
    format!("{{{namespace}:e}}:")
}

/// The channel events on `topic` are published to.
pub(crate) fn event_channel(namespace: &str, topic: &str) -> String {
    event_prefix(namespace) + topic
}

/// What to subscribe to for `pattern`: its channel when literal, otherwise a glob
/// matching at least every topic the pattern matches.
pub(crate) fn topic_for(namespace: &str, pattern: &Pattern) -> Topic {
    if pattern.is_literal() {
        return Topic::Channel(event_channel(namespace, pattern.as_str()));
    }
    let mut glob = String::new();
    push_literally(&event_prefix(namespace), &mut glob);
    push_literally(pattern.literal_prefix(), &mut glob);
    glob.push('*');
    Topic::Glob(glob)
}

/// Appends `text` to a glob, escaping what a Redis glob would read as special.
fn push_literally(text: &str, glob: &mut String) {
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            glob.push('\\');
        }
        glob.push(c);
    }
}

/// Delivers events matching one subscription's pattern to its mailbox.
struct EventRoute {
    pattern: Pattern,
    prefix: String,
    sender: MailboxSender,
    stats: Arc<Stats>,
    max_envelope: usize,
}

impl Route for EventRoute {
    fn deliver(&self, channel: &[u8], payload: &Bytes) {
        let Some(topic) = channel
            .strip_prefix(self.prefix.as_bytes())
            .and_then(|t| std::str::from_utf8(t).ok())
        else {
            return;
        };
        if !self.pattern.matches(topic) {
            return;
        }
        let Some(envelope) = decode(payload, self.max_envelope, &self.stats) else {
            return;
        };
        if envelope.kind != Kind::Event || envelope.subject.as_str() != topic {
            Stats::incr(&self.stats.rejected);
            tracing::warn!(
                channel = topic,
                "rejected a message whose kind or subject does not fit its channel"
            );
            return;
        }
        self.sender.deliver(envelope);
    }

    fn interrupted(&self) {
        self.sender.interrupted();
    }
}

/// Subscribes to `pattern`; live on return.
pub(crate) async fn subscribe(
    bus: &crate::Shared,
    pattern: &Pattern,
    options: SubscribeOptions,
) -> Result<RawSubscription> {
    let (sender, receiver) = mailbox(options.capacity, bus.stats.clone());
    let route = EventRoute {
        pattern: pattern.clone(),
        prefix: event_prefix(&bus.config.namespace),
        sender,
        stats: bus.stats.clone(),
        max_envelope: bus.config.max_envelope,
    };
    let topic = topic_for(&bus.config.namespace, pattern);
    let guard = bus.subscriber.add(topic, Arc::new(route)).await?;
    Ok(RawSubscription::new(pattern.clone(), receiver, guard))
}

/// Publishes `event` through the ordered writer.
pub(crate) async fn publish(bus: &crate::Shared, event: Envelope) -> Result<()> {
    let payload = wire::encode(&event)?;
    let channel = Bytes::from(event_channel(&bus.config.namespace, event.subject.as_str()));
    bus.writer
        .send(crate::connection::Job::Publish {
            channel,
            payload,
            sharded: false,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str) -> Topic {
        topic_for("bb", &Pattern::new(pattern).unwrap())
    }

    #[test]
    fn literal_patterns_subscribe_their_channel() {
        assert_eq!(
            glob("orders.created"),
            Topic::Channel("{bb:e}:orders.created".into())
        );
    }

    #[test]
    fn wildcards_become_a_coarser_glob() {
        assert_eq!(glob("orders.*"), Topic::Glob("{bb:e}:orders.*".into()));
        assert_eq!(glob("orders.*.eu"), Topic::Glob("{bb:e}:orders.*".into()));
        assert_eq!(glob("sensors.>"), Topic::Glob("{bb:e}:sensors.*".into()));
        assert_eq!(glob(">"), Topic::Glob("{bb:e}:*".into()));
        assert_eq!(glob("a?[b].*"), Topic::Glob("{bb:e}:a\\?\\[b\\].*".into()));
    }

    #[test]
    fn glob_specials_in_the_namespace_are_escaped() {
        let topic = topic_for("n[1]", &Pattern::new("x.*").unwrap());
        assert_eq!(topic, Topic::Glob("{n\\[1\\]:e}:x.*".into()));
    }

    #[test]
    fn every_event_channel_and_glob_of_a_namespace_shares_one_slot() {
        let slot = |name: &str| redis::cluster_routing::Slot::for_key(name);
        let channel = event_channel("app", "orders.created");
        for other in [
            event_channel("app", "sensors.t1"),
            match glob_in("app", "orders.*") {
                Topic::Glob(glob) => glob,
                other => panic!("{other:?}"),
            },
        ] {
            assert_eq!(slot(&channel), slot(&other), "{channel} and {other}");
        }
    }

    fn glob_in(namespace: &str, pattern: &str) -> Topic {
        topic_for(namespace, &Pattern::new(pattern).unwrap())
    }
}
