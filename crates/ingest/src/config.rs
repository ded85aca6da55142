//! Ingest settings (`HERALD_*` environment variables over the defaults documented here).

use std::time::Duration;

use herald_core::config::{Common, ConfigError, Reader};
use herald_core::net::{Cidr, parse_networks};

/// Everything ingest needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: Common,
    /// `HERALD_METRICS_ADDR`: HTTP address of `/metrics`, `/livez` and `/readyz`, default
    /// `127.0.0.1:9601`; `off` disables it.
    pub metrics_addr: String,
    /// `HERALD_INGEST_ADDR`: gRPC listen address, default `127.0.0.1:50051`.
    pub listen_addr: String,
    /// `HERALD_ADMIN_TOKEN`: operator token for the Admin service; unset disables Admin.
    pub admin_token: Option<String>,
    /// `HERALD_MAX_PAYLOAD_BYTES`: largest accepted payload, default 262144 (256 KiB).
    pub max_payload_bytes: usize,
    /// `HERALD_MAX_BATCH`: most events in one PublishBatch, default 1000.
    pub max_batch: usize,
    /// `HERALD_IDEMPOTENCY_TTL`: how long an idempotency key is remembered, default `24h`.
    pub idempotency_ttl: Duration,
    /// `HERALD_IDEMPOTENCY_PENDING_TTL`: how long a key stays reserved for a publish that never
    /// finished (ingest died mid-call); a retry meanwhile gets ABORTED, after it the retry
    /// resumes that publish under the same event id and delivery ids. Default `30s`.
    pub idempotency_pending_ttl: Duration,
    /// `HERALD_SUBSCRIPTION_CACHE_TTL`: how long a tenant's subscription index is reused before
    /// it is reloaded (changes made through this instance apply at once), default `2s`.
    pub subscription_cache_ttl: Duration,
    /// `HERALD_DEFAULT_TIMEOUT`: endpoint timeout when none is given, default `30s`.
    pub default_timeout: Duration,
    /// `HERALD_REQUIRE_HTTPS`: refuse `http://` endpoint URLs, default false.
    pub require_https: bool,
    /// `HERALD_ALLOW_NETWORKS`: comma-separated CIDRs endpoints may point into even though they
    /// are loopback/private/reserved (e.g. `127.0.0.0/8` for local tests), default none.
    pub allow_networks: Vec<Cidr>,
    /// `HERALD_MAX_ENDPOINTS_PER_TENANT`, default 1000.
    pub max_endpoints_per_tenant: i64,
    /// `HERALD_PUBLISH_CHANNELS`: broker channels used for publishing, default 1:
    /// confirms on one channel reach the broker in larger batches (fewer quorum-queue syncs per
    /// message; measured 0.20 -> 0.18 ms of broker CPU per delivery against 4 channels).
    pub publish_channels: usize,
    /// `HERALD_RECORD_LINGER`: how long an event record waits for others to share a ledger
    /// message, default `0` (it goes out as soon as a publish slot is free: the caller's answer
    /// waits for its confirm, so any linger is added to the Publish latency).
    pub record_linger: Duration,
    /// `HERALD_STATS_WINDOW`: window of the success rate and latency percentiles shown on
    /// endpoints (whole hours), default `24h`.
    pub stats_window: Duration,
    /// `HERALD_PUBLISH_RATE_LIMIT`: events per second a tenant may publish (all ingest
    /// instances together) unless the tenant sets its own; default 0, unlimited.
    pub publish_rate_limit: u32,
    /// `HERALD_PUBLISH_BURST`: how many seconds' worth of events a tenant may publish at once
    /// (the bucket size; also the largest batch under a limit), default `1s`.
    pub publish_burst: Duration,
    /// Proxy and extra CA certificates for test sends (as the dispatchers').
    pub egress: herald_dispatcher::http::Egress,
}

impl Config {
    pub fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let allow = r.string("HERALD_ALLOW_NETWORKS", "");
        Ok(Self {
            common: Common::load(r)?,
            metrics_addr: r.string("HERALD_METRICS_ADDR", "127.0.0.1:9601"),
            listen_addr: r.string("HERALD_INGEST_ADDR", "127.0.0.1:50051"),
            admin_token: r.optional("HERALD_ADMIN_TOKEN"),
            max_payload_bytes: r.parse("HERALD_MAX_PAYLOAD_BYTES", 256 * 1024)?,
            max_batch: r.parse("HERALD_MAX_BATCH", 1000)?,
            idempotency_ttl: r.duration("HERALD_IDEMPOTENCY_TTL", Duration::from_secs(86_400))?,
            idempotency_pending_ttl: r
                .duration("HERALD_IDEMPOTENCY_PENDING_TTL", Duration::from_secs(30))?,
            subscription_cache_ttl: r
                .duration("HERALD_SUBSCRIPTION_CACHE_TTL", Duration::from_secs(2))?,
            default_timeout: r.duration("HERALD_DEFAULT_TIMEOUT", Duration::from_secs(30))?,
            require_https: r.parse("HERALD_REQUIRE_HTTPS", false)?,
            allow_networks: parse_networks(&allow).map_err(|e| ConfigError {
                name: "HERALD_ALLOW_NETWORKS".into(),
                message: e.to_string(),
            })?,
            max_endpoints_per_tenant: r.parse("HERALD_MAX_ENDPOINTS_PER_TENANT", 1000)?,
            publish_channels: r.parse("HERALD_PUBLISH_CHANNELS", 1)?,
            record_linger: herald_broker::record_linger(r, Duration::ZERO)?,
            stats_window: r.duration("HERALD_STATS_WINDOW", Duration::from_secs(24 * 3600))?,
            publish_rate_limit: r.parse("HERALD_PUBLISH_RATE_LIMIT", 0)?,
            publish_burst: r.duration("HERALD_PUBLISH_BURST", Duration::from_secs(1))?,
            egress: herald_dispatcher::http::Egress::load(r)?,
        })
    }
}
