//! The connection task: owns the DEALER socket, sends the bus's commands in
//! order (batching publishes), dispatches the broker's messages, keeps
//! heartbeats, and on a lost or restarted broker reconnects with backoff and
//! replays every subscription and provider.

use crate::client::{lock, outage::ATTEMPT_TIMEOUT, Answer, CallEvent, Outbound, Shared};
use crate::config::ZmqConfig;
use crate::inbound;
use crate::protocol::{self, cmd, Malformed, Parsed};
use busbar_core::reply::respond;
use busbar_core::{wire, Error, Result, Stats};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

/// Most events packed into one PUBLISH message.
const MAX_BATCH: usize = 256;
/// Most envelope bytes packed into one PUBLISH message.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// How long a broker that accepted the connection may take to answer HELLO.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One live connection to a broker, after the HELLO/WELCOME handshake.
pub(crate) struct Session {
    send: zeromq::DealerSendHalf,
    recv: zeromq::DealerRecvHalf,
    monitor: futures::channel::mpsc::Receiver<SocketEvent>,
    heartbeat: Duration,
    liveness: u32,
}

pub(crate) fn transport(context: &str, err: impl std::fmt::Display) -> Error {
    Error::transport(format!("{context}: {err}"))
}

fn to_message(frames: Vec<Bytes>) -> ZmqMessage {
    let mut frames = frames.into_iter();
    let mut message = ZmqMessage::from(frames.next().unwrap_or_default());
    for frame in frames {
        message.push_back(frame);
    }
    message
}

impl Session {
    /// Connects a new DEALER to the broker and says hello, within `attempt`.
    pub(crate) async fn open(config: &ZmqConfig, attempt: Duration) -> Result<Session> {
        let mut options = SocketOptions::default();
        options.connect_timeout(attempt);
        let mut socket = zeromq::DealerSocket::with_options(options);
        let monitor = socket.monitor();
        socket.connect(&config.endpoint).await.map_err(|err| {
            transport(
                &format!("cannot connect to the zmq broker at {}", config.endpoint),
                err,
            )
        })?;
        let (mut send, mut recv) = socket.split();
        let hello = protocol::message(
            cmd::HELLO,
            [protocol::text_frame(concat!(
                "busbar-rust/",
                env!("CARGO_PKG_VERSION")
            ))],
        );
        send.send(to_message(hello))
            .await
            .map_err(|err| transport("cannot say hello to the broker", err))?;
        let welcome = async {
            loop {
                let message = recv
                    .recv()
                    .await
                    .map_err(|err| transport("no welcome from the broker", err))?
                    .into_vec();
                if let Some(args) = find(&message, cmd::WELCOME) {
                    return Ok::<_, Error>(args);
                }
            }
        };
        // A broker that accepted the connection answers at once; one that does
        // not (it is stopping) is not worth the whole connect timeout.
        let args = tokio::time::timeout(HANDSHAKE_TIMEOUT, welcome)
            .await
            .map_err(|_| {
                Error::transport(format!(
                    "the zmq broker at {} did not welcome this client within {HANDSHAKE_TIMEOUT:?}",
                    config.endpoint
                ))
            })??;
        let [heartbeat, liveness, _broker] = protocol::args(&args, "WELCOME")
            .map_err(|err| transport("bad welcome from the broker", err))?;
        let heartbeat = protocol::read_u32(&heartbeat, "heartbeat")
            .map_err(|err| transport("bad welcome from the broker", err))?;
        let liveness = protocol::read_u32(&liveness, "liveness")
            .map_err(|err| transport("bad welcome from the broker", err))?;
        Ok(Session {
            send,
            recv,
            monitor,
            heartbeat: Duration::from_millis(heartbeat.max(10) as u64),
            liveness: liveness.max(1),
        })
    }

    /// Sends one message; a broker that does not take it within the liveness
    /// period (it stopped reading) counts as lost.
    async fn send(&mut self, frames: Vec<Bytes>) -> std::result::Result<(), String> {
        let limit = self.heartbeat * self.liveness;
        match tokio::time::timeout(limit, self.send.send(to_message(frames))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("send to the broker failed: {err}")),
            Err(_) => Err(format!("the broker took no message for {limit:?}")),
        }
    }
}

/// The arguments of `command` in a message, alone or inside a batch.
fn find(frames: &[Bytes], command: u8) -> Option<Vec<Bytes>> {
    let (first, args) = protocol::split(frames).ok()?;
    if first == command {
        return Some(args.to_vec());
    }
    if first != cmd::BROKER_BATCH {
        return None;
    }
    protocol::unbatch(args)
        .ok()?
        .into_iter()
        .find(|(c, _)| *c == command)
        .map(|(_, args)| args.to_vec())
}

/// Why a session ended.
enum End {
    /// The bus is done: BYE was sent (or the broker is gone); signal `done`.
    Bye(Option<oneshot::Sender<()>>),
    /// The connection is lost; reconnect.
    Lost(String),
}

/// Runs the connection until the bus is dropped or shut down.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut out: mpsc::UnboundedReceiver<Outbound>,
    mut session: Session,
) {
    let mut backlog: VecDeque<Outbound> = VecDeque::new();
    loop {
        let end = drive(&shared, &mut session, &mut out, &mut backlog).await;
        let reason = match end {
            End::Bye(done) => return finish(&shared, done),
            End::Lost(reason) => reason,
        };
        shared.set_connected(false);
        Stats::incr(&shared.stats.disconnects);
        tracing::warn!(endpoint = %shared.config.endpoint, %reason, "lost the zmq broker; reconnecting");
        // Marked after everything the lost session delivered: what is
        // published until the broker has the subscriptions again is missed.
        for sub in lock(&shared.subs).values() {
            sub.sender.interrupted();
        }
        fail_in_flight(&shared);
        let mut bye = None;
        let kept: Vec<Outbound> = backlog.drain(..).collect();
        for item in kept {
            park(&shared, item, &mut backlog, &mut bye);
        }
        while let Ok(item) = out.try_recv() {
            park(&shared, item, &mut backlog, &mut bye);
        }
        if let Some(done) = bye {
            return finish(&shared, done);
        }
        session = match reconnect(&shared, &mut out, &mut backlog).await {
            Ok(session) => session,
            Err(done) => return finish(&shared, done),
        };
        shared.epoch.fetch_add(1, Ordering::AcqRel);
        shared.set_connected(true);
        Stats::incr(&shared.stats.reconnects);
        tracing::info!(endpoint = %shared.config.endpoint, "reconnected to the zmq broker");
        // Replay before anything else: subscriptions, then providers.
        let mut replay = Vec::new();
        for (id, sub) in lock(&shared.subs).iter() {
            replay.push(protocol::message(
                cmd::SUBSCRIBE,
                [
                    protocol::u64_frame(*id),
                    protocol::text_frame(sub.pattern.as_str()),
                ],
            ));
        }
        for (id, serve) in lock(&shared.serves).iter() {
            replay.push(protocol::message(
                cmd::SERVE,
                [
                    protocol::u64_frame(*id),
                    protocol::text_frame(&serve.method),
                ],
            ));
        }
        // Then the consumers still waiting, each with the time it has left.
        let mut expired = Vec::new();
        for (req, waiter) in lock(&shared.waiters).iter() {
            if let Some(refetch) = &waiter.refetch {
                match refetch.frames(*req) {
                    Some(frames) => replay.push(frames),
                    None => expired.push(*req),
                }
            }
        }
        for req in expired {
            let _ = shared.answer(req, Answer::Empty);
        }
        for frames in replay.into_iter().rev() {
            backlog.push_front(Outbound::Command { frames, req: None });
        }
    }
}

/// While disconnected: keeps publishes (bounded by the publish budget), drops
/// commands and fails their waiters. Subscribe/serve are replayed from state.
fn park(
    shared: &Shared,
    item: Outbound,
    backlog: &mut VecDeque<Outbound>,
    bye: &mut Option<Option<oneshot::Sender<()>>>,
) {
    match item {
        Outbound::Publish(..) => backlog.push_back(item),
        Outbound::Command { req: Some(req), .. } => {
            // Fetches are asked again after the reconnect; other requests fail.
            let refetch = lock(&shared.waiters)
                .get(&req)
                .is_some_and(|w| w.refetch.is_some());
            if !refetch {
                let _ = shared.answer(req, Answer::Lost);
            }
        }
        Outbound::Command { req: None, .. } => {}
        Outbound::Bye(done) => *bye = Some(done),
    }
}

/// Fails what the lost broker held: non-durable waiters and every call.
fn fail_in_flight(shared: &Shared) {
    let failed: Vec<u64> = lock(&shared.waiters)
        .iter()
        .filter(|(_, w)| !w.durable && w.refetch.is_none())
        .map(|(req, _)| *req)
        .collect();
    for req in failed {
        let _ = shared.answer(req, Answer::Lost);
    }
    for (_, call) in lock(&shared.calls).drain() {
        let _ = call.send(CallEvent::Lost);
    }
}

fn finish(shared: &Shared, done: Option<oneshot::Sender<()>>) {
    shared.set_connected(false);
    let waiters: Vec<u64> = lock(&shared.waiters).keys().copied().collect();
    for req in waiters {
        let _ = shared.answer(req, Answer::Lost);
    }
    lock(&shared.calls).clear();
    lock(&shared.subs).clear();
    lock(&shared.serves).clear();
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// Reconnects with backoff; `Err` when the bus was closed meanwhile.
async fn reconnect(
    shared: &Shared,
    out: &mut mpsc::UnboundedReceiver<Outbound>,
    backlog: &mut VecDeque<Outbound>,
) -> std::result::Result<Session, Option<oneshot::Sender<()>>> {
    let mut delay = Duration::from_millis(50);
    loop {
        let pause = delay;
        let attempt = async move {
            let open = Session::open(&shared.config, ATTEMPT_TIMEOUT);
            match tokio::time::timeout(ATTEMPT_TIMEOUT, open).await {
                Ok(Ok(session)) => Some(session),
                Ok(Err(err)) => {
                    tracing::debug!(%err, "reconnection attempt failed");
                    tokio::time::sleep(pause).await;
                    None
                }
                Err(_) => None,
            }
        };
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                session = &mut attempt => match session {
                    Some(session) => return Ok(session),
                    None => break,
                },
                item = out.recv() => {
                    let mut bye = None;
                    match item {
                        Some(item) => park(shared, item, backlog, &mut bye),
                        None => bye = Some(None),
                    }
                    if let Some(done) = bye {
                        return Err(done);
                    }
                }
            }
        }
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

async fn next_out(
    backlog: &mut VecDeque<Outbound>,
    out: &mut mpsc::UnboundedReceiver<Outbound>,
) -> Option<Outbound> {
    match backlog.pop_front() {
        Some(item) => Some(item),
        None => out.recv().await,
    }
}

fn try_next_out(
    backlog: &mut VecDeque<Outbound>,
    out: &mut mpsc::UnboundedReceiver<Outbound>,
) -> Option<Outbound> {
    backlog.pop_front().or_else(|| out.try_recv().ok())
}

/// Runs one session until it ends.
async fn drive(
    shared: &Arc<Shared>,
    session: &mut Session,
    out: &mut mpsc::UnboundedReceiver<Outbound>,
    backlog: &mut VecDeque<Outbound>,
) -> End {
    let mut tick = tokio::time::interval(session.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dead_after = session.heartbeat * session.liveness;
    let mut last_seen = Instant::now();
    let mut unacked: VecDeque<u64> = VecDeque::new();
    let mut next_seq: u64 = 1;
    loop {
        let window_open = unacked.len() < shared.config.publish_window;
        tokio::select! {
            biased;
            message = session.recv.recv() => match message {
                Ok(message) => {
                    last_seen = Instant::now();
                    if let Some(end) = incoming(shared, message.into_vec(), &mut unacked) {
                        return end;
                    }
                }
                Err(err) => return End::Lost(format!("receive failed: {err}")),
            },
            Some(event) = session.monitor.next() => {
                if let SocketEvent::Disconnected(_) = event {
                    return End::Lost("the broker closed the connection".into());
                }
            }
            _ = tick.tick() => {
                if last_seen.elapsed() > dead_after {
                    return End::Lost(format!("no message from the broker for {dead_after:?}"));
                }
                if let Err(reason) = session.send(protocol::message(cmd::HEARTBEAT, [])).await {
                    return End::Lost(reason);
                }
            }
            item = next_out(backlog, out), if window_open => {
                let Some(item) = item else {
                    goodbye(shared, session, false).await;
                    return End::Bye(None);
                };
                let result = match item {
                    Outbound::Bye(done) => {
                        // `shutdown` (with `done`) waited for its handlers; a
                        // dropped bus did not.
                        let graceful = done.is_some() || shared.in_flight.running() == 0;
                        goodbye(shared, session, graceful).await;
                        return End::Bye(done);
                    }
                    Outbound::Command { frames, .. } => {
                        let mut messages = vec![frames];
                        while messages.len() < protocol::MAX_BATCH_COMMANDS {
                            match try_next_out(backlog, out) {
                                Some(Outbound::Command { frames, .. }) => messages.push(frames),
                                Some(other) => {
                                    backlog.push_front(other);
                                    break;
                                }
                                None => break,
                            }
                        }
                        if messages.len() == 1 {
                            session.send(messages.pop().unwrap_or_default()).await
                        } else {
                            session.send(protocol::batch(cmd::BATCH, messages)).await
                        }
                    }
                    Outbound::Publish(first, permit) => {
                        let seq = next_seq;
                        next_seq += 1;
                        let mut frames = protocol::message(cmd::PUBLISH, [protocol::u64_frame(seq)]);
                        let mut bytes = first.len();
                        frames.push(first);
                        let mut permits = vec![permit];
                        while permits.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                            match try_next_out(backlog, out) {
                                Some(Outbound::Publish(envelope, permit)) => {
                                    bytes += envelope.len();
                                    frames.push(envelope);
                                    permits.push(permit);
                                }
                                Some(other) => {
                                    backlog.push_front(other);
                                    break;
                                }
                                None => break,
                            }
                        }
                        unacked.push_back(seq);
                        // Bytes are shared, so keeping the envelopes costs nothing:
                        // if the socket refuses the batch, they wait for the next broker.
                        let envelopes: Vec<Bytes> = frames[3..].to_vec();
                        let result = session.send(frames).await;
                        if result.is_err() {
                            for item in envelopes.into_iter().zip(permits).rev() {
                                backlog.push_front(Outbound::Publish(item.0, item.1));
                            }
                        }
                        result
                    }
                };
                if let Err(reason) = result {
                    return End::Lost(reason);
                }
            }
        }
    }
}

/// Says BYE and waits (bounded) until the broker confirmed it released
/// everything this client held.
async fn goodbye(shared: &Shared, session: &mut Session, graceful: bool) {
    let bye = if graceful {
        protocol::message(cmd::BYE, [])
    } else {
        protocol::message(cmd::BYE, [protocol::text_frame("abandon")])
    };
    if session.send(bye).await.is_err() {
        return;
    }
    let confirmed = async {
        while let Ok(message) = session.recv.recv().await {
            if find(&message.into_vec(), cmd::GOODBYE).is_some() {
                return;
            }
        }
    };
    if tokio::time::timeout(shared.config.op_timeout, confirmed)
        .await
        .is_err()
    {
        tracing::debug!("the broker did not confirm goodbye in time");
    }
}

/// Handles one message from the broker; `Some` ends the session.
fn incoming(shared: &Arc<Shared>, frames: Vec<Bytes>, unacked: &mut VecDeque<u64>) -> Option<End> {
    let (command, args) = match protocol::split(&frames) {
        Ok(split) => split,
        Err(why) => {
            rejected(shared, &why);
            return None;
        }
    };
    if command != cmd::BROKER_BATCH {
        return incoming_command(shared, command, args, unacked);
    }
    match protocol::unbatch(args) {
        Ok(commands) => {
            for (command, args) in commands {
                if let Some(end) = incoming_command(shared, command, args, unacked) {
                    return Some(end);
                }
            }
        }
        Err(why) => rejected(shared, &why),
    }
    None
}

/// Handles one command from the broker; `Some` ends the session.
fn incoming_command(
    shared: &Arc<Shared>,
    command: u8,
    args: &[Bytes],
    unacked: &mut VecDeque<u64>,
) -> Option<End> {
    let outcome = match command {
        cmd::RESET => {
            return Some(End::Lost(
                "the broker does not know this client (it restarted or dropped it)".into(),
            ))
        }
        cmd::BROKER_HEARTBEAT | cmd::WELCOME | cmd::GOODBYE => Ok(()),
        cmd::SUBSCRIBED | cmd::SERVING | cmd::OK => {
            protocol::args(args, "confirmation").and_then(|[req]| {
                let req = protocol::read_u64(&req, "request number")?;
                let _ = shared.answer(req, Answer::Ok);
                Ok(())
            })
        }
        cmd::PUBACK => protocol::args(args, "PUBACK").and_then(|[seq]| {
            let seq = protocol::read_u64(&seq, "batch number")?;
            unacked.retain(|&s| s != seq);
            Ok(())
        }),
        cmd::EVENT => inbound::events(shared, args),
        cmd::ITEM => inbound::item(shared, args),
        cmd::EMPTY => protocol::args(args, "EMPTY").and_then(|[req]| {
            let _ = shared.answer(protocol::read_u64(&req, "request number")?, Answer::Empty);
            Ok(())
        }),
        cmd::COUNT => protocol::args(args, "COUNT").and_then(|[req, n]| {
            let n = protocol::read_u64(&n, "count")?;
            let _ = shared.answer(
                protocol::read_u64(&req, "request number")?,
                Answer::Count(n),
            );
            Ok(())
        }),
        cmd::ERROR => protocol::args(args, "ERROR").and_then(|[req, message]| {
            let message = protocol::read_text(&message, "message")?.to_owned();
            let _ = shared.answer(
                protocol::read_u64(&req, "request number")?,
                Answer::Error(message),
            );
            Ok(())
        }),
        cmd::SUBSCRIBE_ERROR | cmd::SERVE_ERROR | cmd::PUBLISH_ERROR | cmd::CALL_ERROR => {
            inbound::refusal(shared, command, args)
        }
        cmd::REQUEST => request(shared, args),
        cmd::RESULT => protocol::args(args, "RESULT").and_then(|[envelope]| {
            match wire::decode(&envelope, shared.config.max_envelope) {
                Ok(reply) => {
                    if let Some(id) = reply.correlation_id {
                        if let Some(call) = lock(&shared.calls).get(&id) {
                            let _ = call.send(CallEvent::Reply(Box::new(reply)));
                        }
                    }
                    Ok(())
                }
                Err(err) => Err(Malformed(format!("RESULT: {err}"))),
            }
        }),
        cmd::NO_RESPONDERS => protocol::args(args, "NO_RESPONDERS")
            .and_then(|[id]| call_event(shared, &id, CallEvent::NoResponders)),
        cmd::FANOUT => protocol::args(args, "FANOUT").and_then(|[id, n]| {
            let n = protocol::read_u32(&n, "provider count")?;
            call_event(
                shared,
                &id,
                if n == 0 {
                    CallEvent::NoResponders
                } else {
                    CallEvent::Fanout(n)
                },
            )
        }),
        cmd::WITHDRAWN => protocol::args(args, "WITHDRAWN")
            .and_then(|[id]| call_event(shared, &id, CallEvent::Withdrawn)),
        cmd::FAILED => protocol::args(args, "FAILED").and_then(|[id, message]| {
            let message = protocol::read_text(&message, "message")?.to_owned();
            call_event(shared, &id, CallEvent::Failed(message))
        }),
        other => Err(Malformed(format!("unknown command 0x{other:02x}"))),
    };
    if let Err(why) = outcome {
        rejected(shared, &why);
    }
    None
}

pub(crate) fn rejected(shared: &Shared, why: &Malformed) {
    Stats::incr(&shared.stats.rejected);
    tracing::warn!(reason = %why, "rejected a malformed message from the zmq broker");
}

pub(crate) fn call_event(shared: &Shared, id: &Bytes, event: CallEvent) -> Parsed<()> {
    let id = protocol::read_id(id)?;
    if let Some(call) = lock(&shared.calls).get(&id) {
        let _ = call.send(event);
    }
    Ok(())
}

/// REQUEST: runs the provider's handler in a task of its own.
fn request(shared: &Arc<Shared>, args: &[Bytes]) -> Parsed<()> {
    let [token, serve, envelope] = protocol::args(args, "REQUEST")?;
    let token = protocol::read_u64(&token, "call token")?;
    let serve = protocol::read_u64(&serve, "provider id")?;
    let request = wire::decode(&envelope, shared.config.max_envelope)
        .map_err(|err| Malformed(format!("REQUEST envelope: {err}")))?;
    let Some(handler) = lock(&shared.serves).get(&serve).map(|s| s.handler.clone()) else {
        // Stopped serving since the broker sent it: the broker routes it elsewhere.
        shared.command(
            protocol::message(cmd::DECLINE, [protocol::u64_frame(token)]),
            None,
        );
        return Ok(());
    };
    let running = shared.in_flight.enter();
    let shared = shared.clone();
    let in_flight = shared.in_flight.clone();
    let mut work = Box::pin(async move {
        let _running = running;
        let answer = async {
            if let Some(reply) = respond(&*handler, request, &shared.stats).await {
                match wire::encode(&reply) {
                    Ok(bytes) => shared.command(
                        protocol::message(cmd::REPLY, [protocol::u64_frame(token), bytes]),
                        None,
                    ),
                    Err(err) => tracing::warn!(%err, "could not encode a reply"),
                }
            }
        };
        // A killed bus (a test hook) aborts it where it stands.
        in_flight.abortable(answer).await;
    });
    // A handler that answers at once (no waiting) is done here, without a task
    // hop; one that waits continues in a task of its own.
    if (&mut work).now_or_never().is_none() {
        tokio::spawn(work);
    }
    Ok(())
}
