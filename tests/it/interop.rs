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
