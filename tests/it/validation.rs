//! Bad input gets a precise status and stores nothing; tenants are isolated.

use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{ADMIN_TOKEN, Herald, Options, authed};
use tonic::Code;

fn publish(event_type: &str, payload: &[u8]) -> pb::PublishRequest {
    pb::PublishRequest {
        event_type: event_type.into(),
        payload: payload.to_vec(),
        idempotency_key: None,
        occurred_at: None,
    }
}

#[tokio::test]
async fn bad_events_are_rejected_precisely_and_nothing_is_stored() {
    let herald = Herald::start(Options {
        env: vec![("HERALD_MAX_PAYLOAD_BYTES".into(), "1024".into())],
        ..Default::default()
    })
    .await;
    let rx = Receiver::ok().await;
    let tenant = herald.tenant().await;
    herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                url: rx.url("/h"),
                event_types: vec!["*".into()],
                ..Default::default()
            },
        )
        .await;
    let mut events = herald.events().await;
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(2000));
    let cases: Vec<(pb::PublishRequest, &str)> = vec![
        (publish("a.b", b"not json"), "not valid JSON"),
        (publish("a.b", b"[1,2]"), "JSON object"),
        (publish("a.b", b"\"text\""), "JSON object"),
        (publish("a.b", b""), "not valid JSON"),
        (publish("a.b", big.as_bytes()), "limit is 1024"),
        (publish("", b"{}"), "event type is empty"),
        (publish("a..b", b"{}"), "empty segment"),
        (publish("a b", b"{}"), "contains"),
        (publish(&"x".repeat(129), b"{}"), "at most 128"),
    ];
    for (req, needle) in cases {
        let what = format!(
            "{:?}",
            String::from_utf8_lossy(&req.payload[..req.payload.len().min(20)])
        );
        let err = events
            .publish(authed(req, &tenant.api_key))
            .await
            .expect_err(&what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: {:?} should mention {needle:?}",
            err.message()
        );
    }
    // A batch answers per event: good ones are accepted, bad ones explained.
    let batch = events
        .publish_batch(authed(
            pb::PublishBatchRequest {
                events: vec![publish("a.b", b"{}"), publish("a.b", b"nope")],
            },
            &tenant.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        batch.results[0].outcome,
        Some(pb::publish_result::Outcome::Accepted(_))
    ));
    match &batch.results[1].outcome {
        Some(pb::publish_result::Outcome::Error(e)) => {
            assert_eq!(e.code, Code::InvalidArgument as i32)
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let too_many = pb::PublishBatchRequest {
        events: (0..1001).map(|_| publish("a.b", b"{}")).collect(),
    };
    let err = events
        .publish_batch(authed(too_many, &tenant.api_key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("at most 1000"));
    // The good event reaches the ledger (in its own time on a busy machine); nothing else does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while herald.count("events").await < 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        herald.count("events").await,
        1,
        "only the one good event is recorded"
    );
    herald.stop().await;
}

#[tokio::test]
async fn bad_endpoints_are_rejected_precisely_and_nothing_is_stored() {
    let herald = Herald::start(Options::default()).await;
    let tenant = herald.tenant().await;
    let mut endpoints = herald.endpoints().await;
    let base = || pb::CreateEndpointRequest {
        url: "https://example.com/hook".into(),
        event_types: vec!["*".into()],
        ..Default::default()
    };
    let cases: Vec<(pb::CreateEndpointRequest, &str)> = vec![
        (
            pb::CreateEndpointRequest {
                url: "not a url".into(),
                ..base()
            },
            "not a valid URL",
        ),
        (
            pb::CreateEndpointRequest {
                url: "ftp://example.com/x".into(),
                ..base()
            },
            "not supported",
        ),
        (
            pb::CreateEndpointRequest {
                url: "http://10.0.0.1/x".into(),
                ..base()
            },
            "private address",
        ),
        (
            pb::CreateEndpointRequest {
                url: "http://169.254.169.254/latest".into(),
                ..base()
            },
            "metadata",
        ),
        (
            pb::CreateEndpointRequest {
                url: "https://u:p@example.com/".into(),
                ..base()
            },
            "credentials",
        ),
        (
            pb::CreateEndpointRequest {
                event_types: vec![],
                ..base()
            },
            "event_types is empty",
        ),
        (
            pb::CreateEndpointRequest {
                event_types: vec!["resp*".into()],
                ..base()
            },
            "wildcards",
        ),
        (
            pb::CreateEndpointRequest {
                secret: Some("whsec_???".into()),
                ..base()
            },
            "secret",
        ),
        (
            pb::CreateEndpointRequest {
                timeout_ms: Some(0),
                ..base()
            },
            "timeout_ms",
        ),
        (
            pb::CreateEndpointRequest {
                retry_schedule_ms: vec![90_000_000],
                ..base()
            },
            "24h",
        ),
        (
            pb::CreateEndpointRequest {
                retry_schedule_ms: vec![1_000],
                no_retries: true,
                ..base()
            },
            "choose one",
        ),
        (
            pb::CreateEndpointRequest {
                description: "a\0b".into(),
                ..base()
            },
            "NUL",
        ),
        (
            pb::CreateEndpointRequest {
                filter: Some(r#"{"a": "\u0000"}"#.into()),
                ..base()
            },
            "NUL",
        ),
        (
            pb::CreateEndpointRequest {
                signing_scheme: 42,
                ..base()
            },
            "signing_scheme",
        ),
        (
            pb::CreateEndpointRequest {
                headers: [("Content-Type".to_string(), "x".to_string())].into(),
                ..base()
            },
            "cannot be overridden",
        ),
        (
            pb::CreateEndpointRequest {
                max_in_flight: Some(257),
                ..base()
            },
            "max_in_flight must be at most 256",
        ),
    ];
    for (req, needle) in cases {
        let what = format!("{} {:?}", req.url, req.event_types);
        let err = endpoints
            .create_endpoint(authed(req, &tenant.api_key))
            .await
            .expect_err(&what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: {:?} should mention {needle:?}",
            err.message()
        );
    }
    assert_eq!(herald.count("endpoints").await, 0);

    let err = endpoints
        .get_endpoint(authed(
            pb::GetEndpointRequest {
                id: uuid::Uuid::now_v7().to_string(),
            },
            &tenant.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = endpoints
        .get_endpoint(authed(
            pb::GetEndpointRequest { id: "x".into() },
            &tenant.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    herald.stop().await;
}

#[tokio::test]
async fn credentials_are_checked_and_tenants_are_isolated() {
    let herald = Herald::start(Options::default()).await;
    let a = herald.tenant().await;
    let b = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(
            &a,
            pb::CreateEndpointRequest {
                url: "https://example.com/a".into(),
                event_types: vec!["*".into()],
                ..Default::default()
            },
        )
        .await;
    let mut endpoints = herald.endpoints().await;
    let mut events = herald.events().await;

    let missing = events
        .publish(tonic::Request::new(publish("a.b", b"{}")))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = events
        .publish(authed(publish("a.b", b"{}"), "hk_not-a-real-key"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    // The operator token is known but not a tenant's: refused as such on tenant services.
    let operator = events
        .publish(authed(publish("a.b", b"{}"), ADMIN_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(operator.code(), Code::PermissionDenied, "{operator:?}");
    let operator = endpoints
        .list_endpoints(authed(pb::ListEndpointsRequest::default(), ADMIN_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(operator.code(), Code::PermissionDenied, "{operator:?}");
    let operator = herald
        .deliveries()
        .await
        .list_deliveries(authed(pb::ListDeliveriesRequest::default(), ADMIN_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(operator.code(), Code::PermissionDenied, "{operator:?}");
    // On Admin, a tenant's key is known but not allowed; any other token is not known.
    for (token, code) in [
        (a.api_key.as_str(), Code::PermissionDenied),
        ("not-the-operator-token", Code::Unauthenticated),
    ] {
        let err = herald
            .admin()
            .await
            .create_tenant(authed(
                pb::CreateTenantRequest {
                    name: "x".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{token}: {err:?}");
    }

    // Tenant B sees none of tenant A's resources, exactly as if they did not exist.
    let id = || ep.id.clone();
    assert_eq!(
        endpoints
            .get_endpoint(authed(pb::GetEndpointRequest { id: id() }, &b.api_key))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        endpoints
            .update_endpoint(authed(
                pb::UpdateEndpointRequest {
                    id: id(),
                    enabled: Some(false),
                    ..Default::default()
                },
                &b.api_key
            ))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        endpoints
            .delete_endpoint(authed(pb::DeleteEndpointRequest { id: id() }, &b.api_key))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        endpoints
            .get_endpoint_secret(authed(
                pb::GetEndpointSecretRequest { id: id() },
                &b.api_key
            ))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let listed = endpoints
        .list_endpoints(authed(pb::ListEndpointsRequest::default(), &b.api_key))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.endpoints.is_empty());
    let published = herald.publish(&a, "a.b", b"{}").await;
    let deliveries = herald
        .list_deliveries(&b, pb::ListDeliveriesRequest::default())
        .await;
    assert!(deliveries.is_empty());
    let a_deliveries = loop {
        let d = herald.deliveries_of(&a, &published.event_id).await;
        if !d.is_empty() {
            break d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let err = herald
        .deliveries()
        .await
        .get_delivery(authed(
            pb::GetDeliveryRequest {
                id: a_deliveries[0].id.clone(),
                ..Default::default()
            },
            &b.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let still = endpoints
        .get_endpoint(authed(pb::GetEndpointRequest { id: id() }, &a.api_key))
        .await
        .unwrap()
        .into_inner();
    assert!(still.enabled, "B's failed update changed nothing");

    // A revoked key stops working at once, on ingest and on the ledger's API (whose own key
    // cache would keep it for 10 s: the change notice reaches it).
    let mut admin = herald.admin().await;
    let key = admin
        .create_api_key(authed(
            pb::CreateApiKeyRequest {
                tenant_id: a.id.clone(),
                name: "tmp".into(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    events
        .publish(authed(publish("a.b", b"{}"), &key.api_key))
        .await
        .unwrap();
    let mut deliveries = herald.deliveries().await;
    let list = |key: &str| authed(pb::ListDeliveriesRequest::default(), key);
    deliveries
        .list_deliveries(list(&key.api_key))
        .await
        .unwrap();
    admin
        .revoke_api_key(authed(
            pb::RevokeApiKeyRequest { key_id: key.key_id },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    let revoked = events
        .publish(authed(publish("a.b", b"{}"), &key.api_key))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match deliveries.list_deliveries(list(&key.api_key)).await {
            Err(e) if e.code() == Code::Unauthenticated => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "the revoked key still works on the ledger: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    herald.stop().await;
}

/// The endpoint limit holds under concurrent creations: exactly the limit succeeds, the rest
/// get `RESOURCE_EXHAUSTED`, and nothing more is stored.
#[tokio::test]
async fn the_endpoint_limit_holds_under_concurrent_creations() {
    let herald = Herald::start(Options {
        env: vec![("HERALD_MAX_ENDPOINTS_PER_TENANT".into(), "3".into())],
        ..Default::default()
    })
    .await;
    let tenant = herald.tenant().await;
    let endpoints = herald.endpoints().await;
    let results = futures::future::join_all((0..8).map(|i| {
        let mut c = endpoints.clone();
        let req = authed(
            pb::CreateEndpointRequest {
                url: format!("https://example.com/{i}"),
                event_types: vec!["*".into()],
                ..Default::default()
            },
            &tenant.api_key,
        );
        async move { c.create_endpoint(req).await }
    }))
    .await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 3, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::ResourceExhausted, "{r:?}");
        assert!(r.message().contains("the limit is 3"), "{r:?}");
    }
    assert_eq!(herald.count("endpoints").await, 3);
    herald.stop().await;
}

/// A call without a valid key is refused from its headers: `UNAUTHENTICATED` even for a
/// message over the decoding limit, which is never read.
#[tokio::test]
async fn publishes_are_authenticated_before_their_message_is_read() {
    let herald = Herald::start(Options {
        env: vec![
            ("HERALD_MAX_PAYLOAD_BYTES".into(), "1024".into()),
            ("HERALD_MAX_BATCH".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let tenant = herald.tenant().await;
    let mut events = herald.events().await;
    // Over the service's decoding limit (payload limit × batch + 1 MiB).
    let huge = || pb::PublishRequest {
        event_type: "a.b".into(),
        payload: format!("{{\"pad\":\"{}\"}}", "x".repeat(3 << 20)).into_bytes(),
        ..Default::default()
    };
    for key in ["", "hk_not-a-real-key"] {
        let err = events.publish(authed(huge(), key)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{key:?}: {err:?}");
    }
    // With a key, the limit applies: a size limit, RESOURCE_EXHAUSTED, naming both sizes.
    let err = events
        .publish(authed(huge(), &tenant.api_key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("1049600"), "{err:?}");
    herald.stop().await;
}
