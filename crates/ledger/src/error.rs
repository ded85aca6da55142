//! The delivery log's error type and its one mapping to gRPC status codes, as in ingest.
//! Messages say what to fix; database and broker errors keep their source for the log and
//! never reach the caller (no SQL, no broker frames).

use std::time::Duration;

use tonic::{Code, Status};

/// Why a delivery log call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The credential lacks the scope a call needs (PERMISSION_DENIED naming it).
    #[error("{0}")]
    MissingScope(#[from] herald_store::MissingScope),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Over the tenant's publish rate: RESOURCE_EXHAUSTED with `google.rpc.RetryInfo`.
    #[error(
        "publish rate limit of {rate} events/s for this tenant reached (re-sends count as publishes); retry after {} ms",
        retry_after.as_millis()
    )]
    RateLimited { rate: u32, retry_after: Duration },
    #[error("{0}")]
    Unavailable(&'static str),
    /// A query failed: unavailable, cancelled by the statement timeout, or internal.
    #[error("ledger database error")]
    Database(#[from] sqlx::Error),
    /// Checking an API key failed in the store.
    #[error("api key check failed")]
    Store(#[from] herald_store::Error),
    /// The broker did not take a re-send; `message` says what was queued and how to go on.
    #[error("{message}")]
    Broker {
        message: String,
        #[source]
        source: herald_broker::Error,
    },
}

/// Result alias of the ledger's API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) | Error::MissingScope(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) | Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::Unavailable(_) | Error::Broker { .. } => Code::Unavailable,
            Error::Database(_) | Error::Store(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::Database(source) | Error::Store(herald_store::Error::Database(source)) => {
                return database(source);
            }
            Error::Store(source) => {
                tracing::error!(error = %source, "api key check failed");
                return Status::internal("internal error");
            }
            Error::Broker { source, .. } => {
                tracing::warn!(error = %source, "re-send not taken: message broker unavailable");
            }
            Error::RateLimited { retry_after, .. } => {
                return herald_proto::server::retry_later(e.to_string(), *retry_after);
            }
            _ => {}
        }
        Status::new(e.code(), e.to_string())
    }
}

/// A failed query: retry later when the database is away, narrow the query when it ran past
/// the statement timeout, else an internal error (logged, not shown).
fn database(e: &sqlx::Error) -> Status {
    if herald_store::unavailable(e) {
        tracing::warn!(error = %e, "ledger database unavailable");
        return Status::unavailable("ledger database unavailable, retry later");
    }
    if herald_store::timed_out(e) {
        tracing::warn!(error = %e, "delivery log query cancelled by the statement timeout");
        return Status::resource_exhausted(herald_store::STATEMENT_TIMEOUT_MESSAGE);
    }
    tracing::error!(error = %e, "ledger query failed");
    Status::internal("internal error")
}

/// Parses an id field, naming it in the error.
pub fn parse_id(field: &str, value: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(value.trim())
        .map_err(|_| Error::InvalidArgument(format!("{field} {value:?} is not a valid id (UUID)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_tell_the_caller_what_to_do_without_internals() {
        let down: Status = Error::Database(sqlx::Error::PoolTimedOut).into();
        assert_eq!(down.code(), Code::Unavailable);
        assert_eq!(down.message(), "ledger database unavailable, retry later");
        let bug: Status = Error::Database(sqlx::Error::RowNotFound).into();
        assert_eq!(bug.code(), Code::Internal);
        assert_eq!(bug.message(), "internal error");
        let store: Status = Error::Store(herald_store::Error::Migrate("x".into())).into();
        assert_eq!(
            (store.code(), store.message()),
            (Code::Internal, "internal error")
        );
    }

    #[test]
    fn a_rate_limit_carries_its_delay() {
        let s: Status = Error::RateLimited {
            rate: 5,
            retry_after: Duration::from_millis(1500),
        }
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("5 events/s"), "{}", s.message());
        assert_eq!(s.metadata().get("retry-after-ms").unwrap(), "1500");
    }

    #[test]
    fn ids_are_named_when_malformed() {
        let e = parse_id("delivery_id", "nope").unwrap_err();
        assert_eq!(
            e.to_string(),
            "delivery_id \"nope\" is not a valid id (UUID)"
        );
        assert!(parse_id("id", &uuid::Uuid::nil().to_string()).is_ok());
    }
}
