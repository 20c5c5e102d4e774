//! How every network transport connects: one policy, for transport authors.
//!
//! `Bus::connect` on a broker that is not reachable yet (not started, or
//! restarting) keeps trying for [`ConnectPolicy::timeout`] (URL query
//! `connect_timeout=<ms>`, default 5000 ms) instead of failing at once, with
//! a jittered exponential [`Backoff`] between attempts (50 ms doubling to 2 s).
//! `connect_timeout=0` makes one attempt. When the time is up, the error is an
//! [`Error::Transport`] naming the address, how many attempts were made, and
//! the last attempt's cause. Errors that another attempt cannot cure (a bad
//! password, a TLS certificate refused) end at once ([`Failure::fatal`]).
//!
//! Each attempt is cut to what remains of the timeout, but gets at least
//! [`ATTEMPT_FLOOR`], so a connect ends within `connect_timeout` plus that.
//!
//! The same [`Backoff`] paces reconnects after a lost connection, so many
//! clients that lost one broker do not all come back in lock step.

use crate::error::{Error, Result};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// How long `Bus::connect` keeps trying when nothing says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The first pause between attempts (before jitter).
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// The longest pause between attempts (before jitter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The least time one attempt is given, even when less of the timeout is left
/// (a TCP connect and handshake on a loaded machine need some).
pub const ATTEMPT_FLOOR: Duration = Duration::from_secs(1);

/// The URL query parameter setting [`ConnectPolicy::timeout`], in milliseconds.
pub const TIMEOUT_PARAM: &str = "connect_timeout";

/// Whether, and for how long, connecting retries an unreachable broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectPolicy {
    /// How long to keep trying; zero makes a single attempt.
    pub timeout: Duration,
    /// The first pause between attempts.
    pub min_backoff: Duration,
    /// The longest pause between attempts.
    pub max_backoff: Duration,
}

impl Default for ConnectPolicy {
    fn default() -> Self {
        ConnectPolicy::with_timeout(DEFAULT_TIMEOUT)
    }
}

/// Why one connection attempt failed, and whether another may succeed.
#[derive(Debug)]
pub struct Failure {
    error: Error,
    retry: bool,
}

impl Failure {
    /// A failure another attempt may cure (refused, reset, timed out).
    pub fn retry(error: Error) -> Failure {
        Failure { error, retry: true }
    }

    /// A failure no attempt will cure (bad credentials, bad certificate,
    /// invalid settings): connecting ends with this error at once.
    pub fn fatal(error: Error) -> Failure {
        Failure {
            error,
            retry: false,
        }
    }
}

impl From<Error> for Failure {
    /// Retried, unless the error is one no attempt cures (an invalid URL).
    fn from(error: Error) -> Failure {
        let retry = !matches!(error, Error::InvalidUrl { .. });
        Failure { error, retry }
    }
}

impl ConnectPolicy {
    /// The default backoff with `timeout`.
    pub fn with_timeout(timeout: Duration) -> ConnectPolicy {
        ConnectPolicy {
            timeout,
            min_backoff: MIN_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }

    /// Reads the URL query parameter `key=value` if it is one of the policy's
    /// ([`TIMEOUT_PARAM`]): `Ok(true)` when it was, `Ok(false)` when it is
    /// another one, `Err` with the reason when its value is invalid.
    pub fn read_param(&mut self, key: &str, value: &str) -> std::result::Result<bool, String> {
        if key != TIMEOUT_PARAM {
            return Ok(false);
        }
        let millis: u64 = value.parse().map_err(|_| {
            format!("{TIMEOUT_PARAM} must be a number of milliseconds, not {value:?}")
        })?;
        self.timeout = Duration::from_millis(millis);
        Ok(true)
    }

    /// A fresh backoff with this policy's bounds.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.min_backoff, self.max_backoff)
    }

    /// Runs `attempt` until it succeeds, fails fatally, or the timeout is up.
    ///
    /// `attempt` is given the time it may take (what remains of the timeout,
    /// at least [`ATTEMPT_FLOOR`]) and is cut off there. `address` (with no
    /// password in it) names the broker in the final error.
    pub async fn connect<T, F, Fut>(&self, address: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut backoff = self.backoff();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let limit = deadline
                .saturating_duration_since(Instant::now())
                .max(ATTEMPT_FLOOR);
            let failure = match tokio::time::timeout(limit, attempt(limit)).await {
                Ok(Ok(connected)) => return Ok(connected),
                Ok(Err(failure)) => failure,
                Err(_) => Failure::retry(Error::transport(format!(
                    "the attempt took longer than {limit:?}"
                ))),
            };
            if !failure.retry {
                return Err(failure.error);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::transport(format!(
                    "cannot connect to {address}: {attempts} attempt{} in {:.1?} \
                     (connect_timeout {:?}) failed; the last: {}",
                    if attempts == 1 { "" } else { "s" },
                    start.elapsed(),
                    self.timeout,
                    failure.error
                )));
            }
            tracing::debug!(%address, err = %failure.error, attempts, "connect attempt failed; retrying");
            tokio::time::sleep(backoff.next_delay().min(left)).await;
        }
    }
}

/// Exponential backoff with jitter: each pause is drawn between half and all
/// of the current step, and the step doubles from `min` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
    min: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    /// A backoff whose first step is `min` and whose steps stop growing at `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        use std::hash::{BuildHasher, Hasher};
        // A per-process random key, varied per call: enough to spread clients out.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        );
        Backoff {
            step: min,
            min,
            max: max.max(min),
            seed: hasher.finish() | 1,
        }
    }

    /// The next pause, and grows the step.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: cheap, and the seed is never zero.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = self.step / 2;
        let spread = (self.step - half).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            self.seed % (spread + 1)
        };
        let delay = half + Duration::from_nanos(jitter);
        self.step = (self.step * 2).min(self.max);
        delay
    }

    /// Waits the next pause.
    pub async fn wait(&mut self) {
        let delay = self.next_delay();
        tokio::time::sleep(delay).await;
    }

    /// Starts over from the first step (after a success).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut step = MIN_BACKOFF;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
            step = (step * 2).min(MAX_BACKOFF);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= MIN_BACKOFF);
    }

    #[test]
    fn two_backoffs_do_not_move_in_lock_step() {
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let same = (0..8).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 8);
    }

    #[test]
    fn reads_its_url_parameter_only() {
        let mut policy = ConnectPolicy::default();
        assert_eq!(policy.timeout, DEFAULT_TIMEOUT);
        assert_eq!(policy.read_param("connect_timeout", "250"), Ok(true));
        assert_eq!(policy.timeout, Duration::from_millis(250));
        assert_eq!(policy.read_param("namespace", "x"), Ok(false));
        assert!(policy.read_param("connect_timeout", "soon").is_err());
    }

    fn quick(timeout: Duration) -> ConnectPolicy {
        ConnectPolicy {
            timeout,
            min_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn retries_until_an_attempt_succeeds() {
        let policy = quick(Duration::from_secs(5));
        let tries = AtomicU32::new(0);
        let got = policy
            .connect("here:1", |_| async {
                match tries.fetch_add(1, Ordering::Relaxed) {
                    0..=3 => Err(Failure::retry(Error::transport("refused"))),
                    n => Ok(n),
                }
            })
            .await
            .unwrap();
        assert_eq!(got, 4);
    }

    #[tokio::test]
    async fn gives_up_at_the_timeout_naming_address_and_cause() {
        let policy = quick(Duration::from_millis(300));
        let start = Instant::now();
        let err = policy
            .connect("here:1", |_| async {
                Err::<(), _>(Failure::retry(Error::transport("connection refused")))
            })
            .await
            .unwrap_err();
        let elapsed = start.elapsed();
        // Generous slack: the bound is the point, not the speed.
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5));
        assert!(text_has_attempts(&err), "{err}");
        let text = err.to_string();
        assert!(matches!(err, Error::Transport(_)), "{err:?}");
        assert!(
            text.contains("here:1") && text.contains("connection refused"),
            "{text}"
        );
    }

    fn text_has_attempts(err: &Error) -> bool {
        err.to_string().contains(" attempts in ")
    }

    #[tokio::test]
    async fn zero_makes_one_attempt_and_fatal_ends_at_once() {
        let tries = AtomicU32::new(0);
        let once = ConnectPolicy::with_timeout(Duration::ZERO);
        let _ = once
            .connect("here:1", |_| async {
                tries.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(Failure::retry(Error::transport("refused")))
            })
            .await
            .unwrap_err();
        assert_eq!(tries.load(Ordering::Relaxed), 1);
        let patient = quick(Duration::from_secs(60));
        let err = patient
            .connect("here:1", |_| async {
                tries.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(Failure::fatal(Error::transport("WRONGPASS")))
            })
            .await
            .unwrap_err();
        assert_eq!(tries.load(Ordering::Relaxed), 2);
        assert!(err.to_string().contains("WRONGPASS"));
    }
}
