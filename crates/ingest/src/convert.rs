//! Domain ↔ protobuf conversions.

use chrono::{DateTime, Utc};
use herald_core::signing::Scheme;
use herald_proto::v1 as pb;

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn scheme_to_pb(s: Scheme) -> pb::SigningScheme {
    match s {
        Scheme::Standard => pb::SigningScheme::Standard,
        Scheme::Timestamped => pb::SigningScheme::Timestamped,
        Scheme::Hex => pb::SigningScheme::Hex,
    }
}

pub fn scheme_from_pb(v: i32) -> crate::Result<Scheme> {
    match pb::SigningScheme::try_from(v) {
        Ok(pb::SigningScheme::Unspecified | pb::SigningScheme::Standard) => Ok(Scheme::Standard),
        Ok(pb::SigningScheme::Timestamped) => Ok(Scheme::Timestamped),
        Ok(pb::SigningScheme::Hex) => Ok(Scheme::Hex),
        Err(_) => Err(crate::Error::InvalidArgument(format!(
            "unknown signing_scheme {v}"
        ))),
    }
}

/// Delivery status text (as stored) to the API enum.
pub fn stats(s: &herald_store::EndpointStats, window_hours: u32) -> pb::EndpointStats {
    use herald_core::stats::quantile;
    pb::EndpointStats {
        last_status: s.last_status.as_deref().map_or(
            pb::DeliveryStatus::Unspecified,
            pb::DeliveryStatus::from_stored,
        ) as i32,
        total_deliveries: s.total_deliveries,
        last_delivery_at: s.last_delivery_at.map(ts),
        window_hours,
        window_attempts: s.window_attempts,
        window_successes: s.window_successes,
        success_rate: if s.window_attempts == 0 {
            0.0
        } else {
            s.window_successes as f64 / s.window_attempts as f64
        },
        p50_latency_ms: quantile(&s.latency, 0.5).unwrap_or(0),
        p95_latency_ms: quantile(&s.latency, 0.95).unwrap_or(0),
    }
}

/// An endpoint with its statistics (`None`: none recorded yet); `default_retry_ms` is the
/// server's default schedule, shown when the endpoint has none of its own.
pub fn endpoint_with_stats(
    e: &herald_store::Endpoint,
    s: Option<&herald_store::EndpointStats>,
    window_hours: u32,
    default_retry_ms: &[u32],
) -> pb::Endpoint {
    let mut out = endpoint(e, default_retry_ms);
    out.stats = Some(stats(&s.cloned().unwrap_or_default(), window_hours));
    out
}

/// An endpoint as the API shows it: the retry delays its deliveries get (its own, or
/// `default_retry_ms`, the server's), never an empty list that means "the default".
pub fn endpoint(e: &herald_store::Endpoint, default_retry_ms: &[u32]) -> pb::Endpoint {
    pb::Endpoint {
        id: e.id.to_string(),
        url: e.url.clone(),
        description: e.description.clone(),
        event_types: e.event_types.clone(),
        enabled: e.enabled,
        signing_scheme: scheme_to_pb(e.scheme) as i32,
        timeout_ms: e.timeout_ms,
        retry_schedule_ms: e
            .retry_schedule_ms
            .clone()
            .unwrap_or_else(|| default_retry_ms.to_vec()),
        retry_schedule_is_default: e.retry_schedule_ms.is_none(),
        disabled_reason: e.disabled_reason.clone().unwrap_or_default(),
        created_at: Some(ts(e.created_at)),
        updated_at: Some(ts(e.updated_at)),
        headers: e.headers.clone().into_iter().collect(),
        filter: e.filter.as_ref().map(|f| f.to_string()).unwrap_or_default(),
        rate_limit_per_second: e.rate_limit_per_second,
        disabled_at: e.disabled_at.map(ts),
        stats: None,
        consecutive_failures: e.consecutive_failures,
        no_retries: e.retry_schedule_ms.as_ref().is_some_and(|d| d.is_empty()),
        max_in_flight: e.max_in_flight,
        // Filled in by `delivery_state::State::fill`.
        delivery_state: String::new(),
        in_flight_cap: 0,
        throttled_since: None,
        paced_attempts_per_second: 0,
    }
}

pub fn tenant(t: &herald_store::Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        name: t.name.clone(),
        header_prefix: t.header_prefix.clone(),
        user_agent: t.user_agent.clone(),
        created_at: Some(ts(t.created_at)),
        require_https: t.require_https,
        reject_unknown_event_types: t.reject_unknown_event_types,
        publish_rate_limit: t.publish_rate_limit.map(|r| r.max(0) as u32),
        portal_allowed_origins: t.portal_allowed_origins.clone(),
    }
}

pub fn event_type(t: herald_store::EventType) -> pb::EventType {
    pb::EventType {
        name: t.name,
        description: t.description,
        created_at: Some(ts(t.created_at)),
        group: t.group,
        archived: t.archived,
    }
}
