//! `--raw`: the same workload on the library under the URL's transport.

use super::harness::Outcome;
use super::sample::Factory;
use super::{raw_memory, raw_redis, raw_zmq, Plan};
use crate::exit::{CmdResult, Failure};

/// Runs `plan` on the raw library matching `url`'s scheme: tokio channels for
/// memory://, zeromq sockets for zmq://, redis-rs for redis://.
pub(crate) async fn run(plan: &Plan, url: &str, factory: Factory) -> CmdResult<Outcome> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "memory" => Ok(raw_memory::run(plan, factory).await),
        "zmq" => raw_zmq::run(plan, factory).await,
        "redis" | "rediss" => raw_redis::run(plan, url, factory).await,
        other => Err(Failure::Other(format!(
            "--raw has no baseline for {other}://"
        ))),
    }
}
