//! Short-lived endpoint cache: a burst of deliveries to one endpoint costs one query. Change
//! notices from Postgres ([`herald_store::Change`]) drop an entry as soon as the endpoint or its
//! tenant changes, so toggles, deletes and secret changes apply to the next delivery; the TTL
//! only bounds how stale an entry gets when a notice is lost. A load that raced with a notice
//! is used once but not kept.
//!
//! An entry past its TTL is still used while one background load refreshes it (up to
//! [`STALE_FOR`] TTLs old): a delivery never waits on the database for an endpoint it already
//! knows, so another tenant's load on the pool (a burst of new endpoints' lookups, say) cannot
//! stall it. Only an endpoint not seen for a while is loaded before use.

use std::sync::Arc;
use std::time::Duration;

use herald_core::ttl_cache::TtlCache;
use herald_store::{Change, Endpoint, Store};
use uuid::Uuid;

/// How many TTLs old an entry may be used while it is refreshed in the background.
const STALE_FOR: u32 = 4;
/// Most endpoints kept.
const MAX_ENDPOINTS: usize = 50_000;

/// One cached endpoint (`None`: it does not exist).
struct Entry {
    endpoint: Option<Arc<Endpoint>>,
    /// A background load is on its way.
    refreshing: bool,
}

#[derive(Clone)]
pub struct EndpointCache {
    store: Store,
    entries: Arc<TtlCache<Uuid, Entry>>,
}

impl EndpointCache {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            entries: Arc::new(TtlCache::new(ttl, MAX_ENDPOINTS).keep_for(ttl * STALE_FOR)),
        }
    }

    /// The endpoint, `None` once deleted.
    pub async fn get(&self, id: Uuid) -> herald_store::Result<Option<Arc<Endpoint>>> {
        if let Some(found) = self.cached(id) {
            return Ok(found);
        }
        self.load(id).await
    }

    /// A usable entry; a stale one starts its background refresh.
    fn cached(&self, id: Uuid) -> Option<Option<Arc<Endpoint>>> {
        let ttl = self.entries.ttl();
        let (endpoint, refresh) = self
            .entries
            .with(&id, |entry, age| {
                let age = age.filter(|age| *age < ttl * STALE_FOR)?;
                let refresh = age >= ttl && !entry.refreshing;
                entry.refreshing |= refresh;
                Some((entry.endpoint.clone(), refresh))
            })
            .flatten()?;
        if refresh {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.load(id).await {
                    tracing::debug!(endpoint_id = %id, error = %e, "endpoint refresh failed");
                }
                // Also when the load was not kept (a change notice raced it): the next use
                // starts another refresh. A freshly kept entry has it false already.
                this.entries.with(&id, |entry, _| entry.refreshing = false);
            });
        }
        Some(endpoint)
    }

    /// Loads the endpoint and keeps it, unless a change notice arrived meanwhile.
    async fn load(&self, id: Uuid) -> herald_store::Result<Option<Arc<Endpoint>>> {
        let ticket = self.entries.ticket();
        let loaded = self.store.find_endpoint(id).await?.map(Arc::new);
        let entry = Entry {
            endpoint: loaded.clone(),
            refreshing: false,
        };
        self.entries.insert(id, entry, ticket);
        Ok(loaded)
    }

    pub fn forget(&self, id: Uuid) {
        self.entries.remove(&id);
    }

    /// Drops what `change` makes stale.
    pub fn apply(&self, change: Change) {
        match change {
            Change::Endpoint { endpoint, .. } => self.entries.remove(&endpoint),
            // Tenant settings (header prefix, User-Agent) are part of each endpoint entry.
            Change::Tenant(tenant) => self
                .entries
                .remove_where(|_, e| e.endpoint.as_ref().is_none_or(|e| e.tenant_id == tenant)),
            Change::Unknown => self.entries.clear(),
        }
    }
}
