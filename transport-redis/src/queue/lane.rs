//! `get` without a script: each waiting `get` of a bus runs on a lane, a
//! processing list of its own, and takes with `BLMOVE` from the queue into
//! that list (on a pooled connection for blocking pops), the one native
//! command Redis needs to hand an item out without ever holding it only in a
//! reply.
//!
//! Keys of lane `<uid>:<n>` (bus `uid`, lane `n`) on queue `ns:q:{jobs}`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `ns:q:{jobs}:g:<uid>:<n>` | list | the items being handed out (newest left) |
//! | `ns:q:{jobs}:gs` | zset | lane name → until when it is registered (ms, Redis clock) |
//!
//! A lane's pipelines run one at a time, each read to its end before the
//! next is sent (on whichever connection), so when a reply has been read, the
//! list holds exactly the items that reply and the earlier ones brought,
//! oldest right. Each pipeline first settles what the lane handed out before
//! by count (`LTRIM`), after pushing back to the head of the queue any item
//! whose caller left, then pops: a consumer getting in a loop costs Redis two
//! native commands in one round trip per item, like a
//! bare `BRPOP`. An idle lane is settled after a millisecond.
//!
//! A bus whose gets of a queue follow each other quickly takes ahead: the
//! pipeline adds `LMOVE`s behind the pop, as many as its gets would use up in
//! half of [`LINGER`] (at most `get_batch`), and the next gets hand those
//! items out with no round trip, so a consumer draining a backlog pays one
//! round trip per batch. A first get, or a bus whose gets are slow, takes one.
//! Items taken ahead are in the lane's list like any other; those no get asks
//! for within [`LINGER`] go back to the head of the queue, in order and their
//! attempts not counted, so a bus that slows down or stops does not sit on
//! items another consumer could take. `len` puts back the bus's own first.
//!
//! Nothing is lost: an item leaves the list only once its reply was read.
//! When a lane fails mid-pipeline (connection lost, no answer), what its list
//! holds is unknown, so the whole list goes back to the queue
//! ([`CLOSE_LANE_LUA`], from a task that retries through an outage until Redis
//! confirms): at worst an item handed out comes again. A lane is registered in `:gs` for
//! `get_visibility` before it can hold an item and renewed at half of that;
//! one whose bus is gone lapses, and the reaper (any bus getting from the
//! queue, or `len`) returns its list, counting the return.

use super::element::Element;
use super::pop::read_pop;
use super::scripts::{CLOSE_LANE_LUA, REGISTER_LANE_LUA};
use super::{decode_or_bury, finish_in_task, Waiting};
use crate::connection::{transport_error, Blocking};
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

/// How long an item taken ahead waits for a `get` before it goes back.
pub(super) const LINGER: Duration = Duration::from_millis(5);

/// A processing list that one `get` at a time takes through. Its pipelines
/// run one after the other, each on whatever connection is free: a pooled
/// blocking one to take, the bus's shared one to settle or close.
pub(super) struct Lane {
    /// `<uid>:<n>`, its member in `:gs`.
    name: String,
    /// `<base>:g:<name>`.
    list: String,
    /// Items at the right end of the list that were handed out or pushed back:
    /// the lane's next pipeline trims them.
    settled: usize,
    /// Elements whose caller left, oldest first: pushed back before the trim.
    returns: Vec<Bytes>,
    /// Elements taken ahead, oldest first, and when they were taken: next in
    /// the list after the settled ones.
    ahead: std::collections::VecDeque<Bytes>,
    ahead_since: Option<Instant>,
    /// Until when (client clock) the lane is surely registered.
    registered_until: Option<Instant>,
    /// Whether items it took ahead are among its returns (counted in
    /// `returning` until they are back).
    giving_back: bool,
}

/// A bus's lanes, per queue.
#[derive(Default)]
pub(super) struct Lanes {
    state: Mutex<State>,
    next: AtomicU64,
    /// Notified when items taken ahead are back in their queue.
    returned: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Idle lanes per queue (base key).
    idle: HashMap<String, Vec<Lane>>,
    /// Per queue: how this bus's gets come, and what its last take found.
    pace: HashMap<String, Pace>,
    /// Whether a task settling idle lanes runs.
    settler: bool,
    /// Per queue: lanes whose items taken ahead are on their way back. A take
    /// waits for them, or it could pop newer items before they are back at
    /// the head, out of order for a single consumer.
    returning: HashMap<String, usize>,
}

/// How a bus's gets of one queue come, and what its last take found.
#[derive(Default)]
struct Pace {
    /// The time from one get's end to the next one's start, smoothed.
    gap: Option<Duration>,
    /// When the last get ended.
    end: Option<Instant>,
    /// Items the last take asked for, and got.
    asked: usize,
    got: usize,
}

impl Pace {
    /// How many items the next take asks for: what the gets use up in half of
    /// [`LINGER`], and no more than the queue seems to hold (twice what the
    /// last take got when it got all it asked for, else what it got), so a
    /// bus that keeps up with its producers does not ask Redis for items that
    /// are not there.
    fn want(&self, max: usize) -> usize {
        let supply = if self.got >= self.asked {
            self.asked.saturating_mul(2)
        } else {
            self.got
        };
        batch(self.gap, max).min(supply.max(1))
    }
}

impl Lane {
    /// Whether the lane has something to send: settlements, or items taken
    /// ahead (which go back after [`LINGER`]).
    fn pending(&self) -> bool {
        self.settled > 0 || !self.ahead.is_empty()
    }

    /// Puts the items taken ahead with the returns (settled: they are pushed
    /// back, then trimmed).
    fn give_up_ahead(&mut self) {
        self.giving_back |= !self.ahead.is_empty();
        self.settled += self.ahead.len();
        self.returns.extend(self.ahead.drain(..));
        self.ahead_since = None;
    }
}

/// What a `get` does first.
enum Next {
    /// Hands out an item taken ahead.
    Ready(Bytes),
    /// Takes this many items at most.
    Take(usize),
}

impl Lanes {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle lane of `base`, or a new one.
    fn check_out(&self, bus: &Shared, base: &str) -> Lane {
        // Not one holding items taken ahead: what it takes would sit in its
        // list beyond them, and trimming by count would cut the wrong ones.
        let idle = self.lock().idle.get_mut(base).and_then(|lanes| {
            let free = lanes.iter().rposition(|lane| lane.ahead.is_empty())?;
            Some(lanes.swap_remove(free))
        });
        if let Some(lane) = idle {
            return lane;
        }
        let name = format!("{}:{}", bus.uid, self.next.fetch_add(1, Ordering::Relaxed));
        Lane {
            list: format!("{base}:g:{name}"),
            name,
            settled: 0,
            returns: Vec::new(),
            ahead: Default::default(),
            ahead_since: None,
            registered_until: None,
            giving_back: false,
        }
    }

    /// A `get` of `base` starts: an item taken ahead (settled on its lane at
    /// once), or how many to take.
    fn start(&self, base: &str, max: usize) -> Next {
        let now = Instant::now();
        let mut state = self.lock();
        let want = match state.pace.get_mut(base) {
            Some(pace) => {
                if let Some(end) = pace.end {
                    let gap = now.saturating_duration_since(end);
                    pace.gap = Some(pace.gap.map_or(gap, |pace| (pace * 3 + gap) / 4));
                }
                pace.want(max)
            }
            None => 1,
        };
        if let Some(lane) = state
            .idle
            .get_mut(base)
            .and_then(|lanes| lanes.iter_mut().find(|lane| !lane.ahead.is_empty()))
        {
            if let Some(element) = lane.ahead.pop_front() {
                lane.settled += 1;
                if lane.ahead.is_empty() {
                    lane.ahead_since = None;
                }
                return Next::Ready(element);
            }
        }
        Next::Take(want)
    }

    /// A `get` of `base` ended.
    fn end(&self, base: &str) {
        let now = Some(Instant::now());
        let mut state = self.lock();
        match state.pace.get_mut(base) {
            Some(pace) => pace.end = now,
            None => {
                let pace = Pace {
                    end: now,
                    ..Pace::default()
                };
                state.pace.insert(base.to_owned(), pace);
            }
        }
    }

    /// A take of `base` asked for `asked` items and got `got`.
    fn took(&self, base: &str, asked: usize, got: usize) {
        if let Some(pace) = self.lock().pace.get_mut(base) {
            (pace.asked, pace.got) = (asked, got);
        }
    }

    /// Gives back a healthy lane; makes sure what it settled is trimmed, and
    /// what it took ahead handed out or put back, soon.
    fn give_back(&self, bus: &Arc<Shared>, base: &str, lane: Lane) {
        let pending = lane.pending();
        let mut state = self.lock();
        if !state.idle.contains_key(base) {
            state.idle.insert(base.to_owned(), Vec::new());
        }
        let Some(idle) = state.idle.get_mut(base) else {
            unreachable!("inserted above")
        };
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

    /// Takes the idle lanes that have something to settle, their items taken
    /// ahead before `before` given up (all idle lanes, everything given up,
    /// with `None`); `None` when no lane has anything pending, and the settler
    /// then stops. Lanes whose items taken ahead are still fresh stay.
    fn pending(&self, before: Option<Instant>) -> Option<Vec<(String, Lane)>> {
        let mut state = self.lock();
        let mut out = Vec::new();
        let mut waiting = false;
        let State {
            idle, returning, ..
        } = &mut *state;
        for (base, lanes) in idle.iter_mut() {
            let mut i = 0;
            while i < lanes.len() {
                let lane = &mut lanes[i];
                let stale = match (before, lane.ahead_since) {
                    (None, _) => true,
                    (Some(before), Some(since)) => since <= before,
                    (Some(_), None) => false,
                };
                if stale && !lane.ahead.is_empty() {
                    lane.give_up_ahead();
                    *returning.entry(base.clone()).or_default() += 1;
                }
                if before.is_none() || (lane.settled > 0 && lane.ahead.is_empty()) {
                    out.push((base.clone(), lanes.swap_remove(i)));
                } else {
                    waiting |= lane.pending();
                    i += 1;
                }
            }
        }
        if out.is_empty() && !waiting && before.is_some() {
            state.settler = false;
            return None;
        }
        Some(out)
    }

    /// Takes the idle lanes of `base` holding items taken ahead, those given up.
    fn ahead_of(&self, base: &str) -> Vec<Lane> {
        let mut state = self.lock();
        let Some(lanes) = state.idle.get_mut(base) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i < lanes.len() {
            if lanes[i].ahead.is_empty() {
                i += 1;
            } else {
                let mut lane = lanes.swap_remove(i);
                lane.give_up_ahead();
                out.push(lane);
            }
        }
        if !out.is_empty() {
            *state.returning.entry(base.to_owned()).or_default() += out.len();
        }
        out
    }

    /// Items `lane` took ahead are back in queue `base` (or left to its close).
    fn back(&self, base: &str, lane: &mut Lane) {
        if !std::mem::take(&mut lane.giving_back) {
            return;
        }
        if let Some(count) = self.lock().returning.get_mut(base) {
            *count = count.saturating_sub(1);
        }
        self.returned.notify_waiters();
    }

    /// Waits (until `deadline` at most) for the items this bus took ahead from
    /// `base` and gave up to be back at the head of the queue.
    async fn wait_returned(&self, base: &str, deadline: Instant) {
        let returning = |lanes: &Self| lanes.lock().returning.get(base).is_some_and(|n| *n > 0);
        while returning(self) {
            let notified = self.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !returning(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// `get`: takes one item on a lane of this bus, waiting up to `timeout`.
pub(crate) async fn get(
    bus: &Arc<Shared>,
    queue: &Name,
    timeout: Duration,
) -> Result<Option<Envelope>> {
    let base = super::base_key(&bus.config.namespace, queue.as_str());
    let got = get_from(bus, &base, timeout).await;
    bus.queues.lanes.end(&base);
    got
}

/// [`get`] of the queue at `base`.
async fn get_from(bus: &Arc<Shared>, base: &str, timeout: Duration) -> Result<Option<Envelope>> {
    let deadline = Instant::now() + timeout;
    let _waiting = Waiting::enter(bus, base);
    let mut want = None;
    loop {
        bus.check_open()?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        // A lane is registered for `get_visibility` and renewed at half of it,
        // at its next pipeline: a pop blocking at most a quarter of it ends
        // with a quarter to spare, whatever the clocks' error.
        let wait = remaining.min(bus.config.get_visibility / 4);
        let want = match want {
            Some(want) => want,
            None => match bus.queues.lanes.start(base, bus.config.get_batch) {
                Next::Ready(element) => match decode_element(bus, base, element).await {
                    Some(envelope) => return Ok(Some(envelope)),
                    None => continue,
                },
                Next::Take(n) => *want.insert(n),
            },
        };
        // The connection first: a lane, once checked out, is not left behind
        // by a caller that gives up while a connection opens.
        bus.queues.lanes.wait_returned(base, deadline).await;
        let outcome = match bus.pool.take(base).await {
            Ok(blocking) => {
                let lane = bus.queues.lanes.check_out(bus, base);
                take_on(bus, base, lane, blocking, wait, want).await
            }
            Err(err) => Err(err),
        };
        match outcome {
            Ok(Some(element)) => match decode_element(bus, base, element).await {
                Some(envelope) => return Ok(Some(envelope)),
                // Not an envelope: moved to its dead-letter queue, and settled.
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

/// What a lane's pipeline gives back with the lane and its connection.
type Reply = (Lane, Blocking, redis::RedisResult<Vec<Value>>);

/// A lane's pipeline in progress, owning the lane.
type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// The envelope in a queue element (one that came back carries its count in
/// front: see [`Element`]); `None` when it is not a valid envelope, which is
/// moved to `_dead.<queue>` (see [`decode_or_bury`]). The element is settled
/// on its lane already: should the move fail too, it is dropped, said at error.
async fn decode_element(bus: &Shared, base: &str, element: Bytes) -> Option<Envelope> {
    let element = Element::parse(element);
    match decode_or_bury(bus, base, element.envelope).await {
        Ok(envelope) => envelope,
        Err(err) => {
            tracing::error!(target: "busbar_redis::queue", %err, "a queue item that is not a valid envelope was dropped: it could not be moved to its dead-letter queue");
            None
        }
    }
}

/// The most items one lane pipeline takes.
const MAX_BATCH: usize = 256;

/// Runs one pipeline on `lane`: settles, then pops with the server-side
/// timeout, and takes up to `want - 1` more ahead when there are. The element
/// taken (now settled on the lane) or `None`.
async fn take_on(
    bus: &Arc<Shared>,
    base: &str,
    mut lane: Lane,
    mut blocking: Blocking,
    timeout: Duration,
    want: usize,
) -> Result<Option<Bytes>> {
    let want = want.clamp(1, MAX_BATCH);
    let mut pipe = settle_pipeline(bus, base, &mut lane, want);
    let settling = pipe.len();
    let keys = base.len() + lane.list.len();
    let mut pop = crate::command::command("BLMOVE", 5, keys + 20);
    // Whole milliseconds, the server's resolution.
    let millis = busbar_core::ceil_millis(timeout).max(1);
    pop.arg(base)
        .arg(&lane.list)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(millis as f64 / 1000.0);
    pipe.add_command(pop);
    // Run once the pop returns, on the same connection: they find the queue as
    // the pop left it.
    for _ in 1..want {
        let mut more = crate::command::command("LMOVE", 4, keys + 9);
        more.arg(base).arg(&lane.list).arg("RIGHT").arg("LEFT");
        pipe.add_command(more);
    }
    let client_id = blocking.client_id;
    let pending: Pending = Box::pin(async move {
        let reply = pipe
            .query_async::<Value>(&mut blocking.conn)
            .await
            .and_then(|reply| match reply {
                // The settling commands' replies first (errors among them
                // fail the query): only the pops' are kept.
                Value::Array(mut replies) if replies.len() >= settling => {
                    replies.drain(..settling);
                    Ok(replies)
                }
                other => Err(unexpected(other)),
            });
        (lane, blocking, reply)
    });
    let mut abandoned = Abandoned {
        bus,
        base,
        client_id,
        pending: Some(pending),
    };
    let mut closing = bus.closing.subscribe();
    let closes = async {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    let Some(pending) = abandoned.pending.as_mut() else {
        unreachable!("set above")
    };
    let end = read_pop(bus, base, client_id, pending, timeout, closes).await;
    let unblocking = end.stopped.is_some();
    let pending = abandoned.pending.take();
    let Some((lane, blocking, reply)) = end.reply else {
        // No answer in time: the lane is dropped with its connection, its
        // state unknown; its registration lapses and the reaper returns its list.
        drop(pending);
        return Err(Error::transport("redis did not end a blocking pop in time"));
    };
    // An unblock may still be on its way: it must not end the next pop on
    // this connection, so the connection is not reused.
    if reply.is_ok() && !unblocking {
        bus.pool.give_back(blocking);
    }
    let closing = *bus.closing.borrow();
    let popped = finish(bus, base, lane, reply, want, unblocking, closing)?;
    if closing {
        return Err(Error::Closed);
    }
    Ok(popped)
}

/// A pipeline that pushes back `lane`'s returns, trims what it settled, and
/// renews its registration when due, with room for `more` commands; the
/// lane's counts start over. Its replies mean nothing but success.
fn settle_pipeline(bus: &Shared, base: &str, lane: &mut Lane, more: usize) -> redis::Pipeline {
    let mut pipe = redis::Pipeline::with_capacity(3 + more);
    let now = Instant::now();
    if lane.registered_until.is_none_or(|until| until <= now) {
        let ttl = busbar_core::ceil_millis(bus.config.get_visibility).max(1);
        match bus.queues.clock.now(base) {
            Some(redis_now) => {
                pipe.cmd("ZADD")
                    .arg(format!("{base}:gs"))
                    .arg(redis_now + ttl)
                    .arg(&lane.name);
            }
            None => {
                pipe.cmd("EVAL")
                    .arg(REGISTER_LANE_LUA)
                    .arg(1)
                    .arg(base)
                    .arg(ttl)
                    .arg(&lane.name);
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
        pipe.add_command(push);
    }
    if lane.settled > 0 {
        let mut trim = crate::command::command("LTRIM", 3, lane.list.len() + 22);
        trim.arg(&lane.list).arg(0).arg(-(lane.settled as i64) - 1);
        pipe.add_command(trim);
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
    asked: usize,
    unblocked: bool,
    closing: bool,
) -> Result<Option<Bytes>> {
    let elements = match reply.map_err(transport_error).and_then(elements) {
        Ok(elements) => elements,
        Err(err) => {
            close_later(bus, base, lane);
            return Err(err);
        }
    };
    bus.queues.lanes.took(base, asked, elements.len());
    let mut elements = elements.into_iter();
    let popped = elements.next();
    if popped.is_some() {
        lane.settled += 1;
    }
    lane.ahead.extend(elements);
    if !lane.ahead.is_empty() {
        lane.ahead_since = Some(Instant::now());
    }
    let popped = match popped {
        // Back at close, with the lane's other settlements, in one script.
        Some(element) if closing => {
            lane.returns.push(element);
            lane.give_up_ahead();
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

/// The elements a lane pipeline's pops brought, oldest first.
fn elements(values: Vec<Value>) -> Result<Vec<Bytes>> {
    let mut elements = Vec::with_capacity(values.len());
    for value in values {
        match value {
            Value::BulkString(element) => elements.push(Bytes::from(element)),
            Value::Nil => {}
            other => return Err(transport_error(unexpected(other))),
        }
    }
    Ok(elements)
}

/// A reply no lane pipeline gets.
fn unexpected(reply: Value) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected reply to a queue pop",
        format!("{reply:?}"),
    ))
}

/// How many items to take for a bus whose gets come `pace` apart: as many as
/// it uses up in half of [`LINGER`], between 1 and `max`.
fn batch(pace: Option<Duration>, max: usize) -> usize {
    let Some(pace) = pace else {
        return 1;
    };
    let fits = (LINGER / 2).as_nanos() / pace.as_nanos().max(1);
    fits.clamp(1, max.clamp(1, MAX_BATCH) as u128) as usize
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
        let client_id = self.client_id;
        let otherwise = "its lane comes back when its registration lapses";
        finish_in_task(
            self.bus,
            self.base,
            otherwise,
            move |bus, base| async move {
                // Ended at once: the caller has left.
                let stop = std::future::ready(());
                let end = read_pop(&bus, &base, client_id, pending, Duration::ZERO, stop).await;
                let Some((mut lane, _unblocked, reply)) = end.reply else {
                    return;
                };
                if let Ok(elements) = reply.map_err(transport_error).and_then(elements) {
                    lane.settled += elements.len();
                    lane.returns.extend(elements);
                }
                // Unblocked: not reused; closing pushes back what it brought and
                // trims (a failed lane's whole list comes back).
                close_later(&bus, &base, lane);
            },
        );
    }
}

/// Closes a lane in a task of its own: pushes back its returns, trims what it
/// settled, returns the rest and forgets it, retrying through an outage until
/// Redis confirms (a write lost with a connection would leave the lane's items
/// to wait for its registration to lapse). A failed lane's counts mean
/// nothing, so its whole list comes back.
fn close_later(bus: &Arc<Shared>, base: &str, mut lane: Lane) {
    lane.give_up_ahead();
    let close = close_pipeline(base, &lane);
    let (bus, base) = (bus.clone(), base.to_owned());
    tokio::spawn(async move {
        // Shutdown waits for this (a bounded time), and the reaper keeps
        // visiting the queue meanwhile.
        let _waiting = Waiting::enter(&bus, &base);
        let mut backoff = crate::connection::Backoff::new(&bus.config);
        loop {
            match on_link(&bus, bus.config.outage_wait, &close).await {
                Ok(()) => return,
                Err(err) if *bus.closing.borrow() || matches!(err, Error::Closed) => {
                    tracing::warn!(%err, "could not close a queue lane; its items come back when its registration lapses");
                    return;
                }
                Err(err) => tracing::debug!(%err, "closing a queue lane failed; retrying"),
            }
            backoff.wait().await;
        }
    });
}

/// Runs `pipe` on the bus's shared connection, waiting up to `wait` for one.
async fn on_link(bus: &Shared, wait: Duration, pipe: &redis::Pipeline) -> Result<()> {
    let conn = bus.link.get(wait).await?;
    let mut c = conn.conn.clone();
    let result = pipe.exec_async(&mut c).await;
    conn.check(result)
}

/// The `EVAL` closing `lane` (see [`CLOSE_LANE_LUA`]).
fn close_pipeline(base: &str, lane: &Lane) -> redis::Pipeline {
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
    let mut pipe = redis::pipe();
    pipe.add_command(cmd);
    pipe
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
        let Some(pending) = bus.queues.lanes.pending(Some(Instant::now() - LINGER)) else {
            return;
        };
        for (base, lane) in pending {
            settle_now(&bus, &base, lane).await;
        }
    }
}

/// At shutdown: closes every idle lane, waiting for Redis (lanes still in use
/// then are left to lapse).
pub(crate) async fn close_all(bus: &Shared) {
    let Some(lanes) = bus.queues.lanes.pending(None) else {
        return;
    };
    for (base, mut lane) in lanes {
        lane.give_up_ahead();
        let close = close_pipeline(&base, &lane);
        // Shutdown does not wait out a whole outage per lane.
        if on_link(bus, bus.config.response_timeout, &close)
            .await
            .is_err()
        {
            tracing::warn!("shutdown: could not close a queue lane; its items come back when its registration lapses");
        }
    }
}

/// Before `len` counts: puts back what this bus took ahead from `base`,
/// waiting for Redis.
pub(crate) async fn put_back_ahead(bus: &Arc<Shared>, base: &str) {
    for lane in bus.queues.lanes.ahead_of(base) {
        settle_now(bus, base, lane).await;
    }
}

/// Sends an idle lane's settlements on the shared connection and gives the
/// lane back; should that fail, the trim may or may not have run, so the
/// lane's list goes back instead.
async fn settle_now(bus: &Arc<Shared>, base: &str, mut lane: Lane) {
    let pipe = settle_pipeline(bus, base, &mut lane, 0);
    let settled = on_link(bus, bus.config.outage_wait, &pipe).await;
    bus.queues.lanes.back(base, &mut lane);
    match settled {
        Ok(()) => bus.queues.lanes.give_back(bus, base, lane),
        Err(_) => close_later(bus, base, lane),
    }
}

#[cfg(test)]
mod tests {
    use super::{batch, LINGER};
    use std::time::Duration;

    #[test]
    fn a_bus_with_no_pace_yet_takes_one() {
        assert_eq!(batch(None, 64), 1);
    }

    #[test]
    fn a_quick_bus_takes_up_to_the_limit() {
        assert_eq!(batch(Some(Duration::from_nanos(10)), 64), 64);
        assert_eq!(
            batch(Some(Duration::ZERO), 1_000),
            256,
            "never past MAX_BATCH"
        );
        assert_eq!(
            batch(Some(Duration::ZERO), 0),
            1,
            "a limit of 0 still takes one"
        );
    }

    #[test]
    fn a_bus_takes_what_it_uses_in_half_the_linger() {
        assert_eq!(batch(Some(LINGER / 10), 64), 5);
        assert_eq!(batch(Some(LINGER), 64), 1);
        assert_eq!(batch(Some(Duration::from_secs(1)), 64), 1);
    }
}
