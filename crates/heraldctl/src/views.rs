//! API messages as JSON rows: the shape `--json` prints and the fields tables, records and
//! `--get` pick from. Enums print as their lower-case names, times as RFC 3339, and a value
//! the API reports as 0 for "none" (no HTTP response, no attempts in the window) as null, so
//! tables show `-` rather than a number that looks measured.

use herald_core::schedule::format_duration;
use herald_proto::v1 as pb;
use serde_json::{Value, json};

/// An optional protobuf time as RFC 3339 with milliseconds, or null.
pub fn time(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|d| Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// An HTTP status, null when there was no response (the API sends 0).
pub fn http_status(code: u32) -> Value {
    if code == 0 { Value::Null } else { json!(code) }
}

pub fn scheme(v: i32) -> &'static str {
    match pb::SigningScheme::try_from(v) {
        Ok(pb::SigningScheme::Timestamped) => "timestamped",
        Ok(pb::SigningScheme::Hex) => "hex",
        _ => "standard",
    }
}

pub fn status(v: i32) -> &'static str {
    match pb::DeliveryStatus::try_from(v) {
        Ok(pb::DeliveryStatus::Pending) => "pending",
        Ok(pb::DeliveryStatus::Success) => "success",
        Ok(pb::DeliveryStatus::Retrying) => "retrying",
        Ok(pb::DeliveryStatus::Failed) => "failed",
        _ => "unknown",
    }
}

pub fn tenant(t: &pb::Tenant) -> Value {
    json!({"id": t.id, "name": t.name, "header_prefix": t.header_prefix, "user_agent": t.user_agent,
        "created_at": time(&t.created_at),
        "portal_allowed_origins": t.portal_allowed_origins.join(" ")})
}

/// An API key (never its secret); `*` in scopes is every scope.
pub fn api_key(k: &pb::ApiKey) -> Value {
    json!({"id": k.id, "tenant_id": k.tenant_id, "name": k.name, "scopes": k.scopes.join(" "),
        "created_at": time(&k.created_at), "expires_at": time(&k.expires_at),
        "revoked_at": time(&k.revoked_at)})
}

pub fn troubled_tenant(t: &pb::TroubledTenant) -> Value {
    json!({"tenant_id": t.tenant_id, "name": t.tenant_name, "failing": t.failing_endpoints,
        "throttled": t.throttled_endpoints, "auto_disabled": t.auto_disabled_endpoints,
        "endpoints": t.total_endpoints})
}

/// An endpoint with its settings, its delivery state and the ledger's statistics, those also
/// flattened to the top level so tables and `--get` reach them.
pub fn endpoint(e: &pb::Endpoint) -> Value {
    let stats = e.stats.as_ref();
    let measured = stats.filter(|s| s.window_attempts > 0);
    json!({
        "id": e.id, "url": e.url, "description": e.description, "event_types": e.event_types,
        "enabled": e.enabled, "signing_scheme": scheme(e.signing_scheme), "timeout_ms": e.timeout_ms,
        "retry_schedule_ms": e.retry_schedule_ms, "no_retries": e.no_retries,
        "retry_schedule": retry_schedule(e), "headers": e.headers,
        "disabled_reason": e.disabled_reason, "created_at": time(&e.created_at),
        "updated_at": time(&e.updated_at), "filter": e.filter,
        "rate_limit_per_second": e.rate_limit_per_second,
        "consecutive_failures": e.consecutive_failures, "disabled_at": time(&e.disabled_at),
        "max_in_flight": e.max_in_flight, "delivery_state": e.delivery_state,
        "in_flight_cap": e.in_flight_cap, "throttled_since": time(&e.throttled_since),
        "paced_attempts_per_second": e.paced_attempts_per_second,
        "stats": stats.map(|s| json!({
            "last_status": status(s.last_status), "total_deliveries": s.total_deliveries,
            "last_delivery_at": time(&s.last_delivery_at), "window_hours": s.window_hours,
            "window_attempts": s.window_attempts, "window_successes": s.window_successes,
            "success_rate": s.success_rate, "p50_latency_ms": s.p50_latency_ms,
            "p95_latency_ms": s.p95_latency_ms,
        })),
        "last_status": stats.filter(|s| s.last_status != 0).map(|s| status(s.last_status)),
        "total_deliveries": stats.map(|s| s.total_deliveries),
        "last_delivery_at": stats.map_or(Value::Null, |s| time(&s.last_delivery_at)),
        "success_rate": measured.map(|s| format!("{:.1}%", s.success_rate * 100.0)),
        "p50_latency_ms": measured.map(|s| s.p50_latency_ms),
        "p95_latency_ms": measured.map(|s| s.p95_latency_ms),
        "window_hours": stats.map(|s| s.window_hours),
        "state": state(e),
    })
}

/// The retry delays as the flag takes them ("1m,5m,1h"), "none" or "server default".
fn retry_schedule(e: &pb::Endpoint) -> String {
    if e.no_retries {
        return "none".to_owned();
    }
    if e.retry_schedule_ms.is_empty() {
        return "server default".to_owned();
    }
    let delays: Vec<String> = e
        .retry_schedule_ms
        .iter()
        .map(|ms| format_duration(std::time::Duration::from_millis(u64::from(*ms))))
        .collect();
    delays.join(",")
}

/// The delivery state in a few words, short enough for a table cell, e.g.
/// "throttled: timeouts (cap 2 since 2026-11-23T08:00:00Z)", or
/// "throttled: errors (cap 4, paced 100/s since 2026-11-23T08:00:00Z)".
fn state(e: &pb::Endpoint) -> String {
    let since = e
        .throttled_since
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0));
    let paced = match e.paced_attempts_per_second {
        0 => String::new(),
        rate => format!(", paced {rate}/s"),
    };
    match since {
        Some(since) if e.in_flight_cap > 0 => format!(
            "{} (cap {}{paced} since {})",
            e.delivery_state,
            e.in_flight_cap,
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        _ => e.delivery_state.clone(),
    }
}

pub fn event_type(t: &pb::EventType) -> Value {
    json!({"name": t.name, "description": t.description, "group": t.group, "archived": t.archived,
        "created_at": time(&t.created_at)})
}

pub fn delivery(d: &pb::Delivery) -> Value {
    json!({
        "id": d.id, "event_id": d.event_id, "endpoint_id": d.endpoint_id, "event_type": d.event_type,
        "status": status(d.status), "attempt_count": d.attempt_count,
        "response_status": http_status(d.response_status), "response_body": d.response_body,
        "last_error": d.last_error, "latency_ms": d.latency_ms, "created_at": time(&d.created_at),
        "last_attempt_at": time(&d.last_attempt_at), "next_retry_at": time(&d.next_retry_at),
        "test": d.test,
    })
}

pub fn attempt(a: &pb::Attempt) -> Value {
    json!({
        "id": a.id, "attempt": a.attempt, "status": status(a.status), "started_at": time(&a.started_at),
        "response_status": http_status(a.response_status), "response_body": a.response_body,
        "error": a.error, "latency_ms": a.latency_ms, "trigger": a.trigger,
    })
}

pub fn activity(i: &pb::ActivityItem) -> Value {
    json!({
        "delivery_id": i.delivery_id, "event_id": i.event_id, "event_type": i.event_type,
        "endpoint_id": i.endpoint_id, "endpoint_url": i.endpoint_url,
        "status": status(i.status), "response_status": http_status(i.response_status),
        "attempt_count": i.attempt_count, "at": time(&i.at), "test": i.test,
    })
}

/// A dead letter; its body as text (invalid UTF-8 replaced), empty in a list.
pub fn dead_letter(d: &pb::DeadLetter) -> Value {
    json!({
        "id": d.id, "queue": d.queue, "reason": d.reason, "tenant_id": d.tenant_id,
        "delivery_id": d.delivery_id, "endpoint_id": d.endpoint_id, "event_id": d.event_id,
        "error": d.error, "headers": d.headers, "body": String::from_utf8_lossy(&d.body),
        "body_bytes": d.body_bytes, "dead_lettered_at": time(&d.dead_lettered_at),
        "replayed_at": time(&d.replayed_at),
    })
}

/// One hour of an endpoint's series; rate and latencies null in an hour without attempts.
pub fn stats_point(p: &pb::StatsPoint) -> Value {
    let measured = p.attempts > 0;
    json!({
        "hour": time(&p.hour), "attempts": p.attempts, "successes": p.successes,
        "success_rate": measured
            .then(|| format!("{:.1}%", p.successes as f64 * 100.0 / p.attempts as f64)),
        "p50_latency_ms": measured.then_some(p.p50_latency_ms),
        "p95_latency_ms": measured.then_some(p.p95_latency_ms),
    })
}

pub fn queue_depth(q: &pb::QueueDepth) -> Value {
    json!({"name": q.name, "kind": q.kind, "messages": q.messages, "consumers": q.consumers})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(window_attempts: u64) -> pb::EndpointStats {
        pb::EndpointStats {
            last_status: pb::DeliveryStatus::Success as i32,
            total_deliveries: 7,
            last_delivery_at: Some(prost_types::Timestamp {
                seconds: 1_795_000_000,
                nanos: 0,
            }),
            window_hours: 24,
            window_attempts,
            window_successes: window_attempts,
            success_rate: 1.0,
            p50_latency_ms: 12,
            p95_latency_ms: 80,
        }
    }

    #[test]
    fn no_response_is_null_not_zero() {
        let d = pb::Delivery {
            response_status: 0,
            ..Default::default()
        };
        assert_eq!(delivery(&d)["response_status"], Value::Null);
        let a = pb::Attempt {
            response_status: 503,
            ..Default::default()
        };
        assert_eq!(attempt(&a)["response_status"], json!(503));
    }

    #[test]
    fn an_endpoint_shows_latency_and_last_delivery_at_the_top_level() {
        let e = pb::Endpoint {
            stats: Some(stats(3)),
            ..Default::default()
        };
        let v = endpoint(&e);
        assert_eq!(v["p50_latency_ms"], json!(12));
        assert_eq!(v["p95_latency_ms"], json!(80));
        assert_eq!(v["last_delivery_at"], json!("2026-11-18T11:06:40.000Z"));
        assert_eq!(v["success_rate"], json!("100.0%"));
        assert_eq!(v["last_status"], json!("success"));
    }

    #[test]
    fn figures_of_an_empty_window_are_absent() {
        let v = endpoint(&pb::Endpoint {
            stats: Some(stats(0)),
            ..Default::default()
        });
        assert_eq!(v["p50_latency_ms"], Value::Null);
        assert_eq!(v["success_rate"], Value::Null);
        assert_eq!(v["total_deliveries"], json!(7));
        let v = endpoint(&pb::Endpoint::default());
        assert_eq!(v["last_status"], Value::Null);
        assert_eq!(v["last_delivery_at"], Value::Null);
    }

    #[test]
    fn the_retry_schedule_reads_as_the_flag_takes_it() {
        let mut e = pb::Endpoint {
            retry_schedule_ms: vec![60_000, 300_000, 3_600_000],
            ..Default::default()
        };
        assert_eq!(endpoint(&e)["retry_schedule"], json!("1m,5m,1h"));
        e.retry_schedule_ms.clear();
        assert_eq!(endpoint(&e)["retry_schedule"], json!("server default"));
        e.no_retries = true;
        assert_eq!(endpoint(&e)["retry_schedule"], json!("none"));
    }

    #[test]
    fn a_throttled_endpoint_says_its_cap_and_since_when() {
        let e = pb::Endpoint {
            delivery_state: "throttled: timeouts".into(),
            in_flight_cap: 2,
            throttled_since: Some(prost_types::Timestamp {
                seconds: 1_795_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            endpoint(&e)["state"],
            json!("throttled: timeouts (cap 2 since 2026-11-18T11:06:40Z)")
        );
        let e = pb::Endpoint {
            delivery_state: "throttled: errors".into(),
            in_flight_cap: 4,
            paced_attempts_per_second: 100,
            ..e
        };
        assert_eq!(
            endpoint(&e)["state"],
            json!("throttled: errors (cap 4, paced 100/s since 2026-11-18T11:06:40Z)")
        );
    }
}
