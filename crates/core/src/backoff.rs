//! One doubling back-off for every "try again later" loop: reconnecting a consumer, holding a
//! task or a batch while Postgres or the broker is away, listening for change notices again.
//!
//! Each wait doubles the next one up to a ceiling, so an outage costs a handful of attempts a
//! minute instead of a busy loop, and a reset after success makes the next outage start small.
//! A wait ends early when the service shuts down: nothing sleeps through a drain.

use std::future::Future;
use std::time::Duration;

/// Waits that double from `first` up to `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`; no wait is ever longer than `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// For work held while a dependency is away (a task's step, a ledger batch, a dead
    /// letter, the change listener): 0.2 s doubling to 10 s, short enough that held work resumes
    /// soon after the dependency does.
    pub const fn held() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// The wait the next [`Backoff::step`] or [`Backoff::wait`] takes (for logs).
    pub fn next_wait(&self) -> Duration {
        self.next
    }

    /// Takes the next wait and doubles the one after it.
    pub fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// Back to the first wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next wait; `false` (at once) when `stop` completes first.
    pub async fn wait(&mut self, stop: impl Future<Output = ()>) -> bool {
        let sleep = tokio::time::sleep(self.step());
        tokio::select! {
            _ = stop => false,
            _ = sleep => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling_and_start_over_after_a_reset() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let waits: Vec<u128> = (0..5).map(|_| b.step().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1_000, 1_000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(200));
        let mut held = Backoff::held();
        let waits: Vec<u128> = (0..8).map(|_| held.step().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_once_when_stopped() {
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(60));
        assert!(!b.wait(std::future::ready(())).await);
        assert!(b.wait(std::future::pending()).await);
        assert_eq!(b.next_wait(), Duration::from_secs(60));
    }
}
