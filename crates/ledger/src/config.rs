//! Ledger settings (`HERALD_*` environment variables over the defaults documented here).

use std::time::Duration;

use herald_core::config::{ApiLimits, Common, ConfigError, Reader};

#[derive(Clone, Debug)]
pub struct Config {
    pub common: Common,
    /// `HERALD_METRICS_ADDR`: HTTP address of `/metrics`, `/livez` and `/readyz`, default
    /// `127.0.0.1:9602`; `off` disables it.
    pub metrics_addr: String,
    /// `HERALD_LEDGER_ADDR`: gRPC listen address of the delivery log API, default
    /// `127.0.0.1:50052`.
    pub listen_addr: String,
    /// `HERALD_LEDGER_BATCH`: most broker messages written in one transaction, default 500.
    pub batch_messages: usize,
    /// `HERALD_LEDGER_BATCH_WAIT`: how long a batch waits to fill before it is written,
    /// default `20ms`.
    pub batch_wait: Duration,
    /// `HERALD_LEDGER_PREFETCH`: unacknowledged messages the broker hands the ledger, default
    /// 2000.
    pub prefetch: u16,
    /// `HERALD_PAYLOAD_RETENTION`: events (with their payloads) older than this are removed,
    /// default `720h` (30 days).
    pub payload_retention: Duration,
    /// `HERALD_ATTEMPT_RETENTION`: deliveries, attempts and hourly statistics older than this
    /// are removed, default `2160h` (90 days).
    pub attempt_retention: Duration,
    /// `HERALD_RETENTION_INTERVAL`: how often the retention sweep runs, default `1h`.
    pub retention_interval: Duration,
    /// `HERALD_LEDGER_PARTITIONS_AHEAD`: days of partitions of the ledger's tables made ahead
    /// of today, default 7 (at start and on every retention sweep).
    pub partitions_ahead: u32,
    /// `HERALD_ADMIN_TOKEN` (optional): the operator token of the Operations service (dead
    /// letters, queue depths; disabled without it); refused with `PERMISSION_DENIED` on the
    /// delivery log API, where a tenant API key is required.
    pub admin_token: Option<String>,
    /// `HERALD_PUBLISH_RATE_LIMIT`, as ingest reads it: re-sends (`Redeliver`,
    /// `ReplayEndpoint`) take one token per delivery from the tenant's publish bucket (a Redis
    /// token bucket shared with ingest), unless the tenant sets its own `publish_rate_limit`.
    /// Default 0, unlimited.
    pub publish_rate_limit: u32,
    /// `HERALD_PUBLISH_BURST`, as ingest reads it: seconds' worth of tokens the bucket holds,
    /// default `1s`; a replay page is at most this many deliveries under a limit.
    pub publish_burst: Duration,
    /// `HERALD_REPLAY_CONCURRENCY`: `ReplayEndpoint` calls one tenant may have running at once,
    /// across every ledger (a lease in Redis), default 1.
    pub replay_concurrency: u32,
    /// `HERALD_REPLAY_LEASE_TTL`: how long a replay's lease lasts unless renewed (after every
    /// page), so a ledger that died mid-replay blocks the tenant's replays at most this long;
    /// default `30s`, at least `1s`.
    pub replay_lease_ttl: Duration,
    /// `HERALD_REPLAY_PAGE`: deliveries (with their payloads) a replay reads and publishes at a
    /// time, default 500 (1–10,000): a replay holds at most this many payloads.
    pub replay_page: u32,
    /// `HERALD_REPLAY_RATE`: deliveries per second one replay sends at most, default 250
    /// (0: as fast as the broker takes them), spread evenly over each second. With one replay
    /// per tenant at a time (`HERALD_REPLAY_CONCURRENCY`), a tenant's replays re-send at most
    /// this many a second even when no publish rate is set for it, so a replay does not take
    /// the machine from other tenants; 10,000 deliveries (the most one call replays) take 40 s.
    pub replay_rate: u32,
    /// `HERALD_AUTH_LOOKUP_RATE`: database lookups per second of API keys this process has not
    /// seen yet, default 200; past it such calls get `UNAVAILABLE` without a query. 0: no limit.
    pub auth_lookup_rate: u32,
    /// gRPC server and statement bounds of the delivery log API (`HERALD_GRPC_*`,
    /// `HERALD_STATEMENT_TIMEOUT`).
    pub api: ApiLimits,
}

impl Config {
    pub fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let c = Self {
            common: Common::load(r)?,
            metrics_addr: r.string("HERALD_METRICS_ADDR", "127.0.0.1:9602"),
            listen_addr: r.string("HERALD_LEDGER_ADDR", "127.0.0.1:50052"),
            batch_messages: r.parse("HERALD_LEDGER_BATCH", 500)?,
            batch_wait: r.duration("HERALD_LEDGER_BATCH_WAIT", Duration::from_millis(20))?,
            prefetch: r.parse("HERALD_LEDGER_PREFETCH", 2000)?,
            payload_retention: r
                .duration("HERALD_PAYLOAD_RETENTION", Duration::from_secs(30 * 86_400))?,
            attempt_retention: r
                .duration("HERALD_ATTEMPT_RETENTION", Duration::from_secs(90 * 86_400))?,
            retention_interval: r
                .duration("HERALD_RETENTION_INTERVAL", Duration::from_secs(3600))?,
            partitions_ahead: r.parse("HERALD_LEDGER_PARTITIONS_AHEAD", 7)?,
            admin_token: r.optional("HERALD_ADMIN_TOKEN"),
            publish_rate_limit: r.parse("HERALD_PUBLISH_RATE_LIMIT", 0)?,
            publish_burst: r.duration("HERALD_PUBLISH_BURST", Duration::from_secs(1))?,
            replay_concurrency: r.parse("HERALD_REPLAY_CONCURRENCY", 1)?,
            replay_lease_ttl: r.duration("HERALD_REPLAY_LEASE_TTL", Duration::from_secs(30))?,
            replay_page: r.parse("HERALD_REPLAY_PAGE", 500)?,
            replay_rate: r.parse("HERALD_REPLAY_RATE", 250)?,
            auth_lookup_rate: r
                .parse("HERALD_AUTH_LOOKUP_RATE", herald_store::DEFAULT_LOOKUP_RATE)?,
            api: ApiLimits::load(r)?,
        };
        if c.batch_messages == 0 || c.batch_messages > usize::from(c.prefetch) {
            return Err(ConfigError {
                name: "HERALD_LEDGER_BATCH".into(),
                message: "must be between 1 and HERALD_LEDGER_PREFETCH".into(),
            });
        }
        if !(1..=366).contains(&c.partitions_ahead) {
            return Err(ConfigError {
                name: "HERALD_LEDGER_PARTITIONS_AHEAD".into(),
                message: "must be between 1 and 366 (days)".into(),
            });
        }
        c.check_replay()?;
        Ok(c)
    }

    fn check_replay(&self) -> Result<(), ConfigError> {
        let bad = |name: &str, message: &str| {
            Err(ConfigError {
                name: name.into(),
                message: message.into(),
            })
        };
        if self.replay_concurrency == 0 {
            return bad("HERALD_REPLAY_CONCURRENCY", "must be at least 1");
        }
        if self.replay_lease_ttl < Duration::from_secs(1) {
            return bad("HERALD_REPLAY_LEASE_TTL", "must be at least 1s");
        }
        if !(1..=crate::api::MAX_REPLAY).contains(&self.replay_page) {
            return bad("HERALD_REPLAY_PAGE", "must be between 1 and 10000");
        }
        Ok(())
    }
}
