//! The baseline of `redis://`: the same workloads with bare redis-rs commands:
//! PUBLISH/SUBSCRIBE for events, RPUSH/BLPOP for the queue, and for RPC a
//! request list popped by the servers with one reply list per caller slot.

use super::harness::{self, Caller, Consumer, EventSink, EventSource, Next, Outcome, Producer};
use super::sample::{Factory, Sample};
use super::Plan;
use crate::cli::Workload;
use crate::exit::{CmdResult, Failure};
use futures::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::{AsyncConnectionConfig, Client};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

fn failed(what: &str) -> impl Fn(redis::RedisError) -> Failure + '_ {
    move |err| Failure::Other(format!("raw redis: {what}: {err}"))
}

fn encode(sample: &Sample) -> Result<Vec<u8>, String> {
    serde_json::to_vec(sample).map_err(|e| e.to_string())
}

fn decode(bytes: &[u8]) -> Result<Sample, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// A connection with no response timeout, for blocking pops.
async fn connection(client: &Client) -> CmdResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(failed("connect"))
}

/// `BLPOP key` for at most `wait`; the popped value.
async fn blpop(
    con: &mut MultiplexedConnection,
    key: &str,
    wait: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let popped: Option<(String, Vec<u8>)> = redis::cmd("BLPOP")
        .arg(key)
        .arg(wait.as_secs_f64().max(0.01))
        .query_async(con)
        .await
        .map_err(|e| e.to_string())?;
    Ok(popped.map(|(_, value)| value))
}

async fn rpush(con: &mut MultiplexedConnection, key: &str, value: Vec<u8>) -> Result<(), String> {
    redis::cmd("RPUSH")
        .arg(key)
        .arg(value)
        .query_async::<i64>(con)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

struct RawPublisher {
    con: MultiplexedConnection,
    channel: String,
}

impl EventSink for RawPublisher {
    async fn publish(&self, sample: &Sample) -> Result<(), String> {
        let mut con = self.con.clone();
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(encode(sample)?)
            .query_async::<i64>(&mut con)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

struct RawSubscriber(PubSubStream);

impl EventSource for RawSubscriber {
    async fn next(&mut self) -> Next {
        match self.0.next().await {
            None => Next::End,
            Some(message) => match decode(message.get_payload_bytes()) {
                Ok(sample) => Next::Sample(sample),
                Err(err) => Next::Error(err),
            },
        }
    }
}

struct RawList {
    con: MultiplexedConnection,
    key: String,
}

impl Producer for RawList {
    async fn put(&self, sample: &Sample) -> Result<(), String> {
        rpush(&mut self.con.clone(), &self.key, encode(sample)?).await
    }
}

impl Consumer for RawList {
    async fn take(&mut self, wait: Duration) -> Result<Option<Sample>, String> {
        match blpop(&mut self.con, &self.key, wait).await? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some),
        }
    }
}

/// One caller slot: its own connection and reply list.
struct Slot {
    con: MultiplexedConnection,
    reply: String,
}

struct RawCaller {
    idle: mpsc::Sender<Slot>,
    pool: Mutex<mpsc::Receiver<Slot>>,
    requests: String,
    timeout: Duration,
}

impl Caller for RawCaller {
    async fn call(&self, sample: &Sample) -> Result<Sample, String> {
        let mut slot = self.pool.lock().await.recv().await.ok_or("no free slot")?;
        // The request: the reply list's name, a newline, the JSON.
        let mut request = slot.reply.clone().into_bytes();
        request.push(b'\n');
        request.extend(encode(sample)?);
        rpush(&mut slot.con, &self.requests, request).await?;
        let answer = blpop(&mut slot.con, &slot.reply, self.timeout)
            .await?
            .ok_or("the operation timed out")?;
        let _ = self.idle.send(slot).await;
        decode(&answer)
    }
}

/// Answers requests until `stop` is set.
async fn serve(mut con: MultiplexedConnection, requests: String, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(request)) = blpop(&mut con, &requests, Duration::from_millis(100)).await else {
            continue;
        };
        let Some(split) = request.iter().position(|&b| b == b'\n') else {
            continue;
        };
        let reply = String::from_utf8_lossy(&request[..split]).into_owned();
        if let Ok(answer) = decode(&request[split + 1..]).and_then(|s| encode(&s)) {
            let _ = rpush(&mut con, &reply, answer).await;
        }
    }
}

/// A client for the server of a busbar Redis URL: busbar's own parameters
/// dropped, its TLS files (`tls_ca`, `tls_cert`, `tls_key`) kept.
fn client(url: &str) -> CmdResult<Client> {
    busbar::redis::Config::from_url(url)
        .and_then(|config| config.redis_client())
        .map_err(|err| Failure::Other(format!("raw redis: {err}")))
}

/// Runs `plan` with redis-rs on the server of `url`.
pub(crate) async fn run(plan: &Plan, url: &str, factory: Factory) -> CmdResult<Outcome> {
    let label = "raw redis-rs".to_owned();
    let client = client(url)?;
    let prefix = format!("busbar-raw:{}", plan.name("x"));
    Ok(match plan.workload {
        Workload::Pubsub => {
            let channel = format!("{prefix}:events");
            let mut subscribers = Vec::new();
            for _ in 0..plan.subscribers {
                let mut pubsub = client.get_async_pubsub().await.map_err(failed("connect"))?;
                pubsub
                    .subscribe(&channel)
                    .await
                    .map_err(failed("subscribe"))?;
                subscribers.push(RawSubscriber(pubsub.into_on_message()));
            }
            let mut publishers = Vec::new();
            for _ in 0..plan.publishers {
                publishers.push(RawPublisher {
                    con: connection(&client).await?,
                    channel: channel.clone(),
                });
            }
            harness::pubsub(plan, label, factory, publishers, subscribers).await
        }
        Workload::Queue => {
            let key = format!("{prefix}:jobs");
            let mut producers = Vec::new();
            for _ in 0..plan.publishers {
                producers.push(RawList {
                    con: connection(&client).await?,
                    key: key.clone(),
                });
            }
            let mut consumers = Vec::new();
            for _ in 0..plan.subscribers {
                consumers.push(RawList {
                    con: connection(&client).await?,
                    key: key.clone(),
                });
            }
            let outcome = harness::queue(plan, label, factory, producers, consumers).await;
            let mut con = connection(&client).await?;
            let _ = redis::cmd("DEL")
                .arg(&key)
                .query_async::<i64>(&mut con)
                .await;
            outcome
        }
        Workload::Rpc => {
            let requests = format!("{prefix}:requests");
            let stop = Arc::new(AtomicBool::new(false));
            let mut servers = Vec::new();
            for _ in 0..plan.subscribers {
                let con = connection(&client).await?;
                servers.push(tokio::spawn(serve(con, requests.clone(), stop.clone())));
            }
            let mut callers = Vec::new();
            for caller in 0..plan.publishers {
                let (idle, pool) = mpsc::channel(plan.inflight);
                for slot in 0..plan.inflight {
                    let _ = idle
                        .send(Slot {
                            con: connection(&client).await?,
                            reply: format!("{prefix}:reply:{caller}:{slot}"),
                        })
                        .await;
                }
                callers.push(RawCaller {
                    idle,
                    pool: Mutex::new(pool),
                    requests: requests.clone(),
                    timeout: plan.idle,
                });
            }
            let outcome = harness::rpc(plan, label, factory, callers).await;
            stop.store(true, Ordering::Relaxed);
            for server in servers {
                let _ = server.await;
            }
            outcome
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busbar_parameters_are_removed_and_tls_files_read() {
        let plain = client("redis://127.0.0.1:1/?namespace=x").unwrap();
        assert_eq!(
            plain.get_connection_info().addr().to_string(),
            "127.0.0.1:1"
        );
        let err = client("rediss://127.0.0.1:1/?tls_ca=/nonexistent/ca.pem").unwrap_err();
        assert!(
            format!("{err:?}").contains("/nonexistent/ca.pem"),
            "{err:?}"
        );
        assert!(client("redis+cluster://127.0.0.1:1,127.0.0.1:2").is_err());
    }
}
