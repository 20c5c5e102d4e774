//! `busbar broker`: the ZeroMQ broker.

use super::interrupted;
use crate::cli::BrokerArgs;
use crate::exit::{CmdResult, Context};
use crate::output::{print_line, status};
use busbar::zmq::{Broker, BrokerConfig};
use serde_json::json;

/// Binds the broker, prints its URL, and runs until interrupted.
pub(crate) async fn run(args: BrokerArgs) -> CmdResult {
    let mut config = BrokerConfig::default();
    if let Some(heartbeat) = args.heartbeat {
        config.heartbeat = heartbeat;
    }
    let broker = Broker::bind_with(&args.bind, config)
        .await
        .context(|| format!("cannot start the broker on {}", args.bind))?;
    // The URL on stdout, so a script (or a test) binding port 0 learns the port.
    print_line(&broker.url())?;
    status(&format!(
        "broker listening on {}; ready (clients use {})",
        broker.endpoint(),
        broker.url()
    ));
    interrupted().await;
    let stats = broker.stats();
    broker.shutdown().await;
    if args.stats {
        let stats = json!({
            "clients": stats.clients,
            "rejected": stats.rejected,
            "events_in": stats.events_in,
            "events_out": stats.events_out,
            "dead_clients": stats.dead_clients,
            "redelivered": stats.redelivered,
            "held_batches": stats.held_batches,
            "stalled_clients": stats.stalled_clients,
        });
        status(&format!("stats {stats}"));
    }
    status("broker stopped");
    Ok(())
}
