//! Rolling restarts (SIGTERM) and crashes (SIGKILL) of each service during a publish loop.

use std::time::Duration;

use herald_tests::procs::{Processes, Role};

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
