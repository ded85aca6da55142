//! Idempotency keys in Redis.
//!
//! A key is first reserved as `pending` (short TTL) before the hand-off to the broker, then
//! set to the event id and delivery count once the broker confirmed, for the configured TTL.
//! A second publish with the key gets the first event id back (`duplicate = true`); one that
//! arrives while the first is still in flight is told to retry (ABORTED) instead of being
//! told an event exists that might yet fail. A failed hand-off releases the key.

use std::time::Duration;

use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::error::{Error, Result};

const PENDING: &str = "pending";

#[derive(Clone)]
pub struct Idempotency {
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
    /// How long a reservation stays `pending` when its publish never completes (ingest died).
    pending_ttl: Duration,
}

/// Outcome of reserving a key.
pub enum Reservation {
    /// The key is ours: go ahead and publish.
    Fresh,
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
        let k = self.key(tenant, key);
        let mut conn = self.redis.clone();
        for _ in 0..3 {
            let set: Option<String> = redis::cmd("SET")
                .arg(&k)
                .arg(PENDING)
                .arg("NX")
                .arg("PX")
                .arg(self.pending_ttl.as_millis().max(1) as u64)
                .query_async(&mut conn)
                .await?;
            if set.is_some() {
                return Ok(Reservation::Fresh);
            }
            let existing: Option<String> = redis::cmd("GET").arg(&k).query_async(&mut conn).await?;
            match existing.as_deref() {
                // Expired between SET and GET: try to take it again.
                None => continue,
                Some(PENDING) => {
                    return Err(Error::Aborted(
                        "an event with this idempotency key is being published; retry shortly"
                            .into(),
                    ));
                }
                Some(value) => return parse(value),
            }
        }
        Err(Error::Aborted(
            "idempotency key is contended; retry shortly".into(),
        ))
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
