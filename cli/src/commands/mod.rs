//! The subcommands other than `bench`.

mod broker;
mod exec;
mod pubsub;
mod queue;
mod rpc;

use crate::cli::{Command, Connect, QueueOp};
use crate::exit::{CmdResult, Context};
use crate::output::{stats_json, status};
use busbar::{redact_url, Bus};

/// Runs one command to completion.
pub(crate) async fn run(command: Command) -> CmdResult {
    match command {
        Command::Pub(args) => pubsub::publish(args).await,
        Command::Sub(args) => pubsub::subscribe(args).await,
        Command::Call(args) => rpc::call(args).await,
        Command::Serve(args) => rpc::serve(args).await,
        Command::Queue(args) => match args.op {
            QueueOp::Put(args) => queue::put(args).await,
            QueueOp::Get(args) => queue::get(args).await,
            QueueOp::Len(args) => queue::len(args).await,
        },
        Command::Broker(args) => broker::run(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
    }
}

/// Connects to the bus named by `--url`/`BUSBAR_URL`.
pub(crate) async fn connect(connect: &Connect) -> CmdResult<Bus> {
    Bus::connect(&connect.url)
        .await
        .context(|| format!("cannot connect to {}", redact_url(&connect.url)))
}

/// Connects like [`connect`], giving up at `deadline` with a transport error
/// that says the bus is unreachable (`call --timeout` bounds connect and call).
pub(crate) async fn connect_until(
    connect: &Connect,
    deadline: tokio::time::Instant,
) -> CmdResult<Bus> {
    match tokio::time::timeout_at(deadline, Bus::connect(&connect.url)).await {
        Ok(bus) => bus.context(|| format!("cannot connect to {}", redact_url(&connect.url))),
        Err(_) => Err(busbar::Error::transport(
            "the bus is unreachable: no connection before the --timeout",
        ))
        .context(|| format!("cannot connect to {}", redact_url(&connect.url))),
    }
}

/// Prints the counters if `--stats` was given, then shuts the bus down
/// (flushing what it still holds).
pub(crate) async fn finish(bus: &Bus, connect: &Connect) -> CmdResult {
    let shutdown = bus.shutdown().await;
    if connect.stats {
        status(&format!("stats {}", stats_json(&bus.stats())));
    }
    Ok(shutdown?)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
