//! Applying ledger records to Postgres, many at a time, idempotently.
//!
//! Every record is a fact with its own key (event id, attempt id), inserted with
//! `ON CONFLICT DO NOTHING`; the delivery row is a fold over those facts that only moves
//! forward (`success` is final; otherwise a later attempt number wins), so a record applied
//! twice, or an attempt record that overtakes its event record, converges to the same state.
//! One transaction per batch, multi-row `UNNEST` inserts: a few statements for hundreds of
//! records.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use herald_core::wire::{AbandonedRecord, AttemptRecord, DeliveryStatus, EventRecord, Record};
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
            Record::Attempt(a) => self.attempts.push(a),
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

fn rank(a: &AttemptRecord) -> (bool, u32, DateTime<Utc>) {
    (
        a.outcome == DeliveryStatus::Success,
        a.attempt,
        a.started_at,
    )
}

/// Writes a batch in one transaction.
pub async fn apply(pool: &PgPool, batch: &Batch) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;

    if !batch.events.is_empty() {
        let mut ids = Vec::new();
        let mut tenants = Vec::new();
        let mut types = Vec::new();
        let mut occurred = Vec::new();
        let mut accepted = Vec::new();
        let mut keys: Vec<Option<String>> = Vec::new();
        let mut payloads = Vec::new();
        let (mut d_ids, mut d_tenants, mut d_events, mut d_endpoints, mut d_types, mut d_created) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for e in &batch.events {
            ids.push(e.event_id);
            tenants.push(e.tenant_id);
            types.push(e.event_type.as_str());
            occurred.push(e.occurred_at);
            accepted.push(e.accepted_at);
            keys.push(e.idempotency_key.clone());
            payloads.push(e.payload.as_str());
            for d in &e.deliveries {
                d_ids.push(d.delivery_id);
                d_tenants.push(e.tenant_id);
                d_events.push(e.event_id);
                d_endpoints.push(d.endpoint_id);
                d_types.push(e.event_type.as_str());
                d_created.push(e.accepted_at);
            }
        }
        sqlx::query(
            "INSERT INTO events (id, tenant_id, event_type, occurred_at, accepted_at, idempotency_key, payload)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&tenants)
        .bind(&types)
        .bind(&occurred)
        .bind(&accepted)
        .bind(&keys)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
        if !d_ids.is_empty() {
            sqlx::query(
                "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, event_type, status, created_at)
                 SELECT d.id, d.tenant_id, d.event_id, d.endpoint_id, d.event_type, 'pending', d.created_at
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[])
                      AS d (id, tenant_id, event_id, endpoint_id, event_type, created_at)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&d_ids)
            .bind(&d_tenants)
            .bind(&d_events)
            .bind(&d_endpoints)
            .bind(&d_types)
            .bind(&d_created)
            .execute(&mut *tx)
            .await?;
        }
    }

    if !batch.attempts.is_empty() {
        let a = &batch.attempts;
        sqlx::query(
            "INSERT INTO attempts (id, delivery_id, tenant_id, endpoint_id, attempt, trigger, status,
                 started_at, latency_ms, response_status, response_body, error, next_retry_at)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int4[], $6::text[],
                 $7::text[], $8::timestamptz[], $9::int4[], $10::int4[], $11::text[], $12::text[], $13::timestamptz[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(a.iter().map(|r| r.attempt_id).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.delivery.delivery_id).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.delivery.tenant_id).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.delivery.endpoint_id).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.attempt as i32).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.trigger.as_str()).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.started_at).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.latency_ms.min(i32::MAX as u32) as i32).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.response_status.map(i32::from)).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.response_body.as_str()).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.next_retry_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;

        // One row per delivery per statement: fold this batch's attempts first.
        let mut latest: HashMap<Uuid, &AttemptRecord> = HashMap::new();
        for r in a {
            latest
                .entry(r.delivery.delivery_id)
                .and_modify(|cur| {
                    if rank(r) > rank(cur) {
                        *cur = r;
                    }
                })
                .or_insert(r);
        }
        let rows: Vec<&AttemptRecord> = latest.into_values().collect();
        sqlx::query(
            "INSERT INTO deliveries AS d (id, tenant_id, event_id, endpoint_id, event_type, status,
                 attempt_count, response_status, response_body, last_error, latency_ms, created_at,
                 last_attempt_at, next_retry_at)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                 $7::int4[], $8::int4[], $9::text[], $10::text[], $11::int4[], $12::timestamptz[],
                 $13::timestamptz[], $14::timestamptz[])
             ON CONFLICT (id) DO UPDATE SET
                 status = EXCLUDED.status,
                 attempt_count = GREATEST(d.attempt_count, EXCLUDED.attempt_count),
                 response_status = EXCLUDED.response_status,
                 response_body = EXCLUDED.response_body,
                 last_error = EXCLUDED.last_error,
                 latency_ms = EXCLUDED.latency_ms,
                 last_attempt_at = EXCLUDED.last_attempt_at,
                 next_retry_at = EXCLUDED.next_retry_at,
                 updated_at = now()
             WHERE d.status <> 'success'
               AND (EXCLUDED.status = 'success' OR EXCLUDED.attempt_count >= d.attempt_count)",
        )
        .bind(rows.iter().map(|r| r.delivery.delivery_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.tenant_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.endpoint_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.event_type.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.attempt as i32).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.response_status.map(i32::from)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.response_body.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.latency_ms.min(i32::MAX as u32) as i32).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.created_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.started_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.next_retry_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    if !batch.abandoned.is_empty() {
        let mut seen = HashMap::new();
        for r in &batch.abandoned {
            seen.insert(r.delivery.delivery_id, r);
        }
        let rows: Vec<&AbandonedRecord> = seen.into_values().collect();
        sqlx::query(
            "INSERT INTO deliveries AS d (id, tenant_id, event_id, endpoint_id, event_type, status,
                 last_error, created_at)
             SELECT x.id, x.tenant_id, x.event_id, x.endpoint_id, x.event_type, 'failed', x.reason, x.created_at
             FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::timestamptz[])
                  AS x (id, tenant_id, event_id, endpoint_id, event_type, reason, created_at)
             ON CONFLICT (id) DO UPDATE SET status = 'failed', last_error = EXCLUDED.last_error,
                 next_retry_at = NULL, updated_at = now()
             WHERE d.status <> 'success'",
        )
        .bind(rows.iter().map(|r| r.delivery.delivery_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.tenant_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.event_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.endpoint_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.event_type.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.delivery.created_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
