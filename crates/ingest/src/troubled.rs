//! `Admin.ListTroubledTenants`: the tenants with the most failing, throttled or auto-disabled
//! endpoints, worst first: where an operator looks first.
//!
//! Failing and auto-disabled counts come from Postgres (the endpoints' streak columns); the
//! throttled count from the dispatchers' throttle notes in Redis, read for at most
//! [`MAX_THROTTLE_LOOKUPS`] enabled endpoints (the newest) so the call stays bounded on a large
//! installation. Without Redis the throttled counts are 0 and a warning is logged: the list is
//! advice, it does not fail for want of it.

use std::collections::HashMap;

use herald_proto::v1 as pb;
use uuid::Uuid;

use crate::Ingest;
use crate::error::Result;

/// Most enabled endpoints whose throttle notes one call reads.
pub const MAX_THROTTLE_LOOKUPS: u32 = 100_000;

/// Throttled endpoints per tenant.
async fn throttled(ingest: &Ingest) -> Result<HashMap<Uuid, u32>> {
    let enabled = ingest.store.enabled_endpoints(MAX_THROTTLE_LOOKUPS).await?;
    let ids: Vec<Uuid> = enabled.iter().map(|(_, e)| *e).collect();
    let mut counts = HashMap::new();
    let Some(flags) = ingest.delivery_states.throttled(&ids).await else {
        tracing::warn!("throttle notes unavailable, troubled tenants listed without them");
        return Ok(counts);
    };
    for ((tenant, _), throttled) in enabled.iter().zip(flags) {
        if throttled {
            *counts.entry(*tenant).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// The `limit` most troubled tenants (only those with some trouble), worst first.
pub async fn list(ingest: &Ingest, limit: u32) -> Result<Vec<pb::TroubledTenant>> {
    let health = ingest.store.endpoint_health().await?;
    let throttled = throttled(ingest).await?;
    let count = |n: i64| n.clamp(0, i64::from(u32::MAX)) as u32;
    let mut out: Vec<pb::TroubledTenant> = health
        .into_iter()
        .map(|h| pb::TroubledTenant {
            tenant_id: h.tenant_id.to_string(),
            throttled_endpoints: throttled.get(&h.tenant_id).copied().unwrap_or(0),
            tenant_name: h.tenant_name,
            failing_endpoints: count(h.failing),
            auto_disabled_endpoints: count(h.auto_disabled),
            total_endpoints: count(h.total),
        })
        .filter(|t| trouble(t) > 0)
        .collect();
    out.sort_by(|a, b| {
        trouble(b)
            .cmp(&trouble(a))
            .then(b.total_endpoints.cmp(&a.total_endpoints))
            .then(a.tenant_id.cmp(&b.tenant_id))
    });
    out.truncate(limit as usize);
    Ok(out)
}

/// How troubled a tenant is: its endpoints in any bad state.
fn trouble(t: &pb::TroubledTenant) -> u64 {
    u64::from(t.failing_endpoints)
        + u64::from(t.throttled_endpoints)
        + u64::from(t.auto_disabled_endpoints)
}
