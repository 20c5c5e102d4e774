//! `busbar bench`: throughput and latency of pub/sub, queues and RPC.
//!
//! Every workload runs in this one process, each role on its own connection;
//! every message is counted (lost, duplicated, dropped for lag) and its latency
//! recorded in an HDR histogram. `--raw` runs the same loop on the library the
//! transport is built on, to show busbar's overhead.

mod harness;
mod on_busbar;
mod plot;
mod raw;
mod raw_memory;
mod raw_redis;
mod raw_zmq;
mod report;
mod sample;

use crate::cli::{PlotPath, Workload};
use crate::exit::{CmdResult, Failure};
use crate::output::{print_json, print_line, status};
use clap::Args;
use std::io::IsTerminal;
use std::time::Duration;

/// `busbar bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Roles: pubsub has publishers and subscribers (each subscriber \
    gets every message); queue has producers (--publishers) and competing consumers \
    (--subscribers); rpc has callers (--publishers) and echo servers (--subscribers).\n\n\
    Example: busbar bench pubsub --msgs 100000 --size 256 --raw --plot bench.svg"
)]
pub(crate) struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    pub(crate) workload: Workload,
    /// The bus URL. memory:// (the default) runs everything in this process.
    #[arg(long, env = "BUSBAR_URL", default_value = "memory://")]
    pub(crate) url: String,
    /// Messages (events, items or calls) to send in all.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) msgs: u64,
    /// Approximate size of each encoded message, in bytes.
    #[arg(long, default_value_t = 128)]
    pub(crate) size: usize,
    /// Sends each publisher, producer or caller keeps in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) inflight: u64,
    /// Publishers (pubsub), producers (queue) or callers (rpc).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub(crate) publishers: u64,
    /// Subscribers (pubsub), consumers (queue) or servers (rpc).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub(crate) subscribers: u64,
    /// queue: consumers take items with an acknowledged receive and ack each one
    /// (at least once) instead of a plain get (at most once). The raw baselines
    /// have no acknowledgements and take items plainly.
    #[arg(long)]
    pub(crate) ack: bool,
    /// Messages per second each publisher, producer or caller sends (default: as
    /// fast as it can). A paced run measures latency without queueing.
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub(crate) rate: Option<f64>,
    /// Events a subscriber may buffer before it lags (drops are counted).
    #[arg(long, default_value_t = 65_536)]
    pub(crate) capacity: usize,
    /// Receivers give up after this long without a message; it is also the RPC timeout.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) idle: Duration,
    /// Also run the workload on the raw library underneath (tokio channels for
    /// memory://, zeromq sockets for zmq://, redis-rs for redis://) and show the
    /// overhead side by side.
    #[arg(long)]
    pub(crate) raw: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write a latency-distribution and throughput-over-time chart (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<PlotPath>,
    /// Exit 0 even when messages were lost (they are still reported).
    #[arg(long)]
    pub(crate) allow_loss: bool,
}

/// One benchmark run's parameters.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) workload: Workload,
    pub(crate) msgs: u64,
    pub(crate) inflight: usize,
    pub(crate) publishers: usize,
    pub(crate) subscribers: usize,
    pub(crate) capacity: usize,
    pub(crate) idle: Duration,
    /// Messages per second per sender, if paced.
    pub(crate) rate: Option<f64>,
    /// Queue consumers acknowledge each item.
    pub(crate) ack: bool,
    /// Unique per run, so runs on a shared broker never see each other.
    pub(crate) run_id: String,
    /// Show a progress bar.
    pub(crate) progress: bool,
}

impl Plan {
    /// Deliveries a complete run makes.
    pub(crate) fn expected(&self) -> u64 {
        match self.workload {
            Workload::Pubsub => self.msgs * self.subscribers as u64,
            Workload::Queue | Workload::Rpc => self.msgs,
        }
    }

    /// A topic, queue or method name unique to this run.
    pub(crate) fn name(&self, what: &str) -> String {
        format!("bench.{}.{}.{what}", self.run_id, self.workload.name())
    }

    /// What the two roles are called in this workload.
    pub(crate) fn role_names(&self) -> (&'static str, &'static str) {
        match self.workload {
            Workload::Pubsub => ("publishers", "subscribers"),
            Workload::Queue => ("producers", "consumers"),
            Workload::Rpc => ("callers", "servers"),
        }
    }
}

/// A positive, finite rate.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a positive number of messages per second"
        )),
    }
}

/// Runs the benchmark and prints its report.
pub(crate) async fn run(args: BenchArgs) -> CmdResult {
    let plan = Plan {
        workload: args.workload,
        msgs: args.msgs,
        inflight: args.inflight as usize,
        publishers: args.publishers as usize,
        subscribers: args.subscribers as usize,
        capacity: args.capacity.max(1),
        // A paced receiver legitimately waits one period between messages.
        idle: match args.rate {
            Some(rate) => args.idle.max(Duration::from_secs_f64(2.0 / rate)),
            None => args.idle,
        },
        rate: args.rate,
        ack: args.ack,
        run_id: format!(
            "{}x{}",
            std::process::id(),
            busbar::now_millis() % 1_000_000_000
        ),
        progress: !args.json && std::io::stdout().is_terminal(),
    };
    let factory = sample::Factory::new(args.size);
    let size = factory.encoded_size();
    let busbar = on_busbar::run(&plan, &args.url, factory).await?;
    let raw = if args.raw {
        Some(raw::run(&plan, &args.url, sample::Factory::new(args.size)).await?)
    } else {
        None
    };
    if args.json {
        print_json(&report::json(&plan, &args.url, size, &busbar, raw.as_ref()))?;
    } else {
        print_line(report::table(&plan, size, &busbar, raw.as_ref()).trim_end())?;
    }
    if let Some(path) = &args.plot {
        let outcomes: Vec<_> = std::iter::once(&busbar).chain(raw.as_ref()).collect();
        let title = format!(
            "busbar bench {} on {}",
            plan.workload.name(),
            busbar::redact_url(&args.url)
        );
        plot::draw(path, &title, &outcomes).map_err(Failure::Other)?;
        if !args.json {
            status(&format!("wrote {}", path.display()));
        }
    }
    if !busbar.is_complete() && !args.allow_loss {
        return Err(Failure::BenchIncomplete(format!(
            "incomplete run: {} of {} deliveries lost, {} duplicates, {} errors, {} send errors",
            busbar.lost, busbar.expected, busbar.duplicates, busbar.errors, busbar.send_errors
        )));
    }
    Ok(())
}
