//! Secret rotation: during the grace period deliveries carry both signatures.

use std::time::Duration;

use herald_core::signing::{Scheme, Secret, verify};
use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{Herald, Options, authed};
use tonic::Code;

use crate::page::endpoint;

#[tokio::test]
async fn rotated_secret_signs_with_both_during_the_grace_period() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let t = herald.tenant().await;
    let (std_ep, old_std) = herald
        .create_endpoint(&t, endpoint(rx.url("/std"), &["a.b"]))
        .await;
    let (ts_ep, old_ts) = herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                signing_scheme: pb::SigningScheme::Timestamped as i32,
                ..endpoint(rx.url("/ts"), &["a.b"])
            },
        )
        .await;
    let mut endpoints = herald.endpoints().await;
    let rotate = |id: String, grace: u32| {
        let key = t.api_key.clone();
        let mut c = endpoints.clone();
        async move {
            c.rotate_secret(authed(
                pb::RotateSecretRequest {
                    endpoint_id: id,
                    grace_period_seconds: Some(grace),
                    secret: None,
                },
                &key,
            ))
            .await
            .expect("rotate")
            .into_inner()
        }
    };
    let new_std = rotate(std_ep.id.clone(), 3600).await;
    let new_ts = rotate(ts_ep.id.clone(), 3600).await;
    assert_ne!(new_std.secret, old_std);
    assert!(new_std.secret.starts_with("whsec_"));
    tokio::time::sleep(Duration::from_millis(300)).await; // dispatcher's endpoint cache

    herald.publish(&t, "a.b", b"{\"n\":1}").await;
    let mut got = [
        rx.next(Duration::from_secs(10)).await,
        rx.next(Duration::from_secs(10)).await,
    ];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let (std_req, ts_req) = (&got[0], &got[1]);
    let now = chrono::Utc::now().timestamp();

    let sig = std_req.header("webhook-signature").unwrap();
    assert_eq!(sig.split(' ').count(), 2, "two signatures: {sig}");
    for s in [&old_std, &new_std.secret] {
        verify(
            Scheme::Standard,
            &Secret::parse(s, Scheme::Standard).unwrap(),
            "Webhook-",
            &|n: &str| std_req.header(n),
            &std_req.body,
            now,
            60,
        )
        .expect("both secrets verify during the grace period");
    }
    let sig = ts_req.header("webhook-signature").unwrap();
    assert_eq!(sig.matches("v1=").count(), 2, "two v1 entries: {sig}");
    for s in [&old_ts, &new_ts.secret] {
        verify(
            Scheme::Timestamped,
            &Secret::parse(s, Scheme::Timestamped).unwrap(),
            "Webhook-",
            &|n: &str| ts_req.header(n),
            &ts_req.body,
            now,
            60,
        )
        .expect("both secrets verify during the grace period");
    }

    // Grace 0: the old secret stops at once.
    let newest = rotate(std_ep.id.clone(), 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    herald.publish(&t, "a.b", b"{\"n\":2}").await;
    let mut got = [
        rx.next(Duration::from_secs(10)).await,
        rx.next(Duration::from_secs(10)).await,
    ];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let sig = got[0].header("webhook-signature").unwrap();
    assert_eq!(sig.split(' ').count(), 1, "{sig}");
    verify(
        Scheme::Standard,
        &Secret::parse(&newest.secret, Scheme::Standard).unwrap(),
        "Webhook-",
        &|n: &str| got[0].header(n),
        &got[0].body,
        chrono::Utc::now().timestamp(),
        60,
    )
    .unwrap();
    let too_long = endpoints
        .rotate_secret(authed(
            pb::RotateSecretRequest {
                endpoint_id: std_ep.id.clone(),
                grace_period_seconds: Some(8 * 24 * 3600),
                secret: None,
            },
            &t.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument);

    // Replacing the secret with UpdateEndpoint ends a rotation's overlap at once: the old
    // secret (perhaps the leaked one) stops signing.
    let replaced = "replaced-secret-0123456789";
    endpoints
        .update_endpoint(authed(
            pb::UpdateEndpointRequest {
                id: ts_ep.id.clone(),
                secret: Some(replaced.into()),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    herald.publish(&t, "a.b", b"{\"n\":3}").await;
    let mut got = [
        rx.next(Duration::from_secs(10)).await,
        rx.next(Duration::from_secs(10)).await,
    ];
    got.sort_by(|a, b| a.path.cmp(&b.path));
    let sig = got[1].header("webhook-signature").unwrap();
    assert_eq!(sig.matches("v1=").count(), 1, "{sig}");
    verify(
        Scheme::Timestamped,
        &Secret::parse(replaced, Scheme::Timestamped).unwrap(),
        "Webhook-",
        &|n: &str| got[1].header(n),
        &got[1].body,
        chrono::Utc::now().timestamp(),
        60,
    )
    .unwrap();

    // A hex endpoint has room for one signature: no grace period.
    let (hex_ep, _) = herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                signing_scheme: pb::SigningScheme::Hex as i32,
                ..endpoint(rx.url("/hex"), &["never.*"])
            },
        )
        .await;
    let hex_rotate = |grace: Option<u32>| {
        let mut c = endpoints.clone();
        let req = authed(
            pb::RotateSecretRequest {
                endpoint_id: hex_ep.id.clone(),
                grace_period_seconds: grace,
                secret: None,
            },
            &t.api_key,
        );
        async move { c.rotate_secret(req).await }
    };
    let err = hex_rotate(Some(3600)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("one signature"), "{err:?}");
    let done = hex_rotate(None).await.unwrap().into_inner();
    let ends = done.previous_expires_at.unwrap().seconds;
    assert!(ends <= chrono::Utc::now().timestamp() + 1, "ends at once");
    herald.stop().await;
}
