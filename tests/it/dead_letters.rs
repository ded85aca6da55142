//! Messages that cannot be processed never loop and never block a queue: a delivery task that
//! keeps coming back unacknowledged is dead-lettered by the quorum queue's delivery limit and
//! its delivery ends `failed` in the log; corrupt and unknown-version tasks are rejected to the
//! dead-letter queue; a ledger message Postgres refuses is isolated from its batch and
//! dead-lettered while the rest is written. Each is counted in `herald_dead_letters_total` and
//! recorded in `dead_letters`. A response body with NUL bytes is stored (as U+FFFD).

use std::time::{Duration, Instant};

use futures::StreamExt;
use herald_proto::v1 as pb;
use herald_tests::procs::{Processes, Role};
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{authed, http_get};
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;

async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the log holds `n` successful deliveries.
async fn successes(what: &str, pool: &sqlx::PgPool, n: i64) {
    wait_until(what, Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM deliveries WHERE status = 'success'")
                .fetch_one(&pool)
                .await
                .unwrap()
                == n
        }
    })
    .await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_counted_and_recorded() {
    let mut p = Processes::start(0, &[]).await;
    let pool = p.pool().await;
    let key = p.tenant_key("poison").await;
    let mut rx = Receiver::start(|_, _| Reply {
        body: "ok\0with a nul".into(),
        ..Reply::status(200)
    })
    .await;
    p.endpoint(&key, rx.url("/hook")).await;
    let mut events = pb::events_client::EventsClient::new(Processes::channel(p.ingest_addr).await);
    let publish = |n: u32| pb::PublishRequest {
        event_type: "poison.test".into(),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
        ..Default::default()
    };
    events.publish(authed(publish(1), &key)).await.unwrap();

    // No dispatcher: this test plays one that never acks the task (as if it crashed on it).
    let conn = herald_tests::amqp_connection("herald-tests-dead-letters").await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    // The tenant's work shard.
    let tenant: uuid::Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE name = 'poison'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let work = herald_broker::Topology::new(p.name.as_str(), herald_broker::QueueType::Quorum)
        .shard_queue(herald_broker::shard_of(tenant));
    let mut consumer = ch
        .basic_consume(
            work.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut returned = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(3), consumer.next()).await {
            Ok(Some(d)) => {
                let d = d.unwrap();
                d.acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await
                    .unwrap();
                returned += 1;
                assert!(returned <= 25, "the delivery limit never stopped the task");
            }
            Ok(None) => panic!("consumer closed"),
            Err(_) => break,
        }
    }
    // Quorum queues of this installation: delivery limit 20.
    assert!((20..=21).contains(&returned), "returned {returned} times");
    drop(consumer);
    let _ = ch.close(200, "done".into()).await;

    wait_until(
        "the delivery to end failed",
        Duration::from_secs(15),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, String>("SELECT status FROM deliveries")
                    .fetch_optional(&pool)
                    .await
                    .unwrap()
                    .as_deref()
                    == Some("failed")
            }
        },
    )
    .await;
    let (last_error,): (Option<String>,) = sqlx::query_as("SELECT last_error FROM deliveries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        last_error
            .as_deref()
            .unwrap_or("")
            .contains("delivery limit"),
        "{last_error:?}"
    );

    // A dispatcher now: corrupt and unknown-version tasks are rejected to the dead letters.
    p.spawn(Role::Dispatcher(0));
    let ch = conn.create_channel().await.unwrap();
    for body in [&b"not a task at all"[..], b"{\"v\":99,\"future\":true}\n{}"] {
        ch.basic_publish(
            format!("{}.deliveries", p.name).as_str().into(),
            "work".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // A ledger message that decodes but that Postgres refuses (NUL in a text column).
    let poison_ledger = br#"{"v":1,"records":[{"kind":"abandoned","delivery_id":"0190a0b0-0000-7000-8000-000000000001","event_id":"0190a0b0-0000-7000-8000-000000000002","tenant_id":"0190a0b0-0000-7000-8000-000000000003","endpoint_id":"0190a0b0-0000-7000-8000-000000000004","event_type":"bad\u0000type","created_at":"2026-01-01T00:00:00Z","at":"2026-01-01T00:00:00Z","reason":"x"}]}"#;
    ch.basic_publish(
        format!("{}.ledger", p.name).as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        poison_ledger,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // And real traffic behind them, which must not be held up.
    events.publish(authed(publish(2), &key)).await.unwrap();
    let got = rx.next(Duration::from_secs(15)).await;
    assert!(String::from_utf8_lossy(&got.body).contains("\"n\":2"));
    wait_until("four dead letters", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM dead_letters")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 4
        }
    })
    .await;
    successes("the second delivery in the log", &pool, 1).await;
    let body: String =
        sqlx::query_scalar("SELECT response_body FROM deliveries WHERE status = 'success'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(body, "ok\u{FFFD}with a nul");

    let rows: Vec<(String, String, Option<uuid::Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT queue, reason, delivery_id, error FROM dead_letters ORDER BY queue, reason, error",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("ledger", "rejected")
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str()),
        ("work", "delivery_limit")
    );
    assert!(rows[1].2.is_some(), "the delivery-limit task is attributed");
    let rejected: Vec<&str> = rows[2..]
        .iter()
        .map(|r| {
            assert_eq!((r.0.as_str(), r.1.as_str()), ("work", "rejected"));
            assert!(r.2.is_none());
            r.3.as_deref().unwrap()
        })
        .collect();
    assert!(
        rejected.iter().any(|e| e.contains("no payload separator")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|e| e.contains("unsupported message version 99")),
        "{rejected:?}"
    );

    // Counted, and the dead-letter queue is empty again.
    let (_, metrics) = http_get(p.metrics[&Role::Ledger], "/metrics").await;
    let count = |reason: &str, queue: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("herald_dead_letters_total")
                    && l.contains(&format!("queue=\"{queue}\""))
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("delivery_limit", "work"), 1, "{metrics}");
    assert_eq!(count("rejected", "work"), 2, "{metrics}");
    assert_eq!(count("rejected", "ledger"), 1, "{metrics}");
    let ch = conn.create_channel().await.unwrap();
    let dead = ch
        .queue_declare(
            format!("{}.dead.letters", p.name).as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(dead.message_count(), 0);
    let _ = conn.close(200, "done".into()).await;

    // Once the cause is fixed, the operator sends the work letters back: the task that hit the
    // delivery limit is delivered now (and its delivery ends `success`); the two unreadable
    // ones are left (they would only die again). A second run sends nothing twice.
    let replay = || {
        let out = std::process::Command::new(herald_tests::bin_dir().join("herald-ledger"))
            .args(["dead-letters", "replay", "--queue", "work"])
            .env_clear()
            .envs(&p.env)
            .output()
            .expect("herald-ledger runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = replay();
    assert!(first.contains("replayed 1 dead letters"), "{first}");
    assert!(first.contains("2 that are not readable"), "{first}");
    let got = rx.next(Duration::from_secs(15)).await;
    assert!(String::from_utf8_lossy(&got.body).contains("\"n\":1"));
    successes("the replayed delivery to succeed", &pool, 2).await;
    let again = replay();
    assert!(again.contains("replayed 0 dead letters"), "{again}");
    let bad = std::process::Command::new(herald_tests::bin_dir().join("herald-ledger"))
        .args(["dead-letters", "replay", "--queue", "elsewhere"])
        .env_clear()
        .envs(&p.env)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let refusal = String::from_utf8_lossy(&bad.stderr);
    assert!(
        refusal.contains("'elsewhere'") && refusal.contains("[possible values: work, ledger]"),
        "{refusal}"
    );
}
