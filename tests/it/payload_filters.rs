//! Payload filters on endpoints: they select the events delivered and are checked on input.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{Herald, Options, authed};
use tonic::Code;

use crate::page::endpoint;

#[tokio::test]
async fn payload_filters_select_events_and_are_validated() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let t = herald.tenant().await;
    let filter = r#"{"data.amount": {"$gte": 100}, "$or": [{"data.currency": "usd"}, {"data.currency": {"$in": ["eur", "gbp"]}}]}"#;
    let (ep, _) = herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                filter: Some(filter.into()),
                ..endpoint(rx.url("/big"), &["payment.*"])
            },
        )
        .await;
    assert!(!ep.filter.is_empty());
    let cases: [(&[u8], bool); 5] = [
        (br#"{"data":{"amount":150,"currency":"usd"}}"#, true),
        (br#"{"data":{"amount":99,"currency":"usd"}}"#, false),
        (br#"{"data":{"amount":100,"currency":"gbp"}}"#, true),
        (br#"{"data":{"amount":500,"currency":"jpy"}}"#, false),
        (br#"{"data":{"currency":"usd"}}"#, false),
    ];
    for (payload, expected) in cases {
        let r = herald.publish(&t, "payment.done", payload).await;
        assert_eq!(
            r.deliveries,
            u32::from(expected),
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    let got = rx
        .exactly(2, Duration::from_secs(15), Duration::from_millis(500))
        .await;
    assert_eq!(got.len(), 2);

    let mut endpoints = herald.endpoints().await;
    // Removing the filter lets everything through again.
    endpoints
        .update_endpoint(authed(
            pb::UpdateEndpointRequest {
                id: ep.id.clone(),
                filter: Some(String::new()),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap();
    assert_eq!(
        herald
            .publish(&t, "payment.done", br#"{"data":{}}"#)
            .await
            .deliveries,
        1
    );

    for (bad, needle) in [
        (r#"{"amount": {"$regex": "x"}}"#, "$regex"),
        (r#"{"amount": {"$gt": [1]}}"#, "$gt"),
        (r#"[1]"#, "object"),
        (r#"{"a": "#, "JSON"),
    ] {
        let e = endpoints
            .create_endpoint(authed(
                pb::CreateEndpointRequest {
                    filter: Some(bad.into()),
                    ..endpoint(rx.url("/x"), &["*"])
                },
                &t.api_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        assert!(e.message().contains(needle), "{bad}: {}", e.message());
    }
    assert_eq!(herald.count("endpoints").await, 1, "nothing half-written");

    let r = endpoints
        .test_filter(authed(
            pb::TestFilterRequest {
                filter: r#"{"amount": {"$gt": 100}}"#.into(),
                payload: br#"{"amount": 50}"#.to_vec(),
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.matches);
    assert!(r.explanation.contains("amount"), "{}", r.explanation);
    let r = endpoints
        .test_filter(authed(
            pb::TestFilterRequest {
                filter: r#"{"amount": {"$gt": 100}}"#.into(),
                payload: br#"{"amount": 150}"#.to_vec(),
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.matches && r.explanation.is_empty());
    herald.stop().await;
}
