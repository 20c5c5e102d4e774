//! Work queues that cannot lose an item: Redis lists, plus an in-flight table
//! with a visibility timeout for `receive` and a processing list per lane for
//! `get`.
//!
//! Keys of queue `jobs` in namespace `ns` (the `{jobs}` hash tag keeps them on one
//! cluster slot):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `ns:q:{jobs}` | list | items waiting (`LPUSH` in, taken from the right: FIFO) |
//! | `ns:q:{jobs}:p` | list | items a pop just moved, for the next command to adopt |
//! | `ns:q:{jobs}:fly` | hash | id → item, for items received and not yet settled |
//! | `ns:q:{jobs}:vis` | zset | id → when the item comes back (ms, Redis clock) |
//! | `ns:q:{jobs}:g:<bus>:<n>` | list | the item a `get` lane is handing out |
//! | `ns:q:{jobs}:gs` | zset | `get` lane → until when it is registered |
//!
//! An item is stored as its encoded envelope; one that came back (reaped or
//! nacked) carries the count in front, `"\x01" <count> "\x00" <envelope>`, so its
//! attempt number travels with it and no table of attempts is read or cleaned
//! per item.
//!
//! **`get`** runs no script: each concurrent get of a bus takes on a lane of
//! its own, one `BLMOVE` from the queue into the lane's list, with the `LTRIM`
//! settling the lane's previous item in the same round trip (see the `lane` module).
//! Redis runs the move before the reply leaves, so an item is never only in a
//! reply: a reply lost with its connection sends the lane's list back to the
//! queue, and a bus that dies leaves a lane whose registration lapses, which
//! the reaper returns. A consumer getting in a loop costs Redis two native
//! commands per item in one round trip (`INFO commandstats`: 5.9 µs of command
//! time per item, against 15.5 µs for the script it replaced).
//!
//! **`receive`** first runs one script, `TAKE`, on the bus's shared command
//! connection: it pops the oldest item and parks it in the in-flight table
//! with its deadline, in one step, and returns it. Being an ordinary command,
//! it is pipelined with everything else the bus sends. The deadline is
//! computed by the client from the Redis clock the reaper last read (`TIME`
//! inside the script cost as much as a quarter of it).
//!
//! Only when the queue is empty does a receive wait, in one pipeline on a
//! connection of its own (blocking pops never share a connection): `BLMOVE`
//! from the queue into `:p` with the server-side timeout, then `ADOPT`, which
//! moves one item from `:p` into the in-flight table the same way. The server
//! ends the wait, so a receive (or get) that timed out cannot swallow an item
//! put after it; an item that lands in `:p` and is never adopted (a connection
//! lost between the two) is put back by the reaper.
//!
//! A caller that gives up (its future dropped) never takes an item with it. A
//! `TAKE` in flight is handed to a task that reads its reply; a blocking pop
//! (a lane's, or a receive's in a task of its own that reports through a
//! oneshot) is ended at once with `CLIENT UNBLOCK`. Whatever either brings for
//! a caller that has left goes straight back to the head of the queue, its
//! attempt not counted, so nothing waits for a visibility timeout.
//!
//! `receive` hands out a delivery to `ack` (delete) or `nack` (back to the
//! head of the queue). Unsettled items come back after their visibility
//! timeout: every bus with a consumer taking runs the reaper every
//! `reap_interval`, and `len` runs it too. Delivery is at least once: an item
//! whose consumer died or was too slow may be processed twice.
//!
//! An element that is not a valid envelope (pushed by another program) is
//! moved to `_dead.<queue>` as the core's `dead_letter::malformed` wraps it,
//! counted in `rejected` and `dead_lettered`, and logged at warn under this
//! module; then `receive`
//! removes it from the in-flight table by id through the ordered writer, and
//! `get` settles it on its lane like any other. Should Redis stay unreachable
//! past the outage bound, `receive` leaves it in flight to come back, and `get`
//! (whose lane has settled it already) drops it, logged at error.

mod ack;
mod element;
mod lane;
mod pop;
mod scripts;
mod take;

use crate::command::{command, Joined};
use crate::connection::Job;
use crate::outage::Outcome;
use crate::Shared;
use ack::{RedisAcker, RedisClock};
use busbar_core::transport::RawDelivery;
use busbar_core::{dead_letter, wire, Envelope, Name, Result, Stats};
use bytes::Bytes;
use scripts::{NACK, REAP};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use take::take;

/// The base key of `queue`, as a command argument.
pub(crate) fn queue_key<'a>(namespace: &'a str, queue: &'a str) -> Joined<'a, 4> {
    Joined([namespace, ":q:{", queue, "}"])
}

/// The base key of `queue`.
pub(crate) fn base_key(namespace: &str, queue: &str) -> String {
    queue_key(namespace, queue).string()
}

/// The envelope in `bytes`, an element of the queue at `base` (its return
/// count removed). Anything that is not a valid envelope is moved to
/// `_dead.<queue>`, wrapped as the core's [`dead_letter::malformed`] says,
/// counted in `rejected` (and, once moved, `dead_lettered`) and logged;
/// `Ok(None)` then. An `Err` means it could
/// not be moved (Redis unreachable past the outage bound): the caller leaves
/// it where it is if it can.
pub(crate) async fn decode_or_bury(
    bus: &Shared,
    base: &str,
    bytes: Bytes,
) -> Result<Option<Envelope>> {
    let err = match wire::decode(&bytes, bus.config.max_envelope) {
        Ok(envelope) => return Ok(Some(envelope)),
        Err(err) => err,
    };
    Stats::incr(&bus.stats.rejected);
    let queue = queue_of_base(&bus.config.namespace, base)?;
    let reason = format!("not a valid envelope: {err}");
    let dead = dead_letter::malformed(bytes, &queue, &reason, bus.config.max_envelope)?;
    let moved = put(bus, dead).await;
    match &moved {
        Ok(()) => {
            Stats::incr(&bus.stats.dead_lettered);
            tracing::warn!(%queue, %err, "a queue item that is not a valid envelope was moved to _dead.{queue}")
        }
        Err(put_err) => {
            tracing::warn!(%queue, %err, %put_err, "a queue item that is not a valid envelope could not be moved to _dead.{queue}")
        }
    }
    moved.map(|()| None)
}

/// The queue whose base key is `base` (`<namespace>:q:{<queue>}`).
fn queue_of_base(namespace: &str, base: &str) -> Result<Name> {
    let name = base
        .strip_prefix(namespace)
        .and_then(|rest| rest.strip_prefix(":q:{"))
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or(base);
    Name::new(name)
}

/// How far from the head of the queue a put sent again looks for its item.
const REPUT_LOOKS: usize = 1024;

/// Sent instead of `LPUSH` when a put is sent again: pushes the item unless
/// it is among the newest [`REPUT_LOOKS`] (every envelope is unique by its id).
const REPUT_LUA: &str = "if redis.call('LPOS', KEYS[1], ARGV[1], 'MAXLEN', ARGV[2]) then \
     return 0 end return redis.call('LPUSH', KEYS[1], ARGV[1])";

/// `LPUSH`es the item; returns once Redis stored it. Through an outage the
/// push is sent again on the next connection, for up to `outage_wait`. Should
/// the lost connection have taken only the reply, the second push finds the
/// item near the head of the queue and stores nothing; only an item already
/// taken, or buried under many newer ones meanwhile, is stored twice.
pub(crate) async fn put(bus: &Shared, item: Envelope) -> Result<()> {
    let bytes = wire::encode(&item)?;
    let base = queue_key(&bus.config.namespace, item.subject.as_str());
    let mut push = command("LPUSH", 2, base.len() + bytes.len());
    push.arg(base).arg(&bytes[..]);
    let mut again = redis::cmd("EVAL");
    again
        .arg(REPUT_LUA)
        .arg(1)
        .arg(base)
        .arg(&bytes[..])
        .arg(REPUT_LOOKS);
    drop(item);
    let outcome = Outcome {
        not_done: "the item was not stored",
        maybe_done: "the item may have been stored (a reply was lost with the connection)",
    };
    let mut first = true;
    bus.link
        .through_outage(bus.config.outage_wait, outcome, |mut c| {
            let cmd = if std::mem::take(&mut first) {
                &push
            } else {
                &again
            };
            async move { cmd.exec_async(&mut c).await }
        })
        .await
}

/// Items waiting (reaping expired in-flight items first, so they count, and
/// putting back what this bus took ahead).
pub(crate) async fn len(bus: &Arc<Shared>, queue: &Name) -> Result<usize> {
    let base = base_key(&bus.config.namespace, queue.as_str());
    lane::put_back_ahead(bus, &base).await;
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

pub(crate) use lane::close_all as close_lanes;
pub(crate) use lane::get;

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

/// A bus's queue bookkeeping.
#[derive(Default)]
pub(crate) struct Local {
    clock: RedisClock,
    lanes: lane::Lanes,
}

/// Marks a queue as waited on by this bus, so the periodic reaper visits it.
struct Waiting<'a> {
    bus: &'a Shared,
    base: &'a str,
}

impl<'a> Waiting<'a> {
    fn enter(bus: &'a Shared, base: &'a str) -> Self {
        // The key is copied only when the queue is not waited on yet.
        match bus.waiting.get_mut(base) {
            Some(mut count) => *count += 1,
            None => *bus.waiting.entry(base.to_owned()).or_insert(0) += 1,
        }
        Waiting { bus, base }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.bus.waiting.remove_if_mut(self.base, |_, count| {
            *count -= 1;
            *count == 0
        });
        self.bus.waiting_changed.notify_waiters();
    }
}

/// Runs `finish` in a task of its own, for work a caller that left must not
/// leave undone (reading a reply, to put back the item it brings); shutdown
/// waits for it. Without a runtime (a future dropped as its runtime shuts
/// down) it cannot run, and `otherwise` says what becomes of the item.
fn finish_in_task<F>(
    bus: &Arc<Shared>,
    base: &str,
    otherwise: &'static str,
    finish: impl FnOnce(Arc<Shared>, String) -> F,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!(
            otherwise,
            "a queue operation was abandoned without a runtime"
        );
        return;
    };
    let work = finish(bus.clone(), base.to_owned());
    let (bus, base) = (bus.clone(), base.to_owned());
    runtime.spawn(async move {
        let _waiting = Waiting::enter(&bus, &base);
        work.await;
    });
}

/// A writer job for the node of queue `base` (the one its pops block on).
fn job(base: &str, cmds: impl Into<Box<[redis::Cmd]>>) -> Job {
    Job::Commands {
        key: base.to_owned().into(),
        cmds: cmds.into(),
    }
}

/// Puts an in-flight item back at the head of its queue, riding out an
/// outage like `put` (a second run finds the item gone from flight and does
/// nothing).
pub(crate) async fn nack(bus: &Shared, base: &str, id: &[u8; 16]) -> Result<()> {
    let outcome = Outcome {
        not_done: "the item was not put back: it comes back after its visibility timeout",
        maybe_done: "the item may not have been put back: if not, it comes back after its visibility timeout",
    };
    bus.link
        .through_outage(bus.config.outage_wait, outcome, |mut c| async move {
            NACK.key(base)
                .arg(&id[..])
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_queue_key_keeps_its_keys_in_one_slot() {
        assert_eq!(super::base_key("ns", "jobs.resize"), "ns:q:{jobs.resize}");
    }

    #[test]
    fn a_base_key_names_its_queue() {
        let base = super::base_key("n:s", "jobs.resize");
        let queue = super::queue_of_base("n:s", &base).unwrap();
        assert_eq!(queue.as_str(), "jobs.resize");
    }
}
