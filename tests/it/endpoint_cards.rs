//! The endpoint card and the lists around it: statistics, the latest status, the toggle's
//! time, recent activity, and the delivery log's filters and pages.

use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{Herald, Options, authed};
use tonic::Code;

use crate::page::{endpoint, get_endpoint, last_status_is, only_delivery, wait_endpoint};

#[tokio::test]
async fn endpoint_cards_show_stats_and_activity_lists_the_latest() {
    let herald = Herald::start(Options {
        retry_schedule: "100ms".into(),
        ..Default::default()
    })
    .await;
    let rx = Receiver::start(|path, _| {
        if path == "/bad" {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let t = herald.tenant().await;
    let (good, _) = herald
        .create_endpoint(&t, endpoint(rx.url("/good"), &["a.*"]))
        .await;
    let (bad, _) = herald
        .create_endpoint(&t, endpoint(rx.url("/bad"), &["a.*"]))
        .await;
    let fresh = get_endpoint(&herald, &t, &good.id).await;
    let stats = fresh.stats.expect("stats are always present");
    assert_eq!(stats.total_deliveries, 0);
    assert_eq!(stats.last_status, pb::DeliveryStatus::Unspecified as i32);

    let mut last = None;
    for i in 0..3 {
        let p = herald
            .publish(&t, "a.x", format!("{{\"i\":{i}}}").as_bytes())
            .await;
        last = Some(p.event_id);
    }
    let ds = herald.wait_deliveries(&t, last.as_ref().unwrap(), 2).await;
    assert_eq!(ds.len(), 2);
    // Wait until the failing endpoint's last delivery is final.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let g = get_endpoint(&herald, &t, &good.id).await.stats.unwrap();
        let b = get_endpoint(&herald, &t, &bad.id).await.stats.unwrap();
        if g.total_deliveries == 3
            && b.total_deliveries == 3
            && b.window_attempts == 6
            && b.last_status == pb::DeliveryStatus::Failed as i32
        {
            assert_eq!(g.last_status, pb::DeliveryStatus::Success as i32);
            assert_eq!(g.window_attempts, 3);
            assert_eq!(g.window_successes, 3);
            assert!((g.success_rate - 1.0).abs() < 1e-9);
            assert!(g.p50_latency_ms > 0 && g.p95_latency_ms >= g.p50_latency_ms);
            assert!(g.last_delivery_at.is_some());
            assert_eq!(g.window_hours, 24);
            assert_eq!(b.window_successes, 0);
            assert_eq!(b.success_rate, 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stats did not settle: {g:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The list shows the same card.
    let list = herald
        .endpoints()
        .await
        .list_endpoints(authed(pb::ListEndpointsRequest::default(), &t.api_key))
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.endpoints
            .iter()
            .all(|e| e.stats.as_ref().unwrap().total_deliveries == 3)
    );

    let mut deliveries = herald.deliveries().await;
    let feed = deliveries
        .list_recent_activity(authed(pb::ListRecentActivityRequest::default(), &t.api_key))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(feed.len(), 6);
    assert!(feed.windows(2).all(|w| w[0].delivery_id > w[1].delivery_id));
    assert!(feed.iter().all(|i| i.event_type == "a.x"
        && (i.endpoint_url.ends_with("/good") || i.endpoint_url.ends_with("/bad"))));
    let two = deliveries
        .list_recent_activity(authed(
            pb::ListRecentActivityRequest { limit: 2 },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(two.len(), 2);
    let other = herald.tenant().await;
    let none = deliveries
        .list_recent_activity(authed(
            pb::ListRecentActivityRequest::default(),
            &other.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(none.is_empty(), "activity is per tenant");

    // The log filters by creation time.
    let at = |secs: i64| {
        Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + secs,
            nanos: 0,
        })
    };
    let list = |since, until| {
        let mut c = deliveries.clone();
        let key = t.api_key.clone();
        async move {
            c.list_deliveries(authed(
                pb::ListDeliveriesRequest {
                    since,
                    until,
                    ..Default::default()
                },
                &key,
            ))
            .await
            .unwrap()
            .into_inner()
            .deliveries
            .len()
        }
    };
    assert_eq!(list(at(-3600), None).await, 6);
    assert_eq!(list(at(3600), None).await, 0);
    assert_eq!(list(None, at(-3600)).await, 0);
    assert_eq!(list(at(-3600), at(3600)).await, 6);
    herald.stop().await;
}

/// The card shows a delivery waiting for its first answer as pending; the toggle notes when
/// it was turned off; the log refuses filters that could match nothing.
#[tokio::test]
async fn cards_show_pending_the_toggle_time_and_the_log_checks_its_filters() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::start(|_, _| Reply {
        delay: Duration::from_secs(3),
        ..Reply::status(200)
    })
    .await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint(rx.url("/slow"), &["*"]))
        .await;
    herald.publish(&t, "a.b", b"{}").await;
    rx.next(Duration::from_secs(10)).await;
    let pending = wait_endpoint(
        &herald,
        &t,
        &ep.id,
        Duration::from_secs(2),
        last_status_is(pb::DeliveryStatus::Pending),
    )
    .await;
    let stats = pending.stats.unwrap();
    assert_eq!(stats.total_deliveries, 1);
    assert!(stats.last_delivery_at.is_some());
    wait_endpoint(
        &herald,
        &t,
        &ep.id,
        Duration::from_secs(10),
        last_status_is(pb::DeliveryStatus::Success),
    )
    .await;

    let off = herald.set_enabled(&t, &ep.id, false).await;
    assert!(!off.enabled);
    assert!(off.disabled_at.is_some(), "turning it off notes when");
    assert!(off.disabled_reason.is_empty());
    let on = herald.set_enabled(&t, &ep.id, true).await;
    assert!(on.enabled && on.disabled_at.is_none());

    let mut log = herald.deliveries().await;
    let at = |s: i64| prost_types::Timestamp {
        seconds: s,
        nanos: 0,
    };
    for (request, what) in [
        (
            pb::ListDeliveriesRequest {
                since: Some(at(2_000_000_000)),
                until: Some(at(1_000_000_000)),
                ..Default::default()
            },
            "since",
        ),
        (
            pb::ListDeliveriesRequest {
                event_type: Some("invoice.*".into()),
                ..Default::default()
            },
            "event_type",
        ),
    ] {
        let err = log
            .list_deliveries(authed(request, &t.api_key))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(what), "{err:?}");
    }
    let any = herald
        .list_deliveries(
            &t,
            pb::ListDeliveriesRequest {
                event_type: Some(String::new()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(any.len(), 1, "an empty event_type filters nothing");
    herald.stop().await;
}

/// A delivery that ends because its endpoint was turned off ends the card's status too.
#[tokio::test]
async fn an_abandoned_delivery_shows_failed_on_the_card() {
    let herald = Herald::start(Options {
        retry_schedule: "800ms".into(),
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::start(|_, _| Reply::status(500)).await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint(rx.url("/down"), &["*"]))
        .await;
    let p = herald.publish(&t, "a.b", b"{}").await;
    rx.next(Duration::from_secs(10)).await;
    herald.set_enabled(&t, &ep.id, false).await;
    only_delivery(&herald, &t, &p.event_id, pb::DeliveryStatus::Failed).await;
    wait_endpoint(
        &herald,
        &t,
        &ep.id,
        Duration::from_secs(5),
        last_status_is(pb::DeliveryStatus::Failed),
    )
    .await;
    herald.stop().await;
}

/// Four endpoints and four deliveries, listed two at a time: two pages each, and the second
/// (full) page carries no cursor.
#[tokio::test]
async fn the_last_page_has_no_cursor_even_when_full() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let rx = Receiver::start(|_, _| Reply::status(200)).await;
    for _ in 0..4 {
        herald
            .create_endpoint(&t, endpoint(rx.url("/p"), &["*"]))
            .await;
    }
    let mut endpoints = herald.endpoints().await;
    let mut pages = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let r = endpoints
            .list_endpoints(authed(
                pb::ListEndpointsRequest {
                    page_size: 2,
                    cursor: cursor.clone(),
                },
                &t.api_key,
            ))
            .await
            .expect("list endpoints")
            .into_inner();
        seen.extend(r.endpoints.iter().map(|e| e.id.clone()));
        pages.push((r.endpoints.len(), !r.next_cursor.is_empty()));
        if r.next_cursor.is_empty() {
            break;
        }
        cursor = r.next_cursor;
    }
    assert_eq!(pages, [(2, true), (2, false)]);
    assert_eq!(seen.len(), 4);

    let event = herald.publish(&t, "a.b", b"{}").await;
    herald.wait_deliveries(&t, &event.event_id, 4).await;
    let mut log = herald.deliveries().await;
    let mut pages = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = log
            .list_deliveries(authed(
                pb::ListDeliveriesRequest {
                    page_size: 2,
                    cursor: cursor.clone(),
                    ..Default::default()
                },
                &t.api_key,
            ))
            .await
            .expect("list deliveries")
            .into_inner();
        pages.push((r.deliveries.len(), !r.next_cursor.is_empty()));
        if r.next_cursor.is_empty() {
            break;
        }
        cursor = r.next_cursor;
    }
    assert_eq!(pages, [(2, true), (2, false)]);
    herald.stop().await;
}
