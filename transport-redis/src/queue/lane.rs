//! `get` without a script: each waiting `get` of a bus runs on a lane, a
//! connection of its own with a processing list of its own, and takes with
//! `BLMOVE` from the queue into that list, the one native command Redis needs
//! to hand an item out without ever holding it only in a reply.
//!
//! Keys of lane `<uid>:<n>` (bus `uid`, lane `n`) on queue `ns:q:{jobs}`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `ns:q:{jobs}:g:<uid>:<n>` | list | the item being handed out (newest left) |
//! | `ns:q:{jobs}:gs` | zset | lane name → until when it is registered (ms, Redis clock) |
//!
//! A lane's commands go one pipeline at a time on its connection, so when a
//! reply has been read, the list holds exactly the items that reply and the
//! earlier ones brought, oldest right. Each pipeline first settles what the
//! lane handed out before by count (`LTRIM`), after pushing back to the head of
//! the queue any item whose caller left, then pops: a consumer getting in a
//! loop costs Redis two native commands in one round trip per item, like a
//! bare `BRPOP`. An idle lane is settled after a millisecond.
//!
//! Nothing is lost: an item leaves the list only once its reply was read.
//! When a lane fails mid-pipeline (connection lost, no answer), what its list
//! holds is unknown, so the whole list goes back to the queue
//! ([`CLOSE_LANE_LUA`] through the writer, which waits out an outage): at
//! worst an item handed out comes again. A lane is registered in `:gs` for
//! `get_visibility` before it can hold an item and renewed at half of that;
//! one whose bus is gone lapses, and the reaper (any bus getting from the
//! queue, or `len`) returns its list, counting the return.

use super::scripts::{CLOSE_LANE_LUA, REGISTER_LANE_LUA};
use super::{job, Waiting};
use crate::connection::{transport_error, Blocking};
use crate::pubsub::decode;
use crate::Shared;
use busbar_core::{Envelope, Error, Name, Result};
use bytes::Bytes;
use redis::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// How long a lane's settled items wait for its next get to carry the trim.
const SETTLE_DELAY: Duration = Duration::from_millis(1);

/// Idle lanes kept per queue; more are closed when given back.
const MAX_IDLE: usize = 8;

/// A connection and processing list that one `get` at a time takes through.
pub(super) struct Lane {
    blocking: Blocking,
    /// `<uid>:<n>`, its member in `:gs`.
    name: String,
    /// `<base>:g:<name>`.
    list: String,
    /// Items at the right end of the list that were handed out or pushed back:
    /// the lane's next pipeline trims them.
    settled: usize,
    /// Elements whose caller left, oldest first: pushed back before the trim.
    returns: Vec<Bytes>,
    /// Until when (client clock) the lane is surely registered.
    registered_until: Option<Instant>,
}

/// A bus's lanes, per queue.
#[derive(Default)]
pub(super) struct Lanes {
    state: Mutex<State>,
    next: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Idle lanes per queue (base key).
    idle: HashMap<String, Vec<Lane>>,
    /// Whether a task settling idle lanes runs.
    settler: bool,
}

impl Lanes {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle lane of `base`, or a new one.
    async fn check_out(&self, bus: &Shared, base: &str) -> Result<Lane> {
        if let Some(lane) = self.lock().idle.get_mut(base).and_then(Vec::pop) {
            return Ok(lane);
        }
        let blocking = bus.pool.take(base).await?;
        let name = format!("{}:{}", bus.uid, self.next.fetch_add(1, Ordering::Relaxed));
        Ok(Lane {
            blocking,
            list: format!("{base}:g:{name}"),
            name,
            settled: 0,
            returns: Vec::new(),
            registered_until: None,
        })
    }

    /// Gives back a healthy lane; makes sure what it settled is trimmed soon.
    fn give_back(&self, bus: &Arc<Shared>, base: &str, lane: Lane) {
        let pending = lane.settled > 0;
        let mut state = self.lock();
        let idle = state.idle.entry(base.to_owned()).or_default();
        if idle.len() >= MAX_IDLE {
            drop(state);
            close_later(bus, base, lane);
            return;
        }
        idle.push(lane);
        if pending && !std::mem::replace(&mut state.settler, true) {
            tokio::spawn(settle_idle(bus.clone(), base.to_owned()));
        }
    }

    /// Takes the idle lanes that have something to settle (all idle lanes with
    /// `all`); `None` when none has, and the settler then stops.
    fn pending(&self, all: bool) -> Option<Vec<(String, Lane)>> {
        let mut state = self.lock();
        let mut out = Vec::new();
        for (base, lanes) in state.idle.iter_mut() {
            let mut i = 0;
            while i < lanes.len() {
                if all || lanes[i].settled > 0 {
                    out.push((base.clone(), lanes.swap_remove(i)));
                } else {
                    i += 1;
                }
            }
        }
        if out.is_empty() && !all {
            state.settler = false;
            return None;
        }
        Some(out)
    }
}

/// `get`: takes one item on a lane of this bus, waiting up to `timeout`.
pub(crate) async fn get(
    bus: &Arc<Shared>,
    queue: &Name,
    timeout: Duration,
) -> Result<Option<Envelope>> {
    let base = super::base_key(&bus.config.namespace, queue.as_str());
    let deadline = Instant::now() + timeout;
    let _waiting = Waiting::enter(bus, &base);
    loop {
        bus.check_open()?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        // A lane is registered for `get_visibility` and renewed at half of it,
        // at its next pipeline: a pop blocking at most a quarter of it ends
        // with a quarter to spare, whatever the clocks' error.
        let wait = remaining.min(bus.config.get_visibility / 4);
        let outcome = match bus.queues.lanes.check_out(bus, &base).await {
            Ok(lane) => take_on(bus, &base, lane, wait).await,
            Err(err) => Err(err),
        };
        match outcome {
            Ok(Some(element)) => match decode(&element, bus.config.max_envelope, &bus.stats) {
                Some(envelope) => return Ok(Some(envelope)),
                // Malformed (counted and logged): settled like any other, so dropped.
                None => continue,
            },
            Ok(None) if wait < remaining => continue,
            Ok(None) => return Ok(None),
            Err(Error::Closed) => return Err(Error::Closed),
            Err(err) => {
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

/// What a lane's pipeline gives back with the lane.
type Reply = (Lane, redis::RedisResult<Vec<Value>>);

/// A lane's pipeline in progress, owning the lane.
type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Runs one pipeline on `lane`: settles, then pops with the server-side
/// timeout. The element taken (now settled on the lane) or `None`.
async fn take_on(
    bus: &Arc<Shared>,
    base: &str,
    mut lane: Lane,
    timeout: Duration,
) -> Result<Option<Bytes>> {
    let mut pipe = settle_pipeline(bus, base, &mut lane);
    pipe.cmd("BLMOVE")
        .arg(base)
        .arg(&lane.list)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(format!("{:.3}", timeout.as_secs_f64().max(0.001)));
    let client_id = lane.blocking.client_id;
    let pending: Pending = Box::pin(async move {
        let reply = pipe
            .query_async::<Vec<Value>>(&mut lane.blocking.conn)
            .await;
        (lane, reply)
    });
    let mut abandoned = Abandoned {
        bus,
        base,
        client_id,
        pending: Some(pending),
    };
    let grace = bus.config.response_timeout;
    let mut closing = bus.closing.subscribe();
    let limit = tokio::time::sleep(timeout + grace);
    tokio::pin!(limit);
    let mut unblocking = false;
    let retry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry);
    let reply = loop {
        let Some(pending) = abandoned.pending.as_mut() else {
            unreachable!("set above, taken only here")
        };
        tokio::select! {
            reply = pending => break Some(reply),
            () = &mut limit => break None,
            _ = closing.wait_for(|closing| *closing), if !unblocking => {
                unblocking = true;
                limit.as_mut().reset(Instant::now() + grace);
            }
            () = &mut retry, if unblocking => {
                if !super::take::unblock(bus, base, client_id) {
                    break None;
                }
                retry.as_mut().reset(Instant::now() + super::take::UNBLOCK_RETRY);
            }
        }
    };
    let pending = abandoned.pending.take();
    let Some((lane, reply)) = reply else {
        // No answer in time: the lane is dropped with its connection, its
        // state unknown; its registration lapses and the reaper returns its list.
        drop(pending);
        return Err(Error::transport("redis did not end a blocking pop in time"));
    };
    let closing = *bus.closing.borrow();
    let popped = finish(bus, base, lane, reply, unblocking, closing)?;
    if closing {
        return Err(Error::Closed);
    }
    Ok(popped)
}

/// A pipeline that pushes back `lane`'s returns, trims what it settled, and
/// renews its registration when due; the lane's counts start over.
fn settle_pipeline(bus: &Shared, base: &str, lane: &mut Lane) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    let now = Instant::now();
    if lane.registered_until.is_none_or(|until| until <= now) {
        let ttl = busbar_core::ceil_millis(bus.config.get_visibility).max(1);
        match bus.queues.clock.now(base) {
            Some(redis_now) => {
                pipe.cmd("ZADD")
                    .arg(format!("{base}:gs"))
                    .arg(redis_now + ttl)
                    .arg(&lane.name)
                    .ignore();
            }
            None => {
                pipe.cmd("EVAL")
                    .arg(REGISTER_LANE_LUA)
                    .arg(1)
                    .arg(base)
                    .arg(ttl)
                    .arg(&lane.name)
                    .ignore();
            }
        }
        lane.registered_until = Some(now + bus.config.get_visibility / 2);
    }
    if !lane.returns.is_empty() {
        let mut push = redis::cmd("RPUSH");
        push.arg(base);
        // The last pushed is taken first: the oldest goes last.
        for element in lane.returns.drain(..).rev() {
            push.arg(&element[..]);
        }
        pipe.add_command(push).ignore();
    }
    if lane.settled > 0 {
        pipe.cmd("LTRIM")
            .arg(&lane.list)
            .arg(0)
            .arg(-(lane.settled as i64) - 1)
            .ignore();
        lane.settled = 0;
    }
    pipe
}

/// Reads a lane pipeline's reply: gives back a healthy lane (the element it
/// brought counted as settled, or pushed back when the bus is `closing`), or
/// closes a failed one.
fn finish(
    bus: &Arc<Shared>,
    base: &str,
    mut lane: Lane,
    reply: redis::RedisResult<Vec<Value>>,
    unblocked: bool,
    closing: bool,
) -> Result<Option<Bytes>> {
    let popped = match reply {
        Ok(mut values) => match values.pop() {
            Some(Value::BulkString(element)) => Some(Bytes::from(element)),
            Some(Value::Nil) | None => None,
            Some(other) => {
                close_later(bus, base, lane);
                return Err(Error::transport(format!(
                    "unexpected reply to a queue pop: {other:?}"
                )));
            }
        },
        Err(err) => {
            close_later(bus, base, lane);
            return Err(transport_error(err));
        }
    };
    if popped.is_some() {
        lane.settled += 1;
    }
    let popped = match popped {
        // Back at close, with the lane's other settlements, in one script.
        Some(element) if closing => {
            lane.returns.push(element);
            None
        }
        popped => popped,
    };
    if unblocked {
        // An unblock may still be on its way: it must not end the lane's next
        // pop, so the lane is not reused.
        close_later(bus, base, lane);
    } else {
        bus.queues.lanes.give_back(bus, base, lane);
    }
    Ok(popped)
}

/// A lane pipeline whose caller left before its reply: a task reads the reply
/// (ending the pop with `CLIENT UNBLOCK`) and pushes back what it brought.
struct Abandoned<'a> {
    bus: &'a Arc<Shared>,
    base: &'a str,
    client_id: i64,
    pending: Option<Pending>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("a get was abandoned without a runtime; its lane comes back when its registration lapses");
            return;
        };
        let (bus, base, client_id) = (self.bus.clone(), self.base.to_owned(), self.client_id);
        runtime.spawn(async move {
            let _waiting = Waiting::enter(&bus, &base);
            tokio::pin!(pending);
            let grace = tokio::time::sleep(bus.config.response_timeout);
            tokio::pin!(grace);
            let retry = tokio::time::sleep(Duration::ZERO);
            tokio::pin!(retry);
            let (mut lane, reply) = loop {
                tokio::select! {
                    reply = &mut pending => break reply,
                    () = &mut grace => return,
                    () = &mut retry => {
                        if !super::take::unblock(&bus, &base, client_id) {
                            return;
                        }
                        retry.as_mut().reset(Instant::now() + super::take::UNBLOCK_RETRY);
                    }
                }
            };
            match reply {
                Ok(mut values) => {
                    if let Some(Value::BulkString(element)) = values.pop() {
                        lane.settled += 1;
                        lane.returns.push(element.into());
                    }
                    // Unblocked: not reused; closing pushes back and trims.
                    close_later(&bus, &base, lane);
                }
                Err(_) => close_later(&bus, &base, lane),
            }
        });
    }
}

/// Closes a lane through the writer (which waits out an outage): pushes back
/// its returns, trims what it settled, returns the rest and forgets it.
/// A failed lane's counts mean nothing, so its whole list comes back.
fn close_later(bus: &Shared, base: &str, lane: Lane) {
    let cmd = close_command(base, &lane);
    if !bus.writer.send_now(job(base, [cmd])) {
        tracing::warn!(
            "could not close a queue lane; its items come back when its registration lapses"
        );
    }
}

/// The `EVAL` closing `lane` (see [`CLOSE_LANE_LUA`]).
fn close_command(base: &str, lane: &Lane) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(CLOSE_LANE_LUA.as_str())
        .arg(2)
        .arg(base)
        .arg(&lane.list)
        .arg(&lane.name)
        .arg(lane.settled);
    for element in &lane.returns {
        cmd.arg(&element[..]);
    }
    cmd
}

/// Settles idle lanes whose next get did not come within [`SETTLE_DELAY`],
/// each on its own connection, until none has anything left.
async fn settle_idle(bus: Arc<Shared>, base: String) {
    // Shutdown waits for this task; closing lanes is then shutdown's job.
    let _waiting = Waiting::enter(&bus, &base);
    let mut closing = bus.closing.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(SETTLE_DELAY) => {}
            _ = closing.wait_for(|closing| *closing) => {
                bus.queues.lanes.lock().settler = false;
                return;
            }
        }
        let Some(pending) = bus.queues.lanes.pending(false) else {
            return;
        };
        for (base, mut lane) in pending {
            let pipe = settle_pipeline(&bus, &base, &mut lane);
            let reply = tokio::time::timeout(
                bus.config.response_timeout,
                pipe.query_async::<Value>(&mut lane.blocking.conn),
            )
            .await;
            match reply {
                Ok(Ok(_)) => bus.queues.lanes.give_back(&bus, &base, lane),
                // The trim may or may not have run: the lane's list goes back.
                _ => close_later(&bus, &base, lane),
            }
        }
    }
}

/// At shutdown: closes every idle lane, waiting for Redis (lanes still in use
/// then are left to lapse).
pub(crate) async fn close_all(bus: &Shared) {
    let Some(lanes) = bus.queues.lanes.pending(true) else {
        return;
    };
    for (base, mut lane) in lanes {
        let cmd = close_command(&base, &lane);
        let closed = tokio::time::timeout(
            bus.config.response_timeout,
            cmd.query_async::<Value>(&mut lane.blocking.conn),
        )
        .await;
        if !matches!(closed, Ok(Ok(_))) {
            tracing::warn!("shutdown: could not close a queue lane; its items come back when its registration lapses");
        }
    }
}
