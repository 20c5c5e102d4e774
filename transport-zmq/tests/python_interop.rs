//! A Python client (pyzmq), written from `docs/zmq-protocol.md`, drives the
//! broker next to Rust clients: it publishes an event a Rust subscriber gets,
//! uses a queue, calls a Rust provider, and serves a method a Rust client calls.
//!
//! Needs `python3` with `pyzmq` (`pip install pyzmq`); without them the test
//! fails with that hint rather than skipping.

use busbar_core::{Bus, Fault};
use busbar_zmq::{Broker, ZmqBus};
use futures::StreamExt;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn require_pyzmq() {
    let probe = Command::new(python())
        .args(["-c", "import zmq"])
        .output()
        .unwrap_or_else(|err| {
            panic!("python3 is needed for the interop test ({err}); install it, then `pip install pyzmq`")
        });
    assert!(
        probe.status.success(),
        "the interop test needs pyzmq: run `pip install pyzmq` (python said: {})",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
}

async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    match tokio::time::timeout(WAIT, lines.recv()).await {
        Ok(Some(line)) => line,
        Ok(None) => String::from("<python ended>"),
        Err(_) => String::from("<python said nothing in time>"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_speaks_the_protocol() {
    require_pyzmq();
    let broker = Broker::bind("tcp://127.0.0.1:0").await.unwrap();
    let prefix = format!("interop{}", std::process::id());
    let rust = Bus::from_transport(Arc::new(ZmqBus::connect(&broker.url()).await.unwrap()));
    let _add = rust
        .expose(&format!("{prefix}.add"), |(a, b): (i64, i64)| async move {
            Ok::<_, Fault>(a + b)
        })
        .await
        .unwrap();
    let mut events = rust
        .subscribe_to::<String>(&format!("{prefix}.events"))
        .await
        .unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop.py");
    let mut child = Command::new(python())
        .args([script, broker.endpoint(), &prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let stdout = child.stdout.take().expect("python stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Python serves PREFIX.mul once it has done the rest; call it from Rust.
    let ready = next_line(&mut lines).await;
    if ready != "READY" {
        let output = child.wait_with_output().expect("python output");
        panic!(
            "python did not get ready ({ready}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mul = rust
        .stub::<(i64, i64), i64>(&format!("{prefix}.mul"))
        .unwrap()
        .timeout(Duration::from_secs(10));
    assert_eq!(mul.call(&(6, 7)).await.unwrap(), 42);
    assert_eq!(next_line(&mut lines).await, "OK");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The event Python published reached the Rust subscriber too.
    let event = tokio::time::timeout(WAIT, events.next()).await.unwrap();
    assert_eq!(event.unwrap().unwrap(), "hello from python");
    // Only the three requests Python sends to be refused were rejected.
    assert_eq!(broker.stats().rejected, 3);
}
