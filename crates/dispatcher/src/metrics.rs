//! The dispatcher's metrics (names follow Prometheus conventions).
//!
//! - `herald_delivery_attempts_total{outcome, status_class}`: attempts by outcome (`success`,
//!   `retrying`, `failed`) and response class (`2xx`…`5xx`, `none` without a response).
//! - `herald_attempt_duration_seconds` (histogram): one POST, request to response.
//! - `herald_delivery_e2e_seconds` (histogram): event accepted → answered 2xx.
//! - `herald_retries_scheduled_total{delay}`: retries put on a delay queue, by delay.
//! - `herald_rate_limited_total`: deliveries that waited for their endpoint's rate limit.
//! - `herald_endpoints_disabled_total{reason}`: endpoints Herald disabled (`gone`, `failing`).
//! - `herald_deliveries_abandoned_total`: deliveries dropped because their endpoint was deleted
//!   or disabled (recorded as `failed` in the ledger).
//! - `herald_deliveries_in_flight` (gauge) and `herald_queue_messages{queue}` (gauge, the work
//!   queue and every delay queue this dispatcher uses).

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_core::wire::DeliveryStatus;

pub fn attempt(outcome: DeliveryStatus, status: Option<u16>, latency: Duration) {
    let class = match status {
        None => "none",
        Some(s) if s < 200 => "1xx",
        Some(s) if s < 300 => "2xx",
        Some(s) if s < 400 => "3xx",
        Some(s) if s < 500 => "4xx",
        Some(_) => "5xx",
    };
    metrics::counter!(
        "herald_delivery_attempts_total",
        "outcome" => outcome.as_str(),
        "status_class" => class
    )
    .increment(1);
    metrics::histogram!("herald_attempt_duration_seconds").record(latency.as_secs_f64());
}

pub fn delivered(created_at: DateTime<Utc>) {
    let e2e = (Utc::now() - created_at)
        .num_microseconds()
        .unwrap_or(0)
        .max(0) as f64
        / 1e6;
    metrics::histogram!("herald_delivery_e2e_seconds").record(e2e);
}

pub fn retry_scheduled(delay: Duration) {
    metrics::counter!(
        "herald_retries_scheduled_total",
        "delay" => herald_core::schedule::format_duration(delay)
    )
    .increment(1);
}
