//! Postgres seam: the connection pool, embedded migrations, and the tables ingest owns
//! (tenants, API keys, endpoints, event types). The ledger's tables are written by the ledger
//! crate; the schema of both lives in `migrations/`.
//!
//! Every query is scoped by tenant where a tenant owns the row, so one tenant's key can never
//! read or change another's data: a foreign id is indistinguishable from a missing one.

mod endpoints;
mod error;
mod event_types;
mod keys;
mod subscriptions;
mod tenants;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use endpoints::{
    Endpoint, EndpointChanges, EndpointStats, FailurePolicy, NewEndpoint, Outcome, Streak,
};
pub use error::{Error, Result};
pub use event_types::{EventType, EventTypeChanges};
pub use keys::{KeyCache, KeyCheck, bearer};
pub use subscriptions::SubscriptionIndex;
pub use tenants::{ApiKey, Tenant, TenantChanges, hash_api_key};

/// Migrations embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
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
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&pool)
            .await?;
        Ok(Self { pool })
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
