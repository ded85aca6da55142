//! Ledger settings (`HERALD_*` environment variables over the defaults documented here).

use std::time::Duration;

use herald_core::config::{Common, ConfigError, Reader};

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
    /// `HERALD_ADMIN_TOKEN` (optional): the operator token, recognised on the delivery log API
    /// only to refuse it with `PERMISSION_DENIED` (a tenant API key is required there).
    pub admin_token: Option<String>,
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
            admin_token: r.optional("HERALD_ADMIN_TOKEN"),
        };
        if c.batch_messages == 0 || c.batch_messages > usize::from(c.prefetch) {
            return Err(ConfigError {
                name: "HERALD_LEDGER_BATCH".into(),
                message: "must be between 1 and HERALD_LEDGER_PREFETCH".into(),
            });
        }
        Ok(c)
    }
}
