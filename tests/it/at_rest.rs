//! Endpoint secrets are encrypted at rest and the main key can be rotated: the database holds
//! only ciphertext and key ids, deliveries still sign with the right secret, `herald-ingest
//! secrets reencrypt` moves every secret (current and rotated-out) to a new key, after which
//! the old key can be dropped; a service missing a needed key says which one, without secrets.

use std::process::Command;
use std::time::Duration;

use herald_core::signing::{Scheme, Secret, verify};
use herald_proto::v1 as pb;
use herald_tests::procs::{Processes, Role};
use herald_tests::receiver::Receiver;
use herald_tests::{authed, bin_dir};

const OLD: &str = "old:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NEW: &str = "new:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// Runs `herald-ingest <args>` against the installation's schema with `key`.
fn ingest_command(p: &Processes, key: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin_dir().join("herald-ingest"))
        .args(args)
        .envs(&p.env)
        .env("HERALD_SECRET_KEY", key)
        .env("HERALD_METRICS_ADDR", "off")
        .output()
        .expect("run herald-ingest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn stored(p: &Processes) -> (String, Option<String>, Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT secret, secret_key_id, previous_secret, previous_secret_key_id FROM endpoints",
    )
    .fetch_one(&p.pool().await)
    .await
    .unwrap()
}

async fn publish_and_verify(p: &Processes, key: &str, rx: &mut Receiver, secret: &str) {
    let mut events = pb::events_client::EventsClient::new(Processes::channel(p.ingest_addr).await);
    events
        .publish(authed(
            pb::PublishRequest {
                event_type: "key.rotated".into(),
                payload: b"{\"n\":1}".to_vec(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("publish");
    let got = rx.next(Duration::from_secs(15)).await;
    let secret = Secret::parse(secret, Scheme::Standard).unwrap();
    let lookup = |n: &str| got.header(n);
    verify(
        Scheme::Standard,
        &secret,
        "Webhook-",
        &lookup,
        &got.body,
        chrono::Utc::now().timestamp(),
        60,
    )
    .expect("delivery signed with the endpoint's current secret");
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_the_main_key_rotates() {
    let mut p = Processes::start(1, &[("HERALD_SECRET_KEY", OLD)]).await;
    let key = p.tenant_key("at-rest").await;
    let mut rx = Receiver::ok().await;
    let mut endpoints =
        pb::endpoints_client::EndpointsClient::new(Processes::channel(p.ingest_addr).await);
    let given = "whsec_dGhpcy1pcy1hLWdpdmVuLXNpZ25pbmctc2VjcmV0IQ==";
    let created = endpoints
        .create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: rx.url("/hook"),
                event_types: vec!["*".into()],
                secret: Some(given.into()),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    let id = created.endpoint.unwrap().id;
    let rotated = endpoints
        .rotate_secret(authed(
            pb::RotateSecretRequest {
                endpoint_id: id.clone(),
                grace_period_seconds: Some(3600),
                secret: None,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;

    // Only ciphertext and key ids in the database.
    let (secret, secret_key, previous, previous_key) = stored(&p).await;
    for (column, plain) in [
        (&secret, &rotated),
        (previous.as_ref().unwrap(), &given.into()),
    ] {
        assert!(
            !column.contains(plain.as_str()),
            "a secret is stored in clear"
        );
        assert!(!column.contains(plain.trim_start_matches("whsec_")));
    }
    assert_eq!(secret_key.as_deref(), Some("old"));
    assert_eq!(previous_key.as_deref(), Some("old"));
    publish_and_verify(&p, &key, &mut rx, &rotated).await;

    // A key ring without the key in use is refused by name, never with secret material.
    let (ok, text) = ingest_command(&p, NEW, &["secrets", "reencrypt"]);
    assert!(!ok, "reencrypt without the old key must fail: {text}");
    assert!(text.contains("\"old\""), "{text}");
    assert!(!text.contains(rotated.as_str()) && !text.contains(given));

    // Rotate the main key: new first, old after it; reencrypt; status shows only the new key.
    let both = format!("{NEW},{OLD}");
    let (ok, text) = ingest_command(&p, &both, &["secrets", "reencrypt"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("re-encrypted 2 secrets of 1 endpoints with key new"),
        "{text}"
    );
    let (ok, text) = ingest_command(&p, &both, &["secrets", "reencrypt"]);
    assert!(ok && text.contains("re-encrypted 0 secrets"), "{text}");
    let (ok, status) = ingest_command(&p, NEW, &["secrets", "status"]);
    assert!(ok, "{status}");
    assert!(status.contains("current key: new"), "{status}");
    assert!(
        !status.contains("needs reencrypt") && !status.contains("in clear"),
        "{status}"
    );
    let (_, secret_key, _, previous_key) = stored(&p).await;
    assert_eq!(
        (secret_key.as_deref(), previous_key.as_deref()),
        (Some("new"), Some("new"))
    );

    // The services restarted with the new key alone still sign with the same secrets.
    p.env.insert("HERALD_SECRET_KEY".into(), NEW.into());
    for role in [Role::Ingest, Role::Ledger, Role::Dispatcher(0)] {
        p.kill(role);
        p.spawn(role);
    }
    p.wait_for(p.ingest_addr).await;
    publish_and_verify(&p, &key, &mut rx, &rotated).await;
    let (ok, text) = ingest_command(&p, "", &["secrets", "reencrypt"]);
    assert!(!ok && text.contains("no key to encrypt with"), "{text}");
}
