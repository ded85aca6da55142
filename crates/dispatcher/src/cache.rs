//! Short-lived endpoint cache: a burst of deliveries to one endpoint costs one query, while
//! toggles, deletes and secret changes still apply to retries within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_store::{Endpoint, Store};
use uuid::Uuid;

/// Endpoint id → (when it was loaded, the endpoint or `None` when it does not exist).
type Entries = HashMap<Uuid, (Instant, Option<Arc<Endpoint>>)>;

#[derive(Clone)]
pub struct EndpointCache {
    store: Store,
    ttl: Duration,
    entries: Arc<Mutex<Entries>>,
}

impl EndpointCache {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            entries: Arc::default(),
        }
    }

    /// The endpoint, `None` once deleted.
    pub async fn get(&self, id: Uuid) -> herald_store::Result<Option<Arc<Endpoint>>> {
        if let Some((at, e)) = self.entries.lock().expect("endpoint cache lock").get(&id)
            && at.elapsed() < self.ttl
        {
            return Ok(e.clone());
        }
        let loaded = self.store.find_endpoint(id).await?.map(Arc::new);
        let mut entries = self.entries.lock().expect("endpoint cache lock");
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
}
