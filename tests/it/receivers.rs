//! Hostile receivers: errors, hangs past the timeout and slow answers. Every delivery still ends
//! `success` or `failed` per its schedule, with one recorded attempt per request received.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{Herald, Options, authed};

#[tokio::test]
async fn chaotic_receiver_ends_every_delivery_per_its_schedule() {
    let herald = Herald::start(Options {
        retry_schedule: "100ms,200ms".into(),
        dispatchers: 2,
        ..Default::default()
    })
    .await;
    // By request number: 30 % answer 500, 10 % hang past the timeout, 10 % answer slowly
    // (within the timeout), the rest answer 200 at once.
    let mut rx = Receiver::start(|_, n| match n % 10 {
        0..=2 => Reply::status(500),
        3 => Reply {
            delay: Duration::from_millis(1500),
            ..Reply::status(200)
        },
        4 => Reply {
            delay: Duration::from_millis(150),
            body: "slow".repeat(100),
            ..Reply::status(200)
        },
        _ => Reply::status(200),
    })
    .await;
    let t = herald.tenant().await;
    herald
        .create_endpoint(
            &t,
            pb::CreateEndpointRequest {
                url: rx.url("/chaos"),
                event_types: vec!["*".into()],
                timeout_ms: Some(400),
                ..Default::default()
            },
        )
        .await;
    let n = 120;
    let mut events = Vec::new();
    for i in 0..n {
        events.push(
            herald
                .publish(&t, "chaos.tick", format!("{{\"i\":{i}}}").as_bytes())
                .await
                .event_id,
        );
    }
    // Wait until every delivery is final.
    let deadline = Instant::now() + Duration::from_secs(60);
    let finals = loop {
        let all = herald
            .list_deliveries(
                &t,
                pb::ListDeliveriesRequest {
                    page_size: 500,
                    ..Default::default()
                },
            )
            .await;
        let done = all
            .iter()
            .filter(|d| {
                d.status == pb::DeliveryStatus::Success as i32
                    || d.status == pb::DeliveryStatus::Failed as i32
            })
            .count();
        if all.len() == n && done == n {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {n} deliveries final after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Requests the receiver saw, per delivery id (hung ones included: it notes them first).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in rx.drain_for(Duration::from_millis(100)).await {
        *seen.entry(r.header("webhook-id").unwrap()).or_default() += 1;
    }
    let mut deliveries = herald.deliveries().await;
    let (mut ok, mut failed, mut timeouts) = (0, 0, 0);
    for d in &finals {
        let full = deliveries
            .get_delivery(authed(
                pb::GetDeliveryRequest {
                    id: d.id.clone(),
                    ..Default::default()
                },
                &t.api_key,
            ))
            .await
            .unwrap()
            .into_inner();
        let attempts = &full.attempts;
        assert_eq!(
            attempts.len(),
            seen.get(&d.id).copied().unwrap_or(0),
            "attempts recorded vs requests received for {}",
            d.id
        );
        assert!(
            attempts.len() <= 3,
            "{} attempts for a 3-attempt schedule",
            attempts.len()
        );
        timeouts += attempts
            .iter()
            .filter(|a| a.error.contains("timeout"))
            .count();
        let last = attempts.last().unwrap();
        if d.status == pb::DeliveryStatus::Success as i32 {
            ok += 1;
            assert_eq!(last.status, pb::DeliveryStatus::Success as i32);
            assert!(
                attempts[..attempts.len() - 1]
                    .iter()
                    .all(|a| a.status == pb::DeliveryStatus::Retrying as i32)
            );
        } else {
            failed += 1;
            assert_eq!(
                attempts.len(),
                3,
                "a failed delivery used its whole schedule"
            );
            assert_eq!(last.status, pb::DeliveryStatus::Failed as i32);
        }
    }
    assert_eq!(ok + failed, n);
    assert!(ok > n / 2, "{ok} succeeded");
    assert!(timeouts > 0, "no attempt hit the timeout");
    eprintln!(
        "hostile receiver: {ok} delivered, {failed} failed after 3 attempts, {timeouts} timeouts"
    );
    herald.stop().await;
}

#[tokio::test]
async fn dispatcher_refuses_forbidden_addresses_at_delivery_time() {
    // Endpoints created while loopback was allowed; the dispatcher runs without the allowlist,
    // as after an operator tightened it or a DNS name changed its answer.
    let mut herald = Herald::start(Options {
        retry_schedule: "100ms".into(),
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let mut rx = Receiver::ok().await;
    let t = herald.tenant().await;
    let port = rx.base_url.rsplit(':').next().unwrap().to_owned();
    let mut ids = Vec::new();
    for url in [
        format!("http://127.0.0.1:{port}/literal"),
        format!("http://localhost:{port}/resolved"),
    ] {
        let (ep, _) = herald
            .create_endpoint(
                &t,
                pb::CreateEndpointRequest {
                    url,
                    event_types: vec!["*".into()],
                    ..Default::default()
                },
            )
            .await;
        ids.push(ep.id);
    }
    herald
        .env
        .insert("HERALD_ALLOW_NETWORKS".into(), String::new());
    herald.start_dispatcher();
    let p = herald.publish(&t, "ssrf.probe", b"{}").await;
    assert_eq!(p.deliveries, 2);
    let ds = herald.wait_deliveries(&t, &p.event_id, 2).await;
    for d in &ds {
        let full = herald
            .wait_delivery(&t, &d.id, Duration::from_secs(10), |r| {
                r.delivery
                    .as_ref()
                    .is_some_and(|d| d.status == pb::DeliveryStatus::Failed as i32)
            })
            .await;
        assert_eq!(full.attempts.len(), 2);
        for a in &full.attempts {
            assert!(a.error.starts_with("blocked_address"), "{:?}", a.error);
            assert_eq!(a.response_status, 0);
        }
    }
    assert!(
        rx.drain_for(Duration::from_millis(300)).await.is_empty(),
        "a forbidden address was reached"
    );
    herald.stop().await;
}
