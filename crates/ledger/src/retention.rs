//! Retention: payloads and delivery history do not grow forever.
//!
//! Every `HERALD_RETENTION_INTERVAL` the ledger removes events older than
//! `HERALD_PAYLOAD_RETENTION` and deliveries, attempts and hourly statistics older than
//! `HERALD_ATTEMPT_RETENTION`. Ids are UUIDv7, so "older than" is a primary-key range, and the
//! big tables are partitioned by it ([`partitions`]): a day whose rows are all past retention is
//! dropped as a whole partition; the rest past it (the day that straddles the limit, or a
//! ledger's partition from before partitioning) is deleted in chunks of [`CHUNK`] rows along the
//! primary key, short transactions that never hold many locks. A pass stops at the first error
//! (the next pass goes on where it left off).
//! A delivery whose event was removed keeps its history but can no longer be re-sent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::partitions;

/// Rows deleted per statement.
pub const CHUNK: i64 = 10_000;

/// The smallest UUIDv7 of a millisecond: ids are UUIDv7 made when the row was created, so a
/// time bound is an id bound and range queries use the primary-key and `(…, id)` indexes.
pub fn first_id_at(t: DateTime<Utc>) -> Uuid {
    let ms = t.timestamp_millis().max(0) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

/// What the sweep keeps, and how often it runs.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Events (with their payloads) older than this are removed.
    pub payloads: Duration,
    /// Deliveries, attempts, dead letters and hourly statistics older than this are removed.
    pub attempts: Duration,
    pub interval: Duration,
    /// Days of partitions made ahead on every pass ([`partitions::ensure`]).
    pub partitions_ahead: u32,
}

/// Runs the sweep every `interval` until `shutdown`.
pub async fn run(pool: PgPool, settings: Settings, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(settings.interval.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = partitions::ensure(&pool, Utc::now(), settings.partitions_ahead).await {
            tracing::warn!(error = %e, "ledger partitions not made ahead; the next sweep tries again");
        }
        match sweep(&pool, settings.payloads, settings.attempts).await {
            Ok(removed) if removed > 0 => {
                metrics::counter!("herald_ledger_retention_removed_total").increment(removed);
                tracing::info!(removed, "retention sweep removed old rows");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention sweep failed; the next one goes on"),
        }
    }
}

/// One pass; returns the rows removed. Partitions wholly past retention are dropped (their
/// rows counted from the statistics); what is left past it, in the partition that straddles
/// the limit, is deleted in chunks.
pub async fn sweep(pool: &PgPool, payloads: Duration, attempts: Duration) -> sqlx::Result<u64> {
    let now = Utc::now();
    let ago = |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let events_before = first_id_at(ago(payloads));
    let history_before = first_id_at(ago(attempts));
    let mut removed = 0;
    for (table, before) in [
        ("events", events_before),
        ("attempts", history_before),
        ("deliveries", history_before),
        ("dead_letters", history_before),
    ] {
        if partitions::TABLES.iter().any(|(t, _)| *t == table) {
            removed += partitions::drop_before(pool, table, before).await?;
        }
        removed += delete_before(pool, table, before).await?;
    }
    removed += sqlx::query("DELETE FROM endpoint_latency WHERE hour < $1")
        .bind(ago(attempts))
        .execute(pool)
        .await?
        .rows_affected();
    Ok(removed)
}

async fn delete_before(pool: &PgPool, table: &str, before: Uuid) -> sqlx::Result<u64> {
    let sql = format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE id < $1 ORDER BY id LIMIT $2)"
    );
    let mut total = 0;
    loop {
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(before)
            .bind(CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
        total += n;
        if n < CHUNK as u64 {
            return Ok(total);
        }
    }
}
