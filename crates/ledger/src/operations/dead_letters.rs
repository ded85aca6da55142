//! Dead letters for the operator: listed newest first (keyset on the id, a UUIDv7, so pages
//! stay stable while new letters arrive), one read with its body, and sent back through
//! [`crate::deadletter::replay`], the path `herald-ledger dead-letters replay` takes.
//!
//! A list leaves the bodies out (up to 64 KiB each, 500 of them would pass any client's message
//! limit); `GetDeadLetter` has the body.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use herald_proto::v1 as pb;
use sqlx::types::Json;
use uuid::Uuid;

use super::OperationsApi;
use crate::api::ts;
use crate::deadletter::{Selection, replay};
use crate::error::{Error, Result, parse_id};

/// Most ids one `ReplayDeadLetters` call takes.
pub const MAX_REPLAY_IDS: usize = 1_000;

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    queue: String,
    reason: String,
    tenant_id: Option<Uuid>,
    delivery_id: Option<Uuid>,
    endpoint_id: Option<Uuid>,
    event_id: Option<Uuid>,
    error: Option<String>,
    headers: Json<HashMap<String, String>>,
    body: Vec<u8>,
    body_bytes: i32,
    dead_lettered_at: DateTime<Utc>,
    replayed_at: Option<DateTime<Utc>>,
}

impl From<Row> for pb::DeadLetter {
    fn from(r: Row) -> Self {
        let id = |v: Option<Uuid>| v.map(|v| v.to_string()).unwrap_or_default();
        pb::DeadLetter {
            id: r.id.to_string(),
            queue: r.queue,
            reason: r.reason,
            tenant_id: id(r.tenant_id),
            delivery_id: id(r.delivery_id),
            endpoint_id: id(r.endpoint_id),
            event_id: id(r.event_id),
            error: r.error.unwrap_or_default(),
            headers: r.headers.0,
            body: r.body,
            body_bytes: r.body_bytes.max(0) as u32,
            dead_lettered_at: Some(ts(r.dead_lettered_at)),
            replayed_at: r.replayed_at.map(ts),
        }
    }
}

/// Every column but the body, which each query adds (or not).
const COLUMNS: &str = "id, queue, reason, tenant_id, delivery_id, endpoint_id, event_id, error,
    headers, body_bytes, dead_lettered_at, replayed_at";

impl OperationsApi {
    pub(super) async fn list_dead_letters(
        &self,
        r: pb::ListDeadLettersRequest,
    ) -> Result<pb::ListDeadLettersResponse> {
        let limit = match r.page_size {
            0 => 50,
            n => n.min(500),
        };
        let tenant = match r.tenant_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) => Some(parse_id("tenant_id", t)?),
        };
        let before = match r.cursor.trim() {
            "" => None,
            c => Some(parse_id("cursor", c)?),
        };
        let mut q = sqlx::QueryBuilder::new(format!(
            "SELECT {COLUMNS}, ''::bytea AS body FROM dead_letters WHERE true"
        ));
        if let Some(tenant) = tenant {
            q.push(" AND tenant_id = ").push_bind(tenant);
        }
        if !r.include_replayed {
            q.push(" AND replayed_at IS NULL");
        }
        if let Some(before) = before {
            q.push(" AND id < ").push_bind(before);
        }
        // One row past the page tells whether another page exists.
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let mut rows: Vec<Row> = q.build_query_as().fetch_all(&self.pool).await?;
        let next_cursor = crate::api::next_page(&mut rows, limit, |r| r.id);
        Ok(pb::ListDeadLettersResponse {
            dead_letters: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })
    }

    pub(super) async fn get_dead_letter(
        &self,
        r: pb::GetDeadLetterRequest,
    ) -> Result<pb::DeadLetter> {
        let id = parse_id("id", &r.id)?;
        let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, body FROM dead_letters WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::NotFound("dead letter"))?;
        Ok(row.into())
    }

    pub(super) async fn replay_dead_letters(
        &self,
        r: pb::ReplayDeadLettersRequest,
    ) -> Result<pb::ReplayDeadLettersResponse> {
        if r.ids.is_empty() || r.ids.len() > MAX_REPLAY_IDS {
            return Err(Error::InvalidArgument(format!(
                "ids: give 1 to {MAX_REPLAY_IDS} dead letter ids, got {}",
                r.ids.len()
            )));
        }
        let mut ids = r
            .ids
            .iter()
            .map(|id| parse_id("ids", id))
            .collect::<Result<Vec<_>>>()?;
        ids.sort_unstable();
        ids.dedup();
        let known: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&self.pool)
            .await?;
        if known != ids.len() as i64 {
            return Err(Error::NotFound("dead letter"));
        }
        let report = replay(&self.pool, &self.publisher, Selection::Ids(&ids)).await?;
        let replayed = report.replayed as u32;
        tracing::info!(
            replayed,
            truncated = report.truncated,
            unreadable = report.unreadable,
            "dead letters replayed by the operator"
        );
        Ok(pb::ReplayDeadLettersResponse {
            replayed,
            skipped: ids.len() as u32 - replayed,
        })
    }
}
