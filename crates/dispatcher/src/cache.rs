//! Short-lived endpoint cache: a burst of deliveries to one endpoint costs one query. Change
//! notices from Postgres ([`herald_store::Change`]) drop an entry as soon as the endpoint or its
//! tenant changes, so toggles, deletes and secret changes apply to the next delivery; the TTL
//! only bounds how stale an entry gets when a notice is lost. A load that raced with a notice
//! is used once but not kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_store::{Change, Endpoint, Store};
use uuid::Uuid;

/// Endpoint id → (when it was loaded, the endpoint or `None` when it does not exist).
type Entries = HashMap<Uuid, (Instant, Option<Arc<Endpoint>>)>;

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
        if let Some((at, e)) = self.entries.lock().expect("endpoint cache lock").get(&id)
            && at.elapsed() < self.ttl
        {
            return Ok(e.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = self.store.find_endpoint(id).await?.map(Arc::new);
        let mut entries = self.entries.lock().expect("endpoint cache lock");
        if self.generation.load(Ordering::Acquire) != generation {
            return Ok(loaded);
        }
        if entries.len() > 50_000 {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        }
        entries.insert(id, (Instant::now(), loaded.clone()));
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
                entries.retain(|_, (_, e)| e.as_ref().is_some_and(|e| e.tenant_id != tenant))
            }
            Change::Unknown => entries.clear(),
        }
    }
}
