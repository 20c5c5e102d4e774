//! [`ZmqBus`]: the client transport. Every operation becomes a command on one
//! ordered channel to the connection task ([`crate::connection`]), which owns
//! the DEALER socket; answers come back through per-request waiters.

use crate::acker::ZmqAcker;
use crate::calls;
use crate::config::ZmqConfig;
use crate::connection;
use crate::protocol::{self, cmd};
use async_trait::async_trait;
use busbar_core::inflight::InFlight;
use busbar_core::mailbox::{mailbox, MailboxSender};
use busbar_core::transport::{Guard, Handler, RawDelivery, RawSubscription};
use busbar_core::{
    wire, Capabilities, Envelope, Error, EventBus, MessageId, Name, Pattern, Result, Stats,
    SubscribeOptions,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

pub(crate) mod outage;

/// How long `shutdown` waits for running handlers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A plain `get` asks for visibility 0: the broker forgets the item as it sends it.
const GET_VISIBILITY: Duration = Duration::ZERO;

/// What the connection task sends, in order.
pub(crate) enum Outbound {
    /// A command; `req` names its waiter, failed if the command is dropped.
    Command {
        frames: Vec<Bytes>,
        req: Option<u64>,
    },
    /// One encoded event; the permit bounds buffered publishes.
    Publish(Bytes, OwnedSemaphorePermit),
    /// Send BYE and stop; signal when done.
    Bye(Option<oneshot::Sender<()>>),
}

/// A broker's answer to one command.
#[derive(Debug)]
pub(crate) enum Answer {
    Ok,
    Item {
        tag: u64,
        attempt: u32,
        envelope: Bytes,
    },
    Empty,
    Count(u64),
    Error(String),
    Lost,
}

/// What arrives for one RPC call.
#[derive(Debug)]
pub(crate) enum CallEvent {
    Reply(Box<Envelope>),
    NoResponders,
    Fanout(u32),
    Failed(String),
    /// The broker refused the request itself (CALL_ERROR).
    Refused(String),
    Withdrawn,
    Lost,
}

pub(crate) struct Sub {
    pub(crate) pattern: Pattern,
    pub(crate) sender: MailboxSender,
}

pub(crate) struct Serve {
    pub(crate) method: Name,
    pub(crate) handler: Arc<dyn Handler>,
}

pub(crate) struct Waiter {
    pub(crate) tx: oneshot::Sender<Answer>,
    /// Survives a reconnect (subscribe/serve confirmations, which replay answers).
    pub(crate) durable: bool,
    /// A consumer's fetch, asked again of the next broker after a reconnect.
    pub(crate) refetch: Option<Refetch>,
}

/// What it takes to ask a fetch again: until its deadline, with its visibility.
#[derive(Clone)]
pub(crate) struct Refetch {
    pub(crate) queue: Name,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) visibility: Duration,
}

impl Refetch {
    /// The FETCH for request `req`, with the time left; `None` once it expired.
    pub(crate) fn frames(&self, req: u64) -> Option<Vec<Bytes>> {
        let left = self
            .deadline
            .checked_duration_since(tokio::time::Instant::now())?;
        Some(protocol::message(
            cmd::FETCH,
            [
                protocol::u64_frame(req),
                protocol::text_frame(&self.queue),
                protocol::u32_frame(millis(left)),
                protocol::u32_frame(millis(self.visibility)),
            ],
        ))
    }
}

/// State shared by the bus handle, its guards and the connection task.
pub(crate) struct Shared {
    pub(crate) config: ZmqConfig,
    pub(crate) stats: Arc<Stats>,
    pub(crate) out: mpsc::UnboundedSender<Outbound>,
    budget: Arc<Semaphore>,
    pub(crate) connected: AtomicBool,
    /// Announces every change of `connected` (publishers waiting for buffer
    /// room stop waiting when the connection drops).
    pub(crate) link: tokio::sync::watch::Sender<bool>,
    closed: AtomicBool,
    pub(crate) epoch: AtomicU64,
    next_id: AtomicU64,
    pub(crate) subs: Mutex<HashMap<u64, Sub>>,
    pub(crate) serves: Mutex<HashMap<u64, Serve>>,
    pub(crate) waiters: Mutex<HashMap<u64, Waiter>>,
    pub(crate) calls: Mutex<HashMap<MessageId, mpsc::UnboundedSender<CallEvent>>>,
    pub(crate) in_flight: InFlight,
    /// The connection task, aborted by [`EventBus::kill`].
    connection: Mutex<Option<tokio::task::AbortHandle>>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        self.link.send_replace(connected);
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn not_connected(&self) -> Error {
        Error::transport(format!(
            "not connected to the zmq broker at {} (reconnecting)",
            self.config.endpoint
        ))
    }

    pub(crate) fn command(&self, frames: Vec<Bytes>, req: Option<u64>) {
        let _ = self.out.send(Outbound::Command { frames, req });
    }

    /// Sends a command and waits for the broker's answer, at most `wait`.
    pub(crate) async fn request(
        &self,
        req: u64,
        frames: Vec<Bytes>,
        wait: Duration,
    ) -> Result<Answer> {
        self.check_open()?;
        if !self.is_connected() {
            return Err(self.not_connected());
        }
        let pending = self.register(req, false);
        self.command(frames, Some(req));
        pending.answer(wait, self).await
    }

    pub(crate) fn register(&self, req: u64, durable: bool) -> Pending<'_> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(
            req,
            Waiter {
                tx,
                durable,
                refetch: None,
            },
        );
        Pending {
            shared: self,
            req,
            rx: Some(rx),
            cancel: false,
        }
    }

    /// Completes the waiter of `req`; gives the answer back if nobody waits.
    pub(crate) fn answer(&self, req: u64, answer: Answer) -> std::result::Result<(), Answer> {
        let waiter = lock(&self.waiters).remove(&req);
        match waiter {
            Some(waiter) => waiter.tx.send(answer),
            None => Err(answer),
        }
    }
}

/// A registered waiter; dropping it forgets the request (and, for a fetch,
/// tells the broker to stop waiting).
pub(crate) struct Pending<'a> {
    shared: &'a Shared,
    req: u64,
    rx: Option<oneshot::Receiver<Answer>>,
    cancel: bool,
}

impl Pending<'_> {
    async fn answer(mut self, wait: Duration, shared: &Shared) -> Result<Answer> {
        let Some(rx) = self.rx.take() else {
            return Err(Error::Closed);
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Answer::Lost)) | Ok(Err(_)) if shared.closed.load(Ordering::Acquire) => {
                Err(Error::Closed)
            }
            Ok(Ok(Answer::Lost)) | Ok(Err(_)) => Err(Error::transport(format!(
                "lost the connection to the zmq broker at {} before it answered",
                shared.config.endpoint
            ))),
            Ok(Ok(Answer::Error(message))) => Err(Error::transport(message)),
            Ok(Ok(answer)) => {
                self.cancel = false;
                Ok(answer)
            }
            Err(_) => Err(Error::transport(format!(
                "the zmq broker at {} did not answer within {wait:?}",
                shared.config.endpoint
            ))),
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let removed = lock(&self.shared.waiters).remove(&self.req).is_some();
        if removed && self.cancel {
            self.shared.command(
                protocol::message(cmd::CANCEL, [protocol::u64_frame(self.req)]),
                None,
            );
        }
    }
}

/// A connection to a busbar ZeroMQ broker (`zmq://host:port`).
///
/// Reconnects on its own with backoff when the broker goes away or restarts,
/// restoring every subscription, provider and waiting consumer; see
/// `docs/zmq-protocol.md`.
pub struct ZmqBus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ZmqBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqBus")
            .field("endpoint", &self.shared.config.endpoint)
            .field("connected", &self.shared.is_connected())
            .finish()
    }
}

impl ZmqBus {
    /// Connects to the broker named by a `zmq://host:port` URL.
    pub async fn connect(url: &str) -> Result<ZmqBus> {
        ZmqBus::connect_with(ZmqConfig::from_url(url)?).await
    }

    /// Connects with explicit settings. A broker that does not answer is
    /// tried again with jittered backoff for [`ZmqConfig::connect_timeout`]
    /// (see `busbar_core::connect`), then the error names it.
    pub async fn connect_with(config: ZmqConfig) -> Result<ZmqBus> {
        let session = outage::connect(&config).await?;
        let (out, out_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            budget: Arc::new(Semaphore::new(config.publish_buffer)),
            config,
            stats: Arc::default(),
            out,
            connected: AtomicBool::new(true),
            link: tokio::sync::watch::Sender::new(true),
            closed: AtomicBool::new(false),
            epoch: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            subs: Mutex::default(),
            serves: Mutex::default(),
            waiters: Mutex::default(),
            calls: Mutex::default(),
            in_flight: InFlight::default(),
            connection: Mutex::default(),
        });
        let task = tokio::spawn(connection::run(shared.clone(), out_rx, session));
        *lock(&shared.connection) = Some(task.abort_handle());
        Ok(ZmqBus { shared })
    }

    /// True while connected to the broker.
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    async fn fetch(
        &self,
        queue: &Name,
        timeout: Duration,
        visibility: Duration,
    ) -> Result<Option<(u64, u32, Envelope)>> {
        let shared = &*self.shared;
        shared.check_open()?;
        // While reconnecting, a consumer waits for the broker, within its timeout.
        let started = tokio::time::Instant::now();
        if !outage::until_connected(shared, started + timeout).await? {
            return Err(shared.not_connected());
        }
        let timeout = timeout.saturating_sub(started.elapsed());
        let req = shared.id();
        let refetch = Refetch {
            queue: queue.clone(),
            deadline: tokio::time::Instant::now() + timeout,
            visibility,
        };
        let frames = protocol::message(
            cmd::FETCH,
            [
                protocol::u64_frame(req),
                protocol::text_frame(queue),
                protocol::u32_frame(millis(timeout)),
                protocol::u32_frame(millis(visibility)),
            ],
        );
        let mut pending = shared.register(req, false);
        pending.cancel = true;
        // A consumer survives a lost broker: the fetch is asked again of the next one.
        if let Some(waiter) = lock(&shared.waiters).get_mut(&req) {
            waiter.refetch = Some(refetch);
        }
        shared.command(frames, Some(req));
        match pending
            .answer(timeout + shared.config.op_timeout, shared)
            .await?
        {
            Answer::Item {
                tag,
                attempt,
                envelope,
            } => match wire::decode(&envelope, shared.config.max_envelope) {
                Ok(envelope) => Ok(Some((tag, attempt, envelope))),
                Err(err) => {
                    Stats::incr(&shared.stats.rejected);
                    tracing::warn!(%err, %queue, "rejected a malformed queue item");
                    // Settle it so it does not come back forever.
                    shared.command(
                        protocol::message(
                            cmd::ACK,
                            [protocol::u64_frame(0), protocol::u64_frame(tag)],
                        ),
                        None,
                    );
                    Err(err)
                }
            },
            Answer::Empty => Ok(None),
            other => Err(unexpected(other)),
        }
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(busbar_core::ceil_millis(d)).unwrap_or(u32::MAX)
}

pub(crate) fn unexpected(answer: Answer) -> Error {
    Error::transport(format!("unexpected answer from the zmq broker: {answer:?}"))
}

impl Drop for ZmqBus {
    fn drop(&mut self) {
        // Ends the connection task, which says BYE so the broker frees everything.
        let _ = self.shared.out.send(Outbound::Bye(None));
    }
}

#[async_trait]
impl EventBus for ZmqBus {
    fn name(&self) -> &'static str {
        "zmq"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Queue items live in the broker's memory: they outlive the processes
            // that put them, not a broker restart.
            persistence: false,
            ..Capabilities::FULL
        }
    }

    fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    async fn publish(&self, event: Envelope) -> Result<()> {
        let shared = &*self.shared;
        shared.check_open()?;
        let bytes = wire::encode(&event)?;
        let mut link = shared.link.subscribe();
        let permit = loop {
            if !*link.borrow_and_update() {
                break shared.budget.clone().try_acquire_owned().map_err(|_| {
                    Error::transport(format!(
                        "the zmq broker at {} is unreachable and the publish buffer ({} events) is full",
                        shared.config.endpoint, shared.config.publish_buffer
                    ))
                })?;
            }
            // Connected: wait for room (backpressure), unless the link drops.
            tokio::select! {
                permit = shared.budget.clone().acquire_owned() => {
                    break permit.map_err(|_| Error::Closed)?;
                }
                changed = link.changed() => {
                    if changed.is_err() {
                        return Err(Error::Closed);
                    }
                }
            }
        };
        shared
            .out
            .send(Outbound::Publish(bytes, permit))
            .map_err(|_| Error::Closed)
    }

    async fn subscribe(
        &self,
        pattern: &Pattern,
        options: SubscribeOptions,
    ) -> Result<RawSubscription> {
        let shared = &self.shared;
        shared.check_open()?;
        let id = shared.id();
        let (sender, receiver) = mailbox(options.capacity, shared.stats.clone());
        lock(&shared.subs).insert(
            id,
            Sub {
                pattern: pattern.clone(),
                sender,
            },
        );
        let weak = Arc::downgrade(shared);
        let guard = Guard::new(move || {
            if let Some(shared) = weak.upgrade() {
                if lock(&shared.subs).remove(&id).is_some() {
                    shared.command(
                        protocol::message(cmd::UNSUBSCRIBE, [protocol::u64_frame(id)]),
                        None,
                    );
                }
            }
        });
        // Durable: if the connection drops now, the replay after reconnecting
        // re-sends it with the same id and its confirmation completes this wait.
        let pending = shared.register(id, true);
        if shared.is_connected() {
            shared.command(
                protocol::message(
                    cmd::SUBSCRIBE,
                    [
                        protocol::u64_frame(id),
                        protocol::text_frame(pattern.as_str()),
                    ],
                ),
                None,
            );
        }
        match pending.answer(shared.config.op_timeout, shared).await? {
            Answer::Ok => Ok(RawSubscription::new(pattern.clone(), receiver, guard)),
            other => Err(unexpected(other)),
        }
    }

    async fn queue_put(&self, item: Envelope) -> Result<()> {
        outage::put(&self.shared, wire::encode(&item)?).await
    }

    async fn queue_get(&self, queue: &Name, timeout: Duration) -> Result<Option<Envelope>> {
        Ok(self
            .fetch(queue, timeout, GET_VISIBILITY)
            .await?
            .map(|(_, _, envelope)| envelope))
    }

    async fn queue_receive(
        &self,
        queue: &Name,
        timeout: Duration,
        visibility: Duration,
    ) -> Result<Option<RawDelivery>> {
        // At least 1 ms: 0 would mean a plain get, settled as it leaves the broker.
        let visibility = visibility.max(Duration::from_millis(1));
        match self.fetch(queue, timeout, visibility).await? {
            None => Ok(None),
            Some((tag, attempt, envelope)) => {
                let acker = ZmqAcker::new(self.shared.clone(), tag);
                Ok(Some(RawDelivery::new(envelope, attempt, Box::new(acker))))
            }
        }
    }

    async fn queue_len(&self, queue: &Name) -> Result<usize> {
        let shared = &*self.shared;
        let req = shared.id();
        let frames = protocol::message(
            cmd::LEN,
            [protocol::u64_frame(req), protocol::text_frame(queue)],
        );
        match shared
            .request(req, frames, shared.config.op_timeout)
            .await?
        {
            Answer::Count(n) => Ok(n as usize),
            other => Err(unexpected(other)),
        }
    }

    async fn serve(&self, method: &Name, handler: Arc<dyn Handler>) -> Result<Guard> {
        let shared = &self.shared;
        shared.check_open()?;
        let id = shared.id();
        lock(&shared.serves).insert(
            id,
            Serve {
                method: method.clone(),
                handler,
            },
        );
        let weak = Arc::downgrade(shared);
        let guard = Guard::new(move || {
            if let Some(shared) = weak.upgrade() {
                if lock(&shared.serves).remove(&id).is_some() {
                    shared.command(
                        protocol::message(cmd::UNSERVE, [protocol::u64_frame(id)]),
                        None,
                    );
                }
            }
        });
        let pending = shared.register(id, true);
        if shared.is_connected() {
            shared.command(
                protocol::message(
                    cmd::SERVE,
                    [protocol::u64_frame(id), protocol::text_frame(method)],
                ),
                None,
            );
        }
        match pending.answer(shared.config.op_timeout, shared).await? {
            Answer::Ok => Ok(guard),
            other => Err(unexpected(other)),
        }
    }

    async fn call(&self, request: Envelope) -> Result<Envelope> {
        calls::call(&self.shared, request).await
    }

    async fn call_all(&self, request: Envelope) -> Result<Vec<Result<Envelope>>> {
        calls::call_all(&self.shared, request).await
    }

    async fn shutdown(&self) -> Result<()> {
        let shared = &self.shared;
        if shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // No new requests: withdraw every provider, then let running handlers finish
        // (their replies travel before BYE, on the same ordered channel).
        let serves: Vec<u64> = lock(&shared.serves).drain().map(|(id, _)| id).collect();
        for id in serves {
            shared.command(
                protocol::message(cmd::UNSERVE, [protocol::u64_frame(id)]),
                None,
            );
        }
        if !shared.in_flight.wait_idle(SHUTDOWN_GRACE).await {
            tracing::warn!(
                running = shared.in_flight.running(),
                "shutdown: handlers still running after the grace period"
            );
        }
        let (done, finished) = oneshot::channel();
        if shared.out.send(Outbound::Bye(Some(done))).is_ok() {
            let _ = tokio::time::timeout(shared.config.op_timeout, finished).await;
        }
        Ok(())
    }

    fn kill(&self) -> Result<()> {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::Release);
        shared.in_flight.kill();
        // Dropping the socket with the task closes the connection: no BYE, as
        // when a process dies; the broker sees it go.
        if let Some(task) = lock(&shared.connection).take() {
            task.abort();
        }
        shared.set_connected(false);
        Ok(())
    }
}
