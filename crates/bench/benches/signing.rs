//! Signing cost per delivery: the dispatcher signs every attempt once per live secret, and a
//! receiver verifies it, so these figures are the per-POST CPU of the signature for each scheme
//! at a typical (1 KiB) and a large (64 KiB) body.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_core::signing::{self, Scheme, Secret, SignInput};

const SIZES: [usize; 2] = [1024, 64 * 1024];
const SCHEMES: [Scheme; 3] = [Scheme::Standard, Scheme::Timestamped, Scheme::Hex];
const PREFIX: &str = "Webhook-";
const DELIVERY_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
const TIMESTAMP: i64 = 1_700_000_000;

/// A JSON object of `size` bytes.
fn body(size: usize) -> Vec<u8> {
    let pad = "x".repeat(size.saturating_sub(12));
    format!(r#"{{"data":"{pad}"}}"#).into_bytes()
}

fn sign(c: &mut Criterion) {
    let secret = Secret::generate();
    let mut group = c.benchmark_group("sign");
    for size in SIZES {
        let body = body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        for scheme in SCHEMES {
            group.bench_with_input(BenchmarkId::new(scheme.as_str(), size), &body, |b, body| {
                b.iter(|| {
                    let input = SignInput {
                        id: DELIVERY_ID,
                        timestamp: TIMESTAMP,
                        body: black_box(body.as_slice()),
                    };
                    black_box(signing::sign(scheme, &[&secret], PREFIX, &input))
                });
            });
        }
    }
    group.finish();
}

fn verify(c: &mut Criterion) {
    let secret = Secret::generate();
    let mut group = c.benchmark_group("verify");
    for size in SIZES {
        let body = body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        for scheme in SCHEMES {
            let input = SignInput {
                id: DELIVERY_ID,
                timestamp: TIMESTAMP,
                body: &body,
            };
            let headers = signing::sign(scheme, &[&secret], PREFIX, &input);
            let lookup = move |name: &str| -> Option<String> {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            group.bench_with_input(BenchmarkId::new(scheme.as_str(), size), &body, |b, body| {
                b.iter(|| {
                    let verdict = signing::verify(
                        scheme,
                        &secret,
                        PREFIX,
                        &lookup,
                        black_box(body.as_slice()),
                        TIMESTAMP,
                        300,
                    );
                    black_box(verdict.is_ok())
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, sign, verify);
criterion_main!(benches);
