//! Knowing that a provider still works on a call, for transports where the
//! caller cannot see which provider took its request (Redis, where providers
//! pop a shared list, and [`RpcOverPubSub`](crate::fallback::RpcOverPubSub)).
//!
//! The rule, the same for every such transport:
//!
//! - a handler that is still running [`FIRST_NOTICE`] after it started sends
//!   its caller a *working* notice, then one every [`NOTICE_PERIOD`] while it
//!   runs, and a *done* notice after its reply;
//! - a caller that heard a working notice and then nothing from that handler
//!   for [`LIVENESS`] gives it up: the call ends with
//!   [`Error::ProviderLost`] (for `call_all`, that provider's entry does);
//! - a handler that answers within [`FIRST_NOTICE`] sends no notice at all,
//!   so fast calls cost nothing more. The price: a provider lost within the
//!   first [`FIRST_NOTICE`] of handling a request has told nobody it took it,
//!   and that call ends in [`Error::Timeout`] at its deadline.
//!
//! Transports that see the provider's connection (memory, zmq) report a loss
//! directly and need none of this.

use crate::envelope::MessageId;
use crate::error::Error;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a handler runs before it sends its first working notice.
pub const FIRST_NOTICE: Duration = Duration::from_millis(100);
/// How often a running handler repeats its working notice.
pub const NOTICE_PERIOD: Duration = Duration::from_secs(1);
/// How long a caller waits after a handler's last notice before it gives the
/// provider up for lost (three missed notices).
pub const LIVENESS: Duration = Duration::from_secs(3);

/// One notice from a handler about the call it works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    /// Names this one handling of the request (one per provider in a `call_all`).
    pub worker: MessageId,
    /// True once the handler has sent its reply: it is not watched any more.
    pub done: bool,
}

/// Runs `work` (a handler, up to its reply being sent) and, while it runs past
/// [`FIRST_NOTICE`], has `notify` send working notices; after a run that sent
/// any, a done notice. `notify` is never called for work that ends sooner.
pub async fn with_notices<F, N, NF>(work: F, mut notify: N) -> F::Output
where
    F: Future,
    N: FnMut(Notice) -> NF,
    NF: Future<Output = ()>,
{
    // Made only for work that runs long: fast work pays for nothing here.
    let mut worker = None;
    let output = {
        let worker = &mut worker;
        let notify = &mut notify;
        // Lazy: no timer is made unless the work is still running when polled.
        let notices = async move {
            tokio::time::sleep(FIRST_NOTICE).await;
            let worker = *worker.insert(MessageId::new());
            loop {
                notify(Notice {
                    worker,
                    done: false,
                })
                .await;
                tokio::time::sleep(NOTICE_PERIOD).await;
            }
        };
        tokio::select! {
            biased;
            output = work => output,
            () = notices => unreachable!("the notices never end"),
        }
    };
    if let Some(worker) = worker {
        notify(Notice { worker, done: true }).await;
    }
    output
}

/// What a caller hears about its call: an answer, or a handler's notice.
#[derive(Debug)]
pub enum Heard<T> {
    /// A reply (or whatever the transport carries as one).
    Answer(T),
    /// A handler says it is working, or done.
    Notice(Notice),
}

/// The handlers a caller has heard from and not yet seen finish.
#[derive(Default)]
struct Watch {
    last: HashMap<MessageId, Instant>,
}

impl Watch {
    fn heard(&mut self, notice: Notice) {
        if notice.done {
            self.last.remove(&notice.worker);
        } else {
            self.last.insert(notice.worker, Instant::now());
        }
    }

    /// When the quietest handler will count as lost.
    fn next_loss(&self) -> Option<Instant> {
        self.last.values().min().map(|last| *last + LIVENESS)
    }

    /// Forgets the handlers silent for [`LIVENESS`]; how many they were.
    fn take_lost(&mut self) -> usize {
        let now = Instant::now();
        let before = self.last.len();
        self.last.retain(|_, last| *last + LIVENESS > now);
        before - self.last.len()
    }
}

/// How waiting for one answer ended without one.
#[derive(Debug)]
pub enum Unanswered {
    /// The deadline passed.
    Timeout,
    /// The handler that took the call went silent for [`LIVENESS`].
    Lost,
    /// The channel closed (the bus is shutting down).
    Closed,
}

impl Unanswered {
    /// The error a call reports for it.
    pub fn into_error(self, method: &str) -> Error {
        match self {
            Unanswered::Timeout => Error::Timeout,
            Unanswered::Lost => Error::ProviderLost {
                method: method.to_owned(),
            },
            Unanswered::Closed => Error::Closed,
        }
    }
}

/// Waits for the first answer on `rx` until `deadline`, minding notices.
pub async fn one<T>(
    rx: &mut mpsc::UnboundedReceiver<Heard<T>>,
    deadline: Instant,
) -> Result<T, Unanswered> {
    let mut watch = Watch::default();
    loop {
        let until = watch
            .next_loss()
            .map_or(deadline, |loss| loss.min(deadline));
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(Heard::Answer(answer))) => return Ok(answer),
            Ok(Some(Heard::Notice(notice))) => watch.heard(notice),
            Ok(None) => return Err(Unanswered::Closed),
            Err(_) if Instant::now() >= deadline => return Err(Unanswered::Timeout),
            Err(_) => {
                if watch.take_lost() > 0 {
                    return Err(Unanswered::Lost);
                }
            }
        }
    }
}

/// Gathers answers on `rx` until `expected` entries are known or `deadline`.
/// `more` tells, for each answer, how many further answers it announces (a
/// transport counting buses, not providers). Each handler lost after a notice
/// is one [`Error::ProviderLost`] entry; each missing answer at the deadline is
/// a [`Error::Timeout`] one.
pub async fn gather<T>(
    rx: &mut mpsc::UnboundedReceiver<Heard<T>>,
    mut expected: usize,
    deadline: Instant,
    method: &str,
    mut more: impl FnMut(&T) -> usize,
) -> Vec<Result<T, Error>> {
    let mut watch = Watch::default();
    let mut out = Vec::with_capacity(expected);
    let mut lost = 0;
    while out.len() + lost < expected {
        let until = watch
            .next_loss()
            .map_or(deadline, |loss| loss.min(deadline));
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(Heard::Answer(answer))) => {
                expected += more(&answer);
                out.push(Ok(answer));
            }
            Ok(Some(Heard::Notice(notice))) => watch.heard(notice),
            Ok(None) => break,
            Err(_) if Instant::now() >= deadline => break,
            Err(_) => lost += watch.take_lost(),
        }
    }
    let missing = expected.saturating_sub(out.len());
    let lost = lost.min(missing);
    out.extend((0..lost).map(|_| {
        Err(Error::ProviderLost {
            method: method.to_owned(),
        })
    }));
    out.resize_with(expected.max(out.len()), || Err(Error::Timeout));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quick_work_sends_no_notice() {
        let mut sent = 0;
        let out = with_notices(async { 7 }, |_| {
            sent += 1;
            async {}
        })
        .await;
        assert_eq!((out, sent), (7, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_work_notices_then_says_done() {
        let mut sent = Vec::new();
        with_notices(tokio::time::sleep(Duration::from_millis(2_500)), |n| {
            sent.push(n.done);
            async {}
        })
        .await;
        // At 0.1 s, 1.1 s and 2.1 s, then done.
        assert_eq!(sent, [false, false, false, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_worker_is_lost_after_liveness() {
        let (tx, mut rx) = mpsc::unbounded_channel::<Heard<u32>>();
        let worker = MessageId::new();
        tx.send(Heard::Notice(Notice {
            worker,
            done: false,
        }))
        .unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        assert!(matches!(
            one(&mut rx, deadline).await,
            Err(Unanswered::Lost)
        ));
        assert_eq!(started.elapsed(), LIVENESS);
    }

    #[tokio::test(start_paused = true)]
    async fn gather_marks_lost_workers_and_timeouts() {
        let (tx, mut rx) = mpsc::unbounded_channel::<Heard<u32>>();
        let (quiet, done) = (MessageId::new(), MessageId::new());
        for (worker, finished) in [(quiet, false), (done, false), (done, true)] {
            tx.send(Heard::Notice(Notice {
                worker,
                done: finished,
            }))
            .unwrap();
        }
        tx.send(Heard::Answer(1)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let out = gather(&mut rx, 3, deadline, "m", |_| 0).await;
        assert!(matches!(out[0], Ok(1)));
        assert!(matches!(out[1], Err(Error::ProviderLost { .. })));
        assert!(matches!(out[2], Err(Error::Timeout)));
    }
}
