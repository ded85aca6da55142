//! Third-party verifiers accept Herald's signatures: the Python `standardwebhooks` package for
//! the `standard` scheme and Stripe's own verifier for the `timestamped` scheme.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use herald_proto::v1 as pb;
use herald_tests::{Herald, Options};

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_stripe_style_test_secret";

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: `make test` creates it (python3 -m venv .venv && pip install -r tests/interop/requirements.txt)",
        venv.display()
    );
    venv
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn python_verifiers_accept_standard_and_stripe_style_signatures() {
    let herald = Herald::start(Options {
        retry_schedule: "".into(),
        ..Default::default()
    })
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/receiver.py");
    let mut child = Command::new(python())
        .arg(script)
        .args([
            "--standard-secret",
            STANDARD_SECRET,
            "--stripe-secret",
            STRIPE_SECRET,
            "--stripe-header",
            "Stripe-Signature",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python receiver");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _guard = Kill(child);
    let port: u16 = line.trim().parse().expect("receiver prints its port");

    let tenant = herald.tenant_with(Some("Stripe-"), None).await;
    herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                url: format!("http://127.0.0.1:{port}/standard"),
                event_types: vec!["*".into()],
                secret: Some(STANDARD_SECRET.into()),
                ..Default::default()
            },
        )
        .await;
    herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                url: format!("http://127.0.0.1:{port}/stripe"),
                event_types: vec!["*".into()],
                signing_scheme: pb::SigningScheme::Timestamped as i32,
                secret: Some(STRIPE_SECRET.into()),
                ..Default::default()
            },
        )
        .await;
    let payloads: [&[u8]; 3] = [
        b"{\"a\":1}",
        "{\"text\": \"caf\u{e9} \u{2603}\", \"n\": [1, 2]}".as_bytes(),
        b"{ }",
    ];
    let mut event_ids = Vec::new();
    for p in payloads {
        event_ids.push(herald.publish(&tenant, "invoice.paid", p).await.event_id);
    }
    // Each verdict lands in the ledger: 204 = verified, 401 = rejected (no retries configured).
    for id in &event_ids {
        for d in herald.wait_deliveries(&tenant, id, 2).await {
            assert_eq!(
                d.response_status, 204,
                "delivery {} to {} was rejected by the verifier",
                d.id, d.endpoint_id
            );
            assert_eq!(d.status, pb::DeliveryStatus::Success as i32);
        }
    }
    let body = results(port).await;
    assert!(
        body.contains("\"standard_ok\": 3") && body.contains("\"stripe_ok\": 3"),
        "{body}"
    );
    assert!(
        body.contains("\"standard_bad\": 0") && body.contains("\"stripe_bad\": 0"),
        "{body}"
    );
    herald.stop().await;
}

async fn results(port: u16) -> String {
    let (_, body) = herald_tests::http_get(([127, 0, 0, 1], port).into(), "/results").await;
    body
}

/// Starts the Python verifier receiver with these standard secrets; returns it and its port.
fn python_receiver(standard: &[&str]) -> (Kill, u16) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/receiver.py");
    let mut cmd = Command::new(python());
    cmd.arg(script);
    for s in standard {
        cmd.args(["--standard-secret", s]);
    }
    let mut child = cmd
        .args([
            "--stripe-secret",
            STRIPE_SECRET,
            "--stripe-header",
            "Stripe-Signature",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python receiver");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("receiver prints its port");
    (Kill(child), port)
}

#[tokio::test]
async fn standardwebhooks_verifies_with_either_secret_during_rotation_and_only_the_new_after() {
    let herald = Herald::start(Options {
        retry_schedule: "".into(),
        ..Default::default()
    })
    .await;
    let tenant = herald.tenant().await;
    let (ep, old) = herald
        .create_endpoint(
            &tenant,
            pb::CreateEndpointRequest {
                url: "http://127.0.0.1:9/placeholder".into(),
                event_types: vec!["*".into()],
                ..Default::default()
            },
        )
        .await;
    let mut endpoints = herald.endpoints().await;
    let new = endpoints
        .rotate_secret(herald_tests::authed(
            pb::RotateSecretRequest {
                endpoint_id: ep.id.clone(),
                grace_period_seconds: Some(3600),
                secret: None,
            },
            &tenant.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    // /standard/0 verifies with the old secret, /standard/1 with the new one.
    let (_guard, port) = python_receiver(&[&old, &new]);
    let send_to = |path: &'static str| {
        let (herald, tenant, id) = (&herald, &tenant, ep.id.clone());
        async move {
            herald
                .endpoints()
                .await
                .update_endpoint(herald_tests::authed(
                    pb::UpdateEndpointRequest {
                        id,
                        url: Some(format!("http://127.0.0.1:{port}{path}")),
                        ..Default::default()
                    },
                    &tenant.api_key,
                ))
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(300)).await; // endpoint cache
            let p = herald.publish(tenant, "rotation.check", b"{\"x\":1}").await;
            let d = herald.wait_deliveries(tenant, &p.event_id, 1).await;
            d[0].response_status
        }
    };
    assert_eq!(
        send_to("/standard/0").await,
        204,
        "old secret verifies during grace"
    );
    assert_eq!(
        send_to("/standard/1").await,
        204,
        "new secret verifies during grace"
    );
    // End the grace period: only the newest secret signs.
    let newest = endpoints
        .rotate_secret(herald_tests::authed(
            pb::RotateSecretRequest {
                endpoint_id: ep.id.clone(),
                grace_period_seconds: Some(0),
                secret: None,
            },
            &tenant.api_key,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert_ne!(newest, new);
    assert_eq!(
        send_to("/standard/1").await,
        401,
        "a rotated-out secret no longer verifies"
    );
    herald.stop().await;
}
