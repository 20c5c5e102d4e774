//! `busbar serve --exec`: one `sh -c CMD` per request, in a process group of
//! its own, so the whole tree a handler started can be killed at the caller's
//! deadline and when the server stops.

use crate::output::status;
use async_trait::async_trait;
use busbar::transport::Handler;
use busbar::{codec, Envelope, Fault, Kind};
use bytes::Bytes;
use serde_json::Value;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long `stop` waits for running handlers to be killed and reaped.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Answers each request with a shell command's output.
pub(crate) struct ExecHandler {
    command: String,
    method: String,
    /// Becomes true when the server stops: running handlers are killed.
    stopping: watch::Receiver<bool>,
    /// How many handlers' processes are running.
    running: watch::Sender<usize>,
    /// One message per answered request.
    answered: mpsc::UnboundedSender<()>,
}

/// Stops an [`ExecHandler`]'s running commands.
pub(crate) struct ExecStopper {
    stopping: watch::Sender<bool>,
    running: watch::Receiver<usize>,
}

impl ExecHandler {
    /// A handler running `command` for `method`, and what stops it.
    pub(crate) fn new(
        command: String,
        method: String,
        answered: mpsc::UnboundedSender<()>,
    ) -> (ExecHandler, ExecStopper) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (running_tx, running_rx) = watch::channel(0);
        let handler = ExecHandler {
            command,
            method,
            stopping: stop_rx,
            running: running_tx,
            answered,
        };
        let stopper = ExecStopper {
            stopping: stop_tx,
            running: running_rx,
        };
        (handler, stopper)
    }

    /// Failures are printed whatever `RUST_LOG` says: the caller may have
    /// given up already, and this is the only trace of a killed command.
    fn warn(&self, request: &Envelope, fault: &Fault) {
        status(&format!(
            "warning: {} request {} failed ({}): {}",
            self.method, request.id, fault.kind, fault.message
        ));
    }
}

impl ExecStopper {
    /// Kills every running command's process group, and waits (at most
    /// [`STOP_WAIT`]) until each is reaped. Later requests are refused.
    pub(crate) async fn stop(&self) {
        let _ = self.stopping.send(true);
        let mut running = self.running.clone();
        let _ = tokio::time::timeout(STOP_WAIT, running.wait_for(|n| *n == 0)).await;
    }
}

#[async_trait]
impl Handler for ExecHandler {
    async fn handle(&self, request: Envelope) -> Result<Bytes, Fault> {
        // The bus drops this future at the caller's deadline, which kills the
        // command's group (see `Group`); the guard leaves the trace of it.
        let mut cancelled = Cancelled {
            handler: self,
            request: &request,
            armed: true,
        };
        let outcome = self.run(&request).await;
        cancelled.armed = false;
        if let Err(fault) = &outcome {
            self.warn(&request, fault);
        }
        let _ = self.answered.send(());
        let value = outcome?;
        codec::encode(&value).map_err(|err| Fault::new("bad_response", err.to_string()))
    }

    /// A command killed at the deadline is not answered: its caller has given
    /// up, and an answer racing the caller's own timer would turn its
    /// `timeout` into a `remote` error.
    fn finish(&self, reply: Envelope) -> Option<Envelope> {
        (!is_deadline_fault(&reply)).then_some(reply)
    }
}

/// Warns, on drop while armed, that a handler was cancelled mid-command.
struct Cancelled<'a> {
    handler: &'a ExecHandler,
    request: &'a Envelope,
    armed: bool,
}

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        if self.armed {
            let fault = Fault::new(
                DEADLINE_KIND,
                format!(
                    "`{}` was still running at the caller's deadline: its processes were killed",
                    self.handler.command
                ),
            );
            self.handler.warn(self.request, &fault);
        }
    }
}

/// The kind of the fault answered for a command killed at its deadline.
const DEADLINE_KIND: &str = "timeout";

fn is_deadline_fault(reply: &Envelope) -> bool {
    reply.kind == Kind::ErrorReply
        && serde_json::from_slice::<Value>(&reply.payload)
            .is_ok_and(|body| body["kind"] == DEADLINE_KIND)
}

/// Why a command did not run to its end.
enum Cut {
    Deadline,
    Stopping,
}

impl ExecHandler {
    async fn run(&self, request: &Envelope) -> Result<Value, Fault> {
        let value: Value = codec::decode(&request.content_type, &request.payload)
            .map_err(|err| Fault::new("bad_request", err.to_string()))?;
        let mut stopping = self.stopping.clone();
        if *stopping.borrow_and_update() {
            return Err(Fault::new("shutdown", "the server is shutting down"));
        }
        let deadline = request.remaining().map(|left| Instant::now() + left);
        let mut input = value.to_string().into_bytes();
        input.push(b'\n');

        let mut child = spawn(&self.command)?;
        self.running.send_modify(|n| *n += 1);
        let _running = Running(&self.running);
        // Killed on every way out of here (deadline, stop, a dropped future)
        // unless the shell was reaped, after which its group id may be reused.
        let mut group = Group::of(&child);

        let work = async {
            let output = communicate(&mut child, input).await?;
            let status = child.wait().await?;
            group.reaped();
            std::io::Result::Ok((status, output))
        };
        let cut = async {
            let deadline = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = deadline => Cut::Deadline,
                _ = stopping.wait_for(|stop| *stop) => Cut::Stopping,
            }
        };
        let outcome = tokio::select! {
            done = work => Ok(done),
            cut = cut => Err(cut),
        };
        match outcome {
            Ok(Ok((status, (stdout, stderr)))) => answer(&self.command, status, &stdout, &stderr),
            Ok(Err(err)) => Err(Fault::new("exec", format!("`{}`: {err}", self.command))),
            Err(cut) => {
                group.kill();
                // SIGKILL cannot be ignored: the shell exits at once.
                let _ = child.wait().await;
                group.reaped();
                let (kind, when) = match cut {
                    Cut::Deadline => (DEADLINE_KIND, "at the caller's deadline"),
                    Cut::Stopping => ("shutdown", "when the server stopped"),
                };
                Err(Fault::new(
                    kind,
                    format!(
                        "`{}` was still running {when}: its processes were killed",
                        self.command
                    ),
                ))
            }
        }
    }
}

/// Counts a running command until dropped.
struct Running<'a>(&'a watch::Sender<usize>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A handler's process group, killed on drop until its leader is reaped.
struct Group {
    id: Option<u32>,
}

impl Group {
    fn of(child: &Child) -> Group {
        Group { id: child.id() }
    }

    /// The shell was reaped: its id may now belong to someone else.
    fn reaped(&mut self) {
        self.id = None;
    }

    fn kill(&self) {
        if let Some(id) = self.id {
            kill_group(id);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(unix)]
fn kill_group(id: u32) {
    if let Ok(pgid) = libc::pid_t::try_from(id) {
        // SAFETY: killpg has no memory-safety preconditions. The group is ours:
        // its leader, our child, is not reaped yet, so the id is not reused.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

#[cfg(not(unix))]
fn kill_group(_id: u32) {}

/// Starts `sh -c command` as the leader of a new process group.
fn spawn(command: &str) -> Result<Child, Fault> {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own group: a terminal's Ctrl-C does not reach it, and the whole tree
    // it starts can be killed at once.
    #[cfg(unix)]
    sh.process_group(0);
    sh.spawn()
        .map_err(|err| Fault::new("exec", format!("cannot run sh: {err}")))
}

/// Writes the request to the child's stdin while reading its stdout and
/// stderr to their end.
async fn communicate(child: &mut Child, input: Vec<u8>) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let stdin = child.stdin.take();
    let write = async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its stdin is fine: ignore a broken pipe.
            let _ = stdin.write_all(&input).await;
        }
    };
    let (_, stdout, stderr) = tokio::join!(
        write,
        read_all(child.stdout.take()),
        read_all(child.stderr.take())
    );
    Ok((stdout?, stderr?))
}

async fn read_all(source: Option<impl AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(mut source) = source {
        source.read_to_end(&mut bytes).await?;
    }
    Ok(bytes)
}

/// The answer from a finished command: its stdout (JSON, or else a string),
/// or an `exit_status` fault with its stderr.
fn answer(command: &str, status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> Result<Value, Fault> {
    if !status.success() {
        let stderr = String::from_utf8_lossy(stderr).trim().to_owned();
        let status = match status.code() {
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
    let stdout = String::from_utf8_lossy(stdout);
    let text = stdout.trim();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use busbar::{ContentType, Name};
    use serde_json::json;

    fn handler(command: &str) -> (ExecHandler, ExecStopper, mpsc::UnboundedReceiver<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (handler, stopper) = ExecHandler::new(command.into(), "m.x".into(), tx);
        (handler, stopper, rx)
    }

    fn request(value: &Value, timeout: Option<Duration>) -> Envelope {
        let envelope = Envelope::new(
            Kind::Request,
            Name::new("m.x").unwrap(),
            ContentType::JSON,
            codec::encode(value).unwrap(),
        );
        match timeout {
            Some(timeout) => envelope.with_timeout(timeout),
            None => envelope,
        }
    }

    async fn call(command: &str, value: Value) -> Result<Value, Fault> {
        let (handler, _stopper, _rx) = handler(command);
        handler
            .handle(request(&value, Some(Duration::from_secs(30))))
            .await
            .map(|bytes| serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn exec_answers_with_stdout() {
        assert_eq!(call("cat", json!({"a": 1})).await.unwrap(), json!({"a": 1}));
        let answer = call("echo hello world", Value::Null).await.unwrap();
        assert_eq!(answer, json!("hello world"));
        assert_eq!(call("true", Value::Null).await.unwrap(), Value::Null);
    }

    #[tokio::test]
    async fn exec_failure_is_a_fault_with_stderr() {
        let fault = call("echo nope >&2; exit 3", Value::Null)
            .await
            .unwrap_err();
        assert_eq!(fault.kind, "exit_status");
        assert!(fault.message.contains("status 3"), "{}", fault.message);
        assert!(fault.message.contains("nope"), "{}", fault.message);
    }

    #[tokio::test]
    async fn a_command_past_the_deadline_is_killed() {
        let (handler, _stopper, _rx) = handler("sleep 30");
        let fault = handler
            .handle(request(&Value::Null, Some(Duration::from_millis(50))))
            .await
            .unwrap_err();
        assert_eq!(fault.kind, "timeout");
        assert_eq!(*handler.running.borrow(), 0);
        // ... and not answered.
        let request = request(&Value::Null, Some(Duration::from_millis(50)));
        let reply = busbar::reply::error_reply(&request, fault);
        assert!(handler.finish(reply).is_none());
        let other = busbar::reply::error_reply(&request, Fault::new("exit_status", "x"));
        assert!(handler.finish(other).is_some());
    }

    #[tokio::test]
    async fn stopping_kills_running_commands_and_refuses_new_ones() {
        let (handler, stopper, _rx) = handler("sleep 30");
        let handler = std::sync::Arc::new(handler);
        let running = handler.clone();
        let call = tokio::spawn(async move { running.handle(request(&Value::Null, None)).await });
        let mut started = handler.running.subscribe();
        started.wait_for(|n| *n == 1).await.unwrap();
        stopper.stop().await;
        let fault = call.await.unwrap().unwrap_err();
        assert_eq!(fault.kind, "shutdown");
        let refused = handler.handle(request(&Value::Null, None)).await;
        assert_eq!(refused.unwrap_err().kind, "shutdown");
    }
}
