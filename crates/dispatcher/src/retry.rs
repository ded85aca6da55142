//! Retry decisions: what follows an attempt, decided from the task and the receiver's answer
//! alone.
//!
//! Pure functions, so every rule can be tested without a broker or a receiver; the dispatcher
//! acts on their answers (publishes the retry task on its delay queue, records the attempt,
//! disables a gone endpoint). The rules:
//! - a 2xx delivers; 410 Gone ends the delivery and disables its endpoint;
//! - any other answer, or none, is retried on the endpoint's schedule (or the dispatcher's),
//!   honouring `Retry-After` on 429 and 503 only, until the schedule is used up: then the
//!   delivery ends `failed`;
//! - a manual attempt (redeliver, replay) is one attempt: it never starts a schedule, and when
//!   it fails it ends nothing (the delivery keeps its own state and schedule), so it counts in
//!   the endpoint's failure streak as a failed attempt, not as a delivery that ended failed;
//! - a wait goes through the longest delay queue (rung) that fits, rounded up to the
//!   millisecond so a retry never comes back early; the rest is carried by the task.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_core::schedule::{NextAttempt, RetrySchedule};
use herald_core::wire::{DeliveryStatus, DeliveryTask, Trigger};

/// What an attempt's answer means for its delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The delivery's status after this attempt.
    pub outcome: DeliveryStatus,
    /// The next attempt, if there is one.
    pub next: Option<NextAttempt>,
    /// The receiver answered 410 Gone: the endpoint is to be disabled.
    pub gone: bool,
    /// What the attempt adds to the endpoint's failure streak.
    pub streak: DeliveryStatus,
}

impl Verdict {
    /// Whether the attempt delivered.
    pub fn success(&self) -> bool {
        self.outcome == DeliveryStatus::Success
    }
}

/// Decides what follows `task`'s attempt, answered with `status` (`None`: no answer) and
/// `retry_after`, under `schedule`.
pub fn decide(
    schedule: &RetrySchedule,
    task: &DeliveryTask,
    status: Option<u16>,
    retry_after: Option<Duration>,
) -> Verdict {
    let success = status.is_some_and(|s| (200..300).contains(&s));
    let gone = status == Some(410);
    let next = if success || gone || task.trigger == Trigger::Manual {
        None
    } else {
        let honour = matches!(status, Some(429 | 503));
        let retry_after = if honour { retry_after } else { None };
        schedule.next(task.attempt, task.tiers_used(), retry_after)
    };
    let outcome = if success {
        DeliveryStatus::Success
    } else if next.is_some() {
        DeliveryStatus::Retrying
    } else {
        DeliveryStatus::Failed
    };
    let streak = match (task.trigger, outcome) {
        (Trigger::Manual, DeliveryStatus::Failed) => DeliveryStatus::Retrying,
        _ => outcome,
    };
    Verdict {
        outcome,
        next,
        gone,
        streak,
    }
}

/// The endpoint's own schedule (stored as milliseconds), else `default`; a stored schedule
/// that no longer parses falls back to `default` too.
pub fn schedule_for(endpoint_ms: Option<&[u32]>, default: &RetrySchedule) -> RetrySchedule {
    endpoint_ms
        .and_then(|ms| RetrySchedule::from_millis(ms).ok())
        .unwrap_or_else(|| default.clone())
}

/// The task of the attempt `next` after `task`'s: same delivery, a fresh hop.
pub fn retry_task(task: &DeliveryTask, next: &NextAttempt) -> DeliveryTask {
    DeliveryTask {
        v: task.v,
        delivery_id: task.delivery_id,
        event_id: task.event_id,
        tenant_id: task.tenant_id,
        endpoint_id: task.endpoint_id,
        event_type: task.event_type.clone(),
        attempt: next.attempt,
        // Written only when tiers were skipped: the usual retry task stays as it was.
        tiers: (next.tiers_used != next.attempt - 1).then_some(next.tiers_used),
        due: None,
        rest_ms: None,
        parked: None,
        turn: None,
        trigger: Trigger::Scheduled,
        created_at: task.created_at,
        payload: task.payload.clone(),
    }
}

/// How long `task` must still wait before its attempt, if at all. A retry whose delay is no
/// delay queue's comes back after the longest queue that fits, and goes on through shorter
/// ones. The planned rest, not `due - now`: a hop is always a little late, and recomputing
/// would spend extra hops on that lateness (and trust this machine's clock).
pub fn rest_of_wait(task: &DeliveryTask, now: DateTime<Utc>) -> Option<Duration> {
    match (task.rest_ms, task.due) {
        (Some(ms), _) => Some(Duration::from_millis(ms)),
        // Sent by a dispatcher that predates `rest_ms`.
        (None, Some(due)) => Some((due - now).to_std().unwrap_or_default()),
        (None, None) => None,
    }
}

/// The delay queue a wait of `wait` goes through (`None`: shorter than every queue's, straight
/// back) and what is left after it, in milliseconds. Rounded up: never back early.
pub fn hop(wait: Duration) -> (Option<u64>, u64) {
    let ms = wait
        .as_nanos()
        .div_ceil(1_000_000)
        .min(u128::from(u64::MAX)) as u64;
    herald_broker::delay_hop(ms)
}

/// How long a delivery that must wait `wait` for a rate-limit token is parked: at least 1 s
/// (fewer round trips for a busy endpoint) and at most 60 s (the bucket refills within a second
/// anyway).
pub fn rate_park(wait: Duration) -> Duration {
    crate::gate::rung_at_least(wait.min(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use herald_broker::DELAY_RUNGS_MS;
    use uuid::Uuid;

    use super::*;

    fn task(attempt: u32, trigger: Trigger) -> DeliveryTask {
        DeliveryTask {
            v: 1,
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            endpoint_id: Uuid::now_v7(),
            event_type: "invoice.paid".into(),
            attempt,
            tiers: None,
            due: None,
            rest_ms: None,
            parked: None,
            turn: None,
            trigger,
            created_at: Utc::now(),
            payload: b"{}".to_vec(),
        }
    }

    fn schedule() -> RetrySchedule {
        RetrySchedule::parse("1s,1m").unwrap()
    }

    #[test]
    fn a_2xx_delivers_and_ends_the_streak() {
        let v = decide(&schedule(), &task(1, Trigger::Scheduled), Some(204), None);
        assert!(v.success());
        assert_eq!((v.next, v.gone), (None, false));
        assert_eq!(v.streak, DeliveryStatus::Success);
    }

    #[test]
    fn failures_retry_on_the_schedule_then_fail() {
        let s = schedule();
        let v = decide(&s, &task(1, Trigger::Scheduled), Some(500), None);
        assert_eq!(v.outcome, DeliveryStatus::Retrying);
        let next = v.next.unwrap();
        assert_eq!((next.attempt, next.delay), (2, Duration::from_secs(1)));
        // No answer at all is retried alike.
        let v = decide(&s, &task(2, Trigger::Scheduled), None, None);
        assert_eq!(v.next.unwrap().delay, Duration::from_secs(60));
        // The schedule used up: the delivery ends failed, and counts as such in the streak.
        let v = decide(&s, &task(3, Trigger::Scheduled), Some(500), None);
        assert_eq!((v.outcome, v.next), (DeliveryStatus::Failed, None));
        assert_eq!(v.streak, DeliveryStatus::Failed);
    }

    #[test]
    fn gone_disables_and_never_retries() {
        let v = decide(&schedule(), &task(1, Trigger::Scheduled), Some(410), None);
        assert!(v.gone);
        assert_eq!((v.outcome, v.next), (DeliveryStatus::Failed, None));
    }

    #[test]
    fn retry_after_counts_only_on_429_and_503() {
        let s = RetrySchedule::parse("1s,1m,1h").unwrap();
        let later = Some(Duration::from_secs(30));
        for status in [429, 503] {
            let v = decide(&s, &task(1, Trigger::Scheduled), Some(status), later);
            let expected = s.next(1, 0, later);
            assert_eq!(v.next, expected, "{status}");
        }
        let v = decide(&s, &task(1, Trigger::Scheduled), Some(500), later);
        assert_eq!(v.next, s.next(1, 0, None));
    }

    #[test]
    fn a_manual_attempt_is_one_attempt() {
        let v = decide(&schedule(), &task(1, Trigger::Manual), Some(500), None);
        assert_eq!((v.outcome, v.next), (DeliveryStatus::Failed, None));
        // It ends nothing: a failed attempt in the streak, not a failed delivery.
        assert_eq!(v.streak, DeliveryStatus::Retrying);
        let v = decide(&schedule(), &task(1, Trigger::Manual), Some(200), None);
        assert_eq!(v.streak, DeliveryStatus::Success);
    }

    #[test]
    fn an_endpoint_schedule_wins_unless_unreadable() {
        let default = schedule();
        let own = schedule_for(Some(&[5_000]), &default);
        assert_eq!(own, RetrySchedule::from_millis(&[5_000]).unwrap());
        assert_eq!(schedule_for(None, &default), default);
        // An empty schedule is a schedule: no retries.
        let none = RetrySchedule::from_millis(&[]).unwrap();
        assert_eq!(schedule_for(Some(&[]), &default), none);
        let too_long = vec![1_000; herald_core::schedule::MAX_TIERS + 1];
        assert_eq!(schedule_for(Some(&too_long), &default), default);
    }

    #[test]
    fn a_retry_task_is_the_same_delivery_one_attempt_on() {
        let mut first = task(1, Trigger::Manual);
        first.parked = Some(2);
        first.rest_ms = Some(5);
        let next = NextAttempt {
            attempt: 2,
            tiers_used: 1,
            delay: Duration::from_secs(1),
        };
        let retry = retry_task(&first, &next);
        assert_eq!(retry.delivery_id, first.delivery_id);
        assert_eq!((retry.attempt, retry.tiers), (2, None));
        assert_eq!(retry.trigger, Trigger::Scheduled);
        assert_eq!((retry.parked, retry.rest_ms, retry.due), (None, None, None));
        // Skipped tiers are written down.
        let skipped = NextAttempt {
            tiers_used: 3,
            ..next
        };
        assert_eq!(retry_task(&first, &skipped).tiers, Some(3));
    }

    #[test]
    fn the_rest_of_a_wait_is_the_planned_rest() {
        let now = Utc::now();
        let mut t = task(2, Trigger::Scheduled);
        assert_eq!(rest_of_wait(&t, now), None);
        t.due = Some(now + chrono::Duration::seconds(3));
        assert_eq!(rest_of_wait(&t, now), Some(Duration::from_secs(3)));
        t.rest_ms = Some(40);
        assert_eq!(rest_of_wait(&t, now), Some(Duration::from_millis(40)));
        t.rest_ms = None;
        t.due = Some(now - chrono::Duration::seconds(1));
        assert_eq!(rest_of_wait(&t, now), Some(Duration::ZERO));
    }

    #[test]
    fn hops_round_up_and_never_come_back_early() {
        // Shorter than every queue: straight back, after the millisecond rounded up.
        assert_eq!(hop(Duration::from_micros(98_001)), (None, 99));
        assert_eq!(hop(Duration::from_micros(99_001)), (Some(100), 0));
        assert_eq!(hop(Duration::from_millis(100)), (Some(100), 0));
        let (rung, rest) = hop(Duration::from_millis(1_234));
        assert_eq!(rung.unwrap() + rest, 1_234);
        assert!(DELAY_RUNGS_MS.contains(&rung.unwrap()));
    }

    #[test]
    fn rate_limit_parks_on_one_delay_queue() {
        let park = |ms| rate_park(Duration::from_millis(ms)).as_millis() as u64;
        assert_eq!(park(300), 1_000);
        assert_eq!(park(1_000), 1_000);
        assert_eq!(park(1_001), 2_000);
        assert_eq!(park(2_500), 5_000);
        assert_eq!(park(45_000), 60_000);
        assert_eq!(park(3_600_000), 60_000);
        for ms in (251..70_000).step_by(97) {
            let p = park(ms);
            assert!(DELAY_RUNGS_MS.contains(&p), "{ms} -> {p}");
            assert!(p >= ms.min(60_000), "{ms} -> {p}");
        }
    }
}
