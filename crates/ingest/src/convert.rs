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

pub fn endpoint(e: &herald_store::Endpoint) -> pb::Endpoint {
    pb::Endpoint {
        id: e.id.to_string(),
        url: e.url.clone(),
        description: e.description.clone(),
        event_types: e.event_types.clone(),
        enabled: e.enabled,
        signing_scheme: scheme_to_pb(e.scheme) as i32,
        timeout_ms: e.timeout_ms,
        retry_schedule_ms: e.retry_schedule_ms.clone().unwrap_or_default(),
        disabled_reason: e.disabled_reason.clone().unwrap_or_default(),
        created_at: Some(ts(e.created_at)),
        updated_at: Some(ts(e.updated_at)),
        headers: e.headers.clone().into_iter().collect(),
    }
}

pub fn tenant(t: &herald_store::Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        name: t.name.clone(),
        header_prefix: t.header_prefix.clone(),
        user_agent: t.user_agent.clone(),
        created_at: Some(ts(t.created_at)),
    }
}
