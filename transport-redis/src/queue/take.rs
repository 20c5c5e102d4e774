//! Taking an item: at once with `TAKE`, else waiting in a blocking pop and
//! adopting; and putting back what a caller that left would have taken.

use super::ack::drop_in_flight;
use super::element::Element;
use super::pop::read_pop;
use super::scripts::{ADOPT, NACK_LUA, TAKE};
use super::{base_key, decode_or_bury, finish_in_task, job, Taken, Waiting};
use crate::command::{run_script, script_command};
use crate::connection::transport_error;
use crate::Shared;
use busbar_core::{Error, Name, Result};
use redis::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How an item is taken.
#[derive(Clone, Copy)]
struct Terms {
    /// How long it stays in flight.
    visibility_ms: u64,
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
pub(super) async fn take(
    bus: &Arc<Shared>,
    queue: &Name,
    timeout: Duration,
    visibility: Duration,
) -> Result<Option<Taken>> {
    let base = base_key(&bus.config.namespace, queue.as_str());
    let deadline = Instant::now() + timeout;
    let terms = Terms {
        visibility_ms: millis(visibility).max(1),
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

/// Runs [`TAKE`]: takes a waiting item into flight, if there is one.
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
    let mut cmd = script_command(&TAKE, 1, 2, base.len() + 40);
    cmd.arg(base)
        .arg(terms.visibility_ms)
        // Saves the script a TIME call, which costs as much as a quarter of the rest.
        .arg(
            bus.queues
                .clock
                .now(base)
                .map_or(0, |now| now + terms.visibility_ms),
        );
    let reply: Reply = Box::pin(async move { run_script::<Value>(&mut c, &TAKE, &cmd).await });
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
        value => match parse_taken(bus, base, value).await {
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
        let otherwise = "its item comes back after its visibility timeout";
        finish_in_task(self.bus, self.base, otherwise, |bus, base| async move {
            if let Ok(Value::BulkString(item)) = reply.await {
                let element = Element::parse(item.into());
                put_back_id(&bus, &base, &element.id).await;
            }
        });
    }
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
        .arg(terms.visibility_ms);
    let mut closing = bus.closing.subscribe();
    // Ended early when the bus closes (true) or the caller leaves (false).
    let stop = async {
        tokio::select! {
            _ = closing.wait_for(|closing| *closing) => true,
            () = caller.closed() => false,
        }
    };
    let client_id = blocking.client_id;
    let reply = pipe.query_async::<(Option<Vec<u8>>, Value)>(&mut blocking.conn);
    let end = read_pop(bus, base, client_id, reply, timeout, stop).await;
    let (unblocking, shutting_down) = (end.stopped.is_some(), end.stopped == Some(true));
    let popped = match end.reply {
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
        Popped::Item(value) => match parse_taken(bus, base, value).await {
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

/// The command putting back an item that never reached a caller: at the head
/// of the queue, its attempt not counted. `EVAL` with the source, as the writer
/// cannot load a script that Redis lost.
fn put_back_command(base: &str, id: &[u8; 16]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(NACK_LUA.as_str())
        .arg(1)
        .arg(base)
        .arg(&id[..])
        .arg(1);
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

/// Turns a take's reply into an item. An item that is not a valid envelope
/// is moved to `_dead.<queue>` and removed from flight (see
/// [`decode_or_bury`]); `None` then, and the caller takes again. Should the
/// move fail, it stays in flight and comes back after its visibility timeout.
async fn parse_taken(bus: &Arc<Shared>, base: &str, value: Value) -> Option<Taken> {
    let Value::BulkString(item) = value else {
        return None;
    };
    let element = Element::parse(item.into());
    match decode_or_bury(bus, base, element.envelope).await {
        Ok(Some(envelope)) => Some(Taken {
            envelope,
            attempt: element.attempt,
            base: base.to_owned(),
            id: element.id,
        }),
        Ok(None) => {
            // Only a valid envelope has a meaningful id: drop by the raw id bytes.
            drop_in_flight(bus, base, &element.id);
            None
        }
        Err(_) => None,
    }
}

fn millis(d: Duration) -> u64 {
    busbar_core::ceil_millis(d)
}
