//! Ingest's metrics (names follow Prometheus conventions).
//!
//! - `herald_events_published_total{outcome}`: `accepted`, or `unavailable` when the broker
//!   could not take them (rejected input is counted by gRPC status in the logs, not here).
//! - `herald_deliveries_created_total`: delivery tasks handed to the broker.
//! - `herald_idempotency_hits_total`: publishes answered from an idempotency key.
//! - `herald_publish_seconds` (histogram): one Publish or PublishBatch call, end to end.
//! - `herald_filter_budget_exhausted_total`: deliveries not made because the endpoint's payload
//!   filter ran out of its step budget on the event (the endpoint id is in the warn log).
//! - `herald_publish_fanout_refused_total`, `herald_publish_memory_refused_total`: publish
//!   calls refused over `HERALD_MAX_FANOUT_BYTES` or for want of room under
//!   `HERALD_PUBLISH_MEMORY` (see [`crate::fanout`]).
//! - `herald_send_test_refused_total{limit}`: test sends refused by the tenant's publish rate
//!   (`rate`) or its test sends in progress (`concurrency`), see [`crate::budget`].
//! - `herald_auth_unknown_keys_total{outcome}`: credentials not cached as valid, answered from
//!   the cache of invalid ones, looked up, or refused unchecked (see `herald_store::KeyCache`).

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
