//! Reading a blocking pop to its end, and ending it early.
//!
//! A blocking pop is never abandoned while Redis may still answer it: the
//! item it brings would be in nobody's hands. A caller that leaves, or a bus
//! that closes, ends the pop with `CLIENT UNBLOCK` instead and still reads
//! the reply, so what the pop took can be put back.

use super::job;
use crate::Shared;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How often an unblock is repeated until the pop it ends answers.
const UNBLOCK_RETRY: Duration = Duration::from_millis(10);

/// How a blocking pop ended.
pub(super) struct PopEnd<T, S> {
    /// Its reply; `None` when Redis did not answer in time, or an unblock
    /// could not even be queued (the connection is then left to be dropped).
    pub(super) reply: Option<T>,
    /// What ended it early, if something did: an unblock may then still be on
    /// its way, so the connection must not carry another pop.
    pub(super) stopped: Option<S>,
}

/// Reads `reply`, the reply to a blocking pop of at most `timeout` on the
/// connection of `client_id` (a queue's node: `base`), allowing the bus's
/// response timeout on top. When `stop` resolves first, the pop is ended
/// with `CLIENT UNBLOCK` and given a response timeout more from then.
pub(super) async fn read_pop<T, S>(
    bus: &Shared,
    base: &str,
    client_id: i64,
    reply: impl Future<Output = T>,
    timeout: Duration,
    stop: impl Future<Output = S>,
) -> PopEnd<T, S> {
    let grace = bus.config.response_timeout;
    tokio::pin!(reply, stop);
    let limit = tokio::time::sleep(timeout + grace);
    tokio::pin!(limit);
    let retry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry);
    let mut stopped = None;
    loop {
        tokio::select! {
            reply = &mut reply => return PopEnd { reply: Some(reply), stopped },
            () = &mut limit => return PopEnd { reply: None, stopped },
            why = &mut stop, if stopped.is_none() => {
                stopped = Some(why);
                limit.as_mut().reset(Instant::now() + grace);
            }
            // The unblock travels on another connection and may overtake the
            // pop it is meant for (then it finds nothing to end): repeat it
            // until the pop answers.
            () = &mut retry, if stopped.is_some() => {
                if !unblock(bus, base, client_id) {
                    return PopEnd { reply: None, stopped };
                }
                retry.as_mut().reset(Instant::now() + UNBLOCK_RETRY);
            }
        }
    }
}

/// Ends a blocking pop on the server (through the writer: this runs while the
/// pop's own connection waits). False when it could not even be queued.
fn unblock(bus: &Shared, base: &str, client_id: i64) -> bool {
    let mut unblock = redis::cmd("CLIENT");
    unblock.arg("UNBLOCK").arg(client_id);
    bus.writer.send_now(job(base, [unblock]))
}
