//! How values look on pages: times (UTC), delivery statuses as badges, durations.

use herald_proto::v1::DeliveryStatus;
use maud::{Markup, html};
use prost_types::Timestamp;

/// `2026-12-07 06:30:12 UTC`, or "—" when unset.
pub fn time(t: Option<&Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// The lowercase name of a delivery status (`success`, `failed`, …).
pub fn status_name(status: i32) -> &'static str {
    match DeliveryStatus::try_from(status) {
        Ok(DeliveryStatus::Pending) => "pending",
        Ok(DeliveryStatus::Success) => "success",
        Ok(DeliveryStatus::Retrying) => "retrying",
        Ok(DeliveryStatus::Failed) => "failed",
        _ => "none",
    }
}

/// A status from its form value; `None` for "any".
pub fn parse_status(text: &str) -> Option<DeliveryStatus> {
    match text {
        "pending" => Some(DeliveryStatus::Pending),
        "success" => Some(DeliveryStatus::Success),
        "retrying" => Some(DeliveryStatus::Retrying),
        "failed" => Some(DeliveryStatus::Failed),
        _ => None,
    }
}

/// A status badge (colour and word, never colour alone).
pub fn badge(status: i32) -> Markup {
    let name = status_name(status);
    html! { span class=(format!("badge {name}")) data-testid="status-badge" { (name) } }
}

/// An HTTP status code, or "—" when there was no response.
pub fn code(status: u32) -> String {
    if status == 0 {
        "—".into()
    } else {
        status.to_string()
    }
}

/// Milliseconds as `850 ms`, `1.2 s`, `5 m`, `2 h`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 if ms.is_multiple_of(1000) => format!("{} s", ms / 1000),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} m", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

/// A `<input type="datetime-local">` value (UTC) as a timestamp.
pub fn parse_local_time(text: &str) -> Result<Timestamp, String> {
    let formats = [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ];
    formats
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| Timestamp {
            seconds: t.and_utc().timestamp(),
            nanos: 0,
        })
        .ok_or_else(|| format!("{text:?} is not a time like 2026-01-31T14:00 (UTC)"))
}

/// `payload` pretty-printed when it is JSON (keys in the publisher's order, strings as sent),
/// else as it is (lossy UTF-8).
pub fn pretty_json(payload: &[u8]) -> String {
    if serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
        return String::from_utf8_lossy(payload).into_owned();
    }
    let text = String::from_utf8_lossy(payload);
    let mut out = String::with_capacity(text.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays on one line.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    out.push(chars.next().unwrap_or_default());
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_indented_in_the_publishers_key_order() {
        let shown = pretty_json(br#"{"z":1,"a":{"s":"x, {y}: \"q\"","e":[],"n":[1, 2]},"o":{}}"#);
        assert_eq!(
            shown,
            "{\n  \"z\": 1,\n  \"a\": {\n    \"s\": \"x, {y}: \\\"q\\\"\",\n    \"e\": [],\n    \"n\": [\n      1,\n      2\n    ]\n  },\n  \"o\": {}\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(v["a"]["s"], "x, {y}: \"q\"");
    }

    #[test]
    fn anything_else_is_shown_as_it_is() {
        assert_eq!(pretty_json(b"not json {"), "not json {");
        assert_eq!(pretty_json(b""), "");
    }
}
