//! Work queues that cannot lose an item: Redis lists plus an in-flight table with
//! a visibility timeout.
//!
//! Keys of queue `jobs` in namespace `ns` (the `{jobs}` hash tag keeps them on one
//! cluster slot):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `ns:q:{jobs}` | list | items waiting (`LPUSH` in, taken from the right: FIFO) |
//! | `ns:q:{jobs}:p` | list | items a pop just moved, for the next command to adopt |
//! | `ns:q:{jobs}:fly` | hash | id → item, for items handed out and not yet settled |
//! | `ns:q:{jobs}:vis` | zset | id → when the item comes back (ms, Redis clock) |
//! | `ns:q:{jobs}:att` | hash | id → times it came back (reaped or nacked); absent for a first delivery |
//!
//! **Taking** (`get` and `receive`) first runs one script, `TAKE`, on the bus's
//! shared command connection: it pops the oldest item and parks it in the
//! in-flight table with its deadline, in one step, and returns it (for
//! `receive`, with its attempt number: one more than `:att` says). Redis runs it
//! before the reply leaves, so an item is never in the client's hands without
//! being in flight: a reply lost with the connection costs a redelivery, never
//! the item. Being an ordinary command, it is pipelined with everything else the
//! bus sends. The deadline is computed by the client from the Redis clock the
//! reaper last read (`TIME` inside the script cost as much as a quarter of it).
//!
//! The queue workload is bound by Redis's time per item, so a take is kept to
//! the calls that make it lossless (pop, `HSET`, `ZADD`); everything else
//! happens on the rarer paths: attempts are counted when an item comes back,
//! not when it leaves.
//!
//! Only when the queue is empty does a take wait, in one pipeline on a connection
//! of its own (blocking pops never share a connection): `BLMOVE` from the queue
//! into `:p` with the server-side timeout, then `ADOPT`, which moves one item from
//! `:p` into the in-flight table the same way. The server ends the wait, so a
//! `get` that timed out cannot swallow an item put after it; an item that lands
//! in `:p` and is never adopted (a connection lost between the two) is put back
//! by the reaper.
//!
//! A caller that gives up (its future dropped) never takes an item with it. A
//! `TAKE` in flight is handed to a task that reads its reply; a blocking pop runs
//! in a task of its own that reports through a oneshot, and ends the pop at once
//! with `CLIENT UNBLOCK` when the receiver goes. Whatever either brings for a
//! caller that has left goes straight back to the head of the queue, its attempt
//! not counted; whoever loses the race between the oneshot's send and the
//! receiver's close does it, so nothing waits for a visibility timeout.
//!
//! `get` acknowledges without waiting: its `ZREM`/`HDEL`s ride in the same write
//! as the next `TAKE` of that queue on the bus, or go through the ordered writer
//! after a millisecond (or at shutdown) when no take comes, so a consumer taking
//! in a loop costs one round trip per item. `receive` hands out a delivery to
//! `ack` (delete) or `nack` (back to the head of the queue). Unsettled items come
//! back after their visibility timeout: every bus with a consumer taking runs the
//! reaper every `reap_interval`, and `len` runs it too. Delivery is at least
//! once: an item whose consumer died or was too slow may be processed twice.

use crate::connection::{transport_error, Job};
use crate::pubsub::decode;
use crate::Shared;
use async_trait::async_trait;
use busbar_core::transport::{Acker, RawDelivery};
use busbar_core::{wire, Envelope, Error, Name, Result};
use redis::{Script, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The end of [`TAKE`] and [`ADOPT`], once `item` is popped: parks it in the
/// in-flight table until ARGV[3], the deadline on the Redis clock when the
/// client knows that clock (else TIME + ARGV[1]), and returns it with its attempt
/// number when ARGV[2] is `1` (`receive`; a `get` has no use for it). Attempts
/// are counted when an item comes back (reaped or nacked), not when it is
/// taken, so the take itself writes nothing but the park. Inline, without
/// helper functions: this runs once per item, and every call counts.
const PARK: &str = r"
if not item then return false end
local id = string.sub(item, 5, 20)
redis.call('HSET', base .. ':fly', id, item)
local deadline = ARGV[3]
if not deadline then
  local t = redis.call('TIME')
  deadline = t[1] * 1000 + math.floor(t[2] / 1000) + ARGV[1]
end
redis.call('ZADD', base .. ':vis', deadline, id)
if ARGV[2] == '1' then
  return {item, 1 + (tonumber(redis.call('HGET', base .. ':att', id)) or 0)}
end
return {item, 1}";

/// Takes one waiting item into flight, if there is one.
/// KEYS[1] = base, ARGV[1] = visibility (ms), ARGV[2] = `1` for the attempt
/// number, ARGV[3] (optional) = deadline (ms, Redis clock). Sent on the shared command connection, so concurrent takes are
/// pipelined with every other command.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local base = KEYS[1]
local item = redis.call('RPOP', base){PARK}"
    ))
});

/// Adopts an item a blocking pop just moved into the processing list.
/// KEYS[1] = base, ARGV[1..2] as for [`TAKE`] (the deadline is taken from the
/// Redis clock: the pop may have waited long). Sent with `EVALSHA` right behind the
/// pop, in the same pipeline.
static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local base = KEYS[1]
local item = redis.call('LPOP', base .. ':p'){PARK}"
    ))
});

/// Puts an in-flight item back at the head of the queue, counting the attempt
/// unless ARGV[2] is `1` (the item never reached a caller). KEYS[1] = base,
/// ARGV[1] = id. Its source is also sent with `EVAL` from `Drop`, where there is
/// no way to load it first.
const NACK_LUA: &str = r"
local base = KEYS[1]
if redis.call('ZREM', base .. ':vis', ARGV[1]) == 1 then
  local item = redis.call('HGET', base .. ':fly', ARGV[1])
  redis.call('HDEL', base .. ':fly', ARGV[1])
  if item then
    if ARGV[2] ~= '1' then redis.call('HINCRBY', base .. ':att', ARGV[1], 1) end
    redis.call('RPUSH', base, item)
  end
  return 1
end
return 0";

static NACK: LazyLock<Script> = LazyLock::new(|| Script::new(NACK_LUA));

/// Reaps; returns the number of waiting items and the Redis clock (`TIME`).
/// KEYS[1] = base.
static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local base = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', base .. ':vis', '-inf', now, 'LIMIT', 0, 256)
for _, id in ipairs(due) do
  local item = redis.call('HGET', base .. ':fly', id)
  redis.call('ZREM', base .. ':vis', id)
  redis.call('HDEL', base .. ':fly', id)
  if item then
    redis.call('HINCRBY', base .. ':att', id, 1)
    redis.call('RPUSH', base, item)
  end
end
if redis.call('SET', base .. ':reap', '1', 'NX', 'PX', 1000) then
  local item = redis.call('RPOP', base .. ':p')
  while item do
    redis.call('RPUSH', base, item)
    item = redis.call('RPOP', base .. ':p')
  end
end
return {redis.call('LLEN', base), t[1], t[2]}",
    )
});

/// The base key of `queue`.
pub(crate) fn base_key(namespace: &str, queue: &str) -> String {
    format!("{namespace}:q:{{{queue}}}")
}

fn millis(d: Duration) -> u64 {
    busbar_core::ceil_millis(d)
}

/// `LPUSH`es the item; returns once Redis stored it.
pub(crate) async fn put(bus: &Shared, item: Envelope) -> Result<()> {
    let bytes = wire::encode(&item)?;
    let base = base_key(&bus.config.namespace, item.subject.as_str());
    let conn = bus.link.get(bus.config.outage_wait).await?;
    let mut c = conn.conn.clone();
    let result = redis::cmd("LPUSH")
        .arg(&base)
        .arg(&bytes[..])
        .exec_async(&mut c)
        .await;
    conn.check(result)
}

/// Items waiting (reaping expired in-flight items first, so they count).
pub(crate) async fn len(bus: &Shared, queue: &Name) -> Result<usize> {
    let base = base_key(&bus.config.namespace, queue.as_str());
    run_reap(bus, &base).await
}

/// Reaps `base` (the periodic reaper).
pub(crate) async fn reap(bus: &Shared, base: &str) -> Result<()> {
    run_reap(bus, base).await.map(drop)
}

/// Runs [`REAP`], noting the Redis clock it reports; the number of waiting items.
async fn run_reap(bus: &Shared, base: &str) -> Result<usize> {
    let conn = bus.link.get(bus.config.outage_wait).await?;
    let mut c = conn.conn.clone();
    let sent = std::time::Instant::now();
    let result = REAP
        .key(base)
        .invoke_async::<(usize, u64, u64)>(&mut c)
        .await;
    let (waiting, secs, micros) = conn.check(result)?;
    // Redis read its clock somewhere in the round trip: call it the middle.
    let at = sent + sent.elapsed() / 2;
    bus.queues.clock.saw(base, at, secs * 1000 + micros / 1000);
    Ok(waiting)
}

/// A taken item: the envelope, its attempt number, and where it is in flight.
struct Taken {
    envelope: Envelope,
    attempt: u32,
    base: String,
    id: [u8; 16],
}

/// `get`: takes one item and acknowledges it at once.
pub(crate) async fn get(
    bus: &Arc<Shared>,
    queue: &Name,
    timeout: Duration,
) -> Result<Option<Envelope>> {
    let visibility = bus.config.get_visibility;
    match take(bus, queue, timeout, visibility, false).await? {
        None => Ok(None),
        Some(taken) => {
            settle_soon(bus, &taken.base, &taken.id);
            Ok(Some(taken.envelope))
        }
    }
}

/// `receive`: takes one item for acknowledged processing.
pub(crate) async fn receive(
    bus: &Arc<Shared>,
    queue: &Name,
    timeout: Duration,
    visibility: Duration,
) -> Result<Option<RawDelivery>> {
    let Some(taken) = take(bus, queue, timeout, visibility, true).await? else {
        return Ok(None);
    };
    let acker = RedisAcker {
        bus: bus.clone(),
        base: taken.base.clone(),
        id: taken.id,
        settled: AtomicBool::new(false),
    };
    bus.unsettled.insert((taken.base, taken.id), ());
    Ok(Some(RawDelivery::new(
        taken.envelope,
        taken.attempt,
        Box::new(acker),
    )))
}

/// How an item is taken.
#[derive(Clone, Copy)]
struct Terms {
    /// How long it stays in flight.
    visibility_ms: u64,
    /// Whether its attempt number is wanted (an extra read; `get` skips it).
    attempt: bool,
}

impl Terms {
    /// ARGV[2] of [`TAKE`] and [`ADOPT`].
    fn attempt_arg(&self) -> &'static str {
        if self.attempt {
            "1"
        } else {
            "0"
        }
    }
}

/// What one attempt at taking gave.
// Short-lived and moved a couple of times at most: boxing the item would cost
// an allocation per take for nothing.
#[allow(clippy::large_enum_variant)]
enum Took {
    /// An item, in flight already.
    Item(Taken),
    /// The queue was empty.
    Empty,
    /// A blocking pop's server-side timeout passed with nothing there.
    TimedOut,
    /// Nothing usable: a malformed item (dropped), or a popped item that is back
    /// in the queue already (the reaper returned it) or adopted by another pop.
    Missed,
}

/// Takes at once when an item is waiting (one script on the shared connection,
/// pipelined with everything else this bus sends); otherwise waits in a blocking
/// pop on a connection of its own, then looks again.
///
/// Neither way can a caller that gives up take an item with it: what Redis
/// handed out for a dropped call is put back at the head of the queue at once,
/// its attempt not counted (see [`PendingTake`] and [`Handover`]).
async fn take(
    bus: &Arc<Shared>,
    queue: &Name,
    timeout: Duration,
    visibility: Duration,
    attempt: bool,
) -> Result<Option<Taken>> {
    let base = base_key(&bus.config.namespace, queue.as_str());
    let deadline = Instant::now() + timeout;
    let terms = Terms {
        visibility_ms: millis(visibility).max(1),
        attempt,
    };
    let _waiting = Waiting::enter(bus, &base);
    loop {
        bus.check_open()?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let step = match take_now(bus, &base, terms, remaining).await {
            // Even a zero timeout looks once.
            Ok(Took::Empty) if remaining < Duration::from_millis(1) => return Ok(None),
            Ok(Took::Empty) => wait_for_item(bus, &base, remaining, terms).await,
            other => other,
        };
        match step {
            Ok(Took::Item(taken)) => return Ok(Some(taken)),
            Ok(Took::Empty | Took::Missed) => {}
            Ok(Took::TimedOut) => return Ok(None),
            Err(Error::Closed) => return Err(Error::Closed),
            Err(err) => {
                // Connection lost: retry on a new one until the deadline.
                tracing::debug!(%err, "taking a queue item failed; retrying");
                let pause = Duration::from_millis(50)
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                if Instant::now() >= deadline {
                    return Ok(None);
                }
            }
        }
    }
}

/// A reply from Redis that must be read even if its caller leaves.
type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = redis::RedisResult<Value>> + Send>>;

/// Runs [`TAKE`], carrying the acknowledgements of earlier gets in the same write.
async fn take_now(
    bus: &Arc<Shared>,
    base: &str,
    terms: Terms,
    remaining: Duration,
) -> Result<Took> {
    // A get with a short timeout does not wait out a long reconnect.
    let wait = remaining
        .max(Duration::from_millis(1))
        .min(bus.config.outage_wait);
    let conn = bus.link.get(wait).await?;
    let mut c = conn.conn.clone();
    let mut pipe = redis::pipe();
    for id in bus.queues.acks.drain(base) {
        for cmd in settle_commands(base, &id) {
            pipe.add_command(cmd).ignore();
        }
    }
    pipe.cmd("EVALSHA")
        .arg(TAKE.get_hash())
        .arg(1)
        .arg(base)
        .arg(terms.visibility_ms)
        .arg(terms.attempt_arg());
    // Saves the script a TIME call, which costs as much as a quarter of the rest.
    if let Some(now) = bus.queues.clock.now(base) {
        pipe.arg(now + terms.visibility_ms);
    }
    let key = base.to_owned();
    let reply: Reply = Box::pin(async move {
        match pipe.query_async::<(Value,)>(&mut c).await {
            Ok((value,)) => Ok(value),
            // Not loaded (first use, restart, SCRIPT FLUSH): nothing was taken
            // (the acknowledgements before it did run).
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                TAKE.key(&key)
                    .arg(terms.visibility_ms)
                    .arg(terms.attempt_arg())
                    .invoke_async::<Value>(&mut c)
                    .await
            }
            Err(err) => Err(err),
        }
    });
    let mut pending = PendingTake {
        bus,
        base,
        reply: Some(reply),
    };
    let result = match pending.reply.as_mut() {
        Some(reply) => reply.await,
        None => unreachable!("set just above"),
    };
    pending.reply = None;
    Ok(match conn.check(result)? {
        Value::Nil | Value::Boolean(false) => Took::Empty,
        value => match parse_taken(bus, base, value) {
            Some(taken) => Took::Item(taken),
            None => Took::Missed,
        },
    })
}

/// A [`TAKE`] in progress. Dropped before its reply came (the caller gave up),
/// it hands the reply to a task that reads it and puts back the item it brings,
/// instead of leaving that item in flight, owned by nobody, until its
/// visibility timeout.
struct PendingTake<'a> {
    bus: &'a Arc<Shared>,
    base: &'a str,
    reply: Option<Reply>,
}

impl Drop for PendingTake<'_> {
    fn drop(&mut self) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("a take was abandoned without a runtime; its item comes back after its visibility timeout");
            return;
        };
        let (bus, base) = (self.bus.clone(), self.base.to_owned());
        runtime.spawn(async move {
            // Shutdown waits for this put-back before its last flush.
            let _waiting = Waiting::enter(&bus, &base);
            if let Ok(Value::Array(parts)) = reply.await {
                if let Some(Value::BulkString(item)) = parts.first() {
                    put_back_id(&bus, &base, &item_id(item)).await;
                }
            }
        });
    }
}

/// The id in an item's wire bytes (where the scripts find it too).
fn item_id(item: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    if item.len() >= 20 {
        id.copy_from_slice(&item[4..20]);
    }
    id
}

/// Waits for an item in a blocking pop run by a task of its own, which hands it
/// over on a oneshot.
///
/// The task always reads Redis's reply, so an item is never taken by a caller
/// that is gone: if this future is dropped, either the task finds the receiver
/// closed (and ends the pop with `CLIENT UNBLOCK`, then puts back what it
/// brought), or it had sent the item already and [`Handover`] puts it back.
async fn wait_for_item(
    bus: &Arc<Shared>,
    base: &str,
    timeout: Duration,
    terms: Terms,
) -> Result<Took> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(waiter(bus.clone(), base.to_owned(), timeout, terms, tx));
    let mut handover = Handover {
        bus,
        rx,
        received: false,
    };
    let outcome = (&mut handover.rx).await;
    handover.received = true;
    // A waiter that ended without answering was dropped with its runtime.
    outcome.unwrap_or(Err(Error::Closed))
}

/// The receiving end of a wait; puts back an item that arrives after its caller left.
struct Handover<'a> {
    bus: &'a Shared,
    rx: oneshot::Receiver<Result<Took>>,
    received: bool,
}

impl Drop for Handover<'_> {
    fn drop(&mut self) {
        if self.received {
            return;
        }
        // Closing first settles the race with the waiter: from now on its send
        // fails (and it puts the item back), so anything sent before is here.
        self.rx.close();
        if let Ok(Ok(Took::Item(taken))) = self.rx.try_recv() {
            put_back_now(self.bus, &taken);
        }
    }
}

/// The task behind [`wait_for_item`]: waits, hands over, and puts back what
/// nobody received.
async fn waiter(
    bus: Arc<Shared>,
    base: String,
    timeout: Duration,
    terms: Terms,
    mut caller: oneshot::Sender<Result<Took>>,
) {
    // Held until any put-back is queued: shutdown waits for it, then flushes.
    let _waiting = Waiting::enter(&bus, &base);
    let outcome = wait(&bus, &base, timeout, terms, &mut caller).await;
    if let Err(Ok(Took::Item(taken))) = caller.send(outcome) {
        put_back_id(&bus, &taken.base, &taken.id).await;
    }
}

/// Blocks on `BLMOVE` into the processing list, then adopts the item.
///
/// The pop is always read to its end: when the caller leaves or the bus shuts
/// down, `CLIENT UNBLOCK` ends it at once, and whatever it took is returned as
/// usual, for [`waiter`] to put back (or put back here at shutdown). Only if
/// Redis does not answer in time is the reply abandoned with its connection,
/// leaving a moved item to the reaper.
async fn wait(
    bus: &Arc<Shared>,
    base: &str,
    timeout: Duration,
    terms: Terms,
    caller: &mut oneshot::Sender<Result<Took>>,
) -> Result<Took> {
    let mut blocking = bus.pool.take(base).await?;
    if caller.is_closed() {
        bus.pool.give_back(blocking);
        return Ok(Took::TimedOut);
    }
    let processing = format!("{base}:p");
    let grace = bus.config.response_timeout;
    let mut pipe = redis::pipe();
    pipe.cmd("BLMOVE")
        .arg(base)
        .arg(&processing)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(format!("{:.3}", timeout.as_secs_f64().max(0.001)));
    // Runs on the server right after the pop returns (a blocked client's next
    // command waits for it): the item is in flight before it leaves Redis.
    pipe.cmd("EVALSHA")
        .arg(ADOPT.get_hash())
        .arg(1)
        .arg(base)
        .arg(terms.visibility_ms)
        .arg(terms.attempt_arg());
    let mut closing = bus.closing.subscribe();
    let mut shutting_down = false;
    let mut unblocking = false;
    let popped = {
        let reply = pipe.query_async::<(Option<Vec<u8>>, Value)>(&mut blocking.conn);
        tokio::pin!(reply);
        let limit = tokio::time::sleep(timeout + grace);
        tokio::pin!(limit);
        let retry = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                popped = &mut reply => break Some(popped),
                () = &mut limit => break None,
                _ = closing.wait_for(|closing| *closing), if !unblocking => {
                    shutting_down = true;
                    unblocking = true;
                    limit.as_mut().reset(Instant::now() + grace);
                }
                () = caller.closed(), if !unblocking => {
                    unblocking = true;
                    limit.as_mut().reset(Instant::now() + grace);
                }
                // The unblock travels on another connection and may overtake
                // the pop it is meant for (then it finds nothing to end): repeat
                // it until the pop answers.
                () = &mut retry, if unblocking => {
                    if !unblock(bus, base, blocking.client_id) {
                        break None;
                    }
                    retry.as_mut().reset(Instant::now() + UNBLOCK_RETRY);
                }
            }
        }
    };
    let popped = match popped {
        Some(Ok((moved, adopted))) => adopted_or(moved.is_some(), adopted),
        Some(Err(err))
            if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            // The script cache was empty (first use, restart, SCRIPT FLUSH): the
            // pop ran; load the script and adopt now. Should this fail, the
            // reaper puts the item back from the processing list.
            let adopted = tokio::time::timeout(
                grace,
                ADOPT
                    .key(base)
                    .arg(terms.visibility_ms)
                    .arg(terms.attempt_arg())
                    .invoke_async::<Value>(&mut blocking.conn),
            )
            .await;
            match adopted {
                Ok(Ok(value)) => adopted_or(true, value),
                Ok(Err(err)) => return Err(transport_error(err)),
                Err(_) => return Err(Error::transport("redis did not answer in time")),
            }
        }
        Some(Err(err)) => return Err(transport_error(err)),
        None => return Err(Error::transport("redis did not end a blocking pop in time")),
    };
    // An unblock may still be on its way: it must not end the next pop on this
    // connection, so the connection is not reused.
    if !unblocking {
        bus.pool.give_back(blocking);
    }
    let took = match popped {
        Popped::Item(value) => match parse_taken(bus, base, value) {
            Some(taken) => Took::Item(taken),
            None => Took::Missed,
        },
        Popped::Missed => Took::Missed,
        Popped::TimedOut => Took::TimedOut,
    };
    if shutting_down {
        if let Took::Item(taken) = took {
            put_back_now(bus, &taken);
        }
        return Err(Error::Closed);
    }
    Ok(took)
}

/// What a pop and its adoption gave. The item adopted counts even when this pop
/// moved nothing: the processing list is shared, so an adoption can pick up the
/// item another pop moved (that pop then misses and waits again).
fn adopted_or(moved: bool, adopted: Value) -> Popped {
    match adopted {
        Value::Nil | Value::Boolean(false) if moved => Popped::Missed,
        Value::Nil | Value::Boolean(false) => Popped::TimedOut,
        value => Popped::Item(value),
    }
}

/// How often an unblock is repeated until the pop it ends answers.
const UNBLOCK_RETRY: Duration = Duration::from_millis(10);

/// Ends a blocking pop on the server (through the writer: this runs while the
/// pop's own connection waits). False when it could not even be queued.
fn unblock(bus: &Shared, base: &str, client_id: i64) -> bool {
    let mut unblock = redis::cmd("CLIENT");
    unblock.arg("UNBLOCK").arg(client_id);
    bus.writer.send_now(job(base, [unblock]))
}

/// A writer job for the node of queue `base` (the one its pops block on).
fn job(base: &str, cmds: impl Into<Box<[redis::Cmd]>>) -> Job {
    Job::Commands {
        key: base.to_owned().into(),
        cmds: cmds.into(),
    }
}

/// What one blocking wait gave.
enum Popped {
    /// The server-side timeout passed with nothing there.
    TimedOut,
    /// An item, adopted into the in-flight table.
    Item(Value),
    /// Something was popped but is back in the queue already (the reaper
    /// returned it) or adopted by another pop.
    Missed,
}

/// Marks a queue as waited on by this bus, so the periodic reaper visits it.
struct Waiting<'a> {
    bus: &'a Shared,
    base: String,
}

impl<'a> Waiting<'a> {
    fn enter(bus: &'a Shared, base: &str) -> Self {
        *bus.waiting.entry(base.to_owned()).or_insert(0) += 1;
        Waiting {
            bus,
            base: base.to_owned(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.bus.waiting.remove_if_mut(&self.base, |_, count| {
            *count -= 1;
            *count == 0
        });
        self.bus.waiting_changed.notify_waiters();
    }
}

/// The command putting back an item that never reached a caller: at the head
/// of the queue, its attempt not counted. `EVAL` with the source, as the writer
/// cannot load a script that Redis lost.
fn put_back_command(base: &str, id: &[u8; 16]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(NACK_LUA).arg(1).arg(base).arg(&id[..]).arg(1);
    cmd
}

/// Puts `taken` back without waiting (for `Drop`); should the writer be full,
/// the item comes back after its visibility timeout instead.
fn put_back_now(bus: &Shared, taken: &Taken) {
    if !bus
        .writer
        .send_now(job(&taken.base, [put_back_command(&taken.base, &taken.id)]))
    {
        tracing::warn!("could not put back an item taken for a caller that left; it comes back after its visibility timeout");
    }
}

/// Puts back an item taken for a caller that left, waiting for room in the writer.
async fn put_back_id(bus: &Shared, base: &str, id: &[u8; 16]) {
    if let Err(err) = bus
        .writer
        .send(job(base, [put_back_command(base, id)]))
        .await
    {
        tracing::warn!(%err, "could not put back an item taken for a caller that left; it comes back after its visibility timeout");
    }
}

/// Turns a take's reply into an item. A malformed item is counted, logged and
/// removed (it could never be processed); `None` then, and the caller takes again.
fn parse_taken(bus: &Arc<Shared>, base: &str, value: Value) -> Option<Taken> {
    let Value::Array(mut parts) = value else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let attempt = match parts.pop() {
        Some(Value::Int(n)) => n.clamp(1, u32::MAX as i64) as u32,
        _ => 1,
    };
    let Some(Value::BulkString(item)) = parts.pop() else {
        return None;
    };
    let id = item_id(&item);
    let item = bytes::Bytes::from(item);
    match decode(&item, bus.config.max_envelope, &bus.stats) {
        Some(envelope) => Some(Taken {
            envelope,
            attempt,
            base: base.to_owned(),
            id,
        }),
        None => {
            // Only a valid envelope has a meaningful id: drop by the raw id bytes.
            settle_soon(bus, base, &id);
            None
        }
    }
}

/// How long a `get`'s acknowledgement waits for the next take of its queue on
/// the same bus to carry it, before it is sent on its own.
const ACK_DELAY: Duration = Duration::from_millis(1);

/// Acknowledges a `get` soon, without waiting for Redis: the next take of the
/// same queue on this bus carries it (a consumer taking in a loop then pays no
/// write and no round trip for its acknowledgements); otherwise, after
/// [`ACK_DELAY`] or at shutdown, a flusher sends it through the ordered writer.
/// Until then the item is in flight, so a bus that dies first costs a
/// redelivery, never the item.
fn settle_soon(bus: &Arc<Shared>, base: &str, id: &[u8; 16]) {
    if bus.queues.acks.add(base, *id) {
        tokio::spawn(flush_acks(bus.clone(), base.to_owned()));
    }
}

/// A bus's queue bookkeeping.
#[derive(Default)]
pub(crate) struct Local {
    acks: PendingAcks,
    clock: RedisClock,
}

/// The Redis clock as last seen by the reaper, per queue (in a cluster each
/// queue's node has a clock of its own), so a take can send its deadline
/// instead of asking Redis for the time.
#[derive(Default)]
struct RedisClock {
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

/// How long a reading of the Redis clock is trusted: the reaper renews it every
/// `reap_interval` while consumers take; past this, takes ask Redis again.
const CLOCK_TRUST: Duration = Duration::from_secs(5);

impl RedisClock {
    fn saw(&self, base: &str, at: std::time::Instant, redis_ms: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(base) {
            Some(reading) => *reading = (at, redis_ms),
            None => {
                seen.insert(base.to_owned(), (at, redis_ms));
            }
        }
    }

    /// The time (ms) now on the Redis clock of `base`, if read recently.
    fn now(&self, base: &str) -> Option<u64> {
        let (at, redis_ms) = *self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(base)?;
        let since = at.elapsed();
        (since < CLOCK_TRUST).then(|| redis_ms + since.as_millis() as u64)
    }
}

/// Acknowledgements of `get`s waiting for a take to carry them (see [`settle_soon`]).
#[derive(Default)]
struct PendingAcks {
    state: std::sync::Mutex<AckState>,
}

#[derive(Default)]
struct AckState {
    /// Per queue (base key): the ids, and when the oldest was added.
    queues: std::collections::HashMap<String, (Vec<[u8; 16]>, Instant)>,
    /// Whether a flusher task is running.
    flusher: bool,
}

impl PendingAcks {
    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an id; true when a flusher must be started.
    fn add(&self, base: &str, id: [u8; 16]) -> bool {
        let mut state = self.lock();
        match state.queues.get_mut(base) {
            Some((ids, _)) => ids.push(id),
            None => {
                state
                    .queues
                    .insert(base.to_owned(), (vec![id], Instant::now()));
            }
        }
        !std::mem::replace(&mut state.flusher, true)
    }

    /// Takes the ids waiting for `base`.
    fn drain(&self, base: &str) -> Vec<[u8; 16]> {
        let mut state = self.lock();
        if state.queues.is_empty() {
            return Vec::new();
        }
        state
            .queues
            .remove(base)
            .map(|(ids, _)| ids)
            .unwrap_or_default()
    }

    /// Takes the ids that waited since `before` (all of them with `None`); `None`
    /// when nothing is left at all, and the flusher then stops.
    fn due(&self, before: Option<Instant>) -> Option<Vec<(String, Vec<[u8; 16]>)>> {
        let mut state = self.lock();
        if state.queues.is_empty() {
            state.flusher = false;
            return None;
        }
        let due: Vec<String> = state
            .queues
            .iter()
            .filter(|(_, (_, since))| before.is_none_or(|before| *since <= before))
            .map(|(base, _)| base.clone())
            .collect();
        Some(
            due.into_iter()
                .filter_map(|base| state.queues.remove(&base).map(|(ids, _)| (base, ids)))
                .collect(),
        )
    }
}

/// Sends the acknowledgements no take carried in time, until none are left.
async fn flush_acks(bus: Arc<Shared>, base: String) {
    // Shutdown waits for this flusher, which sends everything as soon as the
    // bus starts closing, before the writer's last flush.
    let _waiting = Waiting::enter(&bus, &base);
    let mut closing = bus.closing.subscribe();
    loop {
        let before = tokio::select! {
            () = tokio::time::sleep(ACK_DELAY) => Some(Instant::now() - ACK_DELAY),
            _ = closing.wait_for(|closing| *closing) => None,
        };
        let Some(due) = bus.queues.acks.due(before) else {
            return;
        };
        for (base, ids) in &due {
            let cmds: Vec<redis::Cmd> = ids
                .iter()
                .flat_map(|id| settle_commands(base, id))
                .collect();
            if let Err(err) = bus.writer.send(job(base, cmds)).await {
                tracing::warn!(%err, "could not acknowledge queue items; they will be delivered again");
            }
        }
    }
}

fn settle_commands(base: &str, id: &[u8; 16]) -> [redis::Cmd; 3] {
    let mut zrem = redis::cmd("ZREM");
    zrem.arg(format!("{base}:vis")).arg(&id[..]);
    let mut fly = redis::cmd("HDEL");
    fly.arg(format!("{base}:fly")).arg(&id[..]);
    let mut att = redis::cmd("HDEL");
    att.arg(format!("{base}:att")).arg(&id[..]);
    [zrem, fly, att]
}

/// Settles one delivery.
struct RedisAcker {
    bus: Arc<Shared>,
    base: String,
    id: [u8; 16],
    settled: AtomicBool,
}

impl RedisAcker {
    fn settle_once(&self) -> Result<()> {
        if self.settled.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        if self
            .bus
            .unsettled
            .remove(&(self.base.clone(), self.id))
            .is_none()
        {
            // Shutdown already put it back.
            return Err(Error::Closed);
        }
        Ok(())
    }
}

#[async_trait]
impl Acker for RedisAcker {
    async fn ack(&self) -> Result<()> {
        self.settle_once()?;
        let conn = self.bus.link.get(self.bus.config.outage_wait).await?;
        let mut c = conn.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for cmd in settle_commands(&self.base, &self.id) {
            pipe.add_command(cmd).ignore();
        }
        let result = pipe.exec_async(&mut c).await;
        conn.check(result)
    }

    async fn nack(&self) -> Result<()> {
        self.settle_once()?;
        nack(&self.bus, &self.base, &self.id).await
    }
}

/// Puts an in-flight item back at the head of its queue.
pub(crate) async fn nack(bus: &Shared, base: &str, id: &[u8; 16]) -> Result<()> {
    let conn = bus.link.get(bus.config.outage_wait).await?;
    let mut c = conn.conn.clone();
    let result = NACK
        .key(base)
        .arg(&id[..])
        .invoke_async::<i64>(&mut c)
        .await;
    conn.check(result).map(drop)
}
