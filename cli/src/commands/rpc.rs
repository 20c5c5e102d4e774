//! `busbar call` and `busbar serve`.

use super::{connect, connect_until, finish, interrupted};
use crate::cli::{CallArgs, ServeArgs};
use crate::exit::{CmdResult, Context, Failure};
use crate::input::parse_json;
use crate::output::{print_json, status};
use busbar::{redact_url, Error, Fault, Name};
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Calls a method and prints the answer; with `--all`, one line per provider.
pub(crate) async fn call(args: CallArgs) -> CmdResult {
    let request = match &args.json {
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
    Name::new(&args.method)?;
    let bus = connect(&args.connect).await?;
    let (answered_tx, mut answered) = mpsc::unbounded_channel::<()>();
    let exec = args.exec.clone().map(Arc::new);
    let provider = bus
        .expose(&args.method, move |request: Value| {
            let exec = exec.clone();
            let answered = answered_tx.clone();
            async move {
                let answer = match exec {
                    None => Ok(request),
                    Some(command) => run_exec(&command, request).await,
                };
                let _ = answered.send(());
                answer
            }
        })
        .await
        .context(|| format!("cannot serve {}", args.method))?;
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
    // Shutting down lets the answers still being sent go out.
    let finished = finish(&bus, &args.connect).await;
    drop(provider);
    status(&format!("answered {count} requests"));
    finished
}

/// Runs `sh -c command` with the request on stdin; its stdout is the answer.
async fn run_exec(command: &str, request: Value) -> Result<Value, Fault> {
    let spawn = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = spawn.map_err(|err| Fault::new("exec", format!("cannot run sh: {err}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        // A command that does not read its stdin is fine: ignore a broken pipe.
        let _ = stdin.write_all(&line).await;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|err| Fault::new("exec", format!("{command}: {err}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let status = match output.status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_owned(),
        };
        let message = if stderr.is_empty() {
            format!("`{command}` {status}")
        } else {
            format!("`{command}` {status}: {stderr}")
        };
        return Err(Fault::new("exit_status", message));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = stdout.trim();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
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

    #[tokio::test]
    async fn exec_answers_with_stdout() {
        let answer = run_exec("cat", json!({"a": 1})).await.unwrap();
        assert_eq!(answer, json!({"a": 1}));
        let answer = run_exec("echo hello world", Value::Null).await.unwrap();
        assert_eq!(answer, json!("hello world"));
        let answer = run_exec("true", Value::Null).await.unwrap();
        assert_eq!(answer, Value::Null);
    }

    #[tokio::test]
    async fn exec_failure_is_a_fault_with_stderr() {
        let fault = run_exec("echo nope >&2; exit 3", Value::Null)
            .await
            .unwrap_err();
        assert_eq!(fault.kind, "exit_status");
        assert!(fault.message.contains("status 3"), "{}", fault.message);
        assert!(fault.message.contains("nope"), "{}", fault.message);
    }
}
