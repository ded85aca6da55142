//! What a "Webhooks" page needs: test sends, rotation, stats, activity, filters, event types,
//! tenant policies, redeliver and replay, rate limits, and automatic disabling.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_core::signing::{Scheme, Secret, verify};
use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{Herald, Options, Tenant, authed};
use tonic::Code;

fn endpoint(url: String, types: &[&str]) -> pb::CreateEndpointRequest {
    pb::CreateEndpointRequest {
        url,
        event_types: types.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn status_is(s: pb::DeliveryStatus) -> impl Fn(&pb::GetDeliveryResponse) -> bool {
    move |r| r.delivery.as_ref().is_some_and(|d| d.status == s as i32)
}

/// A receiver that answers 200 while `up` is true and 500 otherwise.
async fn switchable(up: Arc<AtomicBool>) -> Receiver {
    Receiver::start(move |_, _| {
        if up.load(Ordering::SeqCst) {
            Reply::status(200)
        } else {
            Reply::status(500)
        }
    })
    .await
}

/// Waits until the one delivery of `event_id` has `status`.
async fn only_delivery(
    herald: &Herald,
    t: &Tenant,
    event_id: &str,
    status: pb::DeliveryStatus,
) -> pb::GetDeliveryResponse {
    let d = herald.wait_deliveries(t, event_id, 1).await;
    herald
        .wait_delivery(t, &d[0].id, Duration::from_secs(10), status_is(status))
        .await
}

/// Polls an endpoint until `check` accepts it, or fails after `within`; returns it.
async fn wait_endpoint(
    herald: &Herald,
    t: &Tenant,
    id: &str,
    within: Duration,
    check: impl Fn(&pb::Endpoint) -> bool,
) -> pb::Endpoint {
    let deadline = Instant::now() + within;
    loop {
        let e = get_endpoint(herald, t, id).await;
        if check(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "endpoint did not settle: {e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn last_status_is(s: pb::DeliveryStatus) -> impl Fn(&pb::Endpoint) -> bool {
    move |e| {
        e.stats
            .as_ref()
            .is_some_and(|st| st.last_status == s as i32)
    }
}

async fn get_endpoint(herald: &Herald, t: &Tenant, id: &str) -> pb::Endpoint {
    herald
        .endpoints()
        .await
        .get_endpoint(authed(pb::GetEndpointRequest { id: id.into() }, &t.api_key))
        .await
        .expect("get endpoint")
        .into_inner()
}

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

#[tokio::test]
async fn event_types_have_groups_archive_and_an_optional_strict_mode() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let mut types = herald.event_types().await;
    for (name, group) in [
        ("call.started", "Calls"),
        ("call.ended", "Calls"),
        ("sms.sent", ""),
    ] {
        types
            .create_event_type(authed(
                pb::CreateEventTypeRequest {
                    name: name.into(),
                    description: format!("when a {name} happens"),
                    group: group.into(),
                },
                &t.api_key,
            ))
            .await
            .unwrap();
    }
    let calls = types
        .list_event_types(authed(
            pb::ListEventTypesRequest {
                group: Some("Calls".into()),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .event_types;
    assert_eq!(calls.len(), 2);
    let archived = types
        .update_event_type(authed(
            pb::UpdateEventTypeRequest {
                name: "sms.sent".into(),
                archived: Some(true),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(archived.archived);
    let live = types
        .list_event_types(authed(pb::ListEventTypesRequest::default(), &t.api_key))
        .await
        .unwrap()
        .into_inner()
        .event_types;
    assert_eq!(live.len(), 2, "archived types are hidden by default");
    let all = types
        .list_event_types(authed(
            pb::ListEventTypesRequest {
                include_archived: true,
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .event_types;
    assert_eq!(all.len(), 3);

    // Strict tenants refuse unknown and archived types; lenient ones accept anything.
    let publish = |event_type: &'static str| {
        let herald = &herald;
        let key = t.api_key.clone();
        async move {
            herald
                .events()
                .await
                .publish(authed(
                    pb::PublishRequest {
                        event_type: event_type.into(),
                        payload: b"{}".to_vec(),
                        idempotency_key: Some(format!("k-{event_type}")),
                        occurred_at: None,
                    },
                    &key,
                ))
                .await
        }
    };
    assert!(publish("made.up").await.is_ok());
    herald
        .admin()
        .await
        .update_tenant(authed(
            pb::UpdateTenantRequest {
                id: t.id.clone(),
                reject_unknown_event_types: Some(true),
                ..Default::default()
            },
            herald_tests::ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // subscription cache
    let e = publish("never.created").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("never.created"), "{}", e.message());
    assert_eq!(
        publish("sms.sent").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(publish("call.started").await.is_ok());
    // A refused event does not burn its idempotency key.
    types
        .create_event_type(authed(
            pb::CreateEventTypeRequest {
                name: "never.created".into(),
                ..Default::default()
            },
            &t.api_key,
        ))
        .await
        .unwrap();
    let ok = publish("never.created").await.unwrap().into_inner();
    assert!(!ok.duplicate);
    herald.stop().await;
}

#[tokio::test]
async fn tenant_can_require_https() {
    let herald = Herald::start(Options::default()).await;
    let admin_tenant = herald
        .admin()
        .await
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: "strict".into(),
                require_https: Some(true),
                ..Default::default()
            },
            herald_tests::ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(admin_tenant.require_https);
    let key = herald
        .admin()
        .await
        .create_api_key(authed(
            pb::CreateApiKeyRequest {
                tenant_id: admin_tenant.id.clone(),
                name: "k".into(),
            },
            herald_tests::ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key;
    let e = herald
        .endpoints()
        .await
        .create_endpoint(authed(
            endpoint("http://127.0.0.1:9/hook".into(), &["*"]),
            &key,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("https"), "{}", e.message());
    assert_eq!(herald.count("endpoints").await, 0);
    herald.stop().await;
}

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

#[tokio::test]
async fn rate_limited_endpoint_gets_everything_spread_out() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let t = herald.tenant().await;
    herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                rate_limit_per_second: Some(5),
                ..endpoint(rx.url("/slow"), &["*"])
            },
        )
        .await;
    let start = Instant::now();
    for i in 0..15 {
        herald
            .publish(&t, "tick", format!("{{\"i\":{i}}}").as_bytes())
            .await;
    }
    let mut got = Vec::new();
    for _ in 0..15 {
        got.push(rx.next(Duration::from_secs(20)).await);
    }
    // A burst of 5, then 5 per second: the 15th arrives after about 2 s, none is lost.
    let span = got.last().unwrap().at - start;
    assert!(span >= Duration::from_millis(1700), "{span:?}");
    let first_second = got
        .iter()
        .filter(|r| r.at - got[0].at < Duration::from_millis(900))
        .count();
    // At most the burst plus 0.9 s of refill.
    assert!(first_second <= 10, "{first_second} in the first 0.9 s");
    herald.stop().await;
}

/// The span of a failing streak runs from its first failed attempt: one delivery failing on
/// tiers that together outlast the span disables the endpoint when it ends `failed`.
#[tokio::test]
async fn the_failing_span_counts_from_the_first_failed_attempt() {
    let herald = Herald::start(Options {
        retry_schedule: "600ms,600ms".into(),
        env: vec![
            ("HERALD_DISABLE_AFTER_FAILURES".into(), "1".into()),
            ("HERALD_DISABLE_AFTER_SPAN".into(), "1s".into()),
        ],
        ..Default::default()
    })
    .await;
    let down = Receiver::start(|_, _| Reply::status(500)).await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint(down.url("/down"), &["*"]))
        .await;
    let p = herald.publish(&t, "order.created", b"{}").await;
    only_delivery(&herald, &t, &p.event_id, pb::DeliveryStatus::Failed).await;
    let e = wait_endpoint(&herald, &t, &ep.id, Duration::from_secs(5), |e| !e.enabled).await;
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

#[tokio::test]
async fn rate_limit_holds_across_two_dispatchers_within_ten_percent() {
    let herald = Herald::start(Options {
        dispatchers: 2,
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::ok().await;
    let t = herald.tenant().await;
    let rate = 20.0;
    herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                rate_limit_per_second: Some(rate as u32),
                ..endpoint(rx.url("/limited"), &["*"])
            },
        )
        .await;
    let n = 100;
    let batch = pb::PublishBatchRequest {
        events: (0..n)
            .map(|i| pb::PublishRequest {
                event_type: "tick".into(),
                payload: format!("{{\"i\":{i}}}").into_bytes(),
                ..Default::default()
            })
            .collect(),
    };
    herald
        .events()
        .await
        .publish_batch(authed(batch, &t.api_key))
        .await
        .unwrap();
    let mut at = Vec::new();
    for _ in 0..n {
        at.push(rx.next(Duration::from_secs(30)).await.at);
    }
    // After the initial burst (one second's worth), deliveries arrive at the limit.
    let burst = rate as usize;
    let span = (at[n - 1] - at[0]).as_secs_f64();
    let measured = (n - burst) as f64 / span;
    assert!(
        (measured - rate).abs() <= rate * 0.1,
        "measured {measured:.1}/s over {span:.2} s, limit {rate}/s"
    );
    assert!(rx.drain_for(Duration::from_millis(300)).await.is_empty());
    herald.stop().await;
}

#[tokio::test]
async fn tenant_b_gets_not_found_for_every_tenant_a_resource() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let a = herald.tenant().await;
    let b = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&a, endpoint(rx.url("/a"), &["*"]))
        .await;
    let mut types = herald.event_types().await;
    types
        .create_event_type(authed(
            pb::CreateEventTypeRequest {
                name: "a.only".into(),
                ..Default::default()
            },
            &a.api_key,
        ))
        .await
        .unwrap();
    let p = herald.publish(&a, "a.only", b"{}").await;
    rx.next(Duration::from_secs(10)).await;
    let d = herald.wait_deliveries(&a, &p.event_id, 1).await;
    let delivery = d[0].id.clone();

    let mut endpoints = herald.endpoints().await;
    let mut deliveries = herald.deliveries().await;
    let key = &b.api_key;
    let id = || ep.id.clone();
    let codes = vec![
        (
            "GetEndpoint",
            endpoints
                .get_endpoint(authed(pb::GetEndpointRequest { id: id() }, key))
                .await
                .map(|_| ()),
        ),
        (
            "UpdateEndpoint",
            endpoints
                .update_endpoint(authed(
                    pb::UpdateEndpointRequest {
                        id: id(),
                        enabled: Some(false),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "GetEndpointSecret",
            endpoints
                .get_endpoint_secret(authed(pb::GetEndpointSecretRequest { id: id() }, key))
                .await
                .map(|_| ()),
        ),
        (
            "RotateSecret",
            endpoints
                .rotate_secret(authed(
                    pb::RotateSecretRequest {
                        endpoint_id: id(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "SendTest",
            endpoints
                .send_test(authed(
                    pb::SendTestRequest {
                        endpoint_id: id(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "DeleteEndpoint",
            endpoints
                .delete_endpoint(authed(pb::DeleteEndpointRequest { id: id() }, key))
                .await
                .map(|_| ()),
        ),
        (
            "UpdateEventType",
            types
                .update_event_type(authed(
                    pb::UpdateEventTypeRequest {
                        name: "a.only".into(),
                        archived: Some(true),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "GetDelivery",
            deliveries
                .get_delivery(authed(
                    pb::GetDeliveryRequest {
                        id: delivery.clone(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "Redeliver",
            deliveries
                .redeliver(authed(
                    pb::RedeliverRequest {
                        delivery_id: delivery.clone(),
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
        (
            "ReplayEndpoint",
            deliveries
                .replay_endpoint(authed(
                    pb::ReplayEndpointRequest {
                        endpoint_id: id(),
                        ..Default::default()
                    },
                    key,
                ))
                .await
                .map(|_| ()),
        ),
    ];
    for (call, result) in codes {
        assert_eq!(
            result.as_ref().map_err(|s| s.code()),
            Err(Code::NotFound),
            "{call} with tenant B's key"
        );
    }
    // Lists show B nothing of A's.
    let listed = deliveries
        .list_deliveries(authed(
            pb::ListDeliveriesRequest {
                endpoint_id: Some(id()),
                ..Default::default()
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.deliveries.is_empty());
    let eps = endpoints
        .list_endpoints(authed(pb::ListEndpointsRequest::default(), key))
        .await
        .unwrap()
        .into_inner();
    assert!(eps.endpoints.is_empty());
    let ts = types
        .list_event_types(authed(
            pb::ListEventTypesRequest {
                include_archived: true,
                ..Default::default()
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(ts.event_types.is_empty());
    // And A's resources are untouched.
    let card = get_endpoint(&herald, &a, &ep.id).await;
    assert!(card.enabled);
    herald.stop().await;
}

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

#[tokio::test]
async fn analysts_read_views_and_bind_their_own_queue_to_the_record_stream() {
    use futures::StreamExt;
    use herald_broker::lapin::options::{
        BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
    };
    use herald_broker::lapin::types::FieldTable;

    let herald = Herald::start(Options {
        retry_schedule: "100ms".into(),
        ..Default::default()
    })
    .await;
    // An analytics consumer's own queue on the ledger's fanout exchange.
    let conn = herald_broker::connect(herald_tests::AMQP_URL, "analytics-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queue = format!("{}.analytics", herald.name);
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        format!("{}.ledger", herald.name).as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let rx = Receiver::start(|path, n| {
        if path == "/flaky" && n == 1 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint(rx.url("/flaky"), &["*"]))
        .await;
    let p = herald.publish(&t, "stats.check", b"{\"k\":1}").await;
    herald
        .wait_delivery(
            &t,
            &herald.wait_deliveries(&t, &p.event_id, 1).await[0].id,
            Duration::from_secs(10),
            status_is(pb::DeliveryStatus::Success),
        )
        .await;

    // The stream: an event record and two attempt records (retrying, then success), v1.
    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while kinds.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, consumer.next())
            .await
            .expect("records arrive on the analyst's queue")
            .unwrap()
            .unwrap();
        let batch: serde_json::Value = serde_json::from_slice(&msg.data).unwrap();
        assert_eq!(batch["v"], 1);
        for r in batch["records"].as_array().unwrap() {
            let kind = r["kind"].as_str().unwrap().to_owned();
            if kind == "event" {
                assert_eq!(r["event_id"], p.event_id.as_str());
                assert_eq!(r["payload"], "{\"k\":1}");
            } else {
                assert_eq!(r["endpoint_id"], ep.id.as_str());
            }
            kinds.push((kind, r["outcome"].as_str().unwrap_or("").to_owned()));
        }
        msg.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("attempt".to_owned(), "retrying".to_owned()),
            ("attempt".to_owned(), "success".to_owned()),
            ("event".to_owned(), String::new()),
        ]
    );
    let _ = conn.close(200, "done".into()).await;

    // The views answer the common questions.
    let (attempts, deliveries, successes, retries): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT attempts, deliveries, successes, retries FROM endpoint_hourly WHERE endpoint_id = $1::uuid",
    )
    .bind(&ep.id)
    .fetch_one(&herald.pool)
    .await
    .unwrap();
    assert_eq!((attempts, deliveries, successes, retries), (2, 1, 1, 1));
    let (events, failed): (i64, i64) = sqlx::query_as(
        "SELECT events, failed FROM event_type_daily WHERE event_type = 'stats.check'",
    )
    .fetch_one(&herald.pool)
    .await
    .unwrap();
    assert_eq!((events, failed), (1, 0));
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
