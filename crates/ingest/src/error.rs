//! Ingest's error type and its one mapping to gRPC status codes. Messages say what to fix and
//! never carry internals (SQL, broker frames) or secrets.

use std::sync::Arc;

use tonic::{Code, Status};

/// Why a call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(std::borrow::Cow<'static, str>),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Over a rate: RESOURCE_EXHAUSTED with a standard `google.rpc.RetryInfo` detail and a
    /// `retry-after-ms` header, so any gRPC client can back off by the right amount.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Aborted(String),
    /// A broken invariant (what to log; the caller sees "internal error").
    #[error("internal error")]
    Internal(String),
    /// A database failure the caller cannot fix (logged with its source; shared so that an
    /// answer given to repeats of a publish can be cloned).
    #[error("internal error")]
    Database(#[source] Arc<herald_store::Error>),
}

/// Result alias of the ingest crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) | Error::RateLimited { .. } => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Aborted(_) => Code::Aborted,
            Error::Internal(_) | Error::Database(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Error::Database(source) => tracing::error!(error = %source, "database call failed"),
            _ => {}
        }
        if let Error::RateLimited { retry_after, .. } = &e {
            return herald_proto::server::retry_later(e.to_string(), *retry_after);
        }
        Status::new(e.code(), e.to_string())
    }
}

impl From<herald_store::MissingScope> for Error {
    fn from(e: herald_store::MissingScope) -> Self {
        Error::PermissionDenied(e.to_string().into())
    }
}

impl From<herald_core::Error> for Error {
    fn from(e: herald_core::Error) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<herald_store::Error> for Error {
    fn from(e: herald_store::Error) -> Self {
        use herald_store::Error as S;
        match e {
            S::NotFound(what) => Error::NotFound(what),
            S::Conflict(msg) => Error::AlreadyExists(msg),
            S::Invalid(msg) => Error::InvalidArgument(msg),
            S::Limit(msg) => Error::ResourceExhausted(msg),
            e if e.is_unavailable() => {
                Error::Unavailable("database unavailable, retry later".into())
            }
            e if e.is_timed_out() => {
                tracing::warn!(error = %e, "query cancelled by the statement timeout");
                Error::ResourceExhausted(herald_store::STATEMENT_TIMEOUT_MESSAGE.into())
            }
            e => Error::Database(Arc::new(e)),
        }
    }
}

impl From<herald_broker::Error> for Error {
    fn from(e: herald_broker::Error) -> Self {
        tracing::warn!(error = %e, "hand-off to the broker failed");
        Error::Unavailable(
            "event not accepted: the message broker is unavailable, retry later".into(),
        )
    }
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        tracing::warn!(error = %e, "redis call failed");
        Error::Unavailable(
            "idempotency store unavailable: retry later (or publish without an idempotency key)"
                .into(),
        )
    }
}

/// Parses an id field, naming it in the error.
pub fn parse_id(field: &str, value: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(value.trim())
        .map_err(|_| Error::InvalidArgument(format!("{field} {value:?} is not a valid id (UUID)")))
}
