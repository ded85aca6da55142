//! Herald's own AMQP 0-9-1 client for the hot path: confirmed publishing and consuming, over
//! TCP or TLS.
//!
//! lapin moves every frame through an IO thread of its own; on this project's 2-core machines
//! that costs about ten times the client CPU per message of a client whose IO runs as tasks
//! on the tokio runtime and writes all ready frames at once (`BENCHMARKS.md`, the minimal-client
//! baselines), and it was the largest share of ingest's and the dispatcher's publish cost.
//!
//! - [`handshake`]: URL, login, tuning, request/reply calls during setup.
//! - [`confirms`]: which call each confirm, nack or return settles (pure bookkeeping).
//! - [`connection`]: the publishing connection, the reader and writer tasks and liveness.
//! - [`consumer`]: a consuming connection (deliveries in, acks, nacks and rejects out).
//!
//! Declarations still use lapin: they are not on the per-message path.

mod confirms;
mod connection;
mod consumer;
mod handshake;
#[cfg(test)]
mod liveness_tests;

pub use connection::ConfirmConnection;
pub use consumer::{ConsumerConnection, Death, Delivery};
pub use handshake::{Endpoint, FRAME_MAX, HEARTBEAT_SECS, Opened, Reader, Writer, close_reason};
