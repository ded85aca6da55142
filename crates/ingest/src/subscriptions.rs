//! Per-tenant subscription index, cached so a publish costs no database query: the enabled
//! endpoints by subscription pattern with their payload filters (parsed once, here), and the
//! tenant's event-type policy (reject unknown types, and the live types it knows).
//!
//! Changes made through this instance invalidate the tenant's entry at once; changes made
//! through another instance arrive as Postgres change notices ([`herald_store::Change`]) and
//! invalidate it as soon, with `HERALD_SUBSCRIPTION_CACHE_TTL` as the bound when a notice is
//! lost. A load that raced with an invalidation is used once but not cached, so a stale index
//! never outlives its TTL.

use std::sync::Arc;
use std::time::Duration;

use herald_core::ttl_cache::TtlCache;
use herald_store::{Store, SubscriptionIndex};
use uuid::Uuid;

use crate::error::Result;

/// What a publish needs to know about one tenant.
pub type Index = SubscriptionIndex;

/// Most tenants whose index is kept.
const MAX_TENANTS: usize = 100_000;

pub struct Subscriptions {
    store: Store,
    entries: TtlCache<Uuid, Arc<Index>>,
}

impl Subscriptions {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            entries: TtlCache::new(ttl, MAX_TENANTS),
        }
    }

    pub async fn index(&self, tenant: Uuid) -> Result<Arc<Index>> {
        if let Some(index) = self.entries.get(&tenant) {
            return Ok(index);
        }
        let ticket = self.entries.ticket();
        let index = Arc::new(SubscriptionIndex::load(&self.store, tenant).await?);
        self.entries.insert(tenant, index.clone(), ticket);
        Ok(index)
    }

    /// Drops what a change notice makes stale.
    pub fn apply(&self, change: herald_store::Change) {
        use herald_store::Change;
        match change {
            Change::Tenant(tenant) | Change::Endpoint { tenant, .. } => self.invalidate(tenant),
            Change::Unknown => self.entries.clear(),
        }
    }

    pub fn invalidate(&self, tenant: Uuid) {
        self.entries.remove(&tenant);
    }
}
