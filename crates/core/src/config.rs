//! Reading `HERALD_*` settings from the environment, with the default used when a variable is
//! unset and a precise error when one is set to something unusable.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::secretbox::Keyring;

use crate::schedule::parse_duration;

/// A setting that could not be read: names the variable and what it expects.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    pub name: String,
    pub message: String,
}

/// Source of settings: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Reads typed settings from a [`Source`].
pub struct Reader<'a> {
    source: &'a dyn Source,
}

impl<'a> Reader<'a> {
    pub fn new(source: &'a dyn Source) -> Self {
        Self { source }
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.source.get(name).unwrap_or_else(|| default.to_owned())
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.source.get(name)
    }

    pub fn parse<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.source.get(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_owned(),
                message: format!("cannot parse {raw:?}: {e}"),
            }),
        }
    }

    /// A duration such as `500ms`, `30s`, `5m`, `1h` (a bare number is milliseconds).
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.source.get(name) {
            None => Ok(default),
            Some(raw) => parse_duration(&raw).map_err(|e| ConfigError {
                name: name.to_owned(),
                message: e.to_string(),
            }),
        }
    }
}

/// Connection settings every service shares.
#[derive(Clone, Debug)]
pub struct Common {
    /// `HERALD_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`.
    pub database_url: String,
    /// `HERALD_DATABASE_SCHEMA`: Postgres schema holding Herald's tables, default `herald`.
    pub database_schema: String,
    /// `HERALD_DATABASE_MAX_CONNECTIONS`, default 10.
    pub database_max_connections: u32,
    /// `HERALD_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`: one broker, or the
    /// nodes of a cluster separated by commas (each connection tries them in turn, starting
    /// with the one after the node it last used).
    pub amqp_url: String,
    /// `HERALD_AMQP_PREFIX`: prefix of every exchange and queue name, default `herald`.
    pub amqp_prefix: String,
    /// `HERALD_QUEUE_TYPE`: `quorum` (default, durable, replicated) or `classic`.
    pub queue_type: QueueType,
    /// `HERALD_QUORUM_REPLICAS`: replicas of each quorum queue Herald declares
    /// (`x-quorum-initial-group-size`); 0 (default): the broker's default, every cluster node.
    pub quorum_replicas: u32,
    /// `HERALD_REDIS_URL`, default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// `HERALD_REDIS_PREFIX`: prefix of every Redis key, default `herald`.
    pub redis_prefix: String,
    /// `HERALD_SECRET_KEY`: `id:base64key[,id:base64key...]`, the keys endpoint secrets are
    /// encrypted with at rest (the first seals, the others only open). Unset: stored in clear.
    pub secret_keys: Arc<Keyring>,
}

/// Classic queues (fast, single node) or quorum queues (replicated, at-least-once
/// dead-lettering, delivery limit): the durability promise needs quorum in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

impl FromStr for QueueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!("{other:?} is not quorum or classic")),
        }
    }
}

impl Common {
    pub fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let c = Self {
            database_url: r.string(
                "HERALD_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            database_schema: r.string("HERALD_DATABASE_SCHEMA", "herald"),
            database_max_connections: r.parse("HERALD_DATABASE_MAX_CONNECTIONS", 10)?,
            amqp_url: r.string("HERALD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            amqp_prefix: r.string("HERALD_AMQP_PREFIX", "herald"),
            queue_type: r.parse("HERALD_QUEUE_TYPE", QueueType::Quorum)?,
            quorum_replicas: r.parse("HERALD_QUORUM_REPLICAS", 0)?,
            redis_url: r.string("HERALD_REDIS_URL", "redis://127.0.0.1:6379"),
            redis_prefix: r.string("HERALD_REDIS_PREFIX", "herald"),
            secret_keys: Arc::new(match r.optional("HERALD_SECRET_KEY") {
                None => Keyring::none(),
                Some(spec) => Keyring::parse(&spec).map_err(|e| ConfigError {
                    name: "HERALD_SECRET_KEY".into(),
                    message: e
                        .to_string()
                        .trim_start_matches("HERALD_SECRET_KEY: ")
                        .to_owned(),
                })?,
            }),
        };
        Ok(c)
    }
}

/// Bounds of a service that answers tenants' calls (ingest, the ledger): its gRPC server and
/// the database queries its calls make. What one caller may hold is bounded by them: streams
/// per connection, time per call and per statement, bytes per message; a peer that stops
/// answering is dropped by the keepalive.
#[derive(Clone, Debug)]
pub struct ApiLimits {
    /// `HERALD_GRPC_MAX_CONCURRENT_STREAMS`: calls one connection may have in flight (HTTP/2
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`; a client queues the rest), default 256.
    pub max_concurrent_streams: u32,
    /// `HERALD_GRPC_REQUEST_TIMEOUT`: longest a call may take before it is answered
    /// `CANCELLED` ("Timeout expired"), default `150s`: longer than the longest endpoint
    /// timeout (120 s), which a SendTest waits for. A caller's shorter `grpc-timeout` wins.
    pub request_timeout: Duration,
    /// `HERALD_GRPC_KEEPALIVE_INTERVAL`: how often an HTTP/2 PING checks an idle peer, default
    /// `60s`.
    pub keepalive_interval: Duration,
    /// `HERALD_GRPC_KEEPALIVE_TIMEOUT`: how long a PING may wait for its answer before the
    /// connection (and every call on it) is closed, default `20s`.
    pub keepalive_timeout: Duration,
    /// `HERALD_GRPC_MAX_MESSAGE_BYTES`: largest request message of every service except
    /// `Events` (sized by the payload and batch limits), default 1048576 (1 MiB), at least
    /// 65536.
    pub max_message_bytes: usize,
    /// `HERALD_STATEMENT_TIMEOUT`: longest a database statement made for a call may run before
    /// Postgres cancels it (`RESOURCE_EXHAUSTED`, "narrow it"), default `5s`; `0`: no bound.
    /// Migrations, the ledger's batch writes and retention sweeps are not bounded by it.
    pub statement_timeout: Duration,
}

impl ApiLimits {
    pub fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let limits = Self {
            max_concurrent_streams: r.parse("HERALD_GRPC_MAX_CONCURRENT_STREAMS", 256)?,
            request_timeout: r.duration("HERALD_GRPC_REQUEST_TIMEOUT", Duration::from_secs(150))?,
            keepalive_interval: r
                .duration("HERALD_GRPC_KEEPALIVE_INTERVAL", Duration::from_secs(60))?,
            keepalive_timeout: r
                .duration("HERALD_GRPC_KEEPALIVE_TIMEOUT", Duration::from_secs(20))?,
            max_message_bytes: r.parse("HERALD_GRPC_MAX_MESSAGE_BYTES", 1 << 20)?,
            statement_timeout: r.duration("HERALD_STATEMENT_TIMEOUT", Duration::from_secs(5))?,
        };
        let at_least = |name: &str, ok: bool, what: &str| {
            if ok {
                return Ok(());
            }
            Err(ConfigError {
                name: name.to_owned(),
                message: format!("must be at least {what}"),
            })
        };
        at_least(
            "HERALD_GRPC_MAX_CONCURRENT_STREAMS",
            limits.max_concurrent_streams >= 1,
            "1",
        )?;
        for (name, value) in [
            ("HERALD_GRPC_REQUEST_TIMEOUT", limits.request_timeout),
            ("HERALD_GRPC_KEEPALIVE_INTERVAL", limits.keepalive_interval),
            ("HERALD_GRPC_KEEPALIVE_TIMEOUT", limits.keepalive_timeout),
        ] {
            at_least(name, value >= Duration::from_secs(1), "1s")?;
        }
        at_least(
            "HERALD_GRPC_MAX_MESSAGE_BYTES",
            limits.max_message_bytes >= 64 * 1024,
            "65536",
        )?;
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn common(pairs: &[(&str, &str)]) -> Result<Common, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Common::load(&Reader::new(&env))
    }

    fn limits(pairs: &[(&str, &str)]) -> Result<ApiLimits, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ApiLimits::load(&Reader::new(&env))
    }

    #[test]
    fn api_limits_have_defaults_and_refuse_unusable_values() {
        let d = limits(&[]).unwrap();
        assert_eq!(d.max_concurrent_streams, 256);
        assert_eq!(d.request_timeout, Duration::from_secs(150));
        assert_eq!(d.statement_timeout, Duration::from_secs(5));
        assert_eq!(d.max_message_bytes, 1 << 20);
        let off = limits(&[("HERALD_STATEMENT_TIMEOUT", "0")]).unwrap();
        assert_eq!(off.statement_timeout, Duration::ZERO);
        for (name, value) in [
            ("HERALD_GRPC_MAX_CONCURRENT_STREAMS", "0"),
            ("HERALD_GRPC_REQUEST_TIMEOUT", "10ms"),
            ("HERALD_GRPC_KEEPALIVE_TIMEOUT", "0"),
            ("HERALD_GRPC_MAX_MESSAGE_BYTES", "1000"),
            ("HERALD_STATEMENT_TIMEOUT", "soon"),
        ] {
            let err = limits(&[(name, value)]).err().unwrap();
            assert_eq!(err.name, name);
        }
    }

    #[test]
    fn the_connection_settings_default_to_the_local_services_and_are_overridden() {
        let c = common(&[]).unwrap();
        assert_eq!(c.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(
            (c.amqp_prefix.as_str(), c.redis_prefix.as_str()),
            ("herald", "herald")
        );
        assert_eq!(c.queue_type, QueueType::Quorum);
        let err = common(&[("HERALD_QUEUE_TYPE", "stream")]).err().unwrap();
        assert_eq!(err.name, "HERALD_QUEUE_TYPE");
        assert!(err.message.contains("quorum or classic"), "{}", err.message);
        let c = common(&[
            ("HERALD_AMQP_PREFIX", "staging"),
            ("HERALD_DATABASE_SCHEMA", "s1"),
        ])
        .unwrap();
        assert_eq!(
            (c.amqp_prefix.as_str(), c.database_schema.as_str()),
            ("staging", "s1")
        );
    }
}
