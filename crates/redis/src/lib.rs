//! Herald's Redis primitives, shared by the services so that none imports another's code.
//!
//! Redis holds what every process must see at once and may lose without losing a delivery:
//! each primitive degrades to "deliver anyway" or "answer unknown" when Redis is away, never to
//! dropping work. Their key formats are data: a process of the previous version reads and
//! writes the same keys during a rolling upgrade, so they do not change.
//!
//! Layout:
//! - [`rate_limit`]: token buckets (endpoint delivery rates; tenant publish and re-send rates).
//! - [`done_marks`]: "already delivered" marks, so a redelivered success is not sent again.
//! - [`idempotency`]: publishers' idempotency keys and what they were accepted as.
//! - [`throttle_notes`]: why a dispatcher holds an endpoint back, for the webhooks page.

pub mod done_marks;
mod error;
pub mod idempotency;
pub mod rate_limit;
pub mod throttle_notes;

pub use crate::done_marks::DoneMarks;
pub use crate::error::{Error, Result};
pub use crate::idempotency::Idempotency;
pub use crate::rate_limit::{RateLimiter, Take, publish_burst};
