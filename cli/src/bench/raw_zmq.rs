//! The baseline of `zmq://`: the same workloads on bare `zeromq` sockets over
//! loopback TCP, with no broker: PUB/SUB for events, PUSH/PULL for the queue and
//! REQ/REP for RPC. PUB drops messages for a slow subscriber without telling;
//! the harness counts them as lost.

use super::harness::{self, Caller, Consumer, EventSink, EventSource, Next, Outcome, Producer};
use super::sample::{Factory, Sample};
use super::Plan;
use crate::cli::Workload;
use crate::exit::{CmdResult, Failure};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex};
use zeromq::{
    PubSocket, PullSocket, PushSocket, RepSocket, ReqSocket, Socket, SocketRecv, SocketSend,
    SubSocket, ZmqMessage,
};

/// The first frame of a subscription probe, never a JSON sample.
const PROBE: &[u8] = b"probe";
/// How long the subscriptions may take to come up.
const SETUP_DEADLINE: Duration = Duration::from_secs(10);
const LOCAL: &str = "tcp://127.0.0.1:0";

fn failed(what: &str) -> impl Fn(zeromq::ZmqError) -> Failure + '_ {
    move |err| Failure::Other(format!("raw zeromq: {what}: {err}"))
}

fn encode(sample: &Sample) -> Result<ZmqMessage, String> {
    serde_json::to_vec(sample)
        .map(ZmqMessage::from)
        .map_err(|e| e.to_string())
}

fn decode(message: &ZmqMessage) -> Result<Sample, String> {
    let frame = message.get(0).ok_or("an empty message")?;
    serde_json::from_slice(frame).map_err(|e| e.to_string())
}

struct RawPub(Mutex<PubSocket>);

impl EventSink for RawPub {
    async fn publish(&self, sample: &Sample) -> Result<(), String> {
        let message = encode(sample)?;
        self.0
            .lock()
            .await
            .send(message)
            .await
            .map_err(|e| e.to_string())
    }
}

struct RawSub(SubSocket);

impl EventSource for RawSub {
    async fn next(&mut self) -> Next {
        loop {
            match self.0.recv().await {
                Ok(message) if message.get(0).is_some_and(|f| f.starts_with(PROBE)) => continue,
                Ok(message) => {
                    return match decode(&message) {
                        Ok(sample) => Next::Sample(sample),
                        Err(err) => Next::Error(err),
                    }
                }
                Err(err) => return Next::Error(err.to_string()),
            }
        }
    }
}

struct RawPush(Mutex<PushSocket>);

impl Producer for RawPush {
    async fn put(&self, sample: &Sample) -> Result<(), String> {
        let message = encode(sample)?;
        self.0
            .lock()
            .await
            .send(message)
            .await
            .map_err(|e| e.to_string())
    }
}

struct RawPull(PullSocket);

impl Consumer for RawPull {
    async fn take(&mut self, wait: Duration) -> Result<Option<Sample>, String> {
        match tokio::time::timeout(wait, self.0.recv()).await {
            Err(_) => Ok(None),
            Ok(Ok(message)) => decode(&message).map(Some),
            Ok(Err(err)) => Err(err.to_string()),
        }
    }
}

/// A caller with `inflight` REQ sockets, each connected to every server.
struct RawReq {
    idle: mpsc::Sender<ReqSocket>,
    pool: Mutex<mpsc::Receiver<ReqSocket>>,
    timeout: Duration,
}

impl Caller for RawReq {
    async fn call(&self, sample: &Sample) -> Result<Sample, String> {
        let message = encode(sample)?;
        let mut socket = self
            .pool
            .lock()
            .await
            .recv()
            .await
            .ok_or("no free socket")?;
        socket.send(message).await.map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(self.timeout, socket.recv())
            .await
            .map_err(|_| "the operation timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        // A socket whose request timed out is dropped, not reused.
        let _ = self.idle.send(socket).await;
        decode(&answer)
    }
}

async fn bound<S: Socket>(mut socket: S) -> CmdResult<(S, String)> {
    let endpoint = socket.bind(LOCAL).await.map_err(failed("bind"))?;
    Ok((socket, endpoint.to_string()))
}

/// Sends probes from every publisher until every subscriber has seen one from
/// each, so the timed run starts with every subscription in place.
async fn await_subscriptions(publishers: &[RawPub], subscribers: &mut [RawSub]) -> CmdResult {
    let ready = Arc::new(AtomicBool::new(false));
    let probing = {
        let ready = ready.clone();
        async move {
            while !ready.load(Ordering::Relaxed) {
                for (index, publisher) in publishers.iter().enumerate() {
                    let probe = ZmqMessage::from(format!("probe {index}"));
                    let _ = publisher.0.lock().await.send(probe).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let count = publishers.len();
    let listening = async {
        let deadline = Instant::now() + SETUP_DEADLINE;
        for subscriber in subscribers.iter_mut() {
            let mut seen = vec![false; count];
            while seen.iter().any(|s| !s) {
                let left = deadline.saturating_duration_since(Instant::now());
                let message = tokio::time::timeout(left, subscriber.0.recv())
                    .await
                    .map_err(|_| {
                        Failure::Other("raw zeromq: the subscriptions did not come up".into())
                    })?
                    .map_err(failed("recv"))?;
                let text = message
                    .get(0)
                    .map(|f| String::from_utf8_lossy(f).into_owned());
                if let Some(index) = text
                    .as_deref()
                    .and_then(|t| t.strip_prefix("probe "))
                    .and_then(|i| i.parse::<usize>().ok())
                {
                    if let Some(slot) = seen.get_mut(index) {
                        *slot = true;
                    }
                }
            }
        }
        ready.store(true, Ordering::Relaxed);
        CmdResult::Ok(())
    };
    let ((), outcome) = tokio::join!(probing, listening);
    outcome
}

/// Runs `plan` on zeromq sockets.
pub(crate) async fn run(plan: &Plan, factory: Factory) -> CmdResult<Outcome> {
    let label = "raw zeromq sockets".to_owned();
    Ok(match plan.workload {
        Workload::Pubsub => {
            let mut subscribers = Vec::new();
            let mut endpoints = Vec::new();
            for _ in 0..plan.subscribers {
                let (mut socket, endpoint) = bound(SubSocket::new()).await?;
                socket.subscribe("").await.map_err(failed("subscribe"))?;
                subscribers.push(RawSub(socket));
                endpoints.push(endpoint);
            }
            let mut publishers = Vec::new();
            for _ in 0..plan.publishers {
                let mut socket = PubSocket::new();
                for endpoint in &endpoints {
                    socket.connect(endpoint).await.map_err(failed("connect"))?;
                }
                publishers.push(RawPub(Mutex::new(socket)));
            }
            await_subscriptions(&publishers, &mut subscribers).await?;
            harness::pubsub(plan, label, factory, publishers, subscribers).await
        }
        Workload::Queue => {
            let mut consumers = Vec::new();
            let mut endpoints = Vec::new();
            for _ in 0..plan.subscribers {
                let (socket, endpoint) = bound(PullSocket::new()).await?;
                consumers.push(RawPull(socket));
                endpoints.push(endpoint);
            }
            let mut producers = Vec::new();
            for _ in 0..plan.publishers {
                let mut socket = PushSocket::new();
                for endpoint in &endpoints {
                    socket.connect(endpoint).await.map_err(failed("connect"))?;
                }
                producers.push(RawPush(Mutex::new(socket)));
            }
            harness::queue(plan, label, factory, producers, consumers).await
        }
        Workload::Rpc => {
            let mut servers = Vec::new();
            let mut endpoints = Vec::new();
            for _ in 0..plan.subscribers {
                let (mut socket, endpoint) = bound(RepSocket::new()).await?;
                endpoints.push(endpoint);
                servers.push(tokio::spawn(async move {
                    while let Ok(request) = socket.recv().await {
                        let answer = decode(&request)
                            .and_then(|sample| encode(&sample))
                            .unwrap_or_else(ZmqMessage::from);
                        if socket.send(answer).await.is_err() {
                            break;
                        }
                    }
                }));
            }
            let mut callers = Vec::new();
            for _ in 0..plan.publishers {
                let (idle, pool) = mpsc::channel(plan.inflight);
                for _ in 0..plan.inflight {
                    let mut socket = ReqSocket::new();
                    for endpoint in &endpoints {
                        socket.connect(endpoint).await.map_err(failed("connect"))?;
                    }
                    let _ = idle.send(socket).await;
                }
                callers.push(RawReq {
                    idle,
                    pool: Mutex::new(pool),
                    timeout: plan.idle,
                });
            }
            let outcome = harness::rpc(plan, label, factory, callers).await;
            for server in servers {
                server.abort();
            }
            outcome
        }
    })
}
