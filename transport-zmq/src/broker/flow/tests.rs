//! The writer never hands a client's socket more than the window, however much
//! is queued for a client that reads nothing; what it holds back is counted
//! and delivered, in order, once the client reads.

use super::{Marks, SOCKET_BYTES, SOCKET_MESSAGES};
use crate::broker::pump::Pump;
use crate::broker::writer::Outbox;
use crate::broker::Internal;
use crate::protocol;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use zeromq::{Socket, SocketRecv, SocketSend};

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(30), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_gets_no_more_than_the_window() {
    const EVENTS: usize = 32 * 1024;
    const BATCH: usize = 64;
    let mut router = zeromq::RouterSocket::new();
    let endpoint = router.bind("tcp://127.0.0.1:0").await.unwrap();
    let mut dealer = zeromq::DealerSocket::new();
    dealer.connect(&endpoint.to_string()).await.unwrap();
    dealer.send("hello".into()).await.unwrap();
    let identity = router.recv().await.unwrap().into_vec()[0].clone();
    let backend = router.backend();
    let (send, _recv) = router.split();
    let (internal, mut drained) = mpsc::unbounded_channel();
    let outbox = Outbox::start(
        1,
        identity,
        Pump::start(send, backend).unwrap(),
        Marks {
            events: 0,
            bytes: 0,
        },
        false,
        Arc::default(),
        internal,
    );
    let flow = outbox.flow.clone();
    let subs = protocol::u64_frame(1);
    // 32 MiB: far more than the kernel's buffers take for a reader that reads nothing.
    for batch in 0..EVENTS / BATCH {
        let events = (0..BATCH)
            .map(|i| {
                let mut envelope = vec![0u8; 1024];
                envelope[..8].copy_from_slice(&((batch * BATCH + i) as u64).to_be_bytes());
                (subs.clone(), Bytes::from(envelope))
            })
            .collect();
        outbox.events(events);
    }
    flow.above.store(true, Ordering::SeqCst);
    within("the window to fill", async {
        // Nothing signals the writer's last hand-over: poll.
        while flow.has_room() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let (messages, bytes) = flow.in_socket();
    assert!(
        messages <= SOCKET_MESSAGES,
        "{messages} messages in the socket"
    );
    // The last message handed over may cross the byte limit.
    assert!(
        bytes < SOCKET_BYTES + (1 << 20) + 64 * 1024,
        "{bytes} bytes in the socket"
    );
    let queued = flow.queued();
    assert!(
        queued > EVENTS / 2,
        "what the socket was not given stays counted as queued: {queued}"
    );

    // Reading again: everything arrives, in order, and the drain is reported.
    let mut next = 0u64;
    within("every event", async {
        while next < EVENTS as u64 {
            let frames = dealer.recv().await.unwrap().into_vec();
            assert_eq!(frames[1].as_ref(), [protocol::cmd::EVENT]);
            for pair in frames[2..].chunks(2) {
                let n = u64::from_be_bytes(pair[1][..8].try_into().unwrap());
                assert_eq!(n, next);
                next += 1;
            }
        }
    })
    .await;
    assert!(matches!(
        within("the drain", drained.recv()).await,
        Some(Internal::Drained(1))
    ));
    assert_eq!(flow.queued(), 0);
    assert_eq!(flow.in_socket(), (0, 0));
}
