//! Outbound delivery: everything between a delivery task and the receiver's answer.
//!
//! Dispatchers POST deliveries and ingest POSTs test sends; both must go out the same way
//! (signed alike, through the same address guard and egress proxy, never following a redirect),
//! so both use this crate instead of one service importing the other.
//!
//! Layout:
//! - [`address_policy`]: the SSRF guard, which addresses may be reached at all.
//! - `egress`: the operator's proxy and extra CA roots ([`Egress`]).
//! - `client`: the pooled HTTP client that enforces the guard at every connection ([`Client`]).
//! - `request`: the signed request of one attempt ([`post_task`]) and the excerpt of its answer
//!   that the log keeps ([`excerpt`]).

pub mod address_policy;
mod client;
mod egress;
mod error;
mod request;

pub use crate::address_policy::AddressPolicy;
pub use crate::client::{Client, Failure, Response};
pub use crate::egress::Egress;
pub use crate::error::{Error, Result};
pub use crate::request::{BODY_EXCERPT_CHARS, build_headers, excerpt, post_task};
