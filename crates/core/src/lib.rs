//! Herald's domain: what a delivery is, how it is signed, which endpoints an event reaches, when
//! a failed attempt is retried, and the records that travel between the services.
//!
//! Nothing here does I/O; the services put these pieces on the wire (and keep their answers in
//! [`ttl_cache`]).

pub mod backoff;
pub mod config;
pub mod error;
pub mod filter;
pub mod matching;
pub mod schedule;
pub mod secretbox;
pub mod signing;
pub mod stats;
pub mod ttl_cache;
pub mod wire;

pub use error::{Error, Result};
