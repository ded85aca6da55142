//! One signed request: what a dispatcher's delivery attempt and ingest's test send both POST.
//!
//! A test send must reach the receiver exactly as a delivery would (same headers, same
//! signature, same timeout), so both build it here, and both keep the same excerpt of the
//! answer in the log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use herald_core::signing::{self, SignInput};
use herald_core::wire::{DeliveryTask, body_excerpt};
use herald_store::Endpoint;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::client::{Client, Failure, Response};

/// Characters of the response body kept in the log.
pub const BODY_EXCERPT_CHARS: usize = 1000;

/// What the log keeps of a response body: its first [`BODY_EXCERPT_CHARS`] characters.
pub fn excerpt(body: &[u8]) -> String {
    body_excerpt(body, BODY_EXCERPT_CHARS)
}

fn header(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.as_bytes()).ok()
}

/// POSTs `task` to its endpoint as an attempt started `at`: signed headers, the payload as
/// sent by the publisher, bounded by the endpoint's timeout. Deliveries and test sends alike.
pub async fn post_task(
    http: &Client,
    endpoint: &Arc<Endpoint>,
    task: &DeliveryTask,
    at: DateTime<Utc>,
) -> Result<Response, Failure> {
    http.post(
        &endpoint.url,
        build_headers(endpoint, task, at),
        Bytes::copy_from_slice(&task.payload),
        Duration::from_millis(u64::from(endpoint.timeout_ms)),
    )
    .await
}

/// Every header of one attempt: content type, User-Agent, the tenant-prefixed event type,
/// delivery id and attempt number, the signature headers, and the endpoint's custom headers.
pub fn build_headers(
    endpoint: &Arc<Endpoint>,
    task: &DeliveryTask,
    now: DateTime<Utc>,
) -> HeaderMap {
    let prefix = endpoint.header_prefix.as_str();
    let mut h = HeaderMap::with_capacity(10 + endpoint.headers.len());
    h.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(ua) = HeaderValue::from_str(&endpoint.user_agent) {
        h.insert(reqwest::header::USER_AGENT, ua);
    }
    for (k, v) in &endpoint.headers {
        if let (Some(k), Ok(v)) = (header(k), HeaderValue::from_str(v)) {
            h.insert(k, v);
        }
    }
    let id = task.delivery_id.to_string();
    let fixed = [
        (format!("{prefix}Event"), task.event_type.clone()),
        (format!("{prefix}Delivery-Id"), id.clone()),
        (format!("{prefix}Attempt"), task.attempt.to_string()),
    ];
    let input = SignInput {
        id: &id,
        timestamp: now.timestamp(),
        body: &task.payload,
    };
    let signed = signing::sign(
        endpoint.scheme,
        &endpoint.signing_secrets(now),
        prefix,
        &input,
    );
    for (k, v) in fixed.into_iter().chain(signed) {
        if let (Some(k), Ok(v)) = (header(&k), HeaderValue::from_str(&v)) {
            h.insert(k, v);
        }
    }
    h
}
