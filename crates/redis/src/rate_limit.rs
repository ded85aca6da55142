//! Rate limits shared by every process: token buckets in Redis, taken atomically by a Lua
//! script (one round trip, no race between instances).
//!
//! Per endpoint (dispatchers): refilled at the endpoint's rate with a burst of one second's
//! worth; a delivery over the limit waits for its token, it is never failed or dropped.
//! Per tenant (ingest and the ledger): a publish or re-send over the tenant's rate is refused
//! with a retry delay.
//!
//! Redis keys: `<prefix>:rate:<endpoint>` and `<prefix>:publish-rate:<tenant>`, hashes of the
//! bucket's tokens and the time they were counted.

use std::time::Duration;

use uuid::Uuid;

/// Takes `cost` tokens if there are that many; otherwise answers how many milliseconds until
/// there are (-1: never, `cost` is above the burst). KEYS[1] bucket; ARGV[1] rate per second;
/// ARGV[2] now in ms; ARGV[3] burst; ARGV[4] cost.
const TAKE: &str = r"
local rate = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
if cost > burst then return -1 end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then tokens = burst; at = now end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  at = now
end
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(2000 + 2000 * burst / rate))
return wait
";

/// What a bucket answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The tokens were taken.
    Now,
    /// Not enough tokens: ask again after this long.
    Wait(Duration),
    /// More than the burst: this cost can never be taken at once.
    AboveBurst,
}

/// Token buckets in Redis, shared by every process using the same prefix: per-endpoint
/// delivery rates (dispatchers) and per-tenant publish rates (ingest).
#[derive(Clone)]
pub struct RateLimiter {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    script: redis::Script,
}

/// Tokens a tenant's publish bucket holds at `rate` a second: `burst` worth of them, at least 1.
pub fn publish_burst(rate: u32, burst: Duration) -> u32 {
    ((u64::from(rate) * burst.as_millis() as u64) / 1000).clamp(1, u64::from(u32::MAX)) as u32
}

impl RateLimiter {
    pub fn new(redis: redis::aio::ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            script: redis::Script::new(TAKE),
        }
    }

    /// Takes `cost` tokens from the bucket `name` (refilled at `rate` per second, holding at
    /// most `burst`) in one atomic round trip.
    pub async fn take_from(
        &self,
        name: &str,
        rate: u32,
        burst: u32,
        cost: u32,
    ) -> redis::RedisResult<Take> {
        let mut conn = self.redis.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let ms: i64 = self
            .script
            .key(format!("{}:{name}", self.prefix))
            .arg(rate.max(1))
            .arg(now)
            .arg(burst.max(1))
            .arg(cost)
            .invoke_async(&mut conn)
            .await?;
        Ok(match ms {
            0 => Take::Now,
            ms if ms < 0 => Take::AboveBurst,
            ms => Take::Wait(Duration::from_millis(ms as u64)),
        })
    }

    /// Takes `cost` tokens from `tenant`'s publish bucket: publishes (ingest), test sends
    /// (ingest) and re-sends (the ledger) all draw from it, refilled at `rate` a second and
    /// holding [`publish_burst`]`(rate, burst)` tokens.
    pub async fn take_publish(
        &self,
        tenant: Uuid,
        rate: u32,
        burst: Duration,
        cost: u32,
    ) -> redis::RedisResult<Take> {
        let bucket = format!("publish-rate:{tenant}");
        self.take_from(&bucket, rate, publish_burst(rate, burst), cost)
            .await
    }

    /// Zero when the delivery may go now, else how long to wait before asking again. The
    /// burst is one second's worth. Without Redis the limit cannot be shared: the delivery goes
    /// (better late limits than none sent).
    pub async fn take(&self, endpoint: Uuid, per_second: u32) -> Duration {
        match self
            .take_from(&format!("rate:{endpoint}"), per_second, per_second, 1)
            .await
        {
            Ok(Take::Now | Take::AboveBurst) => Duration::ZERO,
            Ok(Take::Wait(d)) => d,
            Err(e) => {
                tracing::warn!(endpoint_id = %endpoint, error = %e, "rate limit unavailable (redis), delivering without it");
                Duration::ZERO
            }
        }
    }
}
