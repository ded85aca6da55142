//! Per-endpoint rate limit shared by every dispatcher: a token bucket in Redis, refilled at the
//! endpoint's rate with a burst of one second's worth, taken atomically by a Lua script. A
//! delivery over the limit waits for its token; it is never failed or dropped.

use std::time::Duration;

use uuid::Uuid;

/// Takes one token if there is one; otherwise answers how many milliseconds until there is.
/// KEYS[1] bucket; ARGV[1] rate per second; ARGV[2] now in ms.
const TAKE: &str = r"
local rate = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local burst = rate
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then tokens = burst; at = now end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  at = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(2000 + 2000 * burst / rate))
return wait
";

#[derive(Clone)]
pub struct RateLimiter {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl RateLimiter {
    pub fn new(redis: redis::aio::ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            script: redis::Script::new(TAKE),
        }
    }

    /// Zero when the delivery may go now, else how long to wait before asking again. Without
    /// Redis the limit cannot be shared: the delivery goes (better late limits than none sent).
    pub async fn take(&self, endpoint: Uuid, per_second: u32) -> Duration {
        let mut conn = self.redis.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let r: redis::RedisResult<u64> = self
            .script
            .key(format!("{}:rate:{endpoint}", self.prefix))
            .arg(per_second)
            .arg(now)
            .invoke_async(&mut conn)
            .await;
        match r {
            Ok(ms) => Duration::from_millis(ms),
            Err(e) => {
                tracing::warn!(endpoint_id = %endpoint, error = %e, "rate limit unavailable (redis), delivering without it");
                Duration::ZERO
            }
        }
    }
}
