//! Applying ledger records to Postgres, many at a time, idempotently.
//!
//! Every record is a fact with its own key (event id, attempt id), inserted with
//! `ON CONFLICT DO NOTHING`; the delivery row is a fold over those facts that only moves
//! forward (`success` is final; otherwise a later attempt number wins, and `failed` stands
//! against the same attempt again; an abandonment counts the attempts made before it), so a
//! record applied twice, an attempt record that overtakes its event record, or one that
//! arrives after its delivery was abandoned, converges to the same state.
//! One transaction per batch, multi-row `UNNEST` inserts: a few statements for hundreds of
//! records.
//!
//! A delivery whose event record and attempt record arrive in the same batch (the usual case
//! when the dispatchers keep up) is inserted once, already in its attempted state, instead of
//! inserted `pending` and updated, which saves a heap tuple and its WAL. When the attempt comes
//! later (dispatchers behind a backlog), pending -> success is normally a HOT update: no index
//! holds `status` (migration 0007), so when the page has room (fillfactor 70) the update
//! touches none of the table's indexes.
//!
//! Per-endpoint statistics are kept in the same transaction from what the batch really
//! inserted (`RETURNING`), so a record applied twice counts once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, DurationRound, Utc};
use herald_core::stats;
use herald_core::wire::{
    AbandonedRecord, AttemptRecord, DeliveryKey, DeliveryStatus, EventRecord, Record, Trigger,
};
use sqlx::PgPool;
use uuid::Uuid;

/// Records of one batch, sorted by kind.
#[derive(Default)]
pub struct Batch {
    pub events: Vec<EventRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub abandoned: Vec<AbandonedRecord>,
}

impl Batch {
    pub fn push(&mut self, r: Record) {
        match r {
            Record::Event(e) => self.events.push(e),
            Record::Attempt(mut a) => {
                // A dispatcher of another version might not have cleaned these.
                herald_core::wire::storable(&mut a.response_body);
                if let Some(e) = a.error.as_mut() {
                    herald_core::wire::storable(e);
                }
                self.attempts.push(a)
            }
            Record::Abandoned(a) => self.abandoned.push(a),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len() + self.attempts.len() + self.abandoned.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The highest-ranked record of each delivery.
fn latest_per_delivery(records: Vec<&AttemptRecord>) -> Vec<&AttemptRecord> {
    let mut latest: HashMap<Uuid, &AttemptRecord> = HashMap::new();
    for r in records {
        latest
            .entry(r.delivery.delivery_id)
            .and_modify(|cur| {
                if rank(r) > rank(cur) {
                    *cur = r;
                }
            })
            .or_insert(r);
    }
    latest.into_values().collect()
}

fn rank(a: &AttemptRecord) -> (bool, u32, DateTime<Utc>) {
    (
        a.outcome == DeliveryStatus::Success,
        a.attempt,
        a.started_at,
    )
}

/// A delivery row still to be inserted `pending`: its event's record is in hand, no attempt
/// record for it yet.
#[derive(Clone, Debug)]
pub struct PendingRow {
    pub delivery_id: Uuid,
    pub tenant_id: Uuid,
    pub event_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    pub test: bool,
}

/// Writes a batch in one transaction.
pub async fn apply(pool: &PgPool, batch: &Batch) -> Result<(), sqlx::Error> {
    apply_with(pool, batch, &[], false).await.map(|_| ())
}

/// Writes `batch` and the `held` rows of the previous write in one transaction.
///
/// With `defer`, the pending rows of the batch's own events are not written but returned, to be
/// passed as `held` to the next write: when their first attempt record arrives by then (it
/// usually does), the row is inserted once in its attempted state. The caller must not ack the
/// messages of a batch whose rows it holds until the write that takes them has committed.
pub async fn apply_with(
    pool: &PgPool,
    batch: &Batch,
    held: &[PendingRow],
    defer: bool,
) -> Result<Vec<PendingRow>, sqlx::Error> {
    let rows = PendingRows::sort(batch, held, defer);
    let mut tx = pool.begin().await?;
    let mut stats = StatsDelta::default();
    insert_events(&mut tx, &batch.events).await?;
    insert_pending(&mut tx, &rows.insert, &mut stats).await?;
    if !batch.attempts.is_empty() {
        insert_attempts(&mut tx, &batch.attempts, &mut stats).await?;
        // A manual attempt (redeliver, replay) that fails changes no delivery's state: a
        // delivery still retrying keeps its schedule, a failed one stays failed, a delivered one
        // keeps the response that delivered it. It updates the last response shown of the
        // others, the last attempt time, and the attempt count of a final delivery only: manual
        // attempts are numbered after the count, so raising it while the schedule runs would
        // make the scheduled attempts' records look old and ignored. The attempt is in
        // `attempts` above.
        let (manual_failures, rest): (Vec<&AttemptRecord>, Vec<&AttemptRecord>) = batch
            .attempts
            .iter()
            .partition(|r| r.trigger == Trigger::Manual && r.outcome != DeliveryStatus::Success);
        // One row per delivery per statement: fold each kind's records first.
        update_manual_failures(&mut tx, &latest_per_delivery(manual_failures)).await?;
        let attempted = latest_per_delivery(rest);
        upsert_attempted(&mut tx, &attempted, &rows.test_sends, &mut stats).await?;
    }
    abandon(&mut tx, &batch.abandoned, &mut stats).await?;
    stats.write(&mut tx).await?;
    tx.commit().await?;
    Ok(rows.deferred)
}

/// The pending rows of a write (the held ones and the batch's own), sorted by what becomes of
/// them.
struct PendingRows {
    /// Inserted `pending` by this write.
    insert: Vec<PendingRow>,
    /// Left to the next write.
    deferred: Vec<PendingRow>,
    /// Test sends among the rows the attempt upsert creates (the attempt record lacks the flag).
    test_sends: HashSet<Uuid>,
}

impl PendingRows {
    /// A delivery this batch attempts is written once, by the attempt upsert; of the others,
    /// the batch's own are deferred when `defer`, the held ones never.
    fn sort(batch: &Batch, held: &[PendingRow], defer: bool) -> Self {
        let attempted: HashSet<Uuid> = batch
            .attempts
            .iter()
            .map(|a| a.delivery.delivery_id)
            .collect();
        let mut rows = PendingRows {
            insert: Vec::new(),
            deferred: Vec::new(),
            test_sends: HashSet::new(),
        };
        let from_batch = batch.events.iter().flat_map(|e| {
            e.deliveries.iter().map(move |d| {
                let row = PendingRow {
                    delivery_id: d.delivery_id,
                    tenant_id: e.tenant_id,
                    event_id: e.event_id,
                    endpoint_id: d.endpoint_id,
                    event_type: e.event_type.clone(),
                    created_at: e.accepted_at,
                    test: e.test,
                };
                (row, defer)
            })
        });
        for (row, may_defer) in held.iter().map(|r| (r.clone(), false)).chain(from_batch) {
            if attempted.contains(&row.delivery_id) {
                if row.test {
                    rows.test_sends.insert(row.delivery_id);
                }
            } else if may_defer {
                rows.deferred.push(row);
            } else {
                rows.insert.push(row);
            }
        }
        rows
    }
}

/// A count or a latency as Postgres `int4`, saturated.
fn int4(v: u32) -> i32 {
    v.min(i32::MAX as u32) as i32
}

/// Inserts the events (an event seen before is left as it is).
async fn insert_events(
    tx: &mut sqlx::PgConnection,
    events: &[EventRecord],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO events (id, tenant_id, event_type, occurred_at, accepted_at, idempotency_key, payload, test)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[], $8::bool[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.tenant_id).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.accepted_at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.idempotency_key.as_deref()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.payload.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.test).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

/// Inserts delivery rows `pending`, counting those it created.
async fn insert_pending(
    tx: &mut sqlx::PgConnection,
    rows: &[PendingRow],
    stats: &mut StatsDelta,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let inserted: Vec<NewRow> = sqlx::query_as(
        "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, created_at, test)
         SELECT d.id, d.tenant_id, d.event_id, d.endpoint_id, d.event_type, 'pending', d.created_at, d.test
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[], $7::bool[])
              AS d (id, tenant_id, event_id, endpoint_id, event_type, created_at, test)
         ON CONFLICT (id) DO NOTHING
         RETURNING id, endpoint_id, tenant_id, test, created_at",
    )
    .bind(rows.iter().map(|d| d.delivery_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.tenant_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.endpoint_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.event_type.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|d| d.test).collect::<Vec<_>>())
    .fetch_all(tx)
    .await?;
    for row in inserted {
        stats.new_delivery(row);
    }
    Ok(())
}

/// Inserts the attempt records; the statistics count those inserted now (not seen before).
async fn insert_attempts(
    tx: &mut sqlx::PgConnection,
    a: &[AttemptRecord],
    stats: &mut StatsDelta,
) -> Result<(), sqlx::Error> {
    let inserted: HashSet<Uuid> = sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt, trigger, status,
             started_at, latency_ms, response_status, response_body, error, next_retry_at)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int4[], $6::text[],
             $7::text[], $8::timestamptz[], $9::int4[], $10::int4[], $11::text[], $12::text[], $13::timestamptz[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(a.iter().map(|r| r.attempt_id).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.delivery.delivery_id).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.delivery.tenant_id).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.delivery.endpoint_id).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.attempt as i32).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.trigger.as_str()).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.started_at).collect::<Vec<_>>())
    .bind(a.iter().map(|r| int4(r.latency_ms)).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.response_status.map(i32::from)).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.response_body.as_str()).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
    .bind(a.iter().map(|r| r.next_retry_at).collect::<Vec<_>>())
    .fetch_all(tx)
    .await?
    .into_iter()
    .collect();
    for r in a.iter().filter(|r| inserted.contains(&r.attempt_id)) {
        stats.attempt(r);
    }
    Ok(())
}

/// Shows failed manual attempts (one per delivery) on their deliveries without changing their
/// state: see [`apply_with`].
async fn update_manual_failures(
    tx: &mut sqlx::PgConnection,
    m: &[&AttemptRecord],
) -> Result<(), sqlx::Error> {
    if m.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE deliveries AS d SET attempt_count = CASE WHEN d.status IN ('failed', 'success')
                 THEN GREATEST(d.attempt_count, x.attempt) ELSE d.attempt_count END,
             response_status = CASE WHEN d.status = 'success'
                 THEN d.response_status ELSE x.response_status END,
             response_body = CASE WHEN d.status = 'success'
                 THEN d.response_body ELSE x.response_body END,
             last_error = CASE WHEN d.status = 'success' THEN d.last_error ELSE x.error END,
             latency_ms = CASE WHEN d.status = 'success' THEN d.latency_ms ELSE x.latency_ms END,
             last_attempt_at = GREATEST(d.last_attempt_at, x.started_at), updated_at = now()
         FROM UNNEST($1::uuid[], $2::int4[], $3::int4[], $4::text[], $5::text[],
              $6::int4[], $7::timestamptz[])
              AS x (id, attempt, response_status, response_body, error, latency_ms,
                    started_at)
         WHERE d.id = x.id AND x.attempt >= d.attempt_count",
    )
    .bind(m.iter().map(|r| r.delivery.delivery_id).collect::<Vec<_>>())
    .bind(m.iter().map(|r| r.attempt as i32).collect::<Vec<_>>())
    .bind(
        m.iter()
            .map(|r| r.response_status.map(i32::from))
            .collect::<Vec<_>>(),
    )
    .bind(
        m.iter()
            .map(|r| r.response_body.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(m.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
    .bind(m.iter().map(|r| int4(r.latency_ms)).collect::<Vec<_>>())
    .bind(m.iter().map(|r| r.started_at).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

/// Moves each attempted delivery (one record per delivery) forward to its attempt, creating
/// the row when the attempt overtook its event record; `test_sends` flags the rows it creates
/// for test sends.
async fn upsert_attempted(
    tx: &mut sqlx::PgConnection,
    rows: &[&AttemptRecord],
    test_sends: &HashSet<Uuid>,
    stats: &mut StatsDelta,
) -> Result<(), sqlx::Error> {
    let upserted: Vec<Upserted> = bind_keys(
    sqlx::query_as(
        "INSERT INTO deliveries AS d (id, tenant_id, event_id, endpoint_id, event_type, status,
             attempt_count, response_status, response_body, last_error, latency_ms, created_at,
             last_attempt_at, next_retry_at, test)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
             $7::int4[], $8::int4[], $9::text[], $10::text[], $11::int4[], $12::timestamptz[],
             $13::timestamptz[], $14::timestamptz[], $15::bool[])
         ON CONFLICT (id) DO UPDATE SET
             -- Once delivered, a delivery stays `success` (a manual re-send that fails
             -- is still in its attempts).
             status = CASE WHEN d.status = 'success' THEN 'success' ELSE EXCLUDED.status END,
             attempt_count = GREATEST(d.attempt_count, EXCLUDED.attempt_count),
             response_status = EXCLUDED.response_status,
             response_body = EXCLUDED.response_body,
             last_error = EXCLUDED.last_error,
             latency_ms = EXCLUDED.latency_ms,
             last_attempt_at = EXCLUDED.last_attempt_at,
             next_retry_at = EXCLUDED.next_retry_at,
             updated_at = now(),
             revision = d.revision + 1
         -- A later attempt wins; the same attempt again (a task executed twice) only
         -- while the delivery is not final; a success always.
         WHERE EXCLUDED.attempt_count > d.attempt_count
            OR (EXCLUDED.attempt_count = d.attempt_count
                AND d.status NOT IN ('success', 'failed'))
            OR (EXCLUDED.status = 'success' AND d.status <> 'success')
         RETURNING id, endpoint_id, tenant_id, test, created_at, (revision = 0) AS inserted",
    ),
    rows.iter().map(|r| &r.delivery),
)
    .bind(rows.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.attempt as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.response_status.map(i32::from)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.response_body.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| int4(r.latency_ms)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.delivery.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.started_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.next_retry_at).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.trigger == Trigger::Test || test_sends.contains(&r.delivery.delivery_id))
            .collect::<Vec<_>>(),
    )
    .fetch_all(tx)
    .await?;
    // Rows created here (an attempt that overtook its event record) are new deliveries.
    stats.upserted(upserted);
    Ok(())
}

/// A delivery upsert returning [`Upserted`] rows.
type UpsertQuery<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, Upserted, sqlx::postgres::PgArguments>;

/// Binds the delivery columns of records' keys: $1 to $5, the delivery, tenant, event and
/// endpoint ids and the event type.
fn bind_keys<'q>(
    q: UpsertQuery<'q>,
    keys: impl Iterator<Item = &'q DeliveryKey> + Clone,
) -> UpsertQuery<'q> {
    q.bind(keys.clone().map(|k| k.delivery_id).collect::<Vec<_>>())
        .bind(keys.clone().map(|k| k.tenant_id).collect::<Vec<_>>())
        .bind(keys.clone().map(|k| k.event_id).collect::<Vec<_>>())
        .bind(keys.clone().map(|k| k.endpoint_id).collect::<Vec<_>>())
        .bind(keys.map(|k| k.event_type.as_str()).collect::<Vec<_>>())
}

/// Ends abandoned deliveries `failed` (a delivered one stays delivered), creating the row when
/// the abandonment overtook its event record.
async fn abandon(
    tx: &mut sqlx::PgConnection,
    abandoned: &[AbandonedRecord],
    stats: &mut StatsDelta,
) -> Result<(), sqlx::Error> {
    if abandoned.is_empty() {
        return Ok(());
    }
    let mut seen = HashMap::new();
    for r in abandoned {
        seen.insert(r.delivery.delivery_id, r);
    }
    let rows: Vec<&AbandonedRecord> = seen.into_values().collect();
    let upserted: Vec<Upserted> = bind_keys(
        sqlx::query_as(
            "INSERT INTO deliveries AS d (id, tenant_id, event_id, endpoint_id, event_type, status,
             last_error, created_at, attempt_count)
         SELECT x.id, x.tenant_id, x.event_id, x.endpoint_id, x.event_type, 'failed', x.reason,
             x.created_at, x.attempts_before
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
              $7::timestamptz[], $8::int4[])
              AS x (id, tenant_id, event_id, endpoint_id, event_type, reason, created_at,
                    attempts_before)
         -- Final: the count covers every attempt made before, so none of their records,
         -- applied later, outranks it (a success still does).
         ON CONFLICT (id) DO UPDATE SET status = 'failed', last_error = EXCLUDED.last_error,
             next_retry_at = NULL,
             attempt_count = GREATEST(d.attempt_count, EXCLUDED.attempt_count),
             updated_at = now(), revision = d.revision + 1
         WHERE d.status <> 'success'
         RETURNING id, endpoint_id, tenant_id, test, created_at, (revision = 0) AS inserted",
        ),
        rows.iter().map(|r| &r.delivery),
    )
    .bind(rows.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.delivery.created_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| int4(r.attempts_before))
            .collect::<Vec<_>>(),
    )
    .fetch_all(tx)
    .await?;
    let at: HashMap<Uuid, DateTime<Utc>> = rows
        .iter()
        .map(|r| (r.delivery.delivery_id, r.at))
        .collect();
    stats.abandoned(upserted, &at);
    Ok(())
}

/// A delivery row a statement created.
#[derive(sqlx::FromRow)]
struct NewRow {
    id: Uuid,
    endpoint_id: Uuid,
    tenant_id: Uuid,
    test: bool,
    created_at: DateTime<Utc>,
}

/// A delivery row an upsert returned, and whether it created it.
#[derive(sqlx::FromRow)]
struct Upserted {
    #[sqlx(flatten)]
    row: NewRow,
    inserted: bool,
}

/// What one batch adds to the per-endpoint statistics.
#[derive(Default)]
struct StatsDelta {
    /// Endpoint → (tenant, new deliveries).
    deliveries: HashMap<Uuid, (Uuid, i64)>,
    /// Endpoint → latest attempt of the batch: (tenant, time, outcome).
    latest: HashMap<Uuid, (Uuid, DateTime<Utc>, &'static str)>,
    /// (endpoint, hour, bucket) → (attempts, successes).
    latency: HashMap<(Uuid, DateTime<Utc>, i16), (i64, i64)>,
}

impl StatsDelta {
    /// A delivery row created by this batch: counted, and the endpoint's latest status is
    /// `pending` unless something later (its own attempt, usually) is in the batch. Test sends
    /// are in the log, not in the statistics.
    fn new_delivery(&mut self, row: NewRow) {
        if row.test {
            return;
        }
        self.count(row.endpoint_id, row.tenant_id);
        self.latest_at(row.endpoint_id, row.tenant_id, row.created_at, "pending");
    }

    /// The rows of an attempt's upsert: those it created are new deliveries, counted, but not
    /// shown pending (their attempt is in the same batch).
    fn upserted(&mut self, rows: Vec<Upserted>) {
        for r in rows.into_iter().filter(|r| r.inserted && !r.row.test) {
            self.count(r.row.endpoint_id, r.row.tenant_id);
        }
    }

    /// The rows of an abandonment's upsert: those it created are counted, and each row it
    /// wrote ends the endpoint's latest status as failed at `at` of its record.
    fn abandoned(&mut self, rows: Vec<Upserted>, at: &HashMap<Uuid, DateTime<Utc>>) {
        for r in rows.into_iter().filter(|r| !r.row.test) {
            if r.inserted {
                self.count(r.row.endpoint_id, r.row.tenant_id);
            }
            let when = at.get(&r.row.id).copied().unwrap_or(r.row.created_at);
            self.latest_at(r.row.endpoint_id, r.row.tenant_id, when, "failed");
        }
    }

    fn count(&mut self, endpoint: Uuid, tenant: Uuid) {
        self.deliveries.entry(endpoint).or_insert((tenant, 0)).1 += 1;
    }

    fn latest_at(&mut self, endpoint: Uuid, tenant: Uuid, at: DateTime<Utc>, status: &'static str) {
        let newer = self
            .latest
            .get(&endpoint)
            .is_none_or(|(_, seen, _)| at >= *seen);
        if newer {
            self.latest.insert(endpoint, (tenant, at, status));
        }
    }

    fn attempt(&mut self, r: &AttemptRecord) {
        if r.trigger == Trigger::Test {
            return;
        }
        let endpoint = r.delivery.endpoint_id;
        // Never before its delivery's creation: that time comes from ingest's clock, this one
        // from a dispatcher's, and an attempt must not lose to its own `pending`.
        self.latest_at(
            endpoint,
            r.delivery.tenant_id,
            r.started_at.max(r.delivery.created_at),
            r.outcome.as_str(),
        );
        let hour = r
            .started_at
            .duration_trunc(chrono::TimeDelta::hours(1))
            .unwrap_or(r.started_at);
        let bucket = stats::bucket(r.latency_ms) as i16;
        let e = self.latency.entry((endpoint, hour, bucket)).or_default();
        e.0 += 1;
        if r.outcome == DeliveryStatus::Success {
            e.1 += 1;
        }
    }

    async fn write(self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        self.write_totals(tx).await?;
        self.write_latency(tx).await
    }

    /// Per endpoint: deliveries added, and the latest status with its time.
    async fn write_totals(&self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        let mut ids: Vec<Uuid> = self.deliveries.keys().copied().collect();
        ids.extend(
            self.latest
                .keys()
                .filter(|k| !self.deliveries.contains_key(k)),
        );
        if !ids.is_empty() {
            ids.sort();
            let tenants: Vec<Uuid> = ids
                .iter()
                .map(|id| {
                    self.deliveries
                        .get(id)
                        .map(|d| d.0)
                        .or_else(|| self.latest.get(id).map(|l| l.0))
                        .unwrap_or_default()
                })
                .collect();
            let added: Vec<i64> = ids
                .iter()
                .map(|id| self.deliveries.get(id).map_or(0, |d| d.1))
                .collect();
            let status: Vec<Option<&str>> = ids
                .iter()
                .map(|id| self.latest.get(id).map(|l| l.2))
                .collect();
            let at: Vec<Option<DateTime<Utc>>> = ids
                .iter()
                .map(|id| self.latest.get(id).map(|l| l.1))
                .collect();
            sqlx::query(
                "INSERT INTO endpoint_stats AS s (endpoint_id, tenant_id, total_deliveries, last_status, last_delivery_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::timestamptz[])
                 ON CONFLICT (endpoint_id) DO UPDATE SET
                     total_deliveries = s.total_deliveries + EXCLUDED.total_deliveries,
                     last_status = CASE
                         WHEN EXCLUDED.last_delivery_at IS NOT NULL AND (s.last_delivery_at IS NULL
                              OR EXCLUDED.last_delivery_at >= s.last_delivery_at)
                         THEN EXCLUDED.last_status ELSE s.last_status END,
                     last_delivery_at = GREATEST(s.last_delivery_at, EXCLUDED.last_delivery_at)",
            )
            .bind(&ids)
            .bind(&tenants)
            .bind(&added)
            .bind(&status)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// Per endpoint, hour and latency bucket: attempts and successes added.
    async fn write_latency(self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        if !self.latency.is_empty() {
            let mut rows: Vec<_> = self.latency.into_iter().collect();
            // A stable order keeps concurrent ledgers from deadlocking on these rows.
            rows.sort_by_key(|(k, _)| *k);
            sqlx::query(
                "INSERT INTO endpoint_latency AS l (endpoint_id, hour, bucket, attempts, successes)
                 SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::int2[], $4::int8[], $5::int8[])
                 ON CONFLICT (endpoint_id, hour, bucket) DO UPDATE SET
                     attempts = l.attempts + EXCLUDED.attempts,
                     successes = l.successes + EXCLUDED.successes",
            )
            .bind(rows.iter().map(|((e, _, _), _)| *e).collect::<Vec<_>>())
            .bind(rows.iter().map(|((_, h, _), _)| *h).collect::<Vec<_>>())
            .bind(rows.iter().map(|((_, _, b), _)| *b).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, (n, _))| *n).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, (_, ok))| *ok).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}
