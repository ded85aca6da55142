//! What a publisher hears about its idempotency key.
//!
//! The keys themselves live in Redis ([`herald_redis::idempotency`], where their states and
//! formats are described); this module phrases their outcomes as the API's answers: a key being
//! published right now is `ABORTED` (retry shortly), a key reused for another event is
//! `INVALID_ARGUMENT`, Redis away is `UNAVAILABLE`.

use uuid::Uuid;

pub use herald_redis::idempotency::{Idempotency, Reservation, fingerprint};

use crate::error::{Error, Result};

/// Reserves `key` for the event whose [`fingerprint`] is `fingerprint`.
pub async fn reserve(
    idempotency: &Idempotency,
    tenant: Uuid,
    key: &str,
    fingerprint: &str,
) -> Result<Reservation> {
    idempotency
        .reserve(tenant, key, fingerprint)
        .await
        .map_err(|e| match e {
            herald_redis::Error::KeyBusy => Error::Aborted(
                "an event with this idempotency key is being published; retry shortly".into(),
            ),
            herald_redis::Error::KeyReused => reused(key),
            herald_redis::Error::Redis(e) => e.into(),
            herald_redis::Error::Unreadable(message) => Error::Internal(message),
        })
}

/// The error for a key reused with a different event.
pub fn reused(key: &str) -> Error {
    Error::InvalidArgument(format!(
        "idempotency_key {key:?} was already used for an event with a different event type or payload; use a new key for a new event"
    ))
}
