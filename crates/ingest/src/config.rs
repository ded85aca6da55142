//! Ingest settings (`HERALD_*` environment variables over the defaults documented here).

use std::time::Duration;

use herald_core::config::{ApiLimits, Common, ConfigError, Reader};
use herald_outbound::address_policy::{Cidr, parse_networks};

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
    /// `HERALD_RETRY_SCHEDULE`: the dispatchers' default retry delays, default
    /// `1m,5m,15m,1h,6h`; shown on endpoints without a schedule of their own, so give ingest
    /// the dispatchers' value.
    pub retry_schedule: herald_core::schedule::RetrySchedule,
    /// `HERALD_REQUIRE_HTTPS`: refuse `http://` endpoint URLs, default false.
    pub require_https: bool,
    /// `HERALD_ALLOW_NETWORKS`: comma-separated CIDRs endpoints may point into even though they
    /// are loopback/private/reserved (e.g. `127.0.0.0/8` for local tests), default none.
    pub allow_networks: Vec<Cidr>,
    /// `HERALD_MAX_ENDPOINTS_PER_TENANT`, default 1000.
    pub max_endpoints_per_tenant: i64,
    /// `HERALD_MAX_EVENT_TYPES_PER_TENANT`: event types a tenant may create (archived ones
    /// count), default 1000.
    pub max_event_types_per_tenant: i64,
    /// gRPC server and statement bounds (`HERALD_GRPC_*`, `HERALD_STATEMENT_TIMEOUT`).
    pub api: ApiLimits,
    /// `HERALD_PUBLISH_CHANNELS`: most broker channels open for publishing, default 32. A
    /// call holds one from its first publish to its last confirm (returns of unroutable
    /// messages are matched to the right call only so); they are opened as concurrent calls
    /// need them, so a quiet service keeps one and the broker its large confirm batches.
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
    /// `HERALD_SEND_TEST_CONCURRENCY`: test sends (`SendTest`) one tenant may have in progress
    /// at once on this instance, default 4 (at least 1); each takes at most its endpoint's
    /// timeout.
    pub send_test_concurrency: usize,
    /// `HERALD_AUTH_LOOKUP_RATE`: database lookups per second of credentials this process has
    /// not seen yet (neither cached as a valid key nor as an invalid one), default 200; past it
    /// such calls get `UNAVAILABLE` (`Admin`: `UNAUTHENTICATED`) without a query. 0: no limit.
    pub auth_lookup_rate: u32,
    /// `HERALD_FILTER_STEP_BUDGET`: steps the payload filters an event reaches may take
    /// together (a step: one value compared, one path segment followed, or 64 bytes of a
    /// string compared); each filter gets at least an equal share, `TestFilter` all of it.
    /// Default 1,000,000 (a few ms of CPU), at least 1.
    pub filter_step_budget: u64,
    /// `HERALD_PAYLOAD_THREADS`: threads that validate large payloads and evaluate long filter
    /// work (at a lower priority than the threads serving calls); also how many such calls of
    /// one tenant run or wait at once. Default half the cores, at least 1.
    pub payload_threads: usize,
    /// `HERALD_TENANT_PAYLOAD_CPU_MS`: milliseconds of CPU per second one tenant's payload work
    /// (validating large payloads, evaluating filters) may use on this instance (one second's
    /// worth saved up at most); past it the tenant's calls with such work get
    /// RESOURCE_EXHAUSTED with a retry delay. Default 250; 0: not limited.
    pub tenant_payload_cpu: Duration,
    /// `HERALD_TENANT_INGRESS_BYTES`: bytes of call messages one tenant may send this instance
    /// a second (one second's worth saved up); past it the tenant's calls are refused from
    /// their headers with RESOURCE_EXHAUSTED and a retry delay. Default 64 MiB; 0: not limited.
    pub tenant_ingress_bytes: u64,
    /// `HERALD_TENANT_FRESH_RATE`: delivery tasks a second (one second's worth saved up) of one
    /// tenant that go to its shard's queue of fresh tasks on this instance; the rest of a burst
    /// goes to the shard's bulk queue, so tenants sharing the shard are not behind it. Default
    /// 500; 0: every task is fresh.
    pub tenant_fresh_rate: u64,
    /// `HERALD_MAX_FANOUT_BYTES`: most delivery-task bytes one Publish or PublishBatch call may
    /// create, each delivery counted as its payload plus 1 KiB; default 1 GiB.
    pub max_fanout_bytes: u64,
    /// `HERALD_PUBLISH_CHUNK_BYTES`: delivery-task bytes a call builds and hands to the broker
    /// at once (the next chunk is built once these are confirmed); default 16 MiB, at least
    /// `HERALD_MAX_PAYLOAD_BYTES` + 1 KiB.
    pub publish_chunk_bytes: usize,
    /// `HERALD_PUBLISH_MEMORY`: delivery-task bytes all publish calls in flight may hold
    /// together (each holds its chunk); a call that finds no room within 1 s is refused with
    /// RESOURCE_EXHAUSTED and a retry delay. Default 512 MiB, at least
    /// `HERALD_PUBLISH_CHUNK_BYTES`.
    pub publish_memory: u64,
    /// Proxy and extra CA certificates for test sends (as the dispatchers').
    pub egress: herald_outbound::Egress,
    /// `HERALD_CONSOLE_URL`: public URL of herald-console (e.g. `https://webhooks.example.com`),
    /// from which `CreatePortalSession` builds the link it returns; default empty (the link's
    /// `url` is then empty and only its token is returned).
    pub console_url: String,
}

impl Config {
    pub fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let allow = r.string("HERALD_ALLOW_NETWORKS", "");
        Self {
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
            retry_schedule: herald_core::schedule::RetrySchedule::from_config(r)?,
            require_https: r.parse("HERALD_REQUIRE_HTTPS", false)?,
            allow_networks: parse_networks(&allow).map_err(|e| ConfigError {
                name: "HERALD_ALLOW_NETWORKS".into(),
                message: e.to_string(),
            })?,
            max_endpoints_per_tenant: r.parse("HERALD_MAX_ENDPOINTS_PER_TENANT", 1000)?,
            max_event_types_per_tenant: r.parse("HERALD_MAX_EVENT_TYPES_PER_TENANT", 1000)?,
            api: ApiLimits::load(r)?,
            publish_channels: r.parse("HERALD_PUBLISH_CHANNELS", 32)?,
            record_linger: herald_broker::record_linger(r, Duration::ZERO)?,
            stats_window: r.duration("HERALD_STATS_WINDOW", Duration::from_secs(24 * 3600))?,
            publish_rate_limit: r.parse("HERALD_PUBLISH_RATE_LIMIT", 0)?,
            publish_burst: r.duration("HERALD_PUBLISH_BURST", Duration::from_secs(1))?,
            send_test_concurrency: at_least_one(r, "HERALD_SEND_TEST_CONCURRENCY", 4)?,
            auth_lookup_rate: r
                .parse("HERALD_AUTH_LOOKUP_RATE", herald_store::DEFAULT_LOOKUP_RATE)?,
            filter_step_budget: r.parse(
                "HERALD_FILTER_STEP_BUDGET",
                herald_core::filter::DEFAULT_STEP_BUDGET,
            )?,
            payload_threads: at_least_one(r, "HERALD_PAYLOAD_THREADS", default_payload_threads())?,
            tenant_payload_cpu: Duration::from_millis(
                r.parse("HERALD_TENANT_PAYLOAD_CPU_MS", 250)?,
            ),
            tenant_ingress_bytes: r.parse("HERALD_TENANT_INGRESS_BYTES", 64 << 20)?,
            tenant_fresh_rate: r.parse("HERALD_TENANT_FRESH_RATE", 500)?,
            max_fanout_bytes: r.parse("HERALD_MAX_FANOUT_BYTES", 1 << 30)?,
            publish_chunk_bytes: r.parse("HERALD_PUBLISH_CHUNK_BYTES", 16 << 20)?,
            publish_memory: r.parse("HERALD_PUBLISH_MEMORY", 512 << 20)?,
            egress: herald_outbound::Egress::load(r)?,
            console_url: r
                .string("HERALD_CONSOLE_URL", "")
                .trim_end_matches('/')
                .to_owned(),
        }
        .checked()
    }

    /// Checks the settings that bound one another.
    fn checked(self) -> Result<Self, ConfigError> {
        let fail = |name: &str, message: String| {
            Err(ConfigError {
                name: name.into(),
                message,
            })
        };
        if !(self.console_url.is_empty()
            || self.console_url.starts_with("https://")
            || self.console_url.starts_with("http://"))
        {
            return fail(
                "HERALD_CONSOLE_URL",
                "must be an http:// or https:// URL (or empty)".into(),
            );
        }
        if self.filter_step_budget == 0 {
            return fail("HERALD_FILTER_STEP_BUDGET", "must be at least 1".into());
        }
        let task = crate::fanout::task_bytes(self.max_payload_bytes);
        if (self.publish_chunk_bytes as u64) < task {
            return fail(
                "HERALD_PUBLISH_CHUNK_BYTES",
                format!(
                    "must hold one delivery task of the largest payload: at least {task} \
                     (HERALD_MAX_PAYLOAD_BYTES + 1 KiB)"
                ),
            );
        }
        if self.publish_memory < self.publish_chunk_bytes as u64 {
            return fail(
                "HERALD_PUBLISH_MEMORY",
                format!(
                    "must hold at least one chunk: HERALD_PUBLISH_CHUNK_BYTES is {}",
                    self.publish_chunk_bytes
                ),
            );
        }
        Ok(self)
    }
}

/// Half the cores, at least one: payload work never takes the whole machine from serving calls.
fn default_payload_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// A count that must be at least 1.
fn at_least_one(r: &Reader<'_>, name: &str, default: usize) -> Result<usize, ConfigError> {
    match r.parse(name, default)? {
        0 => Err(ConfigError {
            name: name.into(),
            message: "must be at least 1".into(),
        }),
        n => Ok(n),
    }
}
