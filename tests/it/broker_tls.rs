//! `amqps://`: Herald's own AMQP client over TLS, against the real RabbitMQ behind a TLS front
//! whose certificate a test CA signed (RabbitMQ here listens in plain TCP only).
//!
//! Publishing and consuming work whole over TLS (a large message spans TLS records and AMQP
//! frames); a broker certificate no trusted root vouches for is refused with the reason; and
//! the three services run over `amqps://` with the CA given by `SSL_CERT_FILE`, as an operator
//! would point them at a private CA.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use herald_broker::Outgoing;
use herald_broker::client::{ConfirmConnection, ConsumerConnection, Endpoint};
use herald_proto::v1 as pb;
use herald_tests::egress::TestCa;
use herald_tests::procs::Processes;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{authed, shared_queue};

fn broker() -> SocketAddr {
    "127.0.0.1:5672".parse().unwrap()
}

fn tls_endpoint(port: u16, ca: Option<&TestCa>) -> Endpoint {
    let mut e = Endpoint::parse(&format!("amqps://guest:guest@localhost:{port}/%2f")).unwrap();
    assert!(e.tls);
    if let Some(ca) = ca {
        e.extra_roots.push(ca.ca_der.clone());
    }
    e
}

#[tokio::test]
async fn the_own_client_publishes_and_consumes_over_tls() {
    let ca = TestCa::new();
    let (port, sessions) = ca.tls_front(broker()).await;
    let endpoint = tls_endpoint(port, Some(&ca));
    let (_conn, _ch, q) = shared_queue("tls").await;

    let big: Vec<u8> = (0..400_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let bodies: Vec<Vec<u8>> = (0..49)
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .chain([big])
        .collect();
    let messages: Vec<Outgoing> = bodies
        .iter()
        .map(|b| Outgoing {
            exchange: String::new(),
            routing_key: q.clone(),
            body: b.clone(),
            headers: vec![("traceparent".into(), "00-aa-bb-01".into())],
        })
        .collect();
    let publisher = ConfirmConnection::open(&endpoint, "herald-tests-tls-publish", 2)
        .await
        .unwrap();
    publisher.publish(0, &messages[..25]).await.unwrap();
    publisher.publish(1, &messages[25..]).await.unwrap();
    publisher.close().await;

    let (consumer, mut rx) =
        ConsumerConnection::open(&endpoint, "herald-tests-tls-consume", &q, 100)
            .await
            .unwrap();
    let mut received = Vec::new();
    for _ in 0..bodies.len() {
        let d = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a delivery in time")
            .expect("the consumer is running");
        assert_eq!(
            d.headers,
            [("traceparent".to_owned(), "00-aa-bb-01".to_owned())]
        );
        received.push(d);
    }
    let got: Vec<Vec<u8>> = received.iter().map(|d| d.body.to_vec()).collect();
    assert_eq!(got, bodies, "every message whole and in order");
    consumer.ack(received.last().unwrap().tag, true).unwrap();
    consumer.flushed().await.unwrap();
    consumer.close().await;
    assert_eq!(
        sessions.load(Ordering::SeqCst),
        2,
        "both connections went through the TLS front"
    );
}

#[tokio::test]
async fn a_broker_certificate_no_root_vouches_for_is_refused_with_the_reason() {
    let ca = TestCa::new();
    let (port, sessions) = ca.tls_front(broker()).await;
    let e = ConfirmConnection::open(&tls_endpoint(port, None), "herald-tests-tls-refused", 1)
        .await
        .err()
        .expect("an unknown CA must be refused");
    let text = e.to_string();
    assert!(text.contains("TLS"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(
        text.contains(&format!("localhost:{port}")),
        "names the broker: {text}"
    );
    assert_eq!(sessions.load(Ordering::SeqCst), 0);
}

/// Ingest, the ledger and a dispatcher (real processes) on `amqps://`, trusting the test CA
/// through `SSL_CERT_FILE`: an event is delivered and its success recorded.
#[tokio::test]
async fn the_services_run_over_amqps() {
    let ca = TestCa::new();
    let (port, sessions) = ca.tls_front(broker()).await;
    let ca_file = ca.write_ca("herald-amqps-ca");
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let p = Processes::start(
        1,
        &[
            ("HERALD_AMQP_URL", url.as_str()),
            ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        ],
    )
    .await;
    let mut rx = Receiver::start(|_, _| Reply::status(200)).await;
    let key = p.tenant_key("amqps").await;
    p.endpoint(&key, rx.url("/tls")).await;
    let mut events = pb::events_client::EventsClient::new(Processes::channel(p.ingest_addr).await);
    let published = events
        .publish(authed(
            pb::PublishRequest {
                event_type: "order.created".into(),
                payload: br#"{"over":"tls"}"#.to_vec(),
                idempotency_key: None,
                occurred_at: None,
            },
            &key,
        ))
        .await
        .expect("publish over amqps")
        .into_inner();
    let got = rx.next(Duration::from_secs(20)).await;
    assert_eq!(&got.body[..], br#"{"over":"tls"}"#);

    let pool = p.pool().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM deliveries WHERE event_id = $1::uuid")
                .bind(&published.event_id)
                .fetch_optional(&pool)
                .await
                .unwrap();
        if status.as_deref() == Some("success") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ledger recorded {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every connection went through the TLS front, at least: ingest's, the ledger's and the
    // dispatcher's publishers (a lapin control connection and the own client's publishing one
    // each: 6), and the dispatcher's, the record and the dead-letter consumers (a short-lived
    // lapin connection declaring the topology and the own client's consuming one each: 6).
    // With lapin for everything it would be 6 in all.
    assert!(
        sessions.load(Ordering::SeqCst) >= 12,
        "{} TLS sessions",
        sessions.load(Ordering::SeqCst)
    );
    let _ = std::fs::remove_file(ca_file);
}
