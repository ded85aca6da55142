//! Publish → signed POST → ledger, retries on tiers, idempotency, matching, toggles, deletes.

use std::time::Duration;

use herald_core::signing::{Scheme, Secret, verify};
use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{Herald, Options, authed};

fn endpoint(url: String, types: &[&str]) -> pb::CreateEndpointRequest {
    pb::CreateEndpointRequest {
        url,
        event_types: types.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn success(r: &pb::GetDeliveryResponse) -> bool {
    r.delivery
        .as_ref()
        .is_some_and(|d| d.status == pb::DeliveryStatus::Success as i32)
}

#[tokio::test]
async fn publish_reaches_receiver_signed_byte_for_byte_and_ledger_records_success() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let tenant = herald
        .tenant_with(Some("X-Acme-"), Some("Acme-Webhooks/1.0"))
        .await;
    let (ep, secret) = herald
        .create_endpoint(&tenant, endpoint(rx.url("/hook"), &["response.*"]))
        .await;

    // Odd spacing and key order must survive untouched.
    let payload = b" {\"z\": 1,  \"a\" : [true, null, 2.50], \"s\": \"\\u00e9\"}\n";
    let published = herald.publish(&tenant, "response.submitted", payload).await;
    assert_eq!(published.deliveries, 1);
    assert!(!published.duplicate);

    let got = rx.next(Duration::from_secs(10)).await;
    assert_eq!(got.path, "/hook");
    assert_eq!(
        &got.body[..],
        &payload[..],
        "body must be delivered byte for byte"
    );
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        got.header("user-agent").as_deref(),
        Some("Acme-Webhooks/1.0")
    );
    assert_eq!(
        got.header("x-acme-event").as_deref(),
        Some("response.submitted")
    );
    assert_eq!(got.header("x-acme-attempt").as_deref(), Some("1"));
    let delivery_id = got
        .header("x-acme-delivery-id")
        .expect("delivery id header");
    assert_eq!(
        got.header("webhook-id").as_deref(),
        Some(delivery_id.as_str())
    );
    let secret = Secret::parse(&secret, Scheme::Standard).unwrap();
    let now = chrono::Utc::now().timestamp();
    let lookup = |n: &str| got.header(n);
    verify(
        Scheme::Standard,
        &secret,
        "X-Acme-",
        &lookup,
        &got.body,
        now,
        60,
    )
    .expect("signature verifies");
    let tampered = [&got.body[..], b" "].concat();
    assert!(
        verify(
            Scheme::Standard,
            &secret,
            "X-Acme-",
            &lookup,
            &tampered,
            now,
            60
        )
        .is_err()
    );

    let log = herald
        .wait_delivery(&tenant, &delivery_id, Duration::from_secs(10), success)
        .await;
    let d = log.delivery.unwrap();
    assert_eq!(d.endpoint_id, ep.id);
    assert_eq!(d.event_id, published.event_id);
    assert_eq!(d.attempt_count, 1);
    assert_eq!(d.response_status, 200);
    assert!(d.last_attempt_at.is_some());
    assert_eq!(log.attempts.len(), 1);
    assert_eq!(log.attempts[0].attempt, 1);
    assert_eq!(log.attempts[0].status, pb::DeliveryStatus::Success as i32);
    let stored: String = sqlx::query_scalar("SELECT payload FROM events")
        .fetch_one(&herald.pool)
        .await
        .unwrap();
    assert_eq!(stored.as_bytes(), &payload[..]);
    herald.stop().await;
}

#[tokio::test]
async fn failing_receiver_is_retried_on_tiers_until_it_succeeds() {
    let herald = Herald::start(Options {
        retry_schedule: "300ms,600ms,900ms".into(),
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::start(|_, n| {
        if n <= 2 {
            Reply {
                body: "not yet".into(),
                ..Reply::status(500)
            }
        } else {
            Reply::status(200)
        }
    })
    .await;
    let tenant = herald.tenant().await;
    herald
        .create_endpoint(&tenant, endpoint(rx.url("/flaky"), &["*"]))
        .await;
    herald
        .publish(&tenant, "order.created", br#"{"id":1}"#)
        .await;

    let attempts: Vec<_> = [
        rx.next(Duration::from_secs(10)).await,
        rx.next(Duration::from_secs(10)).await,
        rx.next(Duration::from_secs(10)).await,
    ]
    .into();
    let ids: Vec<_> = attempts
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "delivery id is stable across retries"
    );
    let numbers: Vec<_> = attempts
        .iter()
        .map(|r| r.header("webhook-attempt").unwrap())
        .collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    for (i, want) in [300u64, 600].iter().enumerate() {
        let gap = attempts[i + 1].at - attempts[i].at;
        assert!(
            gap >= Duration::from_millis(*want),
            "gap {i} was {gap:?}, tier is {want} ms"
        );
        assert!(
            gap < Duration::from_millis(want + 2000),
            "gap {i} was {gap:?}, tier is {want} ms"
        );
    }
    let log = herald
        .wait_delivery(&tenant, &ids[0], Duration::from_secs(10), |r| {
            success(r) && r.attempts.len() == 3
        })
        .await;
    let d = log.delivery.unwrap();
    assert_eq!(d.attempt_count, 3);
    let statuses: Vec<_> = log
        .attempts
        .iter()
        .map(|a| (a.attempt, a.status, a.response_status))
        .collect();
    let (retrying, ok) = (
        pb::DeliveryStatus::Retrying as i32,
        pb::DeliveryStatus::Success as i32,
    );
    assert_eq!(
        statuses,
        [(1, retrying, 500), (2, retrying, 500), (3, ok, 200)]
    );
    assert_eq!(log.attempts[0].response_body, "not yet");
    assert!(
        rx.drain_for(Duration::from_millis(1500)).await.is_empty(),
        "no attempt after success"
    );
    // 300 ms and 600 ms are no delay queue's: they waited in the 200 and 500 ms queues, and
    // the dispatcher waited the rest (the gaps above show the waits were whole); no queue
    // was declared for them.
    for (rung, exists) in [(200, true), (500, true), (300, false), (600, false)] {
        assert_eq!(
            herald.delay_queue_exists(rung).await,
            exists,
            "delay queue {rung} ms"
        );
    }
    herald.stop().await;
}

#[tokio::test]
async fn always_failing_receiver_ends_failed_after_the_last_tier() {
    let herald = Herald::start(Options {
        retry_schedule: "200ms,200ms".into(),
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::start(|_, _| Reply::status(503)).await;
    let tenant = herald.tenant().await;
    let (down, _) = herald
        .create_endpoint(&tenant, endpoint(rx.url("/down"), &["*"]))
        .await;
    // Without a schedule of its own, the endpoint shows the server's, which its deliveries get.
    assert_eq!(down.retry_schedule_ms, [200, 200]);
    assert!(down.retry_schedule_is_default && !down.no_retries);
    let published = herald.publish(&tenant, "a.b", b"{}").await;
    for _ in 0..3 {
        rx.next(Duration::from_secs(10)).await;
    }
    assert!(
        rx.drain_for(Duration::from_millis(1200)).await.is_empty(),
        "three attempts, no more"
    );
    let delivery = &herald
        .wait_deliveries(&tenant, &published.event_id, 1)
        .await[0];
    let log = herald
        .wait_delivery(&tenant, &delivery.id, Duration::from_secs(10), |r| {
            r.delivery
                .as_ref()
                .is_some_and(|d| d.status == pb::DeliveryStatus::Failed as i32)
                && r.attempts.len() == 3
        })
        .await;
    let d = log.delivery.unwrap();
    assert_eq!(d.attempt_count, 3);
    assert_eq!(d.response_status, 503);
    assert!(d.next_retry_at.is_none());
    let rows: Vec<_> = log.attempts.iter().map(|a| (a.attempt, a.status)).collect();
    let (retrying, failed) = (
        pb::DeliveryStatus::Retrying as i32,
        pb::DeliveryStatus::Failed as i32,
    );
    assert_eq!(rows, [(1, retrying), (2, retrying), (3, failed)]);
    assert!(
        log.attempts.iter().all(|a| a.response_status == 503
            && a.started_at.is_some()
            && a.trigger == "scheduled")
    );

    // An endpoint without retries: one attempt, and its failure is final (another tenant, so
    // the `*` endpoint above gets none of it).
    let tenant = herald.tenant().await;
    let (once, _) = herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                no_retries: true,
                ..endpoint(rx.url("/once"), &["once.*"])
            },
        )
        .await;
    assert!(once.no_retries && once.retry_schedule_ms.is_empty());
    assert!(!once.retry_schedule_is_default);
    let published = herald.publish(&tenant, "once.x", b"{}").await;
    assert_eq!(rx.next(Duration::from_secs(10)).await.path, "/once");
    assert!(
        rx.drain_for(Duration::from_millis(1200)).await.is_empty(),
        "one attempt, no retry"
    );
    let failed = ended_failed(&herald, &tenant, &published.event_id).await;
    assert_eq!(failed.attempt_count, 1);
    assert!(failed.next_retry_at.is_none());
    herald.stop().await;
}

#[tokio::test]
async fn connection_errors_and_timeouts_are_retried_and_recorded() {
    let herald = Herald::start(Options {
        retry_schedule: "100ms".into(),
        ..Default::default()
    })
    .await;
    let mut slow = Receiver::start(|_, _| Reply {
        delay: Duration::from_secs(3),
        ..Reply::status(200)
    })
    .await;
    let tenant = herald.tenant().await;
    // Nothing listens on port 9 of loopback.
    herald
        .create_endpoint(
            &tenant,
            endpoint("http://127.0.0.1:9/refused".into(), &["conn.*"]),
        )
        .await;
    let (_, _) = herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                timeout_ms: Some(300),
                ..endpoint(slow.url("/slow"), &["slow.*"])
            },
        )
        .await;
    let refused = herald.publish(&tenant, "conn.x", b"{}").await;
    let timed_out = herald.publish(&tenant, "slow.x", b"{}").await;
    let failed = |r: &pb::GetDeliveryResponse| {
        r.delivery
            .as_ref()
            .is_some_and(|d| d.status == pb::DeliveryStatus::Failed as i32)
            && r.attempts.len() == 2
    };
    let d = herald
        .wait_deliveries(&tenant, &refused.event_id, 1)
        .await
        .remove(0);
    let log = herald
        .wait_delivery(&tenant, &d.id, Duration::from_secs(10), failed)
        .await;
    assert!(
        log.attempts
            .iter()
            .all(|a| a.response_status == 0 && a.error.contains("connection")),
        "{:?}",
        log.attempts
    );
    let d = herald
        .wait_deliveries(&tenant, &timed_out.event_id, 1)
        .await
        .remove(0);
    let log = herald
        .wait_delivery(&tenant, &d.id, Duration::from_secs(10), failed)
        .await;
    assert!(
        log.attempts.iter().all(|a| a.error.contains("timeout")),
        "{:?}",
        log.attempts
    );
    assert!(
        log.attempts
            .iter()
            .all(|a| a.latency_ms >= 300 && a.latency_ms < 2000)
    );
    let _ = slow.drain_for(Duration::from_millis(10)).await;
    herald.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_first_event_and_delivers_once() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let tenant = herald.tenant().await;
    herald
        .create_endpoint(&tenant, endpoint(rx.url("/h"), &["*"]))
        .await;
    let mut events = herald.events().await;
    let req = || {
        authed(
            pb::PublishRequest {
                event_type: "a.b".into(),
                payload: b"{}".to_vec(),
                idempotency_key: Some("order-42".into()),
                occurred_at: None,
            },
            &tenant.api_key,
        )
    };
    let first = events.publish(req()).await.unwrap().into_inner();
    let second = events.publish(req()).await.unwrap().into_inner();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.event_id, second.event_id);
    assert_eq!(second.deliveries, 1);
    rx.next(Duration::from_secs(10)).await;
    assert!(
        rx.drain_for(Duration::from_millis(800)).await.is_empty(),
        "a duplicate publish delivers nothing"
    );
    // Another tenant's identical key is its own.
    let other = herald.tenant().await;
    let theirs = events
        .publish(authed(
            pb::PublishRequest {
                event_type: "a.b".into(),
                payload: b"{}".to_vec(),
                idempotency_key: Some("order-42".into()),
                occurred_at: None,
            },
            &other.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!theirs.duplicate);

    // In a batch (keys reserved together): each key once; a key repeated in the same call
    // with the same event gets its first occurrence's event back as a duplicate (one event,
    // delivered once); a second batch gets the first events back.
    let keyed = |key: &str| pb::PublishRequest {
        event_type: "a.b".into(),
        payload: b"{}".to_vec(),
        idempotency_key: Some(key.into()),
        occurred_at: None,
    };
    let batch = |keys: &[&str]| {
        authed(
            pb::PublishBatchRequest {
                events: keys.iter().map(|k| keyed(k)).collect(),
            },
            &tenant.api_key,
        )
    };
    use pb::publish_result::Outcome;
    let accepted = |r: &pb::PublishResult| match &r.outcome {
        Some(Outcome::Accepted(ok)) => ok.clone(),
        other => panic!("expected accepted, got {other:?}"),
    };
    let first = events
        .publish_batch(batch(&["b-1", "order-42", "b-2", "b-1"]))
        .await
        .unwrap()
        .into_inner()
        .results;
    let (b1, b2) = (accepted(&first[0]), accepted(&first[2]));
    assert!(!b1.duplicate && !b2.duplicate);
    assert_ne!(b1.event_id, b2.event_id);
    let earlier = accepted(&first[1]);
    assert!(earlier.duplicate, "order-42 was published above");
    let repeat = accepted(&first[3]);
    assert_eq!(repeat.event_id, b1.event_id);
    assert_eq!(repeat.deliveries, b1.deliveries);
    assert!(repeat.duplicate, "a repeat within the call is a duplicate");
    let again = events
        .publish_batch(batch(&["b-2", "b-1", "b-1"]))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(accepted(&again[0]).event_id, b2.event_id);
    assert_eq!(accepted(&again[1]).event_id, b1.event_id);
    // A repeat of a key already accepted gets that event back like its first occurrence.
    assert_eq!(accepted(&again[2]).event_id, b1.event_id);
    assert!(again.iter().all(|r| accepted(r).duplicate));

    // A key reused for a different event (payload or type) is refused, never answered with the
    // first event: alone, and within one batch.
    for (event_type, payload) in [("a.b", &b"{\"n\":2}"[..]), ("a.c", &b"{}"[..])] {
        let err = events
            .publish(authed(
                pb::PublishRequest {
                    event_type: event_type.into(),
                    payload: payload.to_vec(),
                    idempotency_key: Some("order-42".into()),
                    occurred_at: None,
                },
                &tenant.api_key,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("different event type or payload"),
            "{err:?}"
        );
    }
    let mut differ = keyed("b-3");
    differ.payload = b"{\"n\":3}".to_vec();
    let mixed = events
        .publish_batch(authed(
            pb::PublishBatchRequest {
                events: vec![keyed("b-3"), differ],
            },
            &tenant.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(!accepted(&mixed[0]).duplicate);
    match &mixed[1].outcome {
        Some(Outcome::Error(e)) => assert_eq!(e.code, tonic::Code::InvalidArgument as i32),
        other => panic!("expected the reused key refused, got {other:?}"),
    }
    for _ in 0..3 {
        rx.next(Duration::from_secs(10)).await;
    }
    assert!(
        rx.drain_for(Duration::from_millis(800)).await.is_empty(),
        "each keyed event of the batches is delivered once"
    );
    herald.stop().await;
}

#[tokio::test]
async fn subscriptions_match_exactly_by_prefix_and_by_star() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let tenant = herald.tenant().await;
    herald
        .create_endpoint(&tenant, endpoint(rx.url("/prefix"), &["response.*"]))
        .await;
    herald
        .create_endpoint(&tenant, endpoint(rx.url("/star"), &["*"]))
        .await;
    herald
        .create_endpoint(&tenant, endpoint(rx.url("/exact"), &["call.ended"]))
        .await;
    herald
        .create_endpoint(
            &tenant,
            endpoint(rx.url("/both"), &["call.ended", "response.started"]),
        )
        .await;

    let cases = [
        ("response.started", vec!["/both", "/prefix", "/star"]),
        ("response.submitted", vec!["/prefix", "/star"]),
        ("call.ended", vec!["/both", "/exact", "/star"]),
        ("call.started", vec!["/star"]),
        ("response", vec!["/star"]),
    ];
    for (event_type, want) in cases {
        let r = herald.publish(&tenant, event_type, b"{}").await;
        assert_eq!(r.deliveries as usize, want.len(), "{event_type}");
        let mut got: Vec<String> = Vec::new();
        for _ in 0..want.len() {
            let req = rx.next(Duration::from_secs(10)).await;
            assert_eq!(req.header("webhook-event").as_deref(), Some(event_type));
            got.push(req.path);
        }
        got.sort();
        assert_eq!(got, want, "{event_type}");
    }
    // Another tenant's endpoints never see this tenant's events.
    let other = herald.tenant().await;
    assert_eq!(
        herald
            .publish(&other, "response.started", b"{}")
            .await
            .deliveries,
        0
    );
    assert!(rx.drain_for(Duration::from_millis(500)).await.is_empty());
    herald.stop().await;
}

#[tokio::test]
async fn disabled_endpoint_gets_nothing_until_enabled_again() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let tenant = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                enabled: Some(false),
                ..endpoint(rx.url("/off"), &["*"])
            },
        )
        .await;
    assert!(!ep.enabled);
    assert_eq!(herald.publish(&tenant, "a.b", b"{}").await.deliveries, 0);
    assert!(rx.drain_for(Duration::from_millis(600)).await.is_empty());

    let mut endpoints = herald.endpoints().await;
    let on = endpoints
        .update_endpoint(authed(
            pb::UpdateEndpointRequest {
                id: ep.id.clone(),
                enabled: Some(true),
                ..Default::default()
            },
            &tenant.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(on.enabled);
    assert_eq!(herald.publish(&tenant, "a.b", b"{}").await.deliveries, 1);
    rx.next(Duration::from_secs(10)).await;
    herald.stop().await;
}

/// A Herald retrying every second, an endpoint at `path` that always answers 500, and one
/// event whose first attempt has been made.
async fn failed_once(
    env: Vec<(String, String)>,
    path: &str,
) -> (
    Herald,
    Receiver,
    herald_tests::Tenant,
    pb::Endpoint,
    pb::PublishResponse,
) {
    let herald = Herald::start(Options {
        retry_schedule: "1s,1s,1s".into(),
        env,
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::start(|_, _| Reply::status(500)).await;
    let tenant = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&tenant, endpoint(rx.url(path), &["*"]))
        .await;
    let published = herald.publish(&tenant, "a.b", b"{}").await;
    rx.next(Duration::from_secs(10)).await;
    (herald, rx, tenant, ep, published)
}

/// The one delivery of `event_id`, once the log shows it `failed`.
async fn ended_failed(
    herald: &Herald,
    tenant: &herald_tests::Tenant,
    event_id: &str,
) -> pb::Delivery {
    let d = herald.wait_deliveries(tenant, event_id, 1).await.remove(0);
    let log = herald
        .wait_delivery(tenant, &d.id, Duration::from_secs(5), |r| {
            r.delivery
                .as_ref()
                .is_some_and(|d| d.status == pb::DeliveryStatus::Failed as i32)
        })
        .await;
    log.delivery.expect("a delivery in the log")
}

/// With caches that would hold an entry for a minute, changes still apply at once: Postgres
/// change notices reach the dispatcher's endpoint cache and ingest's subscription index, for
/// changes made through the API and straight in SQL (as another instance or an operator would).
#[tokio::test]
async fn changes_reach_every_cache_at_once() {
    let env = vec![
        ("HERALD_ENDPOINT_CACHE_TTL".into(), "60s".into()),
        ("HERALD_SUBSCRIPTION_CACHE_TTL".into(), "60s".into()),
    ];
    let (herald, mut rx, tenant, ep, published) = failed_once(env, "/toggled").await;
    // The dispatcher has the endpoint cached (enabled); switching it off stops the retries.
    herald.set_enabled(&tenant, &ep.id, false).await;
    assert!(
        rx.drain_for(Duration::from_millis(2500)).await.is_empty(),
        "no retry reaches an endpoint switched off"
    );
    let failed = ended_failed(&herald, &tenant, &published.event_id).await;
    assert!(failed.last_error.contains("disabled"), "{failed:?}");
    // Ingest's index (loaded now, without the endpoint) follows a change made in SQL.
    assert_eq!(herald.publish(&tenant, "a.b", b"{}").await.deliveries, 0);
    sqlx::query("UPDATE endpoints SET enabled = true WHERE id = $1::uuid")
        .bind(&ep.id)
        .execute(&herald.pool)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if herald.publish(&tenant, "a.b", b"{}").await.deliveries == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the SQL change never reached ingest's 60 s cache"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx.next(Duration::from_secs(10)).await;
    herald.stop().await;
}

#[tokio::test]
async fn deleting_an_endpoint_stops_its_queued_retries() {
    let (herald, mut rx, tenant, ep, published) = failed_once(Vec::new(), "/gone-soon").await;
    herald
        .endpoints()
        .await
        .delete_endpoint(authed(
            pb::DeleteEndpointRequest { id: ep.id.clone() },
            &tenant.api_key,
        ))
        .await
        .unwrap();
    assert!(
        rx.drain_for(Duration::from_millis(3500)).await.is_empty(),
        "no retry reaches a deleted endpoint"
    );
    let failed = ended_failed(&herald, &tenant, &published.event_id).await;
    assert!(failed.last_error.contains("deleted"), "{failed:?}");
    herald.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_with_the_reason() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::start(|_, _| Reply::status(410)).await;
    let tenant = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&tenant, endpoint(rx.url("/gone"), &["*"]))
        .await;
    let published = herald.publish(&tenant, "a.b", b"{}").await;
    rx.next(Duration::from_secs(10)).await;
    let d = herald
        .wait_deliveries(&tenant, &published.event_id, 1)
        .await
        .remove(0);
    herald
        .wait_delivery(&tenant, &d.id, Duration::from_secs(5), |r| {
            r.delivery
                .as_ref()
                .is_some_and(|d| d.status == pb::DeliveryStatus::Failed as i32)
        })
        .await;
    let now = herald
        .endpoints()
        .await
        .get_endpoint(authed(
            pb::GetEndpointRequest { id: ep.id },
            &tenant.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!now.enabled);
    assert_eq!(now.disabled_reason, "410 Gone");
    assert!(
        rx.drain_for(Duration::from_millis(1000)).await.is_empty(),
        "410 is not retried"
    );
    herald.stop().await;
}

#[tokio::test]
async fn timestamped_and_hex_schemes_use_the_tenant_prefix() {
    let herald = Herald::start(Options::default()).await;
    let mut rx = Receiver::ok().await;
    let tenant = herald
        .tenant_with(Some("X-Sayify-"), Some("Sayify-Webhooks/1.0"))
        .await;
    herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                signing_scheme: pb::SigningScheme::Hex as i32,
                secret: Some("It's a Secret to Everybody".into()),
                ..endpoint(rx.url("/hex"), &["hex.*"])
            },
        )
        .await;
    herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                signing_scheme: pb::SigningScheme::Timestamped as i32,
                secret: Some("whsec_plain_text_secret".into()),
                ..endpoint(rx.url("/ts"), &["ts.*"])
            },
        )
        .await;
    herald.publish(&tenant, "hex.x", b"{\"hello\":1}").await;
    let got = rx.next(Duration::from_secs(10)).await;
    let secret = Secret::parse("It's a Secret to Everybody", Scheme::Hex).unwrap();
    let sig = got.header("x-sayify-signature").unwrap();
    assert!(sig.starts_with("sha256="));
    verify(
        Scheme::Hex,
        &secret,
        "X-Sayify-",
        &|n: &str| got.header(n),
        &got.body,
        0,
        0,
    )
    .expect("hex verifies");
    assert_eq!(
        got.header("user-agent").as_deref(),
        Some("Sayify-Webhooks/1.0")
    );
    assert!(got.header("x-sayify-delivery-id").is_some());

    herald.publish(&tenant, "ts.x", b"{\"n\":2}").await;
    let got = rx.next(Duration::from_secs(10)).await;
    let sig = got.header("x-sayify-signature").unwrap();
    assert!(sig.starts_with("t="), "{sig}");
    assert_eq!(
        got.header("x-sayify-id"),
        got.header("x-sayify-delivery-id")
    );
    let secret = Secret::parse("whsec_plain_text_secret", Scheme::Timestamped).unwrap();
    let now = chrono::Utc::now().timestamp();
    verify(
        Scheme::Timestamped,
        &secret,
        "X-Sayify-",
        &|n: &str| got.header(n),
        &got.body,
        now,
        60,
    )
    .expect("timestamped verifies");
    herald.stop().await;
}
