//! The tenant portal in a real headless Chromium (`herald_tests::browser`), against a whole
//! Herald and `herald-console` (`Options::console`): what a tenant's people do on the page and
//! what a receiver gets for it, compared with what the page shows.
//!
//! - the issue's flow: open a portal link, add an endpoint through the form, send a test and
//!   read its result, publish over gRPC and find the delivery in the activity and the log, open
//!   it, redeliver, turn the endpoint off; the receiver got exactly what the pages showed;
//! - receivers' text is text: a `<script>` response body shows literally, no element is made;
//! - a second tenant's session sees nothing of the first, not even by id;
//! - an expired, used or unknown link, and an expired session, get a clear page and no data.
//!
//! Screenshots of the main pages go to `target/screenshots/portal-*.png`.

use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::browser::Browser;
use herald_tests::receiver::{Received, Receiver, Reply};
use herald_tests::{ADMIN_TOKEN, Herald, Options, Tenant, authed};

use crate::page::endpoint;

/// What the receiver answers to every request: markup that would run if it were not escaped.
const SCRIPT_BODY: &str = "<script>document.title='owned'</script><b>thanks</b>";

pub(crate) async fn with_console() -> Herald {
    Herald::start(Options {
        console: true,
        ..Options::default()
    })
    .await
}

/// A single-use portal link for `tenant`, asked for with the operator token.
pub(crate) async fn portal_link(
    herald: &Herald,
    tenant: &str,
    theme: Option<pb::PortalTheme>,
) -> pb::CreatePortalSessionResponse {
    pb::portal_client::PortalClient::new(herald.ingest_channel().await)
        .create_portal_session(authed(
            pb::CreatePortalSessionRequest {
                tenant_id: tenant.into(),
                theme,
                ..Default::default()
            },
            ADMIN_TOKEN,
        ))
        .await
        .expect("create portal session")
        .into_inner()
}

/// Reloads `path` until an element with `data-testid="<testid>"` and the attribute
/// `data-delivery-id="<id>"` is on it (the ledger records a delivery a moment after it).
async fn wait_row(browser: &Browser, url: &str, testid: &str, id: &str) {
    let css = format!("[data-testid=\"{testid}\"][data-delivery-id=\"{id}\"]");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        browser.goto(url).await;
        if !browser.all(&css).await.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{css} never showed on {url}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No element the receiver's markup could have made, and no script at all (the console
/// sends none).
async fn assert_inert(browser: &Browser) {
    assert!(browser.all("script").await.is_empty(), "a script element");
    assert!(
        browser.all("main b, pre b").await.is_empty(),
        "receiver markup rendered"
    );
    assert_ne!(browser.client.title().await.unwrap(), "owned");
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("json")
}

#[tokio::test]
async fn portal_flow_matches_what_the_receiver_got() {
    let herald = with_console().await;
    let mut rx = Receiver::start(|_, _| Reply {
        body: SCRIPT_BODY.into(),
        ..Reply::status(200)
    })
    .await;
    let t = herald.tenant().await;
    herald
        .event_types()
        .await
        .create_event_type(authed(
            pb::CreateEventTypeRequest {
                name: "order.created".into(),
                description: "An order was placed".into(),
                group: "Orders".into(),
            },
            &t.api_key,
        ))
        .await
        .expect("event type");
    let link = portal_link(&herald, &t.id, None).await;
    assert!(
        link.url
            .starts_with(&herald.console().at("/portal/open?token=hl_")),
        "{}",
        link.url
    );

    let browser = Browser::start().await;
    browser.goto(&link.url).await;
    assert_eq!(browser.path().await, "/portal/");
    browser.testid("no-endpoints").await;
    let id = add_endpoint(&browser, &rx).await;

    // Test send: the result box shows what the receiver answered, as text.
    browser.click("[data-testid=\"send-test\"]").await;
    let result = browser.testid("test-result").await;
    assert_eq!(
        result.attr("data-success").await.unwrap().as_deref(),
        Some("true")
    );
    assert_eq!(browser.testid_text("test-status").await, "200");
    assert_eq!(browser.testid_text("response-body").await, SCRIPT_BODY);
    assert_inert(&browser).await;
    browser.screenshot("portal-test-send").await;
    let test = rx.next(Duration::from_secs(5)).await;
    assert_eq!(
        test.header("webhook-event").as_deref(),
        Some("webhook.test")
    );
    let shown = browser
        .find("[data-testid=\"test-result\"] a[href^=\"/portal/deliveries/\"]")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        shown.trim_start_matches("/portal/deliveries/"),
        test.header("webhook-id").unwrap(),
        "the page links the delivery the receiver got"
    );

    // A published event: in the activity, in the log, on its page.
    let payload = br#"{"order":"o_1","items":[{"sku":"<b>x</b>","qty":2}],"total":1250}"#;
    let event = herald.publish(&t, "order.created", payload).await;
    let got = rx.next(Duration::from_secs(10)).await;
    assert_eq!(
        &got.body[..],
        payload,
        "the receiver got the payload as published"
    );
    let delivery = herald
        .wait_deliveries(&t, &event.event_id, 1)
        .await
        .remove(0);
    assert_eq!(
        got.header("webhook-id").as_deref(),
        Some(delivery.id.as_str())
    );
    let console = herald.console();
    wait_row(
        &browser,
        &console.at("/portal/"),
        "activity-row",
        &delivery.id,
    )
    .await;
    browser.full_screenshot("portal-overview").await;
    wait_row(
        &browser,
        &console.at("/portal/deliveries"),
        "delivery-row",
        &delivery.id,
    )
    .await;
    let row = format!(
        "[data-testid=\"delivery-row\"][data-delivery-id=\"{}\"]",
        delivery.id
    );
    let code = browser
        .find(&format!("{row} [data-testid=\"delivery-code\"]"))
        .await;
    assert_eq!(code.text().await.unwrap(), "200");
    browser.screenshot("portal-delivery-log").await;
    browser.click(&format!("{row} a")).await;
    check_delivery_page(&browser, &got, 1).await;
    browser.full_screenshot("portal-delivery").await;

    // Redeliver: a second attempt, the same request again.
    browser.click("#redeliver").await;
    assert_eq!(browser.testid_text("notice").await, "Attempt 2 was queued.");
    let again = rx.next(Duration::from_secs(10)).await;
    assert_eq!(again.body, got.body);
    assert_eq!(again.header("webhook-id"), got.header("webhook-id"));
    wait_attempts(&browser, 2).await;
    check_delivery_page(&browser, &again, 2).await;

    // Off: the card says so, the API agrees, and nothing more is delivered.
    browser.goto(&console.at("/portal/")).await;
    let card = format!("[data-testid=\"endpoint-card\"][data-endpoint-id=\"{id}\"]");
    browser
        .click(&format!("{card} [data-testid=\"toggle\"]"))
        .await;
    let toggle = browser
        .find(&format!("{card} [data-testid=\"toggle\"]"))
        .await;
    assert_eq!(toggle.text().await.unwrap(), "Turn on");
    assert_eq!(
        toggle.attr("aria-pressed").await.unwrap().as_deref(),
        Some("false")
    );
    let state = browser
        .find(&format!("{card} [data-testid=\"delivery-state\"]"))
        .await;
    assert!(state.text().await.unwrap().to_lowercase().contains("off"));
    let ep = crate::page::get_endpoint(&herald, &t, &id).await;
    assert!(!ep.enabled);
    herald
        .publish(&t, "order.created", b"{\"order\":\"o_2\"}")
        .await;
    assert!(
        rx.drain_for(Duration::from_millis(1500)).await.is_empty(),
        "a disabled endpoint received a delivery"
    );
    assert_eq!(rx.total(), 3, "test send, delivery, redelivery");
    browser.close().await;
    herald.stop().await;
}

/// Fills the create form (screenshot on the way) and saves; returns the new endpoint's id.
async fn add_endpoint(browser: &Browser, rx: &Receiver) -> String {
    browser.click("[data-testid=\"add-endpoint\"]").await;
    let form = "[data-testid=\"endpoint-form\"]";
    browser.fill(form, "url", &rx.url("/hooks/orders")).await;
    browser
        .fill(form, "description", "Orders <i>hook</i>")
        .await;
    browser
        .check(form, "event_types", "order.created", true)
        .await;
    browser.fill(form, "timeout_seconds", "5").await;
    browser.fill(form, "headers", "X-Team: fulfilment").await;
    browser.full_screenshot("portal-endpoint-form").await;
    browser.click("#save").await;
    let path = browser.path().await;
    let Some(id) = path.strip_prefix("/portal/endpoints/").map(str::to_owned) else {
        panic!("saving led to {path}: {}", browser.text().await);
    };
    assert_eq!(
        browser.testid_text("endpoint-url").await,
        rx.url("/hooks/orders")
    );
    assert!(
        browser.text().await.contains("Orders <i>hook</i>"),
        "description as text"
    );
    id
}

/// The delivery page against what the receiver got: the payload (pretty-printed, the same
/// JSON), `attempts` attempts each answered 200 with the receiver's body as text.
async fn check_delivery_page(browser: &Browser, got: &Received, attempts: usize) {
    let payload = browser.testid_text("payload").await;
    assert_eq!(json(payload.as_bytes()), json(&got.body));
    let shown = browser.all("[data-testid=\"attempt\"]").await;
    assert_eq!(shown.len(), attempts);
    for a in browser.all("[data-testid=\"attempt-code\"]").await {
        assert_eq!(a.text().await.unwrap(), "200");
    }
    for b in browser
        .all("[data-testid=\"attempt\"] [data-testid=\"response-body\"]")
        .await
    {
        assert_eq!(b.text().await.unwrap(), SCRIPT_BODY);
    }
    assert_inert(browser).await;
}

/// Reloads the delivery page until it lists `n` attempts.
async fn wait_attempts(browser: &Browser, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while browser.all("[data-testid=\"attempt\"]").await.len() < n {
        assert!(Instant::now() < deadline, "attempt {n} never showed");
        tokio::time::sleep(Duration::from_millis(200)).await;
        browser.client.refresh().await.unwrap();
    }
}

/// Tenant A with an endpoint and one delivery; returns (tenant, endpoint id, delivery id).
async fn tenant_with_history(
    herald: &Herald,
    rx: &mut Receiver,
    marker: &str,
) -> (Tenant, String, String) {
    let t = herald.tenant().await;
    let (ep, _) = herald
        .create_endpoint(&t, endpoint(rx.url(&format!("/{marker}")), &["*"]))
        .await;
    let event = herald
        .publish(
            &t,
            "order.created",
            format!("{{\"m\":\"{marker}\"}}").as_bytes(),
        )
        .await;
    rx.next(Duration::from_secs(10)).await;
    let d = herald
        .wait_deliveries(&t, &event.event_id, 1)
        .await
        .remove(0);
    (t, ep.id, d.id)
}

#[tokio::test]
async fn a_second_tenants_session_sees_nothing_of_the_first() {
    let herald = with_console().await;
    let mut rx = Receiver::ok().await;
    let marker = "tenant-a-secret-path";
    let (_a, endpoint_id, delivery_id) = tenant_with_history(&herald, &mut rx, marker).await;
    let b = herald.tenant().await;
    let console = herald.console();

    let browser = Browser::start().await;
    browser
        .goto(&portal_link(&herald, &b.id, None).await.url)
        .await;
    browser.testid("no-endpoints").await;
    browser.testid("no-activity").await;
    for path in [
        "/portal/".to_owned(),
        "/portal/deliveries".to_owned(),
        format!("/portal/deliveries?endpoint_id={endpoint_id}"),
    ] {
        browser.goto(&console.at(&path)).await;
        let text = browser.text().await;
        assert!(
            !text.contains(marker) && !text.contains(&delivery_id),
            "{path}: {text}"
        );
        assert!(
            browser
                .all("[data-testid=\"delivery-row\"]")
                .await
                .is_empty(),
            "{path}"
        );
    }
    // By id: the same "not found" as for an id that never existed.
    for path in [
        format!("/portal/endpoints/{endpoint_id}"),
        format!("/portal/deliveries/{delivery_id}"),
        format!("/portal/endpoints/{}", uuid::Uuid::now_v7()),
    ] {
        browser.goto(&console.at(&path)).await;
        browser.testid("error").await;
        let text = browser.text().await;
        assert!(text.contains("Not found"), "{path}: {text}");
        assert!(!text.contains(marker), "{path}: {text}");
    }
    browser.close().await;
    herald.stop().await;
}

#[tokio::test]
async fn expired_used_and_unknown_links_get_a_clear_page_and_no_data() {
    let herald = with_console().await;
    let t = herald.tenant().await;
    let console = herald.console();
    let browser = Browser::start().await;
    let b = &browser;
    let refused = |what: &'static str| async move {
        let browser = b;
        browser.testid("error").await;
        let text = browser.text().await;
        assert!(
            text.contains("This link cannot be opened"),
            "{what}: {text}"
        );
        assert!(
            !text.contains("test tenant"),
            "{what} shows tenant data: {text}"
        );
        assert!(
            browser.cookie("herald_portal").await.is_none(),
            "{what} set a session"
        );
    };

    // Used: the second opening of a link, even by its first user, is refused.
    let link = portal_link(&herald, &t.id, None).await;
    browser.goto(&link.url).await;
    assert_eq!(browser.path().await, "/portal/");
    browser.forget_cookies().await;
    browser.goto(&link.url).await;
    refused("a used link").await;

    // Expired: a link past its expiry (set back in the database: the shortest TTL is 10 s).
    let link = portal_link(&herald, &t.id, None).await;
    sqlx::query("UPDATE portal_links SET expires_at = now() - interval '1 second' WHERE redeemed_at IS NULL")
        .execute(&herald.pool)
        .await
        .expect("expire link");
    browser.goto(&link.url).await;
    refused("an expired link").await;

    // Unknown, and not a link at all.
    browser
        .goto(&console.at("/portal/open?token=hl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await;
    refused("an unknown link").await;
    browser
        .goto(&console.at("/portal/open?token=%3Cscript%3E"))
        .await;
    refused("a token that is no link").await;
    assert_inert(&browser).await;
    browser.screenshot("portal-link-refused").await;

    // A session ended with "Log out" is over on the server too: its cookies, put back, open
    // nothing.
    let link = portal_link(&herald, &t.id, None).await;
    browser.goto(&link.url).await;
    assert_eq!(browser.path().await, "/portal/");
    let cookies = browser.client.get_all_cookies().await.expect("cookies");
    assert!(cookies.iter().any(|c| c.name() == "herald_portal"));
    browser.click("#logout").await;
    browser.testid("logged-out").await;
    assert!(
        browser.cookie("herald_portal").await.is_none(),
        "logout keeps the cookie"
    );
    for c in cookies {
        browser
            .client
            .add_cookie(c)
            .await
            .expect("put a cookie back");
    }
    browser.goto(&console.at("/portal/deliveries")).await;
    browser.testid("error").await;
    let text = browser.text().await;
    assert!(text.contains("Session expired"), "{text}");
    assert!(
        browser
            .all("[data-testid=\"delivery-log\"]")
            .await
            .is_empty()
    );
    browser.close().await;
    herald.stop().await;
}
