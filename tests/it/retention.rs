//! Ledger retention: payloads go first, then old history.

use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{Herald, Options, authed};
use tonic::Code;

use crate::page::endpoint;

#[tokio::test]
async fn retention_removes_old_payloads_and_then_old_history() {
    let herald = Herald::start(Options {
        env: vec![
            ("HERALD_PAYLOAD_RETENTION".into(), "1s".into()),
            ("HERALD_ATTEMPT_RETENTION".into(), "4s".into()),
            ("HERALD_RETENTION_INTERVAL".into(), "200ms".into()),
        ],
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::ok().await;
    let t = herald.tenant().await;
    herald
        .create_endpoint(&t, endpoint(rx.url("/r"), &["*"]))
        .await;
    let p = herald.publish(&t, "old.news", b"{}").await;
    rx.next(Duration::from_secs(10)).await;
    let d = herald.wait_deliveries(&t, &p.event_id, 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while herald.count("events").await > 0 {
        assert!(
            Instant::now() < deadline,
            "payload retention did not remove the event"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The history outlives the payload; re-sending needs the payload.
    assert_eq!(herald.count("deliveries").await, 1);
    assert_eq!(herald.count("attempts").await, 1);
    let e = herald
        .deliveries()
        .await
        .redeliver(authed(
            pb::RedeliverRequest {
                delivery_id: d[0].id.clone(),
            },
            &t.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("retention"), "{}", e.message());
    let deadline = Instant::now() + Duration::from_secs(15);
    while herald.count("deliveries").await + herald.count("attempts").await > 0 {
        assert!(
            Instant::now() < deadline,
            "history retention did not remove rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    herald.stop().await;
}
