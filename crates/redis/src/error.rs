//! The Redis crate's error: Redis did not answer, or an idempotency key cannot be used.

/// Why a Redis primitive could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis could not be reached or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// An event with this idempotency key is being published right now.
    #[error("an event with this idempotency key is being published")]
    KeyBusy,
    /// The idempotency key was used for an event with another type or payload.
    #[error("the idempotency key was used for a different event")]
    KeyReused,
    /// A stored value this version cannot read (written by a newer one, or damaged).
    #[error("{0}")]
    Unreadable(String),
}

/// Result alias of the Redis crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
