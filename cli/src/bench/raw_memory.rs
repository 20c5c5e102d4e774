//! The baseline of `memory://`: the same workloads on bare tokio channels,
//! carrying the same JSON bytes (encoded by the sender, decoded by the receiver).

use super::harness::{self, Caller, Consumer, EventSink, EventSource, Next, Outcome, Producer};
use super::sample::{Factory, Sample};
use super::Plan;
use crate::cli::Workload;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, Mutex};

fn encode(sample: &Sample) -> Result<Bytes, String> {
    serde_json::to_vec(sample)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

fn decode(bytes: &[u8]) -> Result<Sample, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

struct Broadcaster(broadcast::Sender<Bytes>);

impl EventSink for Broadcaster {
    async fn publish(&self, sample: &Sample) -> Result<(), String> {
        // Like an event bus, publishing with nobody listening is not an error.
        let _ = self.0.send(encode(sample)?);
        Ok(())
    }
}

struct Listener(broadcast::Receiver<Bytes>);

impl EventSource for Listener {
    async fn next(&mut self) -> Next {
        match self.0.recv().await {
            Ok(bytes) => match decode(&bytes) {
                Ok(sample) => Next::Sample(sample),
                Err(err) => Next::Error(err),
            },
            Err(broadcast::error::RecvError::Lagged(missed)) => Next::Lagged(missed),
            Err(broadcast::error::RecvError::Closed) => Next::End,
        }
    }
}

struct Channel {
    tx: mpsc::UnboundedSender<Bytes>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Bytes>>>,
}

impl Producer for Channel {
    async fn put(&self, sample: &Sample) -> Result<(), String> {
        self.tx.send(encode(sample)?).map_err(|e| e.to_string())
    }
}

impl Consumer for Channel {
    async fn take(&mut self, wait: Duration) -> Result<Option<Sample>, String> {
        let mut rx = self.rx.lock().await;
        match tokio::time::timeout(wait, rx.recv()).await {
            Err(_) | Ok(None) => Ok(None),
            Ok(Some(bytes)) => decode(&bytes).map(Some),
        }
    }
}

type Request = (Bytes, oneshot::Sender<Bytes>);

struct RequestSender(mpsc::Sender<Request>);

impl Caller for RequestSender {
    async fn call(&self, sample: &Sample) -> Result<Sample, String> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send((encode(sample)?, reply))
            .await
            .map_err(|_| "no server".to_owned())?;
        let bytes = answer.await.map_err(|_| "the server dropped the call")?;
        decode(&bytes)
    }
}

/// Runs `plan` on tokio channels.
pub(crate) async fn run(plan: &Plan, factory: Factory) -> Outcome {
    let label = "raw tokio channels".to_owned();
    match plan.workload {
        Workload::Pubsub => {
            let (tx, _) = broadcast::channel(plan.capacity);
            let subscribers = (0..plan.subscribers)
                .map(|_| Listener(tx.subscribe()))
                .collect();
            let publishers = (0..plan.publishers)
                .map(|_| Broadcaster(tx.clone()))
                .collect();
            drop(tx);
            harness::pubsub(plan, label, factory, publishers, subscribers).await
        }
        Workload::Queue => {
            let (tx, rx) = mpsc::unbounded_channel();
            let rx = Arc::new(Mutex::new(rx));
            let end = || Channel {
                tx: tx.clone(),
                rx: rx.clone(),
            };
            let producers = (0..plan.publishers).map(|_| end()).collect();
            let consumers = (0..plan.subscribers).map(|_| end()).collect();
            harness::queue(plan, label, factory, producers, consumers).await
        }
        Workload::Rpc => {
            let (tx, rx) = mpsc::channel::<Request>(1024);
            let rx = Arc::new(Mutex::new(rx));
            let servers: Vec<_> = (0..plan.subscribers)
                .map(|_| {
                    let rx = rx.clone();
                    tokio::spawn(async move {
                        loop {
                            let next = rx.lock().await.recv().await;
                            let Some((request, reply)) = next else { break };
                            if let Ok(sample) = decode(&request) {
                                if let Ok(bytes) = encode(&sample) {
                                    let _ = reply.send(bytes);
                                }
                            }
                        }
                    })
                })
                .collect();
            let callers = (0..plan.publishers)
                .map(|_| RequestSender(tx.clone()))
                .collect();
            drop(tx);
            let outcome = harness::rpc(plan, label, factory, callers).await;
            for server in servers {
                server.abort();
            }
            outcome
        }
    }
}
