//! The three workloads, written once over small traits so busbar and the raw
//! baselines run exactly the same loop, counted the same way.

use super::sample::{Factory, Sample};
use super::Plan;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a subscriber saw next.
pub(crate) enum Next {
    /// An event.
    Sample(Sample),
    /// The subscriber fell behind and this many events were dropped for it.
    Lagged(u64),
    /// Something that was not a good event (decode error, transport error).
    Error(String),
    /// The stream ended.
    End,
}

/// Publishes events.
pub(crate) trait EventSink: Send + Sync + 'static {
    /// Publishes one event.
    fn publish(&self, sample: &Sample) -> impl Future<Output = Result<(), String>> + Send;
}

/// Receives events.
pub(crate) trait EventSource: Send + 'static {
    /// The next event.
    fn next(&mut self) -> impl Future<Output = Next> + Send;
}

/// Puts items on a queue.
pub(crate) trait Producer: Send + Sync + 'static {
    /// Puts one item.
    fn put(&self, sample: &Sample) -> impl Future<Output = Result<(), String>> + Send;
}

/// Takes items from a queue.
pub(crate) trait Consumer: Send + 'static {
    /// Takes one item, waiting up to `wait`.
    fn take(
        &mut self,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<Sample>, String>> + Send;
}

/// Calls the echo method.
pub(crate) trait Caller: Send + Sync + 'static {
    /// One call; the answer is the request echoed.
    fn call(&self, sample: &Sample) -> impl Future<Output = Result<Sample, String>> + Send;
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Percentiles {
    /// Median.
    pub(crate) p50: f64,
    /// 90th percentile.
    pub(crate) p90: f64,
    /// 99th percentile.
    pub(crate) p99: f64,
    /// 99.9th percentile.
    pub(crate) p999: f64,
    /// Largest.
    pub(crate) max: f64,
    /// Mean.
    pub(crate) mean: f64,
}

impl Percentiles {
    fn of(hist: &Histogram<u64>) -> Percentiles {
        if hist.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            mean: hist.mean() / 1000.0,
        }
    }
}

/// One point of the throughput-over-time series.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Point {
    /// Seconds since the run started.
    pub(crate) t: f64,
    /// Completions per second over the last interval.
    pub(crate) rate: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    /// What ran: `busbar memory://`, `raw tokio channels`, ...
    pub(crate) label: String,
    /// Messages published / items put / calls made successfully.
    pub(crate) sent: u64,
    /// Sends that failed.
    pub(crate) send_errors: u64,
    /// Deliveries expected (pub/sub: messages x subscribers).
    pub(crate) expected: u64,
    /// Distinct deliveries / items / answers received.
    pub(crate) received: u64,
    /// Deliveries of a message a receiver already had.
    pub(crate) duplicates: u64,
    /// Expected deliveries that never came.
    pub(crate) lost: u64,
    /// Deliveries the transport reported as dropped for a slow subscriber.
    pub(crate) lagged: u64,
    /// Receive errors (decode, transport, RPC failures, crossed answers).
    pub(crate) errors: u64,
    /// The first error seen, if any.
    pub(crate) first_error: Option<String>,
    /// Seconds from the first send to the last completion.
    pub(crate) duration_s: f64,
    /// Seconds the senders took.
    pub(crate) send_s: f64,
    /// Seconds between the end of sending and the last completion: how far
    /// receivers lagged behind.
    pub(crate) drain_s: f64,
    /// Completions per second over `duration_s`.
    pub(crate) throughput: f64,
    /// Latency percentiles (send to receipt; RPC: round trip).
    pub(crate) latency_us: Percentiles,
    /// Completions per second, sampled every 100 ms.
    pub(crate) timeline: Vec<Point>,
    /// The latency histogram (nanoseconds), for plots.
    #[serde(skip)]
    pub(crate) histogram: Histogram<u64>,
}

impl Outcome {
    /// True when every expected message arrived exactly once and nothing failed.
    pub(crate) fn is_complete(&self) -> bool {
        self.lost == 0 && self.errors == 0 && self.send_errors == 0 && self.duplicates == 0
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 1 h with 3 significant digits; values above are saturated.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// A set of sequence numbers, shareable between tasks.
struct Seen {
    words: Vec<AtomicU64>,
}

impl Seen {
    fn new(n: u64) -> Seen {
        Seen {
            words: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// True the first time `seq` is inserted; `None` when out of range.
    fn insert(&self, seq: u64) -> Option<bool> {
        let word = self.words.get((seq / 64) as usize)?;
        let bit = 1u64 << (seq % 64);
        Some(word.fetch_or(bit, Ordering::Relaxed) & bit == 0)
    }
}

/// What one receiver counted.
struct Tally {
    hist: Histogram<u64>,
    unique: u64,
    duplicates: u64,
    lagged: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: new_histogram(),
            unique: 0,
            duplicates: 0,
            lagged: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn error(&mut self, err: String) {
        self.errors += 1;
        self.first_error.get_or_insert(err);
    }

    /// Counts one received sample whose latency is `latency_ns`.
    fn record(&mut self, meter: &Meter, seen: &Seen, seq: u64, latency_ns: u64) {
        match seen.insert(seq) {
            None => self.error(format!("unexpected sequence number {seq}")),
            Some(false) => self.duplicates += 1,
            Some(true) => {
                self.unique += 1;
                self.hist.saturating_record(latency_ns.max(1));
                meter.completed.fetch_add(1, Ordering::Relaxed);
                meter
                    .last_ns
                    .fetch_max(meter.factory.now_ns(), Ordering::Relaxed);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.lagged += other.lagged;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The run's shared clock and progress counters.
pub(crate) struct Meter {
    factory: Factory,
    completed: AtomicU64,
    last_ns: AtomicU64,
}

impl Meter {
    fn new(factory: Factory) -> Arc<Meter> {
        Arc::new(Meter {
            factory: factory.restarted(),
            completed: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
        })
    }
}

/// Samples the completion counter every 100 ms: progress bar and timeline.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Point>>,
}

impl Sampler {
    fn start(meter: Arc<Meter>, total: u64, label: &str, show: bool) -> Sampler {
        let bar = if show {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label.to_owned());
            bar
        } else {
            ProgressBar::hidden()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut timeline = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let (mut last_t, mut last_c) = (meter.factory.now_s(), 0u64);
            loop {
                tick.tick().await;
                let (t, c) = (
                    meter.factory.now_s(),
                    meter.completed.load(Ordering::Relaxed),
                );
                let dt = (t - last_t).max(1e-9);
                let rate = (c - last_c) as f64 / dt;
                timeline.push(Point { t, rate });
                (last_t, last_c) = (t, c);
                bar.set_position(c);
                bar.set_message(format!("{rate:.0}/s"));
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
            }
            bar.finish_and_clear();
            timeline
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> Vec<Point> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// The sequence numbers sender `index` of `senders` sends.
fn share(msgs: u64, index: usize, senders: usize) -> impl Iterator<Item = u64> {
    (index as u64..msgs).step_by(senders.max(1))
}

/// Sends between two yields of a sender task.
const YIELD_EVERY: u64 = 16;

/// Counts of the senders.
#[derive(Default)]
struct Sent {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Sent {
    fn add(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => self.ok += 1,
            Err(err) => {
                self.errors += 1;
                self.first_error.get_or_insert(err);
            }
        }
    }

    fn merge(&mut self, other: Sent) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Runs `senders` to completion: each sends its share with `inflight` at once.
///
/// The senders are handed back so the caller keeps them (and their sockets,
/// which may still be flushing) alive until the receivers are done.
async fn run_senders<S, F, Fut>(
    plan: &Plan,
    meter: &Arc<Meter>,
    senders: Vec<S>,
    send: F,
) -> (Sent, f64, Vec<Arc<S>>)
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Sample) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let count = senders.len();
    let mut tasks = Vec::new();
    for (index, sender) in senders.into_iter().enumerate() {
        let sender = Arc::new(sender);
        let meter = meter.clone();
        let send = send.clone();
        let (msgs, inflight) = (plan.msgs, plan.inflight.max(1));
        let period = plan.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
        tasks.push(tokio::spawn(async move {
            let mut sent = Sent::default();
            let start = tokio::time::Instant::now();
            let user = sender.clone();
            let results = futures::stream::iter(share(msgs, index, count).enumerate())
                .then(|(i, seq)| async move {
                    // --rate: send the i-th message at start + i periods (open loop).
                    if let Some(period) = period {
                        tokio::time::sleep_until(start + period.mul_f64(i as f64)).await;
                    }
                    seq
                })
                .map(move |seq| send(user.clone(), meter.factory.make(seq)))
                .buffer_unordered(inflight);
            let mut results = std::pin::pin!(results);
            while let Some(result) = results.next().await {
                sent.add(result);
                // A send that completes without waiting (memory://, a channel)
                // never gives the worker thread back, and a receiver it woke
                // sits in that worker's LIFO slot: yield now and then, as any
                // application doing real work between sends would.
                if (sent.ok + sent.errors) % YIELD_EVERY == 0 {
                    tokio::task::yield_now().await;
                }
            }
            (sent, sender)
        }));
    }
    let mut sent = Sent::default();
    let mut kept = Vec::new();
    for task in tasks {
        match task.await {
            Ok((one, sender)) => {
                sent.merge(one);
                kept.push(sender);
            }
            Err(err) => sent.add(Err(format!("sender task failed: {err}"))),
        }
    }
    (sent, meter.factory.now_s(), kept)
}

fn outcome(
    label: String,
    plan: &Plan,
    meter: &Meter,
    sent: Sent,
    send_end_s: f64,
    mut tally: Tally,
    timeline: Vec<Point>,
) -> Outcome {
    let expected = plan.expected();
    let last_s = meter.last_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let duration_s = last_s.max(send_end_s);
    if tally.first_error.is_none() {
        tally.first_error = sent.first_error;
    }
    Outcome {
        label,
        sent: sent.ok,
        send_errors: sent.errors,
        expected,
        received: tally.unique,
        duplicates: tally.duplicates,
        lost: expected.saturating_sub(tally.unique),
        lagged: tally.lagged,
        errors: tally.errors,
        first_error: tally.first_error,
        duration_s,
        send_s: send_end_s,
        drain_s: (last_s - send_end_s).max(0.0),
        throughput: if duration_s > 0.0 {
            tally.unique as f64 / duration_s
        } else {
            0.0
        },
        latency_us: Percentiles::of(&tally.hist),
        timeline,
        histogram: tally.hist,
    }
}

/// Pub/sub: every subscriber should get every message once.
///
/// A subscriber stops when it has all of them, or after `plan.idle` without any.
pub(crate) async fn pubsub<P: EventSink, S: EventSource>(
    plan: &Plan,
    label: String,
    factory: Factory,
    publishers: Vec<P>,
    subscribers: Vec<S>,
) -> Outcome {
    let meter = Meter::new(factory);
    let sampler = Sampler::start(meter.clone(), plan.expected(), &label, plan.progress);
    let mut receivers = Vec::new();
    for mut subscriber in subscribers {
        let meter = meter.clone();
        let (msgs, idle) = (plan.msgs, plan.idle);
        receivers.push(tokio::spawn(async move {
            let seen = Seen::new(msgs);
            let mut tally = Tally::new();
            while tally.unique < msgs {
                match tokio::time::timeout(idle, subscriber.next()).await {
                    Err(_) | Ok(Next::End) => break,
                    Ok(Next::Sample(sample)) => {
                        let latency = meter.factory.now_ns().saturating_sub(sample.sent_ns);
                        tally.record(&meter, &seen, sample.seq, latency);
                    }
                    Ok(Next::Lagged(missed)) => tally.lagged += missed,
                    Ok(Next::Error(err)) => tally.error(err),
                }
            }
            tally
        }));
    }
    let (sent, send_end, publishers) =
        run_senders(plan, &meter, publishers, |publisher, sample| async move {
            publisher.publish(&sample).await
        })
        .await;
    let tally = gather(receivers).await;
    drop(publishers);
    let timeline = sampler.finish().await;
    outcome(label, plan, &meter, sent, send_end, tally, timeline)
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(err) => total.error(format!("receiver task failed: {err}")),
        }
    }
    total
}

/// Queue: producers put every item once; competing consumers take each once.
///
/// Consumers stop when all items were taken, or when the producers are done and
/// nothing came for `plan.idle`.
pub(crate) async fn queue<P: Producer, C: Consumer>(
    plan: &Plan,
    label: String,
    factory: Factory,
    producers: Vec<P>,
    consumers: Vec<C>,
) -> Outcome {
    let meter = Meter::new(factory);
    let sampler = Sampler::start(meter.clone(), plan.expected(), &label, plan.progress);
    let seen = Arc::new(Seen::new(plan.msgs));
    let producers_done = Arc::new(AtomicBool::new(false));
    let poll = plan.idle.min(Duration::from_millis(100));
    let mut receivers = Vec::new();
    for mut consumer in consumers {
        let (meter, seen, done) = (meter.clone(), seen.clone(), producers_done.clone());
        let (msgs, idle) = (plan.msgs, plan.idle);
        receivers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut last_progress = Instant::now();
            while meter.completed.load(Ordering::Relaxed) < msgs {
                match consumer.take(poll).await {
                    Ok(Some(sample)) => {
                        let latency = meter.factory.now_ns().saturating_sub(sample.sent_ns);
                        tally.record(&meter, &seen, sample.seq, latency);
                        last_progress = Instant::now();
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tally.error(err);
                        tokio::time::sleep(poll / 10).await;
                    }
                }
                if done.load(Ordering::Relaxed) && last_progress.elapsed() > idle {
                    break;
                }
            }
            tally
        }));
    }
    let (sent, send_end, producers) =
        run_senders(plan, &meter, producers, |producer, sample| async move {
            producer.put(&sample).await
        })
        .await;
    producers_done.store(true, Ordering::Relaxed);
    let tally = gather(receivers).await;
    drop(producers);
    let timeline = sampler.finish().await;
    outcome(label, plan, &meter, sent, send_end, tally, timeline)
}

/// RPC: callers call the echo method; every answer must be its own request's.
pub(crate) async fn rpc<C: Caller>(
    plan: &Plan,
    label: String,
    factory: Factory,
    callers: Vec<C>,
) -> Outcome {
    let meter = Meter::new(factory);
    let sampler = Sampler::start(meter.clone(), plan.expected(), &label, plan.progress);
    let seen = Arc::new(Seen::new(plan.msgs));
    let tally = Arc::new(Mutex::new(Tally::new()));
    let record = {
        let (meter, seen, tally) = (meter.clone(), seen.clone(), tally.clone());
        move |caller: Arc<C>, sample: Sample| {
            let (meter, seen, tally) = (meter.clone(), seen.clone(), tally.clone());
            async move {
                let started = Instant::now();
                let seq = sample.seq;
                let answer = caller.call(&sample).await;
                let latency = started.elapsed().as_nanos() as u64;
                let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                match answer {
                    Ok(echo) if echo.seq == seq => tally.record(&meter, &seen, seq, latency),
                    Ok(echo) => tally.error(format!(
                        "answers crossed: request {seq} got the answer of {}",
                        echo.seq
                    )),
                    Err(err) => tally.error(err),
                }
                // A failed call is counted by the tally, not as a send error.
                Ok(())
            }
        }
    };
    let (sent, send_end, _callers) = run_senders(plan, &meter, callers, record).await;
    let timeline = sampler.finish().await;
    let tally = std::mem::replace(
        &mut *tally.lock().unwrap_or_else(|p| p.into_inner()),
        Tally::new(),
    );
    outcome(label, plan, &meter, sent, send_end, tally, timeline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_message_once() {
        let mut all: Vec<u64> = (0..3).flat_map(|i| share(10, i, 3)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn seen_detects_duplicates_and_strangers() {
        let seen = Seen::new(100);
        assert_eq!(seen.insert(5), Some(true));
        assert_eq!(seen.insert(5), Some(false));
        assert_eq!(seen.insert(1000), None);
    }
}
