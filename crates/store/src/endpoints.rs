//! Endpoints: where a tenant's deliveries go, how they are signed and retried.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The owning tenant's header prefix and User-Agent (joined in for the dispatcher).
    pub header_prefix: String,
    pub user_agent: String,
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
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    timeout_ms: i32,
    retry_schedule_ms: Option<Vec<i32>>,
    headers: sqlx::types::Json<BTreeMap<String, String>>,
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    header_prefix: String,
    user_agent: String,
}

impl From<Row> for Endpoint {
    fn from(r: Row) -> Self {
        Endpoint {
            id: r.id,
            tenant_id: r.tenant_id,
            url: r.url,
            description: r.description,
            event_types: r.event_types,
            enabled: r.enabled,
            scheme: r.signing_scheme.parse().unwrap_or_default(),
            secret: Secret::from_stored(r.secret),
            previous_secret: r
                .previous_secret
                .zip(r.previous_secret_expires_at)
                .map(|(s, at)| (Secret::from_stored(s), at)),
            timeout_ms: r.timeout_ms.max(1) as u32,
            retry_schedule_ms: r
                .retry_schedule_ms
                .map(|v| v.into_iter().map(|d| d.max(0) as u32).collect()),
            headers: r.headers.0,
            disabled_reason: r.disabled_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
            header_prefix: r.header_prefix,
            user_agent: r.user_agent,
        }
    }
}

const SELECT: &str = "SELECT e.id, e.tenant_id, e.url, e.description, e.event_types, e.enabled,
        e.signing_scheme, e.secret, e.previous_secret, e.previous_secret_expires_at,
        e.timeout_ms, e.retry_schedule_ms, e.headers, e.disabled_reason, e.created_at,
        e.updated_at, t.header_prefix, t.user_agent
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
}

fn to_i32(v: &[u32]) -> Vec<i32> {
    v.iter().map(|d| (*d).min(i32::MAX as u32) as i32).collect()
}

impl Store {
    pub async fn create_endpoint(&self, tenant_id: Uuid, e: &NewEndpoint) -> Result<Endpoint> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO endpoints (id, tenant_id, url, description, event_types, enabled,
                 signing_scheme, secret, timeout_ms, retry_schedule_ms, headers)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(&e.event_types)
        .bind(e.enabled)
        .bind(e.scheme.as_str())
        .bind(e.secret.expose())
        .bind(e.timeout_ms as i32)
        .bind(e.retry_schedule_ms.as_deref().map(to_i32))
        .bind(sqlx::types::Json(&e.headers))
        .execute(&self.pool)
        .await?;
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
            .map(Endpoint::from)
            .ok_or(Error::NotFound("endpoint"))
    }

    /// An endpoint by id alone (the dispatcher's view); `None` once deleted.
    pub async fn find_endpoint(&self, id: Uuid) -> Result<Option<Endpoint>> {
        let sql = format!("{SELECT} WHERE e.id = $1");
        Ok(sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(Endpoint::from))
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
        Ok(sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Endpoint::from)
            .collect())
    }

    /// Every endpoint of a tenant (for the subscription index).
    pub async fn tenant_endpoints(&self, tenant_id: Uuid) -> Result<Vec<Endpoint>> {
        let sql = format!("{SELECT} WHERE e.tenant_id = $1 ORDER BY e.id");
        Ok(sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Endpoint::from)
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
        let done = sqlx::query(
            "UPDATE endpoints SET
                url = COALESCE($3, url),
                description = COALESCE($4, description),
                event_types = COALESCE($5, event_types),
                enabled = COALESCE($6, enabled),
                signing_scheme = COALESCE($7, signing_scheme),
                secret = COALESCE($8, secret),
                timeout_ms = COALESCE($9, timeout_ms),
                retry_schedule_ms = CASE WHEN $10 THEN NULL ELSE COALESCE($11, retry_schedule_ms) END,
                headers = COALESCE($12, headers),
                -- Turning an endpoint on clears why it was turned off.
                disabled_reason = CASE WHEN $6 IS TRUE THEN NULL ELSE disabled_reason END,
                disabled_at = CASE WHEN $6 IS TRUE THEN NULL ELSE disabled_at END,
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
        .bind(c.secret.as_ref().map(Secret::expose))
        .bind(c.timeout_ms.map(|t| t as i32))
        .bind(reset_schedule)
        .bind(schedule.as_deref().map(to_i32))
        .bind(c.headers.as_ref().map(sqlx::types::Json))
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

    /// Turns an endpoint off on Herald's own initiative (e.g. the receiver answered 410 Gone),
    /// recording why. Does nothing if it is already off.
    pub async fn disable_endpoint(&self, id: Uuid, reason: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE endpoints SET enabled = false, disabled_reason = $2, disabled_at = now(),
                    updated_at = now()
             WHERE id = $1 AND enabled",
        )
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn count_endpoints(&self, tenant_id: Uuid) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM endpoints WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
