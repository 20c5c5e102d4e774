//! The command line: every subcommand and flag.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// busbar: pub/sub events, work queues and RPC on any transport, from the shell.
///
/// The transport is chosen by URL: memory:// (this process only), zmq://HOST:PORT
/// (a `busbar broker`), redis://HOST:PORT.
#[derive(Debug, Parser)]
#[command(name = "busbar", version, about, long_about, after_help = crate::exit::help_table())]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Publish JSON events on a topic (from the argument, or one per line on stdin).
    Pub(PubArgs),
    /// Print every event matching a pattern as one JSON line {topic, headers, payload}.
    ///
    /// Each line is {"topic": .., "headers": [[key, value], ..], "payload": ..}:
    /// every header in order, repeats included; the payload as its own JSON text
    /// when it is JSON, else "payload_base64" with its exact bytes (and
    /// "content_type" when that is not application/json).
    Sub(SubArgs),
    /// Call an RPC method and print its answer (or every provider's with --all).
    Call(CallArgs),
    /// Serve an RPC method: echo the request, or answer with a shell command's output.
    Serve(ServeArgs),
    /// Put, take and count items of a work queue.
    Queue(QueueArgs),
    /// Run the ZeroMQ broker that zmq:// URLs connect to.
    Broker(BrokerArgs),
    /// Measure throughput and latency of pub/sub, queues or RPC on a transport.
    Bench(crate::bench::BenchArgs),
}

/// How to reach the bus.
#[derive(Debug, Args)]
pub(crate) struct Connect {
    /// The bus URL: zmq://HOST:PORT, redis://HOST:PORT, memory://.
    #[arg(long, env = "BUSBAR_URL")]
    pub(crate) url: String,
    /// Print this connection's counters (JSON) on stderr before exiting.
    #[arg(long)]
    pub(crate) stats: bool,
}

/// `busbar pub`.
#[derive(Debug, Args)]
pub(crate) struct PubArgs {
    /// The topic, e.g. orders.created.
    pub(crate) topic: String,
    /// The event as JSON; without it, one JSON value per line is read from stdin.
    pub(crate) json: Option<String>,
    /// Publish the argument N times, or at most N lines of stdin.
    #[arg(long, short = 'n')]
    pub(crate) count: Option<u64>,
    /// A header to send with each event (repeatable): -H trace=abc -H source=cli.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = parse_header)]
    pub(crate) headers: Vec<(String, String)>,
    /// How to reach the bus.
    #[command(flatten)]
    pub(crate) connect: Connect,
}

/// Parses `KEY=VALUE`.
fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// `busbar sub`.
#[derive(Debug, Args)]
pub(crate) struct SubArgs {
    /// A topic or pattern: `*` matches one segment, `>` the rest (orders.*, sensors.>).
    pub(crate) pattern: String,
    /// Exit after N events (default: until interrupted).
    #[arg(long, short = 'n')]
    pub(crate) count: Option<u64>,
    /// How many events may wait unread. When that many wait, newer events are
    /// dropped (the waiting ones are kept and printed), and how many were missed
    /// is printed on stderr where the gap is.
    #[arg(long, default_value_t = 4096)]
    pub(crate) buffer: usize,
    /// How to reach the bus.
    #[command(flatten)]
    pub(crate) connect: Connect,
}

/// `busbar call`.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The method, e.g. inventory.reserve.
    pub(crate) method: String,
    /// The request as JSON (default: null); `-` reads it from stdin, whole
    /// (any layout, up to 16 MiB), for requests too large for an argument.
    pub(crate) json: Option<String>,
    /// Call every provider and print one line per answer: {"ok": ..} or {"error": ..}.
    #[arg(long)]
    pub(crate) all: bool,
    /// How long to wait for the answer(s), connecting included: 500ms, 2s, 1m.
    /// A bus still unreachable then exits 19 (transport), a provider that
    /// did not answer 13 (timeout).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// How to reach the bus.
    #[command(flatten)]
    pub(crate) connect: Connect,
}

/// `busbar serve`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("answer").required(true).args(["echo", "exec"])))]
pub(crate) struct ServeArgs {
    /// The method to serve.
    pub(crate) method: String,
    /// Answer each request with the request itself.
    #[arg(long)]
    pub(crate) echo: bool,
    /// Run `sh -c CMD` per request: the request JSON on its stdin, its stdout is the
    /// answer (JSON, or else a string). A non-zero exit is an error for the caller,
    /// of kind `exit_status`, carrying the command's stderr. A command still
    /// running at the caller's deadline, or when serve stops, is killed with
    /// every process it started (its process group). Failures are printed on stderr.
    #[arg(long, value_name = "CMD")]
    pub(crate) exec: Option<String>,
    /// Exit after answering N requests (default: until interrupted).
    #[arg(long, short = 'n')]
    pub(crate) count: Option<u64>,
    /// How to reach the bus.
    #[command(flatten)]
    pub(crate) connect: Connect,
}

/// `busbar queue`.
#[derive(Debug, Args)]
pub(crate) struct QueueArgs {
    /// The queue operation.
    #[command(subcommand)]
    pub(crate) op: QueueOp,
}

/// The queue operations.
#[derive(Debug, Subcommand)]
pub(crate) enum QueueOp {
    /// Append JSON items (from the argument, or one per line on stdin).
    Put(QueuePutArgs),
    /// Take items and print them, one JSON line each.
    Get(QueueGetArgs),
    /// Print how many items wait (items taken but not yet acked are not counted).
    Len(QueueLenArgs),
}

/// `busbar queue put`.
#[derive(Debug, Args)]
pub(crate) struct QueuePutArgs {
    /// The queue, e.g. jobs.resize.
    pub(crate) name: String,
    /// The item as JSON; without it, one JSON value per line is read from stdin.
    pub(crate) json: Option<String>,
    /// Put the argument N times, or at most N lines of stdin.
    #[arg(long, short = 'n')]
    pub(crate) count: Option<u64>,
    /// How to reach the bus.
    #[command(flatten)]
    pub(crate) connect: Connect,
}

/// `busbar queue get`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").args(["ack", "nack"])))]
pub(crate) struct QueueGetArgs {
    /// The queue.
    pub(crate) name: String,
    /// How many items to take.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub(crate) count: u64,
    /// How long to wait for each item; exit code 13 (timeout) if none came.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// Acknowledged take: the item is removed only after it was printed; if this
    /// process dies first, it comes back to the queue (at least once).
    #[arg(long)]
    pub(crate) ack: bool,
    /// Take, print, then give the item back (nack) for another consumer.
    #[arg(long)]
    pub(crate) nack: bool,
    /// With --ack/--nack: how long an unacknowledged item stays taken before it
    /// comes back.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) visibility: Duration,
    /// How to reach the bus.
    #[command(flatten)]
    pub(crate) connect: Connect,
}

/// `busbar queue len`.
#[derive(Debug, Args)]
pub(crate) struct QueueLenArgs {
    /// The queue.
    pub(crate) name: String,
    /// How to reach the bus.
    #[command(flatten)]
    pub(crate) connect: Connect,
}

/// `busbar broker`.
#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// The ZeroMQ endpoint to bind (port 0 picks a free port). Its zmq:// URL is
    /// printed on stdout.
    #[arg(long, default_value = "tcp://127.0.0.1:5555")]
    pub(crate) bind: String,
    /// How often the broker and its clients exchange heartbeats.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) heartbeat: Option<Duration>,
    /// Print the broker's counters (JSON) on stderr before exiting.
    #[arg(long)]
    pub(crate) stats: bool,
}

/// The benchmark workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Workload {
    /// Publishers publish, every subscriber receives every event.
    Pubsub,
    /// Producers put items, competing consumers take each once.
    Queue,
    /// Callers call an echo method served by one or more servers.
    Rpc,
}

impl Workload {
    /// The lowercase name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Pubsub => "pubsub",
            Workload::Queue => "queue",
            Workload::Rpc => "rpc",
        }
    }
}

/// Where `--plot` writes.
pub(crate) type PlotPath = PathBuf;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(
            parse_header("trace=a=b").unwrap(),
            ("trace".to_owned(), "a=b".to_owned())
        );
        assert!(parse_header("nothing").is_err());
        assert!(parse_header("=x").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
