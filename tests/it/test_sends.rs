//! The test button: `SendTest` posts a signed request now and the log records it as a test
//! delivery, never retried and left out of the statistics.

use std::time::Duration;

use herald_core::signing::{Scheme, Secret, verify};
use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{Herald, Options, authed};
use tonic::Code;

use crate::page::{endpoint, get_endpoint, status_is};

#[tokio::test]
async fn send_test_posts_signed_now_and_is_recorded_as_a_test_delivery() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::start(|path, _| {
        if path == "/down" {
            Reply {
                body: "maintenance".into(),
                ..Reply::status(503)
            }
        } else {
            Reply {
                body: "thanks".into(),
                ..Reply::status(200)
            }
        }
    })
    .await;
    let t = herald.tenant().await;
    let (ep, secret) = herald
        .create_endpoint(&t, endpoint(rx.url("/hook"), &["invoice.*"]))
        .await;
    let mut endpoints = herald.endpoints().await;
    let r = endpoints
        .send_test(authed(
            pb::SendTestRequest {
                endpoint_id: ep.id.clone(),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .expect("send test")
        .into_inner();
    assert!(r.success, "{r:?}");
    assert_eq!(r.response_status, 200);
    assert_eq!(r.response_body, "thanks");
    assert!(r.error.is_empty());

    // Synchronous: the request already arrived when the call answered.
    let got = rx.next(Duration::from_millis(100)).await;
    assert_eq!(got.header("webhook-event").as_deref(), Some("webhook.test"));
    assert_eq!(
        got.header("webhook-id").as_deref(),
        Some(r.delivery_id.as_str())
    );
    let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["type"], "webhook.test");
    let secret = Secret::parse(&secret, Scheme::Standard).unwrap();
    verify(
        Scheme::Standard,
        &secret,
        "Webhook-",
        &|n: &str| got.header(n),
        &got.body,
        chrono::Utc::now().timestamp(),
        60,
    )
    .expect("a test delivery is signed like any other");

    // Recorded as a test delivery with trigger "test".
    let d = herald
        .wait_delivery(
            &t,
            &r.delivery_id,
            Duration::from_secs(10),
            status_is(pb::DeliveryStatus::Success),
        )
        .await;
    assert!(d.delivery.as_ref().unwrap().test);
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].trigger, "test");

    // Custom type and payload; a failing receiver is reported, not retried.
    let (down, _) = herald
        .create_endpoint(&t, endpoint(rx.url("/down"), &["*"]))
        .await;
    let r = endpoints
        .send_test(authed(
            pb::SendTestRequest {
                endpoint_id: down.id.clone(),
                event_type: Some("invoice.paid".into()),
                payload: Some(br#"{"id":"in_test"}"#.to_vec()),
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.success);
    assert_eq!(r.response_status, 503);
    assert_eq!(r.response_body, "maintenance");
    let got = rx.next(Duration::from_millis(100)).await;
    assert_eq!(&got.body[..], br#"{"id":"in_test"}"#);
    let d = herald
        .wait_delivery(
            &t,
            &r.delivery_id,
            Duration::from_secs(10),
            status_is(pb::DeliveryStatus::Failed),
        )
        .await;
    assert_eq!(d.attempts.len(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.total(), 2, "a failed test send is never retried");
    // Test sends are in the log, not in the endpoints' statistics (both records are written:
    // the waits above saw them).
    for id in [&ep.id, &down.id] {
        let stats = get_endpoint(&herald, &t, id).await.stats.unwrap();
        assert_eq!(stats.total_deliveries, 0, "{stats:?}");
        assert_eq!(stats.window_attempts, 0, "{stats:?}");
        assert_eq!(stats.last_status, pb::DeliveryStatus::Unspecified as i32);
    }

    // Bad input and other tenants' endpoints.
    let bad = endpoints
        .send_test(authed(
            pb::SendTestRequest {
                endpoint_id: ep.id.clone(),
                payload: Some(b"[1,2]".to_vec()),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let other = herald.tenant().await;
    let foreign = endpoints
        .send_test(authed(
            pb::SendTestRequest {
                endpoint_id: ep.id.clone(),
                ..Default::default()
            },
            &other.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    herald.stop().await;
}
