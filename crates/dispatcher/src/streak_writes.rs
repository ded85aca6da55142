//! Failure-streak writes, coalesced per endpoint: why a failing endpoint costs the database a
//! few writes a second however fast it fails.
//!
//! Every failed attempt moves its endpoint's failure streak (a row in Postgres). Written one by
//! one, an endpoint failing at hundreds of attempts a second is hundreds of updates (and
//! commits) a second on one row: measured on the noisy-neighbour bench, Postgres then took
//! about a fifth of the machine's CPU, which every other tenant's deliveries paid for.
//!
//! So outcomes are folded into a [`Tally`] per endpoint, and an endpoint's tally is written at
//! most once per [`WRITE_EVERY`]: the first outcome after a quiet spell is written at once (an
//! endpoint's first failure, or its recovery, shows without delay), later ones wait for the next
//! write, which the task whose outcome opened the tally performs (so what the write announces,
//! `endpoint.failing` and the like, goes out with that task's follow-ups, confirmed before it is
//! acked). Only that one task waits, at most [`WRITE_EVERY`] (longer only while the endpoint's
//! previous write is still running: one write at a time per endpoint, so a later reset never
//! lands before an earlier failure, and a slow database sees one waiting statement per endpoint,
//! not one per attempt); every other returns at once. A writer that never takes its tally (its
//! task aborted when its consumer session ended) is replaced by the endpoint's next outcome
//! after [`TAKE_OVER_AFTER`]; a write that never reports back, after [`WRITE_STUCK`].
//!
//! What a tally loses on a `kill -9`: the outcomes of tasks already acked that it held (at most
//! [`WRITE_EVERY`] of one endpoint's outcomes). The streak is bookkeeping for the failing and
//! disable thresholds, so a few uncounted failures only move those a little later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_store::{Outcome, Tally};
use tokio::time::Instant;
use uuid::Uuid;

/// Shortest time between two streak writes of one endpoint (from one dispatcher).
pub const WRITE_EVERY: Duration = Duration::from_millis(250);

/// Entries not written for this long, with nothing pending, are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Forgetting is looked at when the book holds more endpoints than this.
const SWEEP_ABOVE: usize = 4_096;

/// A writer this late taking its tally is taken to be gone (its task aborted when a
/// consumer session ended): the next outcome makes a new writer, so the tally is not stuck.
const TAKE_OVER_AFTER: Duration = Duration::from_secs(2);

/// A write running this long is taken to be gone (its task aborted mid-write).
const WRITE_STUCK: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Entry {
    tally: Tally,
    /// When the task that has the tally's next write to do takes it.
    writer_due: Option<Instant>,
    /// When the write in flight was taken, if one is.
    writing_since: Option<Instant>,
    /// When the last write was taken or finished.
    last: Option<Instant>,
}

/// The tallies of one dispatcher.
#[derive(Clone, Default)]
pub struct StreakBook {
    entries: Arc<Mutex<HashMap<Uuid, Entry>>>,
}

impl StreakBook {
    /// Folds `outcome` into `endpoint`'s tally. `Some(at)`: the caller is the tally's writer and
    /// takes it ([`StreakBook::take`]) at `at`; `None`: another task writes it.
    pub fn add(&self, endpoint: Uuid, outcome: Outcome, now: Instant) -> Option<Instant> {
        let mut entries = self.entries.lock().expect("streak book lock");
        let entry = entries.entry(endpoint).or_default();
        entry.tally.add(outcome);
        if entry
            .writer_due
            .is_some_and(|due| now < due + TAKE_OVER_AFTER)
        {
            return None;
        }
        let due = entry.last.map_or(now, |last| (last + WRITE_EVERY).max(now));
        entry.writer_due = Some(due);
        Some(due)
    }

    /// Waits until `at`, then for the endpoint's write in flight (if any) to finish, and takes
    /// the tally; `None` when there is nothing to write. The caller writes it, then calls
    /// [`StreakBook::written`].
    pub async fn wait_turn(&self, endpoint: Uuid, mut at: Instant) -> Option<Tally> {
        loop {
            tokio::time::sleep_until(at).await;
            let now = Instant::now();
            match self.take(endpoint, now) {
                Some(tally) if tally.is_empty() => {
                    self.written(endpoint, now);
                    return None;
                }
                Some(tally) => return Some(tally),
                None => at = now + WRITE_EVERY,
            }
        }
    }

    /// The tally to write now, emptied (from then on the next outcome opens a new one);
    /// `None` while the endpoint's previous write is still running.
    pub fn take(&self, endpoint: Uuid, now: Instant) -> Option<Tally> {
        let mut entries = self.entries.lock().expect("streak book lock");
        let entry = entries.entry(endpoint).or_default();
        if entry
            .writing_since
            .is_some_and(|since| now < since + WRITE_STUCK)
        {
            entry.writer_due = Some(now + WRITE_EVERY);
            return None;
        }
        entry.writer_due = None;
        entry.writing_since = Some(now);
        entry.last = Some(now);
        let tally = std::mem::take(&mut entry.tally);
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, e| {
                e.writer_due.is_some()
                    || e.writing_since.is_some()
                    || !e.tally.is_empty()
                    || e.last.is_some_and(|t| now.duration_since(t) < FORGET_AFTER)
            });
        }
        Some(tally)
    }

    /// The write taken last for `endpoint` finished (whatever its result).
    pub fn written(&self, endpoint: Uuid, now: Instant) {
        let mut entries = self.entries.lock().expect("streak book lock");
        if let Some(entry) = entries.get_mut(&endpoint) {
            entry.writing_since = None;
            entry.last = Some(now);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().expect("streak book lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_outcome_is_written_at_once_later_ones_together() {
        let book = StreakBook::default();
        let ep = Uuid::now_v7();
        let t0 = Instant::now();
        assert_eq!(book.add(ep, Outcome::FailedAttempt, t0), Some(t0));
        // The writer has not taken it yet: others only add.
        assert_eq!(book.add(ep, Outcome::FailedAttempt, t0), None);
        let first = book.take(ep, t0).expect("no write in flight");
        assert_eq!(first.failed_attempts, 2);
        book.written(ep, t0);
        // The next outcome opens a new tally, written a full interval after the last write.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(
            book.add(ep, Outcome::FailedAttempt, t1),
            Some(t0 + WRITE_EVERY)
        );
        for _ in 0..500 {
            assert_eq!(book.add(ep, Outcome::Failed, t1), None);
        }
        let second = book.take(ep, t0 + WRITE_EVERY).expect("no write in flight");
        book.written(ep, t0 + WRITE_EVERY);
        assert_eq!(
            second,
            Tally {
                reset: false,
                failed_attempts: 501,
                failed_deliveries: 500
            }
        );
        // After a quiet spell the first outcome goes at once again.
        let t2 = t0 + WRITE_EVERY * 3;
        assert_eq!(book.add(ep, Outcome::Success, t2), Some(t2));
        assert!(book.take(ep, t2).expect("no write in flight").reset);
    }

    #[test]
    fn a_writer_that_never_takes_its_tally_is_replaced() {
        let book = StreakBook::default();
        let ep = Uuid::now_v7();
        let t0 = Instant::now();
        assert_eq!(book.add(ep, Outcome::FailedAttempt, t0), Some(t0));
        // Its task was aborted: nothing takes the tally.
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(book.add(ep, Outcome::FailedAttempt, soon), None);
        let late = t0 + TAKE_OVER_AFTER + Duration::from_millis(1);
        assert_eq!(book.add(ep, Outcome::FailedAttempt, late), Some(late));
        assert_eq!(
            book.take(ep, late).expect("none in flight").failed_attempts,
            3
        );
    }

    #[test]
    fn one_write_at_a_time_per_endpoint() {
        let book = StreakBook::default();
        let ep = Uuid::now_v7();
        let t0 = Instant::now();
        book.add(ep, Outcome::FailedAttempt, t0);
        let first = book.take(ep, t0).expect("the first write");
        assert_eq!(first.failed_attempts, 1);
        // The database is slow: the next writer's turn comes while the first write runs.
        let t1 = t0 + WRITE_EVERY;
        assert!(book.add(ep, Outcome::Success, t1).is_some());
        assert_eq!(book.take(ep, t1), None, "waits for the write in flight");
        book.written(ep, t1 + Duration::from_millis(100));
        let second = book.take(ep, t1 + WRITE_EVERY).expect("its turn now");
        assert!(second.reset);
        // A write that never reports back stops holding the endpoint after WRITE_STUCK.
        book.add(ep, Outcome::FailedAttempt, t1 + WRITE_EVERY);
        let stuck = t1 + WRITE_EVERY + WRITE_STUCK + Duration::from_millis(1);
        assert_eq!(book.take(ep, stuck).map(|t| t.failed_attempts), Some(1));
    }

    #[test]
    fn a_success_drops_the_failures_before_it() {
        let mut tally = Tally::default();
        tally.add(Outcome::Failed);
        tally.add(Outcome::FailedAttempt);
        tally.add(Outcome::Success);
        tally.add(Outcome::FailedAttempt);
        assert_eq!(
            tally,
            Tally {
                reset: true,
                failed_attempts: 1,
                failed_deliveries: 0
            }
        );
    }

    #[test]
    fn endpoints_have_their_own_tallies_and_quiet_ones_are_forgotten() {
        let book = StreakBook::default();
        let t0 = Instant::now();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(book.add(a, Outcome::FailedAttempt, t0).is_some());
        assert!(book.add(b, Outcome::FailedAttempt, t0).is_some());
        assert_eq!(book.take(a, t0).map(|t| t.failed_attempts), Some(1));
        assert_eq!(book.take(b, t0).map(|t| t.failed_attempts), Some(1));
        book.written(a, t0);
        book.written(b, t0);
        for _ in 0..SWEEP_ABOVE {
            let ep = Uuid::now_v7();
            book.add(ep, Outcome::FailedAttempt, t0);
            book.take(ep, t0);
            book.written(ep, t0);
        }
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        let last = Uuid::now_v7();
        book.add(last, Outcome::FailedAttempt, later);
        book.take(last, later);
        book.written(last, later);
        assert_eq!(book.len(), 1, "only the endpoint written last is kept");
    }
}
