//! Per-tenant subscription index, cached so a publish costs no database query: the enabled
//! endpoints by subscription pattern with their payload filters (parsed once, here), and the
//! tenant's event-type policy (reject unknown types, and the live types it knows).
//!
//! Changes made through this instance invalidate the tenant's entry at once; changes made
//! through another instance arrive as Postgres change notices ([`herald_store::Change`]) and
//! invalidate it as soon, with `HERALD_SUBSCRIPTION_CACHE_TTL` as the bound when a notice is
//! lost. A load that raced with an invalidation is used once but not cached, so a stale index
//! never outlives its TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_store::{Store, SubscriptionIndex};
use uuid::Uuid;

use crate::error::Result;

/// What a publish needs to know about one tenant.
pub type Index = SubscriptionIndex;

pub struct Subscriptions {
    store: Store,
    ttl: Duration,
    generation: AtomicU64,
    entries: Mutex<HashMap<Uuid, (Instant, Arc<Index>)>>,
}

impl Subscriptions {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            generation: AtomicU64::new(0),
            entries: Mutex::default(),
        }
    }

    pub async fn index(&self, tenant: Uuid) -> Result<Arc<Index>> {
        if let Some((at, index)) = self
            .entries
            .lock()
            .expect("subscriptions lock")
            .get(&tenant)
            && at.elapsed() < self.ttl
        {
            return Ok(index.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let index = Arc::new(SubscriptionIndex::load(&self.store, tenant).await?);
        if self.generation.load(Ordering::Acquire) == generation {
            self.entries
                .lock()
                .expect("subscriptions lock")
                .insert(tenant, (Instant::now(), index.clone()));
        }
        Ok(index)
    }

    /// Drops what a change notice makes stale.
    pub fn apply(&self, change: herald_store::Change) {
        use herald_store::Change;
        match change {
            Change::Tenant(tenant) | Change::Endpoint { tenant, .. } => self.invalidate(tenant),
            Change::Unknown => {
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.entries.lock().expect("subscriptions lock").clear();
            }
        }
    }

    pub fn invalidate(&self, tenant: Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries
            .lock()
            .expect("subscriptions lock")
            .remove(&tenant);
    }
}
