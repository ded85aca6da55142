//! Broker errors; every one of them means "not handed off", never "maybe".

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker cannot be reached or the connection broke.
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a message (nack).
    #[error("message broker refused the message")]
    Nacked,
    /// A mandatory message matched no queue (topology missing).
    #[error("message to {exchange:?}/{routing_key:?} matched no queue")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    /// A message or setting Herald cannot send as it is (too long a routing key, a bad URL).
    #[error("invalid broker request: {0}")]
    Invalid(String),
    /// The broker rejected a declaration (e.g. a queue exists with other arguments).
    #[error("broker topology error: {0}")]
    Topology(String),
}

/// Result alias of the broker crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        Error::Unavailable(e.to_string())
    }
}
