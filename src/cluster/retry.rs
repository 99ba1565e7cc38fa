//! Bounded retries with exponential backoff for transient failures: elections
//! (`NotWritablePrimary`, `InterruptedDueToReplStateChange`), dropped connections, time limits,
//! write conflicts, anything the server labels retryable. The driver already retries a read or
//! a write once; this covers longer outages (an election takes seconds) and operations the
//! driver does not retry (getMore, commands run with `run_command`). Whether an error is
//! transient is decided by code and label ([`ClusterError::is_transient`]), never by message.
//!
//! A failure that outlasts the attempts is returned as it is: the caller's state is saved and
//! the run can be resumed once the cause is fixed.

use std::time::{Duration, Instant};

use super::ClusterError;

/// How patiently to retry: pauses that double from `first` up to `max`, for as long as the
/// failures last less than `budget` (`options.retry_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// How long an operation may keep failing before its error is returned.
    pub budget: Duration,
    /// The first pause.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Backoff {
    /// One minute: longer than a replica-set election (10–12 s by default) or a rolling restart
    /// step, short enough that a persistent fault ends the run while someone is still watching.
    pub const DEFAULT: Backoff = Backoff::within(Duration::from_secs(60));

    /// Retries for up to `budget`, pausing 0.25 s, 0.5 s, 1 s, ... up to 15 s (a tenth of the
    /// budget when that is shorter).
    pub const fn within(budget: Duration) -> Backoff {
        let tenth = budget.as_millis() / 10;
        let max = if tenth < 15_000 {
            Duration::from_millis(tenth as u64)
        } else {
            Duration::from_secs(15)
        };
        let first = if max.as_millis() < 250 {
            max
        } else {
            Duration::from_millis(250)
        };
        Backoff { budget, first, max }
    }

    /// The pause before retry number `attempt` (0-based), with up to 25% jitter so parallel
    /// workers do not retry in lockstep.
    pub fn pause(&self, attempt: u32) -> Duration {
        let base = self
            .first
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

/// Errors that may be worth retrying.
pub trait Transient {
    /// True when the same operation may succeed if tried again later.
    fn is_transient(&self) -> bool;
}

impl Transient for ClusterError {
    fn is_transient(&self) -> bool {
        ClusterError::is_transient(self)
    }
}

/// Runs `f` until it succeeds, fails with a non-transient error, or the retries are spent.
/// `what` names the operation in the log line of each retry.
pub async fn retry<T, E, F, Fut>(what: &str, backoff: Backoff, mut f: F) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && started.elapsed() < backoff.budget => {
                let pause = backoff.pause(attempt);
                tracing::warn!(operation = what, error = %e, attempt = attempt + 1, ?pause, "transient failure; retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Counts consecutive failures of a long-running loop (a partition copy, the change reader)
/// that restarts itself from its last checkpoint: progress resets the count and the clock.
#[derive(Debug, Clone, Copy)]
pub struct Attempts {
    backoff: Backoff,
    failures: u32,
    failing_since: Option<Instant>,
}

impl Attempts {
    /// No failure yet.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            failures: 0,
            failing_since: None,
        }
    }

    /// Progress was made: the next failure starts the count afresh.
    pub fn progressed(&mut self) {
        self.failures = 0;
        self.failing_since = None;
    }

    /// After a failure: `Some(pause)` when it is transient and the budget is not spent (wait,
    /// then restart), `None` when the caller should give up and return the error.
    pub fn after<E: Transient + std::fmt::Display>(
        &mut self,
        what: &str,
        e: &E,
    ) -> Option<Duration> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if !e.is_transient() || since.elapsed() >= self.backoff.budget {
            return None;
        }
        let pause = self.backoff.pause(self.failures);
        self.failures += 1;
        tracing::warn!(operation = what, error = %e, attempt = self.failures, ?pause, "transient failure; restarting from the last checkpoint");
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> ClusterError {
        ClusterError::Command {
            side: crate::cluster::Side::Destination,
            command: "insert".into(),
            code: Some(10107),
            labels: vec![],
            message: "not primary".into(),
        }
    }

    fn permanent() -> ClusterError {
        ClusterError::Command {
            side: crate::cluster::Side::Destination,
            command: "insert".into(),
            code: Some(13),
            labels: vec![],
            message: "unauthorized".into(),
        }
    }

    /// Short pauses within a budget long enough for several of them even on a loaded
    /// machine, where a 10 ms sleep can take far longer.
    const FAST: Backoff = Backoff {
        budget: Duration::from_millis(500),
        first: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };

    #[tokio::test]
    async fn transient_errors_are_retried_until_success_or_the_limit() {
        let mut calls = 0;
        let r: Result<u32, ClusterError> = retry("op", FAST, || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(transient()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap(), 3);

        let mut calls = 0;
        let started = Instant::now();
        let r: Result<u32, ClusterError> = retry("op", FAST, || {
            calls += 1;
            async { Err(transient()) }
        })
        .await;
        let elapsed = started.elapsed();
        assert!(r.is_err());
        assert!(
            calls >= 3 && elapsed >= FAST.budget,
            "retried until the budget was spent: {calls} calls in {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(10), "and then gave up");
    }

    #[tokio::test]
    async fn permanent_errors_are_returned_at_once() {
        let mut calls = 0;
        let r: Result<(), ClusterError> = retry("op", FAST, || {
            calls += 1;
            async { Err(permanent()) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn pauses_grow_to_the_maximum_and_progress_resets_the_clock() {
        let b = Backoff::DEFAULT;
        assert!(
            b.pause(0) >= Duration::from_millis(250) && b.pause(0) < Duration::from_millis(313)
        );
        assert!(
            b.pause(20) >= Duration::from_secs(6) && b.pause(20) <= Duration::from_millis(7_500)
        );
        let short = Backoff::within(Duration::from_secs(1));
        assert_eq!(
            (short.first, short.max),
            (Duration::from_millis(100), Duration::from_millis(100))
        );
        let mut a = Attempts::new(FAST);
        assert!(a.after("loop", &transient()).is_some());
        std::thread::sleep(FAST.budget);
        assert!(a.after("loop", &transient()).is_none(), "spent");
        a.progressed();
        assert!(a.after("loop", &transient()).is_some());
        assert!(a.after("loop", &permanent()).is_none());
    }
}
