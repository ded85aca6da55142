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
//! attempts *turns*, `1 / HERALD_FAILING_ENDPOINT_RATE` apart: a task whose turn is near waits
//! for it here; one whose turn is further off is parked until it (one delay hop, not an
//! attempt) and carries its turn, so it is not paced again when it comes back; a retry is
//! scheduled for the later of its schedule's time and the next turn, so pacing retries costs
//! no extra message. An attempt therefore never comes sooner than its schedule says, and may
//! come later; the attempt record's `next_retry_at` is the turn. The first answer (any 2xx or
//! 4xx other than 429) ends the pacing: new tasks go at once, the ones already given turns
//! come back at them. Timeouts are not paced here: a hanging endpoint's cap (down to one
//! request in flight) already bounds what it costs.
//!
//! Per dispatcher like the caps (no coordination): with `n` dispatchers a failing endpoint
//! gets up to `n` times the rate, and a restarted dispatcher starts its turns afresh (tasks
//! already parked keep theirs).

use std::time::Duration;

use tokio::time::Instant;

use crate::gate::Outcome;

/// Fast failures in a row after which an endpoint is paced.
pub const PACE_AFTER: u32 = 5;

/// One endpoint's pace in one dispatcher.
#[derive(Debug, Default)]
pub struct Pace {
    /// Fast failures since the last answer.
    failures: u32,
    /// The first turn not yet given out.
    next: Option<Instant>,
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

    /// The first free turn at or after `earliest`, given out (the next one is `step` later).
    pub fn take_turn(&mut self, earliest: Instant, step: Duration) -> Instant {
        let turn = self.next.map_or(earliest, |next| next.max(earliest));
        self.next = Some(turn + step);
        turn
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
        pace.take_turn(now, Duration::from_secs(60));
        pace.record(Outcome::Answered);
        assert!(!pace.paced());
        assert_eq!(pace.take_turn(now, STEP), now, "turns start afresh");
    }

    #[test]
    fn turns_are_a_step_apart_and_never_before_the_earliest() {
        let mut pace = failing();
        let now = Instant::now();
        let turns: Vec<Instant> = (0..4).map(|_| pace.take_turn(now, STEP)).collect();
        for (i, turn) in turns.iter().enumerate() {
            assert_eq!(*turn, now + STEP * i as u32);
        }
        // A retry due later than the next free turn keeps its own time; the turns after it
        // follow it.
        let later = now + Duration::from_secs(2);
        assert_eq!(pace.take_turn(later, STEP), later);
        assert_eq!(pace.take_turn(now, STEP), later + STEP);
    }
}
