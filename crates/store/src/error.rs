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
    /// A per-tenant limit is reached.
    #[error("{0}")]
    Limit(String),
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
        matches!(self, Error::Database(e) if unavailable(e))
    }

    /// True when the statement ran past the statement timeout ([`timed_out`]).
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Error::Database(e) if timed_out(e))
    }
}

/// True when `e` says the database is unreachable, restarting, overloaded or read-only (a
/// failover), so the caller should retry later (`UNAVAILABLE`), rather than that the query is
/// wrong. A restart shows on live connections as a server error, not an I/O error: SQLSTATE
/// class 08 (connection exception), 53 (insufficient resources), 57P01–57P03 (shutdown,
/// cannot connect now), 25006 (read-only transaction on a standby), 40001/40P01 (serialization
/// failure, deadlock: retrying succeeds).
pub fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(
                    &*code,
                    "57P01" | "57P02" | "57P03" | "25006" | "40001" | "40P01"
                )
        }),
        _ => false,
    }
}

/// True when `e` is a statement Postgres cancelled (SQLSTATE 57014): it ran past the
/// connection's `statement_timeout` (see [`crate::Store::bounded`]), or an operator cancelled
/// it. Either way the same call would be cancelled again: the caller must ask for less.
pub fn timed_out(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// What a caller is told when its query was cancelled by the statement timeout.
pub const STATEMENT_TIMEOUT_MESSAGE: &str = "the query took longer than the database statement timeout (HERALD_STATEMENT_TIMEOUT) and was cancelled: narrow it (a shorter since/until range, a filter, a smaller page_size) and retry";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_databases_are_told_apart_from_bad_queries() {
        assert!(unavailable(&sqlx::Error::PoolTimedOut));
        assert!(unavailable(&sqlx::Error::Protocol("eof".into())));
        assert!(!unavailable(&sqlx::Error::RowNotFound));
        assert!(!unavailable(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
