//! Failing endpoints: the failure streak is reported, the endpoint disabled after it, and
//! enabling it again recovers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{Herald, Options, Tenant, authed};

use crate::page::{endpoint, get_endpoint, only_delivery, switchable, wait_endpoint};

/// Herald with `retry_schedule` and `env`, a tenant, and its one endpoint (every event type)
/// whose receiver answers 500 to everything.
async fn failing_endpoint(
    retry_schedule: &str,
    env: &[(&str, &str)],
) -> (Herald, Receiver, Tenant, String) {
    let herald = Herald::start(Options {
        retry_schedule: retry_schedule.into(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await;
    let down = Receiver::start(|_, _| Reply::status(500)).await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint(down.url("/down"), &["*"]))
        .await;
    (herald, down, t, ep.id)
}

/// The span of a failing streak runs from its first failed attempt: one delivery failing on
/// tiers that together outlast the span disables the endpoint when it ends `failed`.
#[tokio::test]
async fn the_failing_span_counts_from_the_first_failed_attempt() {
    let (herald, _down, t, ep) = failing_endpoint(
        "600ms,600ms",
        &[
            ("HERALD_DISABLE_AFTER_FAILURES", "1"),
            ("HERALD_DISABLE_AFTER_SPAN", "1s"),
        ],
    )
    .await;
    let p = herald.publish(&t, "order.created", b"{}").await;
    only_delivery(&herald, &t, &p.event_id, pb::DeliveryStatus::Failed).await;
    let e = wait_endpoint(&herald, &t, &ep, Duration::from_secs(5), |e| !e.enabled).await;
    assert!(
        e.disabled_reason.contains("disabled automatically"),
        "{e:?}"
    );
    herald.stop().await;
}

#[tokio::test]
async fn failing_endpoints_are_reported_and_disabled_then_recover() {
    let herald = Herald::start(Options {
        retry_schedule: "50ms".into(),
        env: vec![
            ("HERALD_FAILING_AFTER_ATTEMPTS".into(), "2".into()),
            ("HERALD_DISABLE_AFTER_FAILURES".into(), "2".into()),
            ("HERALD_DISABLE_AFTER_SPAN".into(), "0s".into()),
        ],
        ..Default::default()
    })
    .await;
    let up = Arc::new(AtomicBool::new(false));
    let flaky = switchable(up.clone()).await;
    let mut ops = Receiver::ok().await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint(flaky.url("/flaky"), &["order.*"]))
        .await;
    herald
        .create_endpoint(&t, endpoint(ops.url("/ops"), &["endpoint.*"]))
        .await;

    let first = herald.publish(&t, "order.created", b"{\"n\":1}").await;
    only_delivery(&herald, &t, &first.event_id, pb::DeliveryStatus::Failed).await;
    let failing = ops.next(Duration::from_secs(10)).await;
    assert_eq!(
        failing.header("webhook-event").as_deref(),
        Some("endpoint.failing")
    );
    let body: serde_json::Value = serde_json::from_slice(&failing.body).unwrap();
    assert_eq!(body["data"]["endpoint_id"], ep.id.as_str());

    let second = herald.publish(&t, "order.created", b"{\"n\":2}").await;
    only_delivery(&herald, &t, &second.event_id, pb::DeliveryStatus::Failed).await;
    let disabled = ops.next(Duration::from_secs(10)).await;
    assert_eq!(
        disabled.header("webhook-event").as_deref(),
        Some("endpoint.disabled")
    );
    let card = get_endpoint(&herald, &t, &ep.id).await;
    assert!(!card.enabled);
    assert!(
        card.disabled_reason.contains("automatically"),
        "{}",
        card.disabled_reason
    );
    assert!(card.disabled_at.is_some());
    assert_eq!(card.consecutive_failures, 2);
    let gone = herald.publish(&t, "order.created", b"{\"n\":3}").await;
    assert_eq!(gone.deliveries, 0, "a disabled endpoint gets nothing");

    // Re-enabling clears the streak; the first success after a reported streak is
    // announced as a recovery.
    up.store(true, Ordering::SeqCst);
    let card = herald
        .endpoints()
        .await
        .update_endpoint(authed(
            pb::UpdateEndpointRequest {
                id: ep.id.clone(),
                enabled: Some(true),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(card.consecutive_failures, 0);
    assert!(card.disabled_reason.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = herald.publish(&t, "order.created", b"{\"n\":4}").await;
    let d = herald.wait_deliveries(&t, &ok.event_id, 1).await;
    assert_eq!(d[0].status, pb::DeliveryStatus::Success as i32);
    let extra = ops.drain_for(Duration::from_millis(800)).await;
    assert!(
        extra.is_empty(),
        "re-enabling reset the streak, so no recovery event: {:?}",
        extra
            .iter()
            .map(|r| r.header("webhook-event"))
            .collect::<Vec<_>>()
    );

    // A reported streak that ends in a success (before the endpoint was disabled) is
    // announced as a recovery.
    let up2 = Arc::new(AtomicBool::new(false));
    let flaky2 = switchable(up2.clone()).await;
    let (ep2, _) = herald
        .create_endpoint(&t, endpoint(flaky2.url("/flaky2"), &["pay.*"]))
        .await;
    let p = herald.publish(&t, "pay.x", b"{\"n\":1}").await;
    only_delivery(&herald, &t, &p.event_id, pb::DeliveryStatus::Failed).await;
    let failing = ops.next(Duration::from_secs(10)).await;
    assert_eq!(
        failing.header("webhook-event").as_deref(),
        Some("endpoint.failing")
    );
    up2.store(true, Ordering::SeqCst);
    herald.publish(&t, "pay.x", b"{\"n\":2}").await;
    let recovered = ops.next(Duration::from_secs(10)).await;
    assert_eq!(
        recovered.header("webhook-event").as_deref(),
        Some("endpoint.recovered")
    );
    let body: serde_json::Value = serde_json::from_slice(&recovered.body).unwrap();
    assert_eq!(body["data"]["endpoint_id"], ep2.id.as_str());
    assert!(get_endpoint(&herald, &t, &ep2.id).await.enabled);
    herald.stop().await;
}

/// A burst of failures is folded into a few streak writes, and none is lost on the way: 60
/// deliveries failing for good at once leave a streak of exactly 60.
#[tokio::test]
async fn a_burst_of_failures_is_counted_exactly() {
    const N: usize = 60;
    let (herald, _down, t, ep) = failing_endpoint(
        "",
        &[
            ("HERALD_FAILING_AFTER_ATTEMPTS", "0"),
            ("HERALD_DISABLE_AFTER_FAILURES", "0"),
        ],
    )
    .await;
    let payloads: Vec<Vec<u8>> = (0..N)
        .map(|i| format!("{{\"n\":{i}}}").into_bytes())
        .collect();
    let published = futures::future::join_all(
        payloads
            .iter()
            .map(|p| herald.publish(&t, "order.created", p)),
    )
    .await;
    for p in &published {
        only_delivery(&herald, &t, &p.event_id, pb::DeliveryStatus::Failed).await;
    }
    let e = wait_endpoint(&herald, &t, &ep, Duration::from_secs(5), |e| {
        e.consecutive_failures as usize >= N
    })
    .await;
    assert_eq!(e.consecutive_failures as usize, N, "{e:?}");
    // Nothing more arrives later (a write counted twice would show now).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let e = get_endpoint(&herald, &t, &ep).await;
    assert_eq!(e.consecutive_failures as usize, N, "{e:?}");
    herald.stop().await;
}
