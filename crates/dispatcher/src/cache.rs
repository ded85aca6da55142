//! Short-lived endpoint cache: a burst of deliveries to one endpoint costs one query. Change
//! notices from Postgres ([`herald_store::Change`]) drop an entry as soon as the endpoint or its
//! tenant changes, so toggles, deletes and secret changes apply to the next delivery; the TTL
//! only bounds how stale an entry gets when a notice is lost. A load that raced with a notice
//! is used once but not kept.
//!
//! An entry past its TTL is still used while one background load refreshes it (up to
//! [`STALE_FOR`] TTLs old): a delivery never waits on the database for an endpoint it already
//! knows, so another tenant's load on the pool (a failing endpoint's streak writes, say) cannot
//! stall it. Only an endpoint not seen for a while is loaded before use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_store::{Change, Endpoint, Store};
use uuid::Uuid;

/// How many TTLs old an entry may be used while it is refreshed in the background.
const STALE_FOR: u32 = 4;

/// One cached endpoint (`None`: it does not exist) and when it was loaded.
struct Entry {
    at: Instant,
    endpoint: Option<Arc<Endpoint>>,
    /// A background load is on its way.
    refreshing: bool,
}

type Entries = HashMap<Uuid, Entry>;

#[derive(Clone)]
pub struct EndpointCache {
    store: Store,
    ttl: Duration,
    entries: Arc<Mutex<Entries>>,
    /// Bumped by every change notice: a load that started before one is not cached.
    generation: Arc<AtomicU64>,
}

impl EndpointCache {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            entries: Arc::default(),
            generation: Arc::default(),
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
        let mut entries = self.entries.lock().expect("endpoint cache lock");
        let entry = entries.get_mut(&id)?;
        let age = entry.at.elapsed();
        if age < self.ttl {
            return Some(entry.endpoint.clone());
        }
        if age >= self.ttl * STALE_FOR {
            return None;
        }
        if !entry.refreshing {
            entry.refreshing = true;
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.load(id).await {
                    tracing::debug!(endpoint_id = %id, error = %e, "endpoint refresh failed");
                }
                // Also when the load was not kept (a change notice raced it): the next use
                // starts another refresh. A freshly kept entry has it false already.
                let mut entries = this.entries.lock().expect("endpoint cache lock");
                if let Some(entry) = entries.get_mut(&id) {
                    entry.refreshing = false;
                }
            });
        }
        Some(entry.endpoint.clone())
    }

    /// Loads the endpoint and keeps it, unless a change notice arrived meanwhile.
    async fn load(&self, id: Uuid) -> herald_store::Result<Option<Arc<Endpoint>>> {
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = self.store.find_endpoint(id).await?.map(Arc::new);
        let mut entries = self.entries.lock().expect("endpoint cache lock");
        if self.generation.load(Ordering::Acquire) != generation {
            return Ok(loaded);
        }
        if entries.len() > 50_000 {
            let keep = self.ttl * STALE_FOR;
            entries.retain(|_, e| e.at.elapsed() < keep);
        }
        let entry = Entry {
            at: Instant::now(),
            endpoint: loaded.clone(),
            refreshing: false,
        };
        entries.insert(id, entry);
        Ok(loaded)
    }

    pub fn forget(&self, id: Uuid) {
        self.entries
            .lock()
            .expect("endpoint cache lock")
            .remove(&id);
    }

    /// Drops what `change` makes stale.
    pub fn apply(&self, change: Change) {
        let mut entries = self.entries.lock().expect("endpoint cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        match change {
            Change::Endpoint { endpoint, .. } => {
                entries.remove(&endpoint);
            }
            // Tenant settings (header prefix, User-Agent) are part of each endpoint entry.
            Change::Tenant(tenant) => {
                entries.retain(|_, e| e.endpoint.as_ref().is_some_and(|e| e.tenant_id != tenant))
            }
            Change::Unknown => entries.clear(),
        }
    }
}
