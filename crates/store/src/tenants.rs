//! Tenants and their API keys. Keys are 32 random bytes shown once; only their SHA-256 is
//! stored (the key's entropy makes a slow hash unnecessary, and lookups stay one index probe).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

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
}

/// Columns of [`Tenant`], in its field order.
const TENANT_COLUMNS: &str =
    "id, name, header_prefix, user_agent, created_at, require_https, reject_unknown_event_types,
     publish_rate_limit";

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
}

/// A freshly created key; `secret` is never stored.
pub struct ApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub secret: String,
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
                 reject_unknown_event_types, publish_rate_limit)
             VALUES ($1, $2, COALESCE($3, 'Webhook-'), COALESCE($4, 'Herald-Webhooks/1.0'),
                 COALESCE($5, false), COALESCE($6, false), $7)
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
                    publish_rate_limit = CASE WHEN $7 THEN $8 ELSE publish_rate_limit END
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
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound("tenant"))
    }

    /// Creates a key for a tenant; the returned secret is the only copy.
    pub async fn create_api_key(&self, tenant_id: Uuid, name: &str) -> Result<ApiKey> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("hk_{}", URL_SAFE_NO_PAD.encode(bytes));
        let id = Uuid::now_v7();
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, key_hash)
             SELECT $1, id, $3, $4 FROM tenants WHERE id = $2",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(name)
        .bind(hash_api_key(&secret))
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(Error::NotFound("tenant"));
        }
        Ok(ApiKey {
            id,
            tenant_id,
            secret,
        })
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

    /// The tenant a live key belongs to, or `None` for an unknown or revoked key.
    pub async fn authenticate(&self, key_hash: &[u8]) -> Result<Option<Uuid>> {
        Ok(sqlx::query_scalar::<_, Uuid>(
            "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?)
    }
}
