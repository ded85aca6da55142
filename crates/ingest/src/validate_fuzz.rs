//! Fuzzing of ingest's input validation with `proptest` (cargo-fuzz needs nightly).
//!
//! Everything here checks what API callers send, so no input may panic it, every rejection must
//! reach the caller as INVALID_ARGUMENT (RESOURCE_EXHAUSTED for a size limit) with a message
//! that says what is wrong, never as INTERNAL or UNKNOWN, and what it accepts must be what the
//! rest of Herald relies on (an accepted URL never names a refused address, say). The corpus is
//! shared with herald-core's fuzz tests: `tests/fuzz/corpus/<target>/`; `HERALD_FUZZ_CASES` sets
//! the cases per strategy (default 256). See `tests/fuzz/README.md`.

use std::net::{Ipv4Addr, Ipv6Addr};

use herald_core::filter::{Filter, MAX_FILTER_BYTES};
use herald_core::matching::Pattern;
use herald_outbound::address_policy::{forbidden_reason, parse_networks};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseResult;
use serde_json::Value;
use tonic::{Code, Status};

use super::*;

#[path = "../../core/tests/fuzz/harness.rs"]
mod harness;

use harness::{Fuzz, mutated, mutated_bytes};

/// A rejection reaches the caller as INVALID_ARGUMENT (or RESOURCE_EXHAUSTED) with a message.
fn check_rejection(e: Error) -> TestCaseResult {
    let code = e.code();
    let message = e.to_string();
    prop_assert!(
        matches!(code, Code::InvalidArgument | Code::ResourceExhausted),
        "rejection mapped to {:?}: {}",
        code,
        message
    );
    prop_assert!(!message.trim().is_empty(), "empty rejection message");
    let status = Status::from(e);
    prop_assert_eq!(status.code(), code);
    prop_assert_eq!(status.message(), message.as_str());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// url

fn policies() -> [(AddressPolicy, bool); 2] {
    let local = parse_networks("127.0.0.0/8, ::1").unwrap_or_default();
    [
        (AddressPolicy::default(), true),
        (AddressPolicy::new(local), false),
    ]
}

fn check_url(raw: &str) -> TestCaseResult {
    for (policy, strict) in policies() {
        for require_https in [true, false] {
            let result = url(raw, require_https, &policy);
            if raw.trim().is_empty() || raw.trim().len() > MAX_URL_LEN {
                prop_assert!(result.is_err(), "accepted {:?}", raw);
            }
            let accepted = match result {
                Err(e) => {
                    check_rejection(e)?;
                    continue;
                }
                Ok(s) => s,
            };
            let parsed = ::url::Url::parse(&accepted);
            prop_assert!(
                parsed.is_ok(),
                "accepted {:?} as unparsable {:?}",
                raw,
                accepted
            );
            let Ok(parsed) = parsed else { continue };
            prop_assert!(
                parsed.scheme() == "https" || (parsed.scheme() == "http" && !require_https),
                "scheme of {}",
                accepted
            );
            prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
            prop_assert!(parsed.fragment().is_none());
            prop_assert_eq!(accepted.trim(), accepted.as_str());
            let ip = match parsed.host() {
                None => {
                    prop_assert!(false, "accepted {:?} without a host", raw);
                    None
                }
                Some(::url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
                Some(::url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
                // Names are resolved and checked at connection time, except `localhost`.
                Some(::url::Host::Domain(d)) => {
                    let d = d.to_ascii_lowercase();
                    (d == "localhost" || d.ends_with(".localhost"))
                        .then_some(IpAddr::from([127, 0, 0, 1]))
                }
            };
            if let Some(ip) = ip {
                prop_assert!(policy.check(ip).is_ok(), "{} is refused", ip);
                if strict {
                    prop_assert_eq!(forbidden_reason(ip), None, "{}", accepted);
                }
            }
            // What is stored passes the same check again.
            let again = url(&accepted, require_https, &policy);
            prop_assert!(
                again.as_ref().ok() == Some(&accepted),
                "{:?} became {:?}, which re-validates as {:?}",
                raw,
                accepted,
                again
            );
        }
    }
    Ok(())
}

/// The text forms an IPv4 literal host can take.
fn v4_forms(v4: Ipv4Addr) -> Vec<String> {
    let n = u32::from(v4);
    let [a, b, c, d] = v4.octets();
    vec![
        v4.to_string(),
        n.to_string(),
        format!("0x{n:x}"),
        format!("0{a:o}.0x{b:x}.{}", (u32::from(c) << 8) | u32::from(d)),
        format!("{v4}."),
        format!("[::ffff:{v4}]"),
        format!("[{}]", v4.to_ipv6_mapped()),
    ]
}

/// A literal address in any of its forms is accepted exactly when it is not refused.
fn check_literal(ip: IpAddr) -> TestCaseResult {
    let strict = AddressPolicy::default();
    let forms = match ip {
        IpAddr::V4(v4) => v4_forms(v4),
        IpAddr::V6(v6) => vec![format!("[{v6}]")],
    };
    let allowed = forbidden_reason(ip).is_none();
    for form in forms {
        let raw = format!("http://{form}:8080/hook");
        let result = url(&raw, false, &strict);
        prop_assert_eq!(result.is_ok(), allowed, "{} -> {:?}", raw, result);
    }
    Ok(())
}

fn host() -> BoxedStrategy<String> {
    prop_oneof![
        select(
            &[
                "example.com",
                "localhost",
                "LocalHost.",
                "a.localhost",
                "xn--bcher-kva.example",
                "bücher.example",
                "例え.テスト",
                "ｌｏｃａｌｈｏｓｔ",
                "127.1",
                "0x7f.1",
                "0177.0.0.1",
                "[::]",
                "[::ffff:7f00:1]",
                "[fe80::1%25eth0]",
                "",
                "%6c%6f%63%61%6c%68%6f%73%74",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z0-9.-]{1,20}",
        any::<Ipv4Addr>().prop_map(|v4| v4.to_string()),
        any::<Ipv6Addr>().prop_map(|v6| format!("[{v6}]")),
        any::<String>(),
    ]
    .boxed()
}

fn url_text() -> BoxedStrategy<String> {
    let scheme = select(
        &[
            "https",
            "http",
            "HTTPS",
            "hTTp",
            "ftp",
            "javascript",
            "file",
            "",
        ][..],
    );
    let userinfo = select(&["", "user@", "user:pw@", ":@", "@", "a%40b@"][..]);
    let port = select(&["", ":443", ":0", ":65535", ":65536", ":x"][..]);
    let fragment = select(&["", "#", "#frag"][..]);
    (
        scheme,
        select(&["://", ":/", ":", ":\\\\", "://\t"][..]),
        userinfo,
        host(),
        port,
        "(/[a-zA-Z0-9%.é ]{0,8}){0,4}(\\?[a-z=&]{0,10})?",
        fragment,
    )
        .prop_map(|(s, sep, u, h, p, path, f)| format!("{s}{sep}{u}{h}{p}{path}{f}"))
        .boxed()
}

// Found here (seed `bug-normalized-longer-than-max.txt`): `url` checked the raw text against
// MAX_URL_LEN but returned the normalised URL, which percent-encoding made longer (2,048 bytes
// in, 6,104 out). It now bounds what it returns.
#[test]
fn fuzz_url() {
    let mut fuzz = Fuzz::new("url");
    fuzz.corpus(|bytes| check_url(&String::from_utf8_lossy(bytes)));
    fuzz.run("mutated seeds", mutated(fuzz.seeds()), |raw| {
        check_url(&raw)
    });
    fuzz.run("strings", any::<String>(), |raw| check_url(&raw));
    fuzz.run("urls", url_text(), |raw| check_url(&raw));
    fuzz.run(
        "literal addresses",
        prop_oneof![
            any::<Ipv4Addr>().prop_map(IpAddr::V4),
            (
                select(&[0u8, 10, 100, 127, 169, 172, 192, 198, 224, 255][..]),
                any::<u32>()
            )
                .prop_map(|(a, rest)| IpAddr::V4(Ipv4Addr::from(
                    (u32::from(a) << 24) | (rest >> 8)
                ))),
            any::<Ipv6Addr>().prop_map(IpAddr::V6),
        ],
        check_literal,
    );
    fuzz.run(
        "long urls",
        (
            MAX_URL_LEN - 40..MAX_URL_LEN + 8,
            select(&["a", "é", "%20", " "][..]),
        ),
        |(len, unit)| {
            let base = "https://example.com/";
            let mut raw = base.to_owned();
            while raw.len() + unit.len() <= len {
                raw.push_str(unit);
            }
            check_url(&raw)
        },
    );
    fuzz.finish();
}

// ---------------------------------------------------------------------------------------------
// publish

fn timestamps() -> Vec<Option<prost_types::Timestamp>> {
    let ts = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
    vec![
        None,
        ts(0, 0),
        ts(1_700_000_000, 999_999_999),
        ts(-1, -1),
        ts(i64::MIN, i32::MIN),
        ts(i64::MAX, i32::MAX),
        ts(8_210_298_412_800, 0),
        ts(1_700_000_059, 1_500_000_000),
    ]
}

/// What `event` promises about an accepted event.
fn check_event(
    event_type: &str,
    payload: &[u8],
    key: Option<&str>,
    occurred_at: Option<&prost_types::Timestamp>,
    max: usize,
) -> TestCaseResult {
    let e = match event(event_type, payload, key, occurred_at, max) {
        Err(e) => return check_rejection(e),
        Ok(e) => e,
    };
    prop_assert!(herald_core::matching::validate_event_type(event_type).is_ok());
    prop_assert_eq!(e.event_type.as_str(), event_type);
    prop_assert!(payload.len() <= max);
    prop_assert_eq!(
        &e.payload[..],
        payload,
        "payload must be kept byte for byte"
    );
    prop_assert_eq!(
        payload.iter().find(|b| !b.is_ascii_whitespace()),
        Some(&b'{')
    );
    // JSON text is UTF-8 (RFC 8259); the ledger keeps the payload as text.
    prop_assert!(
        std::str::from_utf8(payload).is_ok(),
        "accepted a payload that is not UTF-8"
    );
    prop_assert_eq!(e.idempotency_key.as_deref(), key);
    if let Some(k) = key {
        prop_assert!((1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&k.len()));
        prop_assert!(!k.chars().any(char::is_control));
    }
    prop_assert_eq!(e.occurred_at.is_some(), occurred_at.is_some());
    if let (Some(at), Some(ts)) = (e.occurred_at, occurred_at) {
        prop_assert_eq!(at.timestamp(), ts.seconds);
    }
    Ok(())
}

/// A corpus seed as the payload, the event type and the idempotency key.
fn check_publish(bytes: &[u8]) -> TestCaseResult {
    let text = String::from_utf8_lossy(bytes);
    for ts in timestamps() {
        for max in [bytes.len(), bytes.len().saturating_sub(1), 1 << 20] {
            check_event("invoice.paid", bytes, None, ts.as_ref(), max)?;
        }
        check_event(&text, b"{}", Some(&text), ts.as_ref(), 1 << 20)?;
    }
    Ok(())
}

fn event_type() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z0-9_-]{1,6}(\\.[a-zA-Z0-9_-]{1,6}){0,3}",
        1 => "[a-z.*é -]{0,10}",
        1 => "[a-z]{120,135}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn payload_bytes() -> BoxedStrategy<Vec<u8>> {
    let json = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
    .prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec(("[a-z$.]{0,4}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    prop_oneof![
        4 => (json, " {0,2}", " {0,2}").prop_map(|(v, a, b)| format!("{a}{v}{b}").into_bytes()),
        1 => vec(any::<u8>(), 0..64),
        1 => "[{}\\[\\]\":, a0\\\\u]{0,24}".prop_map(String::into_bytes),
    ]
    .boxed()
}

// Found here (seed `bug-invalid-utf8-in-string.json`): `{"a":"<0xff>"}` was accepted, because
// skipping a JSON string with serde's `IgnoredAny` does not check its UTF-8. `event` now
// requires UTF-8 first.
#[test]
fn fuzz_publish() {
    let mut fuzz = Fuzz::new("publish");
    fuzz.corpus(check_publish);
    fuzz.run("mutated seeds", mutated_bytes(fuzz.seeds()), |bytes| {
        check_publish(&bytes)
    });
    fuzz.run(
        "events",
        (
            event_type(),
            payload_bytes(),
            proptest::option::of(prop_oneof![any::<String>(), "[ -~]{250,260}"]),
            proptest::option::of((any::<i64>(), any::<i32>())),
            prop_oneof![0usize..64, Just(1 << 20)],
        ),
        |(event_type, payload, key, ts, max)| {
            let ts = ts.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos });
            check_event(&event_type, &payload, key.as_deref(), ts.as_ref(), max)
        },
    );
    fuzz.finish();
}

// ---------------------------------------------------------------------------------------------
// endpoint fields

fn check_filter_text(text: &str) -> TestCaseResult {
    match filter(text) {
        Err(e) => check_rejection(e)?,
        Ok(None) => prop_assert!(text.trim().is_empty()),
        Ok(Some(doc)) => {
            prop_assert!(text.len() <= MAX_FILTER_BYTES);
            prop_assert!(Filter::parse(&doc).is_ok());
        }
    }
    if !text.trim().is_empty() && text.len() <= MAX_FILTER_BYTES {
        // Valid filters are accepted unless they hold NUL, which the jsonb column refuses.
        let nul = serde_json::from_str(text).is_ok_and(|v| crate::validate::has_nul(&v));
        prop_assert_eq!(
            filter(text).is_ok(),
            Filter::parse_str(text).is_ok() && !nul
        );
    }
    Ok(())
}

fn reserved_by_herald(name: &str, prefix: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "content-type",
        "content-length",
        "user-agent",
        "host",
        "connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-authorization",
    ]
    .contains(&n.as_str())
        || n.starts_with("webhook-")
        || (!prefix.is_empty() && n.starts_with(&prefix.to_ascii_lowercase()))
}

fn check_headers(h: &BTreeMap<String, String>, prefix: &str) -> TestCaseResult {
    match headers(h, prefix) {
        Err(e) => check_rejection(e)?,
        Ok(out) => {
            prop_assert_eq!(&out, h);
            prop_assert!(h.len() <= MAX_HEADERS);
            for (name, value) in h {
                prop_assert!(!name.is_empty() && name.len() <= 128);
                prop_assert!(
                    name.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
                    "header name {:?}",
                    name
                );
                prop_assert!(!reserved_by_herald(name, prefix), "reserved {:?}", name);
                prop_assert!(value.len() <= 4096);
                prop_assert!(!value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)));
            }
        }
    }
    Ok(())
}

fn check_event_types(patterns: &[String]) -> TestCaseResult {
    match event_types(patterns) {
        Err(e) => check_rejection(e)?,
        Ok(out) => {
            prop_assert!(!out.is_empty() && out.len() <= patterns.len());
            for p in &out {
                prop_assert!(patterns.contains(p));
                prop_assert!(Pattern::parse(p).is_ok(), "accepted pattern {:?}", p);
            }
            for p in patterns {
                prop_assert!(out.contains(p), "dropped pattern {:?}", p);
            }
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct Fields {
    text: String,
    number: u32,
    ms: Vec<u32>,
}

/// The single-field checks: names, descriptions, limits, retry schedules.
fn check_fields(f: &Fields) -> TestCaseResult {
    let t = f.text.as_str();
    match name("display_name", t) {
        Err(e) => {
            prop_assert!(e.to_string().contains("display_name"));
            check_rejection(e)?;
        }
        Ok(n) => {
            prop_assert_eq!(n.as_str(), t.trim());
            prop_assert!((1..=256).contains(&n.chars().count()));
            prop_assert!(!n.contains('\0'), "NUL cannot be stored");
        }
    }
    match description(t) {
        Err(e) => check_rejection(e)?,
        Ok(d) => prop_assert!(d == t && t.chars().count() <= 1024 && !t.contains('\0')),
    }
    match group(t) {
        Err(e) => check_rejection(e)?,
        Ok(g) => prop_assert!(g == t.trim() && t.chars().count() <= 128 && !t.contains('\0')),
    }
    match user_agent(t) {
        Err(e) => check_rejection(e)?,
        Ok(ua) => {
            prop_assert!(ua == t && !t.is_empty() && !t.bytes().any(|b| b.is_ascii_control()))
        }
    }
    match header_prefix(t) {
        Err(e) => check_rejection(e)?,
        Ok(p) => prop_assert!(p == t && t.len() <= 64),
    }
    match timeout_ms(f.number) {
        Err(e) => check_rejection(e)?,
        Ok(ms) => prop_assert!(ms == f.number && (1..=MAX_TIMEOUT_MS).contains(&ms)),
    }
    match rate_limit(f.number) {
        Err(e) => check_rejection(e)?,
        Ok(n) => prop_assert!(n == f.number && n <= MAX_RATE_LIMIT),
    }
    let core = RetrySchedule::from_millis(&f.ms);
    match retry_schedule(&f.ms) {
        Err(e) => {
            prop_assert!(core.is_err());
            prop_assert!(e.to_string().starts_with("retry_schedule_ms: "));
            check_rejection(e)?;
        }
        Ok(ms) => {
            prop_assert!(core.is_ok());
            prop_assert_eq!(ms, f.ms.clone());
        }
    }
    Ok(())
}

fn header_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}",
        2 => select(
            &[
                "Content-Type",
                "HOST",
                "te",
                "Webhook-Id",
                "webhook-",
                "X-Acme-Event",
                "x-acme-",
                "Proxy-Authorization",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => "[a-z]{127,130}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn header_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[ -~]{0,40}",
        1 => "[a\r\n\t\u{0}\u{1}\u{7f}é]{0,8}",
        1 => (4090usize..4100).prop_map(|n| "v".repeat(n)),
        1 => any::<String>(),
    ]
    .boxed()
}

#[test]
fn fuzz_endpoint_fields() {
    let mut fuzz = Fuzz::with_corpus("endpoint fields", "filter");
    fuzz.corpus(|bytes| check_filter_text(&String::from_utf8_lossy(bytes)));
    fuzz.run("mutated filters", mutated(fuzz.seeds()), |text| {
        check_filter_text(&text)
    });
    fuzz.run(
        "filters",
        prop_oneof![
            any::<String>(),
            "[{}\\[\\]\":, a$gtinorand0-9.]{0,40}",
            (MAX_FILTER_BYTES - 16..MAX_FILTER_BYTES + 16)
                .prop_map(|n| format!("{{\"a\":\"{}\"}}", "x".repeat(n.saturating_sub(8)))),
        ],
        |text| check_filter_text(&text),
    );
    fuzz.run(
        "headers",
        (
            btree_map(header_name(), header_value(), 0..24),
            select(&["", "X-Acme-", "x-", "Webhook-"][..]),
        ),
        |(h, prefix)| check_headers(&h, prefix),
    );
    fuzz.run(
        "event types",
        prop_oneof![
            4 => vec(
                prop_oneof![
                    Just("*".to_owned()),
                    event_type(),
                    event_type().prop_map(|t| format!("{t}.*")),
                ],
                0..6,
            ),
            1 => (250usize..262).prop_map(|n| (0..n).map(|i| format!("t{}", i % 7)).collect()),
        ],
        |patterns| check_event_types(&patterns),
    );
    fuzz.run(
        "fields",
        (
            prop_oneof![
                any::<String>(),
                "[ a-zA-Z_-]{0,70}",
                (120usize..1030).prop_map(|n| "é".repeat(n)),
                " {0,3}",
            ],
            prop_oneof![any::<u32>(), 0u32..200_000],
            vec(
                prop_oneof![any::<u32>(), 0u32..86_400_001, Just(86_400_000)],
                0..24,
            ),
        )
            .prop_map(|(text, number, ms)| Fields { text, number, ms }),
        |f| check_fields(&f),
    );
    fuzz.finish();
}
