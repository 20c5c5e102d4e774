//! Every command across processes over ZeroMQ: a `busbar broker` child on a free
//! loopback port, and separate `busbar` processes as clients.

mod common;

use common::{run, run_with_input, scenarios, BrokerProcess};
use std::time::{Duration, Instant};

#[test]
fn broker_prints_its_url_and_stats_and_stops_on_interrupt() {
    let broker = BrokerProcess::start();
    run(&["pub", "hello.world", "1", "--url", &broker.url]).expect_ok();
    let (code, stderr) = broker.process.interrupt();
    assert_eq!(code, Some(0), "{stderr:?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("\"events_in\"") && l.contains("\"stalled_clients\"")),
        "{stderr:?}"
    );
    assert!(
        stderr.iter().any(|l| l.contains("broker stopped")),
        "{stderr:?}"
    );
}

#[test]
fn logs_follow_rust_log_and_are_off_by_default() {
    let quiet = BrokerProcess::start();
    let (_, stderr) = quiet.process.interrupt();
    assert!(
        stderr.iter().all(|l| l.starts_with("busbar: ")),
        "unexpected log lines without RUST_LOG: {stderr:?}"
    );

    let mut verbose = common::Running::start_with_env(
        &["broker", "--bind", "tcp://127.0.0.1:0"],
        &[("RUST_LOG", "busbar_zmq=info")],
    );
    let line = verbose.wait_stderr("zmq broker listening");
    assert!(line.contains("INFO"), "{line}");
}

#[test]
fn broker_bind_failure_is_a_transport_error() {
    let broker = BrokerProcess::start();
    let endpoint = broker.url.replace("zmq://", "tcp://");
    let failed = run(&["broker", "--bind", &endpoint]);
    failed.expect_code(19);
    assert!(
        failed.stderr.contains("cannot start the broker"),
        "{failed:?}"
    );
}

#[test]
fn pub_sub() {
    let broker = BrokerProcess::start();
    scenarios::pub_sub(&broker.url);
}

#[test]
fn sub_until_interrupted() {
    let broker = BrokerProcess::start();
    scenarios::sub_until_interrupted(&broker.url);
}

#[test]
fn call_and_serve() {
    let broker = BrokerProcess::start();
    scenarios::call_and_serve(&broker.url);
}

#[test]
fn call_all_and_serve_count() {
    let broker = BrokerProcess::start();
    scenarios::call_all_and_serve_count(&broker.url);
}

#[test]
fn queue() {
    let broker = BrokerProcess::start();
    scenarios::queue(&broker.url);
}

#[test]
fn bench() {
    let broker = BrokerProcess::start();
    scenarios::bench(&broker.url, "raw zeromq sockets");
}

#[test]
fn no_broker_is_a_transport_error() {
    // A loopback port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let failed = run(&[
        "pub",
        "a.b",
        "1",
        "--url",
        &format!("zmq://127.0.0.1:{port}"),
    ]);
    failed.expect_code(19);
    assert!(
        failed.stderr.contains("cannot connect to zmq://"),
        "{failed:?}"
    );
    assert!(failed.stderr.contains("[transport]"), "{failed:?}");
}

/// `sub --buffer N` behind a stalled stdout keeps what it buffered and drops
/// the newer events, reporting how many it missed: what it prints is a prefix
/// of what was published, at least N long, and printed + missed = published.
#[test]
fn a_full_sub_buffer_drops_the_newest() {
    const PUBLISHED: usize = 5_000;
    const BUFFER: usize = 1_000;
    let broker = BrokerProcess::start();
    let topic = common::unique("lag");
    let buffer = BUFFER.to_string();
    // Fat lines, so the stalled pipe holds far fewer events than the buffer.
    let mut sub = common::Running::start_holding_stdout(
        &["sub", &topic, "--buffer", &buffer, "--url", &broker.url],
        &[],
    );
    sub.wait_stderr("ready");
    let pad = "x".repeat(400);
    let input: String = (0..PUBLISHED)
        .map(|seq| format!("{{\"seq\":{seq},\"pad\":\"{pad}\"}}\n"))
        .collect();
    run_with_input(&["pub", &topic, "--url", &broker.url], &input).expect_ok();

    sub.release_stdout();
    let mut printed: Vec<u64> = Vec::new();
    let mut missed = 0usize;
    let deadline = Instant::now() + common::DEADLINE;
    while printed.len() + missed < PUBLISHED {
        assert!(
            Instant::now() < deadline,
            "printed {} and missed {missed} of {PUBLISHED}; stderr {:?}",
            printed.len(),
            sub.stderr_seen
        );
        for line in sub.new_stderr_lines() {
            if let Some(n) = line
                .split_once("the next ")
                .and_then(|(_, rest)| rest.split(' ').next())
            {
                missed += n.parse::<usize>().unwrap_or_else(|e| panic!("{line}: {e}"));
            }
        }
        if let Some(line) = sub.next_line_within(Duration::from_millis(100)) {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            printed.push(event["payload"]["seq"].as_u64().unwrap());
        }
    }
    assert!(
        missed > 0,
        "nothing was dropped: the test did not stall the sub"
    );
    assert!(
        printed.windows(2).all(|w| w[0] < w[1]),
        "out of order: {printed:?}"
    );
    // The buffered events were kept: the first run is contiguous from 0 and
    // holds at least the buffer (plus what the stalled pipe took).
    let run = printed
        .iter()
        .enumerate()
        .take_while(|(i, seq)| **seq == *i as u64)
        .count();
    assert!(
        run >= BUFFER,
        "only the first {run} events were kept before the gap (buffer {BUFFER}): \
         older events were dropped for newer ones"
    );
}

/// `call METHOD -` reads the request from stdin, so a request far over what an
/// argument can carry (about 128 KB) goes through whole.
#[test]
fn call_reads_a_large_request_from_stdin() {
    let broker = BrokerProcess::start();
    let method = common::unique("big.echo");
    let _echo = common::Running::start(&["serve", &method, "--echo", "--url", &broker.url]).ready();
    let blob: String = (0..300_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let request = serde_json::json!({ "blob": blob, "tail": [1, 2, 3] });
    // Pretty-printed, over several lines: stdin is one JSON value, not lines.
    let text = serde_json::to_string_pretty(&request).unwrap();
    assert!(text.len() > 300_000);
    let answer = run_with_input(&["call", &method, "-", "--url", &broker.url], &text);
    answer.expect_ok();
    assert_eq!(answer.json_lines(), vec![request]);
}

/// Whether `pid` is still running (a zombie waiting for its parent is not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `done` until it holds, failing after [`common::DEADLINE`].
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + common::DEADLINE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {:?}",
            common::DEADLINE
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids written to `path` so far, one a line.
fn pids(path: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `serve --exec` kills the whole process tree of a command still running at
/// the caller's deadline, and of every running command when it is interrupted.
#[test]
fn serve_exec_kills_hung_commands_at_the_deadline_and_on_interrupt() {
    let broker = BrokerProcess::start();
    let method = common::unique("hang.forever");
    let dir = TempDir::new("busbar-exec");
    let file = dir.0.join("pids");
    // Three processes per call: the shell, a shell it starts, and that shell's
    // background sleep; each writes its pid, then they wait forever.
    let command = r#"echo $$ >> "$PIDS_FILE"; sh -c 'sleep 300 & echo $! >> "$PIDS_FILE"; echo $$ >> "$PIDS_FILE"; wait'; wait"#;
    let mut serve = common::Running::start_with_env(
        &["serve", &method, "--exec", command, "--url", &broker.url],
        &[("PIDS_FILE", file.to_str().unwrap())],
    );
    serve.wait_stderr("ready");

    let timed_out = run(&["call", &method, "--timeout", "1s", "--url", &broker.url]);
    timed_out.expect_code(13);
    wait_until("the first call's processes started", || {
        pids(&file).len() == 3
    });
    let first = pids(&file);
    wait_until("the first call's processes were killed", || {
        !first.iter().any(|&pid| running(pid))
    });
    serve.wait_stderr("deadline");

    let mut call =
        common::Running::start(&["call", &method, "--timeout", "60s", "--url", &broker.url]);
    wait_until("the second call's processes started", || {
        pids(&file).len() == 6
    });
    let second = pids(&file)[3..].to_vec();
    assert!(second.iter().all(|&pid| running(pid)), "{second:?}");
    let (code, stderr) = serve.interrupt();
    assert_eq!(code, Some(0), "{stderr:?}");
    // Killed before serve exited; the kernel finishes them off at once.
    wait_until("the second call's processes were killed", || {
        !second.iter().any(|&pid| running(pid))
    });
    // The caller was answered, not left to its deadline.
    call.wait_stderr("when the server stopped");
    let (code, _) = call.wait_exit();
    assert_eq!(code, Some(14));
}

/// A directory of its own under the system's temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(common::unique(prefix));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sub` prints every header, repeats included, and every payload exactly:
/// JSON as its own text (compacted), anything else as base64.
#[test]
fn sub_prints_repeated_headers_and_exact_payloads() {
    use busbar::{Bus, ContentType, Envelope, Kind, Name};

    let broker = BrokerProcess::start();
    let base = common::unique("exact");
    let pattern = format!("{base}.*");
    let mut sub =
        common::Running::start(&["sub", &pattern, "--count", "3", "--url", &broker.url]).ready();

    run(&[
        "pub",
        &format!("{base}.cli"),
        "{\"n\":1}",
        "-H",
        "a=1",
        "-H",
        "a=2",
        "-H",
        "b=x",
        "--url",
        &broker.url,
    ])
    .expect_ok();

    // Raw envelopes from the Rust API: bytes that are not UTF-8 (with a
    // newline), and JSON whose number is beyond f64 and which spans lines.
    let binary: &[u8] = &[0x00, 0xff, 0xfe, b'\n', b'{', 0x80];
    let json_text = "{\"big\": 123456789012345678901234567890,\n \"s\": \"x\\ny\"}";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bus = Bus::connect(&broker.url).await.unwrap();
        let raw = |topic: &str, content_type: ContentType, payload: &[u8]| {
            let mut envelope = Envelope::new(
                Kind::Event,
                Name::new(&format!("{base}.{topic}")).unwrap(),
                content_type,
                bytes::Bytes::copy_from_slice(payload),
            );
            envelope.headers = vec![("k".into(), "v1".into()), ("k".into(), "v2".into())];
            envelope
        };
        let transport = bus.transport();
        let octets = ContentType::new("application/octet-stream");
        transport.publish(raw("bin", octets, binary)).await.unwrap();
        transport
            .publish(raw("json", ContentType::JSON, json_text.as_bytes()))
            .await
            .unwrap();
        bus.shutdown().await.unwrap();
    });

    let lines: Vec<String> = (0..3).map(|_| sub.next_line()).collect();
    let find = |topic: &str| {
        let topic = format!("\"topic\":\"{base}.{topic}\"");
        lines
            .iter()
            .find(|l| l.contains(&topic))
            .unwrap_or_else(|| panic!("no {topic} in {lines:?}"))
            .clone()
    };
    let cli: serde_json::Value = serde_json::from_str(&find("cli")).unwrap();
    assert_eq!(
        cli["headers"],
        serde_json::json!([["a", "1"], ["a", "2"], ["b", "x"]])
    );
    assert_eq!(cli["payload"], serde_json::json!({"n": 1}));

    let bin: serde_json::Value = serde_json::from_str(&find("bin")).unwrap();
    assert_eq!(
        bin["headers"],
        serde_json::json!([["k", "v1"], ["k", "v2"]])
    );
    assert_eq!(bin["content_type"], "application/octet-stream");
    assert!(bin.get("payload").is_none(), "{bin}");
    // base64 of 00 ff fe 0a 7b 80
    assert_eq!(bin["payload_base64"], "AP/+CnuA");

    // The JSON text itself, on one line: the number keeps every digit.
    let json = find("json");
    assert!(
        json.ends_with(r#""payload":{"big":123456789012345678901234567890,"s":"x\ny"}}"#),
        "{json}"
    );
    let (code, stderr) = sub.wait_exit();
    assert_eq!(code, Some(0), "{stderr:?}");
}

#[test]
fn call_timeout_bounds_connecting_to_no_broker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let failed = run(&[
        "call",
        "math.double",
        "21",
        "--timeout",
        "500ms",
        "--url",
        &format!("zmq://127.0.0.1:{port}"),
    ]);
    let elapsed = started.elapsed();
    failed.expect_code(19);
    assert!(failed.stderr.contains("unreachable"), "{failed:?}");
    assert!(failed.stderr.contains("[transport]"), "{failed:?}");
    // The connect wait alone is 5 s: --timeout must cut it (slack for a
    // loaded machine starting a process).
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "call --timeout 500ms took {elapsed:?}"
    );
}
