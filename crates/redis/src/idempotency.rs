//! Idempotency keys in Redis: a publisher's key remembers the event it was accepted as.
//!
//! A key is first reserved as `pending <event id> <deadline>` before the hand-off to the
//! broker, then set to the event id and delivery count once the broker confirmed, for the
//! configured TTL. A second publish with the key gets the first event id back
//! (`duplicate = true`); one that arrives while the first is still in flight is told to retry
//! ([`Error::KeyBusy`]) instead of being told an event exists that might yet fail.
//!
//! A publish that may have been partly handed off (the broker failed mid-way, or ingest died
//! and the deadline passed) is *resumed* by the next publish with the key: same event id, hence
//! the same delivery ids, so whatever the first try got through (delivery tasks, the event
//! record) and what the retry sends are one event in the ledger and one delivery id per
//! endpoint for receivers, never a second event.
//!
//! A key also holds a fingerprint of what was published (SHA-256 of the event type and the
//! payload): a key reused for a different event is refused ([`Error::KeyReused`]) instead of
//! being answered with the first event, which would drop the second one without a word, or
//! resumed under the first event's ids, which would deliver a body the ledger never recorded.
//! An accepted key's value is `<id> <n> <fingerprint>`; a reservation's fingerprint sits in a
//! sibling key, so the reservation keeps the form an older ingest reads during a rolling
//! upgrade. A value without a fingerprint (written before) matches anything.
//!
//! Redis keys: `<prefix>:idem:<tenant>:<key>` holds a key, `<prefix>:idem-fp:<tenant>:<key>`
//! its reservation's fingerprint. The caller's key is the whole rest of the Redis key and the
//! two families differ before it, so no two (tenant, key) pairs share a Redis key, in either
//! family. (The sibling used to be `<key>:fp` beside the key: a tenant's key `K:fp` was then
//! the sibling of its key `K`. Siblings of that form, left by an older ingest, hold 32 hex
//! digits, a value no key ever holds: [`RESERVE`] reads one as a free key.)

use std::time::Duration;

use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Value prefix of a reservation not yet accepted.
const PENDING: &str = "pending";

/// Reserve a key: fresh, resume a pending reservation past its deadline, or report what holds
/// it. KEYS[1] key; KEYS[2] its reservation's fingerprint; ARGV[1] candidate event id; ARGV[2]
/// now (ms); ARGV[3] deadline (ms); ARGV[4] key TTL (ms); ARGV[5] fingerprint. Returns
/// {outcome, value}.
const RESERVE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and #cur == 32 and not string.find(cur, '[^0-9a-f]') then cur = false end
if not cur then
  redis.call('SET', KEYS[1], 'pending ' .. ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[4])
  redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[4])
  return {'fresh', ARGV[1]}
end
if cur == 'pending' then return {'busy', ''} end
local id, deadline = string.match(cur, '^pending (%S+) (%d+)$')
if id then
  local fp = redis.call('GET', KEYS[2])
  if fp and fp ~= ARGV[5] then return {'mismatch', ''} end
  if tonumber(deadline) <= tonumber(ARGV[2]) then
    redis.call('SET', KEYS[1], 'pending ' .. id .. ' ' .. ARGV[3], 'PX', ARGV[4])
    redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[4])
    return {'resume', id}
  end
  return {'busy', ''}
end
return {'done', cur}
";

/// Idempotency keys of every tenant under one Redis prefix; cheap to clone.
#[derive(Clone)]
pub struct Idempotency {
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
    /// How long a reservation stays `pending` when its publish never completes (ingest died).
    pending_ttl: Duration,
    /// [`RESERVE`], hashed once.
    reserve: redis::Script,
}

/// Outcome of reserving a key.
pub enum Reservation {
    /// The key is ours: publish the event under this id (new, or the id of an earlier try that
    /// may have been partly handed off).
    Publish { event_id: Uuid },
    /// An event was already accepted with this key.
    Duplicate { event_id: Uuid, deliveries: u32 },
}

/// What a key stands for: SHA-256 of the event type and the payload (length-prefixed, so no
/// two pairs collide by concatenation), 32 hex digits.
pub fn fingerprint(event_type: &str, payload: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update((event_type.len() as u64).to_be_bytes())
        .chain_update(event_type.as_bytes())
        .chain_update(payload)
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl Idempotency {
    /// Keys live `ttl` once accepted; a reservation whose publish never completes is resumable
    /// after `pending_ttl`.
    pub fn new(
        redis: ConnectionManager,
        prefix: &str,
        ttl: Duration,
        pending_ttl: Duration,
    ) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            ttl,
            pending_ttl,
            reserve: redis::Script::new(RESERVE),
        }
    }

    fn key(&self, tenant: Uuid, key: &str) -> String {
        redis_key(&self.prefix, tenant, key)
    }

    /// Where a reservation of `key` keeps its fingerprint.
    fn fingerprint_key(&self, tenant: Uuid, key: &str) -> String {
        fingerprint_redis_key(&self.prefix, tenant, key)
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> bool {
        let mut conn = self.redis.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    /// `fingerprint` is [`fingerprint`] of the event being published with `key`.
    pub async fn reserve(&self, tenant: Uuid, key: &str, fingerprint: &str) -> Result<Reservation> {
        let mut conn = self.redis.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let deadline = now + self.pending_ttl.as_millis().max(1) as i64;
        let (outcome, value): (String, String) = self
            .reserve
            .key(self.key(tenant, key))
            .key(self.fingerprint_key(tenant, key))
            .arg(Uuid::now_v7().to_string())
            .arg(now)
            .arg(deadline)
            .arg(self.ttl.as_millis().max(1) as u64)
            .arg(fingerprint)
            .invoke_async(&mut conn)
            .await?;
        match outcome.as_str() {
            "fresh" | "resume" => {
                let event_id = Uuid::parse_str(&value).map_err(|_| {
                    Error::Unreadable(format!("unreadable idempotency reservation {value:?}"))
                })?;
                if outcome == "resume" {
                    metrics::counter!("herald_idempotency_resumed_total").increment(1);
                    tracing::info!(%event_id, "resuming an interrupted publish with its event id");
                }
                Ok(Reservation::Publish { event_id })
            }
            "busy" => Err(Error::KeyBusy),
            "mismatch" => Err(Error::KeyReused),
            _ => parse(&value, fingerprint),
        }
    }

    /// The broker confirmed the event: the key answers `event_id` and its `deliveries` from now
    /// on.
    pub async fn complete(
        &self,
        tenant: Uuid,
        key: &str,
        fingerprint: &str,
        event_id: Uuid,
        deliveries: u32,
    ) {
        let mut conn = self.redis.clone();
        // The accepted value carries the fingerprint itself: the reservation's goes.
        let r: redis::RedisResult<()> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.key(tenant, key))
            .arg(format!("{event_id} {deliveries} {fingerprint}"))
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .ignore()
            .cmd("DEL")
            .arg(self.fingerprint_key(tenant, key))
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, %event_id, "could not record idempotency key; a retry within a minute would be treated as new");
        }
    }

    /// The hand-off failed part-way (or may have): the next publish with the key resumes this
    /// event id at once instead of waiting for the deadline.
    pub async fn interrupted(&self, tenant: Uuid, key: &str, fingerprint: &str, event_id: Uuid) {
        let mut conn = self.redis.clone();
        let ttl = self.ttl.as_millis().max(1) as u64;
        let r: redis::RedisResult<()> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.key(tenant, key))
            .arg(format!("{PENDING} {event_id} 0"))
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("SET")
            .arg(self.fingerprint_key(tenant, key))
            .arg(fingerprint)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, %event_id, "could not mark an interrupted publish resumable; a retry waits for its deadline");
        }
    }

    /// Nothing was handed off: forget the reservation.
    pub async fn release(&self, tenant: Uuid, key: &str) {
        let mut conn = self.redis.clone();
        let r: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.key(tenant, key))
            .arg(self.fingerprint_key(tenant, key))
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not release idempotency key; it expires within a minute");
        }
    }
}

/// The Redis key of a tenant's idempotency key (the layout is in the module docs).
fn redis_key(prefix: &str, tenant: Uuid, key: &str) -> String {
    format!("{prefix}:idem:{tenant}:{key}")
}

/// The Redis key holding the fingerprint of a reservation of `key`.
fn fingerprint_redis_key(prefix: &str, tenant: Uuid, key: &str) -> String {
    format!("{prefix}:idem-fp:{tenant}:{key}")
}

/// Reads an accepted key's value, `<event id> <deliveries> [<fingerprint>]`.
fn parse(value: &str, fingerprint: &str) -> Result<Reservation> {
    let mut parts = value.split(' ');
    let event_id = parts.next().and_then(|p| Uuid::parse_str(p).ok());
    let deliveries = parts.next().and_then(|p| p.parse().ok());
    let stored = parts.next().filter(|p| !p.is_empty());
    match (event_id, deliveries) {
        (Some(_), Some(_)) if stored.is_some_and(|f| f != fingerprint) => Err(Error::KeyReused),
        (Some(event_id), Some(deliveries)) => Ok(Reservation::Duplicate {
            event_id,
            deliveries,
        }),
        _ => Err(Error::Unreadable(format!(
            "unreadable idempotency record {value:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_events_apart() {
        let a = fingerprint("a.b", b"{}");
        assert_eq!(a.len(), 32);
        assert_eq!(a, fingerprint("a.b", b"{}"));
        assert_ne!(a, fingerprint("a.b", b"{ }"));
        assert_ne!(a, fingerprint("a.c", b"{}"));
        // The type is length-prefixed: moving bytes between type and payload changes it.
        assert_ne!(fingerprint("a.b{", b"}"), fingerprint("a.b", b"{}"));
    }

    #[test]
    fn no_two_keys_share_a_redis_key() {
        let (t1, t2) = (Uuid::now_v7(), Uuid::now_v7());
        let keys = [
            "K",
            "K:fp",
            "K:fp:fp",
            "fp",
            ":fp",
            "K:",
            "",
            "idem-fp:K",
            "a:b",
            "a",
        ];
        let mut seen = std::collections::HashMap::new();
        for tenant in [t1, t2] {
            for key in keys {
                for (family, redis) in [
                    ("key", redis_key("herald", tenant, key)),
                    ("fingerprint", fingerprint_redis_key("herald", tenant, key)),
                ] {
                    if let Some(other) = seen.insert(redis.clone(), (tenant, key, family)) {
                        panic!(
                            "{redis:?} is both {other:?} and {:?}",
                            (tenant, key, family)
                        );
                    }
                }
            }
        }
        // The attack this guards against: the key `K:fp` was the fingerprint sibling of `K`.
        assert_ne!(
            redis_key("herald", t1, "K:fp"),
            fingerprint_redis_key("herald", t1, "K")
        );
        // Keys accepted before keep their Redis key.
        assert_eq!(
            redis_key("herald", t1, "order-42"),
            format!("herald:idem:{t1}:order-42")
        );
    }

    #[test]
    fn an_accepted_key_answers_only_its_own_event() {
        let id = Uuid::now_v7();
        let fp = fingerprint("a.b", b"{}");
        let value = format!("{id} 3 {fp}");
        match parse(&value, &fp) {
            Ok(Reservation::Duplicate {
                event_id,
                deliveries,
            }) => assert_eq!((event_id, deliveries), (id, 3)),
            _ => panic!("expected the first event back"),
        }
        let other = fingerprint("a.b", b"{\"n\":1}");
        assert!(
            matches!(parse(&value, &other), Err(Error::KeyReused)),
            "expected a reused key to be refused"
        );
        // Written before fingerprints: matches anything.
        assert!(matches!(
            parse(&format!("{id} 3"), &other),
            Ok(Reservation::Duplicate { .. })
        ));
        assert!(matches!(parse("garbage", &fp), Err(Error::Unreadable(_))));
    }
}
