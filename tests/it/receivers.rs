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
    let mut deliveries = herald.deliveries().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let finals = loop {
        let all = deliveries
            .list_deliveries(authed(
                pb::ListDeliveriesRequest {
                    page_size: 500,
                    ..Default::default()
                },
                &t.api_key,
            ))
            .await
            .unwrap()
            .into_inner()
            .deliveries;
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
    let (mut ok, mut failed, mut timeouts) = (0, 0, 0);
    for d in &finals {
        let full = deliveries
            .get_delivery(authed(
                pb::GetDeliveryRequest { id: d.id.clone() },
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
