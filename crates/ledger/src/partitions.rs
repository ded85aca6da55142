//! The ledger's daily partitions: made ahead of the rows that need them, dropped whole when
//! retention is past them.
//!
//! `events`, `deliveries` and `attempts` are `PARTITION BY RANGE (id)` (schema v13): ids are
//! UUIDv7, so the partition of UTC day D holds the ids from [`first_id_at`]`(D)` to
//! `first_id_at(D + 1)`. Partitions are made `HERALD_LEDGER_PARTITIONS_AHEAD` days ahead, at
//! start (before the ledger consumes) and on every retention pass. A default partition
//! (`<table>_default`) takes a row whose day has no partition, so a write never fails for want
//! of one; it stays empty while partitions are made ahead (a day whose rows already sit there
//! cannot get a partition of its own: that is logged, and those rows stay in the default
//! partition until retention deletes them). The partition the migration made of an older ledger
//! (`<table>_legacy`, every id before the day after the migration) is dropped like the others
//! once its upper bound is past retention.
//!
//! Detaching a partition locks its table for a moment: each drop waits at most [`LOCK_WAIT`]
//! for queries in progress (a long analyst query, say), else it is left to the next pass, so
//! writers never queue behind it for long. Several ledgers may run this at once: each step
//! tolerates another ledger having done it.

use chrono::{DateTime, Duration as Days, NaiveTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::retention::first_id_at;

/// The partitioned tables, and the storage parameters of their partitions (`deliveries` rows
/// are updated in place: room on each page keeps those updates heap-only, see schema v7).
pub const TABLES: [(&str, &str); 3] = [
    ("events", ""),
    ("deliveries", " WITH (fillfactor = 70)"),
    ("attempts", ""),
];

/// SQLSTATE of "would overlap partition": the day is already covered (by a legacy partition).
const OVERLAPS: &str = "42P17";
/// SQLSTATE of "relation already exists": another ledger made it first.
const EXISTS: &str = "42P07";
/// SQLSTATE of "updated partition constraint for default partition would be violated": rows
/// of that day are in the default partition already.
const IN_DEFAULT: &str = "23514";
/// SQLSTATE of "relation does not exist": another ledger dropped it first.
const UNDEFINED_TABLE: &str = "42P01";
/// SQLSTATE of `lock_timeout` expiring.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Longest a drop waits for the table's lock (`lock_timeout`).
pub const LOCK_WAIT: &str = "2s";

/// Midnight UTC of `t`'s day.
fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_time(NaiveTime::MIN).and_utc()
}

/// The name of `table`'s partition of the day starting at `day`.
fn partition_name(table: &str, day: DateTime<Utc>) -> String {
    format!("{table}_p{}", day.format("%Y%m%d"))
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// Makes the partitions of today and the `ahead` days after it that do not exist yet; returns
/// how many it made.
pub async fn ensure(pool: &PgPool, now: DateTime<Utc>, ahead: u32) -> sqlx::Result<u32> {
    let mut made = 0;
    let today = day_start(now);
    for offset in 0..=i64::from(ahead) {
        let day = today + Days::days(offset);
        let (from, to) = (first_id_at(day), first_id_at(day + Days::days(1)));
        for (table, with) in TABLES {
            let name = partition_name(table, day);
            let sql = format!(
                "CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ('{from}') TO ('{to}'){with}"
            );
            match sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await {
                Ok(_) => made += 1,
                Err(e) if matches!(sqlstate(&e).as_deref(), Some(OVERLAPS | EXISTS)) => {}
                Err(e) if sqlstate(&e).as_deref() == Some(IN_DEFAULT) => {
                    tracing::warn!(partition = %name, "rows of this day are in the default partition: the day keeps them there")
                }
                Err(e) => return Err(e),
            }
        }
    }
    if made > 0 {
        metrics::counter!("herald_ledger_partitions_created_total").increment(u64::from(made));
        tracing::info!(partitions = made, ahead, "ledger partitions created");
    }
    Ok(made)
}

/// One partition of a table, with the upper bound of its id range (`None`: unbounded).
#[derive(Debug, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub upper: Option<Uuid>,
}

/// The upper bound in a partition bound expression, as `pg_get_expr` prints it:
/// `FOR VALUES FROM (…) TO ('<uuid>')` (or `TO (MAXVALUE)`).
fn upper_bound(expr: &str) -> Option<Uuid> {
    let to = expr.rsplit_once(" TO (")?.1;
    to.trim_end_matches(')').trim_matches('\'').parse().ok()
}

/// The partitions of `table` (in the current schema), oldest first.
pub async fn list(pool: &PgPool, table: &str) -> sqlx::Result<Vec<Partition>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid)
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = to_regclass($1)",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let mut parts: Vec<Partition> = rows
        .into_iter()
        .map(|(name, bound)| Partition {
            upper: upper_bound(&bound),
            name,
        })
        .collect();
    parts.sort_by_key(|p| p.upper.unwrap_or(Uuid::max()));
    Ok(parts)
}

/// Detaches and drops every partition of `table` whose ids are all below `before`; returns
/// the rows they held (as the statistics estimate them: counting would read them all).
pub async fn drop_before(pool: &PgPool, table: &str, before: Uuid) -> sqlx::Result<u64> {
    let mut rows = 0u64;
    for p in list(pool, table).await? {
        // The default partition has no bound: retention deletes its old rows in chunks.
        if p.upper.is_none_or(|upper| upper > before) {
            continue;
        }
        let estimate: Option<f32> =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)")
                .bind(&p.name)
                .fetch_optional(pool)
                .await?;
        // One transaction: the lock wait applies to it, and nothing is left half-dropped.
        let sql = format!(
            "SET LOCAL lock_timeout = '{LOCK_WAIT}'; \
             ALTER TABLE {table} DETACH PARTITION {name}; DROP TABLE {name};",
            name = p.name
        );
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await {
            Ok(_) => {}
            Err(e) if sqlstate(&e).as_deref() == Some(UNDEFINED_TABLE) => continue,
            Err(e) if sqlstate(&e).as_deref() == Some(LOCK_NOT_AVAILABLE) => {
                tracing::info!(partition = %p.name, "partition past retention busy, dropped on a later pass");
                continue;
            }
            Err(e) => return Err(e),
        }
        rows += estimate.unwrap_or(0.0).max(0.0) as u64;
        metrics::counter!("herald_ledger_partitions_dropped_total").increment(1);
        tracing::info!(partition = %p.name, "ledger partition past retention dropped");
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_for_their_utc_day() {
        let t = "2026-12-07T23:59:59Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(day_start(t).to_rfc3339(), "2026-12-07T00:00:00+00:00");
        assert_eq!(
            partition_name("attempts", day_start(t)),
            "attempts_p20261207"
        );
    }

    #[test]
    fn the_upper_bound_is_read_from_the_bound_expression() {
        let id = first_id_at("2026-12-08T00:00:00Z".parse().unwrap());
        let expr = format!("FOR VALUES FROM ('01a2...') TO ('{id}')");
        assert_eq!(upper_bound(&expr), Some(id));
        assert_eq!(
            upper_bound(&format!("FOR VALUES FROM (MINVALUE) TO ('{id}')")),
            Some(id)
        );
        assert_eq!(upper_bound("FOR VALUES FROM ('x') TO (MAXVALUE)"), None);
    }
}
