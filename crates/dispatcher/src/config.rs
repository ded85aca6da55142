//! Dispatcher settings (`HERALD_*` environment variables over the defaults documented here).

use std::time::Duration;

use herald_core::config::{Common, ConfigError, Reader};
use herald_core::schedule::RetrySchedule;
use herald_outbound::address_policy::{Cidr, parse_networks};

#[derive(Clone, Debug)]
pub struct Config {
    pub common: Common,
    /// `HERALD_METRICS_ADDR`: HTTP address of `/metrics`, `/livez` and `/readyz`, default
    /// `127.0.0.1:9603`; `off` disables it.
    pub metrics_addr: String,
    /// `HERALD_DISPATCHER_PREFETCH`: unacknowledged tasks the broker hands one dispatcher from
    /// each work queue (8 shards of fresh tasks, 8 of returning ones, the legacy queue; a quarter
    /// of it from each of the 8 bulk queues), default 512, at least 1. A tenant's tasks are on
    /// one shard, so one tenant's backlog fills at most three windows; the dispatcher holds at
    /// most 19 × this many tasks, so memory is bounded by that times the largest payload.
    pub prefetch: u16,
    /// Per-endpoint and per-tenant in-flight caps (`HERALD_ENDPOINT_MAX_IN_FLIGHT`, default 16;
    /// `HERALD_TENANT_MAX_IN_FLIGHT`, default 64) and parking (`HERALD_PARK_AFTER`, default
    /// `250ms`; `HERALD_PARK_MAX`, default `60s`); see the `gate` module. The pace of an endpoint
    /// that keeps failing fast (`HERALD_FAILING_ENDPOINT_RATE`, attempts a second, all
    /// dispatchers together, default 100, 0: not paced); see the `pace` module.
    pub gates: crate::gate::Limits,
    /// `HERALD_DISPATCHER_CONCURRENCY`: POSTs in flight at once, default 128. Held tasks beyond
    /// it wait for their follow-up confirms, or for a free POST slot.
    pub concurrency: usize,
    /// `HERALD_RETRY_SCHEDULE`: default retry delays, default `1m,5m,15m,1h,6h`.
    pub retry_schedule: RetrySchedule,
    /// `HERALD_ENDPOINT_CACHE_TTL`: how long a loaded endpoint is reused (toggles, deletes and
    /// secret changes apply within it), default `5s`.
    pub endpoint_cache_ttl: Duration,
    /// `HERALD_DONE_TTL`: how long a succeeded delivery is remembered in Redis so a redelivered
    /// task is not sent again, default `72h`.
    pub done_ttl: Duration,
    /// `HERALD_ALLOW_NETWORKS`: CIDRs deliveries may reach even though they are
    /// loopback/private/reserved (e.g. `127.0.0.0/8` for local tests), default none.
    pub allow_networks: Vec<Cidr>,
    /// `HERALD_MAX_RESPONSE_BYTES`: most response body bytes read (the log keeps the first
    /// 1,000 characters), default 65536.
    pub max_response_bytes: usize,
    /// `HERALD_EGRESS_PROXY` (every delivery through this proxy: http, https, socks5, socks5h;
    /// default none) and `HERALD_CA_CERTS` (PEM bundle trusted besides the platform's roots).
    pub egress: herald_outbound::Egress,
    /// `HERALD_SHUTDOWN_GRACE`: how long in-flight deliveries may finish after SIGTERM before
    /// they are handed back to the broker, default `25s`.
    pub shutdown_grace: Duration,
    /// `HERALD_PUBLISH_CHANNELS`: most broker channels open for follow-up publishes, default 32. A
    /// call holds one from its first publish to its last confirm (returns of unroutable
    /// messages are matched to the right call only so); they are opened as concurrent calls
    /// need them, so a quiet service keeps one and the broker its large confirm batches.
    pub publish_channels: usize,
    /// `HERALD_RECORD_LINGER`: how long attempt records wait for others to share a ledger
    /// message, default `20ms`. It delays only acks (a task is acked once its record is
    /// confirmed), never a POST; at moderate rates it cuts the ledger messages, hence broker
    /// work, several times over. `0` sends as soon as a publish slot is free.
    pub record_linger: Duration,
    /// `HERALD_FAILING_AFTER_ATTEMPTS`: failed attempts in a row after which the tenant gets an
    /// `endpoint.failing` event (once per streak), default 5; 0 never.
    pub failing_after_attempts: u32,
    /// `HERALD_DISABLE_AFTER_FAILURES`: deliveries ending `failed` in a row after which an
    /// endpoint is disabled automatically, default 10; 0 never.
    pub disable_after_failures: u32,
    /// `HERALD_DISABLE_AFTER_SPAN`: ... provided the streak spans at least this long, default
    /// `72h`.
    pub disable_after_span: Duration,
}

impl Config {
    pub fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let allow = r.string("HERALD_ALLOW_NETWORKS", "");
        Ok(Self {
            common: Common::load(r)?,
            metrics_addr: r.string("HERALD_METRICS_ADDR", "127.0.0.1:9603"),
            prefetch: match r.parse("HERALD_DISPATCHER_PREFETCH", 512)? {
                0 => {
                    return Err(ConfigError {
                        name: "HERALD_DISPATCHER_PREFETCH".into(),
                        message: "must be at least 1 (0 would mean unlimited to the broker)".into(),
                    });
                }
                n => n,
            },
            concurrency: r.parse("HERALD_DISPATCHER_CONCURRENCY", 128)?,
            gates: gate_limits(r)?,
            retry_schedule: RetrySchedule::from_config(r)?,
            record_linger: herald_broker::record_linger(r, Duration::from_millis(20))?,
            endpoint_cache_ttl: r.duration("HERALD_ENDPOINT_CACHE_TTL", Duration::from_secs(5))?,
            done_ttl: r.duration("HERALD_DONE_TTL", Duration::from_secs(72 * 3600))?,
            allow_networks: parse_networks(&allow).map_err(|e| ConfigError {
                name: "HERALD_ALLOW_NETWORKS".into(),
                message: e.to_string(),
            })?,
            max_response_bytes: match r.parse("HERALD_MAX_RESPONSE_BYTES", 64 * 1024)? {
                // 1,000 characters of UTF-8 take up to 4,000 bytes.
                n if n < 4000 => {
                    return Err(ConfigError {
                        name: "HERALD_MAX_RESPONSE_BYTES".into(),
                        message: format!(
                            "{n} is too small: the log keeps 1,000 characters, up to 4000 bytes"
                        ),
                    });
                }
                n => n,
            },
            egress: herald_outbound::Egress::load(r)?,
            shutdown_grace: r.duration("HERALD_SHUTDOWN_GRACE", Duration::from_secs(25))?,
            publish_channels: r.parse("HERALD_PUBLISH_CHANNELS", 32)?,
            failing_after_attempts: r.parse("HERALD_FAILING_AFTER_ATTEMPTS", 5)?,
            disable_after_failures: r.parse("HERALD_DISABLE_AFTER_FAILURES", 10)?,
            disable_after_span: r
                .duration("HERALD_DISABLE_AFTER_SPAN", Duration::from_secs(72 * 3600))?,
        })
    }
}

fn gate_limits(r: &Reader<'_>) -> Result<crate::gate::Limits, ConfigError> {
    let at_least_one = |name: &str, n: u32| match n {
        0 => Err(ConfigError {
            name: name.into(),
            message: "must be at least 1".into(),
        }),
        n => Ok(n),
    };
    let limits = crate::gate::Limits {
        endpoint_max: at_least_one(
            "HERALD_ENDPOINT_MAX_IN_FLIGHT",
            r.parse("HERALD_ENDPOINT_MAX_IN_FLIGHT", 16)?,
        )?,
        tenant_max: at_least_one(
            "HERALD_TENANT_MAX_IN_FLIGHT",
            r.parse("HERALD_TENANT_MAX_IN_FLIGHT", 64)?,
        )?,
        park_after: r.duration("HERALD_PARK_AFTER", Duration::from_millis(250))?,
        park_max: r.duration("HERALD_PARK_MAX", Duration::from_secs(60))?,
        failing_rate: r.parse("HERALD_FAILING_ENDPOINT_RATE", 100)?,
    };
    if limits.park_max < crate::gate::PARK_MIN || limits.park_max > Duration::from_secs(86_400) {
        return Err(ConfigError {
            name: "HERALD_PARK_MAX".into(),
            message: "must be between 1s and 24h".into(),
        });
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&Reader::new(&env))
    }

    #[test]
    fn held_tasks_and_posts_have_their_own_bounds() {
        let c = load(&[]).unwrap();
        assert_eq!((c.prefetch, c.concurrency), (512, 128));
        assert_eq!((c.gates.endpoint_max, c.gates.tenant_max), (16, 64));
        assert_eq!(c.gates.park_after, Duration::from_millis(250));
        assert_eq!(c.gates.park_max, Duration::from_secs(60));
        assert_eq!(c.gates.failing_rate, 100);
        let c = load(&[
            ("HERALD_DISPATCHER_PREFETCH", "64"),
            ("HERALD_DISPATCHER_CONCURRENCY", "8"),
        ])
        .unwrap();
        assert_eq!((c.prefetch, c.concurrency), (64, 8));
    }

    #[test]
    fn the_record_linger_has_a_default_and_a_bound() {
        assert_eq!(load(&[]).unwrap().record_linger, Duration::from_millis(20));
        let c = load(&[("HERALD_RECORD_LINGER", "0")]).unwrap();
        assert_eq!(c.record_linger, Duration::ZERO);
        let e = load(&[("HERALD_RECORD_LINGER", "2s")]).unwrap_err();
        assert_eq!(e.name, "HERALD_RECORD_LINGER");
        assert!(e.message.contains("at most 1000 ms"), "{}", e.message);
    }

    #[test]
    fn gate_settings_are_checked_by_name() {
        let e = load(&[("HERALD_ENDPOINT_MAX_IN_FLIGHT", "0")]).unwrap_err();
        assert_eq!(e.name, "HERALD_ENDPOINT_MAX_IN_FLIGHT");
        let e = load(&[("HERALD_PARK_MAX", "10ms")]).unwrap_err();
        assert_eq!(e.name, "HERALD_PARK_MAX");
        let c = load(&[
            ("HERALD_TENANT_MAX_IN_FLIGHT", "8"),
            ("HERALD_PARK_MAX", "5s"),
        ])
        .unwrap();
        assert_eq!(c.gates.tenant_max, 8);
        assert_eq!(c.gates.park_max, Duration::from_secs(5));
    }

    #[test]
    fn a_prefetch_of_zero_is_refused_by_name() {
        let e = load(&[("HERALD_DISPATCHER_PREFETCH", "0")]).unwrap_err();
        assert_eq!(e.name, "HERALD_DISPATCHER_PREFETCH");
        assert!(e.message.contains("at least 1"), "{}", e.message);
    }
}
