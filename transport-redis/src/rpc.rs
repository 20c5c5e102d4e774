//! RPC over Redis: a request list per method for load-balanced calls, a channel
//! per method for presence and `call_all`, and a reply channel per bus.
//!
//! - Every provider of `m` subscribes to the channel `ns:r:{m}`. Its subscriber
//!   count is the number of buses serving `m`. On Redis Cluster it is a sharded
//!   channel (`SSUBSCRIBE`), which lives on the node of its hash slot, the same
//!   slot as the request list, so the count is whole where the script runs.
//! - `call`: one Lua script checks that count (`PUBSUB NUMSUB`, or
//!   `SHARDNUMSUB` on a cluster) and, when
//!   non-zero, `LPUSH`es the request onto the list `ns:rq:{m}`; zero is
//!   [`Error::NoResponders`] after one round trip. Each provider pops the list with
//!   `BLMPOP` (up to a batch at a time) on a connection of its own, so each request
//!   is answered by exactly one provider, whichever is free.
//! - `call_all`: `PUBLISH` (`SPUBLISH`) to `ns:r:{m}`, whose reply is the number of buses that
//!   received it; the call ends as soon as that many have answered (a bus with
//!   several providers of `m` says so in its replies' `busbar-providers` header).
//! - Replies are published to the caller's inbox channel `ns:i:{<bus id>}` (sharded
//!   on a cluster, so a reply crosses to one node only) and
//!   routed to the waiting call by correlation id.
//!
//! The envelopes travel untouched (a security layer above may have signed
//! them); what the transport needs travels in a small frame around the encoded
//! envelope (integers big-endian):
//!
//! ```text
//! request: 0xB1 | reply channel: u16 length + bytes | envelope
//! reply:   0xB2 | status u8 (0 answered, 1 no provider left) |
//!          providers u16 (of the method on the answering bus) |
//!          source: u8 length + bytes (the answering bus) | envelope
//! notice:  0xB2 | status u8 (2 working, 3 done) | providers u16 |
//!          source: u8 length + bytes | call id [16] | worker id [16]
//! ```
//!
//! The caller cannot see which provider popped its request, so a handler that
//! runs long says so: the notices of [`busbar_core::liveness`] (the first after
//! 100 ms of running, then every second; a caller that heard one and then
//! nothing for 3 s fails the call with [`Error::ProviderLost`]).
//!
//! Providers drop requests whose deadline has passed ([`respond`]). A request
//! left in the list by a provider that vanished is dropped by the next provider
//! when expired; the list itself expires when no call used it for a while.

use crate::command::{command, run_script, script_command, Joined};
use crate::connection::{Backoff, Connection};
use crate::pubsub::{decode, Route};
use crate::Shared;
use busbar_core::liveness::{self, Notice};
use busbar_core::reply::{error_reply, respond};
use busbar_core::transport::{Guard, Handler};
use busbar_core::{wire, Envelope, Error, Fault, Kind, MessageId, Name, Result, Stats};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use redis::{Script, Value};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;
use tokio::sync::Semaphore;

#[path = "rpc_frames.rs"]
mod frames;

use frames::{frame_notice, frame_reply, frame_request, unframe_request, Reply};
pub(crate) use frames::{InboxRoute, Pending};

const REQUEST_FRAME: u8 = 0xB1;
const REPLY_FRAME: u8 = 0xB2;
const ANSWERED: u8 = 0;
const NO_PROVIDER_LEFT: u8 = 1;
const WORKING: u8 = 2;
const DONE: u8 = 3;
/// Pops one provider keeps outstanding.
const POP_WINDOW: usize = 2;
/// Most requests one provider pops at once.
const POP_BATCH: usize = 64;

/// KEYS[1] = request list; ARGV[1] = presence channel, ARGV[2] = request,
/// ARGV[3] = list expiry (ms), ARGV[4] = how to count the presence channel's
/// subscribers ([`NUMSUB`]). Returns the number of providers (0: not queued).
static CALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('PUBSUB', ARGV[4], ARGV[1])[2]
if n == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n",
    )
});

/// The presence channel of `method`. It shares the request list's hash slot,
/// so on a cluster its (sharded) subscribers are counted on the node that
/// runs [`CALL`].
pub(crate) fn presence_channel(namespace: &str, method: &str) -> String {
    presence(namespace, method).string()
}

/// [`presence_channel`] as a command argument.
fn presence<'a>(namespace: &'a str, method: &'a str) -> Joined<'a, 4> {
    Joined([namespace, ":r:{", method, "}"])
}

/// The `PUBSUB` subcommand counting a presence channel's subscribers.
fn numsub(bus: &Shared) -> &'static str {
    if bus.link.is_cluster() {
        "SHARDNUMSUB"
    } else {
        "NUMSUB"
    }
}

fn request_list(namespace: &str, method: &str) -> String {
    request_key(namespace, method).string()
}

/// [`request_list`] as a command argument.
fn request_key<'a>(namespace: &'a str, method: &'a str) -> Joined<'a, 4> {
    Joined([namespace, ":rq:{", method, "}"])
}

pub(crate) fn inbox_channel(namespace: &str, uid: &str) -> String {
    format!("{}{{{uid}}}", inbox_prefix(namespace))
}

/// What every inbox channel of `namespace` starts with.
pub(crate) fn inbox_prefix(namespace: &str) -> String {
    format!("{namespace}:i:")
}

/// Subscribes this bus's inbox once (live before the first request leaves).
async fn inbox(bus: &Arc<Shared>) -> Result<&str> {
    bus.inbox
        .get_or_try_init(|| async {
            let route = InboxRoute {
                bus: Arc::downgrade(bus),
            };
            let topic = bus.counted_topic(bus.inbox_name.clone());
            bus.subscriber.add(topic, Arc::new(route)).await
        })
        .await?;
    Ok(&bus.inbox_name)
}

fn timeout_of(request: &Envelope) -> Duration {
    request.remaining().unwrap_or(busbar_core::DEFAULT_TIMEOUT)
}

/// Sends `request` to one provider and waits for its reply.
pub(crate) async fn call(bus: &Arc<Shared>, request: Envelope) -> Result<Envelope> {
    let timeout = timeout_of(&request);
    // One deadline for waiting out an outage, sending and the answer.
    let deadline = tokio::time::Instant::now() + timeout;
    let bytes = frame_request(inbox(bus).await?, &wire::encode(&request)?);
    let method = request.subject.as_str();
    let mut waiter = bus.pending.register(request.id);
    let conn = bus.link.get(bus.config.outage_wait.min(timeout)).await?;
    let mut c = conn.conn.clone();
    let expiry = millis(timeout) + 60_000;
    let (list, presence) = (
        request_key(&bus.config.namespace, method),
        presence(&bus.config.namespace, method),
    );
    let mut invocation =
        script_command(&CALL, 1, 4, list.len() + presence.len() + bytes.len() + 32);
    invocation
        .arg(list)
        .arg(presence)
        .arg(&bytes[..])
        .arg(expiry)
        .arg(numsub(bus));
    let sent = run_script::<i64>(&mut c, &CALL, &invocation);
    let providers = match tokio::time::timeout_at(deadline, sent).await {
        Ok(result) => conn.check(result)?,
        Err(_) => return Err(Error::Timeout),
    };
    if providers == 0 {
        return Err(Error::NoResponders {
            method: method.to_owned(),
        });
    }
    match liveness::one(&mut waiter.replies, deadline).await {
        Ok(reply) if reply.status == NO_PROVIDER_LEFT => Err(Error::NoResponders {
            method: method.to_owned(),
        }),
        Ok(reply) => Ok(reply.envelope),
        Err(why) => Err(why.into_error(method)),
    }
}

/// Sends `request` to every provider and gathers their replies.
pub(crate) async fn call_all(
    bus: &Arc<Shared>,
    request: Envelope,
) -> Result<Vec<Result<Envelope>>> {
    let timeout = timeout_of(&request);
    // One deadline for waiting out an outage, sending and the answer.
    let deadline = tokio::time::Instant::now() + timeout;
    let bytes = frame_request(inbox(bus).await?, &wire::encode(&request)?);
    let method = request.subject.as_str();
    let mut waiter = bus.pending.register(request.id);
    let conn = bus.link.get(bus.config.outage_wait.min(timeout)).await?;
    let mut c = conn.conn.clone();
    let presence = presence(&bus.config.namespace, method);
    let mut publish = command(bus.counted_publish(), 2, presence.len() + bytes.len());
    publish.arg(presence).arg(&bytes[..]);
    let sent = publish.query_async::<i64>(&mut c);
    let receivers = match tokio::time::timeout_at(deadline, sent).await {
        Ok(result) => conn.check(result)?,
        Err(_) => return Err(Error::Timeout),
    };
    if receivers <= 0 {
        return Err(Error::NoResponders {
            method: method.to_owned(),
        });
    }
    // Receivers are buses: a bus with several providers says so in its replies.
    let mut sources = std::collections::HashSet::new();
    let more = |reply: &Reply| {
        if sources.insert(reply.source.clone()) {
            reply.providers.clamp(1, 1024) - 1
        } else {
            0
        }
    };
    let replies = liveness::gather(
        &mut waiter.replies,
        receivers as usize,
        deadline,
        method,
        more,
    )
    .await;
    Ok(replies
        .into_iter()
        .map(|reply| match reply {
            Ok(reply) if reply.status == ANSWERED => Ok(reply.envelope),
            Ok(_) => Err(Error::NoResponders {
                method: method.to_owned(),
            }),
            Err(err) => Err(err),
        })
        .collect())
}

/// One provider of a method on this bus.
pub(crate) struct Provider {
    handler: Arc<dyn Handler>,
    bus: Weak<Shared>,
    method: String,
    /// Set when the provider is dropped or the bus shuts down.
    stopping: AtomicBool,
    /// `CLIENT ID` of the pop loop's current connection, to unblock it.
    client_id: AtomicI64,
}

impl Provider {
    /// Runs the handler on `request` and publishes the reply, with working
    /// notices while it runs long.
    fn spawn_answer(
        &self,
        bus: Arc<Shared>,
        reply_to: String,
        request: Envelope,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        inline: bool,
    ) {
        let handler = self.handler.clone();
        let method = self.method.clone();
        let guard = bus.inflight.enter();
        let in_flight = bus.inflight.clone();
        let call = request.id;
        // Shared, not copied: most handlers never send a notice.
        let reply_to = Bytes::from(reply_to);
        let notify = {
            let (bus, reply_to) = (bus.clone(), reply_to.clone());
            move |notice: Notice| {
                let job = crate::connection::Job::Publish {
                    channel: reply_to.clone(),
                    payload: Bytes::from(frame_notice(&bus.uid, call, notice)),
                    sharded: true,
                };
                let bus = bus.clone();
                async move {
                    if let Err(err) = bus.writer.send(job).await {
                        tracing::debug!(%err, "could not send an RPC working notice");
                    }
                }
            }
        };
        let mut answer = Box::pin(async move {
            let work = respond(handler.as_ref(), request, &bus.stats);
            let reply = liveness::with_notices(work, notify).await;
            (bus, reply)
        });
        // In the pop loop, a handler that answers at once is not worth a task:
        // its reply goes out through the ordered writer without waiting.
        let ready = if inline {
            (&mut answer).now_or_never()
        } else {
            None
        };
        if let Some((bus, reply)) = ready {
            drop(permit);
            if let Some(reply) = reply {
                let providers = bus.providers.get(&method).map(|n| *n).unwrap_or(1);
                queue_reply(&bus, reply_to, ANSWERED, providers, &reply);
            }
            drop(guard);
            return;
        }
        tokio::spawn(async move {
            let _guard = guard;
            let _permit = permit;
            // A killed bus (a test hook) aborts the handler where it stands.
            in_flight
                .abortable(async move {
                    let (bus, reply) = answer.await;
                    let Some(reply) = reply else {
                        return;
                    };
                    let providers = bus.providers.get(&method).map(|n| *n).unwrap_or(1);
                    send_reply(&bus, reply_to, ANSWERED, providers, &reply).await;
                })
                .await;
        });
    }

    /// Answers one request frame; `inline` lets a handler that completes at
    /// once run here (never on a connection's reader).
    fn accept(
        &self,
        bus: &Arc<Shared>,
        frame: &Bytes,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        inline: bool,
    ) {
        let Some((reply_to, request)) = decode_request(bus, frame, &self.method) else {
            return;
        };
        self.spawn_answer(bus.clone(), reply_to, request, permit, inline);
    }
}

/// The reply channel and the request in a request frame; anything else is
/// counted and logged.
fn decode_request(bus: &Shared, frame: &Bytes, method: &str) -> Option<(String, Envelope)> {
    let Some((reply_to, envelope)) = unframe_request(frame) else {
        Stats::incr(&bus.stats.rejected);
        tracing::warn!("rejected a message that is not a request frame");
        return None;
    };
    if !reply_to.starts_with(&bus.inbox_prefix) {
        Stats::incr(&bus.stats.rejected);
        tracing::warn!(%reply_to, "rejected a request whose reply channel is outside the namespace");
        return None;
    }
    let request = decode(&envelope, bus.config.max_envelope, &bus.stats)?;
    if request.kind != Kind::Request || request.subject.as_str() != method {
        Stats::incr(&bus.stats.rejected);
        tracing::warn!("rejected a message that is not a request for this method");
        return None;
    }
    Some((reply_to.to_owned(), request))
}

/// The reply frame of `reply`; `None` (logged) when it cannot be encoded.
fn encode_reply(bus: &Shared, status: u8, providers: usize, reply: &Envelope) -> Option<Vec<u8>> {
    match wire::encode(reply) {
        Ok(envelope) => Some(frame_reply(status, providers, &bus.uid, &envelope)),
        Err(err) => {
            tracing::warn!(%err, "could not encode an RPC reply");
            None
        }
    }
}

/// Queues a reply on the ordered writer (pipelined with others, no waiting);
/// waits for room in a task when the writer's buffer is full.
fn queue_reply(bus: &Arc<Shared>, reply_to: Bytes, status: u8, providers: usize, reply: &Envelope) {
    let Some(payload) = encode_reply(bus, status, providers, reply) else {
        return;
    };
    let job = crate::connection::Job::Publish {
        channel: reply_to,
        payload: Bytes::from(payload),
        sharded: true,
    };
    if let Err(job) = bus.writer.try_send(job) {
        // Full buffer: wait for room in a task of its own.
        let bus = bus.clone();
        tokio::spawn(async move {
            if let Err(err) = bus.writer.send(job).await {
                tracing::warn!(%err, "could not send an RPC reply");
            }
        });
    }
}

async fn send_reply(bus: &Shared, reply_to: Bytes, status: u8, providers: usize, reply: &Envelope) {
    // Straight to Redis (replies need no ordering among themselves): concurrent
    // replies are pipelined by the multiplexed connection.
    let Some(payload) = encode_reply(bus, status, providers, reply) else {
        return;
    };
    let sent = match bus.link.get(bus.config.outage_wait).await {
        Ok(conn) => {
            let mut c = conn.conn.clone();
            let result = redis::cmd(bus.counted_publish())
                .arg(&reply_to[..])
                .arg(&payload[..])
                .exec_async(&mut c)
                .await;
            conn.check(result)
        }
        Err(err) => Err(err),
    };
    if let Err(err) = sent {
        tracing::warn!(%err, "could not send an RPC reply");
    }
}

/// `call_all` requests arrive here, on the presence channel.
impl Route for Provider {
    fn deliver(&self, _channel: &[u8], payload: &Bytes) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        if let Some(bus) = self.bus.upgrade() {
            if bus.check_open().is_ok() {
                self.accept(&bus, payload, None, false);
            }
        }
    }
}

/// A live provider as the bus tracks it, to stop it on drop or at shutdown.
pub(crate) struct Serving {
    provider: Arc<Provider>,
    presence: std::sync::Mutex<Option<Guard>>,
    count: std::sync::Mutex<Option<Guard>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Serving {
    /// Stops taking requests at once: no presence, no new `call_all`.
    fn begin_stop(&self) {
        self.provider.stopping.store(true, Ordering::Release);
        drop(lock(&self.presence).take());
        drop(lock(&self.count).take());
    }

    /// Stops the pop loop now (the bus is going away without a shutdown).
    pub(crate) fn abort(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    /// Waits until Redis forgot the provider, stops its pop loop (which puts back
    /// what it popped), then, when no other provider is left, answers every
    /// request still queued with "no responders" so callers do not wait for
    /// their deadline.
    pub(crate) async fn stop(&self, bus: &Arc<Shared>) {
        self.begin_stop();
        let _ = bus.subscriber.sync().await;
        let task = lock(&self.task).take();
        if let Some(mut task) = task {
            let mut stopped = false;
            let list = request_list(&bus.config.namespace, &self.provider.method);
            for _ in 0..250 {
                unblock(bus, &list, self.provider.client_id.load(Ordering::Acquire)).await;
                if tokio::time::timeout(Duration::from_millis(20), &mut task)
                    .await
                    .is_ok()
                {
                    stopped = true;
                    break;
                }
            }
            if !stopped {
                task.abort();
            }
        }
        refuse_queued(bus, &self.provider.method).await;
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends the blocking pop of the connection `client_id`, blocked on `list`.
async fn unblock(bus: &Shared, list: &str, client_id: i64) {
    if let Ok(conn) = bus.link.get(bus.config.response_timeout).await {
        let mut c = conn.conn.clone();
        let mut unblock = redis::cmd("CLIENT");
        unblock.arg("UNBLOCK").arg(client_id);
        let result = c.query_at::<Value>(list.as_bytes(), &unblock).await;
        let _ = conn.check(result);
    }
}

/// KEYS[1] = request list, ARGV[1] = presence channel, ARGV[2] = [`NUMSUB`].
/// With no provider left, takes every queued request.
static DRAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('PUBSUB', ARGV[2], ARGV[1])[2] ~= 0 then return {} end
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return items",
    )
});

async fn refuse_queued(bus: &Arc<Shared>, method: &str) {
    let namespace = &bus.config.namespace;
    let Ok(conn) = bus.link.get(bus.config.response_timeout).await else {
        return;
    };
    let mut c = conn.conn.clone();
    let mut invocation = DRAIN.key(request_list(namespace, method));
    invocation
        .arg(presence_channel(namespace, method))
        .arg(numsub(bus));
    let result = invocation.invoke_async::<Vec<Vec<u8>>>(&mut c).await;
    let Ok(items) = conn.check(result) else {
        return;
    };
    for item in items {
        let Some((reply_to, request)) = decode_request(bus, &Bytes::from(item), method) else {
            continue;
        };
        let reply = error_reply(
            &request,
            Fault::new("no_responders", format!("no provider serves {method}")),
        );
        send_reply(bus, Bytes::from(reply_to), NO_PROVIDER_LEFT, 0, &reply).await;
    }
}

/// Serves `method` with `handler` until the guard drops.
pub(crate) async fn serve(
    bus: &Arc<Shared>,
    method: &Name,
    handler: Arc<dyn Handler>,
) -> Result<Guard> {
    let provider = Arc::new(Provider {
        handler,
        bus: Arc::downgrade(bus),
        method: method.as_str().to_owned(),
        stopping: AtomicBool::new(false),
        client_id: AtomicI64::new(0),
    });
    // The pop loop connects first, so presence never advertises a provider that
    // cannot take requests yet.
    let list = request_list(&bus.config.namespace, method.as_str());
    let first = bus.pool.take(&list).await?;
    provider.client_id.store(first.client_id, Ordering::Release);
    *bus.providers.entry(provider.method.clone()).or_insert(0) += 1;
    let count = {
        let weak = Arc::downgrade(bus);
        let method = provider.method.clone();
        Guard::new(move || {
            if let Some(bus) = weak.upgrade() {
                bus.providers.remove_if_mut(&method, |_, n| {
                    *n -= 1;
                    *n == 0
                });
            }
        })
    };
    let task = tokio::spawn(pop_loop(Arc::downgrade(bus), provider.clone(), first.conn));
    let serving = Arc::new(Serving {
        provider: provider.clone(),
        presence: std::sync::Mutex::new(None),
        count: std::sync::Mutex::new(Some(count)),
        task: std::sync::Mutex::new(Some(task)),
    });
    let presence = bus
        .subscriber
        .add(
            bus.counted_topic(presence_channel(&bus.config.namespace, method.as_str())),
            provider,
        )
        .await;
    match presence {
        Ok(guard) => *lock(&serving.presence) = Some(guard),
        Err(err) => {
            serving.begin_stop();
            if let Some(task) = lock(&serving.task).take() {
                task.abort();
            }
            return Err(err);
        }
    }
    let key = MessageId::new();
    bus.serving.insert(key, serving);
    let weak = Arc::downgrade(bus);
    Ok(Guard::new(move || {
        let Some(bus) = weak.upgrade() else { return };
        let Some((_, serving)) = bus.serving.remove(&key) else {
            return;
        };
        serving.begin_stop();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { serving.stop(&bus).await });
            }
            Err(_) => {
                if let Some(task) = lock(&serving.task).take() {
                    task.abort();
                }
            }
        }
    }))
}

fn millis(d: Duration) -> u64 {
    busbar_core::ceil_millis(d)
}

/// Pops requests for one provider, reconnecting when the connection is lost.
/// When the provider stops, whatever it popped and did not start goes back.
///
/// Two pops are kept outstanding on the connection: Redis runs the second as soon
/// as the first returns, so intake never waits a round trip between batches.
async fn pop_loop(bus: Weak<Shared>, provider: Arc<Provider>, mut conn: Connection) {
    let Some(strong) = bus.upgrade() else { return };
    let list = Arc::new(request_list(&strong.config.namespace, &provider.method));
    let permits = Arc::new(Semaphore::new(
        strong.config.handler_concurrency.max(POP_WINDOW),
    ));
    let mut backoff = Backoff::new(&strong.config);
    let grace = strong.config.response_timeout;
    drop(strong);
    let block_secs = 5u64;
    type Pop = futures::future::BoxFuture<
        'static,
        (
            std::result::Result<redis::RedisResult<Value>, tokio::time::error::Elapsed>,
            tokio::sync::OwnedSemaphorePermit,
        ),
    >;
    let mut pops: FuturesUnordered<Pop> = FuturesUnordered::new();
    loop {
        let stopping = provider.stopping.load(Ordering::Acquire);
        // Never pop more than can be run now: the rest stays for other providers.
        while pops.len() < POP_WINDOW && !stopping {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let room = permits.available_permits().min(POP_BATCH - 1) + 1;
            let (mut c, list) = (conn.clone(), list.clone());
            pops.push(Box::pin(async move {
                let popped = tokio::time::timeout(
                    Duration::from_secs(block_secs) + grace,
                    redis::cmd("BLMPOP")
                        .arg(block_secs)
                        .arg(1)
                        .arg(list.as_str())
                        .arg("RIGHT")
                        .arg("COUNT")
                        .arg(room)
                        .query_async::<Value>(&mut c),
                )
                .await;
                (popped, permit)
            }));
        }
        let Some((popped, first)) = pops.next().await else {
            return; // stopping, and every outstanding pop came back
        };
        let Some(bus) = bus.upgrade() else { return };
        match popped {
            Ok(Ok(value)) => {
                backoff.reset();
                let items = requests(value);
                if provider.stopping.load(Ordering::Acquire) || bus.check_open().is_err() {
                    provider.stopping.store(true, Ordering::Release);
                    put_back(&bus, &list, items).await;
                    continue;
                }
                let mut first = Some(first);
                for item in items {
                    let permit = match first.take() {
                        Some(permit) => Some(permit),
                        None => permits.clone().try_acquire_owned().ok(),
                    };
                    provider.accept(&bus, &Bytes::from(item), permit, true);
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, method = %provider.method, "RPC provider lost its connection; reconnecting");
                pops.clear();
                if provider.stopping.load(Ordering::Acquire) {
                    return;
                }
                conn = reconnect(&bus, &provider, &mut backoff).await;
            }
            Err(_) => {
                tracing::warn!(method = %provider.method, "RPC provider pop did not return in time; reconnecting");
                pops.clear();
                if provider.stopping.load(Ordering::Acquire) {
                    return;
                }
                conn = reconnect(&bus, &provider, &mut backoff).await;
            }
        }
    }
}

/// Returns popped requests to the head of the list, oldest first out.
async fn put_back(bus: &Shared, list: &str, items: Vec<Vec<u8>>) {
    if items.is_empty() {
        return;
    }
    let Ok(conn) = bus.link.get(bus.config.response_timeout).await else {
        return;
    };
    let mut c = conn.conn.clone();
    let mut rpush = redis::cmd("RPUSH");
    rpush.arg(list);
    for item in items.iter().rev() {
        rpush.arg(&item[..]);
    }
    let result = rpush.exec_async(&mut c).await;
    if let Err(err) = conn.check(result) {
        tracing::warn!(%err, "could not put back requests popped by a stopping provider");
    }
}

async fn reconnect(bus: &Shared, provider: &Provider, backoff: &mut Backoff) -> Connection {
    let list = request_list(&bus.config.namespace, &provider.method);
    loop {
        backoff.wait().await;
        match bus.pool.take(&list).await {
            Ok(blocking) => {
                provider
                    .client_id
                    .store(blocking.client_id, Ordering::Release);
                return blocking.conn;
            }
            Err(err) => tracing::debug!(%err, "RPC provider reconnect attempt failed"),
        }
    }
}

/// The items of a `BLMPOP` reply: `[key, [item, ...]]` (RESP3 may send a map).
fn requests(value: Value) -> Vec<Vec<u8>> {
    let items = match value {
        Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
        Value::Map(mut pairs) if pairs.len() == 1 => pairs.pop().map(|(_, items)| items),
        _ => None,
    };
    match items {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::BulkString(bytes) => Some(bytes),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
