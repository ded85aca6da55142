//! API key authentication with a short cache, shared by every service that serves tenants.
//!
//! A hit costs no database round trip; a revoked key stops working at once on the instance that
//! revoked it, and on the others when its change notice arrives ([`crate::Change`]; within
//! the cache TTL if the notice is lost).
//!
//! Unknown credentials are cheap, so that a flood of junk bearer tokens cannot take the pool
//! from real tenants: a token found invalid is remembered (by its SHA-256, never in clear) for
//! [`REJECTED_TTL`], at most [`REJECTED_MAX`] of them, and tokens this process has never seen
//! are looked up at most `lookup_rate` times per second (`HERALD_AUTH_LOOKUP_RATE`); past that
//! they are answered [`KeyCheck::Unchecked`] without a query. Keys that were valid once keep
//! their place: a stale or invalidated entry is looked up again outside that limit, so real
//! tenants never wait behind junk, and [`KeyCache::warm`] makes every live key known at start,
//! so a restart does not put them behind it either. Counted in
//! `herald_auth_unknown_keys_total{outcome}` (`rejected_cached`, `looked_up`, `limited`).
//!
//! A credential (API key or portal session) answers with its [`Principal`]: tenant, scopes and
//! expiry. An entry never outlives its credential: past `expires_at` the cached answer is
//! dropped and the token is `Invalid`, whatever the cache TTL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_core::ttl_cache::TtlCache;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::scopes::{CredentialKind, Principal, Scopes};
use crate::{Result, Store, hash_api_key};

/// How long a token found invalid is answered from memory.
pub const REJECTED_TTL: Duration = Duration::from_secs(30);
/// Most invalid tokens remembered (32-byte hashes): about 1 MiB with the map's overhead.
pub const REJECTED_MAX: usize = 10_000;
/// Lookups per second of tokens this process has not seen, unless configured.
pub const DEFAULT_LOOKUP_RATE: u32 = 200;
/// Most valid keys remembered.
const KEYS_MAX: usize = 100_000;

/// Outcome of presenting credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// A live credential: whose, what it may do, until when.
    Tenant(Principal),
    Missing,
    Invalid,
    /// Not looked up: too many unknown tokens reached this process lately. A real key that is
    /// new here works once the flood passes; the caller should retry shortly.
    Unchecked,
}

/// Maps API keys (and portal sessions) to their principals, remembering answers for a short
/// while.
#[derive(Clone)]
pub struct KeyCache {
    store: Store,
    /// Valid keys' principals by key hash; an invalidated entry stays known, to be confirmed
    /// before use. A lookup that raced with a revocation is not kept ([`TtlCache`]).
    entries: Arc<TtlCache<Vec<u8>, Principal>>,
    /// Hashes of tokens found invalid.
    rejected: Arc<TtlCache<Vec<u8>, ()>>,
    /// Budget of lookups of tokens never seen here.
    lookups: Arc<Mutex<Bucket>>,
}

/// An in-process token bucket (no Redis: it protects this process's own pool).
struct Bucket {
    /// Tokens per second and the most held; 0: unlimited.
    rate: u32,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            rate,
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = f64::from(self.rate);
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What memory says of a key hash.
enum Known {
    Valid(Principal),
    /// Valid once, to be confirmed.
    Stale,
    Rejected,
    Unknown,
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

/// Whether `token` is `expected`, in time that depends on neither (their SHA-256 digests are
/// compared, so not even the length of the expected secret shows).
pub fn same_secret(token: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(token.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
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

fn unknown_key(outcome: &'static str) {
    metrics::counter!("herald_auth_unknown_keys_total", "outcome" => outcome).increment(1);
}

impl KeyCache {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            store,
            entries: Arc::new(TtlCache::new(ttl, KEYS_MAX)),
            rejected: Arc::new(TtlCache::new(REJECTED_TTL, REJECTED_MAX)),
            lookups: Arc::new(Mutex::new(Bucket::new(DEFAULT_LOOKUP_RATE))),
        }
    }

    /// Looks up at most `per_second` tokens never seen here per second (0: no limit).
    pub fn with_lookup_rate(self, per_second: u32) -> Self {
        *self.lookups.lock().expect("key lookup budget lock") = Bucket::new(per_second);
        self
    }

    /// Makes every live key known (at most [`KEYS_MAX`], the newest), each to be confirmed
    /// on its first use: a restart then does not make real tenants' keys compete with junk
    /// for the budget of unknown tokens. Runs in the background; without the database the
    /// keys are learnt as they come.
    pub fn warm(&self) {
        let cache = self.clone();
        tokio::spawn(async move {
            let sql = format!(
                "SELECT key_hash, {PRINCIPAL_COLUMNS} FROM api_keys
                 WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
                 ORDER BY created_at DESC LIMIT $1"
            );
            let rows: Result<Vec<KeyRow>, sqlx::Error> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(KEYS_MAX as i64)
                .fetch_all(cache.store.pool())
                .await;
            match rows {
                Ok(rows) => {
                    let known = rows.len();
                    for (hash, tenant, id, scopes, expires_at, kind) in rows {
                        let p = principal((tenant, id, scopes, expires_at, kind));
                        cache.entries.insert_expired(hash, p);
                    }
                    tracing::debug!(keys = known, "api keys known");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "api keys not loaded at start, learnt as they come")
                }
            }
        });
    }

    /// Checks an `authorization` header value.
    pub async fn check(&self, authorization: Option<&str>) -> Result<KeyCheck> {
        let Some(key) = bearer(authorization) else {
            return Ok(KeyCheck::Missing);
        };
        let hash = hash_api_key(key);
        match self.known(&hash) {
            Known::Valid(p) if p.expired(Utc::now()) => {
                self.forget(hash);
                return Ok(KeyCheck::Invalid);
            }
            Known::Valid(p) => return Ok(KeyCheck::Tenant(p)),
            Known::Rejected => {
                unknown_key("rejected_cached");
                return Ok(KeyCheck::Invalid);
            }
            Known::Unknown if !self.lookups.lock().expect("key lookup budget lock").take() => {
                unknown_key("limited");
                return Ok(KeyCheck::Unchecked);
            }
            Known::Unknown => unknown_key("looked_up"),
            Known::Stale => {}
        }
        // An invalidation since the lookup began may concern this key: answer, but do not
        // remember (the next call looks again).
        let ticket = self.entries.ticket();
        match self.store.authenticate(&hash).await? {
            Some(p) => {
                self.entries.insert(hash, p, ticket);
                Ok(KeyCheck::Tenant(p))
            }
            None => {
                self.forget(hash);
                Ok(KeyCheck::Invalid)
            }
        }
    }

    /// Remembers a token as invalid (revoked, expired or unknown).
    fn forget(&self, hash: Vec<u8>) {
        // A key valid once and not now was revoked or expired: forget it (only then, so that
        // junk tokens do not void other keys' lookups in flight).
        if self.entries.with(&hash, |_, _| ()).is_some() {
            self.entries.remove(&hash);
        }
        // When full, the expired go first, then everything (forgetting costs only lookups,
        // which the lookup budget bounds).
        self.rejected.insert(hash, (), self.rejected.ticket());
    }

    /// Takes one lookup from the budget of tokens never seen here (for other single-use
    /// tokens checked against the database, like portal links); false when it is spent.
    pub fn take_lookup(&self) -> bool {
        let taken = self.lookups.lock().expect("key lookup budget lock").take();
        unknown_key(if taken { "looked_up" } else { "limited" });
        taken
    }

    fn known(&self, hash: &[u8]) -> Known {
        let ttl = self.entries.ttl();
        let valid = self.entries.with(hash, |p, age| match age {
            Some(age) if age < ttl => Known::Valid(*p),
            _ => Known::Stale,
        });
        match valid {
            Some(known) => known,
            None if self.rejected.get(hash).is_some() => Known::Rejected,
            None => Known::Unknown,
        }
    }

    /// Makes every cached key be confirmed again before its next use (after a revocation).
    pub fn clear(&self) {
        self.entries.expire_where(|_, _| true);
    }

    /// Drops what a change notice makes stale: a tenant's keys when one of them (or the
    /// tenant) changed, everything when notices may have been missed. They stay known (looked
    /// up again outside the budget of unknown tokens), only their answers are forgotten.
    pub fn apply(&self, change: crate::Change) {
        match change {
            crate::Change::Tenant(t) => self.entries.expire_where(|_, p| p.tenant == t),
            crate::Change::Unknown => self.clear(),
            crate::Change::Endpoint { .. } => {}
        }
    }
}

/// A key's hash and the columns of [`PRINCIPAL_COLUMNS`].
type KeyRow = (
    Vec<u8>,
    Uuid,
    Uuid,
    Vec<String>,
    Option<DateTime<Utc>>,
    String,
);

/// The columns of [`PRINCIPAL_COLUMNS`].
pub(crate) type PrincipalRow = (Uuid, Uuid, Vec<String>, Option<DateTime<Utc>>, String);

/// Columns [`principal`] reads, in its order.
pub(crate) const PRINCIPAL_COLUMNS: &str = "tenant_id, id, scopes, expires_at, kind";

/// A principal from the row of [`PRINCIPAL_COLUMNS`].
pub(crate) fn principal((tenant, id, scopes, expires_at, kind): PrincipalRow) -> Principal {
    Principal {
        tenant,
        key_id: id,
        scopes: Scopes::from_stored(&scopes),
        expires_at,
        kind: CredentialKind::from_stored(&kind),
    }
}

#[cfg(test)]
mod tests {
    use super::{Bucket, bearer, same_secret};

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer   abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret("operator-token", "operator-token"));
        assert!(!same_secret("operator-token", "operator-tokem"));
        assert!(!same_secret("", "operator-token"));
    }

    #[test]
    fn lookups_of_unknown_keys_are_budgeted() {
        let mut bucket = Bucket::new(3);
        assert_eq!((0..10).filter(|_| bucket.take()).count(), 3);
        let mut unlimited = Bucket::new(0);
        assert!((0..1000).all(|_| unlimited.take()));
    }
}
