//! Payload filter cost: ingest evaluates an endpoint's filter against every event that matches
//! its subscription, so this is per-event, per-filtered-endpoint CPU. Measured for a one-field
//! filter, a typical dashboard filter (range + membership + `$or`), and a deep one near the
//! limits; plus parsing the payload once (shared by every filter of an event) and parsing a
//! filter (done when the subscription index is rebuilt).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use herald_core::filter::Filter;

const PAYLOAD: &str = r#"{"type":"payment.succeeded","data":{"id":"pay_123","amount":4200,
"currency":"eur","customer":{"country":"DE","tier":"gold","tags":["b2b","eu"]},
"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]},"created":1700000000}"#;

const FILTERS: [(&str, &str); 3] = [
    ("one_field", r#"{"data.currency": "eur"}"#),
    (
        "typical",
        r#"{"data.amount": {"$gte": 1000, "$lt": 100000},
            "data.customer.country": {"$in": ["DE", "FR", "NL", "AT"]},
            "$or": [{"data.customer.tier": "gold"}, {"data.customer.tags": "vip"}]}"#,
    ),
    (
        "deep",
        r#"{"$and": [{"$or": [{"$and": [{"data.items.0.sku": {"$exists": true}},
            {"data.items.1.qty": {"$gt": 0}}]}, {"data.missing": {"$exists": true}}]},
            {"data.customer.tags": {"$nin": ["blocked", "test"]}},
            {"type": {"$ne": "payment.failed"}}]}"#,
    ),
];

fn evaluate(c: &mut Criterion) {
    let payload: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
    let mut group = c.benchmark_group("filter");
    for (name, text) in FILTERS {
        let filter = Filter::parse_str(text).unwrap();
        assert!(filter.matches(&payload), "{name} must match the sample");
        group.bench_function(format!("evaluate/{name}"), |b| {
            b.iter(|| black_box(filter.matches(black_box(&payload))))
        });
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| black_box(Filter::parse_str(black_box(text)).unwrap()))
        });
    }
    group.bench_function("payload_parse", |b| {
        b.iter(|| black_box(serde_json::from_str::<serde_json::Value>(black_box(PAYLOAD)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
