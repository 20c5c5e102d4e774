//! RPC over Redis: a request list per method for load-balanced calls, a channel
//! per method for presence and `call_all`, and a reply channel per bus.
//!
//! - Every provider of `m` subscribes to the channel `ns:r:m`. Its subscriber count
//!   is the number of buses serving `m`.
//! - `call`: one Lua script checks that count (`PUBSUB NUMSUB`) and, when
//!   non-zero, `LPUSH`es the request onto the list `ns:rq:{m}`; zero is
//!   [`Error::NoResponders`] after one round trip. Each provider pops the list with
//!   `BLMPOP` (up to a batch at a time) on a connection of its own, so each request
//!   is answered by exactly one provider, whichever is free.
//! - `call_all`: `PUBLISH` to `ns:r:m`, whose reply is the number of buses that
//!   received it; the call ends as soon as that many have answered (a bus with
//!   several providers of `m` says so in its replies' `busbar-providers` header).
//! - Replies are published to the caller's inbox channel `ns:i:<bus id>`, named in
//!   the request's `reply_to`, and routed to the waiting call by correlation id.
//!
//! Providers drop requests whose deadline has passed ([`respond`]). A request
//! left in the list by a provider that vanished is dropped by the next provider
//! when expired; the list itself expires when no call used it for a while.

use crate::connection::{Backoff, Job};
use crate::pubsub::{decode, Route, Topic};
use crate::Shared;
use busbar_core::reply::{error_reply, respond};
use busbar_core::transport::{Guard, Handler};
use busbar_core::{wire, Envelope, Error, Fault, Kind, MessageId, Name, Result, Stats};
use bytes::Bytes;
use dashmap::DashMap;
use redis::{Script, Value};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Header naming the bus that answered.
const SOURCE_HEADER: &str = "busbar-source";
/// Header telling how many providers of the method that bus has (each answers a `call_all`).
const PROVIDERS_HEADER: &str = "busbar-providers";
/// Header of a reply sent by the transport itself, not a handler.
const STATUS_HEADER: &str = "busbar-status";
/// Its value when no provider was left to take the request.
const NO_RESPONDERS: &str = "no-responders";
/// Most requests one provider pops at once.
const POP_BATCH: usize = 64;

/// KEYS[1] = request list; ARGV[1] = presence channel, ARGV[2] = request,
/// ARGV[3] = list expiry (ms). Returns the number of providers (0: not queued).
static CALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('PUBSUB', 'NUMSUB', ARGV[1])[2]
if n == 0 then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n",
    )
});

pub(crate) fn presence_channel(namespace: &str, method: &str) -> String {
    format!("{namespace}:r:{method}")
}

fn request_list(namespace: &str, method: &str) -> String {
    format!("{namespace}:rq:{{{method}}}")
}

pub(crate) fn inbox_channel(namespace: &str, uid: &str) -> String {
    format!("{namespace}:i:{uid}")
}

/// Calls waiting for replies, by request id.
#[derive(Default)]
pub(crate) struct Pending {
    waiting: DashMap<MessageId, mpsc::UnboundedSender<Envelope>>,
}

struct Waiter<'a> {
    pending: &'a Pending,
    id: MessageId,
    replies: mpsc::UnboundedReceiver<Envelope>,
}

impl Pending {
    fn register(&self, id: MessageId) -> Waiter<'_> {
        let (tx, replies) = mpsc::unbounded_channel();
        self.waiting.insert(id, tx);
        Waiter {
            pending: self,
            id,
            replies,
        }
    }

    fn complete(&self, reply: Envelope) {
        if let Some(id) = reply.correlation_id {
            if let Some(tx) = self.waiting.get(&id) {
                let _ = tx.send(reply);
            }
        }
    }

    pub(crate) fn fail_all(&self) {
        self.waiting.clear();
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.pending.waiting.remove(&self.id);
    }
}

/// Routes replies arriving on this bus's inbox.
pub(crate) struct InboxRoute {
    pub(crate) bus: Weak<Shared>,
}

impl Route for InboxRoute {
    fn deliver(&self, _channel: &[u8], payload: &Bytes) {
        let Some(bus) = self.bus.upgrade() else {
            return;
        };
        let Some(reply) = decode(payload, bus.config.max_envelope, &bus.stats) else {
            return;
        };
        if !matches!(reply.kind, Kind::Reply | Kind::ErrorReply) {
            Stats::incr(&bus.stats.rejected);
            tracing::warn!(kind = ?reply.kind, "rejected a non-reply on the reply channel");
            return;
        }
        bus.pending.complete(reply);
    }
}

/// Subscribes this bus's inbox once (live before the first request leaves).
async fn inbox(bus: &Arc<Shared>) -> Result<&str> {
    bus.inbox
        .get_or_try_init(|| async {
            let route = InboxRoute {
                bus: Arc::downgrade(bus),
            };
            let topic = Topic::Channel(bus.inbox_name.clone());
            bus.subscriber.add(topic, Arc::new(route)).await
        })
        .await?;
    Ok(&bus.inbox_name)
}

fn timeout_of(request: &Envelope) -> Duration {
    request.remaining().unwrap_or(busbar_core::DEFAULT_TIMEOUT)
}

/// Sends `request` to one provider and waits for its reply.
pub(crate) async fn call(bus: &Arc<Shared>, mut request: Envelope) -> Result<Envelope> {
    let timeout = timeout_of(&request);
    request.reply_to = Some(inbox(bus).await?.to_owned());
    let bytes = wire::encode(&request)?;
    let method = request.subject.as_str();
    let mut waiter = bus.pending.register(request.id);
    let conn = bus.link.get(bus.config.outage_wait.min(timeout)).await?;
    let mut c = conn.conn.clone();
    let expiry = millis(timeout) + 60_000;
    let mut invocation = CALL.key(request_list(&bus.config.namespace, method));
    invocation
        .arg(presence_channel(&bus.config.namespace, method))
        .arg(&bytes[..])
        .arg(expiry);
    let sent = invocation.invoke_async::<i64>(&mut c);
    let providers = match tokio::time::timeout(timeout, sent).await {
        Ok(result) => conn.check(result)?,
        Err(_) => return Err(Error::Timeout),
    };
    if providers == 0 {
        return Err(Error::NoResponders {
            method: method.to_owned(),
        });
    }
    let remaining = timeout_of(&request);
    match tokio::time::timeout(remaining, waiter.replies.recv()).await {
        Ok(Some(reply)) if reply.header(STATUS_HEADER) == Some(NO_RESPONDERS) => {
            Err(Error::NoResponders {
                method: method.to_owned(),
            })
        }
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err(Error::Closed),
        Err(_) => Err(Error::Timeout),
    }
}

/// Sends `request` to every provider and gathers their replies.
pub(crate) async fn call_all(
    bus: &Arc<Shared>,
    mut request: Envelope,
) -> Result<Vec<Result<Envelope>>> {
    let timeout = timeout_of(&request);
    request.reply_to = Some(inbox(bus).await?.to_owned());
    let bytes = wire::encode(&request)?;
    let method = request.subject.as_str();
    let mut waiter = bus.pending.register(request.id);
    let conn = bus.link.get(bus.config.outage_wait.min(timeout)).await?;
    let mut c = conn.conn.clone();
    let mut publish = redis::cmd("PUBLISH");
    publish
        .arg(presence_channel(&bus.config.namespace, method))
        .arg(&bytes[..]);
    let sent = publish.query_async::<i64>(&mut c);
    let receivers = match tokio::time::timeout(timeout, sent).await {
        Ok(result) => conn.check(result)?,
        Err(_) => return Err(Error::Timeout),
    };
    if receivers <= 0 {
        return Err(Error::NoResponders {
            method: method.to_owned(),
        });
    }
    let deadline = tokio::time::Instant::now() + timeout_of(&request);
    let mut expected = receivers as usize;
    let mut sources = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        match tokio::time::timeout_at(deadline, waiter.replies.recv()).await {
            Ok(Some(reply)) => {
                let source = reply.header(SOURCE_HEADER).map(str::to_owned);
                let providers = reply
                    .header(PROVIDERS_HEADER)
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(1)
                    .clamp(1, 1024);
                if let Some(source) = source {
                    if sources.insert(source) {
                        expected += providers - 1;
                    }
                }
                out.push(Ok(reply));
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }
    out.resize_with(expected, || Err(Error::Timeout));
    Ok(out)
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
    /// Runs the handler on `request` and publishes the reply.
    fn spawn_answer(
        &self,
        bus: Arc<Shared>,
        request: Envelope,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let handler = self.handler.clone();
        let method = self.method.clone();
        let guard = bus.inflight.enter();
        tokio::spawn(async move {
            let _guard = guard;
            let _permit = permit;
            let Some(reply_to) = reply_address(&bus, &request) else {
                return;
            };
            let Some(mut reply) = respond(handler.as_ref(), request, &bus.stats).await else {
                return;
            };
            let providers = bus.providers.get(&method).map(|n| *n).unwrap_or(1);
            reply
                .headers
                .push((SOURCE_HEADER.to_owned(), bus.uid.clone()));
            reply
                .headers
                .push((PROVIDERS_HEADER.to_owned(), providers.to_string()));
            send_reply(&bus, reply_to, &reply).await;
        });
    }

    fn accept(
        &self,
        bus: &Arc<Shared>,
        payload: &Bytes,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let Some(request) = decode_request(bus, payload, &self.method) else {
            return;
        };
        self.spawn_answer(bus.clone(), request, permit);
    }
}

fn decode_request(bus: &Shared, payload: &Bytes, method: &str) -> Option<Envelope> {
    let request = decode(payload, bus.config.max_envelope, &bus.stats)?;
    if request.kind != Kind::Request || request.subject.as_str() != method {
        Stats::incr(&bus.stats.rejected);
        tracing::warn!("rejected a message that is not a request for this method");
        return None;
    }
    Some(request)
}

/// Where to send the reply to `request`: only this namespace's reply channels.
fn reply_address(bus: &Shared, request: &Envelope) -> Option<String> {
    match &request.reply_to {
        Some(reply_to) if reply_to.starts_with(&bus.inbox_prefix) => Some(reply_to.clone()),
        other => {
            Stats::incr(&bus.stats.rejected);
            tracing::warn!(reply_to = ?other, "rejected a request without a reply address in the namespace");
            None
        }
    }
}

async fn send_reply(bus: &Shared, reply_to: String, reply: &Envelope) {
    match wire::encode(reply) {
        Ok(payload) => {
            let job = Job::Publish {
                channel: Bytes::from(reply_to),
                payload,
            };
            if let Err(err) = bus.writer.send(job).await {
                tracing::warn!(%err, "could not send an RPC reply");
            }
        }
        Err(err) => tracing::warn!(%err, "could not encode an RPC reply"),
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
                self.accept(&bus, payload, None);
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
            for _ in 0..250 {
                unblock(bus, self.provider.client_id.load(Ordering::Acquire)).await;
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

async fn unblock(bus: &Shared, client_id: i64) {
    if let Ok(conn) = bus.link.get(bus.config.response_timeout).await {
        let mut c = conn.conn.clone();
        let result = redis::cmd("CLIENT")
            .arg("UNBLOCK")
            .arg(client_id)
            .exec_async(&mut c)
            .await;
        let _ = conn.check(result);
    }
}

/// KEYS[1] = request list, ARGV[1] = presence channel. With no provider left,
/// takes every queued request.
static DRAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('PUBSUB', 'NUMSUB', ARGV[1])[2] ~= 0 then return {} end
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
    invocation.arg(presence_channel(namespace, method));
    let result = invocation.invoke_async::<Vec<Vec<u8>>>(&mut c).await;
    let Ok(items) = conn.check(result) else {
        return;
    };
    for item in items {
        let Some(request) = decode_request(bus, &Bytes::from(item), method) else {
            continue;
        };
        let Some(reply_to) = reply_address(bus, &request) else {
            continue;
        };
        let mut reply = error_reply(
            &request,
            Fault::new("no_responders", format!("no provider serves {method}")),
        );
        reply
            .headers
            .push((STATUS_HEADER.to_owned(), NO_RESPONDERS.to_owned()));
        send_reply(bus, reply_to, &reply).await;
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
    let first = bus.pool.take().await?;
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
            Topic::Channel(presence_channel(&bus.config.namespace, method.as_str())),
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
    d.as_millis().min(u64::MAX as u128) as u64
}

/// Pops requests for one provider, reconnecting when the connection is lost.
/// When the provider stops, whatever it popped and did not start goes back.
async fn pop_loop(
    bus: Weak<Shared>,
    provider: Arc<Provider>,
    mut conn: redis::aio::MultiplexedConnection,
) {
    let Some(strong) = bus.upgrade() else { return };
    let list = request_list(&strong.config.namespace, &provider.method);
    let permits = Arc::new(Semaphore::new(strong.config.handler_concurrency.max(1)));
    let mut backoff = Backoff::new(&strong.config);
    let grace = strong.config.response_timeout;
    drop(strong);
    let block_secs = 5u64;
    loop {
        // Never pop more than can be run now: the rest stays for other providers.
        let Ok(first) = permits.clone().acquire_owned().await else {
            return;
        };
        if provider.stopping.load(Ordering::Acquire) {
            return;
        }
        let room = permits.available_permits().min(POP_BATCH - 1) + 1;
        let popped = tokio::time::timeout(
            Duration::from_secs(block_secs) + grace,
            redis::cmd("BLMPOP")
                .arg(block_secs)
                .arg(1)
                .arg(&list)
                .arg("RIGHT")
                .arg("COUNT")
                .arg(room)
                .query_async::<Value>(&mut conn),
        )
        .await;
        let Some(bus) = bus.upgrade() else { return };
        match popped {
            Ok(Ok(value)) => {
                backoff.reset();
                let items = requests(value);
                if provider.stopping.load(Ordering::Acquire) || bus.check_open().is_err() {
                    put_back(&bus, &list, items).await;
                    return;
                }
                let mut first = Some(first);
                for item in items {
                    let permit = match first.take() {
                        Some(permit) => Some(permit),
                        None => permits.clone().try_acquire_owned().ok(),
                    };
                    provider.accept(&bus, &Bytes::from(item), permit);
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, method = %provider.method, "RPC provider lost its connection; reconnecting");
                conn = reconnect(&bus, &provider, &mut backoff).await;
            }
            Err(_) => {
                tracing::warn!(method = %provider.method, "RPC provider pop did not return in time; reconnecting");
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

async fn reconnect(
    bus: &Shared,
    provider: &Provider,
    backoff: &mut Backoff,
) -> redis::aio::MultiplexedConnection {
    loop {
        backoff.wait().await;
        match bus.pool.take().await {
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
