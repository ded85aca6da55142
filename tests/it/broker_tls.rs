//! `amqps://`: Herald against the real RabbitMQ behind a TLS front whose certificate a test CA
//! signed (RabbitMQ here listens in plain TCP only).
//!
//! Herald reaches the broker through lapin, whose rustls connector (the platform verifier of
//! `rustls-platform-verifier`, on Linux the roots `rustls-native-certs` loads) trusts the
//! system's roots, or only the certificates in `SSL_CERT_FILE` / `SSL_CERT_DIR` when those are
//! set, read afresh for every connection. So an operator points the services at a private CA
//! with `SSL_CERT_FILE`, and that is how these tests run them: as processes, since setting the
//! variable inside this test process would change it for every other test. What must hold:
//! the services publish and consume over TLS (a large event spans TLS records and AMQP frames),
//! and a broker certificate no trusted root vouches for is refused, with the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_broker::{Consumer, Publisher, QueueType, Topology};
use herald_proto::v1 as pb;
use herald_tests::egress::TestCa;
use herald_tests::procs::Processes;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{ADMIN_TOKEN, DATABASE_URL, REDIS_URL, SECRET_KEY, authed, bin_dir, free_addr};

use crate::broker::Cleanup;

fn broker() -> SocketAddr {
    "127.0.0.1:5672".parse().unwrap()
}

fn amqps_url(port: u16) -> String {
    format!("amqps://guest:guest@localhost:{port}/%2f")
}

/// A file removed when the test ends, passed or failed.
struct TempFile(PathBuf);

impl TempFile {
    /// The test CA's certificate as a PEM file (what `SSL_CERT_FILE` points at).
    fn ca(ca: &TestCa, label: &str) -> Self {
        Self(ca.write_ca(&format!("herald-{label}-{}", uuid::Uuid::new_v4().simple())))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Ingest, the ledger and a dispatcher (real processes) on `amqps://`, trusting the test CA
/// through `SSL_CERT_FILE`: a small and a large event are delivered whole and their success is
/// recorded, so every service published and consumed over TLS.
#[tokio::test]
async fn the_services_run_over_amqps_trusting_the_ca_in_ssl_cert_file() {
    let ca = TestCa::new();
    let (port, sessions) = ca.tls_front(broker()).await;
    let ca_file = TempFile::ca(&ca, "amqps-ca");
    let url = amqps_url(port);
    let p = Processes::start(
        1,
        &[
            ("HERALD_AMQP_URL", url.as_str()),
            ("SSL_CERT_FILE", ca_file.path()),
        ],
    )
    .await;
    let mut rx = Receiver::start(|_, _| Reply::status(200)).await;
    let key = p.tenant_key("amqps").await;
    p.endpoint(&key, rx.url("/tls")).await;
    let mut events = pb::events_client::EventsClient::new(Processes::channel(p.ingest_addr).await);
    // Larger than an AMQP frame (128 KiB) and than a TLS record (16 KiB), under the payload limit.
    let blob: String = (0..200_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let large = format!(r#"{{"blob":"{blob}"}}"#).into_bytes();
    let small = br#"{"over":"tls"}"#.to_vec();
    let mut event_ids = Vec::new();
    for payload in [&small, &large] {
        let published = events
            .publish(authed(
                pb::PublishRequest {
                    event_type: "order.created".into(),
                    payload: payload.clone(),
                    idempotency_key: None,
                    occurred_at: None,
                },
                &key,
            ))
            .await
            .expect("publish over amqps")
            .into_inner();
        event_ids.push(published.event_id);
    }
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    for _ in 0..2 {
        bodies.push(rx.next(Duration::from_secs(20)).await.body.to_vec());
    }
    bodies.sort_by_key(Vec::len);
    assert!(bodies[0] == small, "the small event arrived whole");
    assert!(bodies[1] == large, "the large event arrived whole");

    let pool = p.pool().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for event_id in &event_ids {
        loop {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM deliveries WHERE event_id = $1::uuid")
                    .bind(event_id)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            if status.as_deref() == Some("success") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the ledger recorded {status:?} for {event_id}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The broker is reachable only through the front: at least the publishers of ingest, the
    // ledger and the dispatcher, and the consumers of the dispatcher, the ledger's records and
    // its dead letters came through it.
    let n = sessions.load(Ordering::SeqCst);
    assert!(n >= 6, "{n} TLS sessions");
    pool.close().await;
}

/// In this process no root vouches for the test CA (`SSL_CERT_FILE` is not set to it): Herald's
/// publisher and consumer refuse the broker's certificate, and no TLS session is established.
#[tokio::test]
async fn a_broker_certificate_no_trusted_root_vouches_for_is_refused_with_the_reason() {
    let ca = TestCa::new();
    let (port, sessions) = ca.tls_front(broker()).await;
    let url = amqps_url(port);
    let topology = Topology::new(
        format!("herald-tls-{}", uuid::Uuid::new_v4().simple()),
        QueueType::Classic,
    );
    let err = Publisher::connect(&url, "herald-tests-tls-refused", topology, 1)
        .await
        .err()
        .expect("an unknown CA must be refused");
    assert!(err.is_unavailable(), "expected unavailable, got {err:?}");
    let why = err.to_string();
    assert!(
        why.contains("invalid peer certificate: UnknownIssuer"),
        "{why}"
    );

    let err = Consumer::open(&url, "herald-tests-tls-refused", None, "any", 1)
        .await
        .err()
        .expect("an unknown CA must be refused");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert_eq!(
        sessions.load(Ordering::SeqCst),
        0,
        "no TLS session accepted"
    );
}

/// A service whose `SSL_CERT_FILE` holds another CA than the one that signed the broker's
/// certificate does not start, and says why: the file replaces the trusted roots, it does not
/// widen them.
#[tokio::test]
async fn a_service_refuses_a_broker_its_ssl_cert_file_does_not_vouch_for() {
    let ca = TestCa::new();
    let (port, sessions) = ca.tls_front(broker()).await;
    let other = TempFile::ca(&TestCa::new(), "other-ca");
    let log = TempFile(std::env::temp_dir().join(format!(
        "herald-amqps-refused-{}.log",
        uuid::Uuid::new_v4().simple()
    )));
    let name = format!("p{:011x}", rand::random::<u64>() & 0xfff_ffff_ffff);
    let _cleanup = Cleanup(name.clone());
    let status = run_ingest(&name, &amqps_url(port), other.path(), &log.0).await;
    let output = std::fs::read_to_string(&log.0).unwrap_or_default();
    assert!(
        !status.success(),
        "ingest must not start on an untrusted broker: {output}"
    );
    // rustls says `BadSignature` here rather than `UnknownIssuer`: both test CAs bear the same
    // name, so the other CA is taken for the issuer and its signature does not match.
    assert!(output.contains("message broker unavailable"), "{output}");
    assert!(output.contains("invalid peer certificate"), "{output}");
    assert_eq!(
        sessions.load(Ordering::SeqCst),
        0,
        "no TLS session accepted"
    );
}

/// Runs `herald-ingest` on `amqp_url` trusting only `ca_file`, its output in `log`; returns its
/// exit status (killed after 30 s).
async fn run_ingest(
    name: &str,
    amqp_url: &str,
    ca_file: &str,
    log: &Path,
) -> std::process::ExitStatus {
    let path = bin_dir().join("herald-ingest");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first (make test does)",
        path.display()
    );
    let out = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(path)
        .envs([
            ("HERALD_DATABASE_URL", DATABASE_URL),
            ("HERALD_DATABASE_MAX_CONNECTIONS", "2"),
            ("HERALD_DATABASE_SCHEMA", name),
            ("HERALD_AMQP_URL", amqp_url),
            ("HERALD_AMQP_PREFIX", name),
            ("HERALD_REDIS_URL", REDIS_URL),
            ("HERALD_REDIS_PREFIX", name),
            ("HERALD_ADMIN_TOKEN", ADMIN_TOKEN),
            ("HERALD_SECRET_KEY", SECRET_KEY),
            ("HERALD_LOG", "warn"),
            ("SSL_CERT_FILE", ca_file),
        ])
        .env("HERALD_INGEST_ADDR", free_addr().to_string())
        .env("HERALD_METRICS_ADDR", free_addr().to_string())
        .env_remove("SSL_CERT_DIR")
        .stdout(out.try_clone().expect("log file"))
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn herald-ingest");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait for ingest") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait for ingest");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
