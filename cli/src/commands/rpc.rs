//! `busbar call` and `busbar serve`.

use super::exec::ExecHandler;
use super::{connect, connect_until, finish, interrupted};
use crate::cli::{CallArgs, ServeArgs};
use crate::exit::{CmdResult, Context, Failure};
use crate::input::{parse_json, read_stdin_json};
use crate::output::{print_json, status};
use busbar::{redact_url, Error, Fault, Name};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Calls a method and prints the answer; with `--all`, one line per provider.
pub(crate) async fn call(args: CallArgs) -> CmdResult {
    let request = match args.json.as_deref() {
        Some("-") => read_stdin_json("the request").await?,
        Some(text) => parse_json(text, "the JSON argument")?,
        None => Value::Null,
    };
    Name::new(&args.method)?;
    // --timeout bounds connecting and calling together.
    let deadline = tokio::time::Instant::now() + args.timeout;
    let bus = connect_until(&args.connect, deadline).await?;
    let stub = bus
        .stub::<Value, Value>(&args.method)?
        .timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let outcome = if args.all {
        call_all(&stub, &request, &args.method).await
    } else {
        match stub.call(&request).await {
            Ok(answer) => print_json(&answer).map_err(Failure::from),
            Err(err) => Err(Failure::BusContext(
                format!("call {} failed", args.method),
                err,
            )),
        }
    };
    let finished = finish(&bus, &args.connect).await;
    outcome.and(finished)
}

async fn call_all(stub: &busbar::Stub<Value, Value>, request: &Value, method: &str) -> CmdResult {
    let replies = stub
        .call_all(request)
        .await
        .context(|| format!("call --all {method} failed"))?;
    let total = replies.len();
    let mut first_error = None;
    let mut failed = 0;
    for reply in replies {
        match reply {
            Ok(answer) => print_json(&json!({ "ok": answer }))?,
            Err(err) => {
                print_json(&json!({ "error": error_json(&err) }))?;
                failed += 1;
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(err) => Err(Failure::BusContext(
            format!("{failed} of {total} providers of {method} failed; the first"),
            err,
        )),
    }
}

/// An error as printed by `call --all`: its kind, and for a handler's failure
/// the kind the handler gave (`remote_kind`).
fn error_json(err: &Error) -> Value {
    match err {
        Error::Remote { kind, message } => json!({
            "kind": err.kind(),
            "remote_kind": kind,
            "message": message,
        }),
        other => json!({ "kind": other.kind(), "message": other.to_string() }),
    }
}

/// Serves a method until interrupted or `--count` requests were answered.
pub(crate) async fn serve(args: ServeArgs) -> CmdResult {
    let method = Name::new(&args.method)?;
    let bus = connect(&args.connect).await?;
    let (answered_tx, mut answered) = mpsc::unbounded_channel::<()>();
    // Echo goes through the typed API; exec through the transport, whose
    // handler sees each request's deadline.
    let (provider, guard, stopper) = match args.exec.clone() {
        None => {
            let provider = bus
                .expose(&args.method, move |request: Value| {
                    let answered = answered_tx.clone();
                    async move {
                        let _ = answered.send(());
                        Ok::<_, Fault>(request)
                    }
                })
                .await
                .context(|| format!("cannot serve {}", args.method))?;
            (Some(provider), None, None)
        }
        Some(command) => {
            let (handler, stopper) = ExecHandler::new(command, args.method.clone(), answered_tx);
            let guard = bus
                .transport()
                .serve(&method, Arc::new(handler))
                .await
                .context(|| format!("cannot serve {}", args.method))?;
            (None, Some(guard), Some(stopper))
        }
    };
    status(&format!(
        "serving {} on {}; ready",
        args.method,
        redact_url(&args.connect.url)
    ));
    let limit = args.count.unwrap_or(u64::MAX);
    let mut count = 0u64;
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    while count < limit {
        tokio::select! {
            next = answered.recv() => match next {
                Some(()) => count += 1,
                None => break,
            },
            _ = &mut interrupt => break,
        }
    }
    // Commands still running are killed first, so their callers get an answer
    // (`shutdown`) and nothing they started outlives the server.
    if let Some(stopper) = &stopper {
        stopper.stop().await;
    }
    // Shutting down lets the answers still being sent go out.
    let finished = finish(&bus, &args.connect).await;
    drop(provider);
    drop(guard);
    status(&format!("answered {count} requests"));
    finished
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_errors_keep_the_handler_kind() {
        let err = Error::Remote {
            kind: "exit_status".into(),
            message: "boom".into(),
        };
        assert_eq!(
            error_json(&err),
            json!({"kind": "remote", "remote_kind": "exit_status", "message": "boom"})
        );
        assert_eq!(error_json(&Error::Timeout)["kind"], "timeout");
    }
}
