//! Fuzzing of herald-core's input surfaces with `proptest` (cargo-fuzz needs nightly).
//!
//! Filters and retry schedules come from tenants, signature headers from whoever reaches a
//! receiver: none of them may panic the code that reads them, and every rejection must say what
//! is wrong. (Operators' network lists are fuzzed with the address policy, in herald-outbound.) Each test first runs every seed of its corpus
//! (`tests/fuzz/corpus/<target>/`) through its property check, then the same check over mutated
//! seeds and over generated inputs. `HERALD_FUZZ_CASES` sets the cases per strategy (default
//! 256; `make fuzz` runs 50,000). See `tests/fuzz/README.md`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use herald_core::filter::{
    Filter, MAX_CONDITIONS, MAX_DEPTH, MAX_FILTER_BYTES, MAX_LIST_LEN, MAX_PATH_BYTES,
};
use herald_core::schedule::{
    MAX_DELAY, MAX_TIERS, MAX_TOTAL, RetrySchedule, format_duration, parse_duration,
};
use herald_core::signing::{Scheme, Secret, SignInput, VerifyError, sign, verify};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseResult;
use serde_json::{Number, Value, json};

#[path = "fuzz/harness.rs"]
mod harness;

use harness::{Fuzz, mutated, mutated_bytes};

// ---------------------------------------------------------------------------------------------
// filter

const OPERATORS: &[&str] = &[
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$and", "$or", "$xyz",
    "$", "$regex", "$EQ",
];

const SEGMENTS: &[&str] = &[
    "a", "b", "amount", "type", "items", "tags", "0", "1", "01", "data", "x.y",
];

const WORDS: &[&str] = &[
    "",
    "a",
    "b",
    "EUR",
    "invoice.paid",
    "vip",
    "$gt",
    "0",
    "é",
    "\u{0}",
    "ß…",
];

fn object(entries: Vec<(String, Value)>) -> Value {
    Value::Object(entries.into_iter().collect())
}

fn path() -> BoxedStrategy<String> {
    prop_oneof![
        8 => vec(select(SEGMENTS), 1..4).prop_map(|s| s.join(".")),
        1 => select(&["", ".", "a..b", "a.", ".a", "$a", "items.18446744073709551616"][..])
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
    .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![3 => path(), 2 => select(OPERATORS).prop_map(str::to_owned)].boxed()
}

fn leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        select(&[0.5, -0.0, 1.0, 2.5, 1e300, 9_007_199_254_740_993.0][..]).prop_map(|f| json!(f)),
        select(WORDS).prop_map(|s| Value::String(s.to_owned())),
        "[a-c0-2.$]{0,6}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ]
    .boxed()
}

/// Any JSON value, with operator-like keys.
fn json_value() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                vec((key(), inner), 0..6).prop_map(object),
            ]
        })
        .boxed()
}

/// A payload whose keys the generated paths can reach.
fn payload() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..5).prop_map(Value::Array),
                vec((select(SEGMENTS).prop_map(str::to_owned), inner), 0..5).prop_map(object),
            ]
        })
        .boxed()
}

fn operand() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => leaf(),
        2 => vec(leaf(), 0..6).prop_map(Value::Array),
        1 => json_value(),
    ]
    .boxed()
}

fn field_value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => leaf(),
        3 => vec((select(OPERATORS).prop_map(str::to_owned), operand()), 1..4).prop_map(object),
        1 => json_value(),
    ]
    .boxed()
}

/// Filter-shaped documents: mostly valid, nested past the limits now and then.
fn filter_doc() -> BoxedStrategy<Value> {
    vec((path(), field_value()), 0..4)
        .prop_map(object)
        .prop_recursive(10, 48, 4, |inner| {
            let logical = (
                select(&["$and", "$or"][..]).prop_map(str::to_owned),
                vec(inner, 0..3).prop_map(Value::Array),
            );
            vec(
                prop_oneof![3 => (path(), field_value()), 2 => logical],
                0..4,
            )
            .prop_map(object)
        })
        .boxed()
}

/// Wraps `inner` in `levels` single-branch `$and`s (or `$or`s).
fn nest(levels: usize, or: bool, inner: Value) -> Value {
    let op = if or { "$or" } else { "$and" };
    (0..levels).fold(inner, |acc, _| json!({ op: [acc] }))
}

/// `value` placed at a dotted `path` of nested objects.
fn at_path(path: &str, value: Value) -> Value {
    path.rsplit('.').fold(value, |acc, key| json!({ key: acc }))
}

fn fixed_payloads() -> Vec<Value> {
    vec![
        json!({}),
        json!(null),
        json!([1, 2]),
        json!({
            "type": "invoice.paid",
            "amount": 100,
            "price": 9.5,
            "note": null,
            "paid": true,
            "tags": ["vip", "eu"],
            "items": [{ "sku": "a-1" }, { "sku": "b-2" }],
            "data": { "object": { "amount": 2500, "currency": "EUR" } },
            "a": { "b": [0, "x", { "c": 1 }] },
        }),
    ]
}

/// A rejected filter says so; an accepted one evaluates every payload without panicking, and
/// `explain` is `None` exactly when `matches` (as `Filter::explain` documents).
fn check_filter(doc: &Value, payloads: &[Value]) -> TestCaseResult {
    match Filter::parse(doc) {
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(
                msg.starts_with("filter: ") && msg.len() > "filter: ".len(),
                "bad error message {msg:?}"
            );
        }
        Ok(filter) => {
            for p in payloads {
                let matched = filter.matches(p);
                let explanation = filter.explain(p);
                prop_assert_eq!(explanation.is_none(), matched, "payload {}", p);
                if let Some(text) = explanation {
                    prop_assert!(!text.is_empty());
                }
            }
        }
    }
    Ok(())
}

fn check_filter_text(text: &str) -> TestCaseResult {
    let parsed = Filter::parse_str(text);
    match serde_json::from_str::<Value>(text) {
        Ok(doc) => {
            prop_assert_eq!(&parsed, &Filter::parse(&doc));
            let mut payloads = fixed_payloads();
            payloads.push(doc.clone());
            check_filter(&doc, &payloads)?;
        }
        Err(_) => match parsed {
            Ok(f) => prop_assert!(false, "not JSON, yet parsed as {f:?}"),
            Err(e) => prop_assert!(e.to_string().starts_with("filter: not valid JSON")),
        },
    }
    Ok(())
}

/// Whether `filter` parses, and if so whether it matches `payload`.
fn outcome(filter: Value, payload: &Value) -> Result<Option<bool>, TestCaseError> {
    let Ok(f) = Filter::parse(&filter) else {
        return Ok(None);
    };
    let matched = f.matches(payload);
    prop_assert_eq!(f.explain(payload).is_none(), matched);
    Ok(Some(matched))
}

#[derive(Clone, Debug)]
struct Semantics {
    path: String,
    operand: Value,
    other: Value,
    list: Vec<Value>,
    payload: Value,
    shape: u8,
    a: Value,
    b: Value,
    int: i64,
}

fn semantics() -> impl Strategy<Value = Semantics> {
    (
        path(),
        operand(),
        leaf(),
        vec(leaf(), 0..5),
        payload(),
        0u8..3,
        filter_doc(),
        filter_doc(),
        any::<i64>(),
    )
        .prop_map(
            |(path, operand, other, list, payload, shape, a, b, int)| Semantics {
                path,
                operand,
                other,
                list,
                payload,
                shape,
                a,
                b,
                int,
            },
        )
}

/// The relations `Filter`'s documentation promises between operators.
fn check_semantics(s: &Semantics) -> TestCaseResult {
    let payload = match s.shape {
        0 => s.payload.clone(),
        1 => at_path(&s.path, s.operand.clone()),
        _ => at_path(&s.path, s.other.clone()),
    };
    let p = &payload;
    let on_field = |op: &str, v: Value| json!({ s.path.as_str(): { op: v } });

    // `{}` matches everything.
    prop_assert_eq!(outcome(json!({}), p)?, Some(true));

    // `$ne` is the negation of `$eq`, `$nin` of `$in`, `$exists: false` of `$exists: true`.
    let eq = outcome(on_field("$eq", s.operand.clone()), p)?;
    if let (Some(eq), Some(ne)) = (eq, outcome(on_field("$ne", s.operand.clone()), p)?) {
        prop_assert_ne!(eq, ne);
    }
    let list = Value::Array(s.list.clone());
    let is_in = outcome(on_field("$in", list.clone()), p)?;
    if let (Some(is_in), Some(nin)) = (is_in, outcome(on_field("$nin", list), p)?) {
        prop_assert_ne!(is_in, nin);
    }
    if let (Some(yes), Some(no)) = (
        outcome(on_field("$exists", json!(true)), p)?,
        outcome(on_field("$exists", json!(false)), p)?,
    ) {
        prop_assert_ne!(yes, no);
    }
    // `$in` holds when `$eq` holds for any listed value.
    if let Some(is_in) = is_in {
        let mut any_eq = false;
        for v in &s.list {
            any_eq |= outcome(on_field("$eq", v.clone()), p)? == Some(true);
        }
        prop_assert_eq!(is_in, any_eq);
    }
    // A literal that is not an operator object is an implicit `$eq`.
    let operator_object =
        matches!(&s.operand, Value::Object(m) if m.keys().any(|k| k.starts_with('$')));
    if !operator_object {
        let literal = outcome(json!({ s.path.as_str(): s.operand.clone() }), p)?;
        if literal.is_some() && eq.is_some() {
            prop_assert_eq!(literal, eq);
        }
    }
    // The ordering operators agree with each other and with `$eq`.
    if matches!(s.operand, Value::Number(_) | Value::String(_)) {
        let cmp = |op| outcome(on_field(op, s.operand.clone()), p);
        if let (Some(gt), Some(gte), Some(lt), Some(lte), Some(eq)) =
            (cmp("$gt")?, cmp("$gte")?, cmp("$lt")?, cmp("$lte")?, eq)
        {
            let implies = |a: bool, b: bool| !a || b;
            prop_assert!(implies(gt, !lte) && implies(lt, !gte) && implies(gt, !lt));
            prop_assert!(implies(gt, gte), "$gt without $gte");
            prop_assert!(implies(lt, lte), "$lt without $lte");
            prop_assert!(implies(gt, !eq), "$gt and $eq");
            prop_assert!(implies(lt, !eq), "$lt and $eq");
            prop_assert!(implies(gte, gt || eq), "$gte without $gt or $eq");
            prop_assert!(implies(lte, lt || eq), "$lte without $lt or $eq");
        }
    }
    // `$and` is conjunction, `$or` disjunction; a combination within the limits means each part
    // is within them too.
    for (op, combine) in [("$and", true), ("$or", false)] {
        if let Some(both) = outcome(json!({ op: [s.a.clone(), s.b.clone()] }), p)? {
            let a = outcome(s.a.clone(), p)?;
            let b = outcome(s.b.clone(), p)?;
            prop_assert!(
                a.is_some() && b.is_some(),
                "{op} parsed but a branch did not"
            );
            let (a, b) = (a == Some(true), b == Some(true));
            prop_assert_eq!(both, if combine { a && b } else { a || b }, "{}", op);
        }
    }
    // Numbers compare numerically: an integer equals itself as a float.
    let f = s.int as f64;
    prop_assert_eq!(
        outcome(json!({ "n": s.int }), &json!({ "n": f }))?,
        Some(true)
    );
    prop_assert_eq!(
        outcome(json!({ "n": f }), &json!({ "n": s.int }))?,
        Some(true)
    );
    Ok(())
}

#[derive(Clone, Debug)]
struct Limits {
    levels: usize,
    with_operator: bool,
    or: bool,
    list_len: usize,
    fields: usize,
    string_len: usize,
    path_len: usize,
    payload_len: usize,
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        0..MAX_DEPTH + 8,
        any::<bool>(),
        any::<bool>(),
        MAX_LIST_LEN - 8..MAX_LIST_LEN + 8,
        MAX_CONDITIONS - 8..MAX_CONDITIONS + 8,
        MAX_FILTER_BYTES - 24..MAX_FILTER_BYTES + 8,
        MAX_PATH_BYTES - 8..MAX_PATH_BYTES + 8,
        0usize..4_000,
    )
        .prop_map(
            |(levels, with_operator, or, list_len, fields, string_len, path_len, payload_len)| {
                Limits {
                    levels,
                    with_operator,
                    or,
                    list_len,
                    fields,
                    string_len,
                    path_len,
                    payload_len,
                }
            },
        )
}

/// Each documented limit holds exactly at its boundary.
fn check_limits(l: &Limits) -> TestCaseResult {
    let huge = json!({ "a": vec![json!(7); l.payload_len], "b": "x".repeat(l.payload_len) });
    let payloads = [huge, json!({ "a": 1 })];
    let accepted = |doc: &Value| -> Result<bool, TestCaseError> {
        check_filter(doc, &payloads)?;
        Ok(Filter::parse(doc).is_ok())
    };

    // Level 1 is the top object, each branch adds one, an operator object one more.
    let inner = if l.with_operator {
        json!({ "a": { "$gt": 1 } })
    } else {
        json!({ "a": 1 })
    };
    let depth = 1 + l.levels + usize::from(l.with_operator);
    prop_assert_eq!(
        accepted(&nest(l.levels, l.or, inner))?,
        depth <= MAX_DEPTH,
        "depth {}",
        depth
    );

    let list: Vec<Value> = (0..l.list_len).map(|i| json!(i)).collect();
    prop_assert_eq!(
        accepted(&json!({ "a": { "$in": list.clone() } }))?,
        l.list_len <= MAX_LIST_LEN
    );
    prop_assert_eq!(
        accepted(&json!({ "a": { "$nin": list } }))?,
        l.list_len <= MAX_LIST_LEN
    );

    let fields = object((0..l.fields).map(|i| (format!("f{i}"), json!(i))).collect());
    prop_assert_eq!(accepted(&fields)?, l.fields <= MAX_CONDITIONS);

    // `{"a":"…"}` is the string plus 8 bytes.
    let big = json!({ "a": "x".repeat(l.string_len) });
    prop_assert_eq!(accepted(&big)?, l.string_len + 8 <= MAX_FILTER_BYTES);

    let long = json!({ "p".repeat(l.path_len): 1 });
    prop_assert_eq!(accepted(&long)?, l.path_len <= MAX_PATH_BYTES);
    Ok(())
}

#[test]
fn fuzz_filter() {
    let mut fuzz = Fuzz::new("filter");
    fuzz.corpus(|bytes| check_filter_text(&String::from_utf8_lossy(bytes)));
    fuzz.run("mutated seeds", mutated(fuzz.seeds()), |text| {
        check_filter_text(&text)
    });
    fuzz.run("strings", any::<String>(), |text| check_filter_text(&text));
    fuzz.run(
        "json values",
        (json_value(), vec(payload(), 0..4)),
        |(doc, mut payloads)| {
            payloads.extend(fixed_payloads());
            payloads.push(doc.clone());
            check_filter(&doc, &payloads)?;
            check_filter_text(&doc.to_string())
        },
    );
    fuzz.run(
        "filter documents",
        (filter_doc(), vec(payload(), 0..4)),
        |(doc, mut payloads)| {
            payloads.extend(fixed_payloads());
            check_filter(&doc, &payloads)
        },
    );
    fuzz.run(
        "deep nesting",
        (0usize..24, any::<bool>(), filter_doc(), payload()),
        |(levels, or, inner, p)| check_filter(&nest(levels, or, inner), &[p]),
    );
    fuzz.run("semantics", semantics(), |s| check_semantics(&s));
    fuzz.run("limits", limits(), |l| check_limits(&l));
    fuzz.finish();
}

// ---------------------------------------------------------------------------------------------
// schedule

/// The documented answer of `RetrySchedule::next`.
fn check_next(
    s: &RetrySchedule,
    failed: u32,
    used: u32,
    retry_after: Option<Duration>,
) -> TestCaseResult {
    let delays = s.delays();
    let next = s.next(failed, used, retry_after);
    let remaining = (used as usize) < delays.len();
    prop_assert_eq!(
        next.is_some(),
        remaining,
        "{} tiers used of {:?}",
        used,
        delays
    );
    let Some(n) = next else {
        return Ok(());
    };
    // Attempts count requests, whatever tiers were skipped.
    prop_assert_eq!(n.attempt, failed.max(1).saturating_add(1));
    prop_assert!(n.tiers_used > used && n.tiers_used as usize <= delays.len());
    let index = n.tiers_used as usize - 1;
    match retry_after {
        None => {
            prop_assert_eq!(n.tiers_used, used + 1);
            prop_assert_eq!(n.delay, delays[index]);
        }
        Some(wait) => {
            let start = used as usize;
            // The first remaining tier at least as long as the wait, else the last tier after
            // the wait itself (at most 24 h): never sooner than asked, within that bound.
            match (start..delays.len()).find(|i| delays[*i] >= wait) {
                Some(expected) => {
                    prop_assert_eq!(index, expected);
                    prop_assert_eq!(n.delay, delays[index]);
                }
                None => {
                    prop_assert_eq!(index, delays.len() - 1);
                    prop_assert_eq!(n.delay, wait.min(MAX_DELAY).max(delays[index]));
                }
            }
            prop_assert!(n.delay >= wait.min(MAX_DELAY));
        }
    }
    Ok(())
}

fn check_schedule_text(text: &str) -> TestCaseResult {
    for piece in text.split(',') {
        if let Ok(d) = parse_duration(piece) {
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
    match RetrySchedule::parse(text) {
        Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
        Ok(s) => {
            let delays = s.delays();
            prop_assert!(delays.len() <= MAX_TIERS);
            prop_assert!(delays.iter().all(|d| *d <= MAX_DELAY));
            prop_assert!(delays.iter().sum::<Duration>() <= MAX_TOTAL);
            // Display and the API's milliseconds both round-trip.
            prop_assert_eq!(RetrySchedule::parse(&s.to_string()), Ok(s.clone()));
            prop_assert_eq!(RetrySchedule::from_millis(&s.as_millis()), Ok(s.clone()));
            let len = delays.len() as u32;
            let mut waits = vec![None, Some(Duration::ZERO), Some(Duration::MAX)];
            for d in delays {
                waits.extend([Some(*d), d.checked_add(Duration::from_nanos(1))]);
            }
            for failed in [0, 1, 2, len, len + 1, len + 2, u32::MAX] {
                for used in [failed.saturating_sub(1), 0, len, u32::MAX] {
                    for wait in &waits {
                        check_next(&s, failed, used, *wait)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_from_millis(ms: &[u32]) -> TestCaseResult {
    let total: u64 = ms.iter().map(|m| u64::from(*m)).sum();
    let valid = ms.len() <= MAX_TIERS
        && ms.iter().all(|m| u64::from(*m) <= 24 * 3_600_000)
        && total <= 7 * 24 * 3_600_000;
    match RetrySchedule::from_millis(ms) {
        Ok(s) => {
            prop_assert!(valid, "accepted {ms:?}");
            prop_assert_eq!(s.as_millis(), ms.to_vec());
            prop_assert_eq!(RetrySchedule::parse(&s.to_string()), Ok(s.clone()));
        }
        Err(e) => {
            prop_assert!(!valid, "rejected {ms:?}: {e}");
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

fn millis() -> BoxedStrategy<u32> {
    prop_oneof![
        any::<u32>(),
        0u32..100_000,
        select(&[0, 1, 999, 1_000, 60_000, 3_600_000, 86_400_000, 86_400_001][..]),
    ]
    .boxed()
}

fn duration_text() -> BoxedStrategy<String> {
    let unit = select(&["", "ms", "s", "m", "h", "x", "MS", " s", "µs"][..]);
    let number = prop_oneof![any::<u64>().prop_map(|n| n.to_string()), "[0-9]{0,24}"];
    (" ?", number, unit, " ?")
        .prop_map(|(a, n, u, b)| format!("{a}{n}{u}{b}"))
        .boxed()
}

#[test]
fn fuzz_schedule() {
    let mut fuzz = Fuzz::new("schedule");
    fuzz.corpus(|bytes| check_schedule_text(&String::from_utf8_lossy(bytes)));
    fuzz.run("mutated seeds", mutated(fuzz.seeds()), |text| {
        check_schedule_text(&text)
    });
    fuzz.run("strings", any::<String>(), |text| {
        check_schedule_text(&text)
    });
    fuzz.run("duration lists", vec(duration_text(), 0..24), |parts| {
        check_schedule_text(&parts.join(","))
    });
    fuzz.run(
        "units",
        (any::<u64>(), select(&["", "ms", "s", "m", "h"][..])),
        |(n, unit)| {
            let factor: u64 = match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => 1,
            };
            let got = parse_duration(&format!(" {n}{unit}\t"));
            match n.checked_mul(factor) {
                Some(ms) => prop_assert_eq!(got, Ok(Duration::from_millis(ms))),
                None => prop_assert!(got.is_err()),
            }
            // Every whole-millisecond duration survives format_duration.
            let d = Duration::from_millis(n);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
            Ok(())
        },
    );
    fuzz.run("from_millis", vec(millis(), 0..24), |ms| {
        check_from_millis(&ms)
    });
    fuzz.run(
        "next",
        (
            vec(millis(), 0..22),
            any::<u32>(),
            0u32..24,
            proptest::option::of((any::<u64>(), 0u32..1_000_000_000)),
            proptest::option::of(0u64..100_000_000),
        ),
        |(ms, failed_any, failed_small, wait_any, wait_ms)| {
            let Ok(s) = RetrySchedule::from_millis(&ms) else {
                return Ok(());
            };
            let waits = [
                None,
                wait_any.map(|(secs, nanos)| Duration::new(secs, nanos)),
                wait_ms.map(Duration::from_millis),
            ];
            for failed in [failed_any, failed_small] {
                for used in [failed.saturating_sub(1), failed_small] {
                    for wait in waits {
                        check_next(&s, failed, used, wait)?;
                    }
                }
            }
            Ok(())
        },
    );
    fuzz.finish();
}

// ---------------------------------------------------------------------------------------------
// signature

const SCHEMES: [Scheme; 3] = [Scheme::Standard, Scheme::Timestamped, Scheme::Hex];

/// Receivers look headers up case-insensitively.
fn lookup(headers: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// What `Secret::parse` promises for each scheme.
fn check_secret(value: &str) -> TestCaseResult {
    for scheme in SCHEMES {
        match Secret::parse(value, scheme) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(s) => {
                prop_assert_eq!(s.expose(), value);
                match scheme {
                    Scheme::Standard => {
                        let b64 = value.strip_prefix("whsec_").unwrap_or(value);
                        let key = B64.decode(b64);
                        prop_assert!(key.is_ok_and(|k| (16..=64).contains(&k.len())));
                    }
                    _ => {
                        prop_assert!((8..=256).contains(&value.len()));
                        prop_assert!(!value.chars().any(char::is_control));
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct Garbage {
    scheme: Scheme,
    secret: String,
    prefix: String,
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    now: i64,
    tolerance: i64,
    missing: u8,
}

/// A delivery nobody signed: `verify` answers `Err` (never panics) whatever the headers say.
fn check_garbage(g: &Garbage) -> TestCaseResult {
    check_secret(&g.secret)?;
    let mut headers = Vec::new();
    let slots = [
        ("webhook-id".to_owned(), &g.id),
        ("webhook-timestamp".to_owned(), &g.timestamp),
        ("webhook-signature".to_owned(), &g.signature),
        (format!("{}Id", g.prefix), &g.id),
        (format!("{}Timestamp", g.prefix), &g.timestamp),
        (format!("{}Signature", g.prefix), &g.signature),
    ];
    for (i, (name, value)) in slots.into_iter().enumerate() {
        if g.missing & (1 << i) == 0 {
            headers.push((name, value.clone()));
        }
    }
    let secret = Secret::from_stored(g.secret.clone());
    let result = verify(
        g.scheme,
        &secret,
        &g.prefix,
        &lookup(&headers),
        &g.body,
        g.now,
        g.tolerance,
    );
    prop_assert!(result.is_err(), "unsigned delivery verified: {g:?}");
    Ok(())
}

/// A corpus value in every header slot of every scheme, at several (realistic) receiver clocks;
/// the raw bytes are the body.
fn check_signature_value(bytes: &[u8]) -> TestCaseResult {
    let value = &*String::from_utf8_lossy(bytes);
    check_secret(value)?;
    for scheme in SCHEMES {
        for now in [0, 1_614_265_330, 1_700_000_000, 4_102_444_800] {
            for slot in 0..4u8 {
                let pick = |i: u8, plausible: &str| {
                    if slot == 0 || slot == i {
                        value.to_owned()
                    } else {
                        plausible.to_owned()
                    }
                };
                check_garbage(&Garbage {
                    scheme,
                    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
                    prefix: "X-Acme-".to_owned(),
                    id: pick(1, "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                    timestamp: pick(2, &now.to_string()),
                    signature: pick(3, "v1,AAAA"),
                    body: bytes.to_vec(),
                    now,
                    tolerance: 300,
                    missing: 0,
                })?;
            }
        }
    }
    Ok(())
}

fn garbage() -> impl Strategy<Value = Garbage> {
    let edges = select(&[i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX][..]);
    let timestamp = prop_oneof![
        any::<i64>().prop_map(|t| t.to_string()),
        edges.clone().prop_map(|t| t.to_string()),
        (1_600_000_000i64..1_800_000_000).prop_map(|t| t.to_string()),
        "-?[0-9]{0,21}",
        any::<String>(),
    ];
    let signature = prop_oneof![
        "v1,[A-Za-z0-9+/=]{0,60}( v1,[A-Za-z0-9+/=]{0,60})?",
        (prop_oneof![any::<i64>(), edges], "[0-9a-f]{0,70}")
            .prop_map(|(t, h)| format!("t={t},v1={h}")),
        "t=[0-9-]{0,20}(,v1=[0-9a-fA-F]{0,66}){0,3}",
        "sha256=[0-9a-fA-F]{0,70}",
        any::<String>(),
    ];
    let prefix = prop_oneof![
        select(&["", "X-Acme-", "Webhook-", "webhook-"][..]).prop_map(str::to_owned),
        any::<String>(),
    ];
    (
        select(&SCHEMES[..]),
        prop_oneof![
            "whsec_[A-Za-z0-9+/]{0,90}={0,2}",
            any::<String>(),
            vec(any::<u8>(), 0..80).prop_map(|b| format!("whsec_{}", B64.encode(b))),
        ],
        prefix,
        any::<String>(),
        timestamp,
        signature,
        vec(any::<u8>(), 0..256),
        -(1i64 << 40)..(1i64 << 40),
        prop_oneof![0i64..1_000_000, any::<i64>()],
        any::<u8>(),
    )
        .prop_map(
            |(scheme, secret, prefix, id, timestamp, signature, body, now, tolerance, missing)| {
                Garbage {
                    scheme,
                    secret,
                    prefix,
                    id,
                    timestamp,
                    signature,
                    body,
                    now,
                    tolerance,
                    missing,
                }
            },
        )
}

#[derive(Clone, Debug)]
struct Signed {
    scheme: Scheme,
    /// Key bytes (standard) and literal secret text (timestamped, hex) for each live secret.
    secrets: Vec<(Vec<u8>, String)>,
    prefix: String,
    id: String,
    timestamp: i64,
    body: Vec<u8>,
    skew: i64,
    /// Which body byte to change (modulo the length), and how.
    flip: usize,
    mask: u8,
}

fn signed() -> impl Strategy<Value = Signed> {
    let text_secret = vec(
        // Mapped rather than filtered: a filter's rejects add up past proptest's limit in long
        // runs ("Too many local rejects").
        any::<char>().prop_map(|c| if c.is_control() { '?' } else { c }),
        8..64,
    )
    .prop_map(|c| c.into_iter().collect::<String>());
    (
        select(&SCHEMES[..]),
        vec((vec(any::<u8>(), 16..=64), text_secret), 1..4),
        "[A-Za-z0-9_-]{0,12}",
        any::<String>(),
        prop_oneof![any::<i64>(), 1_600_000_000i64..1_800_000_000],
        vec(any::<u8>(), 0..512),
        -300i64..=300,
        any::<usize>(),
        1u8..=255,
    )
        .prop_map(
            |(scheme, secrets, prefix, id, timestamp, body, skew, flip, mask)| Signed {
                scheme,
                secrets,
                prefix,
                id,
                timestamp,
                body,
                skew,
                flip,
                mask,
            },
        )
}

/// `sign` then `verify` succeeds for every live secret; any change to the body, another secret
/// or (for schemes with a timestamp) a stale clock fails.
fn check_round_trip(s: &Signed) -> TestCaseResult {
    let mut secrets = Vec::new();
    for (key, text) in &s.secrets {
        let value = match s.scheme {
            Scheme::Standard => format!("whsec_{}", B64.encode(key)),
            _ => text.clone(),
        };
        let parsed = Secret::parse(&value, s.scheme);
        prop_assert!(parsed.is_ok(), "valid secret rejected: {parsed:?}");
        secrets.extend(parsed);
    }
    let refs: Vec<&Secret> = secrets.iter().collect();
    let input = SignInput {
        id: &s.id,
        timestamp: s.timestamp,
        body: &s.body,
    };
    let headers = sign(s.scheme, &refs, &s.prefix, &input);
    let h = lookup(&headers);
    let now = s.timestamp.saturating_add(s.skew);
    // Hex carries one signature, of the newest secret.
    let live = if s.scheme == Scheme::Hex {
        &secrets[..1]
    } else {
        &secrets[..]
    };
    let check = |secret: &Secret, body: &[u8], now: i64| {
        verify(s.scheme, secret, &s.prefix, &h, body, now, 300)
    };
    for secret in live {
        prop_assert_eq!(check(secret, &s.body, now), Ok(()));
        let mut longer = s.body.clone();
        longer.push(b' ');
        prop_assert_eq!(check(secret, &longer, now), Err(VerifyError::NoMatch));
        if !s.body.is_empty() {
            let mut flipped = s.body.clone();
            flipped[s.flip % s.body.len()] ^= s.mask;
            prop_assert_eq!(check(secret, &flipped, now), Err(VerifyError::NoMatch));
            prop_assert_eq!(
                check(secret, &s.body[..s.body.len() - 1], now),
                Err(VerifyError::NoMatch)
            );
        }
        if s.scheme != Scheme::Hex
            && let Some(stale) = s.timestamp.checked_add(301)
        {
            prop_assert_eq!(check(secret, &s.body, stale), Err(VerifyError::Expired));
        }
    }
    let stranger = Secret::generate();
    prop_assert_eq!(check(&stranger, &s.body, now), Err(VerifyError::NoMatch));
    Ok(())
}

/// A seed as the body (and id) of a delivery signed with two secrets, under every scheme.
fn check_round_trip_seed(bytes: &[u8]) -> TestCaseResult {
    for scheme in SCHEMES {
        for flip in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            check_round_trip(&Signed {
                scheme,
                secrets: vec![
                    (vec![7; 32], "It's a Secret to Everybody".to_owned()),
                    (vec![9; 16], "whsec_test_secret".to_owned()),
                ],
                prefix: "X-Acme-".to_owned(),
                id: String::from_utf8_lossy(bytes).into_owned(),
                timestamp: 1_700_000_000,
                body: bytes.to_vec(),
                skew: -300,
                flip,
                mask: 0x80,
            })?;
        }
    }
    Ok(())
}

// Found here (seeds `bug-timestamp*-i64-min.txt`): a timestamp header of
// `-9223372036854775808` made `verify`'s freshness check overflow (a panic in debug builds, a
// wrapped value that passed the check in release). It now uses `abs_diff`.
#[test]
fn fuzz_signature() {
    let mut fuzz = Fuzz::new("signature");
    fuzz.corpus(check_signature_value);
    fuzz.run("mutated seeds", mutated_bytes(fuzz.seeds()), |bytes| {
        check_signature_value(&bytes)
    });
    fuzz.run("secrets", any::<String>(), |text| check_secret(&text));
    fuzz.run("unsigned deliveries", garbage(), |g| check_garbage(&g));
    fuzz.finish();
}

#[test]
fn fuzz_signature_round_trip() {
    let mut fuzz = Fuzz::with_corpus("signature round trip", "signature");
    fuzz.corpus(check_round_trip_seed);
    fuzz.run("mutated seeds", mutated_bytes(fuzz.seeds()), |bytes| {
        check_round_trip_seed(&bytes)
    });
    fuzz.run("sign then verify", signed(), |s| check_round_trip(&s));
    fuzz.finish();
}
