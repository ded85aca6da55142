//! Rendering: JSON objects for `--json`, aligned tables otherwise.

use herald_proto::v1 as pb;
use serde_json::{Value, json};

pub fn time(t: &Option<prost_types::Timestamp>) -> Value {
    match t {
        Some(t) => chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
            .map(|d| Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
            .unwrap_or(Value::Null),
        None => Value::Null,
    }
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
    json!({"id": t.id, "name": t.name, "header_prefix": t.header_prefix, "user_agent": t.user_agent, "created_at": time(&t.created_at)})
}

pub fn endpoint(e: &pb::Endpoint) -> Value {
    json!({
        "id": e.id, "url": e.url, "description": e.description, "event_types": e.event_types,
        "enabled": e.enabled, "signing_scheme": scheme(e.signing_scheme), "timeout_ms": e.timeout_ms,
        "retry_schedule_ms": e.retry_schedule_ms, "headers": e.headers, "disabled_reason": e.disabled_reason,
        "created_at": time(&e.created_at), "updated_at": time(&e.updated_at),
        "filter": e.filter, "rate_limit_per_second": e.rate_limit_per_second,
        "consecutive_failures": e.consecutive_failures, "disabled_at": time(&e.disabled_at),
        "max_in_flight": e.max_in_flight, "delivery_state": e.delivery_state,
        "in_flight_cap": e.in_flight_cap, "throttled_since": time(&e.throttled_since),
        "stats": e.stats.as_ref().map(|s| json!({
            "last_status": status(s.last_status), "total_deliveries": s.total_deliveries,
            "last_delivery_at": time(&s.last_delivery_at), "window_hours": s.window_hours,
            "success_rate": s.success_rate, "p50_latency_ms": s.p50_latency_ms,
            "p95_latency_ms": s.p95_latency_ms,
        })),
        "last_status": e.stats.as_ref().map(|s| status(s.last_status)),
        "total_deliveries": e.stats.as_ref().map(|s| s.total_deliveries),
        "success_rate": e.stats.as_ref().map(|s| format!("{:.1}%", s.success_rate * 100.0)),
        "state": state(e),
    })
}

/// The delivery state in a few words, short enough for a table cell, e.g.
/// "throttled: timeouts (cap 2 since 2026-11-23T08:00:00Z)".
fn state(e: &pb::Endpoint) -> String {
    let since = e
        .throttled_since
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0));
    match since {
        Some(since) if e.in_flight_cap > 0 => format!(
            "{} (cap {} since {})",
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
        "status": status(d.status), "attempt_count": d.attempt_count, "response_status": d.response_status,
        "response_body": d.response_body, "last_error": d.last_error, "latency_ms": d.latency_ms,
        "created_at": time(&d.created_at), "last_attempt_at": time(&d.last_attempt_at), "next_retry_at": time(&d.next_retry_at),
        "test": d.test,
    })
}

pub fn attempt(a: &pb::Attempt) -> Value {
    json!({
        "id": a.id, "attempt": a.attempt, "status": status(a.status), "started_at": time(&a.started_at),
        "response_status": a.response_status, "response_body": a.response_body, "error": a.error,
        "latency_ms": a.latency_ms, "trigger": a.trigger,
    })
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.replace('\n', " "),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Field to print alone (`--get`), set once at start.
pub static GET: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Prints rows as JSON (one array), one field per line (`--get`), or as a table of `columns`.
pub fn print(json_mode: bool, rows: &[Value], columns: &[&str]) {
    if let Some(field) = GET.get() {
        for r in rows {
            match &r[field.as_str()] {
                Value::String(s) => println!("{s}"),
                Value::Null => println!(),
                other => println!("{other}"),
            }
        }
        return;
    }
    if json_mode {
        let out = if rows.len() == 1 {
            rows[0].clone()
        } else {
            Value::Array(rows.to_vec())
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("json prints")
        );
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    let mut s = cell(&r[*c]);
                    if s.chars().count() > 60 {
                        s = s.chars().take(57).collect::<String>() + "...";
                    }
                    s
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for r in cells {
        println!("{}", line(r));
    }
}
