//! A receiver's `Retry-After` moves the next attempt to a later tier, and is waited even when
//! longer than every tier left.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{Herald, Options, Tenant};

use crate::page::{endpoint, status_is};

/// Publishes one event to an endpoint with `schedule` whose receiver answers `status` with
/// `Retry-After: 1` once, then 200. Returns Herald, the tenant, the event id, the gap between
/// the two requests and the second one's attempt header.
async fn retry_after_once(
    status: u16,
    schedule: Vec<u32>,
) -> (Herald, Tenant, String, Duration, Option<String>) {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::start(move |_, n| {
        if n == 1 {
            Reply {
                headers: vec![("retry-after".into(), "1".into())],
                ..Reply::status(status)
            }
        } else {
            Reply::status(200)
        }
    })
    .await;
    let t = herald.tenant().await;
    herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                retry_schedule_ms: schedule,
                ..endpoint(rx.url("/busy"), &["*"])
            },
        )
        .await;
    let p = herald.publish(&t, "a.b", b"{}").await;
    let first = rx.next(Duration::from_secs(10)).await;
    let second = rx.next(Duration::from_secs(10)).await;
    let attempt = second.header("webhook-attempt");
    (herald, t, p.event_id, second.at - first.at, attempt)
}

#[tokio::test]
async fn retry_after_moves_the_next_attempt_to_a_later_tier() {
    let (herald, t, event_id, gap, attempt) = retry_after_once(429, vec![100, 1000, 2000]).await;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 must skip the 100 ms tier, got {gap:?}"
    );
    assert!(gap < Duration::from_millis(1900), "{gap:?}");
    // Attempts count requests: the tier was skipped, the second request is attempt 2.
    assert_eq!(attempt.as_deref(), Some("2"));
    let d = herald.wait_deliveries(&t, &event_id, 1).await;
    let full = herald
        .wait_delivery(
            &t,
            &d[0].id,
            Duration::from_secs(5),
            status_is(pb::DeliveryStatus::Success),
        )
        .await;
    assert_eq!(full.attempts.len(), 2);
    assert_eq!(full.attempts[0].response_status, 429);
    assert_eq!(full.delivery.unwrap().attempt_count, 2);
    herald.stop().await;
}

/// A `Retry-After` longer than every tier left: the last tier, after the time asked for.
#[tokio::test]
async fn retry_after_longer_than_every_tier_is_still_waited() {
    let (herald, _, _, gap, attempt) = retry_after_once(503, vec![100, 200]).await;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 must be waited although every tier is shorter, got {gap:?}"
    );
    assert!(gap < Duration::from_millis(1900), "{gap:?}");
    assert_eq!(attempt.as_deref(), Some("2"));
    herald.stop().await;
}
