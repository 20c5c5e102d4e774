//! The broker's state and its reaction to each command. Runs in one task, so it
//! needs no locks; every send goes through a client's [`Outbox`].

mod batch;
mod pubsub;
mod queues;
mod refuse;
mod rpc;

use super::flow::Marks;
use super::pump::Pump;
use super::writer::Outbox;
use super::{cmd, reject, BrokerConfig, BrokerCounters, Internal};
use crate::protocol::{self, Malformed};
use busbar_core::{MessageId, Pattern};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use zeromq::ZmqMessage;

/// Why a client that said BYE was dropped.
const GOODBYE: &str = "it said goodbye";

/// Why a client that said `BYE "abandon"` was dropped.
const ABANDONED: &str = "its bus was dropped while it held the call";

/// Calls without a deadline are forgotten by the broker after this long.
const CALL_RETENTION: Duration = Duration::from_secs(60);

struct Client {
    identity: Bytes,
    outbox: Outbox,
    /// It asked for BROKER_BATCH (HELLO feature `batch`).
    batches: bool,
    last_seen: Instant,
    subs: HashSet<u64>,
    serves: HashMap<u64, String>,
    tags: HashSet<u64>,
    served_calls: HashSet<u64>,
}

struct Item {
    envelope: Bytes,
    attempt: u32,
}

struct Waiter {
    client: u64,
    req: u64,
    visibility: Duration,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    waiters: VecDeque<Waiter>,
}

struct Held {
    queue: String,
    item: Item,
    client: u64,
}

#[derive(Default)]
struct Providers {
    list: Vec<(u64, u64)>,
    next: usize,
}

struct Call {
    caller: u64,
    request: MessageId,
    provider: u64,
    method: String,
    envelope: Bytes,
    all: bool,
}

struct Deferred {
    publisher: u64,
    seq: u64,
    blockers: Vec<u64>,
}

#[derive(Debug, Clone)]
enum Timer {
    Heartbeat,
    Waiter {
        queue: String,
        client: u64,
        req: u64,
    },
    Visibility {
        tag: u64,
    },
    Call {
        token: u64,
    },
}

struct TimerEntry {
    at: Instant,
    seq: u64,
    timer: Timer,
}

impl PartialEq for TimerEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for TimerEntry {}
impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One subscription as the router sees it: its client, id, and id frame.
type Target = (u64, u64, Bytes);

/// Subscriptions, indexed: literal patterns by topic, wildcard patterns in a list.
#[derive(Default)]
struct Subscriptions {
    literal: HashMap<String, Vec<Target>>,
    wildcard: Vec<(Pattern, Target)>,
    patterns: HashMap<(u64, u64), Pattern>,
}

impl Subscriptions {
    fn insert(&mut self, client: u64, sub: u64, pattern: Pattern) {
        if self.patterns.contains_key(&(client, sub)) {
            return;
        }
        let target = (client, sub, protocol::u64_frame(sub));
        if pattern.is_literal() {
            self.literal
                .entry(pattern.as_str().to_owned())
                .or_default()
                .push(target);
        } else {
            self.wildcard.push((pattern.clone(), target));
        }
        self.patterns.insert((client, sub), pattern);
    }

    fn remove(&mut self, client: u64, sub: u64) {
        let Some(pattern) = self.patterns.remove(&(client, sub)) else {
            return;
        };
        if pattern.is_literal() {
            if let Some(list) = self.literal.get_mut(pattern.as_str()) {
                list.retain(|(c, s, _)| (*c, *s) != (client, sub));
                if list.is_empty() {
                    self.literal.remove(pattern.as_str());
                }
            }
        } else {
            self.wildcard
                .retain(|(_, (c, s, _))| (*c, *s) != (client, sub));
        }
    }

    /// Every subscription matching `topic`, sorted by client.
    fn matching(&self, topic: &str, out: &mut Vec<Target>) {
        out.clear();
        if let Some(list) = self.literal.get(topic) {
            out.extend_from_slice(list);
        }
        for (pattern, target) in &self.wildcard {
            if pattern.matches(topic) {
                out.push(target.clone());
            }
        }
        if out.len() > 1 {
            out.sort_unstable_by_key(|(client, sub, _)| (*client, *sub));
        }
    }
}

/// A number that differs between broker instances, in one process or across
/// restarts, so that a client can tell from WELCOME that it reached a new broker
/// (which knows nothing of its subscriptions, providers or held deliveries).
fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // RandomState is seeded from the OS once per thread and differs per call.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.write_u64(STARTED.fetch_add(1, Ordering::Relaxed));
    hasher.finish().max(1)
}

pub(crate) struct Core {
    config: BrokerConfig,
    /// Every send, and closing the connection of a client that stopped reading.
    pump: Pump,
    counters: Arc<BrokerCounters>,
    internal: Option<mpsc::UnboundedSender<Internal>>,
    /// Set when the broker stops: writers then close at once, without flushing,
    /// so the socket (and its port) is released promptly.
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// Sent in WELCOME: tells a client whether it reached the same broker.
    broker_id: u64,
    clients: HashMap<u64, Client>,
    by_identity: HashMap<Bytes, u64>,
    next_key: u64,
    subs: Subscriptions,
    queues: HashMap<String, Queue>,
    held: HashMap<u64, Held>,
    /// The latest tags redelivered after their visibility timeout, oldest first
    /// (bounded), so that a late ACK is told what happened.
    expired: VecDeque<u64>,
    next_tag: u64,
    providers: HashMap<String, Providers>,
    calls: HashMap<u64, Call>,
    next_token: u64,
    deferred: Vec<Deferred>,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    timer_seq: u64,
    scratch: Vec<Target>,
    /// The answers held back for the client whose BATCH is being handled.
    collecting: Option<batch::Collect>,
}

impl Core {
    pub(crate) fn new(config: BrokerConfig, pump: Pump, counters: Arc<BrokerCounters>) -> Core {
        Core {
            config,
            pump,
            counters,
            internal: None,
            closing: Arc::default(),
            broker_id: instance_id(),
            clients: HashMap::new(),
            by_identity: HashMap::new(),
            next_key: 1,
            subs: Subscriptions::default(),
            queues: HashMap::new(),
            held: HashMap::new(),
            expired: VecDeque::new(),
            next_tag: 1,
            providers: HashMap::new(),
            calls: HashMap::new(),
            next_token: 1,
            deferred: Vec::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            scratch: Vec::new(),
            collecting: None,
        }
    }

    pub(crate) fn set_internal(&mut self, internal: mpsc::UnboundedSender<Internal>) {
        self.internal = Some(internal);
    }

    pub(crate) fn start_heartbeats(&mut self) {
        self.schedule(self.config.heartbeat, Timer::Heartbeat);
    }

    fn schedule(&mut self, after: Duration, timer: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse(TimerEntry {
            at: Instant::now() + after,
            seq: self.timer_seq,
            timer,
        }));
    }

    /// When the next timer is due.
    pub(crate) fn next_timer(&self) -> Instant {
        self.timers
            .peek()
            .map(|Reverse(entry)| entry.at)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    pub(crate) fn fire_timers(&mut self) {
        let now = Instant::now();
        while self
            .timers
            .peek()
            .is_some_and(|Reverse(entry)| entry.at <= now)
        {
            let Some(Reverse(entry)) = self.timers.pop() else {
                break;
            };
            match entry.timer {
                Timer::Heartbeat => self.heartbeat(),
                Timer::Waiter { queue, client, req } => self.waiter_expired(&queue, client, req),
                Timer::Visibility { tag } => {
                    if self.held.contains_key(&tag) {
                        tracing::debug!(tag, "visibility timeout: redelivering");
                        self.requeue(tag);
                        self.remember_expired(tag);
                    }
                }
                Timer::Call { token } => {
                    if let Some(call) = self.calls.remove(&token) {
                        if let Some(provider) = self.clients.get_mut(&call.provider) {
                            provider.served_calls.remove(&token);
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn internal(&mut self, message: Internal) {
        match message {
            Internal::Drained(client) => {
                tracing::trace!(client, "client drained below its low-water mark");
                self.release_deferred();
            }
        }
    }

    /// The peer behind `identity` closed its connection.
    pub(crate) fn disconnected(&mut self, identity: &Bytes) {
        if let Some(key) = self.by_identity.get(identity).copied() {
            tracing::info!(client = key, "client disconnected");
            self.drop_client(key, "its connection closed");
        }
    }

    /// Closes every client's writer (the socket closes when they end).
    pub(crate) fn close(&mut self) {
        self.closing.store(true, Ordering::Release);
        let keys: Vec<u64> = self.clients.keys().copied().collect();
        for key in keys {
            self.drop_client(key, "the broker is stopping");
        }
    }

    fn heartbeat(&mut self) {
        let limit = self.config.heartbeat * self.config.liveness;
        let now = Instant::now();
        let dead: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_seen) > limit)
            .map(|(k, _)| *k)
            .collect();
        for key in dead {
            tracing::warn!(client = key, "client missed its heartbeats; dropping it");
            self.counters.dead_clients.fetch_add(1, Ordering::Relaxed);
            self.drop_client(key, "it missed its heartbeats");
        }
        self.drop_stalled(now);
        for client in self.clients.values() {
            client
                .outbox
                .send(protocol::message(cmd::BROKER_HEARTBEAT, []));
        }
        self.schedule(self.config.heartbeat, Timer::Heartbeat);
    }

    /// Handles one message from the socket: `[identity, signature, command, args...]`.
    pub(crate) fn handle(&mut self, frames: Vec<Bytes>) {
        let Some((identity, rest)) = frames.split_first() else {
            return;
        };
        let (command, args) = match protocol::split(rest) {
            Ok(split) => split,
            Err(why) => {
                reject(&self.counters, identity, &why);
                return;
            }
        };
        if command == cmd::HELLO {
            let batches = args
                .get(1)
                .and_then(|f| std::str::from_utf8(f).ok())
                .is_some_and(|features| features.split(',').any(|f| f == protocol::FEATURE_BATCH));
            self.hello(identity.clone(), batches);
            return;
        }
        if command == cmd::BATCH {
            match protocol::unbatch(args) {
                Ok(commands) => self.batch(identity, commands),
                Err(why) => reject(&self.counters, identity, &why),
            }
            return;
        }
        self.command(identity, command, args);
    }

    /// Handles one command of a known or unknown client.
    fn command(&mut self, identity: &Bytes, command: u8, args: &[Bytes]) {
        let Some(key) = self.by_identity.get(identity).copied() else {
            if command != cmd::BYE {
                // Unknown (never said hello, or dropped as dead): ask it to start over.
                self.send_raw(identity.clone(), protocol::message(cmd::RESET, []));
            }
            return;
        };
        if let Some(client) = self.clients.get_mut(&key) {
            client.last_seen = Instant::now();
        }
        let outcome = match command {
            cmd::HEARTBEAT => Ok(()),
            cmd::BYE => {
                self.send(key, protocol::message(cmd::GOODBYE, []));
                // `BYE "abandon"`: the client left without finishing its handlers,
                // so calls it holds may be half done: they fail rather than move.
                let abandoned = args.first().is_some_and(|a| a.as_ref() == b"abandon");
                self.drop_client(key, if abandoned { ABANDONED } else { GOODBYE });
                Ok(())
            }
            cmd::SUBSCRIBE => self.subscribe(key, args),
            cmd::UNSUBSCRIBE => self.unsubscribe(key, args),
            cmd::PUBLISH => self.publish(key, args),
            cmd::PUT => self.put(key, args),
            cmd::FETCH => self.fetch(key, args),
            cmd::ACK => self.settle(key, args, true),
            cmd::NACK => self.settle(key, args, false),
            cmd::LEN => self.len(key, args),
            cmd::CANCEL => self.cancel(key, args),
            cmd::RETURN => self.give_back(key, args),
            cmd::SERVE => self.serve(key, args),
            cmd::UNSERVE => self.unserve(key, args),
            cmd::CALL => self.call(key, args, false),
            cmd::CALL_ALL => self.call(key, args, true),
            cmd::REPLY => self.reply(key, args),
            cmd::DECLINE => self.decline(key, args),
            other => Err(Malformed(format!("unknown command 0x{other:02x}"))),
        };
        if let Err(why) = outcome {
            self.refuse(key, command, args, &why);
        }
    }

    fn send_raw(&self, identity: Bytes, frames: Vec<Bytes>) {
        let mut message = ZmqMessage::from(identity);
        for frame in frames {
            message.push_back(frame);
        }
        self.pump.send_raw(message);
    }

    fn hello(&mut self, identity: Bytes, batches: bool) {
        if let Some(old) = self.by_identity.get(&identity).copied() {
            self.drop_client(old, "it said hello again");
        }
        let key = self.next_key;
        self.next_key += 1;
        let Some(internal) = self.internal.clone() else {
            return;
        };
        let outbox = Outbox::start(
            key,
            identity.clone(),
            self.pump.clone(),
            Marks {
                events: self.config.high_water,
                bytes: self.config.high_water_bytes,
            },
            // The core packs answers itself (batch.rs); the writer must not
            // pack those BROKER_BATCH messages into another one.
            false,
            self.closing.clone(),
            internal,
        );
        outbox.send(protocol::message(
            cmd::WELCOME,
            [
                protocol::u32_frame(self.config.heartbeat.as_millis().min(u32::MAX as u128) as u32),
                protocol::u32_frame(self.config.liveness),
                protocol::u64_frame(self.broker_id),
            ],
        ));
        self.clients.insert(
            key,
            Client {
                identity: identity.clone(),
                outbox,
                batches,
                last_seen: Instant::now(),
                subs: HashSet::new(),
                serves: HashMap::new(),
                tags: HashSet::new(),
                served_calls: HashSet::new(),
            },
        );
        self.by_identity.insert(identity, key);
        self.counters.clients.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(client = key, "client said hello");
    }

    /// Forgets a client: its subscriptions and providers vanish, its unacked
    /// items go back to their queues, and calls it was serving fail at once.
    fn drop_client(&mut self, key: u64, why: &str) {
        if self.collecting.as_ref().is_some_and(|c| c.key == key) {
            // A BYE in a BATCH: what was answered before it goes out first.
            self.flush_collected(false);
        }
        let Some(client) = self.clients.remove(&key) else {
            return;
        };
        self.by_identity.remove(&client.identity);
        self.counters.clients.fetch_sub(1, Ordering::Relaxed);
        for sub in &client.subs {
            self.subs.remove(key, *sub);
        }
        for (serve, method) in &client.serves {
            self.remove_provider(method, key, *serve);
        }
        let mut tags: Vec<u64> = client.tags.iter().copied().collect();
        tags.sort_unstable_by(|a, b| b.cmp(a));
        for tag in tags {
            // Newest first, each to the front: the oldest ends up first again.
            self.requeue(tag);
        }
        // A client that said goodbye answered everything it handled before
        // leaving, so its other calls were never handled: they go elsewhere. A
        // client that died may have handled them: they fail, clearly.
        let graceful = why == GOODBYE;
        for token in &client.served_calls {
            if let Some(call) = self.calls.remove(token) {
                if graceful {
                    self.reroute(call);
                } else {
                    self.send(
                        call.caller,
                        protocol::message(
                            cmd::FAILED,
                            [
                                protocol::id_frame(call.request),
                                protocol::text_frame(&format!(
                                    "the provider of {} was lost before answering: {why}",
                                    call.method
                                )),
                            ],
                        ),
                    );
                }
            }
        }
        self.calls.retain(|_, call| call.caller != key);
        for queue in self.queues.values_mut() {
            queue.waiters.retain(|w| w.client != key);
        }
        self.deferred.retain(|d| d.publisher != key);
        self.release_deferred();
        tracing::debug!(client = key, reason = why, "client dropped");
    }
}
