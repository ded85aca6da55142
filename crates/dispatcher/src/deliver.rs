//! One delivery attempt, from task to ack.
//!
//! Order matters for at-least-once: the POST happens, then the follow-ups (the retry task on
//! its delay queue, the attempt record for the ledger) are published and confirmed, then the
//! succeeded delivery is marked in Redis, and only then is the task acked. A crash anywhere
//! before the ack redelivers the task; the Redis mark keeps a redelivered success from being
//! sent again, and receivers dedupe by delivery id for the rare case in between.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_broker::{DELAY_RUNGS_MS, Outgoing};
use herald_core::schedule::RetrySchedule;
use herald_core::wire::{
    AbandonedRecord, AttemptRecord, DeliveryKey, DeliveryStatus, DeliveryTask, Record, Trigger,
};
use herald_store::{Endpoint, FailurePolicy, Outcome, Streak, SubscriptionIndex};
use uuid::Uuid;

use crate::Dispatcher;
use crate::gate::{Admission, ParkReason};

/// What must be safely in the broker before a task is acked: messages of their own (retry
/// tasks, operational events' delivery tasks) and ledger records (sent in shared messages).
#[derive(Default)]
pub struct FollowUps {
    pub messages: Vec<Outgoing>,
    pub records: Vec<Record>,
}

impl FollowUps {
    fn extend(&mut self, other: FollowUps) {
        self.messages.extend(other.messages);
        self.records.extend(other.records);
    }
}

/// What the dispatcher decided for a task.
pub enum Decision {
    /// Publish these follow-ups, then (for a success, mark it done and) ack.
    Publish(FollowUps, Option<Uuid>),
    /// Nothing to publish: ack.
    Skip,
    /// Not attempted (shutting down while waiting for a rate-limit token): hand it back.
    Requeue,
}

/// Longest rate-limit wait spent holding the task; a longer one parks it on a delay queue.
const MAX_RATE_WAIT: Duration = Duration::from_millis(250);

/// How long a delivery that must wait `wait` for a rate-limit token is parked: at least 1 s
/// (fewer round trips for a busy endpoint) and at most 60 s (the bucket refills within a second
/// anyway).
fn rate_park(wait: Duration) -> Duration {
    crate::gate::rung_at_least(wait.min(Duration::from_secs(60)))
}

/// Now plus `d`.
fn after(d: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).unwrap_or_default()
}

impl Dispatcher {
    /// Runs one task up to (not including) the follow-up publishes.
    pub async fn attempt(
        &self,
        task: &DeliveryTask,
        redelivered: bool,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Decision, herald_store::Error> {
        // A retry whose delay is no delay queue's comes back after the longest queue that
        // fits, and goes on through shorter ones; the last few milliseconds are waited here.
        // The planned rest, not `due - now`: a hop is always a little late, and recomputing
        // would spend extra hops on that lateness (and trust this machine's clock).
        let rest = match (task.rest_ms, task.due) {
            (Some(ms), _) => Some(Duration::from_millis(ms)),
            // Sent by a dispatcher that predates `rest_ms`.
            (None, Some(due)) => Some((due - Utc::now()).to_std().unwrap_or_default()),
            (None, None) => None,
        };
        if let Some(wait) = rest {
            if wait >= Duration::from_millis(DELAY_RUNGS_MS[0]) {
                metrics::counter!("herald_delay_hops_total").increment(1);
                let due = task.due.unwrap_or_else(|| after(wait));
                let follow = FollowUps {
                    messages: vec![self.retry_message(wait, due, task.clone())],
                    records: Vec::new(),
                };
                return Ok(Decision::Publish(follow, None));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Decision::Requeue),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let Some(endpoint) = self.endpoints.get(task.endpoint_id).await? else {
            return Ok(self.abandon(task, "endpoint deleted"));
        };
        if !endpoint.enabled {
            let why = match &endpoint.disabled_reason {
                Some(r) => format!("endpoint disabled: {r}"),
                None => "endpoint disabled".to_owned(),
            };
            return Ok(self.abandon(task, &why));
        }
        // A task naming another tenant than its endpoint's is forged or corrupt: never POST
        // one tenant's payload, signed with its secret, on another tenant's behalf.
        if endpoint.tenant_id != task.tenant_id {
            return Ok(self.abandon(task, "endpoint belongs to another tenant"));
        }
        let check_done = task.trigger == Trigger::Scheduled
            && (redelivered || task.attempt > 1 || task.parked.is_some());
        if check_done && self.done.is_done(task.delivery_id).await {
            tracing::debug!(delivery_id = %task.delivery_id, "delivery already succeeded, skipping");
            return Ok(Decision::Skip);
        }
        // Room at the endpoint (and its tenant) first: a task that would wait long for it
        // leaves the dispatcher (parked) instead of holding a POST slot or the prefetch window.
        let gate = self
            .gates
            .admit(
                task.tenant_id,
                endpoint.id,
                endpoint.max_in_flight,
                shutdown,
            )
            .await;
        let permit = match gate {
            None => return Ok(Decision::Requeue),
            Some(Admission::Go(permit)) => permit,
            Some(Admission::Park(wait, why)) => return Ok(self.park(task, wait, why)),
        };
        // A POST slot next, then the endpoint's token: tokens are only spent by requests about
        // to go out, so tasks queued behind a slow endpoint cannot burst past a rate limit.
        let post = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Decision::Requeue),
            p = self.posts.acquire() => p.expect("the semaphore is never closed"),
        };
        if endpoint.rate_limit_per_second > 0 {
            loop {
                let wait = self
                    .limiter
                    .take(endpoint.id, endpoint.rate_limit_per_second)
                    .await;
                if wait.is_zero() {
                    break;
                }
                metrics::counter!("herald_rate_limited_total").increment(1);
                if wait > MAX_RATE_WAIT {
                    // Park it instead of holding a slot: back on the work queue after the wait,
                    // rounded up to a delay queue's (one hop), at least 1 s and at most 60 s.
                    let park = rate_park(wait);
                    tracing::debug!(delivery_id = %task.delivery_id, wait_ms = park.as_millis() as u64, "rate limited, parking delivery");
                    return Ok(Decision::Publish(self.parked(task, park), None));
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(Decision::Requeue),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }

        let started_at = Utc::now();
        let outcome = herald_outbound::post_task(&self.http, &endpoint, task, started_at).await;
        drop(post);
        let gated = crate::gate::outcome_of(&outcome);

        let schedule = match &endpoint.retry_schedule_ms {
            Some(ms) => RetrySchedule::from_millis(ms)
                .unwrap_or_else(|_| self.config.retry_schedule.clone()),
            None => self.config.retry_schedule.clone(),
        };
        let (status, retry_after, body, latency, error) = match outcome {
            Ok(r) => (Some(r.status), r.retry_after, r.body, r.latency, None),
            Err(f) => (None, None, Vec::new(), f.latency, Some(f.reason)),
        };
        permit.finish(gated, latency);
        let success = status.is_some_and(|s| (200..300).contains(&s));
        let gone = status == Some(410);
        // Only the attempt that really turned the endpoint off announces it: concurrent 410s
        // (and ones from dispatchers whose cache still shows it enabled) stay silent.
        let mut disabled_now = false;
        if gone {
            match self.store.disable_endpoint(endpoint.id, "410 Gone").await {
                Ok(true) => {
                    disabled_now = true;
                    metrics::counter!("herald_endpoints_disabled_total", "reason" => "gone")
                        .increment(1);
                    tracing::warn!(endpoint_id = %endpoint.id, "endpoint answered 410 gone, disabled")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(endpoint_id = %endpoint.id, error = %e, "could not disable endpoint after 410")
                }
            }
            self.endpoints.forget(endpoint.id);
        }
        let honour = matches!(status, Some(429 | 503));
        // A manual attempt (redeliver, replay) is one attempt: it never starts a schedule.
        let next = if success || gone || task.trigger == Trigger::Manual {
            None
        } else {
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
        let latency_ms = latency.as_millis().min(u32::MAX as u128) as u32;
        crate::metrics::attempt(outcome, status, latency);
        if success {
            crate::metrics::delivered(task.created_at);
        }
        match outcome {
            DeliveryStatus::Success => {
                tracing::debug!(delivery_id = %task.delivery_id, attempt = task.attempt, latency_ms, "delivered")
            }
            _ => tracing::info!(
                delivery_id = %task.delivery_id,
                endpoint_id = %task.endpoint_id,
                attempt = task.attempt,
                status = status.unwrap_or(0),
                error = error.as_deref().unwrap_or(""),
                outcome = outcome.as_str(),
                "delivery attempt failed"
            ),
        }

        let mut out = FollowUps::default();
        let next_retry_at = next.map(|n| after(n.delay));
        if let (Some(n), Some(due)) = (next, next_retry_at) {
            let retry = DeliveryTask {
                v: task.v,
                delivery_id: task.delivery_id,
                event_id: task.event_id,
                tenant_id: task.tenant_id,
                endpoint_id: task.endpoint_id,
                event_type: task.event_type.clone(),
                attempt: n.attempt,
                // Written only when tiers were skipped: the usual retry task stays as it was.
                tiers: (n.tiers_used != n.attempt - 1).then_some(n.tiers_used),
                due: None,
                rest_ms: None,
                parked: None,
                trigger: Trigger::Scheduled,
                created_at: task.created_at,
                payload: task.payload.clone(),
            };
            crate::metrics::retry_scheduled(n.delay);
            out.messages.push(self.retry_message(n.delay, due, retry));
        }
        let record = Record::Attempt(AttemptRecord {
            attempt_id: Uuid::now_v7(),
            delivery: DeliveryKey::of(task),
            attempt: task.attempt,
            trigger: task.trigger,
            started_at,
            latency_ms,
            response_status: status,
            response_body: herald_outbound::excerpt(&body),
            error,
            outcome,
            next_retry_at,
        });
        out.records.push(record);
        if disabled_now {
            out.extend(
                self.operational_event(&endpoint, "endpoint.disabled", "410 Gone")
                    .await,
            );
        }
        // A manual attempt that fails ends nothing (the delivery keeps its own state and
        // schedule): it counts as a failed attempt, not as a delivery that ended failed.
        let streak_outcome = match (task.trigger, outcome) {
            (Trigger::Manual, DeliveryStatus::Failed) => DeliveryStatus::Retrying,
            _ => outcome,
        };
        out.extend(self.track_streak(&endpoint, streak_outcome).await);
        Ok(Decision::Publish(out, success.then_some(task.delivery_id)))
    }

    /// Folds an outcome into the endpoint's failure streak; returns the operational events
    /// (`endpoint.failing`, `endpoint.disabled`, `endpoint.recovered`) it causes. A database
    /// error here is logged and skipped: the delivery itself must not wait on bookkeeping.
    async fn track_streak(&self, endpoint: &Arc<Endpoint>, outcome: DeliveryStatus) -> FollowUps {
        let policy = FailurePolicy {
            failing_after_attempts: self.config.failing_after_attempts,
            disable_after_failures: self.config.disable_after_failures,
            disable_after_span: chrono::Duration::from_std(self.config.disable_after_span)
                .unwrap_or(chrono::Duration::MAX),
        };
        let mut steps = Vec::with_capacity(2);
        if outcome == DeliveryStatus::Success {
            let seen = self
                .recent_failures
                .lock()
                .expect("recent failures lock")
                .remove(&endpoint.id);
            if seen || endpoint.failed_attempts > 0 || endpoint.consecutive_failures > 0 {
                steps.push(Outcome::Success);
            }
        } else {
            self.recent_failures
                .lock()
                .expect("recent failures lock")
                .insert(endpoint.id);
            steps.push(Outcome::FailedAttempt);
            if outcome == DeliveryStatus::Failed {
                steps.push(Outcome::Failed);
            }
        }
        let mut out = FollowUps::default();
        if steps.is_empty() {
            return out;
        }
        // Every write of an endpoint's streak updates one row: concurrent ones would queue on
        // its row lock holding pool connections, and a failing endpoint's hundreds of attempts
        // a second would starve every other endpoint's lookups. One at a time per stripe.
        let stripe = endpoint.id.as_u128() as usize % self.streak_stripes.len();
        let _one_at_a_time = self.streak_stripes[stripe].lock().await;
        for step in steps {
            match self.store.record_outcome(endpoint.id, step, &policy).await {
                Ok(Streak::Unchanged) => {}
                Ok(Streak::Failing { failed_attempts }) => {
                    tracing::warn!(endpoint_id = %endpoint.id, failed_attempts, "endpoint is failing");
                    let reason = format!("{failed_attempts} attempts in a row failed");
                    out.extend(
                        self.operational_event(endpoint, "endpoint.failing", &reason)
                            .await,
                    );
                }
                Ok(Streak::Disabled { reason }) => {
                    metrics::counter!("herald_endpoints_disabled_total", "reason" => "failing")
                        .increment(1);
                    tracing::warn!(endpoint_id = %endpoint.id, reason = %reason, "endpoint disabled automatically");
                    self.endpoints.forget(endpoint.id);
                    out.extend(
                        self.operational_event(endpoint, "endpoint.disabled", &reason)
                            .await,
                    );
                }
                Ok(Streak::Recovered) => {
                    tracing::info!(endpoint_id = %endpoint.id, "endpoint recovered");
                    out.extend(
                        self.operational_event(
                            endpoint,
                            "endpoint.recovered",
                            "a delivery succeeded",
                        )
                        .await,
                    );
                }
                Err(e) => {
                    tracing::warn!(endpoint_id = %endpoint.id, error = %e, "could not update the endpoint's failure streak");
                }
            }
        }
        out
    }

    /// An operational event about `endpoint`, fanned out to the tenant's other enabled
    /// endpoints subscribed to it: the delivery tasks and the ledger record.
    async fn operational_event(
        &self,
        endpoint: &Arc<Endpoint>,
        event_type: &str,
        reason: &str,
    ) -> FollowUps {
        let index = match SubscriptionIndex::load(&self.store, endpoint.tenant_id).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(endpoint_id = %endpoint.id, event_type, error = %e, "could not load subscriptions for an operational event");
                return FollowUps::default();
            }
        };
        let now = Utc::now();
        let payload = serde_json::to_vec(&serde_json::json!({
            "type": event_type,
            "timestamp": now.to_rfc3339(),
            "data": {
                "endpoint_id": endpoint.id.to_string(),
                "url": endpoint.url,
                "reason": reason,
            },
        }))
        .expect("a JSON value always serialises");
        // Never to the endpoint the event is about: it is failing or off.
        let mut targets = index.targets(event_type, &payload);
        targets.retain(|id| *id != endpoint.id);
        let (record, tasks) = herald_core::wire::EventRecord::fan_out(
            Uuid::now_v7(),
            endpoint.tenant_id,
            event_type,
            &payload,
            now,
            None,
            &targets,
        );
        let topo = self.publisher.topology();
        let trace = herald_telemetry::trace_headers();
        let messages = tasks
            .iter()
            .map(|t| topo.work_message(t.tenant_id, t.encode(), trace.clone()))
            .collect();
        tracing::info!(endpoint_id = %endpoint.id, event_type, deliveries = tasks.len(), "operational event");
        FollowUps {
            messages,
            records: vec![Record::Event(record)],
        }
    }

    fn abandon(&self, task: &DeliveryTask, reason: &str) -> Decision {
        metrics::counter!("herald_deliveries_abandoned_total").increment(1);
        tracing::info!(delivery_id = %task.delivery_id, endpoint_id = %task.endpoint_id, reason, "delivery abandoned");
        let record = Record::Abandoned(AbandonedRecord {
            delivery: DeliveryKey::of(task),
            at: Utc::now(),
            reason: reason.to_owned(),
            attempts_before: task.attempt.saturating_sub(1),
        });
        let follow = FollowUps {
            messages: Vec::new(),
            records: vec![record],
        };
        Decision::Publish(follow, None)
    }

    /// Sets `task` aside for `wait` because its endpoint or tenant has no room: back on its
    /// shard after one delay queue. Not an attempt: no record, no status change, same attempt
    /// number.
    /// `wait` is a delay queue's already (the gate parks on rungs only).
    fn park(&self, task: &DeliveryTask, wait: Duration, why: ParkReason) -> Decision {
        metrics::counter!("herald_tasks_parked_total", "reason" => why.as_str()).increment(1);
        tracing::debug!(delivery_id = %task.delivery_id, endpoint_id = %task.endpoint_id, wait_ms = wait.as_millis() as u64, reason = why.as_str(), "parking delivery");
        Decision::Publish(self.parked(task, wait), None)
    }

    fn parked(&self, task: &DeliveryTask, wait: Duration) -> FollowUps {
        let mut task = task.clone();
        task.parked = Some(task.parked.unwrap_or(0).saturating_add(1));
        FollowUps {
            messages: vec![self.retry_message(wait, after(wait), task)],
            records: Vec::new(),
        }
    }

    /// The message that brings `task` back after `wait`, at `due`: straight to its shard's
    /// queue of returning tasks for a wait shorter than every delay queue's, else through the delay queue of the longest
    /// rung that fits. When the rung falls short, the task carries `due` and is sent on when it
    /// comes back ([`herald_broker::delay_hop`]). The wait is passed as such, not derived from
    /// `due`: a tier of exactly one rung stays one hop.
    fn retry_message(
        &self,
        wait: Duration,
        due: DateTime<Utc>,
        mut task: DeliveryTask,
    ) -> Outgoing {
        let topo = self.publisher.topology();
        // Rounded up: a retry never comes back before its time.
        let ms = wait
            .as_nanos()
            .div_ceil(1_000_000)
            .min(u128::from(u64::MAX)) as u64;
        let (rung, rest) = herald_broker::delay_hop(ms);
        task.due = (rest > 0).then_some(due);
        task.rest_ms = (rest > 0).then_some(rest);
        let body = task.encode();
        let trace = herald_telemetry::trace_headers();
        match rung {
            None => topo.again_message(task.tenant_id, body, trace),
            Some(rung) => topo.delay_message(rung, task.tenant_id, body, trace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
