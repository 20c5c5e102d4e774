//! The broker's state and its reaction to each command. Runs in one task, so it
//! needs no locks; every send goes through a client's [`Outbox`].

use super::writer::Outbox;
use super::{cmd, reject, BrokerConfig, BrokerCounters, Internal};
use crate::protocol::{self, Malformed, Parsed};
use busbar_core::{Kind, MessageId, Pattern};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use zeromq::{SocketSend, ZmqMessage};

/// Why a client that said BYE was dropped.
const GOODBYE: &str = "it said goodbye";

/// Why a client that said `BYE "abandon"` was dropped.
const ABANDONED: &str = "its bus was dropped while it held the call";

/// Calls without a deadline are forgotten by the broker after this long.
const CALL_RETENTION: Duration = Duration::from_secs(60);

struct Client {
    identity: Bytes,
    outbox: Outbox,
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

pub(crate) struct Core {
    config: BrokerConfig,
    socket: zeromq::RouterSendHalf,
    counters: Arc<BrokerCounters>,
    internal: Option<mpsc::UnboundedSender<Internal>>,
    broker_id: u64,
    clients: HashMap<u64, Client>,
    by_identity: HashMap<Bytes, u64>,
    next_key: u64,
    subs: Subscriptions,
    queues: HashMap<String, Queue>,
    held: HashMap<u64, Held>,
    next_tag: u64,
    providers: HashMap<String, Providers>,
    calls: HashMap<u64, Call>,
    next_token: u64,
    deferred: Vec<Deferred>,
    timers: BinaryHeap<Reverse<TimerEntry>>,
    timer_seq: u64,
    scratch: Vec<Target>,
}

impl Core {
    pub(crate) fn new(
        config: BrokerConfig,
        socket: zeromq::RouterSendHalf,
        counters: Arc<BrokerCounters>,
    ) -> Core {
        Core {
            config,
            socket,
            counters,
            internal: None,
            broker_id: busbar_core::MessageId::new().0 as u64,
            clients: HashMap::new(),
            by_identity: HashMap::new(),
            next_key: 1,
            subs: Subscriptions::default(),
            queues: HashMap::new(),
            held: HashMap::new(),
            next_tag: 1,
            providers: HashMap::new(),
            calls: HashMap::new(),
            next_token: 1,
            deferred: Vec::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            scratch: Vec::new(),
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
                Ok(commands) => {
                    for (command, args) in commands {
                        if command == cmd::HELLO {
                            reject(
                                &self.counters,
                                identity,
                                &Malformed("BATCH: HELLO must come alone".into()),
                            );
                            continue;
                        }
                        self.command(identity, command, args);
                    }
                }
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
            reject(&self.counters, identity, &why);
        }
    }

    fn send_raw(&self, identity: Bytes, frames: Vec<Bytes>) {
        let mut message = ZmqMessage::from(identity);
        for frame in frames {
            message.push_back(frame);
        }
        let mut socket = self.socket.clone();
        tokio::spawn(async move {
            let _ = socket.send(message).await;
        });
    }

    fn send(&self, key: u64, frames: Vec<Bytes>) {
        if let Some(client) = self.clients.get(&key) {
            client.outbox.send(frames);
        }
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
            self.socket.clone(),
            self.config.high_water / 5,
            batches,
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

    // ----- pub/sub -----

    fn subscribe(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [sub, pattern] = protocol::args(args, "SUBSCRIBE")?;
        let sub = protocol::read_u64(&sub, "subscription id")?;
        let pattern = protocol::read_text(&pattern, "pattern")?;
        let pattern =
            Pattern::new(pattern).map_err(|err| Malformed(format!("bad pattern: {err}")))?;
        self.subs.insert(key, sub, pattern);
        if let Some(client) = self.clients.get_mut(&key) {
            client.subs.insert(sub);
        }
        self.send(
            key,
            protocol::message(cmd::SUBSCRIBED, [protocol::u64_frame(sub)]),
        );
        Ok(())
    }

    fn unsubscribe(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [sub] = protocol::args(args, "UNSUBSCRIBE")?;
        let sub = protocol::read_u64(&sub, "subscription id")?;
        self.subs.remove(key, sub);
        if let Some(client) = self.clients.get_mut(&key) {
            client.subs.remove(&sub);
        }
        Ok(())
    }

    fn publish(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let Some((seq, envelopes)) = args.split_first() else {
            return Err(Malformed("PUBLISH: missing the batch number".into()));
        };
        let seq = protocol::read_u64(seq, "batch number")?;
        let mut scratch = std::mem::take(&mut self.scratch);
        // Per destination client, its events of this batch, in order.
        let mut routed: Vec<(u64, Vec<(Bytes, Bytes)>)> = Vec::new();
        for envelope in envelopes {
            let topic = match protocol::peek(envelope, self.config.max_envelope) {
                Ok(peek) if peek.kind == Kind::Event => peek.subject,
                Ok(_) => {
                    self.reject_from(
                        key,
                        &Malformed("PUBLISH: an envelope is not an event".into()),
                    );
                    continue;
                }
                Err(why) => {
                    self.reject_from(key, &why);
                    continue;
                }
            };
            self.counters.events_in.fetch_add(1, Ordering::Relaxed);
            self.subs.matching(topic, &mut scratch);
            let mut i = 0;
            while i < scratch.len() {
                let client = scratch[i].0;
                let mut j = i + 1;
                while j < scratch.len() && scratch[j].0 == client {
                    j += 1;
                }
                let subs = if j - i == 1 {
                    scratch[i].2.clone()
                } else {
                    let ids: Vec<u64> = scratch[i..j].iter().map(|t| t.1).collect();
                    protocol::u64s_frame(&ids)
                };
                i = j;
                let pair = (subs, envelope.clone());
                match routed.iter_mut().find(|(c, _)| *c == client) {
                    Some((_, events)) => events.push(pair),
                    None => routed.push((client, vec![pair])),
                }
            }
        }
        self.scratch = scratch;
        let mut blockers: Vec<u64> = Vec::new();
        for (client_key, events) in routed {
            let Some(client) = self.clients.get(&client_key) else {
                continue;
            };
            self.counters
                .events_out
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            if client.outbox.events(events) > self.config.high_water {
                client.outbox.above.store(true, Ordering::Release);
                blockers.push(client_key);
            }
        }
        if blockers.is_empty() {
            self.send(
                key,
                protocol::message(cmd::PUBACK, [protocol::u64_frame(seq)]),
            );
        } else {
            self.counters.held_batches.fetch_add(1, Ordering::Relaxed);
            self.deferred.push(Deferred {
                publisher: key,
                seq,
                blockers,
            });
        }
        Ok(())
    }

    fn reject_from(&self, key: u64, why: &Malformed) {
        let identity = self
            .clients
            .get(&key)
            .map(|c| c.identity.clone())
            .unwrap_or_default();
        reject(&self.counters, &identity, why);
    }

    /// Acknowledges held publish batches whose slow subscribers have drained.
    fn release_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let high_water = self.config.high_water;
        let clients = &self.clients;
        let mut release = Vec::new();
        self.deferred.retain_mut(|d| {
            d.blockers.retain(|b| {
                clients
                    .get(b)
                    .is_some_and(|c| c.outbox.queued.load(Ordering::Relaxed) > high_water)
            });
            if d.blockers.is_empty() {
                release.push((d.publisher, d.seq));
                false
            } else {
                true
            }
        });
        for (publisher, seq) in release {
            self.send(
                publisher,
                protocol::message(cmd::PUBACK, [protocol::u64_frame(seq)]),
            );
        }
    }

    // ----- queues -----

    fn put(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [req, envelope] = protocol::args(args, "PUT")?;
        let req = protocol::read_u64(&req, "request number")?;
        let queue = match protocol::peek(&envelope, self.config.max_envelope) {
            Ok(peek) if peek.kind == Kind::QueueItem => peek.subject.to_owned(),
            Ok(_) => return self.fail(key, req, "PUT: the envelope is not a queue item"),
            Err(why) => return self.fail(key, req, &why.0),
        };
        self.queues
            .entry(queue.clone())
            .or_default()
            .items
            .push_back(Item {
                envelope,
                attempt: 0,
            });
        self.send(key, protocol::message(cmd::OK, [protocol::u64_frame(req)]));
        self.dispatch(&queue);
        Ok(())
    }

    /// Answers a request with ERROR and reports the malformation.
    fn fail(&mut self, key: u64, req: u64, why: &str) -> Parsed<()> {
        self.send(
            key,
            protocol::message(
                cmd::ERROR,
                [protocol::u64_frame(req), protocol::text_frame(why)],
            ),
        );
        Err(Malformed(why.to_owned()))
    }

    fn fetch(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [req, queue, timeout, visibility] = protocol::args(args, "FETCH")?;
        let req = protocol::read_u64(&req, "request number")?;
        let queue = protocol::read_text(&queue, "queue")?.to_owned();
        if busbar_core::Name::new(&queue).is_err() {
            return self.fail(key, req, "FETCH: invalid queue name");
        }
        let timeout = Duration::from_millis(protocol::read_u32(&timeout, "timeout")? as u64);
        let visibility =
            Duration::from_millis(protocol::read_u32(&visibility, "visibility")? as u64);
        self.queues
            .entry(queue.clone())
            .or_default()
            .waiters
            .push_back(Waiter {
                client: key,
                req,
                visibility,
            });
        self.schedule(
            timeout,
            Timer::Waiter {
                queue: queue.clone(),
                client: key,
                req,
            },
        );
        self.dispatch(&queue);
        Ok(())
    }

    fn waiter_expired(&mut self, queue: &str, client: u64, req: u64) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        let before = q.waiters.len();
        q.waiters.retain(|w| (w.client, w.req) != (client, req));
        if q.waiters.len() != before {
            self.send(
                client,
                protocol::message(cmd::EMPTY, [protocol::u64_frame(req)]),
            );
        }
        self.forget_if_idle(queue);
    }

    fn cancel(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [req] = protocol::args(args, "CANCEL")?;
        let req = protocol::read_u64(&req, "request number")?;
        for queue in self.queues.values_mut() {
            queue.waiters.retain(|w| (w.client, w.req) != (key, req));
        }
        Ok(())
    }

    fn forget_if_idle(&mut self, queue: &str) {
        if self
            .queues
            .get(queue)
            .is_some_and(|q| q.items.is_empty() && q.waiters.is_empty())
        {
            self.queues.remove(queue);
        }
    }

    /// Hands waiting items to waiting consumers.
    fn dispatch(&mut self, queue: &str) {
        loop {
            let Some(q) = self.queues.get_mut(queue) else {
                return;
            };
            if q.items.is_empty() || q.waiters.is_empty() {
                break;
            }
            let Some(waiter) = q.waiters.pop_front() else {
                break;
            };
            if !self.clients.contains_key(&waiter.client) {
                continue;
            }
            let Some(mut item) = q.items.pop_front() else {
                break;
            };
            item.attempt += 1;
            if waiter.visibility.is_zero() {
                // A plain get: the item is the consumer's as it leaves (tag 0).
                let frames = protocol::message(
                    cmd::ITEM,
                    [
                        protocol::u64_frame(waiter.req),
                        protocol::u64_frame(0),
                        protocol::u32_frame(item.attempt),
                        item.envelope,
                    ],
                );
                self.send(waiter.client, frames);
                continue;
            }
            let tag = self.next_tag;
            self.next_tag += 1;
            let frames = protocol::message(
                cmd::ITEM,
                [
                    protocol::u64_frame(waiter.req),
                    protocol::u64_frame(tag),
                    protocol::u32_frame(item.attempt),
                    item.envelope.clone(),
                ],
            );
            if let Some(client) = self.clients.get_mut(&waiter.client) {
                client.tags.insert(tag);
                client.outbox.send(frames);
            }
            self.held.insert(
                tag,
                Held {
                    queue: queue.to_owned(),
                    item,
                    client: waiter.client,
                },
            );
            self.schedule(waiter.visibility, Timer::Visibility { tag });
        }
        self.forget_if_idle(queue);
    }

    /// RETURN: an item a plain get delivered that nobody took any more.
    fn give_back(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [attempt, envelope] = protocol::args(args, "RETURN")?;
        let attempt = protocol::read_u32(&attempt, "attempt")?;
        let queue = match protocol::peek(&envelope, self.config.max_envelope) {
            Ok(peek) if peek.kind == Kind::QueueItem => peek.subject.to_owned(),
            Ok(_) => return Err(Malformed("RETURN: the envelope is not a queue item".into())),
            Err(why) => return Err(why),
        };
        tracing::debug!(client = key, %queue, "an item came back unused");
        self.queues
            .entry(queue.clone())
            .or_default()
            .items
            .push_front(Item { envelope, attempt });
        self.dispatch(&queue);
        Ok(())
    }

    /// Puts a held item back at the front of its queue.
    fn requeue(&mut self, tag: u64) {
        let Some(held) = self.held.remove(&tag) else {
            return;
        };
        if let Some(client) = self.clients.get_mut(&held.client) {
            client.tags.remove(&tag);
        }
        self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
        self.queues
            .entry(held.queue.clone())
            .or_default()
            .items
            .push_front(held.item);
        self.dispatch(&held.queue);
    }

    fn settle(&mut self, key: u64, args: &[Bytes], ack: bool) -> Parsed<()> {
        let [req, tag] = protocol::args(args, if ack { "ACK" } else { "NACK" })?;
        let req = protocol::read_u64(&req, "request number")?;
        let tag = protocol::read_u64(&tag, "delivery tag")?;
        let known = self.held.get(&tag).is_some_and(|h| h.client == key);
        if known {
            if ack {
                self.held.remove(&tag);
                if let Some(client) = self.clients.get_mut(&key) {
                    client.tags.remove(&tag);
                }
            } else {
                self.requeue(tag);
            }
        }
        if req != 0 {
            let answer = if known || !ack {
                protocol::message(cmd::OK, [protocol::u64_frame(req)])
            } else {
                protocol::message(
                    cmd::ERROR,
                    [
                        protocol::u64_frame(req),
                        protocol::text_frame(
                            "the delivery was not acknowledged within its visibility timeout and was redelivered",
                        ),
                    ],
                )
            };
            self.send(key, answer);
        }
        Ok(())
    }

    fn len(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [req, queue] = protocol::args(args, "LEN")?;
        let req = protocol::read_u64(&req, "request number")?;
        let queue = protocol::read_text(&queue, "queue")?;
        let len = self.queues.get(queue).map_or(0, |q| q.items.len());
        self.send(
            key,
            protocol::message(
                cmd::COUNT,
                [protocol::u64_frame(req), protocol::u64_frame(len as u64)],
            ),
        );
        Ok(())
    }

    // ----- RPC -----

    fn serve(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [serve, method] = protocol::args(args, "SERVE")?;
        let serve = protocol::read_u64(&serve, "provider id")?;
        let method = protocol::read_text(&method, "method")?.to_owned();
        if busbar_core::Name::new(&method).is_err() {
            return Err(Malformed(format!("SERVE: invalid method {method:?}")));
        }
        let Some(client) = self.clients.get_mut(&key) else {
            return Ok(());
        };
        if client.serves.insert(serve, method.clone()).is_none() {
            self.providers
                .entry(method)
                .or_default()
                .list
                .push((key, serve));
        }
        self.send(
            key,
            protocol::message(cmd::SERVING, [protocol::u64_frame(serve)]),
        );
        Ok(())
    }

    fn unserve(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [serve] = protocol::args(args, "UNSERVE")?;
        let serve = protocol::read_u64(&serve, "provider id")?;
        if let Some(method) = self
            .clients
            .get_mut(&key)
            .and_then(|c| c.serves.remove(&serve))
        {
            self.remove_provider(&method, key, serve);
        }
        Ok(())
    }

    fn remove_provider(&mut self, method: &str, key: u64, serve: u64) {
        if let Some(providers) = self.providers.get_mut(method) {
            providers.list.retain(|&p| p != (key, serve));
            if providers.list.is_empty() {
                self.providers.remove(method);
            }
        }
    }

    fn call(&mut self, key: u64, args: &[Bytes], all: bool) -> Parsed<()> {
        let [envelope] = protocol::args(args, if all { "CALL_ALL" } else { "CALL" })?;
        let peek = protocol::peek(&envelope, self.config.max_envelope)?;
        if peek.kind != Kind::Request {
            return Err(Malformed("CALL: the envelope is not a request".into()));
        }
        let request = peek.id;
        let deadline = peek.deadline_ms;
        let method = peek.subject.to_owned();
        let targets: Vec<(u64, u64)> = match self.providers.get_mut(&method) {
            None => Vec::new(),
            Some(providers) if all => providers.list.clone(),
            Some(providers) => {
                let turn = providers.next % providers.list.len();
                providers.next = providers.next.wrapping_add(1);
                vec![providers.list[turn]]
            }
        };
        if targets.is_empty() {
            self.send(
                key,
                protocol::message(cmd::NO_RESPONDERS, [protocol::id_frame(request)]),
            );
            return Ok(());
        }
        if all {
            self.send(
                key,
                protocol::message(
                    cmd::FANOUT,
                    [
                        protocol::id_frame(request),
                        protocol::u32_frame(targets.len() as u32),
                    ],
                ),
            );
        }
        let retention = match deadline {
            Some(deadline) => {
                Duration::from_millis(deadline.saturating_sub(busbar_core::now_millis()) + 1000)
            }
            None => CALL_RETENTION,
        };
        for (provider, serve) in targets {
            let call = Call {
                caller: key,
                request,
                provider,
                method: method.clone(),
                envelope: envelope.clone(),
                all,
            };
            self.forward(call, serve, retention);
        }
        Ok(())
    }

    /// Sends a call to one provider and remembers it until answered or expired.
    fn forward(&mut self, call: Call, serve: u64, retention: Duration) {
        let token = self.next_token;
        self.next_token += 1;
        let frames = protocol::message(
            cmd::REQUEST,
            [
                protocol::u64_frame(token),
                protocol::u64_frame(serve),
                call.envelope.clone(),
            ],
        );
        if let Some(client) = self.clients.get_mut(&call.provider) {
            client.served_calls.insert(token);
            client.outbox.send(frames);
        }
        self.calls.insert(token, call);
        self.schedule(retention, Timer::Call { token });
    }

    /// A call its provider did not handle (it stopped serving, or left): a
    /// `call` goes to another provider or gets NO_RESPONDERS; a `call_all`
    /// entry is withdrawn from the caller's count.
    fn reroute(&mut self, mut call: Call) {
        if call.all {
            self.send(
                call.caller,
                protocol::message(cmd::WITHDRAWN, [protocol::id_frame(call.request)]),
            );
            return;
        }
        let next = self.providers.get_mut(&call.method).and_then(|providers| {
            let list: Vec<(u64, u64)> = providers
                .list
                .iter()
                .copied()
                .filter(|(client, _)| *client != call.provider)
                .collect();
            if list.is_empty() {
                return None;
            }
            let turn = providers.next % list.len();
            providers.next = providers.next.wrapping_add(1);
            Some(list[turn])
        });
        match next {
            Some((provider, serve)) => {
                call.provider = provider;
                self.forward(call, serve, CALL_RETENTION);
            }
            None => self.send(
                call.caller,
                protocol::message(cmd::NO_RESPONDERS, [protocol::id_frame(call.request)]),
            ),
        }
    }

    fn decline(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [token] = protocol::args(args, "DECLINE")?;
        let token = protocol::read_u64(&token, "call token")?;
        if let Some(client) = self.clients.get_mut(&key) {
            client.served_calls.remove(&token);
        }
        if let Some(call) = self.calls.remove(&token) {
            if call.provider == key {
                self.reroute(call);
            } else {
                self.calls.insert(token, call);
            }
        }
        Ok(())
    }

    fn reply(&mut self, key: u64, args: &[Bytes]) -> Parsed<()> {
        let [token, envelope] = protocol::args(args, "REPLY")?;
        let token = protocol::read_u64(&token, "call token")?;
        let peek = protocol::peek(&envelope, self.config.max_envelope)?;
        if !matches!(peek.kind, Kind::Reply | Kind::ErrorReply) {
            return Err(Malformed("REPLY: the envelope is not a reply".into()));
        }
        if let Some(client) = self.clients.get_mut(&key) {
            client.served_calls.remove(&token);
        }
        // A reply for a forgotten call (late, or its caller left) is dropped.
        if let Some(call) = self.calls.remove(&token) {
            self.send(call.caller, protocol::message(cmd::RESULT, [envelope]));
        }
        Ok(())
    }
}
