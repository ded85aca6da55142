//! `GetEndpointStatsSeries`, the hourly points behind a webhooks page's charts: each hour's
//! attempts, successes and p50/p95 are those of the attempts made in it (scheduled and manual;
//! tests left out), every hour of the window has a point (zeros when empty), the window is
//! bounded, and another tenant's endpoint is not found.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use herald_core::stats::{BUCKETS, bucket, quantile};
use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{ADMIN_TOKEN, Herald, Options, Tenant, authed};
use tonic::Code;

use crate::page::endpoint;

async fn series(
    herald: &Herald,
    t: &Tenant,
    endpoint_id: &str,
    hours: u32,
) -> Result<Vec<pb::StatsPoint>, tonic::Status> {
    herald
        .deliveries()
        .await
        .get_endpoint_stats_series(authed(
            pb::GetEndpointStatsSeriesRequest {
                endpoint_id: endpoint_id.into(),
                hours,
            },
            &t.api_key,
        ))
        .await
        .map(|r| r.into_inner().points)
}

fn hour_of(p: &pb::StatsPoint) -> DateTime<Utc> {
    let h = p.hour.as_ref().expect("every point has its hour");
    DateTime::from_timestamp(h.seconds, 0).unwrap()
}

/// Per hour, what the attempts table says: (attempts, successes, p50, p95).
async fn expected_from_attempts(
    herald: &Herald,
    endpoint_id: &str,
) -> BTreeMap<DateTime<Utc>, (u64, u64, u32, u32)> {
    let rows: Vec<(DateTime<Utc>, i32, String)> = sqlx::query_as(
        "SELECT started_at, latency_ms, status FROM attempts
         WHERE endpoint_id = $1 AND trigger <> 'test'",
    )
    .bind(uuid::Uuid::parse_str(endpoint_id).unwrap())
    .fetch_all(&herald.pool)
    .await
    .unwrap();
    let mut hours: BTreeMap<DateTime<Utc>, (u64, u64, [u64; BUCKETS])> = BTreeMap::new();
    for (at, latency, status) in rows {
        let h = hours
            .entry(at.duration_trunc(TimeDelta::hours(1)).unwrap())
            .or_insert((0, 0, [0; BUCKETS]));
        h.0 += 1;
        h.1 += u64::from(status == "success");
        h.2[bucket(latency.max(0) as u32)] += 1;
    }
    hours
        .into_iter()
        .map(|(h, (n, ok, lat))| {
            let q = |x| quantile(&lat, x).unwrap_or(0);
            (h, (n, ok, q(0.5), q(0.95)))
        })
        .collect()
}

#[tokio::test]
async fn hourly_points_are_the_attempts_made_in_each_hour() {
    let herald = Herald::start(Options::default()).await;
    // Every third answer fails, the fifth comes late: the hour has failures and a slow tail.
    let rx = Receiver::start(|_, n| Reply {
        delay: if n == 5 {
            Duration::from_millis(350)
        } else {
            Duration::ZERO
        },
        ..Reply::status(if n % 3 == 0 { 500 } else { 200 })
    })
    .await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                no_retries: true,
                ..endpoint(rx.url("/series"), &["*"])
            },
        )
        .await;
    let mut deliveries = Vec::new();
    for n in 0..8 {
        let p = herald
            .publish(&t, "series.tick", format!("{{\"n\":{n}}}").as_bytes())
            .await;
        deliveries.extend(herald.wait_deliveries(&t, &p.event_id, 1).await);
    }
    // A manual attempt counts; a test send does not.
    herald
        .deliveries()
        .await
        .redeliver(authed(
            pb::RedeliverRequest {
                delivery_id: deliveries[0].id.clone(),
            },
            &t.api_key,
        ))
        .await
        .expect("redeliver");
    herald
        .wait_delivery(&t, &deliveries[0].id, Duration::from_secs(10), |r| {
            r.attempts.len() == 2
        })
        .await;
    herald
        .endpoints()
        .await
        .send_test(authed(
            pb::SendTestRequest {
                endpoint_id: ep.id.clone(),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .expect("test send");
    // Ten attempts recorded: eight scheduled, one manual, one test. The statistics are written
    // in the transaction of the attempts they count.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let recorded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM attempts WHERE endpoint_id = $1")
                .bind(uuid::Uuid::parse_str(&ep.id).unwrap())
                .fetch_one(&herald.pool)
                .await
                .unwrap();
        if recorded == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{recorded} attempts recorded, not 10"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let points = series(&herald, &t, &ep.id, 0).await.expect("series");
    assert_eq!(
        points.iter().map(|p| p.attempts).sum::<u64>(),
        9,
        "the test send is not counted: {points:?}"
    );
    let expected = expected_from_attempts(&herald, &ep.id).await;
    assert_eq!(
        expected.values().map(|e| e.0).sum::<u64>(),
        9,
        "{expected:?}"
    );
    // The default window: the current hour and the 24 before it, oldest first, an hour apart.
    assert_eq!(points.len(), 25);
    for w in points.windows(2) {
        assert_eq!(hour_of(&w[1]) - hour_of(&w[0]), TimeDelta::hours(1));
    }
    let now = Utc::now();
    assert!(hour_of(&points[24]) <= now && now - hour_of(&points[24]) < TimeDelta::hours(1));
    for p in &points {
        let got = (p.attempts, p.successes, p.p50_latency_ms, p.p95_latency_ms);
        let want = expected.get(&hour_of(p)).copied().unwrap_or((0, 0, 0, 0));
        assert_eq!(got, want, "hour {}", hour_of(p));
    }
    let busy: Vec<&pb::StatsPoint> = points.iter().filter(|p| p.attempts > 0).collect();
    assert!(
        busy.iter().map(|p| p.successes).sum::<u64>() < 9,
        "failures count"
    );
    assert!(busy.iter().any(|p| p.p95_latency_ms >= 500), "{busy:?}");
    herald.stop().await;
}

#[tokio::test]
async fn empty_hours_are_zero_and_the_window_is_bounded() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint("http://127.0.0.1:9/none".into(), &["*"]))
        .await;
    // Hours as the ledger's writer leaves them: 3 attempts 5 h ago (2 of them ≤ 100 ms and
    // successful, one ≤ 2 s and failed), 1 attempt 30 h ago.
    let this_hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let id = uuid::Uuid::parse_str(&ep.id).unwrap();
    for (ago, latency, attempts, successes) in [(5, 80, 2, 2), (5, 1_500, 1, 0), (30, 20, 1, 1)] {
        sqlx::query(
            "INSERT INTO endpoint_latency (endpoint_id, hour, bucket, attempts, successes)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(this_hour - TimeDelta::hours(ago))
        .bind(bucket(latency) as i16)
        .bind(attempts as i64)
        .bind(successes as i64)
        .execute(&herald.pool)
        .await
        .unwrap();
    }
    let day = series(&herald, &t, &ep.id, 24).await.unwrap();
    assert_eq!(day.len(), 25);
    let at = |points: &[pb::StatsPoint], ago: i64| {
        let hour = this_hour - TimeDelta::hours(ago);
        points
            .iter()
            .find(|p| hour_of(p) == hour)
            .map(|p| (p.attempts, p.successes, p.p50_latency_ms, p.p95_latency_ms))
    };
    assert_eq!(at(&day, 5), Some((3, 2, 100, 2_000)));
    assert_eq!(at(&day, 30), None, "30 h ago is outside a 24 h window");
    let empty = day
        .iter()
        .filter(|p| (p.attempts, p.successes, p.p50_latency_ms, p.p95_latency_ms) == (0, 0, 0, 0));
    assert_eq!(empty.count(), 24, "{day:?}");
    let two_days = series(&herald, &t, &ep.id, 48).await.unwrap();
    assert_eq!(two_days.len(), 49);
    assert_eq!(at(&two_days, 30), Some((1, 1, 25, 25)));
    assert_eq!(series(&herald, &t, &ep.id, 1).await.unwrap().len(), 2);
    assert_eq!(series(&herald, &t, &ep.id, 720).await.unwrap().len(), 721);

    let refused = series(&herald, &t, &ep.id, 721).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("hours") && refused.message().contains("720"),
        "{}",
        refused.message()
    );
    let malformed = series(&herald, &t, "ep_1", 24).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().contains("endpoint_id"), "{malformed:?}");
    herald.stop().await;
}

#[tokio::test]
async fn another_tenants_endpoint_is_not_found() {
    let herald = Herald::start(Options::default()).await;
    let owner = herald.tenant().await;
    let other = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&owner, endpoint("http://127.0.0.1:9/x".into(), &["*"]))
        .await;
    assert_eq!(series(&herald, &owner, &ep.id, 24).await.unwrap().len(), 25);
    let foreign = series(&herald, &other, &ep.id, 24).await.unwrap_err();
    let missing = series(&herald, &owner, &uuid::Uuid::now_v7().to_string(), 24)
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(
        (missing.code(), missing.message()),
        (foreign.code(), foreign.message()),
        "another tenant's endpoint reads exactly as a missing one"
    );
    // A tenant call: the operator token is refused, no credential is unauthenticated.
    let operator = Tenant {
        id: String::new(),
        api_key: ADMIN_TOKEN.into(),
    };
    let refused = series(&herald, &operator, &ep.id, 24).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let anonymous = herald
        .deliveries()
        .await
        .get_endpoint_stats_series(pb::GetEndpointStatsSeriesRequest {
            endpoint_id: ep.id.clone(),
            hours: 24,
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    herald.stop().await;
}
