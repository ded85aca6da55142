//! One delivery attempt, from task to ack.
//!
//! Order matters for at-least-once: the POST happens, then the follow-ups (the retry task on
//! its delay queue, the attempt record for the ledger) are published and confirmed, then the
//! succeeded delivery is marked in Redis, and only then is the task acked. A crash anywhere
//! before the ack redelivers the task; the Redis mark keeps a redelivered success from being
//! sent again, and receivers dedupe by delivery id for the rare case in between.
//!
//! What follows an attempt is decided in [`crate::retry`]; the endpoint's failure streak and
//! automatic disabling are in [`crate::auto_disable`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_broker::{DELAY_RUNGS_MS, Outgoing};
use herald_core::wire::{
    AbandonedRecord, AttemptRecord, DeliveryKey, DeliveryTask, Record, Trigger,
};
use herald_outbound::{Failure, Response};
use herald_store::Endpoint;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Dispatcher;
use crate::gate::{Admission, ParkReason};
use crate::retry::{self, Verdict};

/// What must be safely in the broker before a task is acked: messages of their own (retry
/// tasks, operational events' delivery tasks) and ledger records (sent in shared messages).
#[derive(Default)]
pub struct FollowUps {
    pub messages: Vec<Outgoing>,
    pub records: Vec<Record>,
}

impl FollowUps {
    pub(crate) fn extend(&mut self, other: FollowUps) {
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

/// Now plus `d`.
fn after(d: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).unwrap_or_default()
}

/// What the receiver made of one POST.
struct Answer {
    started_at: DateTime<Utc>,
    status: Option<u16>,
    retry_after: Option<Duration>,
    body: Vec<u8>,
    latency: Duration,
    error: Option<String>,
}

impl Answer {
    fn new(started_at: DateTime<Utc>, outcome: Result<Response, Failure>) -> Self {
        let (status, retry_after, body, latency, error) = match outcome {
            Ok(r) => (Some(r.status), r.retry_after, r.body, r.latency, None),
            Err(f) => (None, None, Vec::new(), f.latency, Some(f.reason)),
        };
        Self {
            started_at,
            status,
            retry_after,
            body,
            latency,
            error,
        }
    }
}

impl Dispatcher {
    /// Runs one task up to (not including) the follow-up publishes.
    pub async fn attempt(
        &self,
        task: &DeliveryTask,
        redelivered: bool,
        shutdown: &CancellationToken,
    ) -> Result<Decision, herald_store::Error> {
        if let Some(wait) = retry::rest_of_wait(task, Utc::now())
            && let Some(decision) = self.wait_rest(task, wait, shutdown).await
        {
            return Ok(decision);
        }
        let endpoint = match self.usable_endpoint(task).await? {
            Ok(endpoint) => endpoint,
            Err(abandoned) => return Ok(abandoned),
        };
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
                // A re-send an operator asked for is not paced: it is how one sees that a
                // fixed endpoint answers again (and its answer ends the pacing).
                task.turn.is_some() || task.trigger == Trigger::Manual,
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
        if let Some(decision) = self.take_rate_token(task, &endpoint, shutdown).await {
            return Ok(decision);
        }
        let started_at = Utc::now();
        let outcome = herald_outbound::post_task(&self.http, &endpoint, task, started_at).await;
        drop(post);
        let gated = crate::gate::outcome_of(&outcome);
        let answer = Answer::new(started_at, outcome);
        permit.finish(gated, answer.latency);
        Ok(self.conclude(task, &endpoint, answer).await)
    }

    /// Waits out what is left of a task's delay: through another delay queue when that is
    /// long enough for one (the returned decision), else here. `Some(Requeue)` when shutting
    /// down meanwhile; `None` once the task is due.
    async fn wait_rest(
        &self,
        task: &DeliveryTask,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Option<Decision> {
        if wait >= Duration::from_millis(DELAY_RUNGS_MS[0]) {
            metrics::counter!("herald_delay_hops_total").increment(1);
            let due = task.due.unwrap_or_else(|| after(wait));
            let follow = FollowUps {
                messages: vec![self.retry_message(wait, due, task.clone())],
                records: Vec::new(),
            };
            return Some(Decision::Publish(follow, None));
        }
        tokio::select! {
            _ = shutdown.cancelled() => Some(Decision::Requeue),
            _ = tokio::time::sleep(wait) => None,
        }
    }

    /// The task's endpoint, if the task may go to it; else the task is abandoned (the inner
    /// `Err`). The outer `Err` is a database problem: the caller holds the task and retries.
    async fn usable_endpoint(
        &self,
        task: &DeliveryTask,
    ) -> Result<Result<Arc<Endpoint>, Decision>, herald_store::Error> {
        let Some(endpoint) = self.endpoints.get(task.endpoint_id).await? else {
            return Ok(Err(self.abandon(task, "endpoint deleted")));
        };
        if !endpoint.enabled {
            let why = match &endpoint.disabled_reason {
                Some(r) => format!("endpoint disabled: {r}"),
                None => "endpoint disabled".to_owned(),
            };
            return Ok(Err(self.abandon(task, &why)));
        }
        // A task naming another tenant than its endpoint's is forged or corrupt: never POST
        // one tenant's payload, signed with its secret, on another tenant's behalf.
        if endpoint.tenant_id != task.tenant_id {
            return Ok(Err(self.abandon(task, "endpoint belongs to another tenant")));
        }
        Ok(Ok(endpoint))
    }

    /// Takes the endpoint's rate-limit token, waiting for it here when the wait is short.
    /// `None`: go; else the task is parked (a long wait) or handed back (shutting down).
    async fn take_rate_token(
        &self,
        task: &DeliveryTask,
        endpoint: &Endpoint,
        shutdown: &CancellationToken,
    ) -> Option<Decision> {
        if endpoint.rate_limit_per_second == 0 {
            return None;
        }
        loop {
            let wait = self
                .limiter
                .take(endpoint.id, endpoint.rate_limit_per_second)
                .await;
            if wait.is_zero() {
                return None;
            }
            metrics::counter!("herald_rate_limited_total").increment(1);
            if wait > MAX_RATE_WAIT {
                // Park it instead of holding a slot: back on the work queue after the wait,
                // rounded up to a delay queue's (one hop), at least 1 s and at most 60 s.
                let park = retry::rate_park(wait);
                tracing::debug!(delivery_id = %task.delivery_id, wait_ms = park.as_millis() as u64, "rate limited, parking delivery");
                return Some(Decision::Publish(self.parked(task, park, None), None));
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Some(Decision::Requeue),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Acts on what the receiver answered: disables a gone endpoint, counts and logs the
    /// attempt, and gathers its follow-ups (the retry, the attempt record, operational events).
    async fn conclude(
        &self,
        task: &DeliveryTask,
        endpoint: &Arc<Endpoint>,
        answer: Answer,
    ) -> Decision {
        let schedule = retry::schedule_for(
            endpoint.retry_schedule_ms.as_deref(),
            &self.config.retry_schedule,
        );
        let verdict = retry::decide(&schedule, task, answer.status, answer.retry_after);
        let disabled_now = verdict.gone && self.disable_gone(endpoint).await;
        report(task, &verdict, &answer);
        let mut out = FollowUps::default();
        let mut next_retry_at = None;
        if let Some(n) = verdict.next {
            // An endpoint that keeps failing: the retry waits for its turn too (crate::pace).
            let turn = self.gates.turn(endpoint.id, n.delay);
            let wait = turn.unwrap_or(n.delay);
            let due = after(wait);
            crate::metrics::retry_scheduled(n.delay);
            let mut retry = retry::retry_task(task, &n);
            retry.turn = turn.map(|_| due);
            out.messages.push(self.retry_message(wait, due, retry));
            next_retry_at = Some(due);
        }
        out.records.push(Record::Attempt(AttemptRecord {
            attempt_id: Uuid::now_v7(),
            delivery: DeliveryKey::of(task),
            attempt: task.attempt,
            trigger: task.trigger,
            started_at: answer.started_at,
            latency_ms: latency_ms(answer.latency),
            response_status: answer.status,
            response_body: herald_outbound::excerpt(&answer.body),
            error: answer.error,
            outcome: verdict.outcome,
            next_retry_at,
        }));
        if disabled_now {
            out.extend(
                self.operational_event(endpoint, "endpoint.disabled", "410 Gone")
                    .await,
            );
        }
        out.extend(self.track_streak(endpoint, verdict.streak).await);
        Decision::Publish(out, verdict.success().then_some(task.delivery_id))
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
    /// number. A cap's park is one delay queue's wait; a pace park's may take two or more
    /// (`crate::pace`), which [`Self::retry_message`] splits.
    fn park(&self, task: &DeliveryTask, wait: Duration, why: ParkReason) -> Decision {
        metrics::counter!("herald_tasks_parked_total", "reason" => why.as_str()).increment(1);
        tracing::debug!(delivery_id = %task.delivery_id, endpoint_id = %task.endpoint_id, wait_ms = wait.as_millis() as u64, reason = why.as_str(), "parking delivery");
        let turn = (why == ParkReason::FailingPace).then(|| after(wait));
        Decision::Publish(self.parked(task, wait, turn), None)
    }

    /// `task` back after `wait`; with `turn`, the one it was given at its failing endpoint.
    fn parked(
        &self,
        task: &DeliveryTask,
        wait: Duration,
        turn: Option<DateTime<Utc>>,
    ) -> FollowUps {
        let mut task = task.clone();
        task.parked = Some(task.parked.unwrap_or(0).saturating_add(1));
        task.turn = turn.or(task.turn);
        FollowUps {
            messages: vec![self.retry_message(wait, after(wait), task)],
            records: Vec::new(),
        }
    }

    /// The message that brings `task` back after `wait`, at `due`: straight to its shard's
    /// queue of returning tasks for a wait shorter than every delay queue's, else through the delay queue of the longest
    /// rung that fits. When the rung falls short, the task carries `due` and is sent on when it
    /// comes back ([`retry::hop`]). The wait is passed as such, not derived from
    /// `due`: a tier of exactly one rung stays one hop.
    fn retry_message(
        &self,
        wait: Duration,
        due: DateTime<Utc>,
        mut task: DeliveryTask,
    ) -> Outgoing {
        let topo = self.publisher.topology();
        // Rounded up: a retry never comes back before its time.
        let (rung, rest) = retry::hop(wait);
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

/// An attempt's latency as the record keeps it.
fn latency_ms(latency: Duration) -> u32 {
    latency.as_millis().min(u32::MAX as u128) as u32
}

/// Counts and logs an attempt.
fn report(task: &DeliveryTask, verdict: &Verdict, answer: &Answer) {
    crate::metrics::attempt(verdict.outcome, answer.status, answer.latency);
    if verdict.success() {
        crate::metrics::delivered(task.created_at);
        tracing::debug!(
            delivery_id = %task.delivery_id,
            attempt = task.attempt,
            latency_ms = latency_ms(answer.latency),
            "delivered"
        );
        return;
    }
    tracing::info!(
        delivery_id = %task.delivery_id,
        endpoint_id = %task.endpoint_id,
        attempt = task.attempt,
        status = answer.status.unwrap_or(0),
        error = answer.error.as_deref().unwrap_or(""),
        outcome = verdict.outcome.as_str(),
        "delivery attempt failed"
    );
}
