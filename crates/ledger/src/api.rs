//! The Deliveries service: the delivery log, per tenant.

use chrono::{DateTime, Utc};
use herald_broker::{Outgoing, Publisher};
use herald_core::wire::{DeliveryTask, Trigger, VERSION};
use herald_proto::v1 as pb;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::{Error, Result, parse_id};
use crate::retention::first_id_at;

mod replay;
mod series;

/// Most deliveries one ReplayEndpoint call queues.
pub const MAX_REPLAY: u32 = 10_000;

pub struct DeliveriesApi {
    pub pool: PgPool,
    /// Checks a call's API key when [`crate::auth`] has not already.
    pub auth: crate::auth::TenantKey,
    /// Publishes manual attempts (Redeliver, ReplayEndpoint) to the work exchange.
    pub publisher: Publisher,
    /// Re-send limits: the tenant's publish rate, replays at once.
    pub budget: crate::budget::Budget,
    /// Deliveries a replay reads and publishes at a time (`HERALD_REPLAY_PAGE`).
    pub replay_page: u32,
    /// Deliveries per second one replay sends at most (`HERALD_REPLAY_RATE`; 0: unpaced).
    pub replay_rate: u32,
}

fn from_ts(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
        .ok_or_else(|| Error::InvalidArgument(format!("{field} is out of range")))
}

/// `[since, until)`, each bound optional.
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A request's time range; refused when since is not before until.
fn time_range(
    since: Option<&prost_types::Timestamp>,
    until: Option<&prost_types::Timestamp>,
) -> Result<TimeRange> {
    let since = since.map(|t| from_ts("since", t)).transpose()?;
    let until = until.map(|t| from_ts("until", t)).transpose()?;
    if let (Some(a), Some(b)) = (since, until)
        && a >= b
    {
        return Err(Error::InvalidArgument("since must be before until".into()));
    }
    Ok((since, until))
}

pub(crate) fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn status_from_pb(v: i32) -> Result<Option<&'static str>> {
    match pb::DeliveryStatus::try_from(v) {
        Ok(pb::DeliveryStatus::Unspecified) => Ok(None),
        Ok(pb::DeliveryStatus::Pending) => Ok(Some("pending")),
        Ok(pb::DeliveryStatus::Success) => Ok(Some("success")),
        Ok(pb::DeliveryStatus::Retrying) => Ok(Some("retrying")),
        Ok(pb::DeliveryStatus::Failed) => Ok(Some("failed")),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown status {v}: use pending, success, retrying or failed"
        ))),
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
    test: bool,
}

impl From<DeliveryRow> for pb::Delivery {
    fn from(r: DeliveryRow) -> Self {
        pb::Delivery {
            id: r.id.to_string(),
            event_id: r.event_id.to_string(),
            endpoint_id: r.endpoint_id.to_string(),
            event_type: r.event_type,
            status: pb::DeliveryStatus::from_stored(&r.status) as i32,
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
            test: r.test,
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

/// The column to filter a delivery status on: `retrying` and `failed` through `problem` (their
/// copy, NULL otherwise, behind partial indexes), the others on `status` itself. No index holds
/// `status`, so the usual pending -> success update stays in place (migration 0007).
fn status_column(status: &str) -> &'static str {
    match status {
        "retrying" | "failed" => "problem",
        _ => "status",
    }
}

const DELIVERY_COLUMNS: &str =
    "id, event_id, endpoint_id, event_type, status, attempt_count, response_status,
    response_body, last_error, latency_ms, created_at, last_attempt_at, next_retry_at, test";

impl DeliveriesApi {
    /// The calling tenant, if its credential has `scope`: the credential [`crate::auth`]
    /// found before the message was read, else checked here.
    async fn tenant<T>(&self, req: &Request<T>, scope: herald_store::Scope) -> Result<Uuid> {
        let principal = match req.extensions().get() {
            Some(crate::auth::Authenticated(p)) => *p,
            None => {
                let auth = req
                    .metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                self.auth.principal(auth).await?
            }
        };
        Ok(principal.require(scope)?.tenant)
    }
}

/// What `ListDeliveries` filters on: each filter given, none for the others.
struct LogFilter<'a> {
    endpoint: Option<Uuid>,
    event: Option<Uuid>,
    status: Option<&'static str>,
    event_type: Option<&'a str>,
    /// Ids below this one: the cursor or `until`, whichever is smaller (both are exclusive).
    before: Option<Uuid>,
    since: Option<Uuid>,
}

impl<'a> LogFilter<'a> {
    fn from_request(r: &'a pb::ListDeliveriesRequest) -> Result<Self> {
        let id = |field, v: Option<&str>| v.map(|v| parse_id(field, v)).transpose();
        let cursor = id("cursor", Some(r.cursor.as_str()).filter(|c| !c.is_empty()))?;
        let (since, until) = time_range(r.since.as_ref(), r.until.as_ref())?;
        let event_type = r.event_type.as_deref().filter(|t| !t.is_empty());
        if let Some(t) = event_type {
            // An exact type: a pattern (`invoice.*`) or a malformed name would match nothing.
            herald_core::matching::validate_event_type(t)
                .map_err(|e| Error::InvalidArgument(format!("event_type: {e}")))?;
        }
        Ok(LogFilter {
            endpoint: id("endpoint_id", r.endpoint_id.as_deref())?,
            event: id("event_id", r.event_id.as_deref())?,
            status: status_from_pb(r.status)?,
            event_type,
            before: match (cursor, until.map(first_id_at)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            since: since.map(first_id_at),
        })
    }

    /// A page's query, newest first, with only the filters given: each query then has a plan
    /// made for it (the indexes it can use), not one generic plan for every combination. It
    /// reads one row past the page ([`next_page`]).
    fn query(&self, tenant: Uuid, limit: u32) -> sqlx::QueryBuilder<sqlx::Postgres> {
        let mut q = sqlx::QueryBuilder::new(format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = "
        ));
        q.push_bind(tenant);
        if let Some(endpoint) = self.endpoint {
            q.push(" AND endpoint_id = ").push_bind(endpoint);
        }
        if let Some(event) = self.event {
            q.push(" AND event_id = ").push_bind(event);
        }
        if let Some(status) = self.status {
            q.push(format_args!(" AND {} = ", status_column(status)))
                .push_bind(status);
        }
        if let Some(event_type) = self.event_type {
            q.push(" AND event_type = ").push_bind(event_type);
        }
        if let Some(before) = self.before {
            q.push(" AND id < ").push_bind(before);
        }
        if let Some(since) = self.since {
            q.push(" AND id >= ").push_bind(since);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        q
    }
}

/// Cuts `rows`, read one past a page of `limit` (that row tells whether another page exists),
/// to the page; answers the next page's cursor, the last row's id, empty on the last page (even
/// when it is full).
pub(crate) fn next_page<T>(rows: &mut Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> String {
    if rows.len() as u32 <= limit {
        return String::new();
    }
    rows.truncate(limit as usize);
    rows.last().map(|r| id(r).to_string()).unwrap_or_default()
}

impl DeliveriesApi {
    async fn list(
        &self,
        tenant: Uuid,
        r: pb::ListDeliveriesRequest,
    ) -> Result<pb::ListDeliveriesResponse> {
        let limit = match r.page_size {
            0 => 50,
            n => n.min(500),
        };
        let filter = LogFilter::from_request(&r)?;
        let mut rows: Vec<DeliveryRow> = filter
            .query(tenant, limit)
            .build_query_as()
            .fetch_all(&self.pool)
            .await?;
        let next_cursor = next_page(&mut rows, limit, |d| d.id);
        Ok(pb::ListDeliveriesResponse {
            deliveries: rows.into_iter().map(pb::Delivery::from).collect(),
            next_cursor,
        })
    }

    async fn get(
        &self,
        tenant: Uuid,
        r: pb::GetDeliveryRequest,
    ) -> Result<pb::GetDeliveryResponse> {
        let id = parse_id("id", &r.id)?;
        let after = match r.attempts_cursor.trim() {
            "" => None,
            c => Some(parse_id("attempts_cursor", c)?),
        };
        let limit = match r.attempts_page_size {
            0 => 100,
            n => n.min(500),
        };
        let sql =
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1 AND tenant_id = $2");
        let delivery: DeliveryRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("delivery"))?;
        let (attempts, next_attempts_cursor) = self.attempts_page(tenant, id, after, limit).await?;
        // Gone once payload retention removed the event.
        let payload: Option<String> =
            sqlx::query_scalar("SELECT payload FROM events WHERE id = $1 AND tenant_id = $2")
                .bind(delivery.event_id)
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        Ok(pb::GetDeliveryResponse {
            delivery: Some(delivery.into()),
            payload_available: payload.is_some(),
            payload: payload.map(String::into_bytes).unwrap_or_default(),
            next_attempts_cursor,
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
                    status: pb::DeliveryStatus::from_stored(&a.status) as i32,
                })
                .collect(),
        })
    }

    async fn recent_activity(
        &self,
        tenant: Uuid,
        r: pb::ListRecentActivityRequest,
    ) -> Result<pb::ListRecentActivityResponse> {
        let limit = match r.limit {
            0 => 10,
            n => n.min(100),
        };
        let rows: Vec<ActivityRow> = sqlx::query_as(
            "SELECT d.id, d.event_id, d.event_type, d.endpoint_id, e.url, d.status,
                    d.response_status, d.attempt_count, COALESCE(d.last_attempt_at, d.created_at) AS at,
                    d.test
             FROM deliveries d LEFT JOIN endpoints e ON e.id = d.endpoint_id AND e.tenant_id = d.tenant_id
             WHERE d.tenant_id = $1
             ORDER BY d.id DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(pb::ListRecentActivityResponse {
            items: rows
                .into_iter()
                .map(|r| pb::ActivityItem {
                    delivery_id: r.id.to_string(),
                    event_id: r.event_id.to_string(),
                    event_type: r.event_type,
                    endpoint_id: r.endpoint_id.to_string(),
                    endpoint_url: r.url.unwrap_or_default(),
                    status: pb::DeliveryStatus::from_stored(&r.status) as i32,
                    response_status: r.response_status.unwrap_or(0).max(0) as u32,
                    attempt_count: r.attempt_count.max(0) as u32,
                    at: Some(ts(r.at)),
                    test: r.test,
                })
                .collect(),
        })
    }

    async fn resend(&self, tenant: Uuid, r: pb::RedeliverRequest) -> Result<pb::RedeliverResponse> {
        let id = parse_id("delivery_id", &r.delivery_id)?;
        let row: ReplayRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{REPLAY_SELECT} WHERE d.id = $1 AND d.tenant_id = $2"
        )))
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::NotFound("delivery"))?;
        let rate = self.check_endpoint(tenant, row.endpoint_id).await?;
        self.budget
            .take(tenant, rate, 1)
            .await
            .map_err(|wait| crate::budget::rate_limited(rate, wait))?;
        let attempt = row.attempt_count.max(0) as u32 + 1;
        let message = self.manual_task(row)?;
        self.publisher
            .publish(&[message])
            .await
            .map_err(|source| Error::Broker {
                message: "the message broker is unavailable, retry later".into(),
                source,
            })?;
        tracing::info!(tenant_id = %tenant, delivery_id = %id, attempt, "manual redelivery queued");
        Ok(pb::RedeliverResponse {
            delivery_id: id.to_string(),
            attempt,
        })
    }

    async fn replay_call(
        &self,
        tenant: Uuid,
        r: pb::ReplayEndpointRequest,
    ) -> Result<pb::ReplayEndpointResponse> {
        let endpoint = parse_id("endpoint_id", &r.endpoint_id)?;
        let status = status_from_pb(r.status)?.unwrap_or("failed");
        let (since, until) = time_range(r.since.as_ref(), r.until.as_ref())?;
        // Clamped like every page size: a larger limit replays the first 10,000 and says
        // `truncated`, the cursor going on from there.
        let limit = if r.limit == 0 {
            MAX_REPLAY
        } else {
            r.limit.min(MAX_REPLAY)
        };
        let after = match r.after_delivery_id.trim() {
            "" => None,
            id => Some(parse_id("after_delivery_id", id)?),
        };
        let rate = self.check_endpoint(tenant, endpoint).await?;
        let mut lease = self.budget.lease_replay(tenant).await?;
        let replay = replay::Replay {
            tenant,
            endpoint,
            status,
            since: since.map(first_id_at),
            until: until.map(first_id_at),
            after,
            limit,
            rate,
        };
        let out = self.replay(replay, &mut lease).await?;
        tracing::info!(tenant_id = %tenant, endpoint_id = %endpoint, queued = out.queued, skipped = out.skipped, truncated = out.truncated, "replay queued");
        Ok(out)
    }
}

#[tonic::async_trait]
impl pb::deliveries_server::Deliveries for DeliveriesApi {
    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let tenant = self
            .tenant(&req, herald_store::Scope::DeliveriesRead)
            .await?;
        Ok(Response::new(self.list(tenant, req.into_inner()).await?))
    }

    async fn get_delivery(
        &self,
        req: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        let tenant = self
            .tenant(&req, herald_store::Scope::DeliveriesRead)
            .await?;
        Ok(Response::new(self.get(tenant, req.into_inner()).await?))
    }

    async fn list_recent_activity(
        &self,
        req: Request<pb::ListRecentActivityRequest>,
    ) -> Result<Response<pb::ListRecentActivityResponse>, Status> {
        let tenant = self
            .tenant(&req, herald_store::Scope::DeliveriesRead)
            .await?;
        Ok(Response::new(
            self.recent_activity(tenant, req.into_inner()).await?,
        ))
    }

    async fn redeliver(
        &self,
        req: Request<pb::RedeliverRequest>,
    ) -> Result<Response<pb::RedeliverResponse>, Status> {
        let tenant = self
            .tenant(&req, herald_store::Scope::DeliveriesResend)
            .await?;
        Ok(Response::new(self.resend(tenant, req.into_inner()).await?))
    }

    async fn replay_endpoint(
        &self,
        req: Request<pb::ReplayEndpointRequest>,
    ) -> Result<Response<pb::ReplayEndpointResponse>, Status> {
        let tenant = self
            .tenant(&req, herald_store::Scope::DeliveriesResend)
            .await?;
        Ok(Response::new(
            self.replay_call(tenant, req.into_inner()).await?,
        ))
    }

    async fn get_endpoint_stats_series(
        &self,
        req: Request<pb::GetEndpointStatsSeriesRequest>,
    ) -> Result<Response<pb::GetEndpointStatsSeriesResponse>, Status> {
        let tenant = self
            .tenant(&req, herald_store::Scope::DeliveriesRead)
            .await?;
        Ok(Response::new(
            self.stats_series(tenant, req.into_inner()).await?,
        ))
    }
}

#[derive(sqlx::FromRow)]
struct ActivityRow {
    id: Uuid,
    event_id: Uuid,
    event_type: String,
    endpoint_id: Uuid,
    url: Option<String>,
    status: String,
    response_status: Option<i32>,
    attempt_count: i32,
    at: DateTime<Utc>,
    test: bool,
}

/// A delivery with what a new attempt of it needs.
#[derive(sqlx::FromRow)]
struct ReplayRow {
    id: Uuid,
    event_id: Uuid,
    tenant_id: Uuid,
    endpoint_id: Uuid,
    event_type: String,
    attempt_count: i32,
    created_at: DateTime<Utc>,
    payload: Option<String>,
}

/// `attempt_count` here is the highest attempt number used so far: a manual attempt on a
/// delivery that already succeeded does not raise the delivery's count, and the next manual
/// attempt must still get a number of its own.
const REPLAY_SELECT: &str = "SELECT d.id, d.event_id, d.tenant_id, d.endpoint_id, d.event_type,
        GREATEST(d.attempt_count,
                 (SELECT max(a.attempt) FROM attempts a
                  WHERE a.delivery_id = d.id
                    AND a.id >= ledger_id_at(d.created_at - interval '1 hour'))) AS attempt_count,
        d.created_at, e.payload
     FROM deliveries d LEFT JOIN events e ON e.id = d.event_id";

/// The smallest id an attempt of `delivery` can have: attempts come after their delivery
/// (an hour of margin for clocks that disagree), so reading them skips the ledger's older
/// partitions.
fn attempts_from(delivery: Uuid) -> Uuid {
    let created = herald_core::wire::uuid_time(delivery).unwrap_or_default();
    first_id_at(created - chrono::Duration::hours(1))
}

impl DeliveriesApi {
    /// One page of a delivery's attempts, oldest first, after the attempt `after` (a cursor
    /// this call returned), and the cursor of the next page (empty on the last). A delivery
    /// re-sent many times by hand has as many attempts: they are read a page at a time.
    async fn attempts_page(
        &self,
        tenant: Uuid,
        delivery: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<(Vec<AttemptRow>, String)> {
        // One row past the page: see `next_page`.
        let mut rows: Vec<AttemptRow> = sqlx::query_as(
            "SELECT id, attempt, started_at, response_status, response_body, error, latency_ms, trigger, status
             FROM attempts
             WHERE delivery_id = $1 AND tenant_id = $2 AND id >= $5
               AND ($3::uuid IS NULL OR (started_at, attempt, id) >
                   (SELECT started_at, attempt, id FROM attempts
                    WHERE id = $3 AND delivery_id = $1 AND tenant_id = $2))
             ORDER BY started_at, attempt, id LIMIT $4",
        )
        .bind(delivery)
        .bind(tenant)
        .bind(after)
        .bind(i64::from(limit) + 1)
        .bind(attempts_from(delivery))
        .fetch_all(&self.pool)
        .await?;
        let next = next_page(&mut rows, limit, |a| a.id);
        Ok((rows, next))
    }

    /// A manual attempt must go to an endpoint that still exists and is enabled. Answers the
    /// tenant's publish rate, which re-sends count against (0: unlimited).
    async fn check_endpoint(&self, tenant: Uuid, endpoint: Uuid) -> Result<u32> {
        let found: Option<(bool, Option<i32>)> = sqlx::query_as(
            "SELECT e.enabled, t.publish_rate_limit
             FROM endpoints e JOIN tenants t ON t.id = e.tenant_id
             WHERE e.id = $1 AND e.tenant_id = $2",
        )
        .bind(endpoint)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        match found {
            None => Err(Error::NotFound("endpoint")),
            Some((false, _)) => Err(Error::FailedPrecondition(
                "the endpoint is disabled: enable it before re-sending deliveries".into(),
            )),
            Some((true, rate)) => Ok(self.budget.rate(rate)),
        }
    }

    /// The work-queue message of one manual attempt (one attempt, no retries).
    fn manual_task(&self, r: ReplayRow) -> Result<Outgoing> {
        let payload = r.payload.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "the event of delivery {} is not in the ledger (not yet written, or removed by payload retention)",
                r.id
            ))
        })?;
        let task = DeliveryTask {
            v: VERSION,
            delivery_id: r.id,
            event_id: r.event_id,
            tenant_id: r.tenant_id,
            endpoint_id: r.endpoint_id,
            event_type: r.event_type,
            attempt: r.attempt_count.max(0) as u32 + 1,
            tiers: None,
            due: None,
            rest_ms: None,
            parked: None,
            turn: None,
            trigger: Trigger::Manual,
            created_at: r.created_at,
            payload: payload.into_bytes(),
        };
        // A re-send is no fresh delivery: it takes the shard's queue of returning tasks, so a
        // tenant's replay of thousands never stands in front of fresh deliveries on its shard.
        Ok(self.publisher.topology().again_message(
            task.tenant_id,
            task.encode(),
            herald_telemetry::trace_headers(),
        ))
    }
}
