//! Tenants and their API keys. Keys are 32 random bytes shown once; only their SHA-256 is
//! stored (the key's entropy makes a slow hash unnecessary, and lookups stay one index probe).
//! A key has scopes and may expire ([`crate::scopes`]); portal sessions are keys of their own
//! kind ([`crate::portal`]) and are not listed with the tenant's keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::keys::{PRINCIPAL_COLUMNS, principal};
use crate::scopes::{Principal, Scopes};
use crate::{Error, Result, Store};

/// A tenant: one customer of the publishing platform.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub header_prefix: String,
    pub user_agent: String,
    pub created_at: DateTime<Utc>,
    pub require_https: bool,
    pub reject_unknown_event_types: bool,
    /// Events per second this tenant may publish: `None` the server default, 0 unlimited.
    pub publish_rate_limit: Option<i32>,
    /// Origins allowed to embed the tenant's portal (`scheme://host[:port]`).
    pub portal_allowed_origins: Vec<String>,
}

/// Columns of [`Tenant`], in its field order.
const TENANT_COLUMNS: &str =
    "id, name, header_prefix, user_agent, created_at, require_https, reject_unknown_event_types,
     publish_rate_limit, portal_allowed_origins";

/// Fields to change on a tenant; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct TenantChanges {
    pub name: Option<String>,
    pub header_prefix: Option<String>,
    pub user_agent: Option<String>,
    pub require_https: Option<bool>,
    pub reject_unknown_event_types: Option<bool>,
    /// `Some(None)` returns to the server default.
    pub publish_rate_limit: Option<Option<u32>>,
    /// Replaces the list when set.
    pub portal_allowed_origins: Option<Vec<String>>,
}

/// A freshly created key; `secret` is never stored.
pub struct NewApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub secret: String,
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as listed (never its secret).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A random secret: `prefix` and 43 URL-safe base64 characters (32 random bytes).
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn rate_column(rate: u32) -> i32 {
    rate.min(i32::MAX as u32) as i32
}

/// SHA-256 of an API key, as stored.
pub fn hash_api_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

impl Store {
    /// Creates a tenant; `c.name` is required, other unset fields take their defaults.
    pub async fn create_tenant(&self, c: &TenantChanges) -> Result<Tenant> {
        let sql = format!(
            "INSERT INTO tenants (id, name, header_prefix, user_agent, require_https,
                 reject_unknown_event_types, publish_rate_limit, portal_allowed_origins)
             VALUES ($1, $2, COALESCE($3, 'Webhook-'), COALESCE($4, 'Herald-Webhooks/1.0'),
                 COALESCE($5, false), COALESCE($6, false), $7, COALESCE($8, '{{}}'))
             RETURNING {TENANT_COLUMNS}"
        );
        Ok(sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::now_v7())
            .bind(c.name.as_deref().unwrap_or_default())
            .bind(c.header_prefix.as_deref())
            .bind(c.user_agent.as_deref())
            .bind(c.require_https)
            .bind(c.reject_unknown_event_types)
            .bind(c.publish_rate_limit.flatten().map(rate_column))
            .bind(c.portal_allowed_origins.as_deref())
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn get_tenant(&self, id: Uuid) -> Result<Tenant> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("tenant"))
    }

    pub async fn update_tenant(&self, id: Uuid, c: &TenantChanges) -> Result<Tenant> {
        let sql = format!(
            "UPDATE tenants SET name = COALESCE($2, name),
                    header_prefix = COALESCE($3, header_prefix),
                    user_agent = COALESCE($4, user_agent),
                    require_https = COALESCE($5, require_https),
                    reject_unknown_event_types = COALESCE($6, reject_unknown_event_types),
                    publish_rate_limit = CASE WHEN $7 THEN $8 ELSE publish_rate_limit END,
                    portal_allowed_origins = COALESCE($9, portal_allowed_origins)
             WHERE id = $1
             RETURNING {TENANT_COLUMNS}"
        );
        sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(c.name.as_deref())
            .bind(c.header_prefix.as_deref())
            .bind(c.user_agent.as_deref())
            .bind(c.require_https)
            .bind(c.reject_unknown_event_types)
            .bind(c.publish_rate_limit.is_some())
            .bind(c.publish_rate_limit.flatten().map(rate_column))
            .bind(c.portal_allowed_origins.as_deref())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("tenant"))
    }

    /// Creates a key for a tenant with `scopes`, expiring at `expires_at` (`None`: never); the
    /// returned secret is the only copy.
    pub async fn create_api_key(
        &self,
        tenant_id: Uuid,
        name: &str,
        scopes: Scopes,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<NewApiKey> {
        let secret = new_secret("hk_");
        let id = Uuid::now_v7();
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash, scopes, expires_at)
             SELECT $1, id, $3, $4, $5, $6 FROM tenants WHERE id = $2",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(name)
        .bind(hash_api_key(&secret))
        .bind(scopes.names())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::NotFound("tenant"));
        }
        Ok(NewApiKey {
            id,
            tenant_id,
            secret,
            scopes,
            expires_at,
        })
    }

    /// Tenants newest first, `limit` of them after `after` (the last id of the previous page).
    pub async fn list_tenants(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Tenant>> {
        let sql = format!(
            "SELECT {TENANT_COLUMNS} FROM tenants
             WHERE $1::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM tenants WHERE id = $1)
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        Ok(sqlx::query_as::<_, Tenant>(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    /// A tenant's API keys (not its portal sessions), newest first, `limit` after `after`;
    /// revoked and expired ones only when `include_revoked`.
    pub async fn list_api_keys(
        &self,
        tenant_id: Uuid,
        include_revoked: bool,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        Ok(sqlx::query_as::<_, ApiKey>(
            "SELECT id, tenant_id, name, scopes, created_at, expires_at, revoked_at FROM api_keys
             WHERE tenant_id = $1 AND kind = 'key' AND ($3::uuid IS NULL OR id < $3)
               AND ($2 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())))
             ORDER BY id DESC LIMIT $4",
        )
        .bind(tenant_id)
        .bind(include_revoked)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a key; revoking twice is not an error, an unknown key is.
    pub async fn revoke_api_key(&self, key_id: Uuid) -> Result<()> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1",
        )
        .bind(key_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound("api key"));
        }
        Ok(())
    }

    /// The principal of a live credential (key or portal session), or `None` for an unknown,
    /// revoked or expired one.
    pub async fn authenticate(&self, key_hash: &[u8]) -> Result<Option<Principal>> {
        let sql = format!(
            "SELECT {PRINCIPAL_COLUMNS} FROM api_keys
             WHERE key_hash = $1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > now())"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?
            .map(principal))
    }
}
