//! `busbar`: the command line of the busbar message bus.
//!
//! Publish and subscribe to events, call and serve RPC methods, work with
//! queues, run the ZeroMQ broker and benchmark any transport, all chosen by URL
//! (`--url` or `BUSBAR_URL`). See `busbar --help`.

mod bench;
mod cli;
mod commands;
mod exit;
mod input;
mod output;

// Link every transport so `Bus::connect` finds its URL scheme.
use busbar::memory as _;
use busbar::redis as _;
use busbar::zmq as _;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("busbar: cannot start the async runtime: {err}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let outcome = runtime.block_on(commands::run(cli.command));
    // Do not wait for detached tasks (transport reconnect loops, stdin readers).
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// Logs to stderr as `RUST_LOG` says; silent when it is unset.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .try_init();
}
