//! Postgres seam: the connection pool, embedded migrations, and the tables ingest owns
//! (tenants, API keys, endpoints, event types). The ledger's tables are written by the ledger
//! crate; the schema of both lives in `migrations/`.
//!
//! Every query is scoped by tenant where a tenant owns the row, so one tenant's key can never
//! read or change another's data: a foreign id is indistinguishable from a missing one.

mod auto_disable;
mod changes;
mod endpoints;
mod error;
mod event_types;
mod keys;
mod portal;
mod scopes;
mod secrets;
mod subscriptions;
mod tenants;
mod troubled;

use std::sync::Arc;
use std::time::Duration;

use herald_core::secretbox::Keyring;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use auto_disable::{FailurePolicy, Outcome, Streak, Tally};
pub use changes::{CHANNEL as CHANGES_CHANNEL, Change};
pub use endpoints::{Endpoint, EndpointChanges, EndpointStats, NewEndpoint, Subscription};
pub use error::{Error, Result, STATEMENT_TIMEOUT_MESSAGE, timed_out, unavailable};
pub use event_types::{EventType, EventTypeChanges, EventTypePosition};
pub use keys::{DEFAULT_LOOKUP_RATE, KeyCache, KeyCheck, bearer, is_operator, same_secret};
pub use portal::{NewPortalLink, PortalLink, PortalSession};
pub use scopes::{CredentialKind, MissingScope, Principal, Scope, Scopes};
pub use secrets::{ReencryptReport, SecretKeyCount};
pub use subscriptions::{SubscriptionIndex, Targets};
pub use tenants::{ApiKey, NewApiKey, Tenant, TenantChanges, hash_api_key, new_secret};
pub use troubled::EndpointHealth;

/// Migrations embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// Seals endpoint secrets on write and opens them on read.
    keys: Arc<Keyring>,
}

impl Store {
    /// Connects to `url` with every connection's `search_path` set to `schema` (created if
    /// missing), so one database can hold many isolated Herald installations.
    pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<Self> {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::Invalid(format!(
                "database schema {schema:?} must be letters, digits and '_'"
            )));
        }
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| Error::Invalid(format!("database url: {e}")))?
            .options([("search_path", schema)])
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        // Services starting together race here; IF NOT EXISTS is not atomic in Postgres, so
        // the loser's unique violation just means the schema now exists.
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&pool)
            .await
        {
            let raced = matches!(&e, sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("23505" | "42P06")));
            if !raced {
                return Err(e.into());
            }
        }
        Ok(Self {
            pool,
            keys: Arc::new(Keyring::none()),
        })
    }

    /// Connects with the shared settings (URL, schema, secret keys) and `max_connections`.
    pub async fn from_config(
        c: &herald_core::config::Common,
        max_connections: u32,
    ) -> Result<Self> {
        Ok(
            Self::connect(&c.database_url, &c.database_schema, max_connections)
                .await?
                .with_secret_keys(c.secret_keys.clone()),
        )
    }

    /// Uses `keys` to encrypt endpoint secrets at rest (`HERALD_SECRET_KEY`). Says once, at
    /// start, when secrets will be stored in clear.
    pub fn with_secret_keys(mut self, keys: Arc<Keyring>) -> Self {
        match keys.current_id() {
            Some(id) => tracing::info!(key_id = id, "endpoint secrets encrypted at rest"),
            None => tracing::warn!(
                "HERALD_SECRET_KEY is not set: endpoint secrets are stored unencrypted (development only)"
            ),
        }
        self.keys = keys;
        self
    }

    pub fn secret_keys(&self) -> &Keyring {
        &self.keys
    }

    /// A handle on the same database whose connections cancel any statement that runs longer
    /// than `timeout` (Postgres `statement_timeout`; zero: no bound), for the queries a
    /// tenant's call drives: a list over millions of rows then fails in `timeout` instead of
    /// holding a connection for minutes. It has a pool of its own (up to `max_connections`,
    /// opened as needed), so the work that must run longer (migrations, the ledger's batch
    /// writes and retention sweeps) keeps this handle's pool, without the bound.
    pub fn bounded(&self, timeout: std::time::Duration, max_connections: u32) -> Self {
        let options = (*self.pool.connect_options())
            .clone()
            .options([("statement_timeout", timeout.as_millis())]);
        let pool = self
            .pool
            .options()
            .clone()
            .max_connections(max_connections)
            .connect_lazy_with(options);
        Self {
            pool,
            keys: self.keys.clone(),
        }
    }

    /// Applies pending migrations (idempotent; concurrent runs serialise on an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| Error::Migrate(e.to_string()))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}
