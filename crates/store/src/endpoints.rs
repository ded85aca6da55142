//! Endpoints: where a tenant's deliveries go, how they are signed and retried.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use herald_core::secretbox::{Keyring, Sealed};
use herald_core::signing::{Scheme, Secret};
use uuid::Uuid;

use crate::{Error, Result, Store};

/// An endpoint as stored (secrets included: callers decide what to show).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub scheme: Scheme,
    pub secret: Secret,
    /// The secret being rotated out and when it stops being used.
    pub previous_secret: Option<(Secret, DateTime<Utc>)>,
    pub timeout_ms: u32,
    /// `None`: the server default.
    pub retry_schedule_ms: Option<Vec<u32>>,
    pub headers: BTreeMap<String, String>,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The owning tenant's header prefix and User-Agent (joined in for the dispatcher).
    pub header_prefix: String,
    pub user_agent: String,
    /// Payload filter as stored (validated at write time).
    pub filter: Option<serde_json::Value>,
    /// Deliveries per second across all dispatchers; 0: unlimited.
    pub rate_limit_per_second: u32,
    /// Deliveries that ended `failed` in a row.
    pub consecutive_failures: u32,
    /// Failed attempts in a row.
    pub failed_attempts: u32,
    /// POSTs a dispatcher lets this endpoint have at once; 0: the dispatcher's default.
    pub max_in_flight: u32,
}

impl Endpoint {
    /// Secrets to sign with now: the current one, then a previous one still in its grace period.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&Secret> {
        let mut v = vec![&self.secret];
        if let Some((old, until)) = &self.previous_secret
            && *until > now
        {
            v.push(old);
        }
        v
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    url: String,
    description: String,
    event_types: Vec<String>,
    enabled: bool,
    signing_scheme: String,
    secret: String,
    secret_key_id: Option<String>,
    previous_secret: Option<String>,
    previous_secret_key_id: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    timeout_ms: i32,
    retry_schedule_ms: Option<Vec<i32>>,
    headers: sqlx::types::Json<BTreeMap<String, String>>,
    disabled_reason: Option<String>,
    disabled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    header_prefix: String,
    user_agent: String,
    filter: Option<sqlx::types::Json<serde_json::Value>>,
    rate_limit_per_second: i32,
    consecutive_failures: i32,
    failed_attempts: i32,
    max_in_flight: i32,
}

/// An enabled endpoint as subscription matching sees it.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub id: Uuid,
    pub event_types: Vec<String>,
    pub filter: Option<serde_json::Value>,
}

impl Row {
    /// The endpoint, its secrets opened with `keys`.
    fn open(self, keys: &Keyring) -> Result<Endpoint> {
        let r = self;
        let row_id = r.id.as_bytes();
        let secret = keys.open(
            &Sealed {
                key_id: r.secret_key_id,
                text: r.secret,
            },
            row_id,
        )?;
        // An expired previous secret is never used: it is not opened either, so retiring the
        // key that sealed it cannot break the endpoint.
        let previous_secret = match (r.previous_secret, r.previous_secret_expires_at) {
            (Some(text), Some(at)) if at > Utc::now() => Some((
                keys.open(
                    &Sealed {
                        key_id: r.previous_secret_key_id,
                        text,
                    },
                    row_id,
                )?,
                at,
            )),
            _ => None,
        };
        Ok(Endpoint {
            id: r.id,
            tenant_id: r.tenant_id,
            url: r.url,
            description: r.description,
            event_types: r.event_types,
            enabled: r.enabled,
            scheme: r.signing_scheme.parse().unwrap_or_default(),
            secret,
            previous_secret,
            timeout_ms: r.timeout_ms.max(1) as u32,
            retry_schedule_ms: r
                .retry_schedule_ms
                .map(|v| v.into_iter().map(|d| d.max(0) as u32).collect()),
            headers: r.headers.0,
            disabled_reason: r.disabled_reason,
            disabled_at: r.disabled_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            header_prefix: r.header_prefix,
            user_agent: r.user_agent,
            filter: r.filter.map(|f| f.0),
            rate_limit_per_second: r.rate_limit_per_second.max(0) as u32,
            consecutive_failures: r.consecutive_failures.max(0) as u32,
            failed_attempts: r.failed_attempts.max(0) as u32,
            max_in_flight: r.max_in_flight.max(0) as u32,
        })
    }
}

const SELECT: &str = "SELECT e.id, e.tenant_id, e.url, e.description, e.event_types, e.enabled,
        e.signing_scheme, e.secret, e.secret_key_id, e.previous_secret, e.previous_secret_key_id,
        e.previous_secret_expires_at,
        e.timeout_ms, e.retry_schedule_ms, e.headers, e.disabled_reason, e.disabled_at,
        e.created_at, e.updated_at, t.header_prefix, t.user_agent, e.filter,
        e.rate_limit_per_second, e.consecutive_failures, e.failed_attempts, e.max_in_flight
     FROM endpoints e JOIN tenants t ON t.id = e.tenant_id";

/// A validated endpoint to create.
#[derive(Debug)]
pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub scheme: Scheme,
    pub secret: Secret,
    pub timeout_ms: u32,
    pub retry_schedule_ms: Option<Vec<u32>>,
    pub headers: BTreeMap<String, String>,
    pub filter: Option<serde_json::Value>,
    pub rate_limit_per_second: u32,
    /// 0: the dispatcher's default.
    pub max_in_flight: u32,
}

/// Validated changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub scheme: Option<Scheme>,
    pub secret: Option<Secret>,
    pub timeout_ms: Option<u32>,
    /// `Some(None)` resets to the server default.
    pub retry_schedule_ms: Option<Option<Vec<u32>>>,
    pub headers: Option<BTreeMap<String, String>>,
    /// `Some(None)` removes the filter.
    pub filter: Option<Option<serde_json::Value>>,
    pub rate_limit_per_second: Option<u32>,
    /// `Some(0)` goes back to the dispatcher's default.
    pub max_in_flight: Option<u32>,
}

/// What the ledger knows of an endpoint's deliveries (see `EndpointStats` in the API).
#[derive(Clone, Debug, Default)]
pub struct EndpointStats {
    pub total_deliveries: u64,
    pub last_status: Option<String>,
    pub last_delivery_at: Option<DateTime<Utc>>,
    pub window_attempts: u64,
    pub window_successes: u64,
    /// Attempts per latency bucket over the window (`herald_core::stats`).
    pub latency: [u64; herald_core::stats::BUCKETS],
}

/// endpoint id, total deliveries, last status, last delivery time.
type SummaryRow = (Uuid, i64, Option<String>, Option<DateTime<Utc>>);

fn to_i32(v: &[u32]) -> Vec<i32> {
    v.iter().map(|d| (*d).min(i32::MAX as u32) as i32).collect()
}

impl Store {
    /// Creates an endpoint unless the tenant already has `max` of them (`Error::Limit`). The
    /// tenant's row is locked for the count and the insert, so concurrent creations cannot
    /// both pass the limit.
    pub async fn create_endpoint(
        &self,
        tenant_id: Uuid,
        e: &NewEndpoint,
        max: i64,
    ) -> Result<Endpoint> {
        let id = Uuid::now_v7();
        let sealed = self.keys.seal(&e.secret, id.as_bytes());
        let mut tx = self.pool.begin().await?;
        let locked: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
        if locked.is_none() {
            return Err(Error::NotFound("tenant"));
        }
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM endpoints WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&mut *tx)
            .await?;
        if count >= max {
            return Err(Error::Limit(format!(
                "tenant has {count} endpoints; the limit is {max}"
            )));
        }
        sqlx::query(
            "INSERT INTO endpoints (id, tenant_id, url, description, event_types, enabled,
                 signing_scheme, secret, timeout_ms, retry_schedule_ms, headers, filter,
                 rate_limit_per_second, secret_key_id, max_in_flight)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(&e.event_types)
        .bind(e.enabled)
        .bind(e.scheme.as_str())
        .bind(&sealed.text)
        .bind(e.timeout_ms as i32)
        .bind(e.retry_schedule_ms.as_deref().map(to_i32))
        .bind(sqlx::types::Json(&e.headers))
        .bind(e.filter.as_ref().map(sqlx::types::Json))
        .bind(e.rate_limit_per_second.min(i32::MAX as u32) as i32)
        .bind(&sealed.key_id)
        .bind(e.max_in_flight.min(i32::MAX as u32) as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_endpoint(tenant_id, id).await
    }

    /// An endpoint of `tenant_id`; another tenant's endpoint is `NotFound`.
    pub async fn get_endpoint(&self, tenant_id: Uuid, id: Uuid) -> Result<Endpoint> {
        let sql = format!("{SELECT} WHERE e.id = $1 AND e.tenant_id = $2");
        sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("endpoint"))?
            .open(&self.keys)
    }

    /// An endpoint by id alone (the dispatcher's view); `None` once deleted.
    pub async fn find_endpoint(&self, id: Uuid) -> Result<Option<Endpoint>> {
        let sql = format!("{SELECT} WHERE e.id = $1");
        sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.open(&self.keys))
            .transpose()
    }

    /// A page of a tenant's endpoints in creation order, after `after` (exclusive).
    pub async fn list_endpoints(
        &self,
        tenant_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Endpoint>> {
        let sql = format!(
            "{SELECT} WHERE e.tenant_id = $1 AND ($2::uuid IS NULL OR e.id > $2)
             ORDER BY e.id LIMIT $3"
        );
        sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| r.open(&self.keys))
            .collect()
    }

    /// Every endpoint of a tenant (for the subscription index).
    /// What subscription matching needs of a tenant's enabled endpoints: id, patterns and
    /// filter. No secret is read, so one secret this instance cannot open (sealed with a key
    /// it lacks) does not stop the tenant's publishes.
    pub async fn tenant_subscriptions(&self, tenant_id: Uuid) -> Result<Vec<Subscription>> {
        let rows: Vec<(
            Uuid,
            Vec<String>,
            Option<sqlx::types::Json<serde_json::Value>>,
        )> = sqlx::query_as(
            "SELECT id, event_types, filter FROM endpoints
                 WHERE tenant_id = $1 AND enabled ORDER BY id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, event_types, filter)| Subscription {
                id,
                event_types,
                filter: filter.map(|f| f.0),
            })
            .collect())
    }

    pub async fn update_endpoint(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        c: &EndpointChanges,
    ) -> Result<Endpoint> {
        let reset_schedule = matches!(c.retry_schedule_ms, Some(None));
        let schedule = c.retry_schedule_ms.clone().flatten();
        let sealed = c.secret.as_ref().map(|s| self.keys.seal(s, id.as_bytes()));
        let done = sqlx::query(
            "UPDATE endpoints SET
                url = COALESCE($3, url),
                description = COALESCE($4, description),
                event_types = COALESCE($5, event_types),
                enabled = COALESCE($6, enabled),
                signing_scheme = COALESCE($7, signing_scheme),
                secret = COALESCE($8, secret),
                secret_key_id = CASE WHEN $8 IS NULL THEN secret_key_id ELSE $16 END,
                -- A replaced secret takes effect at once: no earlier secret keeps signing
                -- (it may be the one being replaced because it leaked).
                previous_secret = CASE WHEN $8 IS NULL THEN previous_secret END,
                previous_secret_key_id = CASE WHEN $8 IS NULL THEN previous_secret_key_id END,
                previous_secret_expires_at =
                    CASE WHEN $8 IS NULL THEN previous_secret_expires_at END,
                timeout_ms = COALESCE($9, timeout_ms),
                retry_schedule_ms = CASE WHEN $10 THEN NULL ELSE COALESCE($11, retry_schedule_ms) END,
                headers = COALESCE($12, headers),
                filter = CASE WHEN $13 THEN NULL ELSE COALESCE($14, filter) END,
                rate_limit_per_second = COALESCE($15, rate_limit_per_second),
                max_in_flight = COALESCE($17, max_in_flight),
                -- Turning an endpoint on clears why it was turned off and its failure streak;
                -- turning it off notes when (the reason stays empty: the tenant chose it).
                disabled_reason = CASE WHEN $6 IS TRUE THEN NULL ELSE disabled_reason END,
                disabled_at = CASE WHEN $6 IS TRUE THEN NULL
                                   WHEN $6 IS FALSE AND enabled THEN now()
                                   ELSE disabled_at END,
                consecutive_failures = CASE WHEN $6 IS TRUE THEN 0 ELSE consecutive_failures END,
                failing_since = CASE WHEN $6 IS TRUE THEN NULL ELSE failing_since END,
                failed_attempts = CASE WHEN $6 IS TRUE THEN 0 ELSE failed_attempts END,
                failing_notified = CASE WHEN $6 IS TRUE THEN false ELSE failing_notified END,
                updated_at = now()
             WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(c.url.as_deref())
        .bind(c.description.as_deref())
        .bind(c.event_types.as_deref())
        .bind(c.enabled)
        .bind(c.scheme.map(Scheme::as_str))
        .bind(sealed.as_ref().map(|s| s.text.as_str()))
        .bind(c.timeout_ms.map(|t| t as i32))
        .bind(reset_schedule)
        .bind(schedule.as_deref().map(to_i32))
        .bind(c.headers.as_ref().map(sqlx::types::Json))
        .bind(matches!(c.filter, Some(None)))
        .bind(c.filter.as_ref().and_then(|f| f.as_ref()).map(sqlx::types::Json))
        .bind(c.rate_limit_per_second.map(|r| r.min(i32::MAX as u32) as i32))
        .bind(sealed.as_ref().and_then(|s| s.key_id.as_deref()))
        .bind(c.max_in_flight.map(|m| m.min(i32::MAX as u32) as i32))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound("endpoint"));
        }
        self.get_endpoint(tenant_id, id).await
    }

    pub async fn delete_endpoint(&self, tenant_id: Uuid, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM endpoints WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound("endpoint"));
        }
        Ok(())
    }

    /// Makes `secret` the signing secret; the current one keeps signing too until `until`.
    pub async fn rotate_secret(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        secret: &Secret,
        until: DateTime<Utc>,
    ) -> Result<Endpoint> {
        let sealed = self.keys.seal(secret, id.as_bytes());
        let done = sqlx::query(
            "UPDATE endpoints SET previous_secret = secret,
                    previous_secret_key_id = secret_key_id, previous_secret_expires_at = $4,
                    secret = $3, secret_key_id = $5, updated_at = now()
             WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(&sealed.text)
        .bind(until)
        .bind(&sealed.key_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound("endpoint"));
        }
        self.get_endpoint(tenant_id, id).await
    }

    /// Statistics of some endpoints over the last `window_hours` hours, from the ledger's
    /// summary tables (a few rows per endpoint, never the attempts table).
    pub async fn endpoint_stats(
        &self,
        ids: &[Uuid],
        window_hours: u32,
    ) -> Result<std::collections::HashMap<Uuid, EndpointStats>> {
        let mut out: std::collections::HashMap<Uuid, EndpointStats> =
            std::collections::HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT endpoint_id, total_deliveries, last_status, last_delivery_at
             FROM endpoint_stats WHERE endpoint_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        for (id, total, status, at) in rows {
            let s = out.entry(id).or_default();
            s.total_deliveries = total.max(0) as u64;
            s.last_status = status;
            s.last_delivery_at = at;
        }
        let buckets: Vec<(Uuid, i16, i64, i64)> = sqlx::query_as(
            "SELECT endpoint_id, bucket, sum(attempts)::int8, sum(successes)::int8
             FROM endpoint_latency
             WHERE endpoint_id = ANY($1)
               AND hour >= date_trunc('hour', now()) - make_interval(hours => $2)
             GROUP BY endpoint_id, bucket",
        )
        .bind(ids)
        .bind(window_hours as i32)
        .fetch_all(&self.pool)
        .await?;
        for (id, bucket, attempts, successes) in buckets {
            let s = out.entry(id).or_default();
            let b = (bucket.max(0) as usize).min(herald_core::stats::BUCKETS - 1);
            s.latency[b] += attempts.max(0) as u64;
            s.window_attempts += attempts.max(0) as u64;
            s.window_successes += successes.max(0) as u64;
        }
        Ok(out)
    }
}
