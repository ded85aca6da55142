//! Portal links and sessions: how a tenant's webhooks page is opened without an API key.
//!
//! A platform asks for a link (`portal_links`): a single-use token (`hl_…`, only its SHA-256
//! stored) that opens within minutes. Redeeming it is one atomic claim (`UPDATE … WHERE
//! redeemed_at IS NULL AND expires_at > now() RETURNING`), so two browsers racing with the same
//! link get one session between them. The session is an `api_keys` row of kind `portal` with
//! the link's scopes and an expiry: every service checks it as it checks a key (same cache,
//! same revocation notices), so ending it reaches every service at once.
//!
//! A link made with a tenant's key opens only while that key is live, and its session ends no
//! later than the key does. Links and sessions past their expiry by a day are deleted when the
//! tenant's next link is made, so neither table grows without bound.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::scopes::Scopes;
use crate::tenants::new_secret;
use crate::{Error, Result, Store, hash_api_key};

/// What a new link carries to its session.
pub struct NewPortalLink {
    pub tenant_id: Uuid,
    pub scopes: Scopes,
    pub session_ttl_seconds: u32,
    pub link_ttl_seconds: u32,
    /// `{accent_color, name, mode}`, shown by the portal.
    pub theme: serde_json::Value,
    /// The key that asked for it; `None`: the operator.
    pub created_by_key: Option<Uuid>,
}

/// A link just made; `token` is the only copy.
pub struct PortalLink {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// A session a link opened; `token` is the only copy.
pub struct PortalSession {
    pub token: String,
    pub tenant_id: Uuid,
    pub tenant_name: String,
    pub scopes: Scopes,
    pub expires_at: DateTime<Utc>,
    pub theme: serde_json::Value,
    pub allowed_origins: Vec<String>,
}

/// A claimed link: tenant, scopes, session ttl, theme, the key that made it.
type ClaimedLink = (
    Uuid,
    Vec<String>,
    i32,
    Option<serde_json::Value>,
    Option<Uuid>,
);

impl Store {
    /// Makes a single-use link for a tenant (`NotFound` for an unknown tenant).
    pub async fn create_portal_link(&self, link: &NewPortalLink) -> Result<PortalLink> {
        self.prune_portal(link.tenant_id).await?;
        let token = new_secret("hl_");
        let expires_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO portal_links (id, tenant_id, token_hash, scopes, session_ttl_seconds,
                 theme, created_by_key, expires_at)
             SELECT $1, id, $3, $4, $5, $6, $7, now() + make_interval(secs => $8)
             FROM tenants WHERE id = $2
             RETURNING expires_at",
        )
        .bind(Uuid::now_v7())
        .bind(link.tenant_id)
        .bind(hash_api_key(&token))
        .bind(link.scopes.names())
        .bind(link.session_ttl_seconds.min(i32::MAX as u32) as i32)
        .bind(&link.theme)
        .bind(link.created_by_key)
        .bind(f64::from(link.link_ttl_seconds))
        .fetch_optional(&self.pool)
        .await?;
        let expires_at = expires_at.ok_or(Error::NotFound("tenant"))?;
        Ok(PortalLink { token, expires_at })
    }

    /// Deletes a tenant's links and sessions that expired more than a day ago.
    async fn prune_portal(&self, tenant_id: Uuid) -> Result<()> {
        sqlx::query(
            "DELETE FROM portal_links WHERE tenant_id = $1 AND expires_at < now() - interval '1 day'",
        )
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM api_keys WHERE tenant_id = $1 AND kind = 'portal'
               AND expires_at < now() - interval '1 day'",
        )
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims the link whose token hashes to `token_hash` and opens its session; `None` when
    /// the link is unknown, used, expired, or its creating key is no longer live.
    pub async fn redeem_portal_link(&self, token_hash: &[u8]) -> Result<Option<PortalSession>> {
        let mut tx = self.pool.begin().await?;
        let claimed: Option<ClaimedLink> = sqlx::query_as(
            "UPDATE portal_links l SET redeemed_at = now()
                 WHERE token_hash = $1 AND redeemed_at IS NULL AND expires_at > now()
                   AND (created_by_key IS NULL OR EXISTS (
                        SELECT 1 FROM api_keys k WHERE k.id = l.created_by_key
                          AND k.revoked_at IS NULL
                          AND (k.expires_at IS NULL OR k.expires_at > now())))
                 RETURNING tenant_id, scopes, session_ttl_seconds, theme, created_by_key",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((tenant_id, scopes, ttl, theme, creator)) = claimed else {
            return Ok(None);
        };
        let token = new_secret("hs_");
        let (expires_at, tenant_name, allowed_origins): (DateTime<Utc>, String, Vec<String>) =
            sqlx::query_as(
                "WITH s AS (
                     INSERT INTO api_keys (id, tenant_id, name, key_hash, scopes, expires_at, kind, theme)
                     SELECT $1, $2, 'portal session', $3, $4,
                            LEAST(now() + make_interval(secs => $5),
                                  (SELECT expires_at FROM api_keys WHERE id = $6)),
                            'portal', $7
                     RETURNING tenant_id, expires_at)
                 SELECT s.expires_at, t.name, t.portal_allowed_origins
                 FROM s JOIN tenants t ON t.id = s.tenant_id",
            )
            .bind(Uuid::now_v7())
            .bind(tenant_id)
            .bind(hash_api_key(&token))
            .bind(&scopes)
            .bind(f64::from(ttl))
            .bind(creator)
            .bind(&theme)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(PortalSession {
            token,
            tenant_id,
            tenant_name,
            scopes: Scopes::from_stored(&scopes),
            expires_at,
            theme: theme.unwrap_or(serde_json::Value::Null),
            allowed_origins,
        }))
    }

    /// Ends the live portal session whose token hashes to `token_hash`; false when there is
    /// none (an API key is not a session and is left alone).
    pub async fn end_portal_session(&self, token_hash: &[u8]) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = now()
             WHERE key_hash = $1 AND kind = 'portal' AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
