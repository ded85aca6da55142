//! The operator console in a real headless Chromium, against a whole Herald and
//! `herald-console`: sign in with the operator token, read the overview, create a tenant and a
//! scoped key (and check with the API that the key can do exactly what its scopes say), revoke
//! it, open the tenant's portal from there, and read the dead letters.
//!
//! Screenshots go to `target/screenshots/console-*.png`.

use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::browser::Browser;
use herald_tests::{ADMIN_TOKEN, authed};
use tonic::Code;

use crate::portal_browser::with_console;

#[tokio::test]
async fn operator_signs_in_manages_tenants_and_keys_and_opens_a_portal() {
    let herald = with_console().await;
    let console = herald.console();
    let browser = Browser::start().await;

    // Nothing without signing in; a wrong token is refused.
    browser.goto(&console.at("/console/tenants")).await;
    browser.testid("login-form").await;
    browser
        .fill("[data-testid=\"login-form\"]", "token", "not-the-token")
        .await;
    browser.click("#login").await;
    browser.testid("login-error").await;
    browser
        .fill("[data-testid=\"login-form\"]", "token", ADMIN_TOKEN)
        .await;
    browser.click("#login").await;
    assert_eq!(browser.path().await, "/console/");
    browser.testid("health").await;
    browser.testid("queues").await;
    assert!(!browser.all("[data-testid=\"queue-row\"]").await.is_empty());
    browser.full_screenshot("console-overview").await;

    // A tenant made through the form; its name is text.
    browser.goto(&console.at("/console/tenants")).await;
    browser
        .fill(
            "[data-testid=\"create-tenant\"]",
            "name",
            "Acme <i>Corp</i>",
        )
        .await;
    browser.click("#create-tenant").await;
    assert_eq!(browser.testid_text("tenant-name").await, "Acme <i>Corp</i>");
    let tenant_id = browser
        .path()
        .await
        .trim_start_matches("/console/tenants/")
        .to_owned();
    let tenant = herald
        .admin()
        .await
        .get_tenant(authed(
            pb::GetTenantRequest {
                id: tenant_id.clone(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("the tenant exists")
        .into_inner();
    assert_eq!(tenant.name, "Acme <i>Corp</i>");

    // A key that may only read the log: shown once, and it does exactly that.
    let form = "[data-testid=\"create-key\"]";
    browser.fill(form, "name", "log-reader").await;
    browser.check(form, "scopes", "deliveries:read", true).await;
    browser.click("#create-key").await;
    let key = browser.testid_text("new-key-value").await;
    assert!(key.starts_with("hk_"), "{key}");
    browser.screenshot("console-tenant").await;
    let listed = herald
        .deliveries()
        .await
        .list_deliveries(authed(pb::ListDeliveriesRequest::default(), &key))
        .await;
    assert!(listed.is_ok(), "{listed:?}");
    let refused = herald
        .endpoints()
        .await
        .create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: "http://127.0.0.1:9/x".into(),
                event_types: vec!["*".into()],
                ..Default::default()
            },
            &key,
        ))
        .await
        .expect_err("a log reader cannot create endpoints");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("endpoints:write"), "{refused:?}");

    // Revoked from the page: the key stops working.
    browser
        .goto(&console.at(&format!("/console/tenants/{tenant_id}")))
        .await;
    assert_eq!(browser.all("[data-testid=\"key-row\"]").await.len(), 1);
    browser
        .click("[data-testid=\"key-row\"] [data-testid=\"revoke\"]")
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = herald
            .deliveries()
            .await
            .list_deliveries(authed(pb::ListDeliveriesRequest::default(), &key))
            .await;
        if r.as_ref().is_err_and(|s| s.code() == Code::Unauthenticated) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked key still works: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // "Open portal": a link that opens this tenant's portal, themed.
    let form = "[data-testid=\"open-portal\"]";
    browser.fill(form, "theme_name", "Acme webhooks").await;
    browser.fill(form, "accent_color", "#aa3366").await;
    browser.click("#open-portal").await;
    let url = browser
        .testid("portal-url")
        .await
        .attr("href")
        .await
        .unwrap()
        .expect("href");
    assert!(
        url.starts_with(&console.at("/portal/open?token=hl_")),
        "{url}"
    );
    browser.goto(&url).await;
    assert_eq!(browser.path().await, "/portal/");
    assert_eq!(browser.testid_text("brand").await, "Acme webhooks");
    browser.testid("no-endpoints").await;

    // Dead letters: the page answers (this installation has none).
    browser.goto(&console.at("/console/dead-letters")).await;
    assert!(
        browser.has_testid("no-dead-letters").await || browser.has_testid("dead-letters").await,
        "{}",
        browser.text().await
    );
    browser.close().await;
    herald.stop().await;
}
