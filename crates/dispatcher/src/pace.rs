//! Pacing a failing endpoint: why an endpoint that answers errors at once does not take the
//! machine from everyone else.
//!
//! A cap on requests in flight does not slow an endpoint that fails in a millisecond (a 500,
//! a refused connection): four slots turn over thousands of times a second, so a backlog
//! meeting such an endpoint (and every retry its schedule makes) runs as fast as the
//! dispatcher, the broker, the ledger and PostgreSQL allow, and every other tenant's
//! deliveries queue for the CPU behind it (measured: `bench scenario noisy-neighbour`).
//!
//! So once an endpoint has failed fast [`PACE_AFTER`] times in a row, each dispatcher gives its
//! attempts *turns*, `1 / HERALD_FAILING_ENDPOINT_RATE` apart (counted in 100 ms buckets, so a
//! retry given a turn an hour on holds up no turn before it): a task whose turn is near waits
//! for it here; one whose turn is further off is parked until it (not an attempt) and carries
//! its turn, so it is not paced again when it comes back; a retry is scheduled for the first
//! free turn at or after its schedule's time. A wait that is no delay queue's goes through
//! several of them (the longest that fits, then the rest), so a paced task costs the broker a
//! few hops: measured to load RabbitMQ more than the attempts saved with two dispatchers
//! (BENCHMARKS.md); turns one hop can reach are the next step. An attempt therefore never comes sooner than its schedule says, and may
//! come later; the attempt record's `next_retry_at` is the turn. The first answer (any 2xx or
//! 4xx other than 429) ends the pacing: new tasks go at once, the ones already given turns
//! come back at them. Re-sends an operator asked for are not paced (a replay has a rate of its
//! own): one is how a tenant sees that its fixed endpoint answers. Timeouts are not paced here: a hanging endpoint's cap (down to one
//! request in flight) already bounds what it costs.
//!
//! Per dispatcher like the caps (no coordination): with `n` dispatchers a failing endpoint
//! gets up to `n` times the rate, and a restarted dispatcher starts its turns afresh (tasks
//! already parked keep theirs, so for a while the two may overlap). Memory: one map entry per
//! bucket holding a turn not yet come, at most one per task of the endpoint parked or
//! retrying from this dispatcher.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::gate::Outcome;

/// Fast failures in a row after which an endpoint is paced.
pub const PACE_AFTER: u32 = 5;

/// Turns are counted in buckets this long (or one turn long, when longer): a retry given a
/// turn an hour from now takes a place in that hour's bucket and holds up nothing before it.
const BUCKET: Duration = Duration::from_millis(100);

/// One endpoint's pace in one dispatcher.
#[derive(Debug, Default)]
pub struct Pace {
    /// Fast failures since the last answer.
    failures: u32,
    /// Where bucket 0 starts.
    origin: Option<Instant>,
    /// Turns given out in each bucket from now on (the past is forgotten on the next turn):
    /// one entry per bucket with a task parked or a retry scheduled in it.
    taken: BTreeMap<u64, u32>,
    /// Every bucket from now up to (not including) this one is full: where the search for a
    /// free turn near now starts, so a backlog given turns in one go costs O(1) a turn.
    full_until: u64,
}

impl Pace {
    /// Folds an attempt's outcome in: an answer ends the pacing, a fast failure counts.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Answered => *self = Pace::default(),
            Outcome::Failed => self.failures = self.failures.saturating_add(1),
            Outcome::TimedOut => {}
        }
    }

    pub fn paced(&self) -> bool {
        self.failures >= PACE_AFTER
    }

    /// A free turn at or after `earliest`, given out: turns are `step` apart on average, at
    /// most one bucket's worth (`BUCKET / step`) in any bucket.
    pub fn take_turn(&mut self, earliest: Instant, now: Instant, step: Duration) -> Instant {
        let step = step.max(Duration::from_nanos(1));
        let bucket = step.max(BUCKET);
        let per_bucket = ((bucket.as_secs_f64() / step.as_secs_f64()).round() as u32).max(1);
        let origin = *self.origin.get_or_insert(now);
        let index = |t: Instant| {
            (t.saturating_duration_since(origin).as_nanos() / bucket.as_nanos()) as u64
        };
        let current = index(now);
        self.taken = self.taken.split_off(&current);
        self.full_until = self.full_until.max(current);
        let mut b = index(earliest.max(now)).max(self.full_until);
        while self.taken.get(&b).is_some_and(|n| *n >= per_bucket) {
            b += 1;
        }
        let taken = self.taken.entry(b).or_default();
        let place = *taken;
        *taken += 1;
        while self
            .taken
            .get(&self.full_until)
            .is_some_and(|n| *n >= per_bucket)
        {
            self.full_until += 1;
        }
        let start = bucket.as_nanos() * u128::from(b)
            + bucket.as_nanos() / u128::from(per_bucket) * u128::from(place);
        let turn = origin + Duration::from_nanos(start.min(u128::from(u64::MAX)) as u64);
        turn.max(earliest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(10);

    fn failing() -> Pace {
        let mut pace = Pace::default();
        for _ in 0..PACE_AFTER {
            pace.record(Outcome::Failed);
        }
        pace
    }

    #[test]
    fn paced_only_after_enough_fast_failures_in_a_row() {
        let mut pace = Pace::default();
        for _ in 0..PACE_AFTER - 1 {
            pace.record(Outcome::Failed);
            pace.record(Outcome::TimedOut);
        }
        assert!(!pace.paced(), "timeouts neither count nor break the run");
        pace.record(Outcome::Failed);
        assert!(pace.paced());
    }

    #[test]
    fn an_answer_ends_the_pacing_and_forgets_the_turns() {
        let mut pace = failing();
        let now = Instant::now();
        pace.take_turn(now, now, Duration::from_secs(60));
        pace.record(Outcome::Answered);
        assert!(!pace.paced());
        assert_eq!(pace.take_turn(now, now, STEP), now, "turns start afresh");
    }

    #[test]
    fn turns_are_a_step_apart_and_never_before_the_earliest() {
        let mut pace = failing();
        let now = Instant::now();
        let turns: Vec<Instant> = (0..25).map(|_| pace.take_turn(now, now, STEP)).collect();
        for (i, turn) in turns.iter().enumerate() {
            assert_eq!(*turn, now + STEP * i as u32);
        }
        // A retry due later keeps its own time and holds up no turn before it.
        let later = now + Duration::from_secs(3_600);
        assert_eq!(pace.take_turn(later, now, STEP), later);
        assert_eq!(pace.take_turn(now, now, STEP), now + STEP * 25);
        // Turns past are forgotten: a second on, the next turn is then.
        let then = now + Duration::from_secs(1);
        assert_eq!(pace.take_turn(then, then, STEP), then);
        assert_eq!(pace.take_turn(then, then, STEP), then + STEP);
        assert_eq!(
            pace.taken.len(),
            2,
            "the past forgotten, the hour's bucket kept"
        );
    }

    #[test]
    fn a_slow_pace_gives_one_turn_a_bucket() {
        let mut pace = failing();
        let now = Instant::now();
        let step = Duration::from_millis(500);
        let turns: Vec<Instant> = (0..3).map(|_| pace.take_turn(now, now, step)).collect();
        assert_eq!(turns, [now, now + step, now + step * 2]);
    }
}
