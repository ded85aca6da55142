//! `Admin.ListTroubledTenants` (issue 25): tenants with failing, throttled (a dispatcher's
//! note in Redis) or auto-disabled endpoints, worst first; healthy tenants are not listed; the
//! limit is bounded; only the operator may ask.

use chrono::Utc;
use herald_proto::v1 as pb;
use herald_redis::throttle_notes::{self, Note, Reason};
use herald_tests::{ADMIN_TOKEN, Herald, Options, REDIS_URL, authed};
use tonic::Code;

use crate::page::endpoint;

async fn troubled(herald: &Herald, limit: u32) -> Vec<pb::TroubledTenant> {
    herald
        .admin()
        .await
        .list_troubled_tenants(authed(
            pb::ListTroubledTenantsRequest { limit },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner()
        .tenants
}

#[tokio::test]
async fn tenants_in_trouble_are_listed_worst_first() {
    let herald = Herald::start(Options::default()).await;
    let healthy = herald.tenant().await;
    let worse = herald.tenant().await;
    let bad = herald.tenant().await;
    let url = || endpoint("http://127.0.0.1:9/hook".into(), &["*"]);
    herald.create_endpoint(&healthy, url()).await;
    let (failing, _) = herald.create_endpoint(&bad, url()).await;
    herald.create_endpoint(&bad, url()).await;
    let (w1, _) = herald.create_endpoint(&worse, url()).await;
    let (w2, _) = herald.create_endpoint(&worse, url()).await;
    let (w3, _) = herald.create_endpoint(&worse, url()).await;
    let set = |sql: &'static str, id: String| {
        let pool = herald.pool.clone();
        async move {
            sqlx::query(sql)
                .bind(uuid::Uuid::parse_str(&id).unwrap())
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    set(
        "UPDATE endpoints SET consecutive_failures = 3 WHERE id = $1",
        failing.id.clone(),
    )
    .await;
    set(
        "UPDATE endpoints SET consecutive_failures = 1 WHERE id = $1",
        w1.id.clone(),
    )
    .await;
    set(
        "UPDATE endpoints SET enabled = false, disabled_reason = 'disabled automatically' WHERE id = $1",
        w2.id.clone(),
    )
    .await;
    let note = Note {
        reason: Reason::Timeouts,
        cap: 1,
        max: 16,
        since: Utc::now(),
        paced: None,
    };
    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = throttle_notes::key(&herald.name, w3.id.parse().unwrap());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(serde_json::to_string(&note).unwrap())
        .arg("EX")
        .arg(60)
        .query_async(&mut redis)
        .await
        .unwrap();

    let list = troubled(&herald, 0).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let w = &list[0];
    assert_eq!(w.tenant_id, worse.id);
    assert_eq!(
        (
            w.failing_endpoints,
            w.throttled_endpoints,
            w.auto_disabled_endpoints,
            w.total_endpoints
        ),
        (1, 1, 1, 3)
    );
    assert_eq!(list[1].tenant_id, bad.id);
    assert_eq!((list[1].failing_endpoints, list[1].total_endpoints), (1, 2));
    assert_eq!(troubled(&herald, 1).await.len(), 1);

    let e = herald
        .admin()
        .await
        .list_troubled_tenants(authed(
            pb::ListTroubledTenantsRequest::default(),
            &bad.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    herald.stop().await;
}
