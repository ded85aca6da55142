//! The console's routes end to end without the services (their addresses lead nowhere, so a
//! request that gets past the console's own checks ends in a 502 page).

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use herald_core::config::Reader;
use tower::ServiceExt;

use crate::portal::session::{View, seal};
use crate::theme::Theme;
use crate::{Config, Console, csrf, router};

const SECRET: &str = "a console secret of enough length";

fn console(public_url: &str) -> Console {
    let env: HashMap<String, String> = [
        ("HERALD_CONSOLE_SECRET", SECRET),
        ("HERALD_CONSOLE_PUBLIC_URL", public_url),
        // Nothing listens on port 1.
        ("HERALD_CONSOLE_INGEST_URL", "http://127.0.0.1:1"),
        ("HERALD_CONSOLE_LEDGER_URL", "http://127.0.0.1:1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Console::new(Config::load(&Reader::new(&env)).unwrap()).unwrap()
}

/// The cookies of a portal session `hs_test` for a tenant that allows `origins` to frame it.
fn session_cookie(origins: &[&str]) -> String {
    let view = View {
        tenant_id: "t1".into(),
        tenant_name: "Acme".into(),
        scopes: vec!["endpoints:read".into(), "endpoints:write".into()],
        expires_at: chrono::Utc::now().timestamp() + 3600,
        theme: Theme {
            accent: Some("#112233".into()),
            name: "Acme <hooks>".into(),
            dark: None,
        },
        origins: origins.iter().map(|o| (*o).to_owned()).collect(),
    };
    format!(
        "herald_portal=hs_test; herald_portal_view={}",
        seal(SECRET.as_bytes(), "hs_test", &view)
    )
}

async fn send(app: &Console, req: Request<Body>) -> (Response, String) {
    let r = router(app.clone()).oneshot(req).await.unwrap();
    let (parts, body) = r.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn toggle(cookie: &str, origin: Option<&str>, body: String) -> Request<Body> {
    let mut b = Request::post("/portal/endpoints/e1/toggle")
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    b.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn without_a_session_the_portal_says_so_and_shows_nothing() {
    let app = console("http://127.0.0.1:8080");
    let (r, body) = send(&app, Request::get("/portal/").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(body.contains("Session expired"), "{body}");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    // No data and no control on it: it may tell its story inside a platform's frame.
    assert!(csp.ends_with("frame-ancestors *"), "{csp}");
    assert_eq!(r.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn a_bad_link_token_gets_a_clear_page_and_no_cookie() {
    let app = console("http://127.0.0.1:8080");
    let req = Request::get("/portal/open?token=nope")
        .body(Body::empty())
        .unwrap();
    let (r, body) = send(&app, req).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(body.contains("This link cannot be opened"), "{body}");
    assert!(r.headers().get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn a_post_without_the_csrf_token_or_from_another_origin_is_refused() {
    let app = console("http://127.0.0.1:8080");
    let cookie = session_cookie(&[]);
    let (r, body) = send(&app, toggle(&cookie, None, "enabled=false".into())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(body.contains("Form refused"), "{body}");
    let token = csrf::token(SECRET.as_bytes(), "hs_test");
    let with_token = format!("enabled=false&csrf={token}");
    let (r, _) = send(
        &app,
        toggle(&cookie, Some("https://evil.example"), with_token.clone()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let wrong = format!(
        "enabled=false&csrf={}",
        csrf::token(SECRET.as_bytes(), "hs_other")
    );
    let (r, _) = send(&app, toggle(&cookie, None, wrong)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The right token from the console's own origin gets through to ingest (unreachable here).
    let (r, body) = send(
        &app,
        toggle(&cookie, Some("http://127.0.0.1:8080"), with_token),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{body}");
}

#[tokio::test]
async fn a_session_lets_its_tenants_origins_frame_the_portal_and_themes_it() {
    let app = console("https://console.example");
    let cookie = session_cookie(&["https://app.acme.example"]);
    let req = Request::get("/portal/theme.css")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let (r, css) = send(&app, req).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(css.contains("--accent: #112233;"), "{css}");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.ends_with("frame-ancestors https://app.acme.example"),
        "{csp}"
    );
    // An error page of the session too (ingest is unreachable), so it shows inside the frame.
    let req = Request::get("/portal/")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let (r, body) = send(&app, req).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{body}");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.ends_with("frame-ancestors https://app.acme.example"),
        "{csp}"
    );
}

#[tokio::test]
async fn a_forged_view_cookie_is_no_session() {
    let app = console("http://127.0.0.1:8080");
    let cookie = session_cookie(&[]).replace("hs_test", "hs_someone_else");
    let req = Request::get("/portal/")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    let (r, _) = send(&app, req).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn operator_pages_send_a_logged_out_browser_to_the_login_form() {
    let app = console("http://127.0.0.1:8080");
    let (r, _) = send(&app, Request::get("/console/").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/console/login");
    let (r, body) = send(
        &app,
        Request::get("/console/login").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("herald_console_login="), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(body.contains("name=\"csrf\""), "{body}");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    // A login post without the pre-session cookie is refused before the token is tried.
    let req = Request::post("/console/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("token=op&csrf=x"))
        .unwrap();
    let (r, _) = send(&app, req).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_stylesheet_is_served_and_unknown_paths_are_404_pages() {
    let app = console("http://127.0.0.1:8080");
    let req = Request::get(crate::layout::CSS_PATH)
        .body(Body::empty())
        .unwrap();
    let (r, css) = send(&app, req).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(css.contains("prefers-color-scheme: dark"));
    assert!(
        r.headers()["server-timing"]
            .to_str()
            .unwrap()
            .starts_with("app;dur=")
    );
    let (r, _) = send(&app, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
