//! Riding out an outage: how a failed first connection counts for the
//! connect policy, the jittered backoff between reconnects, and commands
//! that are sent again on the next connection when theirs is lost.

use crate::connection::{is_connection_error, transport_error, CommandLink, Connection};
use crate::Config;
use busbar_core::connect::Failure;
use busbar_core::Error;
use redis::RedisError;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How a failed first connection counts for the connect policy: what another
/// attempt may cure (refused, reset, timed out, a server still loading its
/// data) is retried; a refused password or certificate, or a bad setting, is not.
pub(crate) fn connect_failure(err: RedisError) -> Failure {
    use redis::ErrorKind;
    let io = std::error::Error::source(&err).and_then(|e| e.downcast_ref::<std::io::Error>());
    let io_fatal = io.is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::Unsupported
                | std::io::ErrorKind::InvalidData
        )
    });
    let retry = !io_fatal
        && (err.is_io_error()
            || err.is_timeout()
            || err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.kind() == ErrorKind::ClusterConnectionNotFound
            || is_server_busy(&err));
    if retry {
        Failure::retry(transport_error(err))
    } else {
        Failure::fatal(transport_error(err))
    }
}

/// Whether Redis answered that it cannot serve commands yet but soon will: a
/// restarted server loading its data, a cluster electing a master. The
/// connection is sound; the command is worth sending again after a pause.
pub(crate) fn is_server_busy(err: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        err.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
        )
    )
}

/// The jittered exponential backoff of `busbar_core::connect`, between a
/// bus's reconnect attempts, with the bounds of its [`Config`].
pub(crate) struct Backoff(busbar_core::connect::Backoff);

impl Backoff {
    pub(crate) fn new(config: &Config) -> Self {
        Backoff(busbar_core::connect::Backoff::new(
            config.reconnect_min,
            config.reconnect_max,
        ))
    }

    /// Waits before the next attempt and grows the delay.
    pub(crate) async fn wait(&mut self) {
        self.0.wait().await;
    }

    pub(crate) fn reset(&mut self) {
        self.0.reset();
    }
}

/// What a command that could not be completed through an outage did: the
/// caller's words for each case, for the error.
pub(crate) struct Outcome {
    /// Said when no attempt reached Redis.
    pub(crate) not_done: &'static str,
    /// Said when an attempt was sent and its reply lost with the connection.
    pub(crate) maybe_done: &'static str,
}

/// The pauses between sends to a server that said it is busy (loading).
const BUSY_PAUSE_MIN: Duration = Duration::from_millis(20);
const BUSY_PAUSE_MAX: Duration = Duration::from_millis(500);

impl CommandLink {
    /// Runs `op` on the command connection, riding out an outage: when the
    /// connection is lost under it, `op` runs again on the next connection,
    /// until `wait` has passed since the start. So `op` must be safe to run
    /// twice (its reply may have been the only thing lost). A server that
    /// answers it is busy (loading its data after a restart) gets `op` again
    /// after a jittered pause; other errors Redis answers are returned at
    /// once. Past `wait`, the error says which of `outcome`'s cases holds.
    pub(crate) async fn through_outage<T, F, Fut>(
        &self,
        wait: Duration,
        outcome: Outcome,
        mut op: F,
    ) -> busbar_core::Result<T>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let deadline = Instant::now() + wait;
        let mut busy = busbar_core::connect::Backoff::new(BUSY_PAUSE_MIN, BUSY_PAUSE_MAX);
        // Whether an attempt went out and its reply was lost with the connection.
        let mut maybe_done = false;
        let mut failed = None;
        let mut last: Option<RedisError> = None;
        let give_up = |maybe_done: bool, last: Option<RedisError>| {
            let said = if maybe_done {
                outcome.maybe_done
            } else {
                outcome.not_done
            };
            let cause = last.map_or_else(|| "no connection".to_owned(), |e| e.to_string());
            Error::transport(format!(
                "redis stayed unreachable for {wait:?} (last error: {cause}): {said}"
            ))
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let conn = match self.get_after(left, failed).await {
                Ok(conn) => conn,
                Err(Error::Closed) => return Err(Error::Closed),
                Err(_) => return Err(give_up(maybe_done, last)),
            };
            match op(conn.conn.clone()).await {
                Ok(value) => return Ok(value),
                Err(err) if is_connection_error(&err) => {
                    self.broken(conn.generation());
                    tracing::debug!(%err, "connection lost under a command; sending it again once reconnected");
                    maybe_done = true;
                    failed = Some(conn.generation());
                    last = Some(err);
                }
                Err(err) if is_server_busy(&err) => {
                    // Answered, so not done: a restarted server loading its data.
                    tracing::debug!(%err, "redis is not ready; sending the command again shortly");
                    let pause = busy.next_delay();
                    tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
                    if Instant::now() >= deadline {
                        return Err(give_up(maybe_done, Some(err)));
                    }
                    failed = None;
                    last = Some(err);
                }
                Err(err) => return Err(transport_error(err)),
            }
        }
    }
}
