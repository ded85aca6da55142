//! Rolling restarts (SIGTERM) and crashes (SIGKILL) of each service during a publish loop.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::authed;
use herald_tests::procs::{Processes, Role};
use herald_tests::receiver::{Receiver, Reply};

use crate::load::{SERIAL, Tally, assert_complete, publish_all, scale, setup};

#[tokio::test]
async fn rolling_restart_of_every_service_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut p = Processes::start(1, &[]).await;
    let s = setup(&p, 2).await;
    let tally = Tally::start(s.rx);
    let n = 600 * scale();
    let publisher = {
        let (addr, key) = (p.ingest_addr, s.key.clone());
        tokio::spawn(async move {
            publish_all(
                addr,
                &key,
                "a",
                n,
                Duration::from_millis(5),
                Duration::from_secs(300),
            )
            .await
        })
    };
    for role in [Role::Ingest, Role::Dispatcher(0), Role::Ledger] {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            p.terminate(role, Duration::from_secs(15)).await,
            "{role:?} did not stop by itself within 15 s of SIGTERM"
        );
        p.spawn(role);
    }
    let published = publisher.await.unwrap();
    let (_, _, dup) = assert_complete(
        &p,
        &published,
        s.endpoints,
        &tally,
        Duration::from_secs(60),
        false,
    )
    .await;
    // Graceful stops hand work over cleanly: a restart should not cause many re-sends.
    assert!(dup <= 10, "{dup} duplicates after graceful restarts");
}

#[tokio::test]
async fn killing_each_service_repeatedly_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut p = Processes::start(2, &[]).await;
    let s = setup(&p, 4).await;
    let tally = Tally::start(s.rx);
    // 1,000 events × 4 endpoints per scale step: `CHAOS_SCALE=5` is the 20,000-delivery run.
    let n = 1000 * scale();
    let publisher = {
        let (addr, key) = (p.ingest_addr, s.key.clone());
        tokio::spawn(async move {
            publish_all(
                addr,
                &key,
                "a",
                n,
                Duration::from_millis(2),
                Duration::from_secs(900),
            )
            .await
        })
    };
    let victims = [
        Role::Dispatcher(0),
        Role::Ledger,
        Role::Ingest,
        Role::Dispatcher(1),
    ];
    let mut round = 0;
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let role = victims[round % victims.len()];
        p.kill(role);
        tokio::time::sleep(Duration::from_millis(200)).await;
        p.spawn(role);
        round += 1;
    }
    let published = publisher.await.unwrap();
    assert!(round >= 3, "only {round} kills happened during the run");
    assert_complete(
        &p,
        &published,
        s.endpoints,
        &tally,
        Duration::from_secs(120),
        true,
    )
    .await;
}

/// SIGTERM starts a drain that waits for deliveries in flight (here one the receiver holds for
/// 20 s, within a 30 s grace); a second SIGTERM ends the process at once, and the delivery it
/// held, never acknowledged, is made again by the next dispatcher.
#[tokio::test]
async fn a_second_sigterm_stops_a_draining_dispatcher_at_once() {
    let _serial = SERIAL.lock().await;
    let mut p = Processes::start(1, &[("HERALD_SHUTDOWN_GRACE", "30s")]).await;
    let mut rx = Receiver::start(|_, n| Reply {
        delay: if n == 1 {
            Duration::from_secs(20)
        } else {
            Duration::ZERO
        },
        ..Reply::status(200)
    })
    .await;
    let key = p.tenant_key("signals").await;
    let channel = Processes::channel(p.ingest_addr).await;
    pb::endpoints_client::EndpointsClient::new(channel.clone())
        .create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: rx.url("/slow"),
                event_types: vec!["*".into()],
                ..Default::default()
            },
            &key,
        ))
        .await
        .expect("endpoint");
    pb::events_client::EventsClient::new(channel)
        .publish(authed(
            pb::PublishRequest {
                event_type: "a.b".into(),
                payload: b"{}".to_vec(),
                idempotency_key: None,
                occurred_at: None,
            },
            &key,
        ))
        .await
        .expect("publish");
    let first = rx.next(Duration::from_secs(10)).await;

    p.sigterm(Role::Dispatcher(0));
    assert!(
        p.exited(Role::Dispatcher(0), Duration::from_millis(1500))
            .await
            .is_none(),
        "the first SIGTERM drains: the delivery in flight is waited for"
    );
    p.sigterm(Role::Dispatcher(0));
    let status = p
        .exited(Role::Dispatcher(0), Duration::from_secs(3))
        .await
        .expect("a second SIGTERM stops the dispatcher at once");
    assert_eq!(status.code(), Some(130), "{status:?}");

    p.spawn(Role::Dispatcher(0));
    let again = rx.next(Duration::from_secs(30)).await;
    assert_eq!(
        again.header("webhook-id"),
        first.header("webhook-id"),
        "the unacknowledged delivery is made again"
    );
}
