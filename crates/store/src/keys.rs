//! API key authentication with a short cache, shared by every service that serves tenants.
//!
//! A hit costs no database round trip; a revoked key stops working at once on the instance that
//! revoked it, and on the others when its change notice arrives ([`crate::Change`]; within
//! the cache TTL if the notice is lost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::{Result, Store, hash_api_key};

/// Outcome of presenting credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyCheck {
    Tenant(Uuid),
    Missing,
    Invalid,
}

/// Key hash → (tenant, when it was looked up).
type Entries = HashMap<Vec<u8>, (Uuid, Instant)>;

/// Maps API keys to tenants, remembering answers for a short while.
#[derive(Clone)]
pub struct KeyCache {
    store: Store,
    ttl: Duration,
    entries: Arc<Mutex<Entries>>,
    /// Bumped (under the entries' lock) by every invalidation, so a lookup that raced with a
    /// revocation does not cache the answer it read before the revocation.
    generation: Arc<AtomicU64>,
}

/// The token of an `authorization: Bearer <token>` header value.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    let v = value?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `token` is `expected`, in time that depends on their lengths only.
pub fn same_secret(token: &str, expected: &str) -> bool {
    token.len() == expected.len()
        && token
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0
}

/// Whether an `authorization` header carries the operator token (`None`: no operator token is
/// configured). Tenant services refuse it with `PERMISSION_DENIED`, as the Admin service
/// refuses a tenant's key: known, but not for this service.
pub fn is_operator(authorization: Option<&str>, operator_token: Option<&str>) -> bool {
    match (bearer(authorization), operator_token) {
        (Some(given), Some(expected)) => same_secret(given, expected),
        _ => false,
    }
}

impl KeyCache {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            entries: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// Checks an `authorization` header value.
    pub async fn check(&self, authorization: Option<&str>) -> Result<KeyCheck> {
        let Some(key) = bearer(authorization) else {
            return Ok(KeyCheck::Missing);
        };
        let hash = hash_api_key(key);
        if let Some((tenant, at)) = self.entries.lock().expect("key cache lock").get(&hash)
            && at.elapsed() < self.ttl
        {
            return Ok(KeyCheck::Tenant(*tenant));
        }
        let generation = self.generation.load(Ordering::Acquire);
        match self.store.authenticate(&hash).await? {
            Some(tenant) => {
                let mut entries = self.entries.lock().expect("key cache lock");
                // An invalidation since the lookup began may concern this key: answer, but
                // do not remember (the next call looks again).
                if self.generation.load(Ordering::Acquire) == generation {
                    if entries.len() > 100_000 {
                        entries.clear();
                    }
                    entries.insert(hash, (tenant, Instant::now()));
                }
                Ok(KeyCheck::Tenant(tenant))
            }
            None => Ok(KeyCheck::Invalid),
        }
    }

    /// Forgets every cached key (after a revocation).
    pub fn clear(&self) {
        let mut entries = self.entries.lock().expect("key cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Drops what a change notice makes stale: a tenant's keys when one of them (or the
    /// tenant) changed, everything when notices may have been missed.
    pub fn apply(&self, change: crate::Change) {
        let mut entries = self.entries.lock().expect("key cache lock");
        if !matches!(change, crate::Change::Endpoint { .. }) {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        match change {
            crate::Change::Tenant(t) => entries.retain(|_, (tenant, _)| *tenant != t),
            crate::Change::Unknown => entries.clear(),
            crate::Change::Endpoint { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bearer;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer   abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
