//! Per-tenant subscription index, cached so a publish costs no database query.
//!
//! Changes made through this instance invalidate the tenant's entry at once; changes made
//! through another instance apply within `HERALD_SUBSCRIPTION_CACHE_TTL`. A load that raced
//! with an invalidation is used once but not cached, so a stale index never outlives its TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::matching::{Matcher, parse_patterns};
use herald_store::Store;
use uuid::Uuid;

use crate::error::Result;

/// The enabled endpoints of one tenant, indexed by subscription.
pub type Index = Matcher<Uuid>;

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
        let endpoints = self.store.tenant_endpoints(tenant).await?;
        let index = Arc::new(Matcher::new(
            endpoints.into_iter().filter(|e| e.enabled).filter_map(|e| {
                // Stored patterns were validated at write time.
                parse_patterns(&e.event_types).ok().map(|p| (e.id, p))
            }),
        ));
        if self.generation.load(Ordering::Acquire) == generation {
            self.entries
                .lock()
                .expect("subscriptions lock")
                .insert(tenant, (Instant::now(), index.clone()));
        }
        Ok(index)
    }

    pub fn invalidate(&self, tenant: Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries
            .lock()
            .expect("subscriptions lock")
            .remove(&tenant);
    }
}
