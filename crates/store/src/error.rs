//! Store errors.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(String),
    /// A stored secret that cannot be opened with the configured keys (message names the key
    /// id, never key or secret material).
    #[error("{0}")]
    Secret(#[from] herald_core::secretbox::SecretBoxError),
}

/// Result alias of the store crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the database could not be reached (as opposed to a query problem).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
            )
        )
    }
}
