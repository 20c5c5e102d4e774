//! Helpers shared by the integration tests: run the real `busbar` binary as
//! separate processes, with bounded waits and children killed on drop.
#![allow(dead_code, unreachable_pub)]

pub mod scenarios;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How long any one command may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The `busbar` binary, with `BUSBAR_URL` and `RUST_LOG` cleared.
pub fn busbar() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_busbar"));
    command.env_remove("BUSBAR_URL").env_remove("RUST_LOG");
    command
}

/// What a finished command printed and how it exited.
#[derive(Debug)]
pub struct Finished {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Finished {
    /// Stdout's non-empty lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// Stdout's lines parsed as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}\n{self:?}")))
            .collect()
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code: {self:#?}");
        self
    }

    /// Asserts success.
    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        self.expect_code(0)
    }
}

fn reader(mut source: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = source.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    rx
}

/// Runs `busbar args...` with `stdin` as input, to completion within [`DEADLINE`].
pub fn run_with_input(args: &[&str], stdin: &str) -> Finished {
    let mut child = busbar()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the busbar binary runs");
    let mut input = child.stdin.take().expect("piped stdin");
    let text = stdin.to_owned();
    thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let stdout = reader(child.stdout.take().expect("piped stdout"));
    let stderr = reader(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + DEADLINE;
    let wait = |rx: &Receiver<String>, child: &mut Child| match rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            panic!("busbar {args:?} did not finish within {DEADLINE:?}");
        }
    };
    let stdout = wait(&stdout, &mut child);
    let stderr = wait(&stderr, &mut child);
    let status = child.wait().expect("wait for busbar");
    Finished {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// Runs `busbar args...` with empty stdin.
pub fn run(args: &[&str]) -> Finished {
    run_with_input(args, "")
}

/// A long-running `busbar` process, killed when dropped.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    /// Stdout not yet read (see [`Running::start_holding_stdout`]), and where its
    /// lines go once released.
    held_stdout: Option<(ChildStdout, mpsc::Sender<String>)>,
    stderr: Receiver<String>,
    /// Every line read so far from stderr (for failure messages).
    pub stderr_seen: Vec<String>,
    name: String,
}

fn line_reader(source: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    forward_lines(source, tx);
    rx
}

fn forward_lines(source: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

impl Running {
    /// Starts `busbar args...` in the background.
    pub fn start(args: &[&str]) -> Running {
        Running::start_with_env(args, &[])
    }

    /// Starts `busbar args...` in the background with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut running = Running::start_holding_stdout(args, env);
        running.release_stdout();
        running
    }

    /// Starts `busbar args...` but reads nothing from its stdout until
    /// [`release_stdout`](Running::release_stdout): once the pipe is full, the
    /// process blocks writing, like one piped into a stalled reader.
    pub fn start_holding_stdout(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = busbar()
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the busbar binary runs");
        let (stdout_tx, stdout) = mpsc::channel();
        let held_stdout = Some((child.stdout.take().expect("piped stdout"), stdout_tx));
        let stderr = line_reader(child.stderr.take().expect("piped stderr"));
        Running {
            stdin: child.stdin.take(),
            child,
            stdout,
            held_stdout,
            stderr,
            stderr_seen: Vec::new(),
            name: format!("busbar {}", args.join(" ")),
        }
    }

    /// Starts reading stdout (a no-op if it is already read).
    pub fn release_stdout(&mut self) {
        if let Some((stdout, tx)) = self.held_stdout.take() {
            forward_lines(stdout, tx);
        }
    }

    /// The next stdout line if one comes within `wait`; `None` otherwise.
    pub fn next_line_within(&mut self, wait: Duration) -> Option<String> {
        self.stdout.recv_timeout(wait).ok()
    }

    /// The stderr lines printed so far that were not yet seen, without waiting.
    pub fn new_stderr_lines(&mut self) -> Vec<String> {
        let lines: Vec<String> = self.stderr.try_iter().collect();
        self.stderr_seen.extend(lines.iter().cloned());
        lines
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for a stderr line containing `needle`; returns it.
    #[track_caller]
    pub fn wait_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no stderr line with {needle:?} within {DEADLINE:?}; saw {:?}",
                    self.name, self.stderr_seen
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before printing {needle:?}; stderr {:?}",
                    self.name, self.stderr_seen
                ),
            }
        }
    }

    /// Waits for the process's readiness line (`...; ready`).
    #[track_caller]
    pub fn ready(mut self) -> Running {
        self.wait_stderr("ready");
        self
    }

    /// The next stdout line, waiting at most [`DEADLINE`].
    #[track_caller]
    pub fn next_line(&mut self) -> String {
        self.stdout.recv_timeout(DEADLINE).unwrap_or_else(|err| {
            panic!(
                "{}: no stdout line within {DEADLINE:?} ({err}); stderr {:?}",
                self.name, self.stderr_seen
            )
        })
    }

    /// The next stdout line parsed as JSON.
    #[track_caller]
    pub fn next_json(&mut self) -> serde_json::Value {
        let line = self.next_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Waits (bounded) for the process to exit by itself; its code and the rest of stderr.
    #[track_caller]
    pub fn wait_exit(mut self) -> (Option<i32>, Vec<String>) {
        drop(self.stdin.take());
        let deadline = Instant::now() + DEADLINE;
        // stderr closes when the process exits.
        loop {
            match self
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.stderr_seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: did not exit within {DEADLINE:?}", self.name)
                }
            }
        }
        let status = self.child.wait().expect("wait for busbar");
        (status.code(), std::mem::take(&mut self.stderr_seen))
    }

    /// Sends SIGINT (like Ctrl-C) and waits for the exit.
    #[track_caller]
    pub fn interrupt(self) -> (Option<i32>, Vec<String>) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.wait_exit()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `busbar broker` on a free port; its `zmq://` URL. Killed on drop.
pub struct BrokerProcess {
    /// The running broker.
    pub process: Running,
    /// `zmq://127.0.0.1:PORT`.
    pub url: String,
}

impl BrokerProcess {
    /// Starts `busbar broker --bind tcp://127.0.0.1:0` and reads its URL.
    pub fn start() -> BrokerProcess {
        let mut process = Running::start(&["broker", "--bind", "tcp://127.0.0.1:0", "--stats"]);
        let url = process.next_line();
        assert!(url.starts_with("zmq://127.0.0.1:"), "{url}");
        let process = process.ready();
        BrokerProcess { process, url }
    }
}

/// A name unique to this test run, so tests sharing a broker never collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}.p{}n{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
