//! `GetEndpointStatsSeries`: an endpoint's attempts hour by hour, for the charts of a webhooks
//! page (success rate and latency over a day or a week).
//!
//! Read from `endpoint_latency`, the per endpoint, hour and latency bucket counts the batch
//! writer keeps (never the attempts table), so a week is at most 169 × 16 small rows. Each
//! hour's p50/p95 comes from its buckets exactly as the window statistics of `GetEndpoint`
//! are computed ([`herald_core::stats::quantile`]). The window is the current hour and the
//! `hours` whole hours before it, as for those statistics; hours start in UTC and "now" is the
//! database's clock, the one the window statistics use too.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use herald_core::stats::{BUCKETS, quantile};
use herald_proto::v1 as pb;
use uuid::Uuid;

use super::{DeliveriesApi, ts};
use crate::error::{Error, Result, parse_id};

/// Hours of a series when the request leaves them out.
const DEFAULT_HOURS: u32 = 24;
/// Most hours of a series (30 days).
pub const MAX_HOURS: u32 = 720;

/// One hour's counts.
#[derive(Default)]
struct Hour {
    attempts: u64,
    successes: u64,
    latency: [u64; BUCKETS],
}

impl Hour {
    fn point(&self, hour: DateTime<Utc>) -> pb::StatsPoint {
        pb::StatsPoint {
            hour: Some(ts(hour)),
            attempts: self.attempts,
            successes: self.successes,
            p50_latency_ms: quantile(&self.latency, 0.5).unwrap_or(0),
            p95_latency_ms: quantile(&self.latency, 0.95).unwrap_or(0),
        }
    }
}

/// The hours a request asks for: 0 is the default, past [`MAX_HOURS`] is refused.
fn hours(requested: u32) -> Result<u32> {
    match requested {
        0 => Ok(DEFAULT_HOURS),
        n if n <= MAX_HOURS => Ok(n),
        n => Err(Error::InvalidArgument(format!(
            "hours must be between 1 and {MAX_HOURS} (default {DEFAULT_HOURS}), got {n}"
        ))),
    }
}

/// One point per hour from `first` to `last` (both included), oldest first, zeros where
/// `counts` has none.
fn points(
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    counts: &BTreeMap<DateTime<Utc>, Hour>,
) -> Vec<pb::StatsPoint> {
    let empty = Hour::default();
    let mut out = Vec::new();
    let mut hour = first;
    while hour <= last {
        out.push(counts.get(&hour).unwrap_or(&empty).point(hour));
        hour += TimeDelta::hours(1);
    }
    out
}

impl DeliveriesApi {
    pub(super) async fn stats_series(
        &self,
        tenant: Uuid,
        r: pb::GetEndpointStatsSeriesRequest,
    ) -> Result<pb::GetEndpointStatsSeriesResponse> {
        let endpoint = parse_id("endpoint_id", &r.endpoint_id)?;
        let hours = hours(r.hours)?;
        // Another tenant's endpoint is not found, exactly as a missing one.
        let now: DateTime<Utc> =
            sqlx::query_scalar("SELECT now() FROM endpoints WHERE id = $1 AND tenant_id = $2")
                .bind(endpoint)
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(Error::NotFound("endpoint"))?;
        let last = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
        let first = last - TimeDelta::hours(i64::from(hours));
        let rows: Vec<(DateTime<Utc>, i16, i64, i64)> = sqlx::query_as(
            "SELECT hour, bucket, attempts, successes FROM endpoint_latency
             WHERE endpoint_id = $1 AND hour >= $2 AND hour <= $3",
        )
        .bind(endpoint)
        .bind(first)
        .bind(last)
        .fetch_all(&self.pool)
        .await?;
        let mut counts: BTreeMap<DateTime<Utc>, Hour> = BTreeMap::new();
        for (hour, bucket, attempts, successes) in rows {
            let h = counts.entry(hour).or_default();
            let b = (bucket.max(0) as usize).min(BUCKETS - 1);
            h.latency[b] += attempts.max(0) as u64;
            h.attempts += attempts.max(0) as u64;
            h.successes += successes.max(0) as u64;
        }
        Ok(pb::GetEndpointStatsSeriesResponse {
            points: points(first, last, &counts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_default_and_bound() {
        assert_eq!(hours(0).unwrap(), 24);
        assert_eq!(hours(1).unwrap(), 1);
        assert_eq!(hours(720).unwrap(), 720);
        let e = hours(721).unwrap_err().to_string();
        assert_eq!(e, "hours must be between 1 and 720 (default 24), got 721");
    }

    #[test]
    fn every_hour_has_a_point_with_its_own_percentiles() {
        let last = DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .duration_trunc(TimeDelta::hours(1))
            .unwrap();
        let first = last - TimeDelta::hours(3);
        let mut counts = BTreeMap::new();
        let mut busy = Hour {
            attempts: 10,
            successes: 9,
            ..Hour::default()
        };
        busy.latency[herald_core::stats::bucket(3)] = 9;
        busy.latency[herald_core::stats::bucket(400)] = 1;
        counts.insert(first + TimeDelta::hours(1), busy);
        let p = points(first, last, &counts);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].hour.as_ref().unwrap().seconds, first.timestamp());
        assert_eq!(p[3].hour.as_ref().unwrap().seconds, last.timestamp());
        assert_eq!(
            (p[0].attempts, p[0].p50_latency_ms, p[0].p95_latency_ms),
            (0, 0, 0)
        );
        assert_eq!((p[1].attempts, p[1].successes), (10, 9));
        assert_eq!((p[1].p50_latency_ms, p[1].p95_latency_ms), (5, 500));
        assert_eq!(p[2].attempts + p[3].attempts, 0);
    }
}
