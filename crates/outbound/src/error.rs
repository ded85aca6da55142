//! The outbound crate's error: an operator setting it cannot use, or a client it cannot build.
//! A failed POST is not an error here but an outcome ([`crate::Failure`]): the dispatcher
//! records it and retries.

/// Why outbound delivery cannot be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A network of the address policy's allowlist that does not parse; the message says why.
    #[error("{0}")]
    InvalidNetwork(String),
    /// The HTTP client could not be built (TLS roots, proxy).
    #[error("cannot build the outbound HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Result alias of the outbound crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
