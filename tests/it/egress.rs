//! Outbound TLS and the egress proxy, with real dispatcher processes: TLS is verified (a
//! receiver whose certificate comes from an unknown CA fails with a certificate error, and
//! succeeds once `HERALD_CA_CERTS` trusts that CA); with `HERALD_EGRESS_PROXY` every delivery
//! goes through the proxy (CONNECT for https, absolute form for http) and arrives signed; a bad
//! proxy or CA setting stops the dispatcher with a precise message that never shows the
//! proxy's password.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::egress::{Proxy, TestCa};
use herald_tests::procs::{Processes, Role};
use herald_tests::receiver::Receiver;
use herald_tests::{authed, bin_dir};

async fn publish(p: &Processes, key: &str) {
    let mut events = pb::events_client::EventsClient::new(Processes::channel(p.ingest_addr).await);
    events
        .publish(authed(
            pb::PublishRequest {
                event_type: "egress.test".into(),
                payload: b"{}".to_vec(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("publish");
}

async fn until<F: FnMut() -> bool>(what: &str, within: Duration, mut ok: F) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tls_is_verified_and_extra_ca_certificates_are_trusted() {
    let ca = TestCa::new();
    let (port, hits) = ca.receiver().await;
    let mut p = Processes::start(1, &[("HERALD_RETRY_SCHEDULE", "300ms,600ms,1s,2s")]).await;
    let key = p.tenant_key("tls").await;
    p.endpoint(&key, format!("https://localhost:{port}/hook"))
        .await;
    publish(&p, &key).await;

    // Unknown CA: the first attempt fails on the certificate, nothing reaches the receiver.
    let pool = p.pool().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let error = loop {
        let e: Option<String> =
            sqlx::query_scalar("SELECT error FROM attempts ORDER BY started_at LIMIT 1")
                .fetch_optional(&pool)
                .await
                .unwrap()
                .flatten();
        if let Some(e) = e {
            break e;
        }
        assert!(Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.to_lowercase().contains("certificate"),
        "expected a certificate error, got {error:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Trust the CA: the retry succeeds.
    let ca_file = ca.write_ca("herald-test-ca");
    p.env
        .insert("HERALD_CA_CERTS".into(), ca_file.display().to_string());
    p.kill(Role::Dispatcher(0));
    p.spawn(Role::Dispatcher(0));
    until("the retried delivery", Duration::from_secs(20), || {
        hits.load(Ordering::SeqCst) >= 1
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: String = sqlx::query_scalar("SELECT status FROM deliveries")
            .fetch_one(&pool)
            .await
            .unwrap();
        if status == "success" {
            break;
        }
        assert!(Instant::now() < deadline, "delivery is {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(ca_file);
}

#[tokio::test]
async fn every_delivery_goes_through_the_egress_proxy() {
    let ca = TestCa::new();
    let ca_file = ca.write_ca("herald-proxy-ca");
    let (tls_port, tls_hits) = ca.receiver().await;
    let mut plain = Receiver::ok().await;
    let proxy = Proxy::start().await;
    let proxy_url = format!("http://{}", proxy.addr);
    let ca_path = ca_file.display().to_string();
    let p = Processes::start(
        1,
        &[
            ("HERALD_EGRESS_PROXY", proxy_url.as_str()),
            ("HERALD_CA_CERTS", ca_path.as_str()),
        ],
    )
    .await;
    let key = p.tenant_key("proxied").await;
    p.endpoint(&key, plain.url("/plain")).await;
    p.endpoint(&key, format!("https://localhost:{tls_port}/tls"))
        .await;
    publish(&p, &key).await;

    let got = plain.next(Duration::from_secs(15)).await;
    assert_eq!(got.path, "/plain");
    assert!(got.header("webhook-signature").is_some());
    until("the https delivery", Duration::from_secs(15), || {
        tls_hits.load(Ordering::SeqCst) >= 1
    })
    .await;
    let targets = proxy.targets();
    let plain_authority = plain
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(targets.contains(&plain_authority), "{targets:?}");
    assert!(
        targets.contains(&format!("localhost:{tls_port}")),
        "{targets:?}"
    );
    let _ = std::fs::remove_file(ca_file);
}

#[test]
fn bad_egress_settings_stop_the_dispatcher_with_a_precise_message() {
    let run = |vars: &[(&str, &str)]| {
        let out = Command::new(bin_dir().join("herald-dispatcher"))
            .envs(vars.iter().copied())
            .env("HERALD_METRICS_ADDR", "off")
            .output()
            .expect("run herald-dispatcher");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&[("HERALD_EGRESS_PROXY", "ftp://user:hunter2@proxy:21")]);
    assert!(
        e.contains("HERALD_EGRESS_PROXY") && e.contains("scheme \"ftp\" is not supported"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "the proxy password leaked: {e}");
    let e = run(&[("HERALD_CA_CERTS", "/nonexistent/ca.pem")]);
    assert!(
        e.contains("HERALD_CA_CERTS") && e.contains("cannot read"),
        "{e}"
    );
}
