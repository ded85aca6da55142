//! The Deliveries service: the delivery log, per tenant.

use chrono::{DateTime, Utc};
use herald_core::wire::DeliveryStatus;
use herald_proto::v1 as pb;
use herald_store::{KeyCache, KeyCheck};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct DeliveriesApi {
    pub pool: PgPool,
    pub keys: KeyCache,
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn status_to_pb(s: &str) -> i32 {
    (match DeliveryStatus::parse(s) {
        Some(DeliveryStatus::Pending) => pb::DeliveryStatus::Pending,
        Some(DeliveryStatus::Success) => pb::DeliveryStatus::Success,
        Some(DeliveryStatus::Retrying) => pb::DeliveryStatus::Retrying,
        Some(DeliveryStatus::Failed) => pb::DeliveryStatus::Failed,
        None => pb::DeliveryStatus::Unspecified,
    }) as i32
}

fn status_from_pb(v: i32) -> Result<Option<&'static str>, Status> {
    match pb::DeliveryStatus::try_from(v) {
        Ok(pb::DeliveryStatus::Unspecified) => Ok(None),
        Ok(pb::DeliveryStatus::Pending) => Ok(Some("pending")),
        Ok(pb::DeliveryStatus::Success) => Ok(Some("success")),
        Ok(pb::DeliveryStatus::Retrying) => Ok(Some("retrying")),
        Ok(pb::DeliveryStatus::Failed) => Ok(Some("failed")),
        Err(_) => Err(Status::invalid_argument(format!("unknown status {v}"))),
    }
}

fn parse_id(field: &str, v: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(v.trim())
        .map_err(|_| Status::invalid_argument(format!("{field} {v:?} is not a valid id (UUID)")))
}

fn db_err(e: sqlx::Error) -> Status {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            Status::unavailable("ledger database unavailable, retry later")
        }
        e => {
            tracing::error!(error = %e, "ledger query failed");
            Status::internal("internal error")
        }
    }
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Uuid,
    event_id: Uuid,
    endpoint_id: Uuid,
    event_type: String,
    status: String,
    attempt_count: i32,
    response_status: Option<i32>,
    response_body: String,
    last_error: Option<String>,
    latency_ms: Option<i32>,
    created_at: DateTime<Utc>,
    last_attempt_at: Option<DateTime<Utc>>,
    next_retry_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRow> for pb::Delivery {
    fn from(r: DeliveryRow) -> Self {
        pb::Delivery {
            id: r.id.to_string(),
            event_id: r.event_id.to_string(),
            endpoint_id: r.endpoint_id.to_string(),
            event_type: r.event_type,
            status: status_to_pb(&r.status),
            attempt_count: r.attempt_count.max(0) as u32,
            response_status: r.response_status.unwrap_or(0).max(0) as u32,
            response_body: r.response_body,
            last_error: r.last_error.unwrap_or_default(),
            created_at: Some(ts(r.created_at)),
            last_attempt_at: r.last_attempt_at.map(ts),
            // Only a delivery that is still retrying has a next retry.
            next_retry_at: if r.status == "retrying" {
                r.next_retry_at.map(ts)
            } else {
                None
            },
            latency_ms: r.latency_ms.unwrap_or(0).max(0) as u32,
        }
    }
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    id: Uuid,
    attempt: i32,
    started_at: DateTime<Utc>,
    response_status: Option<i32>,
    response_body: String,
    error: Option<String>,
    latency_ms: i32,
    trigger: String,
    status: String,
}

const DELIVERY_COLUMNS: &str =
    "id, event_id, endpoint_id, event_type, status, attempt_count, response_status,
    response_body, last_error, latency_ms, created_at, last_attempt_at, next_retry_at";

impl DeliveriesApi {
    async fn tenant<T>(&self, req: &Request<T>) -> Result<Uuid, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.keys.check(auth).await {
            Ok(KeyCheck::Tenant(t)) => Ok(t),
            Ok(KeyCheck::Missing) => Err(Status::unauthenticated(
                "missing API key: send \"authorization: Bearer <key>\"",
            )),
            Ok(KeyCheck::Invalid) => Err(Status::unauthenticated("invalid or revoked API key")),
            Err(e) if e.is_unavailable() => {
                Err(Status::unavailable("database unavailable, retry later"))
            }
            Err(e) => {
                tracing::error!(error = %e, "api key check failed");
                Err(Status::internal("internal error"))
            }
        }
    }
}

#[tonic::async_trait]
impl pb::deliveries_server::Deliveries for DeliveriesApi {
    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let r = req.into_inner();
        let endpoint = r
            .endpoint_id
            .as_deref()
            .map(|v| parse_id("endpoint_id", v))
            .transpose()?;
        let event = r
            .event_id
            .as_deref()
            .map(|v| parse_id("event_id", v))
            .transpose()?;
        let status = status_from_pb(r.status)?;
        let before = if r.cursor.is_empty() {
            None
        } else {
            Some(parse_id("cursor", &r.cursor)?)
        };
        let limit = match r.page_size {
            0 => 50,
            n => n.min(500),
        };
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE tenant_id = $1
               AND ($2::uuid IS NULL OR endpoint_id = $2)
               AND ($3::uuid IS NULL OR event_id = $3)
               AND ($4::text IS NULL OR status = $4)
               AND ($5::text IS NULL OR event_type = $5)
               AND ($6::uuid IS NULL OR id < $6)
             ORDER BY id DESC LIMIT $7"
        );
        let rows: Vec<DeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(endpoint)
            .bind(event)
            .bind(status)
            .bind(r.event_type.as_deref())
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let next_cursor = if rows.len() as u32 == limit {
            rows.last().map(|d| d.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: rows.into_iter().map(pb::Delivery::from).collect(),
            next_cursor,
        }))
    }

    async fn get_delivery(
        &self,
        req: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        let tenant = self.tenant(&req).await?;
        let id = parse_id("id", &req.get_ref().id)?;
        let sql =
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1 AND tenant_id = $2");
        let delivery: DeliveryRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .ok_or_else(|| Status::not_found("delivery not found"))?;
        let attempts: Vec<AttemptRow> = sqlx::query_as(
            "SELECT id, attempt, started_at, response_status, response_body, error, latency_ms, trigger, status
             FROM attempts WHERE delivery_id = $1 AND tenant_id = $2 ORDER BY started_at, attempt",
        )
        .bind(id)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(Response::new(pb::GetDeliveryResponse {
            delivery: Some(delivery.into()),
            attempts: attempts
                .into_iter()
                .map(|a| pb::Attempt {
                    id: a.id.to_string(),
                    attempt: a.attempt.max(0) as u32,
                    started_at: Some(ts(a.started_at)),
                    response_status: a.response_status.unwrap_or(0).max(0) as u32,
                    response_body: a.response_body,
                    error: a.error.unwrap_or_default(),
                    latency_ms: a.latency_ms.max(0) as u32,
                    trigger: a.trigger,
                    status: status_to_pb(&a.status),
                })
                .collect(),
        }))
    }
}
