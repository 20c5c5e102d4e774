//! Riding out a broker that is not there: the first connection under the
//! connect policy of `busbar_core::connect`, and queue puts that wait for the
//! reconnect and are sent again.

use super::{unexpected, Answer, Shared};
use crate::config::ZmqConfig;
use crate::connection::{transport, Session};
use crate::protocol::{self, cmd};
use busbar_core::connect::{ConnectPolicy, Failure};
use busbar_core::{Error, Result};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// Longest one connection attempt (TCP, ZMTP greeting, HELLO/WELCOME) may take.
/// The socket retries a refused TCP connection within it by itself.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The first connection of a bus, under the connect policy of
/// `busbar_core::connect`: a broker that cannot be reached is tried again with
/// jittered backoff until `connect_timeout`, then the error names it.
pub(crate) async fn connect(config: &ZmqConfig) -> Result<Session> {
    let policy = ConnectPolicy::with_timeout(config.connect_timeout);
    let address = format!("the zmq broker at {}", config.endpoint);
    policy
        .connect(&address, |limit| async move {
            // The socket retries a refused connection by itself, hiding why it
            // fails and pacing attempts its own way: a plain TCP connect first
            // says at once whether anything listens.
            if let Some(addr) = config.endpoint.strip_prefix("tcp://") {
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|err| Failure::retry(transport("no answer", err)))?;
            }
            Session::open(config, limit.min(ATTEMPT_TIMEOUT))
                .await
                .map_err(Failure::from)
        })
        .await
}

/// `PUT` of the encoded item `bytes`, riding out an outage: while the broker
/// is unreachable it waits for the reconnect, and a put whose connection was
/// lost before the broker answered is sent again, until `outage_wait` has
/// passed. Should only the answer have been lost, the item is stored twice
/// (at least once); past the bound, the error says whether it may have been
/// stored.
pub(super) async fn put(shared: &Shared, bytes: Bytes) -> Result<()> {
    let deadline = Instant::now() + shared.config.outage_wait;
    let mut sent = false;
    loop {
        if !until_connected(shared, deadline).await? {
            let said = if sent {
                "the item may have been stored (an answer was lost with the connection)"
            } else {
                "the item was not stored"
            };
            return Err(Error::transport(format!(
                "the zmq broker at {} stayed unreachable for {:?}: {said}",
                shared.config.endpoint, shared.config.outage_wait
            )));
        }
        let epoch = shared.epoch.load(Ordering::Acquire);
        let req = shared.id();
        let frames = protocol::message(cmd::PUT, [protocol::u64_frame(req), bytes.clone()]);
        sent = true;
        match shared.request(req, frames, shared.config.op_timeout).await {
            Ok(Answer::Ok) => return Ok(()),
            Ok(other) => return Err(unexpected(other)),
            // The connection went under it: ask the next broker.
            Err(Error::Transport(_))
                if !shared.is_connected() || shared.epoch.load(Ordering::Acquire) != epoch => {}
            Err(err) => return Err(err),
        }
    }
}

/// Waits until connected; false when `deadline` passed first.
pub(super) async fn until_connected(shared: &Shared, deadline: Instant) -> Result<bool> {
    let mut link = shared.link.subscribe();
    let connected = tokio::time::timeout_at(deadline, link.wait_for(|up| *up)).await;
    shared.check_open()?;
    Ok(matches!(connected, Ok(Ok(_))))
}
