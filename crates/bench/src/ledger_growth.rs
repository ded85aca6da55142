//! ledger-growth: the ledger's queries and retention over a big history, on the layout before
//! partitioning (schema v12: one heap per table) and after it (schema v13: a partition per
//! day), in the same invocation (issue 26).
//!
//! Each layout gets a schema of its own, migrated by Herald's own migrations (up to v12 for
//! *before*; all of them for *after*, whose empty legacy partitions are replaced by a partition
//! per day of the history, as a ledger partitioned from the start has them). The same history
//! is generated straight into both with `INSERT … SELECT generate_series` (publishing tens of
//! millions of deliveries through Herald would take this machine hours and measure the pipeline
//! again): 50,000,000 attempt rows × `--scale` over [`DAYS`] days, two attempts per delivery,
//! four deliveries per event, [`TENANTS`] tenants with [`ENDPOINTS`] endpoints each, ids UUIDv7
//! made from each row's time, 3 % of deliveries failed. Then `ANALYZE`.
//!
//! Measured on each layout, [`SAMPLES`] times each with random tenants, endpoints and
//! deliveries, the statements the ledger runs (`crates/ledger/src/api.rs`): the delivery log's
//! first page, its `failed` filter, a page a week back (`since`/`before`), a delivery with its
//! attempts (`GetDelivery`), an endpoint's last 24 h of hourly statistics as an analyst reads
//! them (the `endpoint_hourly` view before, `endpoint_hourly_between` after); then retention of
//! the oldest day: chunked `DELETE`s before, `DETACH` + `DROP` of that day's partitions after.

use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use crate::cli::Settings;

/// Attempt rows before `--scale`, and the floor.
const ATTEMPTS: u64 = 50_000_000;
const MIN_ATTEMPTS: u64 = 200_000;
/// Days of history, tenants, endpoints per tenant.
const DAYS: i64 = 30;
const TENANTS: usize = 8;
const ENDPOINTS: usize = 4;
/// Events generated per statement.
const SLICE_EVENTS: u64 = 100_000;
/// Timed executions of each query, after [`WARMUP`] untimed ones.
const SAMPLES: usize = 100;
const WARMUP: usize = 10;
/// Rows per retention DELETE, as the ledger's sweep (`retention::CHUNK`).
const CHUNK: i64 = 10_000;

/// The sizes of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub attempts: u64,
    pub deliveries: u64,
    pub events: u64,
    pub days: i64,
    pub samples: usize,
}

impl Plan {
    pub fn new(scale: f64) -> Self {
        let attempts = ((ATTEMPTS as f64 * scale).round() as u64).max(MIN_ATTEMPTS);
        let events = attempts / 8;
        Self {
            attempts: events * 8,
            deliveries: events * 4,
            events,
            days: DAYS,
            samples: SAMPLES,
        }
    }
}

/// Which layout a schema has.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Layout {
    /// Schema v12: `events`, `deliveries`, `attempts` one table each.
    Before,
    /// Schema v13: partitioned by day.
    After,
}

/// p50/p95 of one query on one layout, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timing {
    pub p50_ms: f64,
    pub p95_ms: f64,
}

/// One layout's figures.
#[derive(Clone, Debug, Serialize)]
pub struct LayoutFigures {
    pub layout: Layout,
    pub generate_secs: f64,
    pub total_bytes: i64,
    /// (query, timing), in [`QUERIES`] order.
    pub queries: Vec<(String, Timing)>,
    /// Removing the oldest day's deliveries and attempts (and events).
    pub retention_secs: f64,
    pub retention_rows: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LedgerGrowthEntry {
    pub plan: Plan,
    pub layouts: Vec<LayoutFigures>,
    pub error: Option<String>,
}

impl LedgerGrowthEntry {
    pub fn name(&self) -> String {
        "ledger-growth".into()
    }
}

pub async fn run(settings: &Settings, plan: &Plan) -> LedgerGrowthEntry {
    let mut entry = LedgerGrowthEntry {
        plan: plan.clone(),
        layouts: Vec::new(),
        error: None,
    };
    for layout in [Layout::Before, Layout::After] {
        let schema = format!("bench_growth_{:08x}", rand::random::<u32>());
        let result = run_layout(settings, plan, layout, &schema).await;
        drop_schema(settings, &schema).await;
        match result {
            Ok(figures) => entry.layouts.push(figures),
            Err(e) => {
                entry.error = Some(format!("{layout:?}: {e:#}"));
                break;
            }
        }
    }
    print(&entry);
    entry
}

async fn pool(settings: &Settings, schema: &str) -> Result<PgPool> {
    let options = settings
        .database_url
        .parse::<PgConnectOptions>()?
        .options([("search_path", schema), ("statement_timeout", "0")]);
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?)
}

async fn drop_schema(settings: &Settings, schema: &str) {
    if let Ok(p) = pool(settings, "public").await {
        let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(&p).await {
            eprintln!("bench: ledger-growth: dropping {schema}: {e}");
        }
        p.close().await;
    }
}

async fn run_layout(
    settings: &Settings,
    plan: &Plan,
    layout: Layout,
    schema: &str,
) -> Result<LayoutFigures> {
    let p = pool(settings, schema).await?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&p)
        .await?;
    migrate(&p, layout).await?;
    eprintln!(
        "bench: ledger-growth: {layout:?}: generating {} attempts, {} deliveries, {} events",
        plan.attempts, plan.deliveries, plan.events
    );
    let started = Instant::now();
    generate(&p, plan).await?;
    let generate_secs = started.elapsed().as_secs_f64();
    let total_bytes: i64 = sqlx::query_scalar(
        "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind = 'r'",
    )
    .fetch_one(&p)
    .await?;
    eprintln!("bench: ledger-growth: {layout:?}: generated in {generate_secs:.0} s; measuring");
    let mut queries = Vec::new();
    for (name, params, sql) in queries_of(layout) {
        let timing = time_query(&p, params, sql).await.context(name)?;
        queries.push((name.to_owned(), timing));
    }
    let (retention_secs, retention_rows) = retention(&p, layout).await?;
    p.close().await;
    Ok(LayoutFigures {
        layout,
        generate_secs,
        total_bytes,
        queries,
        retention_secs,
        retention_rows,
    })
}

/// Herald's migrations up to v12 (before) or all of them (after, with a partition per day of
/// the history in place of the empty legacy partitions a fresh ledger has).
async fn migrate(p: &PgPool, layout: Layout) -> Result<()> {
    let last = if layout == Layout::Before {
        12
    } else {
        i64::MAX
    };
    let migrator = sqlx::migrate::Migrator {
        migrations: herald_store::MIGRATOR
            .migrations
            .iter()
            .filter(|m| m.version <= last)
            .cloned()
            .collect(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    migrator.run(p).await.context("migrations")?;
    // Generation makes ids from times; the ledger's function, for both layouts.
    sqlx::raw_sql(
        "CREATE OR REPLACE FUNCTION bench_v7(t timestamptz) RETURNS uuid LANGUAGE sql AS $$
           SELECT (lpad(to_hex(floor(extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'
                   || substr(md5(random()::text), 1, 3) || '8'
                   || substr(md5(random()::text), 1, 15))::uuid $$;
         CREATE OR REPLACE FUNCTION bench_id_at(t timestamptz) RETURNS uuid
         LANGUAGE sql IMMUTABLE AS $$
           SELECT (lpad(to_hex(greatest(floor(extract(epoch FROM t) * 1000), 0)::bigint), 12, '0')
                   || '70008000000000000000')::uuid $$;",
    )
    .execute(p)
    .await?;
    if layout == Layout::After {
        let sql = format!(
            "DO $$
             DECLARE t text; d int; day timestamptz;
             BEGIN
               FOREACH t IN ARRAY ARRAY['events', 'deliveries', 'attempts'] LOOP
                 EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', t, t || '_legacy');
                 EXECUTE format('DROP TABLE %I', t || '_legacy');
                 FOR d IN -{DAYS}..7 LOOP
                   day := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + d * interval '1 day';
                   EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)%s',
                     t || '_p' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD'), t,
                     ledger_id_at(day), ledger_id_at(day + interval '1 day'),
                     CASE WHEN t = 'deliveries' THEN ' WITH (fillfactor = 70)' ELSE '' END);
                 END LOOP;
               END LOOP;
             END $$"
        );
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(p).await?;
    }
    Ok(())
}

/// The history, a slice of events at a time: each event with its four deliveries and each
/// delivery with its two attempts, in one statement (data-modifying CTEs).
async fn generate(p: &PgPool, plan: &Plan) -> Result<()> {
    let span_ms = (plan.days * 86_400_000) as f64;
    let mut from = 0;
    while from < plan.events {
        let to = (from + SLICE_EVENTS).min(plan.events);
        let sql = format!(
            "WITH e AS (
               INSERT INTO events (id, tenant_id, event_type, occurred_at, accepted_at, payload)
               SELECT bench_v7(at), ('00000000-0000-7000-8000-' || lpad((g % {TENANTS})::text, 12, '0'))::uuid,
                      'order.paid', at, at, '{{\"order\":' || g || ',\"amount\":4200}}'
               FROM (SELECT g, now() - interval '{days} days' + (g::float8 * {step}) * interval '1 ms' AS at
                     FROM generate_series({from}, {last}) g) s
               RETURNING id, tenant_id, accepted_at),
             d AS (
               INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status,
                                       attempt_count, response_status, latency_ms, created_at,
                                       last_attempt_at, updated_at)
               SELECT bench_v7(e.accepted_at), e.tenant_id, e.id,
                      ('00000000-0000-7000-9000-' || lpad(k::text, 4, '0') || right(e.tenant_id::text, 8))::uuid,
                      'order.paid', CASE WHEN random() < 0.03 THEN 'failed' ELSE 'success' END,
                      2, 200, 40, e.accepted_at, e.accepted_at + interval '1 minute',
                      e.accepted_at + interval '1 minute'
               FROM e CROSS JOIN generate_series(0, {eps}) k
               RETURNING id, tenant_id, endpoint_id, created_at)
             INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt, trigger,
                                   status, started_at, latency_ms, response_status, response_body)
             SELECT bench_v7(d.created_at + n * interval '1 second'), d.id, d.tenant_id,
                    d.endpoint_id, n, 'event', CASE WHEN n = 1 THEN 'retrying' ELSE 'success' END,
                    d.created_at + n * interval '1 second', 40, CASE WHEN n = 1 THEN 500 ELSE 200 END,
                    'ok'
             FROM d CROSS JOIN generate_series(1, 2) n",
            days = plan.days,
            step = span_ms / plan.events as f64,
            last = to - 1,
            eps = ENDPOINTS - 1,
        );
        sqlx::query(AssertSqlSafe(sql)).execute(p).await?;
        from = to;
    }
    sqlx::query("ANALYZE").execute(p).await?;
    Ok(())
}

/// What a timed query is given.
#[derive(Clone, Copy)]
enum Params {
    /// `$1` a tenant.
    Tenant,
    /// `$1` an endpoint.
    Endpoint,
    /// GetDelivery's three statements, as the ledger runs them: the delivery (`$1` id, `$2`
    /// tenant), its event's payload (`$1` event, `$2` tenant), its attempts (`$1` delivery,
    /// `$2` tenant, `$3` the ledger's lower id bound: an hour before the delivery was made).
    Delivery,
}

const GET_DELIVERY: [&str; 3] = [
    "SELECT id, event_id, status, attempt_count, created_at FROM deliveries WHERE id = $1 AND tenant_id = $2",
    "SELECT payload FROM events WHERE id = $1 AND tenant_id = $2",
    "SELECT id, attempt, started_at, response_status, latency_ms FROM attempts
     WHERE delivery_id = $1 AND tenant_id = $2 AND id >= $3
     ORDER BY started_at, attempt, id LIMIT 101",
];

/// The queries timed on `layout`.
fn queries_of(layout: Layout) -> Vec<(&'static str, Params, &'static str)> {
    let stats = match layout {
        Layout::Before => {
            "SELECT * FROM endpoint_hourly WHERE endpoint_id = $1 AND hour >= now() - interval '24 hours'"
        }
        Layout::After => {
            "SELECT * FROM endpoint_hourly_between(now() - interval '24 hours', now()) WHERE endpoint_id = $1"
        }
    };
    vec![
        (
            "ListDeliveries: first page",
            Params::Tenant,
            "SELECT id FROM deliveries WHERE tenant_id = $1 ORDER BY id DESC LIMIT 51",
        ),
        (
            "ListDeliveries: failed",
            Params::Tenant,
            "SELECT id FROM deliveries WHERE tenant_id = $1 AND problem = 'failed' ORDER BY id DESC LIMIT 51",
        ),
        (
            "ListDeliveries: a week back",
            Params::Tenant,
            "SELECT id FROM deliveries WHERE tenant_id = $1
               AND id < bench_id_at(now() - interval '7 days')
               AND id >= bench_id_at(now() - interval '8 days') ORDER BY id DESC LIMIT 51",
        ),
        (
            "GetDelivery: delivery, payload, attempts",
            Params::Delivery,
            "",
        ),
        ("endpoint stats: last 24 h, hourly", Params::Endpoint, stats),
    ]
}

/// The smallest UUIDv7 of the millisecond an hour before the one `id` was made in (the
/// ledger's `attempts_from`).
fn hour_before(id: Uuid) -> Uuid {
    let ms = herald_core::wire::uuid_time(id)
        .map_or(0, |t| t.timestamp_millis().max(0) as u64)
        .saturating_sub(3_600_000);
    uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10]).into_uuid()
}

/// One execution of a query with the parameters of one sampled delivery.
async fn execute(
    p: &PgPool,
    params: Params,
    sql: &str,
    pick: (Uuid, Uuid, Uuid, Uuid),
) -> Result<()> {
    let (tenant, endpoint, delivery, event) = pick;
    match params {
        Params::Tenant => {
            sqlx::query(AssertSqlSafe(sql.to_owned()))
                .bind(tenant)
                .fetch_all(p)
                .await?;
        }
        Params::Endpoint => {
            sqlx::query(AssertSqlSafe(sql.to_owned()))
                .bind(endpoint)
                .fetch_all(p)
                .await?;
        }
        Params::Delivery => {
            sqlx::query(GET_DELIVERY[0])
                .bind(delivery)
                .bind(tenant)
                .fetch_one(p)
                .await?;
            sqlx::query(GET_DELIVERY[1])
                .bind(event)
                .bind(tenant)
                .fetch_all(p)
                .await?;
            sqlx::query(GET_DELIVERY[2])
                .bind(delivery)
                .bind(tenant)
                .bind(hour_before(delivery))
                .fetch_all(p)
                .await?;
        }
    }
    Ok(())
}

/// p50/p95 of a query over [`SAMPLES`] executions with the parameters of sampled deliveries.
async fn time_query(p: &PgPool, params: Params, sql: &str) -> Result<Timing> {
    let picks: Vec<(Uuid, Uuid, Uuid, Uuid)> = sqlx::query_as(
        "SELECT tenant_id, endpoint_id, id, event_id FROM deliveries TABLESAMPLE SYSTEM (1) LIMIT $1",
    )
    .bind((SAMPLES + WARMUP) as i64)
    .fetch_all(p)
    .await?;
    anyhow::ensure!(!picks.is_empty(), "no deliveries to sample");
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + WARMUP {
        let started = Instant::now();
        execute(p, params, sql, picks[i % picks.len()]).await?;
        if i >= WARMUP {
            times.push(started.elapsed());
        }
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    Ok(Timing {
        p50_ms: at(0.5),
        p95_ms: at(0.95),
    })
}

/// Removes the oldest day of history the way the layout allows; (seconds, rows removed).
async fn retention(p: &PgPool, layout: Layout) -> Result<(f64, i64)> {
    let day = format!(
        "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '{DAYS} days'"
    );
    let bound = format!("bench_id_at({day} + interval '1 day')");
    let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM attempts WHERE id < {bound})
              + (SELECT count(*) FROM deliveries WHERE id < {bound})
              + (SELECT count(*) FROM events WHERE id < {bound})"
    )))
    .fetch_one(p)
    .await?;
    let started = Instant::now();
    match layout {
        Layout::Before => {
            for table in ["attempts", "deliveries", "events"] {
                let sql = format!(
                    "WITH gone AS (SELECT id FROM {table} WHERE id < {bound} ORDER BY id LIMIT {CHUNK})
                     DELETE FROM {table} t USING gone WHERE t.id = gone.id"
                );
                while sqlx::query(AssertSqlSafe(sql.clone()))
                    .execute(p)
                    .await?
                    .rows_affected()
                    > 0
                {}
            }
        }
        Layout::After => {
            let sql = format!(
                "DO $$ DECLARE t text; BEGIN
                   FOREACH t IN ARRAY ARRAY['attempts', 'deliveries', 'events'] LOOP
                     EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', t,
                                    t || '_p' || to_char(({day}) AT TIME ZONE 'UTC', 'YYYYMMDD'));
                     EXECUTE format('DROP TABLE %I', t || '_p' || to_char(({day}) AT TIME ZONE 'UTC', 'YYYYMMDD'));
                   END LOOP; END $$"
            );
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(p).await?;
        }
    }
    Ok((started.elapsed().as_secs_f64(), rows))
}

fn rows(entry: &LedgerGrowthEntry) -> Vec<[String; 5]> {
    let (Some(b), Some(a)) = (entry.layouts.first(), entry.layouts.get(1)) else {
        return Vec::new();
    };
    let ms = |t: &Timing| format!("{:.2} / {:.2} ms", t.p50_ms, t.p95_ms);
    let mut out: Vec<[String; 5]> = b
        .queries
        .iter()
        .zip(&a.queries)
        .map(|((name, tb), (_, ta))| {
            [
                name.clone(),
                ms(tb),
                ms(ta),
                format!("{:.2}×", tb.p95_ms / ta.p95_ms.max(1e-6)),
                String::new(),
            ]
        })
        .collect();
    out.push([
        "retention: the oldest day".into(),
        format!("{:.2} s", b.retention_secs),
        format!("{:.3} s", a.retention_secs),
        format!("{:.0}×", b.retention_secs / a.retention_secs.max(1e-6)),
        format!("{} rows", b.retention_rows),
    ]);
    out
}

pub fn print(entry: &LedgerGrowthEntry) {
    eprintln!("\n== ledger-growth ==");
    let p = &entry.plan;
    eprintln!(
        "  {} attempts, {} deliveries, {} events over {} days, per layout",
        p.attempts, p.deliveries, p.events, p.days
    );
    for l in &entry.layouts {
        eprintln!(
            "  {:?}: generated in {:.0} s, {:.1} GB",
            l.layout,
            l.generate_secs,
            l.total_bytes as f64 / 1e9
        );
    }
    eprintln!(
        "  {:<36} {:>20} {:>20} {:>10}",
        "query (p50 / p95)", "before", "after", "p95 ratio"
    );
    for r in rows(entry) {
        eprintln!(
            "  {:<36} {:>20} {:>20} {:>10} {}",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
    if let Some(e) = &entry.error {
        eprintln!("  failed: {e}");
    }
}

pub fn markdown(md: &mut String, entry: &LedgerGrowthEntry) {
    use std::fmt::Write as _;
    let p = &entry.plan;
    let _ = writeln!(
        md,
        "### ledger-growth\n\n{} attempt rows, {} deliveries and {} events over {} days generated into each layout (`bench scenario ledger-growth`); the ledger's statements, {} times each.\n\n| query (p50 / p95) | before (one table) | after (daily partitions) | ratio | |\n|---|---|---|---|---|",
        p.attempts, p.deliveries, p.events, p.days, p.samples
    );
    for r in rows(entry) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
    if let Some(e) = &entry.error {
        let _ = writeln!(md, "\nfailed: {e}");
    }
    md.push('\n');
}
