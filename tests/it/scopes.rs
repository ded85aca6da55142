//! Scoped and expiring credentials (issue 25): a key narrowed to some scopes is refused every
//! other call, on ingest and on the ledger, with PERMISSION_DENIED naming the missing scope; an
//! unknown scope is refused where a key is made; a key past its ttl stops working even while
//! its check is cached; keys and tenants are listed a page at a time, never with their secrets.

use std::time::Duration;

use herald_proto::v1 as pb;
use herald_tests::{ADMIN_TOKEN, Herald, Options, Tenant, authed};
use tonic::Code;

use crate::page::endpoint;

/// A key of `tenant` with `scopes` (empty: every scope) and an optional ttl.
pub(crate) async fn key_with(
    herald: &Herald,
    tenant: &str,
    scopes: &[&str],
    ttl_seconds: Option<u32>,
) -> pb::CreateApiKeyResponse {
    herald
        .admin()
        .await
        .create_api_key(authed(
            pb::CreateApiKeyRequest {
                tenant_id: tenant.into(),
                name: "scoped".into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ttl_seconds,
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("create key")
        .into_inner()
}

/// Asserts `result` was refused for want of `scope`.
pub(crate) fn lacks<T: std::fmt::Debug>(result: Result<T, tonic::Status>, scope: &str) {
    let e = result.expect_err("call allowed without its scope");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(
        e.message(),
        format!("this credential lacks the scope \"{scope}\"")
    );
}

async fn list_endpoints(
    herald: &Herald,
    key: &str,
) -> Result<pb::ListEndpointsResponse, tonic::Status> {
    herald
        .endpoints()
        .await
        .list_endpoints(authed(pb::ListEndpointsRequest::default(), key))
        .await
        .map(|r| r.into_inner())
}

async fn list_deliveries(
    herald: &Herald,
    key: &str,
) -> Result<pb::ListDeliveriesResponse, tonic::Status> {
    herald
        .deliveries()
        .await
        .list_deliveries(authed(pb::ListDeliveriesRequest::default(), key))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_narrow_key_is_refused_every_call_outside_its_scopes_on_ingest_and_ledger() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint("http://127.0.0.1:9/hook".into(), &["*"]))
        .await;
    let reader = key_with(&herald, &t.id, &["endpoints:read"], None).await;
    assert_eq!(reader.scopes, vec!["endpoints:read"]);
    let key = reader.api_key.as_str();

    let listed = list_endpoints(&herald, key).await.unwrap();
    assert_eq!(listed.endpoints.len(), 1);
    let mut endpoints = herald.endpoints().await;
    lacks(
        endpoints
            .create_endpoint(authed(endpoint("http://127.0.0.1:9/x".into(), &["*"]), key))
            .await,
        "endpoints:write",
    );
    lacks(
        endpoints
            .delete_endpoint(authed(pb::DeleteEndpointRequest { id: ep.id.clone() }, key))
            .await,
        "endpoints:write",
    );
    lacks(
        endpoints
            .get_endpoint_secret(authed(
                pb::GetEndpointSecretRequest { id: ep.id.clone() },
                key,
            ))
            .await,
        "secrets:read",
    );
    lacks(
        endpoints
            .send_test(authed(
                pb::SendTestRequest {
                    endpoint_id: ep.id.clone(),
                    ..Default::default()
                },
                key,
            ))
            .await,
        "deliveries:resend",
    );
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
                key,
            ))
            .await,
        "events:publish",
    );
    lacks(
        herald
            .event_types()
            .await
            .list_event_types(authed(pb::ListEventTypesRequest::default(), key))
            .await,
        "event_types:read",
    );
    lacks(list_deliveries(&herald, key).await, "deliveries:read");

    // The ledger: reading the log does not allow re-sending.
    let log = key_with(&herald, &t.id, &["deliveries:read"], None)
        .await
        .api_key;
    list_deliveries(&herald, &log).await.unwrap();
    lacks(list_endpoints(&herald, &log).await, "endpoints:read");
    lacks(
        herald
            .deliveries()
            .await
            .replay_endpoint(authed(
                pb::ReplayEndpointRequest {
                    endpoint_id: ep.id.clone(),
                    ..Default::default()
                },
                &log,
            ))
            .await,
        "deliveries:resend",
    );
    lacks(
        herald
            .deliveries()
            .await
            .redeliver(authed(
                pb::RedeliverRequest {
                    delivery_id: uuid::Uuid::now_v7().to_string(),
                },
                &log,
            ))
            .await,
        "deliveries:resend",
    );
    // A key made with every scope (the default, as before scopes existed) may do all of it.
    list_deliveries(&herald, &t.api_key).await.unwrap();
    list_endpoints(&herald, &t.api_key).await.unwrap();
    herald.stop().await;
}

#[tokio::test]
async fn unknown_scopes_are_refused_where_a_key_is_made() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let e = herald
        .admin()
        .await
        .create_api_key(authed(
            pb::CreateApiKeyRequest {
                tenant_id: t.id.clone(),
                scopes: vec!["endpoints:read".into(), "endpoints:delete".into()],
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("unknown scope \"endpoints:delete\""),
        "{}",
        e.message()
    );
    let every = key_with(&herald, &t.id, &[], None).await;
    assert_eq!(every.scopes, vec!["*"]);
    assert!(every.expires_at.is_none());
    herald.stop().await;
}

#[tokio::test]
async fn an_expired_key_stops_working_even_while_its_check_is_cached() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let k = key_with(&herald, &t.id, &[], Some(2)).await;
    assert!(k.expires_at.is_some());
    // Known (and cached for 10 s) by both services.
    list_endpoints(&herald, &k.api_key).await.unwrap();
    list_deliveries(&herald, &k.api_key).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let e = list_endpoints(&herald, &k.api_key).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("expired"), "{}", e.message());
    let e = list_deliveries(&herald, &k.api_key).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // Listed as expired only with the revoked.
    let keys = list_keys(&herald, &t, false, 0, "").await;
    assert!(keys.keys.iter().all(|x| x.id != k.key_id));
    let keys = list_keys(&herald, &t, true, 0, "").await;
    assert!(keys.keys.iter().any(|x| x.id == k.key_id));
    herald.stop().await;
}

async fn list_keys(
    herald: &Herald,
    t: &Tenant,
    include_revoked: bool,
    page_size: u32,
    cursor: &str,
) -> pb::ListApiKeysResponse {
    herald
        .admin()
        .await
        .list_api_keys(authed(
            pb::ListApiKeysRequest {
                tenant_id: t.id.clone(),
                include_revoked,
                page_size,
                cursor: cursor.into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn keys_and_tenants_are_listed_a_page_at_a_time_without_secrets() {
    let herald = Herald::start(Options::default()).await;
    let t = herald.tenant().await;
    let other = herald.tenant().await;
    let narrow = key_with(&herald, &t.id, &["events:publish"], None).await;
    let revoked = key_with(&herald, &t.id, &[], None).await;
    let mut admin = herald.admin().await;
    admin
        .revoke_api_key(authed(
            pb::RevokeApiKeyRequest {
                key_id: revoked.key_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap();

    let live = list_keys(&herald, &t, false, 0, "").await;
    let ids: Vec<&str> = live.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], narrow.key_id, "newest first");
    assert_eq!(live.keys[0].scopes, vec!["events:publish"]);
    assert_eq!(live.keys[1].scopes, vec!["*"]);
    assert!(live.next_cursor.is_empty());
    let printed = format!("{live:?}");
    assert!(!printed.contains(&narrow.api_key) && !printed.contains("hk_"));

    let first = list_keys(&herald, &t, true, 2, "").await;
    assert_eq!(first.keys.len(), 2);
    assert_eq!(first.keys[0].id, revoked.key_id);
    assert!(first.keys[0].revoked_at.is_some());
    let second = list_keys(&herald, &t, true, 2, &first.next_cursor).await;
    assert_eq!(second.keys.len(), 1);
    assert!(second.next_cursor.is_empty());

    let e = admin
        .list_api_keys(authed(
            pb::ListApiKeysRequest {
                tenant_id: t.id.clone(),
                cursor: "not-an-id".into(),
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("cursor"), "{}", e.message());
    // A tenant's key cannot list anything.
    let e = admin
        .list_tenants(authed(pb::ListTenantsRequest::default(), &t.api_key))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let page = |size: u32, cursor: String| {
        let mut admin = admin.clone();
        async move {
            admin
                .list_tenants(authed(
                    pb::ListTenantsRequest {
                        page_size: size,
                        cursor,
                    },
                    ADMIN_TOKEN,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let p1 = page(1, String::new()).await;
    assert_eq!(p1.tenants.len(), 1);
    assert_eq!(p1.tenants[0].id, other.id, "newest first");
    let p2 = page(1, p1.next_cursor.clone()).await;
    assert_eq!(p2.tenants[0].id, t.id);
    assert!(
        p2.next_cursor.is_empty(),
        "the last page has no next cursor"
    );
    herald.stop().await;
}

#[tokio::test]
async fn portal_origins_are_checked_stored_and_replaced() {
    let herald = Herald::start(Options::default()).await;
    let mut admin = herald.admin().await;
    let create = |origins: Vec<String>| pb::CreateTenantRequest {
        name: "embedding".into(),
        portal_allowed_origins: origins,
        ..Default::default()
    };
    for bad in [
        "http://app.example.com",
        "https://app.example.com/settings",
        "https://app.example.com; script-src *",
        "app.example.com",
    ] {
        let e = admin
            .create_tenant(authed(create(vec![bad.into()]), ADMIN_TOKEN))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        assert!(
            e.message().contains("portal_allowed_origins"),
            "{}",
            e.message()
        );
    }
    let many = (0..17)
        .map(|i| format!("https://h{i}.example.com"))
        .collect();
    let e = admin
        .create_tenant(authed(create(many), ADMIN_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("at most 16"), "{}", e.message());
    assert_eq!(herald.count("tenants").await, 0);

    let t = admin
        .create_tenant(authed(
            create(vec![
                "https://App.Example.com:8443".into(),
                "http://localhost:3000".into(),
            ]),
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        t.portal_allowed_origins,
        vec!["https://app.example.com:8443", "http://localhost:3000"]
    );
    let update = |origins: Option<Vec<String>>| pb::UpdateTenantRequest {
        id: t.id.clone(),
        portal_allowed_origins: origins.map(|values| pb::StringList { values }),
        ..Default::default()
    };
    let kept = admin
        .update_tenant(authed(update(None), ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.portal_allowed_origins.len(), 2);
    let cleared = admin
        .update_tenant(authed(update(Some(vec![])), ADMIN_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.portal_allowed_origins.is_empty());
    let got = admin
        .get_tenant(authed(
            pb::GetTenantRequest { id: t.id.clone() },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(got.portal_allowed_origins.is_empty());
    herald.stop().await;
}
