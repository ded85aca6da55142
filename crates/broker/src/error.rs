//! Broker errors; every one of them means "not handed off", never "maybe".

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker cannot be reached or the connection broke, as Herald saw it (a timeout, a
    /// consumer cancelled).
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// The broker cannot be reached or the connection broke, as the AMQP client reported it
    /// (kept as the source, for `{:#}` chains; no client type in this crate's API).
    #[error("message broker unavailable: {0}")]
    Amqp(#[source] Box<dyn std::error::Error + Send + Sync>),
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

impl Error {
    /// Whether the broker (or the way to it) is down, as opposed to a refusal of the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Amqp(_))
    }
}

impl From<lapin::Error> for Error {
    fn from(e: lapin::Error) -> Self {
        Error::Amqp(Box::new(e))
    }
}
