//! The one in-process cache of Herald's services (endpoints in the dispatcher, API keys and
//! junk tokens in every service serving tenants, subscription indexes in ingest): answers kept
//! for a TTL, dropped at once when a change notice says they are stale, bounded in number.
//!
//! Invariant: a value loaded before an invalidation is never kept after it. A loader takes a
//! [`Ticket`] before reading the database and hands it back with the value; every invalidation
//! (under the same lock as the entries) makes older tickets void, so a load that raced a change
//! notice is used once by its caller but not cached.
//!
//! When full, entries older than the TTL (or than the longer `keep` a stale-while-refresh user
//! asks for) are dropped first, then everything: forgetting costs only loads.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Proof of when a load began: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// Values by key for a TTL; see the module docs.
pub struct TtlCache<K, V> {
    ttl: Duration,
    keep: Duration,
    max: usize,
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    /// Each value and when it was loaded (`None`: expired by an invalidation, still known).
    entries: HashMap<K, (Option<Instant>, V)>,
    generation: u64,
}

impl<K: Eq + Hash, V> TtlCache<K, V> {
    /// At most `max` entries, each fresh for `ttl`.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            keep: ttl,
            max,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                generation: 0,
            }),
        }
    }

    /// Keeps entries up to `keep` old when the cache is full (for a user that serves entries
    /// past their TTL while it refreshes them).
    pub fn keep_for(mut self, keep: Duration) -> Self {
        self.keep = keep.max(self.ttl);
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // A panic under the lock leaves a map that is still consistent: keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `f` with the entry of `key` and its age (`None`: expired by an invalidation),
    /// under the lock; `None` when there is no entry.
    pub fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&mut V, Option<Duration>) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut inner = self.lock();
        let (at, value) = inner.entries.get_mut(key)?;
        let age = at.map(|at| at.elapsed());
        Some(f(value, age))
    }

    /// The value of `key` if it is younger than the TTL.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
        V: Clone,
    {
        let ttl = self.ttl;
        self.with(key, |v, age| {
            age.is_some_and(|a| a < ttl).then(|| v.clone())
        })
        .flatten()
    }

    /// The ticket of a load starting now.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// Keeps `value`, fresh from now, unless something was invalidated since `ticket` was
    /// taken; true when kept.
    pub fn insert(&self, key: K, value: V, ticket: Ticket) -> bool {
        let mut inner = self.lock();
        if inner.generation != ticket.0 {
            return false;
        }
        self.make_room(&mut inner);
        inner.entries.insert(key, (Some(Instant::now()), value));
        true
    }

    /// Makes `key` known with `value`, already expired (to be confirmed before use), unless it
    /// has an entry.
    pub fn insert_expired(&self, key: K, value: V) {
        let mut inner = self.lock();
        if !inner.entries.contains_key(&key) {
            self.make_room(&mut inner);
            inner.entries.insert(key, (None, value));
        }
    }

    fn make_room(&self, inner: &mut Inner<K, V>) {
        if inner.entries.len() < self.max {
            return;
        }
        let keep = self.keep;
        inner
            .entries
            .retain(|_, (at, _)| at.is_some_and(|at| at.elapsed() < keep));
        if inner.entries.len() >= self.max {
            inner.entries.clear();
        }
    }

    /// Drops `key`.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.remove(key);
    }

    /// Drops the entries `stale` says are stale.
    pub fn remove_where(&self, mut stale: impl FnMut(&K, &V) -> bool) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.retain(|k, (_, v)| !stale(k, v));
    }

    /// Expires the entries `stale` says are stale: they stay known, to be loaded again.
    pub fn expire_where(&self, mut stale: impl FnMut(&K, &V) -> bool) {
        let mut inner = self.lock();
        inner.generation += 1;
        for (k, (at, v)) in inner.entries.iter_mut() {
            if stale(k, v) {
                *at = None;
            }
        }
    }

    /// Drops everything.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_ms: u64, max: usize) -> TtlCache<u32, &'static str> {
        TtlCache::new(Duration::from_millis(ttl_ms), max)
    }

    #[test]
    fn values_are_fresh_for_the_ttl() {
        let c = cache(50, 10);
        assert!(c.insert(1, "a", c.ticket()));
        assert_eq!(c.get(&1), Some("a"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&1), None);
        // Still there for a user that serves stale entries.
        assert!(
            c.with(&1, |v, age| (*v, age.unwrap() >= Duration::from_millis(50)))
                == Some(("a", true))
        );
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_kept() {
        let c = cache(60_000, 10);
        let ticket = c.ticket();
        c.remove(&2);
        assert!(!c.insert(1, "old", ticket));
        assert_eq!(c.get(&1), None);
        assert!(c.insert(1, "new", c.ticket()));
        assert_eq!(c.get(&1), Some("new"));
    }

    #[test]
    fn invalidations_drop_or_expire_what_they_name() {
        let c = cache(60_000, 10);
        for (k, v) in [(1, "a"), (2, "b"), (3, "a")] {
            c.insert(k, v, c.ticket());
        }
        c.remove_where(|_, v| *v == "b");
        assert_eq!((c.get(&1), c.get(&2)), (Some("a"), None));
        c.expire_where(|k, _| *k == 1);
        assert_eq!(c.get(&1), None);
        assert_eq!(c.with(&1, |v, age| (*v, age)), Some(("a", None)));
        assert_eq!(c.get(&3), Some("a"));
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn known_entries_wait_expired_until_confirmed() {
        let c = cache(60_000, 10);
        c.insert_expired(1, "warm");
        assert_eq!(c.get(&1), None);
        c.insert(1, "confirmed", c.ticket());
        c.insert_expired(1, "warm again");
        assert_eq!(c.get(&1), Some("confirmed"));
    }

    #[test]
    fn a_full_cache_drops_old_entries_first_then_everything() {
        let c = cache(30, 3);
        c.insert(1, "old", c.ticket());
        std::thread::sleep(Duration::from_millis(40));
        c.insert(2, "b", c.ticket());
        c.insert(3, "c", c.ticket());
        c.insert(4, "d", c.ticket());
        assert_eq!(c.len(), 3);
        assert!(c.with(&1, |_, _| ()).is_none());
        c.insert(5, "e", c.ticket());
        assert_eq!((c.len(), c.get(&5)), (1, Some("e")));
    }
}
