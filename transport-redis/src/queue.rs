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
//! | `ns:q:{jobs}:att` | hash | id → times handed out |
//!
//! **Taking** (`get` and `receive`) sends one pipeline on a connection of its own
//! (blocking pops never share a connection): `BLMOVE` from the queue into `:p`
//! with the server-side timeout, then an `EVALSHA` that moves one item from `:p` into
//! the in-flight table with its deadline and attempt count, and returns it. Redis
//! runs the script as soon as the pop returns, before the reply leaves, so an item
//! is never in the client's hands without being in flight: a reply lost with
//! the connection costs a redelivery, never the item. The server ends the wait,
//! so a `get` that timed out cannot swallow an item put after it. A caller that
//! gives up early (its future dropped) sends `CLIENT UNBLOCK` and puts back
//! whatever reached `:p`; anything still left there (a crash between the two
//! commands) is put back by the reaper.
//!
//! `get` then acknowledges without waiting (through the ordered writer);
//! `receive` hands out a delivery to `ack` (delete) or `nack` (back to the head
//! of the queue). Unsettled items come back after their visibility timeout: every
//! bus with a consumer waiting runs the reaper every `reap_interval`, and `len`
//! runs it too. Delivery is at least once: an item whose consumer died or was too
//! slow may be processed twice.

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

const COMMON: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function park(base, item, now, visibility)
  local id = string.sub(item, 5, 20)
  redis.call('HSET', base .. ':fly', id, item)
  redis.call('ZADD', base .. ':vis', now + visibility, id)
  return {item, redis.call('HINCRBY', base .. ':att', id, 1)}
end
local function reap(base, now)
  local due = redis.call('ZRANGEBYSCORE', base .. ':vis', '-inf', now, 'LIMIT', 0, 256)
  for _, id in ipairs(due) do
    local item = redis.call('HGET', base .. ':fly', id)
    redis.call('ZREM', base .. ':vis', id)
    redis.call('HDEL', base .. ':fly', id)
    if item then redis.call('RPUSH', base, item) end
  end
  if redis.call('SET', base .. ':reap', '1', 'NX', 'PX', 1000) then
    local item = redis.call('RPOP', base .. ':p')
    while item do
      redis.call('RPUSH', base, item)
      item = redis.call('RPOP', base .. ':p')
    end
  end
end
";

/// Adopts an item a blocking pop just moved into the processing list.
/// KEYS[1] = base, ARGV[1] = visibility (ms). Sent with `EVALSHA` right behind
/// the pop, in the same pipeline.
static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{COMMON}
local base = KEYS[1]
local item = redis.call('LPOP', base .. ':p')
if not item then return false end
return park(base, item, now_ms(), tonumber(ARGV[1]))"
    ))
});

/// Puts an in-flight item back at the head of the queue. KEYS[1] = base, ARGV[1] = id.
static NACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local base = KEYS[1]
if redis.call('ZREM', base .. ':vis', ARGV[1]) == 1 then
  local item = redis.call('HGET', base .. ':fly', ARGV[1])
  redis.call('HDEL', base .. ':fly', ARGV[1])
  if item then redis.call('RPUSH', base, item) end
  return 1
end
return 0",
    )
});

/// Reaps and returns the number of waiting items. KEYS[1] = base.
static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{COMMON}
reap(KEYS[1], now_ms())
return redis.call('LLEN', KEYS[1])"
    ))
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
    let conn = bus.link.get(bus.config.outage_wait).await?;
    let mut c = conn.conn.clone();
    let result = REAP.key(&base).invoke_async::<usize>(&mut c).await;
    conn.check(result)
}

/// Reaps `base` (the periodic reaper).
pub(crate) async fn reap(bus: &Shared, base: &str) -> Result<()> {
    let conn = bus.link.get(bus.config.outage_wait).await?;
    let mut c = conn.conn.clone();
    let result = REAP.key(base).invoke_async::<usize>(&mut c).await;
    conn.check(result).map(drop)
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
    match take(bus, queue, timeout, visibility).await? {
        None => Ok(None),
        Some(taken) => {
            settle_later(bus, &taken.base, &taken.id).await;
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
    let Some(taken) = take(bus, queue, timeout, visibility).await? else {
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

async fn take(
    bus: &Arc<Shared>,
    queue: &Name,
    timeout: Duration,
    visibility: Duration,
) -> Result<Option<Taken>> {
    let base = base_key(&bus.config.namespace, queue.as_str());
    let deadline = tokio::time::Instant::now() + timeout;
    let visibility_ms = millis(visibility).max(1);
    let mut first = true;
    loop {
        bus.check_open()?;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        // Even a zero timeout looks once.
        if remaining < Duration::from_millis(1) && !std::mem::take(&mut first) {
            return Ok(None);
        }
        first = false;
        match wait(bus, &base, remaining, visibility_ms).await {
            Ok(Popped::Item(value)) => {
                if let Some(taken) = parse_taken(bus, &base, value).await {
                    return Ok(Some(taken));
                }
            }
            Ok(Popped::Missed) => {}
            Ok(Popped::TimedOut) => return Ok(None),
            Err(Error::Closed) => return Err(Error::Closed),
            Err(err) => {
                // Connection lost: retry on a new one until the deadline.
                tracing::debug!(%err, "blocking queue pop failed; retrying");
                let pause = Duration::from_millis(50)
                    .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                tokio::time::sleep(pause).await;
                if tokio::time::Instant::now() >= deadline {
                    return Ok(None);
                }
            }
        }
    }
}

/// Blocks on `BLMOVE` into this connection's processing list, then adopts the item.
/// `Ok(None)` when the server-side timeout passed with nothing there.
async fn wait(
    bus: &Arc<Shared>,
    base: &str,
    timeout: Duration,
    visibility_ms: u64,
) -> Result<Popped> {
    let mut blocking = bus.pool.take(base).await?;
    let _waiting = Waiting::enter(bus, base);
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
        .arg(visibility_ms);
    // If this future is dropped (the caller gave up) or fails before the pop
    // returns, the guard unblocks the pop on the server and returns anything it
    // moved. Should even that fail, the reaper does it.
    let mut abandon = Abandon {
        bus,
        client_id: blocking.client_id,
        base,
        processing: &processing,
        armed: true,
    };
    let mut closing = bus.closing.subscribe();
    let popped = tokio::select! {
        popped = tokio::time::timeout(timeout + grace, pipe.query_async::<(Option<Vec<u8>>, Value)>(&mut blocking.conn)) => popped,
        // Shutdown: the guard unblocks the pop and puts back what it moved.
        _ = closing.wait_for(|closing| *closing) => return Err(Error::Closed),
    };
    let adopted = match popped {
        Ok(Ok((None, _))) => {
            abandon.armed = false;
            bus.pool.give_back(blocking);
            return Ok(Popped::TimedOut);
        }
        Ok(Ok((Some(_), value))) => value,
        Ok(Err(err))
            if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            // The script cache was empty (first use, restart, SCRIPT FLUSH): the
            // pop ran; load the script and adopt now. Should this fail, the
            // reaper puts the item back from the processing list.
            abandon.armed = false;
            let adopted = tokio::time::timeout(
                grace,
                ADOPT
                    .key(base)
                    .arg(visibility_ms)
                    .invoke_async::<Value>(&mut blocking.conn),
            )
            .await;
            match adopted {
                Ok(Ok(value)) => value,
                Ok(Err(err)) => return Err(transport_error(err)),
                Err(_) => return Err(Error::transport("redis did not answer in time")),
            }
        }
        Ok(Err(err)) => return Err(transport_error(err)),
        Err(_) => return Err(Error::transport("redis did not end a blocking pop in time")),
    };
    abandon.armed = false;
    bus.pool.give_back(blocking);
    Ok(match adopted {
        // The reaper put the popped item back before it was adopted: wait again.
        Value::Nil | Value::Boolean(false) => Popped::Missed,
        value => Popped::Item(value),
    })
}

/// What one blocking wait gave.
enum Popped {
    /// The server-side timeout passed with nothing there.
    TimedOut,
    /// An item, adopted into the in-flight table.
    Item(Value),
    /// Something was popped but is back in the queue already.
    Missed,
}

/// Cleans up after a blocking pop whose reply will never be read.
struct Abandon<'a> {
    bus: &'a Shared,
    client_id: i64,
    base: &'a str,
    processing: &'a str,
    armed: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // In this order: once unblocked the pop cannot move anything more, then
        // whatever it moved already goes back to the head of the queue.
        let mut unblock = redis::cmd("CLIENT");
        unblock.arg("UNBLOCK").arg(self.client_id);
        let mut back = redis::cmd("LMOVE");
        back.arg(self.processing)
            .arg(self.base)
            .arg("LEFT")
            .arg("RIGHT");
        // One job: on a cluster both go to the node of the queue (and of the pop).
        let job = Job::Commands {
            key: self.base.to_owned().into(),
            cmds: Box::new([unblock, back]),
        };
        if !self.bus.writer.send_now(job) {
            tracing::debug!("could not clean up an abandoned pop now; the reaper will");
        }
    }
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

/// Turns a take's reply into an item. A malformed item is counted, logged and
/// removed (it could never be processed); `None` then, and the caller takes again.
async fn parse_taken(bus: &Arc<Shared>, base: &str, value: Value) -> Option<Taken> {
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
    let mut id = [0u8; 16];
    if item.len() >= 20 {
        id.copy_from_slice(&item[4..20]);
    }
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
            settle_later(bus, base, &id).await;
            None
        }
    }
}

/// Acknowledges through the ordered writer, without waiting for Redis.
async fn settle_later(bus: &Shared, base: &str, id: &[u8; 16]) {
    let job = Job::Commands {
        key: base.to_owned().into(),
        cmds: settle_commands(base, id).into(),
    };
    if let Err(err) = bus.writer.send(job).await {
        tracing::warn!(%err, "could not acknowledge a queue item; it will be delivered again");
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
