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
//! retry given a turn an hour on holds up no turn before it). A task whose next free turn is
//! near waits for it here; one whose turn is further off is parked until it (not an attempt)
//! and carries it, so it is not paced again when it comes back; a retry takes the turn at its
//! schedule's time when free. Otherwise the turn given is the one cheapest for the broker to
//! reach: a park goes through delay queues, and a wait of any length may take several (37.3 s:
//! five hops; measured, ~3.9 extra hops per paced attempt, ~30 % of RabbitMQ's CPU in the
//! noisy-neighbour bench, against under 1 now: BENCHMARKS.md). So a task gets,
//! among the turns up to twice as far as the first free one, one that one queue reaches, else
//! two, else the first free turn (turns only one or two hops reach leave gaps when a backlog
//! arrives at once: tried, the endpoint got half its rate). An attempt therefore never comes
//! sooner than its schedule says, and may come later; the attempt record's `next_retry_at` is
//! the turn. The
//! first answer (any 2xx or 4xx other than 429) ends the pacing: new tasks go at once, the ones
//! already given turns come back at them. Re-sends an operator asked for are not paced (a
//! replay has a rate of its own): one is how a tenant sees that its fixed endpoint answers.
//! Timeouts are not paced here: a hanging endpoint's cap (down to one request in flight)
//! already bounds what it costs.
//!
//! Shared by the dispatchers without talking to each other: a shard's tasks are spread over
//! every dispatcher consuming it, so each gives a failing endpoint `1/n` of the rate, `n`
//! being the consumers of the legacy work queue (every dispatcher consumes it once), counted
//! every 5 s from the broker (`Gates::set_dispatchers`). The endpoint gets about the rate
//! whatever the number of dispatchers (more for up to 5 s after one joins; uneven prefetch can
//! leave one dispatcher's turns unused while another's are taken). A restarted dispatcher
//! starts its turns afresh (tasks already parked keep theirs, so for a while the two may
//! overlap). Memory: one map entry per
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
        let grid = self.grid(now, step);
        let b = self.first_free(&grid, grid.index(earliest.max(now)).max(self.full_until));
        let place = self.give(&grid, b);
        grid.start(b, place).max(earliest)
    }

    /// How long from `now` the first free turn at least `earliest` from now is (not given
    /// out).
    pub fn next_free(&mut self, earliest: Duration, now: Instant, step: Duration) -> Duration {
        let grid = self.grid(now, step);
        let b = self.first_free(&grid, grid.index(now + earliest).max(self.full_until));
        let place = self.taken.get(&b).copied().unwrap_or(0);
        let turn = grid.start(b, place).max(now + earliest);
        turn.saturating_duration_since(now)
    }

    /// A turn exactly one of `offsets` from now, the first whose bucket has room, given out;
    /// `None` when every one is full. How a task parked on a delay queue gets a turn that one
    /// queue reaches, so its park is one hop (the first free turn may be no queue's).
    pub fn take_turn_at(
        &mut self,
        now: Instant,
        step: Duration,
        offsets: impl IntoIterator<Item = Duration>,
    ) -> Option<Duration> {
        let grid = self.grid(now, step);
        let offset = offsets.into_iter().find(|o| {
            let b = grid.index(now + *o);
            self.taken.get(&b).is_none_or(|n| *n < grid.per_bucket)
        })?;
        self.give(&grid, grid.index(now + offset));
        Some(offset)
    }

    /// The buckets for turns `step` apart, the past forgotten.
    fn grid(&mut self, now: Instant, step: Duration) -> Grid {
        let step = step.max(Duration::from_nanos(1));
        let bucket = step.max(BUCKET);
        let grid = Grid {
            origin: *self.origin.get_or_insert(now),
            bucket,
            per_bucket: ((bucket.as_secs_f64() / step.as_secs_f64()).round() as u32).max(1),
        };
        let current = grid.index(now);
        self.taken = self.taken.split_off(&current);
        self.full_until = self.full_until.max(current);
        grid
    }

    /// The first bucket from `from` on with room.
    fn first_free(&self, grid: &Grid, from: u64) -> u64 {
        let mut b = from;
        while self.taken.get(&b).is_some_and(|n| *n >= grid.per_bucket) {
            b += 1;
        }
        b
    }

    /// Gives out a turn in bucket `b`; its place in the bucket.
    fn give(&mut self, grid: &Grid, b: u64) -> u32 {
        let taken = self.taken.entry(b).or_default();
        let place = *taken;
        *taken += 1;
        self.full_until = self.first_free(grid, self.full_until);
        place
    }
}

/// Where turns `step` apart fall: buckets from `origin`, `per_bucket` turns in each.
struct Grid {
    origin: Instant,
    bucket: Duration,
    per_bucket: u32,
}

impl Grid {
    fn index(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.origin).as_nanos() / self.bucket.as_nanos()) as u64
    }

    /// The `place`-th turn of bucket `b`.
    fn start(&self, b: u64, place: u32) -> Instant {
        let nanos = self.bucket.as_nanos() * u128::from(b)
            + self.bucket.as_nanos() / u128::from(self.per_bucket) * u128::from(place);
        self.origin + Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
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

    #[test]
    fn turns_at_given_offsets_skip_full_buckets_and_count_like_the_rest() {
        let mut pace = failing();
        let now = Instant::now();
        let ms = Duration::from_millis;
        // 10 turns a bucket: the 100 ms bucket fills, then the 200 ms one is taken.
        for _ in 0..10 {
            assert_eq!(
                pace.take_turn_at(now, STEP, [ms(100), ms(200)]),
                Some(ms(100))
            );
        }
        assert_eq!(
            pace.take_turn_at(now, STEP, [ms(100), ms(200)]),
            Some(ms(200))
        );
        for _ in 0..9 {
            pace.take_turn_at(now, STEP, [ms(200)]);
        }
        assert_eq!(pace.take_turn_at(now, STEP, [ms(100), ms(200)]), None);
        // The first free turn is now; once the first two buckets' turns are all given (the
        // first by turns near now), it is the third's.
        assert_eq!(pace.next_free(Duration::ZERO, now, STEP), Duration::ZERO);
        for _ in 0..10 {
            pace.take_turn(now, now, STEP);
        }
        assert_eq!(pace.next_free(Duration::ZERO, now, STEP), ms(300));
        assert_eq!(pace.take_turn(now, now, STEP), now + ms(300));
        assert_eq!(
            pace.next_free(Duration::ZERO, now, STEP),
            ms(310),
            "looking does not give it out"
        );
        assert_eq!(pace.next_free(ms(150), now, STEP), ms(310));
        assert_eq!(pace.next_free(ms(555), now, STEP), ms(555));
    }
}
