//! The ledger's metrics (names follow Prometheus conventions).
//!
//! - `herald_ledger_batch_records` (histogram): records per committed batch.
//! - `herald_ledger_records_total{kind}`: records written (event, attempt, abandoned).
//! - `herald_ledger_lag_seconds` (histogram): from a record's time (event accepted, attempt
//!   finished) to its commit.
//! - `herald_ledger_write_seconds` (histogram), `herald_ledger_write_failures_total`,
//!   `herald_ledger_unreadable_messages_total`, `herald_ledger_refused_messages_total` (messages
//!   whose data Postgres refused, dead-lettered).
//! - `herald_dead_letters_total{queue,reason}`: messages recorded off the dead-letter queue.
//! - `herald_queue_messages{queue}` (gauge): messages ready in the ledger and dead-letter queues.
//! - `herald_resends_refused_total{limit}`: `Redeliver`/`ReplayEndpoint` calls refused by the
//!   tenant's publish rate (`rate`) or its running replays (`replay_concurrency`), see
//!   [`crate::budget`].
//! - `herald_auth_unknown_keys_total{outcome}`: API keys not cached as valid, answered from the
//!   cache of invalid ones, looked up, or refused unchecked (see `herald_store::KeyCache`).

use chrono::Utc;

use crate::write::Batch;

pub fn batch_written(batch: &Batch) {
    metrics::histogram!("herald_ledger_batch_records").record(batch.len() as f64);
    metrics::counter!("herald_ledger_records_total", "kind" => "event")
        .increment(batch.events.len() as u64);
    metrics::counter!("herald_ledger_records_total", "kind" => "attempt")
        .increment(batch.attempts.len() as u64);
    metrics::counter!("herald_ledger_records_total", "kind" => "abandoned")
        .increment(batch.abandoned.len() as u64);
    let now = Utc::now();
    let lag = metrics::histogram!("herald_ledger_lag_seconds");
    for e in &batch.events {
        lag.record(seconds_since(now, e.accepted_at));
    }
    for a in &batch.attempts {
        let done = a.started_at + chrono::Duration::milliseconds(i64::from(a.latency_ms));
        lag.record(seconds_since(now, done));
    }
}

fn seconds_since(now: chrono::DateTime<Utc>, t: chrono::DateTime<Utc>) -> f64 {
    (now - t).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6
}
