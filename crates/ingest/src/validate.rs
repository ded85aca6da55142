//! Input checks for endpoints and events. Each failure names the field and what would be
//! accepted; nothing is written before every check passed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use herald_core::matching::{parse_patterns, validate_event_type};
use herald_core::schedule::RetrySchedule;
use herald_outbound::AddressPolicy;

use crate::error::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Longest endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most custom headers per endpoint.
pub const MAX_HEADERS: usize = 20;
/// Longest endpoint timeout.
pub const MAX_TIMEOUT_MS: u32 = 120_000;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Checks an endpoint URL: http(s), a host, no credentials, and (for literal IPs) an address
/// the policy allows. Host names are checked again at every connection by the dispatcher.
pub fn url(raw: &str, require_https: bool, policy: &AddressPolicy) -> Result<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(bad("url is empty"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(bad(format!("url is longer than {MAX_URL_LEN} characters")));
    }
    let parsed =
        url::Url::parse(raw).map_err(|e| bad(format!("url {raw:?} is not a valid URL: {e}")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if !require_https => {}
        "http" => return Err(bad("url must use https")),
        other => {
            return Err(bad(format!(
                "url scheme {other:?} is not supported (use https or http)"
            )));
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "url must not contain credentials (use a custom header instead)",
        ));
    }
    let ip = match parsed.host() {
        None => return Err(bad("url has no host")),
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(d)) if is_localhost(d) => Some(IpAddr::from([127, 0, 0, 1])),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = ip
        && let Err(reason) = policy.check(ip)
    {
        return Err(bad(format!(
            "url points to a {reason}, which is not allowed"
        )));
    }
    if parsed.fragment().is_some() {
        return Err(bad("url must not have a fragment (#...)"));
    }
    // Normalising percent-encodes: what is stored must fit the limit too.
    let normalized = parsed.to_string();
    if normalized.len() > MAX_URL_LEN {
        return Err(bad(format!(
            "url is longer than {MAX_URL_LEN} characters once percent-encoded ({} characters)",
            normalized.len()
        )));
    }
    Ok(normalized)
}

/// `localhost`, a name under it, with or without the root's trailing dot.
fn is_localhost(domain: &str) -> bool {
    let d = domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase();
    d == "localhost" || d.ends_with(".localhost")
}

/// How long a create or update waits for the URL's host name to resolve.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1_500);

/// Refuses a URL (already checked by [`url`]) whose host name resolves only to addresses the
/// policy forbids (e.g. a name pointing at 127.0.0.1 or a metadata service): the dispatcher,
/// which checks every address again at each connection, would never deliver to it. As the
/// dispatcher, a name with one allowed address passes (it connects to that one). A name that
/// does not resolve now is accepted: this is an early answer for the caller, not the guard.
///
/// The answer names neither the address nor its kind: a tenant who can point names at the
/// operator's private DNS must not learn what they resolve to inside (only that the name is
/// refused). The address goes to the log.
pub async fn resolved_url(url: &str, policy: &AddressPolicy) -> Result<()> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    let (Some(url::Host::Domain(host)), Some(port)) =
        (parsed.host(), parsed.port_or_known_default())
    else {
        return Ok(());
    };
    let lookup = tokio::net::lookup_host((host, port));
    let Ok(Ok(addrs)) = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await else {
        return Ok(());
    };
    let mut refused = None;
    for addr in addrs {
        match policy.check(addr.ip()) {
            Ok(()) => return Ok(()),
            Err(reason) => {
                refused.get_or_insert((reason, addr.ip()));
            }
        }
    }
    match refused {
        Some((reason, ip)) => {
            tracing::info!(host, %ip, reason, "endpoint url refused: its host resolves to a forbidden address");
            Err(bad(format!(
                "url host {host:?} resolves to a private address, which is not allowed (endpoints must be publicly reachable)"
            )))
        }
        None => Ok(()),
    }
}

/// PostgreSQL text cannot hold NUL: refuse it here, with the field's name, rather than let the
/// write fail as an internal error.
pub fn no_nul(field: &str, s: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(bad(format!("{field} must not contain NUL characters")));
    }
    Ok(())
}

pub fn description(d: &str) -> Result<String> {
    if d.chars().count() > 1024 {
        return Err(bad("description is longer than 1024 characters"));
    }
    no_nul("description", d)?;
    Ok(d.to_owned())
}

/// Most deliveries per second an endpoint may be limited to.
pub const MAX_RATE_LIMIT: u32 = 100_000;
/// Longest rotation grace period.
pub const MAX_GRACE_SECONDS: u32 = 7 * 24 * 3600;

/// A payload filter as JSON text; empty means no filter.
pub fn filter(text: &str) -> Result<Option<serde_json::Value>> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    if text.len() > herald_core::filter::MAX_FILTER_BYTES {
        return Err(bad(format!(
            "filter is {} bytes; at most {} are allowed",
            text.len(),
            herald_core::filter::MAX_FILTER_BYTES
        )));
    }
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("filter is not valid JSON: {e}")))?;
    herald_core::filter::Filter::parse(&doc).map_err(|e| bad(e.to_string()))?;
    // Stored as jsonb, which refuses \u0000 in strings and keys.
    if has_nul(&doc) {
        return Err(bad("filter must not contain NUL characters (\\u0000)"));
    }
    Ok(Some(doc))
}

/// True when a string or key of `v` holds NUL (which jsonb refuses).
pub(crate) fn has_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(has_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

pub fn rate_limit(n: u32) -> Result<u32> {
    if n > MAX_RATE_LIMIT {
        return Err(bad(format!(
            "rate_limit_per_second must be at most {MAX_RATE_LIMIT} (0 for no limit)"
        )));
    }
    Ok(n)
}

/// Most POSTs at once an endpoint may ask a dispatcher for.
pub const MAX_IN_FLIGHT: u32 = 256;

/// An endpoint's in-flight cap; 0 stands for the dispatchers' default.
pub fn max_in_flight(n: u32) -> Result<u32> {
    if n > MAX_IN_FLIGHT {
        return Err(bad(format!(
            "max_in_flight must be at most {MAX_IN_FLIGHT} (0 for the server default)"
        )));
    }
    Ok(n)
}

/// An event type group: free text for a page heading.
pub fn group(g: &str) -> Result<String> {
    if g.chars().count() > 128 {
        return Err(bad("group is longer than 128 characters"));
    }
    no_nul("group", g)?;
    Ok(g.trim().to_owned())
}

pub fn event_types(patterns: &[String]) -> Result<Vec<String>> {
    parse_patterns(patterns)?;
    // Keep the caller's order, drop repeats wherever they are.
    let mut seen = std::collections::HashSet::new();
    Ok(patterns
        .iter()
        .filter(|p| seen.insert(p.as_str()))
        .cloned()
        .collect())
}

pub fn timeout_ms(ms: u32) -> Result<u32> {
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(bad(format!(
            "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"
        )));
    }
    Ok(ms)
}

pub fn retry_schedule(ms: &[u32]) -> Result<Vec<u32>> {
    RetrySchedule::from_millis(ms).map_err(|e| bad(format!("retry_schedule_ms: {e}")))?;
    Ok(ms.to_vec())
}

/// An endpoint's retry policy as stored: `None` the server default, an empty list no retries,
/// else these delays.
pub fn retry_choice(ms: &[u32], no_retries: bool) -> Result<Option<Vec<u32>>> {
    match (ms.is_empty(), no_retries) {
        (true, false) => Ok(None),
        (true, true) => Ok(Some(Vec::new())),
        (false, true) => Err(bad(
            "no_retries is set and retry_schedule_ms is not empty: choose one",
        )),
        (false, false) => retry_schedule(ms).map(Some),
    }
}

/// Header names Herald sets itself and a custom header may not override.
fn reserved(name: &str, prefix: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "content-type"
            | "content-length"
            | "user-agent"
            | "host"
            | "connection"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "keep-alive"
            | "proxy-authorization"
    ) || n.starts_with("webhook-")
        || (!prefix.is_empty() && n.starts_with(&prefix.to_ascii_lowercase()))
}

pub fn headers(h: &BTreeMap<String, String>, prefix: &str) -> Result<BTreeMap<String, String>> {
    if h.len() > MAX_HEADERS {
        return Err(bad(format!(
            "at most {MAX_HEADERS} custom headers are allowed"
        )));
    }
    for (name, value) in h {
        let token = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(bad(format!(
                "header name {name:?} is not a valid HTTP header name"
            )));
        }
        if reserved(name, prefix) {
            return Err(bad(format!(
                "header {name:?} is set by Herald and cannot be overridden"
            )));
        }
        if value.len() > 4096
            || value
                .bytes()
                .any(|b| (b.is_ascii_control() && b != b'\t') || b == 0x7f)
        {
            return Err(bad(format!(
                "header {name:?} has an invalid value (at most 4096 bytes, no line breaks or control characters)"
            )));
        }
    }
    Ok(h.clone())
}

pub fn header_prefix(p: &str) -> Result<String> {
    let ok = p.len() <= 64
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(bad(
            "header_prefix must be at most 64 letters, digits, '-' or '_' (e.g. \"X-Acme-\")",
        ));
    }
    Ok(p.to_owned())
}

pub fn user_agent(ua: &str) -> Result<String> {
    if ua.is_empty() || ua.len() > 256 || ua.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad("user_agent must be 1 to 256 printable characters"));
    }
    Ok(ua.to_owned())
}

pub fn name(field: &str, n: &str) -> Result<String> {
    let n = n.trim();
    if n.is_empty() || n.chars().count() > 256 {
        return Err(bad(format!("{field} must be 1 to 256 characters")));
    }
    no_nul(field, n)?;
    Ok(n.to_owned())
}

/// A validated event, ready to fan out.
#[derive(Debug)]
pub struct Event {
    pub event_type: String,
    /// Exactly the bytes the publisher sent.
    pub payload: Vec<u8>,
    pub idempotency_key: Option<String>,
    /// [`crate::idempotency::fingerprint`] of the event, when it has an idempotency key.
    pub fingerprint: Option<String>,
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Checks one published event: type syntax, payload a JSON object within the size limit,
/// idempotency key length, a sane `occurred_at`.
pub fn event(
    event_type: &str,
    payload: &[u8],
    idempotency_key: Option<&str>,
    occurred_at: Option<&prost_types::Timestamp>,
    max_payload: usize,
) -> Result<Event> {
    validate_event_type(event_type).map_err(|e| bad(format!("event_type: {e}")))?;
    event_payload(payload, max_payload)?;
    let idempotency_key = idempotency_key.map(self::idempotency_key).transpose()?;
    let occurred_at = occurred_at
        .map(|ts| {
            chrono::DateTime::from_timestamp(ts.seconds, ts.nanos.max(0) as u32)
                .ok_or_else(|| bad("occurred_at is out of range"))
        })
        .transpose()?;
    Ok(Event {
        fingerprint: idempotency_key
            .as_ref()
            .map(|_| crate::idempotency::fingerprint(event_type, payload)),
        event_type: event_type.to_owned(),
        payload: payload.to_vec(),
        idempotency_key,
        occurred_at,
    })
}

/// An event payload: a UTF-8 JSON object of at most `max_payload` bytes, kept byte for byte.
fn event_payload(payload: &[u8], max_payload: usize) -> Result<()> {
    if payload.len() > max_payload {
        return Err(bad(format!(
            "payload is {} bytes; the limit is {max_payload} bytes",
            payload.len()
        )));
    }
    // IgnoredAny skips strings without checking their UTF-8: check it first, so what is
    // stored and delivered is exactly what was published.
    if let Err(e) = std::str::from_utf8(payload) {
        return Err(bad(format!(
            "payload is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(payload)
        .map_err(|e| bad(format!("payload is not valid JSON: {e}")))?;
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(bad("payload must be a JSON object ({...})"));
    }
    Ok(())
}

/// An idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] bytes, no control characters.
fn idempotency_key(k: &str) -> Result<String> {
    if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(bad(format!(
            "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"
        )));
    }
    if k.chars().any(char::is_control) {
        return Err(bad("idempotency_key must not contain control characters"));
    }
    Ok(k.to_owned())
}

#[cfg(test)]
#[path = "validate_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use herald_outbound::address_policy::parse_networks;

    #[test]
    fn urls() {
        let strict = AddressPolicy::default();
        assert!(url("https://example.com/hook", true, &strict).is_ok());
        assert!(url("http://example.com/hook", true, &strict).is_err());
        assert!(url("ftp://example.com", false, &strict).is_err());
        assert!(url("not a url", false, &strict).is_err());
        assert!(url("https://user:pw@example.com", false, &strict).is_err());
        assert!(url("http://127.0.0.1:8080/", false, &strict).is_err());
        assert!(url("http://localhost:8080/", false, &strict).is_err());
        assert!(url("http://[::1]/", false, &strict).is_err());
        assert!(url("http://169.254.169.254/latest", false, &strict).is_err());
        let local = AddressPolicy::new(parse_networks("127.0.0.0/8").unwrap());
        assert!(url("http://127.0.0.1:8080/", false, &local).is_ok());
        // The root's trailing dot names the same host.
        assert!(url("http://localhost.:8080/", false, &strict).is_err());
        assert!(url("http://API.Localhost./", false, &strict).is_err());
    }

    #[tokio::test]
    async fn host_names_resolving_to_forbidden_addresses_are_refused() {
        let strict = AddressPolicy::default();
        // `localhost` resolves through the hosts file, with no DNS server needed.
        let e = resolved_url("http://localhost:8080/hook", &strict)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("resolves to a private address"), "{e}");
        // Not echoed: what the name resolved to inside, nor which kind of address it is.
        for leak in ["127.0.0.1", "::1", "loopback"] {
            assert!(!e.contains(leak), "{e}");
        }
        // One allowed address is enough, as for the dispatcher: `localhost` may also resolve
        // to ::1, which this policy does not allow.
        let local = AddressPolicy::new(parse_networks("127.0.0.0/8").unwrap());
        assert!(
            resolved_url("http://localhost:8080/hook", &local)
                .await
                .is_ok()
        );
        // Literal addresses were judged by `url`; a name that does not resolve is left to the
        // dispatcher's check at connection time.
        assert!(resolved_url("http://10.0.0.1/", &strict).await.is_ok());
        assert!(
            resolved_url("https://no-such-host.invalid/", &strict)
                .await
                .is_ok()
        );
    }

    #[test]
    fn events() {
        let ok = event("a.b", br#" {"x": 1} "#, None, None, 100).unwrap();
        assert_eq!(ok.payload, br#" {"x": 1} "#);
        assert!(event("a.b", b"[1]", None, None, 100).is_err());
        assert!(event("a.b", b"{", None, None, 100).is_err());
        assert!(event("a.b", b"\"s\"", None, None, 100).is_err());
        assert!(event("a..b", b"{}", None, None, 100).is_err());
        assert!(
            event("a.b", &[b'{'; 101], None, None, 100)
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        assert!(event("a.b", b"{}", Some(""), None, 100).is_err());
    }

    #[test]
    fn in_flight_caps() {
        assert_eq!(max_in_flight(0).unwrap(), 0);
        assert_eq!(max_in_flight(MAX_IN_FLIGHT).unwrap(), MAX_IN_FLIGHT);
        let e = max_in_flight(MAX_IN_FLIGHT + 1).unwrap_err();
        assert!(e.to_string().contains("at most 256"), "{e}");
    }

    #[test]
    fn custom_headers() {
        let mut h = BTreeMap::new();
        h.insert("X-Api-Key".to_owned(), "k".to_owned());
        assert!(headers(&h, "X-Acme-").is_ok());
        h.insert("X-Acme-Event".to_owned(), "k".to_owned());
        assert!(headers(&h, "X-Acme-").is_err());
        let mut h = BTreeMap::new();
        h.insert("X-Bad".to_owned(), "a\r\nb".to_owned());
        assert!(headers(&h, "").is_err());
    }
}
