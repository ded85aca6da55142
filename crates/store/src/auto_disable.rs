//! Endpoint auto-disable: the failure streak Postgres keeps per endpoint, and turning an
//! endpoint off on Herald's own initiative.
//!
//! Dispatchers fold every failed attempt and every delivery's final outcome into the streak.
//! After `failing_after_attempts` failed attempts in a row the tenant is told once
//! (`endpoint.failing`); after `disable_after_failures` deliveries in a row ended `failed`, over
//! at least `disable_after_span`, the endpoint is disabled; a success resets the streak (and is
//! announced as a recovery if the endpoint had been reported failing). A receiver answering
//! 410 Gone disables its endpoint at once. Each change is one statement, so concurrent
//! dispatchers never lose an update, and only the statement that really changed the endpoint
//! reports it: an event is announced once however many dispatchers saw the failure.
//!
//! A dispatcher folds the outcomes it saw for an endpoint into a [`Tally`] and writes it in at
//! most three statements: a failing endpoint's hundreds of attempts a second are then a few
//! writes a second instead of one row update (and one commit) each.

use uuid::Uuid;

use crate::{Result, Store};

/// What a final outcome did to an endpoint's failure streak.
#[derive(Debug, PartialEq, Eq)]
pub enum Streak {
    /// Nothing worth telling anyone.
    Unchanged,
    /// The endpoint reached the `failing` threshold of failed attempts (told once per streak).
    Failing { failed_attempts: u32 },
    /// The endpoint was disabled by this outcome.
    Disabled { reason: String },
    /// A success ended a streak that had been reported as failing.
    Recovered,
}

/// An outcome a [`Tally`] folds in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A delivery succeeded.
    Success,
    /// An attempt failed (a retry may follow).
    FailedAttempt,
    /// A delivery ended `failed` after its last attempt (itself a failed attempt too).
    Failed,
}

/// Outcomes of one endpoint in the order they happened, folded: what a streak needs of them is
/// whether a success reset it, and the failures since the last success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// A delivery succeeded (the failures before it no longer count).
    pub reset: bool,
    /// Failed attempts since the last success.
    pub failed_attempts: u32,
    /// Deliveries ended `failed` since the last success.
    pub failed_deliveries: u32,
}

impl Tally {
    /// Folds in the next outcome.
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success => {
                *self = Tally {
                    reset: true,
                    ..Tally::default()
                }
            }
            Outcome::FailedAttempt => {
                self.failed_attempts = self.failed_attempts.saturating_add(1);
            }
            Outcome::Failed => {
                self.failed_attempts = self.failed_attempts.saturating_add(1);
                self.failed_deliveries = self.failed_deliveries.saturating_add(1);
            }
        }
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }
}

/// When a streak of failures disables or flags an endpoint.
#[derive(Clone, Copy, Debug)]
pub struct FailurePolicy {
    /// Failed attempts in a row that make an endpoint `failing`; 0: never.
    pub failing_after_attempts: u32,
    /// Deliveries ending `failed` in a row that disable it; 0: never.
    pub disable_after_failures: u32,
    /// ... provided the streak spans at least this long.
    pub disable_after_span: chrono::Duration,
}

impl Store {
    /// Turns an endpoint off on Herald's own initiative (e.g. the receiver answered 410 Gone),
    /// recording why. Does nothing if it is already off.
    pub async fn disable_endpoint(&self, id: Uuid, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE endpoints SET enabled = false, disabled_reason = $2, disabled_at = now(),
                    updated_at = now()
             WHERE id = $1 AND enabled",
        )
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Folds `tally` into the endpoint's failure streak (the reset first, then the failures
    /// after it), and disables the endpoint when the policy says so. Each part is one
    /// statement, so concurrent dispatchers never lose an update; each part's result is
    /// returned in order (a part that failed does not stop the next, so what committed is
    /// still announced), `Unchanged` parts left out.
    pub async fn record_tally(
        &self,
        id: Uuid,
        tally: Tally,
        policy: &FailurePolicy,
    ) -> Vec<Result<Streak>> {
        let mut results = Vec::new();
        if tally.reset {
            results.push(self.streak_success(id).await);
        }
        if tally.failed_attempts > 0 {
            results.push(
                self.streak_failed_attempts(id, tally.failed_attempts, policy)
                    .await,
            );
        }
        if tally.failed_deliveries > 0 {
            results.push(
                self.streak_failed(id, tally.failed_deliveries, policy)
                    .await,
            );
        }
        results.retain(|r| !matches!(r, Ok(Streak::Unchanged)));
        results
    }

    /// A success resets the streak; `Recovered` when it had been reported failing.
    async fn streak_success(&self, id: Uuid) -> Result<Streak> {
        let row: Option<(bool,)> = sqlx::query_as(
            "UPDATE endpoints e SET consecutive_failures = 0, failing_since = NULL,
                    failed_attempts = 0, failing_notified = false
             FROM (SELECT id, failing_notified AS was FROM endpoints WHERE id = $1 FOR UPDATE) old
             WHERE e.id = old.id
               AND (e.consecutive_failures <> 0 OR e.failed_attempts <> 0 OR e.failing_notified)
             RETURNING old.was",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((true,)) => Streak::Recovered,
            _ => Streak::Unchanged,
        })
    }

    /// `n` more failed attempts; `Failing` when they cross the threshold (once per streak).
    async fn streak_failed_attempts(
        &self,
        id: Uuid,
        n: u32,
        policy: &FailurePolicy,
    ) -> Result<Streak> {
        let threshold = policy.failing_after_attempts as i32;
        let row: Option<(bool,)> = sqlx::query_as(
            "UPDATE endpoints e SET failed_attempts = e.failed_attempts + $3,
                    -- The streak's span runs from its first failed attempt.
                    failing_since = COALESCE(e.failing_since, now()),
                    failing_notified = e.failing_notified
                        OR ($2 > 0 AND e.failed_attempts + $3 >= $2)
             FROM (SELECT id, failing_notified AS was FROM endpoints WHERE id = $1 FOR UPDATE) old
             WHERE e.id = old.id
             RETURNING NOT old.was AND e.failing_notified",
        )
        .bind(id)
        .bind(threshold)
        .bind(n.min(i32::MAX as u32) as i32)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((true,)) => Streak::Failing {
                failed_attempts: policy.failing_after_attempts,
            },
            _ => Streak::Unchanged,
        })
    }

    /// `n` more deliveries ended `failed`; `Disabled` when they turned the endpoint off.
    async fn streak_failed(&self, id: Uuid, n: u32, policy: &FailurePolicy) -> Result<Streak> {
        let reason = format!(
            "disabled automatically: {} deliveries in a row failed",
            policy.disable_after_failures
        );
        let row: Option<(bool,)> = sqlx::query_as(
            "UPDATE endpoints SET
                consecutive_failures = consecutive_failures + $5,
                failing_since = COALESCE(failing_since, now()),
                enabled = CASE WHEN $2 > 0 AND enabled AND consecutive_failures + $5 >= $2
                                AND COALESCE(failing_since, now()) <= now() - $3 * interval '1 millisecond'
                          THEN false ELSE enabled END,
                disabled_reason = CASE WHEN $2 > 0 AND enabled AND consecutive_failures + $5 >= $2
                                AND COALESCE(failing_since, now()) <= now() - $3 * interval '1 millisecond'
                          THEN $4 ELSE disabled_reason END,
                disabled_at = CASE WHEN $2 > 0 AND enabled AND consecutive_failures + $5 >= $2
                                AND COALESCE(failing_since, now()) <= now() - $3 * interval '1 millisecond'
                          THEN now() ELSE disabled_at END,
                updated_at = now()
             WHERE id = $1
             RETURNING disabled_reason IS NOT DISTINCT FROM $4 AND disabled_at = now()",
        )
        .bind(id)
        .bind(policy.disable_after_failures as i32)
        .bind(policy.disable_after_span.num_milliseconds() as f64)
        .bind(&reason)
        .bind(n.min(i32::MAX as u32) as i32)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((true,)) => Streak::Disabled { reason },
            _ => Streak::Unchanged,
        })
    }
}
