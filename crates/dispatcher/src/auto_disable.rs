//! Endpoint auto-disable, the dispatcher's side: what each attempt adds to its endpoint's
//! failure streak, turning off an endpoint whose receiver answered 410 Gone, and the
//! operational events (`endpoint.failing`, `endpoint.disabled`, `endpoint.recovered`) that tell
//! the tenant's other endpoints.
//!
//! The streak itself lives in Postgres (`herald_store`'s `auto_disable`: thresholds, one
//! statement per change, each change reported once). A database error here is logged and
//! skipped: a delivery never fails because of it. Every write of an endpoint's streak updates
//! one row, so a failing endpoint's outcomes are folded and written a few times a second
//! ([`crate::streak_writes`]) rather than one by one.

use std::sync::Arc;

use chrono::Utc;
use herald_core::wire::{DeliveryStatus, Record};
use herald_store::{Endpoint, FailurePolicy, Outcome, Streak, SubscriptionIndex};
use tokio::time::Instant;
use uuid::Uuid;

use crate::Dispatcher;
use crate::deliver::FollowUps;

impl Dispatcher {
    /// Turns `endpoint` off after a 410 Gone; true only when this call turned it off (concurrent
    /// 410s, and ones from dispatchers whose cache still shows it enabled, stay silent).
    pub(crate) async fn disable_gone(&self, endpoint: &Endpoint) -> bool {
        let disabled = match self.store.disable_endpoint(endpoint.id, "410 Gone").await {
            Ok(true) => {
                metrics::counter!("herald_endpoints_disabled_total", "reason" => "gone")
                    .increment(1);
                tracing::warn!(endpoint_id = %endpoint.id, "endpoint answered 410 gone, disabled");
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(endpoint_id = %endpoint.id, error = %e, "could not disable endpoint after 410");
                false
            }
        };
        self.endpoints.forget(endpoint.id);
        disabled
    }

    /// Folds an attempt's outcome (see [`crate::retry::Verdict::streak`]) into the endpoint's
    /// failure streak; returns the operational events it causes. The outcome joins the
    /// endpoint's tally ([`crate::streak_writes`]); when this task opened the tally it writes
    /// it, at most [`crate::streak_writes::WRITE_EVERY`] after the endpoint's last write.
    pub(crate) async fn track_streak(
        &self,
        endpoint: &Arc<Endpoint>,
        outcome: DeliveryStatus,
    ) -> FollowUps {
        let mut out = FollowUps::default();
        let Some(at) = self
            .streak_step(endpoint, outcome)
            .and_then(|step| self.streaks.add(endpoint.id, step, Instant::now()))
        else {
            return out;
        };
        let Some(tally) = self.streaks.wait_turn(endpoint.id, at).await else {
            return out;
        };
        let policy = FailurePolicy {
            failing_after_attempts: self.config.failing_after_attempts,
            disable_after_failures: self.config.disable_after_failures,
            disable_after_span: chrono::Duration::from_std(self.config.disable_after_span)
                .unwrap_or(chrono::Duration::MAX),
        };
        let results = self.store.record_tally(endpoint.id, tally, &policy).await;
        self.streaks.written(endpoint.id, Instant::now());
        for result in results {
            match result {
                Ok(streak) => out.extend(self.announce(endpoint, streak).await),
                Err(e) => {
                    tracing::warn!(endpoint_id = %endpoint.id, error = %e, "could not update the endpoint's failure streak");
                }
            }
        }
        out
    }

    /// The streak outcome an attempt adds: none for a success to an endpoint with no streak
    /// (neither stored nor seen failing here lately), which is nearly every delivery.
    fn streak_step(&self, endpoint: &Endpoint, outcome: DeliveryStatus) -> Option<Outcome> {
        let mut recent = self.recent_failures.lock().expect("recent failures lock");
        if outcome == DeliveryStatus::Success {
            let seen = recent.remove(&endpoint.id);
            if seen || endpoint.failed_attempts > 0 || endpoint.consecutive_failures > 0 {
                return Some(Outcome::Success);
            }
            return None;
        }
        recent.insert(endpoint.id);
        Some(match outcome {
            DeliveryStatus::Failed => Outcome::Failed,
            _ => Outcome::FailedAttempt,
        })
    }

    /// The operational event a change of the streak calls for, if any.
    async fn announce(&self, endpoint: &Arc<Endpoint>, streak: Streak) -> FollowUps {
        match streak {
            Streak::Unchanged => FollowUps::default(),
            Streak::Failing { failed_attempts } => {
                tracing::warn!(endpoint_id = %endpoint.id, failed_attempts, "endpoint is failing");
                let reason = format!("{failed_attempts} attempts in a row failed");
                self.operational_event(endpoint, "endpoint.failing", &reason)
                    .await
            }
            Streak::Disabled { reason } => {
                metrics::counter!("herald_endpoints_disabled_total", "reason" => "failing")
                    .increment(1);
                tracing::warn!(endpoint_id = %endpoint.id, reason = %reason, "endpoint disabled automatically");
                self.endpoints.forget(endpoint.id);
                self.operational_event(endpoint, "endpoint.disabled", &reason)
                    .await
            }
            Streak::Recovered => {
                tracing::info!(endpoint_id = %endpoint.id, "endpoint recovered");
                self.operational_event(endpoint, "endpoint.recovered", "a delivery succeeded")
                    .await
            }
        }
    }

    /// An operational event about `endpoint`, fanned out to the tenant's other enabled
    /// endpoints subscribed to it: the delivery tasks and the ledger record.
    pub(crate) async fn operational_event(
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
}
