//! RabbitMQ, Redis and PostgreSQL stopped mid-run and started again. What each service does
//! meanwhile (and what these tests check):
//! - broker down: ingest answers UNAVAILABLE to every publish (nothing half-accepted);
//!   dispatchers and the ledger reconnect with backoff once it is back.
//! - Redis down: a publish with an idempotency key is refused (UNAVAILABLE) rather than risk a
//!   duplicate; without a key it is accepted and delivered.
//! - PostgreSQL down: ingest answers UNAVAILABLE once its caches expire; dispatchers hold their
//!   tasks; the ledger holds its batch and leaves records in its queue until Postgres is back.
//!
//! Each outage is undone by a guard, even when the test fails.

use std::process::Command;
use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::authed;
use herald_tests::procs::Processes;

use crate::load::{SERIAL, Tally, assert_complete, publish_all, scale, setup};

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

async fn wait_port(port: u16, up: bool, within: Duration) {
    let deadline = Instant::now() + within;
    while port_open(port) != up {
        assert!(Instant::now() < deadline, "port {port} did not turn {up}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a stopped service again when dropped (also on panic).
struct Restore(&'static str);

impl Restore {
    fn start(&self) {
        let services = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local/services.sh");
        if self.0 == "rabbitmq" {
            run("rabbitmqctl", &["start_app"]);
        }
        run(services, &["start"]);
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.start();
    }
}

async fn publish_once(
    p: &Processes,
    key: &str,
    idempotency: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut c = pb::events_client::EventsClient::new(Processes::channel(p.ingest_addr).await);
    c.publish(authed(
        pb::PublishRequest {
            event_type: "chaos.probe".into(),
            payload: b"{}".to_vec(),
            idempotency_key: idempotency.map(str::to_owned),
            occurred_at: None,
        },
        key,
    ))
    .await
    .map(|_| ())
}

#[tokio::test]
async fn broker_outage_refuses_publishes_then_everything_is_delivered() {
    let _serial = SERIAL.lock().await;
    let p = Processes::start(1, &[]).await;
    let s = setup(&p, 2).await;
    let tally = Tally::start(s.rx);
    let n = 300 * scale();
    let mut published = publish_all(
        p.ingest_addr,
        &s.key,
        "a",
        n / 2,
        Duration::ZERO,
        Duration::from_secs(120),
    )
    .await;

    let guard = Restore("rabbitmq");
    assert!(
        run("rabbitmqctl", &["stop_app"]),
        "rabbitmqctl stop_app failed"
    );
    wait_port(5672, false, Duration::from_secs(30)).await;
    let e = publish_once(&p, &s.key, None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("broker"), "{}", e.message());
    // Keep publishing through the outage: the loop retries until the broker is back.
    let rest = {
        let (addr, key) = (p.ingest_addr, s.key.clone());
        tokio::spawn(async move {
            publish_all(
                addr,
                &key,
                "b",
                n / 2,
                Duration::ZERO,
                Duration::from_secs(180),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    guard.start();
    drop(guard);
    wait_port(5672, true, Duration::from_secs(60)).await;
    let second = rest.await.unwrap();
    assert!(
        second.unavailable + second.transport > 0,
        "no publish saw the outage"
    );
    published.unavailable += second.unavailable;
    published.transport += second.transport;
    published.accepted.extend(second.accepted);
    assert_complete(
        &p,
        &published,
        s.endpoints,
        &tally,
        Duration::from_secs(120),
        false,
    )
    .await;
}

#[tokio::test]
async fn redis_outage_refuses_idempotent_publishes_and_delivers_the_rest() {
    let _serial = SERIAL.lock().await;
    let p = Processes::start(1, &[]).await;
    let s = setup(&p, 2).await;
    let tally = Tally::start(s.rx);
    let guard = Restore("redis");
    assert!(run("redis-cli", &["shutdown", "nosave"]) || !port_open(6379));
    wait_port(6379, false, Duration::from_secs(15)).await;
    let e = publish_once(&p, &s.key, Some("during-outage"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("idempotency"), "{}", e.message());
    // Without a key it goes through, and is delivered while Redis is still down.
    publish_once(&p, &s.key, None)
        .await
        .expect("publish without a key while redis is down");
    let deadline = Instant::now() + Duration::from_secs(15);
    while tally.distinct() < s.endpoints {
        assert!(
            Instant::now() < deadline,
            "nothing delivered while redis was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    guard.start();
    drop(guard);
    wait_port(6379, true, Duration::from_secs(30)).await;
    let mut expected = publish_all(
        p.ingest_addr,
        &s.key,
        "a",
        100 * scale(),
        Duration::ZERO,
        Duration::from_secs(120),
    )
    .await;
    // The keyless probe is one more event in the ledger.
    let pool = p.pool().await;
    let probe: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM events WHERE event_type = 'chaos.probe'")
            .fetch_one(&pool)
            .await
            .unwrap();
    expected.accepted.insert("probe".into(), probe.to_string());
    assert_complete(
        &p,
        &expected,
        s.endpoints,
        &tally,
        Duration::from_secs(60),
        false,
    )
    .await;
}

#[tokio::test]
async fn postgres_outage_holds_work_and_the_ledger_catches_up() {
    let _serial = SERIAL.lock().await;
    let p = Processes::start(1, &[]).await;
    let s = setup(&p, 2).await;
    let tally = Tally::start(s.rx);
    let n = 200 * scale();
    let before = publish_all(
        p.ingest_addr,
        &s.key,
        "a",
        n,
        Duration::ZERO,
        Duration::from_secs(120),
    )
    .await;
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .max()
        })
        .expect("a local postgresql cluster");
    let guard = Restore("postgres");
    assert!(
        run("pg_ctlcluster", &[&version, "main", "stop", "-m", "fast"]),
        "pg_ctlcluster stop failed"
    );
    wait_port(5432, false, Duration::from_secs(30)).await;
    // While the database is down: ingest cannot load subscriptions (after its short caches),
    // so publishing is refused as UNAVAILABLE rather than accepted blind.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = publish_once(&p, &s.key, None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        run("pg_ctlcluster", &[&version, "main", "start"]),
        "pg_ctlcluster start failed"
    );
    drop(guard);
    wait_port(5432, true, Duration::from_secs(60)).await;
    assert_complete(
        &p,
        &before,
        s.endpoints,
        &tally,
        Duration::from_secs(120),
        false,
    )
    .await;
}
