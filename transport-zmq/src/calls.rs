//! RPC calls from a [`ZmqBus`](crate::ZmqBus): CALL and CALL_ALL through the
//! broker, and what a call does while the broker is unreachable.
//!
//! A call ends at its deadline whatever the connection does. Made while the
//! broker is unreachable, it waits for the connection to come back until its
//! deadline, then fails with [`Error::Transport`] saying the broker is
//! unreachable (never `NoResponders`, which only a broker answers). A call in
//! flight when the connection drops fails at once with [`Error::Transport`]:
//! its request may have reached a provider, so it is not sent again.

use crate::client::{lock, CallEvent, Shared};
use crate::protocol::{self, cmd};
use busbar_core::{wire, Envelope, Error, MessageId, Result, DEFAULT_TIMEOUT};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Sends `request` to one provider and waits for its reply.
pub(crate) async fn call(shared: &Shared, request: Envelope) -> Result<Envelope> {
    let deadline = deadline_of(&request);
    let mut call = start(shared, &request, false, deadline).await?;
    loop {
        match tokio::time::timeout_at(deadline, call.events.recv()).await {
            Err(_) => return Err(Error::Timeout),
            Ok(None) | Ok(Some(CallEvent::Lost)) => return Err(lost(shared)),
            Ok(Some(CallEvent::Reply(reply))) => return Ok(*reply),
            Ok(Some(CallEvent::NoResponders)) => return Err(no_responders(&request)),
            Ok(Some(CallEvent::Failed(message))) => return Err(provider_lost(&request, &message)),
            Ok(Some(CallEvent::Refused(message))) => return Err(Error::Malformed(message)),
            Ok(Some(CallEvent::Fanout(_))) | Ok(Some(CallEvent::Withdrawn)) => {}
        }
    }
}

/// Sends `request` to every provider and gathers one entry per provider.
pub(crate) async fn call_all(shared: &Shared, request: Envelope) -> Result<Vec<Result<Envelope>>> {
    let deadline = deadline_of(&request);
    let mut call = start(shared, &request, true, deadline).await?;
    let mut expected: Option<usize> = None;
    let mut out = Vec::new();
    while !matches!(expected, Some(n) if out.len() >= n) {
        match tokio::time::timeout_at(deadline, call.events.recv()).await {
            Err(_) => break,
            Ok(None) | Ok(Some(CallEvent::Lost)) => {
                if expected.is_none() {
                    return Err(lost(shared));
                }
                let missing = expected.unwrap_or(0).saturating_sub(out.len());
                out.extend((0..missing).map(|_| Err(lost(shared))));
            }
            Ok(Some(CallEvent::Fanout(n))) => expected = Some(n as usize),
            Ok(Some(CallEvent::NoResponders)) => return Err(no_responders(&request)),
            // Before FANOUT the call itself was refused; after, one provider's reply was.
            Ok(Some(CallEvent::Refused(message))) if expected.is_none() => {
                return Err(Error::Malformed(message))
            }
            Ok(Some(CallEvent::Refused(message))) => out.push(Err(Error::Malformed(message))),
            Ok(Some(CallEvent::Reply(reply))) => out.push(Ok(*reply)),
            Ok(Some(CallEvent::Failed(message))) => {
                out.push(Err(provider_lost(&request, &message)))
            }
            Ok(Some(CallEvent::Withdrawn)) => {
                // A provider left before handling it: one answer fewer to wait for.
                if let Some(n) = expected.as_mut() {
                    *n = n.saturating_sub(1);
                    if *n == 0 && out.is_empty() {
                        return Err(no_responders(&request));
                    }
                }
            }
        }
    }
    match expected {
        None => Err(Error::Timeout),
        Some(n) => {
            out.resize_with(n.max(out.len()), || Err(Error::Timeout));
            Ok(out)
        }
    }
}

/// An RPC call in flight; dropping it forgets the call.
struct CallHandle<'a> {
    shared: &'a Shared,
    id: MessageId,
    events: mpsc::UnboundedReceiver<CallEvent>,
}

impl Drop for CallHandle<'_> {
    fn drop(&mut self) {
        lock(&self.shared.calls).remove(&self.id);
    }
}

/// Waits (until `deadline`) for a connection, then sends the call.
async fn start<'a>(
    shared: &'a Shared,
    request: &Envelope,
    all: bool,
    deadline: Instant,
) -> Result<CallHandle<'a>> {
    shared.check_open()?;
    let bytes = wire::encode(request)?;
    wait_connected(shared, deadline).await?;
    let (tx, events) = mpsc::unbounded_channel();
    lock(&shared.calls).insert(request.id, tx);
    let command = if all { cmd::CALL_ALL } else { cmd::CALL };
    shared.command(protocol::message(command, [bytes]), None);
    Ok(CallHandle {
        shared,
        id: request.id,
        events,
    })
}

/// Returns once connected to the broker; fails at `deadline` if it is still
/// unreachable.
async fn wait_connected(shared: &Shared, deadline: Instant) -> Result<()> {
    let mut link = shared.link.subscribe();
    loop {
        if *link.borrow_and_update() {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, link.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) if shared.is_closed() => return Err(Error::Closed),
            Err(_) => {
                return Err(Error::transport(format!(
                    "the zmq broker at {} is unreachable: no connection to it before the call's deadline",
                    shared.config.endpoint
                )))
            }
        }
        shared.check_open()?;
    }
}

fn deadline_of(request: &Envelope) -> Instant {
    Instant::now() + request.remaining().unwrap_or(DEFAULT_TIMEOUT)
}

fn no_responders(request: &Envelope) -> Error {
    Error::NoResponders {
        method: request.subject.to_string(),
    }
}

/// The broker's FAILED: the provider that took the call was lost.
fn provider_lost(request: &Envelope, why: &str) -> Error {
    tracing::debug!(method = %request.subject, %why, "the provider was lost before answering");
    Error::ProviderLost {
        method: request.subject.to_string(),
    }
}

fn lost(shared: &Shared) -> Error {
    if shared.is_closed() {
        return Error::Closed;
    }
    Error::transport(format!(
        "lost the connection to the zmq broker at {} during the call",
        shared.config.endpoint
    ))
}
