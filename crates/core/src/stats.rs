//! Latency buckets for per-endpoint statistics.
//!
//! The ledger counts each attempt in one bucket per endpoint and hour; a window's success rate
//! and percentiles are then a sum over a few small rows instead of a scan of the attempts. The
//! price is resolution: a percentile is reported as the upper bound of its bucket.

/// Upper bounds of the latency buckets in milliseconds; the last bucket is everything above.
pub const LATENCY_BOUNDS_MS: [u32; 15] = [
    5, 10, 25, 50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
];

/// Number of buckets (the bounds plus one for everything above the last).
pub const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The bucket of a latency.
pub fn bucket(latency_ms: u32) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|b| latency_ms <= *b)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// The `q` quantile (0..=1) of bucket counts, as the upper bound of the bucket it falls in
/// (the last bucket reports its lower bound); `None` when there are no counts.
pub fn quantile(counts: &[u64; BUCKETS], q: f64) -> Option<u32> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(
                LATENCY_BOUNDS_MS
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1]),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(5), 0);
        assert_eq!(bucket(6), 1);
        assert_eq!(bucket(1_000_000), BUCKETS - 1);
        let mut c = [0u64; BUCKETS];
        assert_eq!(quantile(&c, 0.5), None);
        c[bucket(3)] = 90;
        c[bucket(400)] = 10;
        assert_eq!(quantile(&c, 0.5), Some(5));
        assert_eq!(quantile(&c, 0.9), Some(5));
        assert_eq!(quantile(&c, 0.95), Some(500));
        c[BUCKETS - 1] = 1000;
        assert_eq!(quantile(&c, 0.99), Some(60_000));
    }
}
