//! Idempotency keys in Redis.
//!
//! A key is first reserved as `pending <event id> <deadline>` before the hand-off to the
//! broker, then set to the event id and delivery count once the broker confirmed, for the
//! configured TTL. A second publish with the key gets the first event id back
//! (`duplicate = true`); one that arrives while the first is still in flight is told to retry
//! (ABORTED) instead of being told an event exists that might yet fail.
//!
//! A publish that may have been partly handed off (the broker failed mid-way, or ingest died
//! and the deadline passed) is *resumed* by the next publish with the key: same event id, hence
//! the same delivery ids, so whatever the first try got through (delivery tasks, the event
//! record) and what the retry sends are one event in the ledger and one delivery id per
//! endpoint for receivers, never a second event.

use std::time::Duration;

use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::error::{Error, Result};

const PENDING: &str = "pending";

/// Reserve a key: fresh, resume a pending reservation past its deadline, or report what holds
/// it. KEYS[1] key; ARGV[1] candidate event id; ARGV[2] now (ms); ARGV[3] deadline (ms);
/// ARGV[4] key TTL (ms). Returns {outcome, value}.
const RESERVE: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], 'pending ' .. ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[4])
  return {'fresh', ARGV[1]}
end
if cur == 'pending' then return {'busy', ''} end
local id, deadline = string.match(cur, '^pending (%S+) (%d+)$')
if id then
  if tonumber(deadline) <= tonumber(ARGV[2]) then
    redis.call('SET', KEYS[1], 'pending ' .. id .. ' ' .. ARGV[3], 'PX', ARGV[4])
    return {'resume', id}
  end
  return {'busy', ''}
end
return {'done', cur}
";

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

impl Idempotency {
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
        format!("{}:idem:{tenant}:{key}", self.prefix)
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> bool {
        let mut conn = self.redis.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    pub async fn reserve(&self, tenant: Uuid, key: &str) -> Result<Reservation> {
        let mut conn = self.redis.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let deadline = now + self.pending_ttl.as_millis().max(1) as i64;
        let (outcome, value): (String, String) = self
            .reserve
            .key(self.key(tenant, key))
            .arg(Uuid::now_v7().to_string())
            .arg(now)
            .arg(deadline)
            .arg(self.ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?;
        match outcome.as_str() {
            "fresh" | "resume" => {
                let event_id = Uuid::parse_str(&value).map_err(|_| {
                    Error::Internal(format!("unreadable idempotency reservation {value:?}"))
                })?;
                if outcome == "resume" {
                    metrics::counter!("herald_idempotency_resumed_total").increment(1);
                    tracing::info!(%event_id, "resuming an interrupted publish with its event id");
                }
                Ok(Reservation::Publish { event_id })
            }
            "busy" => Err(Error::Aborted(
                "an event with this idempotency key is being published; retry shortly".into(),
            )),
            _ => parse(&value),
        }
    }

    pub async fn complete(&self, tenant: Uuid, key: &str, event_id: Uuid, deliveries: u32) {
        let mut conn = self.redis.clone();
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.key(tenant, key))
            .arg(format!("{event_id} {deliveries}"))
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, %event_id, "could not record idempotency key; a retry within a minute would be treated as new");
        }
    }

    /// The hand-off failed part-way (or may have): the next publish with the key resumes this
    /// event id at once instead of waiting for the deadline.
    pub async fn interrupted(&self, tenant: Uuid, key: &str, event_id: Uuid) {
        let mut conn = self.redis.clone();
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.key(tenant, key))
            .arg(format!("{PENDING} {event_id} 0"))
            .arg("PX")
            .arg(self.ttl.as_millis().max(1) as u64)
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
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not release idempotency key; it expires within a minute");
        }
    }
}

fn parse(value: &str) -> Result<Reservation> {
    let mut parts = value.split(' ');
    let event_id = parts.next().and_then(|p| Uuid::parse_str(p).ok());
    let deliveries = parts.next().and_then(|p| p.parse().ok());
    match (event_id, deliveries) {
        (Some(event_id), Some(deliveries)) => Ok(Reservation::Duplicate {
            event_id,
            deliveries,
        }),
        _ => Err(Error::Internal(format!(
            "unreadable idempotency record {value:?}"
        ))),
    }
}
