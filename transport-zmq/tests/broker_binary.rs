//! The `busbar-zmq-broker` program: binds a free port, prints its endpoint,
//! serves clients in other processes' place.

use busbar_core::{Bus, Fault};
use busbar_zmq::ZmqBus;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Kills the broker process when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_program_serves_clients() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_busbar-zmq-broker"))
            .args(["--bind", "tcp://127.0.0.1:0", "--heartbeat-ms", "200"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the broker"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let endpoint = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        }),
    )
    .await
    .expect("the broker printed its endpoint in time")
    .unwrap()
    .unwrap();
    let endpoint = endpoint.trim();
    assert!(endpoint.starts_with("tcp://127.0.0.1:"), "{endpoint:?}");
    let url = endpoint.replace("tcp://", "zmq://");
    let server = Bus::from_transport(Arc::new(ZmqBus::connect(&url).await.unwrap()));
    let client = Bus::from_transport(Arc::new(ZmqBus::connect(&url).await.unwrap()));
    let _provider = server
        .expose(
            "binary.double",
            |x: u32| async move { Ok::<_, Fault>(x * 2) },
        )
        .await
        .unwrap();
    let stub = client.stub::<u32, u32>("binary.double").unwrap();
    assert_eq!(stub.call(&21).await.unwrap(), 42);
}

#[test]
fn the_broker_program_explains_its_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_busbar-zmq-broker"))
        .arg("--nonsense")
        .output()
        .expect("run the broker");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--bind"));
}
