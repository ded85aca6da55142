//! Re-sends: `Redeliver` and `ReplayEndpoint` make manual attempts of logged deliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::{Herald, Options, authed};
use tonic::Code;

use crate::page::{endpoint, status_is, switchable};

#[tokio::test]
async fn redeliver_and_replay_send_again_as_manual_attempts() {
    let herald = Herald::start(Options {
        retry_schedule: "100ms".into(),
        ..Default::default()
    })
    .await;
    let up = Arc::new(AtomicBool::new(false));
    let mut rx = switchable(up.clone()).await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint(rx.url("/hook"), &["*"]))
        .await;
    let mut events = Vec::new();
    for i in 0..4 {
        events.push(
            herald
                .publish(&t, "order.created", format!("{{\"i\":{i}}}").as_bytes())
                .await
                .event_id,
        );
    }
    let mut failed = Vec::new();
    for e in &events {
        let d = herald.wait_deliveries(&t, e, 1).await;
        let d = herald
            .wait_delivery(
                &t,
                &d[0].id,
                Duration::from_secs(10),
                status_is(pb::DeliveryStatus::Failed),
            )
            .await;
        failed.push(d.delivery.unwrap().id);
    }
    assert_eq!(rx.drain_for(Duration::from_millis(300)).await.len(), 8);

    up.store(true, Ordering::SeqCst);
    let mut deliveries = herald.deliveries().await;
    // Redeliver one: a third attempt, trigger manual, same delivery id.
    let redeliver = |mut client: pb::deliveries_client::DeliveriesClient<_>, id: String| {
        let key = t.api_key.clone();
        async move {
            client
                .redeliver(authed(pb::RedeliverRequest { delivery_id: id }, &key))
                .await
                .expect("redeliver")
                .into_inner()
        }
    };
    let r = redeliver(deliveries.clone(), failed[0].clone()).await;
    assert_eq!(r.attempt, 3);
    let got = rx.next(Duration::from_secs(10)).await;
    assert_eq!(
        got.header("webhook-id").as_deref(),
        Some(failed[0].as_str())
    );
    assert_eq!(got.header("webhook-attempt").as_deref(), Some("3"));
    let d = herald
        .wait_delivery(
            &t,
            &failed[0],
            Duration::from_secs(10),
            status_is(pb::DeliveryStatus::Success),
        )
        .await;
    assert_eq!(d.attempts.len(), 3);
    assert_eq!(d.attempts[2].trigger, "manual");
    // Redelivered twice more to a receiver that now fails: each manual attempt gets a number
    // of its own and counts, and the delivery stays delivered.
    up.store(false, Ordering::SeqCst);
    for n in [4u32, 5] {
        let r = redeliver(deliveries.clone(), failed[0].clone()).await;
        assert_eq!(r.attempt, n);
        let got = rx.next(Duration::from_secs(10)).await;
        assert_eq!(
            got.header("webhook-attempt"),
            Some(n.to_string()),
            "attempt header"
        );
        herald
            .wait_delivery(&t, &failed[0], Duration::from_secs(10), |r| {
                r.attempts.len() == n as usize
            })
            .await;
    }
    let d = herald
        .wait_delivery(&t, &failed[0], Duration::from_secs(10), |r| {
            r.attempts.len() == 5
        })
        .await;
    let numbers: Vec<u32> = d.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    let delivery = d.delivery.expect("delivery");
    assert_eq!(delivery.attempt_count, 5);
    assert_eq!(delivery.status, pb::DeliveryStatus::Success as i32);
    assert_eq!(
        delivery.response_status, 200,
        "the delivering response stays"
    );
    up.store(true, Ordering::SeqCst);

    // Replay the rest of the failures: three queued, all end delivered.
    let replay = deliveries
        .replay_endpoint(authed(
            pb::ReplayEndpointRequest {
                endpoint_id: ep.id.clone(),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay.queued, 3);
    assert!(!replay.truncated);
    for id in &failed[1..] {
        herald
            .wait_delivery(
                &t,
                id,
                Duration::from_secs(10),
                status_is(pb::DeliveryStatus::Success),
            )
            .await;
    }
    assert_eq!(rx.drain_for(Duration::from_millis(500)).await.len(), 3);
    // Bounded: nothing failed is left, and a limit is honoured.
    let again = deliveries
        .replay_endpoint(authed(
            pb::ReplayEndpointRequest {
                endpoint_id: ep.id.clone(),
                status: pb::DeliveryStatus::Success as i32,
                limit: 2,
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.queued, 2);
    assert!(again.truncated);
    // The cursor goes on exactly after the last one (the batch's deliveries may share a
    // millisecond), and the next page holds the rest, none twice.
    let rest = deliveries
        .replay_endpoint(authed(
            pb::ReplayEndpointRequest {
                endpoint_id: ep.id.clone(),
                status: pb::DeliveryStatus::Success as i32,
                after_delivery_id: again.last_delivery_id.clone(),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!rest.truncated);
    assert!(rest.last_delivery_id > again.last_delivery_id);
    let total = deliveries
        .replay_endpoint(authed(
            pb::ReplayEndpointRequest {
                endpoint_id: ep.id.clone(),
                status: pb::DeliveryStatus::Success as i32,
                limit: 1000,
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.queued + rest.queued, total.queued);

    let other = herald.tenant().await;
    let e = deliveries
        .redeliver(authed(
            pb::RedeliverRequest {
                delivery_id: failed[0].clone(),
            },
            &other.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = deliveries
        .replay_endpoint(authed(
            pb::ReplayEndpointRequest {
                endpoint_id: ep.id.clone(),
                ..Default::default()
            },
            &other.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    herald.stop().await;
}
