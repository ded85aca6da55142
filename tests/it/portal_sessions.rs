//! Portal links and sessions (issue 25): the operator or a key with `portal:create` makes a
//! single-use link; redeeming it once gives a session credential with the link's scopes, for
//! that tenant only, on ingest and the ledger; a used, expired, unknown or orphaned link, an
//! ended or expired session, are refused; a key's sessions never exceed its own scopes.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::{ADMIN_TOKEN, Herald, Options, authed};
use tonic::Code;
use tonic::transport::Channel;

use crate::page::endpoint;
use crate::scopes::{key_with, lacks};

async fn portal(herald: &Herald) -> pb::portal_client::PortalClient<Channel> {
    pb::portal_client::PortalClient::new(herald.ingest_channel().await)
}

fn session_for(tenant: &str) -> pb::CreatePortalSessionRequest {
    pb::CreatePortalSessionRequest {
        tenant_id: tenant.into(),
        ..Default::default()
    }
}

async fn create(
    herald: &Herald,
    req: pb::CreatePortalSessionRequest,
    bearer: &str,
) -> Result<pb::CreatePortalSessionResponse, tonic::Status> {
    portal(herald)
        .await
        .create_portal_session(authed(req, bearer))
        .await
        .map(|r| r.into_inner())
}

async fn redeem(
    herald: &Herald,
    token: &str,
) -> Result<pb::RedeemPortalLinkResponse, tonic::Status> {
    portal(herald)
        .await
        .redeem_portal_link(authed(pb::RedeemPortalLinkRequest {}, token))
        .await
        .map(|r| r.into_inner())
}

fn unauthenticated<T: std::fmt::Debug>(r: Result<T, tonic::Status>) {
    let e = r.expect_err("accepted");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

async fn list_endpoints(herald: &Herald, bearer: &str) -> Result<Vec<pb::Endpoint>, tonic::Status> {
    herald
        .endpoints()
        .await
        .list_endpoints(authed(pb::ListEndpointsRequest::default(), bearer))
        .await
        .map(|r| r.into_inner().endpoints)
}

async fn list_deliveries(
    herald: &Herald,
    bearer: &str,
) -> Result<pb::ListDeliveriesResponse, tonic::Status> {
    herald
        .deliveries()
        .await
        .list_deliveries(authed(pb::ListDeliveriesRequest::default(), bearer))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn an_operator_link_opens_one_session_for_its_tenant_only() {
    let options = Options {
        env: vec![(
            "HERALD_CONSOLE_URL".into(),
            "https://hooks.example.com/".into(),
        )],
        ..Default::default()
    };
    let herald = Herald::start(options).await;
    let a = herald.tenant().await;
    let b = herald.tenant().await;
    let (ep_a, _) = herald
        .create_endpoint(&a, endpoint("http://127.0.0.1:9/a".into(), &["*"]))
        .await;
    let (ep_b, _) = herald
        .create_endpoint(&b, endpoint("http://127.0.0.1:9/b".into(), &["*"]))
        .await;
    let mut req = session_for(&a.id);
    req.theme = Some(pb::PortalTheme {
        accent_color: "#FF8800".into(),
        name: "Acme webhooks".into(),
        mode: pb::ThemeMode::Dark as i32,
    });
    let link = create(&herald, req, ADMIN_TOKEN).await.unwrap();
    assert!(
        link.token.starts_with("hl_") && link.token.len() == 46,
        "{}",
        link.token
    );
    assert_eq!(
        link.url,
        format!("https://hooks.example.com/portal/open?token={}", link.token)
    );
    assert_eq!(link.ttl_seconds, 3600);
    assert_eq!(
        link.scopes,
        [
            "endpoints:read",
            "endpoints:write",
            "secrets:read",
            "event_types:read",
            "deliveries:read",
            "deliveries:resend"
        ]
    );
    // Only hashes are stored.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM portal_links WHERE token_hash = sha256($1::bytea)",
    )
    .bind(link.token.as_bytes())
    .fetch_one(&herald.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1);

    let s = redeem(&herald, &link.token).await.unwrap();
    assert!(s.session_token.starts_with("hs_") && s.session_token.len() == 46);
    assert_eq!(s.tenant_id, a.id);
    assert_eq!(s.tenant_name, "test tenant");
    assert_eq!(s.scopes, link.scopes);
    let theme = s.theme.unwrap();
    assert_eq!(
        (theme.accent_color.as_str(), theme.name.as_str()),
        ("#ff8800", "Acme webhooks")
    );
    assert_eq!(theme.mode, pb::ThemeMode::Dark as i32);
    let left = s.expires_at.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((3590..=3600).contains(&left), "{left}");
    // Single use.
    unauthenticated(redeem(&herald, &link.token).await);

    // The session works on both services, for its tenant only.
    let seen = list_endpoints(&herald, &s.session_token).await.unwrap();
    assert_eq!(seen.iter().map(|e| &e.id).collect::<Vec<_>>(), [&ep_a.id]);
    list_deliveries(&herald, &s.session_token).await.unwrap();
    let e = herald
        .endpoints()
        .await
        .get_endpoint(authed(
            pb::GetEndpointRequest {
                id: ep_b.id.clone(),
            },
            &s.session_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "endpoint not found");
    // Not in its default scopes.
    lacks(
        herald
            .events()
            .await
            .publish(authed(
                pb::PublishRequest {
                    event_type: "a.b".into(),
                    payload: b"{}".to_vec(),
                    ..Default::default()
                },
                &s.session_token,
            ))
            .await,
        "events:publish",
    );
    lacks(
        create(&herald, session_for(""), &s.session_token).await,
        "portal:create",
    );
    // Sessions are not the tenant's keys.
    let keys = herald
        .admin()
        .await
        .list_api_keys(authed(
            pb::ListApiKeysRequest {
                tenant_id: a.id.clone(),
                include_revoked: true,
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys.len(), 1);
    herald.stop().await;
}

#[tokio::test]
async fn an_ended_session_stops_at_once_on_ingest_and_the_ledger() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let link = create(&herald, session_for(&t.id), ADMIN_TOKEN)
        .await
        .unwrap();
    let s = redeem(&herald, &link.token).await.unwrap().session_token;
    list_endpoints(&herald, &s).await.unwrap();
    list_deliveries(&herald, &s).await.unwrap();

    let mut p = portal(&herald).await;
    // Neither a key nor the operator can end a session in its place.
    for bearer in [t.api_key.as_str(), ADMIN_TOKEN] {
        let e = p
            .end_portal_session(authed(pb::EndPortalSessionRequest {}, bearer))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    list_endpoints(&herald, &t.api_key).await.unwrap();
    p.end_portal_session(authed(pb::EndPortalSessionRequest {}, &s))
        .await
        .unwrap();
    unauthenticated(list_endpoints(&herald, &s).await);
    // The ledger learns it from the revocation's change notice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match list_deliveries(&herald, &s).await {
            Err(e) if e.code() == Code::Unauthenticated => break,
            other => assert!(tokio::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    herald.stop().await;
}

#[tokio::test]
async fn expired_links_and_sessions_are_refused() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let link = create(&herald, session_for(&t.id), ADMIN_TOKEN)
        .await
        .unwrap();
    sqlx::query("UPDATE portal_links SET expires_at = now() - interval '1 second'")
        .execute(&herald.pool)
        .await
        .unwrap();
    unauthenticated(redeem(&herald, &link.token).await);

    // A session that ends in two seconds: used (and cached) at once, refused past its end
    // although the cache would keep it ten seconds.
    let link = create(&herald, session_for(&t.id), ADMIN_TOKEN)
        .await
        .unwrap();
    let s = redeem(&herald, &link.token).await.unwrap().session_token;
    sqlx::query(
        "UPDATE api_keys SET expires_at = now() + interval '2 seconds' WHERE kind = 'portal'",
    )
    .execute(&herald.pool)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    list_endpoints(&herald, &s).await.unwrap();
    list_deliveries(&herald, &s).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    unauthenticated(list_endpoints(&herald, &s).await);
    unauthenticated(list_deliveries(&herald, &s).await);

    // Tokens that are not links.
    unauthenticated(redeem(&herald, &herald_store_like_token("hl_")).await);
    unauthenticated(redeem(&herald, "hl_short").await);
    unauthenticated(redeem(&herald, &t.api_key).await);
    let e = portal(&herald)
        .await
        .redeem_portal_link(pb::RedeemPortalLinkRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    herald.stop().await;
}

/// A well-formed token nobody issued.
fn herald_store_like_token(prefix: &str) -> String {
    format!("{prefix}{}", "A".repeat(43))
}

#[tokio::test]
async fn a_key_opens_sessions_of_its_own_tenant_within_its_own_scopes() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let other = herald.tenant().await;
    let k = key_with(
        &herald,
        &t.id,
        &["portal:create", "endpoints:read", "deliveries:read"],
        None,
    )
    .await;

    // Defaults narrowed to the key's scopes.
    let link = create(&herald, session_for(""), &k.api_key).await.unwrap();
    assert_eq!(link.scopes, ["endpoints:read", "deliveries:read"]);
    let s = redeem(&herald, &link.token).await.unwrap();
    assert_eq!(s.tenant_id, t.id);
    lacks(
        herald
            .endpoints()
            .await
            .create_endpoint(authed(
                endpoint("http://127.0.0.1:9/x".into(), &["*"]),
                &s.session_token,
            ))
            .await,
        "endpoints:write",
    );
    // Named scopes beyond the key's are refused, naming the first.
    let mut wider = session_for(&t.id);
    wider.scopes = vec!["endpoints:read".into(), "endpoints:write".into()];
    lacks(create(&herald, wider, &k.api_key).await, "endpoints:write");
    // read_only keeps the :read scopes.
    let mut ro = session_for("");
    ro.read_only = true;
    ro.scopes = vec!["endpoints:read".into(), "deliveries:read".into()];
    let link = create(&herald, ro, &k.api_key).await.unwrap();
    assert_eq!(link.scopes, ["endpoints:read", "deliveries:read"]);
    // Another tenant's id is answered as a missing one.
    let e = create(&herald, session_for(&other.id), &k.api_key)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "tenant not found");
    // A key without portal:create.
    let plain = key_with(&herald, &t.id, &["endpoints:read"], None).await;
    lacks(
        create(&herald, session_for(""), &plain.api_key).await,
        "portal:create",
    );
    // A link token cannot make links.
    let link = create(&herald, session_for(""), &k.api_key).await.unwrap();
    let e = create(&herald, session_for(&t.id), &link.token)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A link opens only while the key that made it is live.
    herald
        .admin()
        .await
        .revoke_api_key(authed(
            pb::RevokeApiKeyRequest {
                key_id: k.key_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();
    unauthenticated(redeem(&herald, &link.token).await);
    herald.stop().await;
}

#[tokio::test]
async fn out_of_bound_requests_are_refused_naming_the_field_and_bound() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let with = |f: &dyn Fn(&mut pb::CreatePortalSessionRequest)| {
        let mut r = session_for(&t.id);
        f(&mut r);
        r
    };
    let cases: Vec<(pb::CreatePortalSessionRequest, &str)> = vec![
        (
            with(&|r| r.ttl_seconds = Some(59)),
            "ttl_seconds 59 is out of range: 60 to 86400 seconds",
        ),
        (
            with(&|r| r.ttl_seconds = Some(86_401)),
            "ttl_seconds 86401 is out of range: 60 to 86400 seconds",
        ),
        (
            with(&|r| r.link_ttl_seconds = Some(9)),
            "link_ttl_seconds 9 is out of range: 10 to 3600 seconds",
        ),
        (
            with(&|r| r.link_ttl_seconds = Some(3_601)),
            "link_ttl_seconds 3601 is out of range",
        ),
        (
            with(&|r| r.scopes = vec!["deliveries:delete".into()]),
            "unknown scope \"deliveries:delete\"",
        ),
        (with(&|r| r.scopes = vec!["*".into()]), "one by one"),
        (
            with(&|r| {
                r.scopes = vec!["endpoints:write".into()];
                r.read_only = true;
            }),
            "no scope left",
        ),
        (
            with(&|r| {
                r.theme = Some(pb::PortalTheme {
                    accent_color: "red".into(),
                    ..Default::default()
                })
            }),
            "theme.accent_color",
        ),
        (
            with(&|r| {
                r.theme = Some(pb::PortalTheme {
                    name: "n".repeat(65),
                    ..Default::default()
                })
            }),
            "theme.name is longer than 64 characters",
        ),
        (
            with(&|r| {
                r.theme = Some(pb::PortalTheme {
                    mode: 7,
                    ..Default::default()
                })
            }),
            "theme.mode",
        ),
        (with(&|r| r.tenant_id = "nope".into()), "tenant_id"),
    ];
    for (req, wanted) in cases {
        let e = create(&herald, req.clone(), ADMIN_TOKEN).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
        assert!(e.message().contains(wanted), "{wanted}: {}", e.message());
    }
    let e = create(
        &herald,
        session_for(&uuid::Uuid::now_v7().to_string()),
        ADMIN_TOKEN,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let bounds = create(
        &herald,
        with(&|r| {
            r.ttl_seconds = Some(86_400);
            r.link_ttl_seconds = Some(10);
        }),
        ADMIN_TOKEN,
    )
    .await
    .unwrap();
    assert_eq!(bounds.ttl_seconds, 86_400);
    assert_eq!(herald.count("portal_links").await, 1);
    unauthenticated(create(&herald, session_for(&t.id), "hk_not_a_key").await);
    herald.stop().await;
}
