//! Nothing accepted is lost when dispatchers are killed: 2,000 events to 5 endpoints while
//! dispatcher processes are SIGKILLed and restarted; every delivery reaches the receiver
//! (duplicates allowed and counted) and the ledger is complete.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::receiver::Receiver;
use herald_tests::{Herald, Options, authed};

#[tokio::test]
async fn killing_dispatchers_mid_run_loses_nothing() {
    const EVENTS: usize = 2_000;
    const ENDPOINTS: usize = 5;
    let mut herald = Herald::start(Options {
        dispatchers: 0,
        retry_schedule: "200ms,500ms,1s".into(),
        ..Default::default()
    })
    .await;
    let a = herald.spawn_dispatcher_process();
    let b = herald.spawn_dispatcher_process();
    let mut rx = Receiver::ok().await;
    let tenant = herald.tenant().await;
    for i in 0..ENDPOINTS {
        herald
            .create_endpoint(
                &tenant,
                pb::CreateEndpointRequest {
                    url: rx.url(&format!("/e{i}")),
                    event_types: vec!["load.*".into()],
                    ..Default::default()
                },
            )
            .await;
    }

    let started = Instant::now();
    let publisher = {
        let events = herald.events().await;
        let key = Arc::new(tenant.api_key.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for worker in 0..8 {
                let mut events = events.clone();
                let key = key.clone();
                tasks.push(tokio::spawn(async move {
                    for i in (worker..EVENTS).step_by(8) {
                        let payload = format!("{{\"seq\":{i}}}").into_bytes();
                        let req = pb::PublishRequest {
                            event_type: "load.tick".into(),
                            payload,
                            idempotency_key: None,
                            occurred_at: None,
                        };
                        let r = events
                            .publish(authed(req, &key))
                            .await
                            .expect("publish accepted");
                        assert_eq!(r.into_inner().deliveries as usize, ENDPOINTS);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    // Kill -9 each dispatcher in turn while deliveries flow, then bring it back.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut kills = 0;
    let want = EVENTS * ENDPOINTS;
    let deadline = Instant::now() + Duration::from_secs(240);
    while seen.len() < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} deliveries arrived",
            seen.len()
        );
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(200), rx.rx.recv()).await {
            *seen.entry(r.header("webhook-id").unwrap()).or_default() += 1;
        }
        let milestones = [want / 5, 2 * want / 5, 3 * want / 5];
        if kills < milestones.len() && seen.len() >= milestones[kills] {
            let victim = if kills % 2 == 0 { a } else { b };
            herald.kill_dispatcher_process(victim);
            tokio::time::sleep(Duration::from_millis(300)).await;
            herald.restart_dispatcher_process(victim);
            kills += 1;
        }
    }
    publisher.await.unwrap();
    let elapsed = started.elapsed();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(kills, 3);

    // The ledger ends complete: every delivery recorded and successful.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (events, ok): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries WHERE status = 'success')",
        )
        .fetch_one(&herald.pool)
        .await
        .unwrap();
        if events == EVENTS as i64 && ok == want as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ledger incomplete: {events} events, {ok} successful deliveries of {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "no-loss: {EVENTS} events, {want} deliveries in {:.1}s ({:.0} deliveries/s, debug build), {kills} kills, {duplicates} duplicates, 0 lost",
        elapsed.as_secs_f64(),
        want as f64 / elapsed.as_secs_f64()
    );
    let _ = herald
        .deliveries()
        .await
        .list_deliveries(authed(
            pb::ListDeliveriesRequest::default(),
            &tenant.api_key,
        ))
        .await
        .unwrap();
    herald.stop().await;
}

/// A publish interrupted part-way (ingest died, or the broker failed mid hand-off) is resumed by
/// the next publish with its idempotency key: the same event id and the same delivery ids, so
/// what the first try got through and what the retry sends are one event, not two.
#[tokio::test]
async fn an_interrupted_publish_is_resumed_under_its_event_id() {
    let herald = Herald::start(Options::default()).await;
    let tenant = herald.tenant().await;
    let mut rx = herald_tests::receiver::Receiver::ok().await;
    let (ep, _) = herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                url: rx.url("/hook"),
                event_types: vec!["*".into()],
                ..Default::default()
            },
        )
        .await;
    // What an interrupted try leaves in Redis: the key pending for an event id, past its
    // deadline.
    let interrupted = uuid::Uuid::now_v7();
    let mut redis = redis::Client::open(herald_tests::REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{}:idem:{}:order-7", herald.name, tenant.id);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(format!("pending {interrupted} 0"))
        .arg("EX")
        .arg(60)
        .query_async(&mut redis)
        .await
        .unwrap();
    let publish = || pb::PublishRequest {
        event_type: "order.paid".into(),
        payload: b"{\"order\":7}".to_vec(),
        idempotency_key: Some("order-7".into()),
        ..Default::default()
    };
    let mut events = herald.events().await;
    let r = events
        .publish(authed(publish(), &tenant.api_key))
        .await
        .expect("resumed publish")
        .into_inner();
    assert_eq!(r.event_id, interrupted.to_string());
    assert!(!r.duplicate);
    let endpoint_id: uuid::Uuid = ep.id.parse().unwrap();
    let got = rx.next(Duration::from_secs(10)).await;
    assert_eq!(
        got.header("webhook-id"),
        Some(herald_core::wire::delivery_id(interrupted, endpoint_id).to_string())
    );
    // Once confirmed, the key answers with that event as a duplicate.
    let again = events
        .publish(authed(publish(), &tenant.api_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.event_id, interrupted.to_string());
    assert!(again.duplicate);
    // A reservation still within its deadline is in flight: ABORTED, retry shortly.
    let busy_key = format!("{}:idem:{}:order-8", herald.name, tenant.id);
    let far = chrono::Utc::now().timestamp_millis() + 60_000;
    let _: () = redis::cmd("SET")
        .arg(&busy_key)
        .arg(format!("pending {} {far}", uuid::Uuid::now_v7()))
        .arg("EX")
        .arg(60)
        .query_async(&mut redis)
        .await
        .unwrap();
    let refused = |key: &str| {
        let mut events = events.clone();
        let req = authed(
            pb::PublishRequest {
                idempotency_key: Some(key.into()),
                ..publish()
            },
            &tenant.api_key,
        );
        async move { events.publish(req).await.unwrap_err() }
    };
    assert_eq!(refused("order-8").await.code(), tonic::Code::Aborted);
    // A reservation made for another event (its fingerprint differs) is not resumed by this
    // one: the key was reused, which is refused.
    let other_key = format!("{}:idem:{}:order-9", herald.name, tenant.id);
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(&other_key)
        .arg(format!("pending {} 0", uuid::Uuid::now_v7()))
        .arg("EX")
        .arg(60)
        .ignore()
        .cmd("SET")
        .arg(format!("{}:idem-fp:{}:order-9", herald.name, tenant.id))
        .arg("0".repeat(32))
        .arg("EX")
        .arg(60)
        .ignore()
        .query_async(&mut redis)
        .await
        .unwrap();
    let status = refused("order-9").await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    herald.stop().await;
}
