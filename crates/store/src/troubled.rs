//! The operator's "who is in trouble" list: per tenant, how many endpoints fail, and how many
//! Herald turned off. The throttled count comes from Redis (dispatchers' notes), not from here;
//! [`Store::enabled_endpoints`] gives the ids to look up.

use uuid::Uuid;

use crate::{Result, Store};

/// Endpoint health of one tenant with at least one endpoint.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EndpointHealth {
    pub tenant_id: Uuid,
    pub tenant_name: String,
    pub total: i64,
    /// Enabled endpoints whose latest deliveries failed for good.
    pub failing: i64,
    /// Endpoints turned off by Herald (`disabled_reason` set).
    pub auto_disabled: i64,
}

impl Store {
    /// Endpoint health of every tenant that has endpoints.
    pub async fn endpoint_health(&self) -> Result<Vec<EndpointHealth>> {
        Ok(sqlx::query_as::<_, EndpointHealth>(
            "SELECT t.id AS tenant_id, t.name AS tenant_name, count(*) AS total,
                    count(*) FILTER (WHERE e.enabled AND e.consecutive_failures > 0) AS failing,
                    count(*) FILTER (WHERE e.disabled_reason IS NOT NULL) AS auto_disabled
             FROM endpoints e JOIN tenants t ON t.id = e.tenant_id
             GROUP BY t.id, t.name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Enabled endpoints as (tenant, endpoint), the newest `limit` of them.
    pub async fn enabled_endpoints(&self, limit: u32) -> Result<Vec<(Uuid, Uuid)>> {
        Ok(sqlx::query_as(
            "SELECT tenant_id, id FROM endpoints WHERE enabled ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }
}
