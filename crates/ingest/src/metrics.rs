//! Ingest's metrics (names follow Prometheus conventions).
//!
//! - `herald_events_published_total{outcome}`: `accepted`, or `unavailable` when the broker
//!   could not take them (rejected input is counted by gRPC status in the logs, not here).
//! - `herald_deliveries_created_total`: delivery tasks handed to the broker.
//! - `herald_idempotency_hits_total`: publishes answered from an idempotency key.
//! - `herald_publish_seconds` (histogram): one Publish or PublishBatch call, end to end.

use uuid::Uuid;

/// Counts one broker hand-off of `accepted` events (`None`: not part of it).
pub fn handed_off(accepted: &[Option<(Uuid, u32)>], ok: bool) {
    let events = accepted.iter().flatten().count() as u64;
    if events == 0 {
        return;
    }
    if ok {
        let deliveries: u64 = accepted.iter().flatten().map(|(_, n)| u64::from(*n)).sum();
        metrics::counter!("herald_events_published_total", "outcome" => "accepted")
            .increment(events);
        metrics::counter!("herald_deliveries_created_total").increment(deliveries);
    } else {
        metrics::counter!("herald_events_published_total", "outcome" => "unavailable")
            .increment(events);
    }
}
