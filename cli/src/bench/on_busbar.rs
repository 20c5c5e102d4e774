//! The workloads on a busbar [`Bus`], one connection per publisher, subscriber,
//! producer, consumer, caller and server, as separate processes would have.

use super::harness::{self, Caller, Consumer, EventSink, EventSource, Next, Outcome, Producer};
use super::sample::{Factory, Sample};
use super::Plan;
use crate::exit::{CmdResult, Context};
use busbar::{Bus, Error, Fault, Pattern, Queue, Stub, SubscribeOptions, Subscription};
use futures::StreamExt;
use std::time::Duration;

struct Publisher {
    bus: Bus,
    topic: String,
}

impl EventSink for Publisher {
    async fn publish(&self, sample: &Sample) -> Result<(), String> {
        self.bus
            .publish_to(&self.topic, sample)
            .await
            .map_err(|e| e.to_string())
    }
}

struct Subscriber(Subscription<Sample>);

impl EventSource for Subscriber {
    async fn next(&mut self) -> Next {
        match self.0.next().await {
            None => Next::End,
            Some(Ok(sample)) => Next::Sample(sample),
            Some(Err(Error::Lagged { missed })) => Next::Lagged(missed),
            Some(Err(err)) => Next::Error(err.to_string()),
        }
    }
}

/// A queue end; `ack` makes the consumer take items with `receive` and
/// acknowledge each (at least once) instead of `get` (at most once).
struct QueueEnd {
    queue: Queue<Sample>,
    ack: bool,
}

impl Producer for QueueEnd {
    async fn put(&self, sample: &Sample) -> Result<(), String> {
        self.queue.put(sample).await.map_err(|e| e.to_string())
    }
}

impl Consumer for QueueEnd {
    async fn take(&mut self, wait: Duration) -> Result<Option<Sample>, String> {
        if !self.ack {
            return self.queue.get(wait).await.map_err(|e| e.to_string());
        }
        let Some(delivery) = self.queue.receive(wait).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let sample = delivery.value().clone();
        delivery.ack().await.map_err(|e| e.to_string())?;
        Ok(Some(sample))
    }
}

struct RpcCaller(Stub<Sample, Sample>);

impl Caller for RpcCaller {
    async fn call(&self, sample: &Sample) -> Result<Sample, String> {
        self.0
            .call(sample)
            .await
            .map_err(|e| format!("{e} [{}]", e.kind()))
    }
}

async fn buses(url: &str, n: usize) -> CmdResult<Vec<Bus>> {
    let mut buses = Vec::with_capacity(n);
    for _ in 0..n {
        buses.push(
            Bus::connect(url)
                .await
                .context(|| format!("cannot connect to {}", busbar::redact_url(url)))?,
        );
    }
    Ok(buses)
}

async fn shutdown(buses: impl IntoIterator<Item = Bus>) {
    for bus in buses {
        let _ = bus.shutdown().await;
    }
}

/// Runs `plan` on the bus at `url`.
pub(crate) async fn run(plan: &Plan, url: &str, factory: Factory) -> CmdResult<Outcome> {
    let label = format!("busbar {}", busbar::redact_url(url));
    let senders = buses(url, plan.publishers).await?;
    let receivers = buses(url, plan.subscribers).await?;
    let outcome = match plan.workload {
        crate::cli::Workload::Pubsub => {
            let topic = plan.name("events");
            let options = SubscribeOptions {
                capacity: plan.capacity,
            };
            let mut subscribers = Vec::new();
            for bus in &receivers {
                let pattern = Pattern::new(&topic)?;
                let sub = bus
                    .subscribe_with::<Sample>(pattern, options.clone())
                    .await
                    .context(|| format!("cannot subscribe to {topic}"))?;
                subscribers.push(Subscriber(sub));
            }
            let publishers = senders
                .iter()
                .map(|bus| Publisher {
                    bus: bus.clone(),
                    topic: topic.clone(),
                })
                .collect();
            harness::pubsub(plan, label, factory, publishers, subscribers).await
        }
        crate::cli::Workload::Queue => {
            let name = plan.name("jobs");
            let end = |bus: &Bus| {
                bus.queue::<Sample>(&name).map(|queue| QueueEnd {
                    queue,
                    ack: plan.ack,
                })
            };
            let producers = senders.iter().map(end).collect::<Result<Vec<_>, _>>()?;
            let consumers = receivers.iter().map(end).collect::<Result<Vec<_>, _>>()?;
            harness::queue(plan, label, factory, producers, consumers).await
        }
        crate::cli::Workload::Rpc => {
            let method = plan.name("echo");
            let mut providers = Vec::new();
            for bus in &receivers {
                providers.push(
                    bus.expose(
                        &method,
                        |sample: Sample| async move { Ok::<_, Fault>(sample) },
                    )
                    .await
                    .context(|| format!("cannot serve {method}"))?,
                );
            }
            let callers = senders
                .iter()
                .map(|bus| {
                    bus.stub::<Sample, Sample>(&method)
                        .map(|stub| RpcCaller(stub.timeout(plan.idle)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let outcome = harness::rpc(plan, label, factory, callers).await;
            drop(providers);
            outcome
        }
    };
    shutdown(senders.into_iter().chain(receivers)).await;
    Ok(outcome)
}
