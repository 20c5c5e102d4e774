//! The broker's messages for subscriptions, consumers and waiters: events,
//! queue items, and the answers to refused commands.

use crate::client::{lock, Answer, CallEvent, Shared};
use crate::connection::{call_event, rejected};
use crate::protocol::{self, cmd, Malformed, Parsed};
use busbar_core::wire;
use bytes::Bytes;

/// SUBSCRIBE_ERROR, SERVE_ERROR, PUBLISH_ERROR, CALL_ERROR: the broker refused
/// a command; whoever waits for it gets the error.
pub(crate) fn refusal(shared: &Shared, command: u8, args: &[Bytes]) -> Parsed<()> {
    match command {
        cmd::SUBSCRIBE_ERROR | cmd::SERVE_ERROR => {
            protocol::args(args, "refusal").and_then(|[id, message]| {
                let id = protocol::read_u64(&id, "id")?;
                let message = protocol::read_text(&message, "message")?;
                let what = if command == cmd::SERVE_ERROR {
                    "provider"
                } else {
                    "subscription"
                };
                let message = format!("the zmq broker refused the {what}: {message}");
                if let Err(Answer::Error(message)) = shared.answer(id, Answer::Error(message)) {
                    // A replayed one, after a reconnect: nobody waits for it.
                    tracing::warn!(%message, "lost a {what} on reconnecting");
                }
                Ok(())
            })
        }
        cmd::PUBLISH_ERROR => {
            protocol::args(args, "PUBLISH_ERROR").and_then(|[seq, index, message]| {
                // The publish call returned long ago: the log is where this shows.
                let seq = protocol::read_u64(&seq, "batch number")?;
                let index = protocol::read_u32(&index, "index")?;
                let message = protocol::read_text(&message, "message")?;
                tracing::warn!(seq, index, %message, "the zmq broker refused a published event");
                Ok(())
            })
        }
        cmd::CALL_ERROR => protocol::args(args, "CALL_ERROR").and_then(|[id, message]| {
            let message = protocol::read_text(&message, "message")?;
            let message = format!("the zmq broker refused the call: {message}");
            call_event(shared, &id, CallEvent::Refused(message))
        }),
        other => Err(Malformed(format!("unknown command 0x{other:02x}"))),
    }
}

/// EVENT: pairs of (subscription ids, envelope).
pub(crate) fn events(shared: &Shared, args: &[Bytes]) -> Parsed<()> {
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err(Malformed(
            "EVENT: expected pairs of (subscriptions, envelope)".into(),
        ));
    }
    for pair in args.chunks_exact(2) {
        let ids = match protocol::read_u64s(&pair[0]) {
            Ok(ids) => ids,
            Err(why) => {
                rejected(shared, &why);
                continue;
            }
        };
        let envelope = match wire::decode(&pair[1], shared.config.max_envelope) {
            Ok(envelope) => envelope,
            Err(err) => {
                rejected(shared, &Malformed(format!("EVENT envelope: {err}")));
                continue;
            }
        };
        let subs = lock(&shared.subs);
        for id in ids {
            if let Some(sub) = subs.get(&id) {
                // The broker matched already; checking again costs little and keeps
                // the contract even against a foreign broker.
                if sub.pattern.matches(&envelope.subject) {
                    sub.sender.deliver(envelope.clone());
                }
            }
        }
    }
    Ok(())
}

/// ITEM: a queue item for a fetch; one nobody waits for any more goes back.
pub(crate) fn item(shared: &Shared, args: &[Bytes]) -> Parsed<()> {
    let [req, tag, attempt, envelope] = protocol::args(args, "ITEM")?;
    let req = protocol::read_u64(&req, "request number")?;
    let tag = protocol::read_u64(&tag, "delivery tag")?;
    let attempt = protocol::read_u32(&attempt, "attempt")?;
    let answer = Answer::Item {
        tag,
        attempt,
        envelope,
    };
    if let Err(Answer::Item { envelope, .. }) = shared.answer(req, answer) {
        let frames = if tag == 0 {
            // A plain get's item, now the client's: give it back as it was.
            protocol::message(
                cmd::RETURN,
                [protocol::u32_frame(attempt.saturating_sub(1)), envelope],
            )
        } else {
            protocol::message(
                cmd::NACK,
                [protocol::u64_frame(0), protocol::u64_frame(tag)],
            )
        };
        shared.command(frames, None);
    }
    Ok(())
}
