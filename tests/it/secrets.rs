//! Nothing secret reaches the logs: the services run with every log at trace level (their own,
//! sqlx's, lapin's, hyper's, reqwest's), through key creation, endpoint creation with a given
//! secret, publishing, delivery, a test send, a rotation and a failing attempt; then no API key,
//! signing secret (or its key bytes) or signature value may appear in any line they wrote.

use std::time::Duration;

use base64::Engine;
use herald_proto::v1 as pb;
use herald_tests::procs::Processes;
use herald_tests::receiver::{Receiver, Reply};
use herald_tests::{ADMIN_TOKEN, authed};

#[tokio::test]
async fn no_secret_api_key_or_signature_is_ever_logged() {
    let dir = std::env::temp_dir().join(format!("herald-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_string_lossy().into_owned();
    let p = Processes::start(
        1,
        &[
            ("HERALD_LOG", "trace"),
            ("HERALD_TEST_LOG_DIR", dir_s.as_str()),
            ("HERALD_RETRY_SCHEDULE", "100ms"),
        ],
    )
    .await;
    let channel = Processes::channel(p.ingest_addr).await;
    let key = p.tenant_key("secretive").await;
    let mut rx = Receiver::start(|path, _| {
        if path == "/fail" {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let given = "whsec_c2VjcmV0LWtleS1ieXRlcy10aGF0LW11c3Qtbm90LWxlYWsh";
    let mut endpoints = pb::endpoints_client::EndpointsClient::new(channel.clone());
    let ok = endpoints
        .create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: rx.url("/ok"),
                event_types: vec!["*".into()],
                secret: Some(given.into()),
                headers: [(
                    "X-Receiver-Token".to_owned(),
                    "tok_custom_header_value".to_owned(),
                )]
                .into(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    let failing = endpoints
        .create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: rx.url("/fail"),
                event_types: vec!["*".into()],
                signing_scheme: pb::SigningScheme::Hex as i32,
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut events = pb::events_client::EventsClient::new(channel.clone());
    events
        .publish(authed(
            pb::PublishRequest {
                event_type: "secret.flow".into(),
                payload: b"{\"x\":1}".to_vec(),
                idempotency_key: Some("idem-1".into()),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap();
    let ok_id = ok.endpoint.as_ref().unwrap().id.clone();
    endpoints
        .send_test(authed(
            pb::SendTestRequest {
                endpoint_id: ok_id.clone(),
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap();
    let rotated = endpoints
        .rotate_secret(authed(
            pb::RotateSecretRequest {
                endpoint_id: ok_id,
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    // A wrong key, so the failure paths log too.
    let _ = events
        .publish(authed(
            pb::PublishRequest::default(),
            "hk_wrong-key-value-0123456789",
        ))
        .await;
    // Collect what the receiver saw: the signature values sent.
    let mut signatures = Vec::new();
    for r in rx.drain_for(Duration::from_secs(3)).await {
        // Every scheme here uses the `Webhook-` prefix, so one header name covers them.
        if let Some(v) = r.header("webhook-signature") {
            signatures.extend(
                v.split([' ', ',', '='])
                    .filter(|part| part.len() >= 20)
                    .map(str::to_owned),
            );
        }
    }
    assert!(!signatures.is_empty(), "no signed delivery arrived");
    drop(p); // flush and stop the processes

    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(given.trim_start_matches("whsec_"))
        .unwrap();
    let mut needles: Vec<(String, String)> = vec![
        ("api key".into(), key.clone()),
        (
            "api key body".into(),
            key.trim_start_matches("hk_").to_owned(),
        ),
        ("wrong api key".into(), "wrong-key-value-0123456789".into()),
        ("admin token".into(), ADMIN_TOKEN.into()),
        ("given secret".into(), given.into()),
        (
            "given secret body".into(),
            given.trim_start_matches("whsec_").into(),
        ),
        (
            "secret key bytes".into(),
            String::from_utf8_lossy(&key_bytes).into_owned(),
        ),
        ("generated secret".into(), failing.secret.clone()),
        ("rotated secret".into(), rotated.clone()),
        (
            "custom header value".into(),
            "tok_custom_header_value".into(),
        ),
    ];
    needles.extend(signatures.into_iter().map(|s| ("signature".into(), s)));
    let mut lines = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines += text.lines().count();
        for (what, needle) in &needles {
            if let Some(line) = text.lines().find(|l| l.contains(needle.as_str())) {
                panic!("{what} found in the logs: {line}");
            }
        }
    }
    assert!(lines > 100, "trace logging produced only {lines} lines");
    let _ = std::fs::remove_dir_all(&dir);
}
