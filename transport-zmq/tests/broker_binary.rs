//! The `busbar-zmq-broker` program: binds a free port, prints its endpoint,
//! serves clients in other processes' place.

use busbar_core::{Bus, Fault};
use busbar_zmq::ZmqBus;
use bytes::Bytes;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

/// Kills the broker process when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the broker program on a free port; returns it with its endpoint.
async fn start() -> (Child, String) {
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
    let endpoint = endpoint.trim().to_owned();
    assert!(endpoint.starts_with("tcp://127.0.0.1:"), "{endpoint:?}");
    (child, endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_program_serves_clients() {
    let (_child, endpoint) = start().await;
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

/// The `broker instance id` of WELCOME, read with a raw DEALER.
async fn instance_id(endpoint: &str) -> u64 {
    let mut socket = zeromq::DealerSocket::new();
    socket.connect(endpoint).await.unwrap();
    let mut hello = ZmqMessage::from(Bytes::from_static(b"BBZ1"));
    hello.push_back(Bytes::from_static(&[0x01]));
    hello.push_back(Bytes::from_static(b"instance-test"));
    socket.send(hello).await.unwrap();
    let welcome = tokio::time::timeout(Duration::from_secs(10), socket.recv())
        .await
        .expect("WELCOME in time")
        .unwrap()
        .into_vec();
    assert_eq!(welcome[1].as_ref(), [0x81], "{welcome:?}");
    u64::from_be_bytes(welcome[4].as_ref().try_into().expect("a u64 broker id"))
}

/// A client tells a restarted broker from the one it knew by WELCOME's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_process_has_its_own_instance_id() {
    let (first, endpoint) = start().await;
    let a = instance_id(&endpoint).await;
    assert_eq!(a, instance_id(&endpoint).await, "one broker, one id");
    drop(first);
    let (_second, endpoint) = start().await;
    let b = instance_id(&endpoint).await;
    assert_ne!(a, b, "a restarted broker must not look like the old one");
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
