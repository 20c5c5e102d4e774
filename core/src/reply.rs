//! Running an RPC handler and encoding its answer: shared by every transport so
//! deadlines, panics and error kinds behave the same everywhere.

use crate::codec::{self, ContentType};
use crate::envelope::{Envelope, Kind};
use crate::error::{Error, Fault, Result};
use crate::stats::Stats;
use crate::transport::Handler;
use bytes::Bytes;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use std::panic::AssertUnwindSafe;
use tracing::Instrument;

#[derive(Serialize, Deserialize)]
struct FaultBody {
    kind: String,
    message: String,
}

/// Runs `handler` on `request` and builds the reply to send back.
///
/// Returns `None` when the handler does not [`admit`](Handler::admit) the request,
/// or when its deadline has already passed (the caller has given up, so no work
/// is done). A handler still running at the request's deadline is cancelled: its
/// future is dropped there (as tarpc does), counted in
/// [`Stats::handlers_cancelled`], and nothing is answered, since the caller has
/// already timed out. A handler that returns a fault or panics yields an
/// [`Kind::ErrorReply`]; the provider keeps serving either way. The reply goes
/// through [`Handler::finish`] last.
pub async fn respond(handler: &dyn Handler, request: Envelope, stats: &Stats) -> Option<Envelope> {
    let request = handler.admit(request)?;
    if request.is_expired() {
        tracing::debug!(method = %request.subject, id = %request.id, "dropping expired request");
        return None;
    }
    Stats::incr(&stats.rpc_served);
    let span = tracing::debug_span!("busbar.handle", method = %request.subject, correlation_id = %request.id);
    let work = AssertUnwindSafe(handler.handle(request.clone()).instrument(span)).catch_unwind();
    let mut work = std::pin::pin!(work);
    let outcome = match request.remaining() {
        None => work.await,
        // Borrowed, so the handler is dropped after it is counted, on return.
        Some(left) => match tokio::time::timeout(left, work.as_mut()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                Stats::incr(&stats.handlers_cancelled);
                tracing::debug!(method = %request.subject, id = %request.id, "handler cancelled at its caller's deadline");
                return None;
            }
        },
    };
    let outcome = outcome.unwrap_or_else(|panic| Err(Fault::new("panic", panic_message(&*panic))));
    handler.finish(match outcome {
        Ok(payload) => request.reply(Kind::Reply, ContentType::JSON, payload),
        Err(fault) => error_reply(&request, fault),
    })
}

/// An error reply to `request` carrying `fault`.
pub fn error_reply(request: &Envelope, fault: Fault) -> Envelope {
    let body = FaultBody {
        kind: fault.kind,
        message: fault.message,
    };
    let payload = codec::encode(&body).unwrap_or_default();
    request.reply(Kind::ErrorReply, ContentType::JSON, payload)
}

/// The payload of a reply, or the [`Error::Remote`] an error reply carries.
pub fn into_result(reply: Envelope) -> Result<Bytes> {
    match reply.kind {
        Kind::Reply => Ok(reply.payload),
        Kind::ErrorReply => {
            let body: FaultBody = codec::decode(&reply.content_type, &reply.payload)?;
            Err(Error::Remote {
                kind: body.kind,
                message: body.message,
            })
        }
        other => Err(Error::Malformed(format!("expected a reply, got {other:?}"))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_owned()
    }
}
