//! What a tenant's re-sends may cost. `Redeliver` and `ReplayEndpoint` put deliveries back on
//! the work queues like a publish does, and a replay also reads up to 10,000 deliveries with
//! their payloads: unbounded, one tenant could flood the dispatchers and hold the ledger's pool.
//!
//! - **Rate.** Re-sends are publishes: each delivery re-sent takes one token from the tenant's
//!   publish bucket, the Redis token bucket ingest's `Publish` and `SendTest` take from (its
//!   `publish_rate_limit`, else `HERALD_PUBLISH_RATE_LIMIT`; burst `HERALD_PUBLISH_BURST`). A
//!   replay of N deliveries takes N tokens, a page at a time ([`Budget::take`]); over the rate a
//!   call gets `RESOURCE_EXHAUSTED` with `RetryInfo`, as a publish does.
//! - **Concurrency.** At most `HERALD_REPLAY_CONCURRENCY` replays per tenant at once across
//!   every ledger: a lease in Redis ([`Budget::lease_replay`]), a sorted set of holders scored
//!   by expiry, renewed after every page and given back at the end. A ledger killed mid-replay
//!   blocks the tenant's replays until its lease expires (`HERALD_REPLAY_LEASE_TTL`), never
//!   longer. `Redeliver` is one delivery: the rate bounds it.
//!
//! Redis is optional for the ledger: while it cannot answer (within [`REDIS_WAIT`]) re-sends are
//! neither charged nor leased, as ingest does not enforce the publish rate then.

use std::time::Duration;

use herald_redis::{RateLimiter, Take};
use uuid::Uuid;

use crate::config::Config;

/// Longest a re-send waits for Redis before going on without its limits.
pub const REDIS_WAIT: Duration = Duration::from_secs(1);

/// Takes a slot in a tenant's lease set unless it is full, or renews one held. Expired
/// holders (a ledger that died) are dropped first. KEYS[1] lease set; ARGV[1] holder; ARGV[2]
/// now in ms; ARGV[3] TTL in ms; ARGV[4] slots. Returns 1 when held, 0 when full.
const LEASE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// How a re-send was charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charged {
    /// Its tokens were taken (or the tenant has no limit).
    Taken,
    /// Redis could not answer: the rate is not enforced.
    Unenforced,
}

/// Re-send limits of every tenant.
#[derive(Clone)]
pub struct Budget {
    redis: redis::aio::ConnectionManager,
    limiter: RateLimiter,
    prefix: String,
    lease: redis::Script,
    default_rate: u32,
    burst: Duration,
    replays: u32,
    lease_ttl: Duration,
}

/// A replay's place among the tenant's replays; given back when dropped.
pub struct Lease {
    budget: Budget,
    key: String,
    holder: String,
    /// Whether Redis holds it (false: Redis was away, nothing to renew or give back).
    held: bool,
}

impl Budget {
    /// Limits over a Redis connection made on first use, so that the ledger starts and serves
    /// without Redis.
    pub fn new(config: &Config) -> redis::RedisResult<Self> {
        let client = redis::Client::open(config.common.redis_url.as_str())?;
        let options = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_WAIT))
            .set_response_timeout(Some(REDIS_WAIT))
            .set_number_of_retries(1);
        let redis = redis::aio::ConnectionManager::new_lazy_with_config(client, options)?;
        let prefix = config.common.redis_prefix.clone();
        Ok(Self {
            limiter: RateLimiter::new(redis.clone(), &prefix),
            redis,
            prefix,
            lease: redis::Script::new(LEASE),
            default_rate: config.publish_rate_limit,
            burst: config.publish_burst,
            replays: config.replay_concurrency,
            lease_ttl: config.replay_lease_ttl,
        })
    }

    /// The tenant's publish rate (its own setting, else the default; 0: unlimited).
    pub fn rate(&self, tenant_rate: Option<i32>) -> u32 {
        tenant_rate.map_or(self.default_rate, |r| r.max(0) as u32)
    }

    /// Most tokens the tenant's bucket holds at `rate` (the largest replay page under it).
    pub fn burst(&self, rate: u32) -> u32 {
        herald_redis::publish_burst(rate, self.burst)
    }

    /// Takes `n` tokens (at most the burst) from the tenant's publish bucket; `Err` is how long
    /// until they are there.
    pub async fn take(&self, tenant: Uuid, rate: u32, n: u32) -> Result<Charged, Duration> {
        if rate == 0 || n == 0 {
            return Ok(Charged::Taken);
        }
        let taken = self.limiter.take_publish(tenant, rate, self.burst, n);
        match within(taken).await {
            Ok(Take::Now) => Ok(Charged::Taken),
            Ok(Take::Wait(d)) => Err(d),
            // Pages are cut to the burst: only a burst lowered meanwhile.
            Ok(Take::AboveBurst) => Err(Duration::from_secs(1)),
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "publish rate limit unavailable (redis), re-send not charged");
                Ok(Charged::Unenforced)
            }
        }
    }

    /// A place among the tenant's running replays, or `RESOURCE_EXHAUSTED` naming the limit.
    pub async fn lease_replay(&self, tenant: Uuid) -> crate::error::Result<Lease> {
        let mut lease = Lease {
            budget: self.clone(),
            key: format!("{}:replays:{tenant}", self.prefix),
            holder: Uuid::now_v7().to_string(),
            held: false,
        };
        match lease.hold().await {
            Ok(true) => {
                lease.held = true;
                Ok(lease)
            }
            Ok(false) => {
                metrics::counter!("herald_resends_refused_total", "limit" => "replay_concurrency")
                    .increment(1);
                Err(crate::error::Error::ResourceExhausted(format!(
                    "at most {} ReplayEndpoint call(s) of a tenant at once (HERALD_REPLAY_CONCURRENCY): another replay of this tenant is running; retry when it has finished",
                    self.replays
                )))
            }
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "replay lease unavailable (redis), replaying without it");
                Ok(lease)
            }
        }
    }
}

impl Lease {
    /// Takes or renews the lease for another TTL: false when the tenant's slots are full.
    async fn hold(&self) -> redis::RedisResult<bool> {
        let b = &self.budget;
        let mut conn = b.redis.clone();
        let mut call = b.lease.key(&self.key);
        call.arg(&self.holder)
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(b.lease_ttl.as_millis() as u64)
            .arg(b.replays);
        let held: i64 = within(call.invoke_async(&mut conn)).await?;
        Ok(held == 1)
    }

    /// Renews the lease after a page. False when it was lost (it expired and another replay
    /// took the slot): the replay should stop where it is. Without Redis the replay goes on
    /// unleased (its lease expires by itself).
    pub async fn renew(&mut self) -> bool {
        if !self.held {
            return true;
        }
        match self.hold().await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "replay lease not renewed (redis), going on without it");
                self.held = false;
                true
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let (mut conn, key, holder) = (
            self.budget.redis.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.holder),
        );
        // Given back at once; if Redis does not take it, the lease expires by itself.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(&key).arg(&holder);
                if let Err(e) = within(zrem.query_async::<i64>(&mut conn)).await {
                    tracing::warn!(error = %e, "replay lease not given back (redis), it expires by itself");
                }
            });
        }
    }
}

/// `call`'s answer, or a timeout error after [`REDIS_WAIT`].
async fn within<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(REDIS_WAIT, call)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
}

/// A re-send over the tenant's publish rate, counted.
pub fn rate_limited(rate: u32, retry_after: Duration) -> crate::error::Error {
    metrics::counter!("herald_resends_refused_total", "limit" => "rate").increment(1);
    crate::error::Error::RateLimited { rate, retry_after }
}
