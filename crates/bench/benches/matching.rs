//! Subscription matching cost: ingest looks up the endpoints of every published event in the
//! tenant's [`Matcher`], so this is per-event CPU at 10, 1,000 and 100,000 endpoints, plus the
//! cost of building the index (done again whenever the subscription cache expires).
//!
//! The endpoint mix: one in ten subscribes to `*`, three in ten to a prefix (`groupN.*`), the
//! rest to two exact types, spread over 50 groups.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use herald_core::matching::{Matcher, Pattern};

const SIZES: [usize; 3] = [10, 1_000, 100_000];
/// An event type most groups' subscribers see, and one only `*` subscribers see.
const EVENTS: [&str; 2] = ["group7.event3", "unsubscribed.type"];

fn entries(n: usize) -> Vec<(usize, Vec<Pattern>)> {
    (0..n)
        .map(|i| {
            let group = i % 50;
            let patterns = match i % 10 {
                0 => vec![Pattern::All],
                1..=3 => vec![Pattern::Prefix(format!("group{group}"))],
                _ => vec![
                    Pattern::Exact(format!("group{group}.event{}", i % 7)),
                    Pattern::Exact(format!("group{group}.other")),
                ],
            };
            (i, patterns)
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching");
    for n in SIZES {
        let matcher = Matcher::new(entries(n));
        for event in EVENTS {
            group.bench_with_input(BenchmarkId::new(event, n), &matcher, |b, m| {
                b.iter(|| black_box(m.matching(black_box(event)).len()));
            });
        }
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("matcher_build");
    for n in SIZES {
        let source = entries(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || source.clone(),
                |e| black_box(Matcher::new(e).len()),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, build);
criterion_main!(benches);
