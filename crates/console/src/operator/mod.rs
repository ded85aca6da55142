//! The operator console (`/console/…`), behind the operator token: service health, queue
//! depths and the tenants in trouble (`overview`), tenants and their keys, portal links
//! (`tenants`), dead letters (`dead_letters`). Its pages are never framed.

mod dead_letters;
mod overview;
pub mod session;
mod tenants;

use axum::Router;
use axum::routing::{get, post};
use maud::Markup;

use crate::Console;
use crate::layout::{self, Chrome};
use session::Operator;

pub fn routes() -> Router<Console> {
    Router::new()
        .route(
            "/console",
            get(|| async { axum::response::Redirect::to("/console/") }),
        )
        .route("/console/", get(overview::page))
        .route(
            "/console/login",
            get(session::login_page).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/tenants", get(tenants::list).post(tenants::create))
        .route("/console/tenants/{id}", get(tenants::page))
        .route("/console/tenants/{id}/keys", post(tenants::create_key))
        .route(
            "/console/tenants/{id}/keys/{key_id}/revoke",
            post(tenants::revoke_key),
        )
        .route("/console/tenants/{id}/portal", post(tenants::portal_link))
        .route("/console/tenants/{id}/origins", post(tenants::origins))
        .route("/console/dead-letters", get(dead_letters::list))
        .route("/console/dead-letters/replay", post(dead_letters::replay))
        .route("/console/dead-letters/{id}", get(dead_letters::page))
}

/// An operator page.
pub fn page(op: &Operator, current: &'static str, title: &str, content: Markup) -> Markup {
    let chrome = Chrome {
        brand: "Herald console",
        theme_css: false,
        nav: vec![
            ("/console/", "Overview"),
            ("/console/tenants", "Tenants"),
            ("/console/dead-letters", "Dead letters"),
        ],
        current,
        logout: Some(("/console/logout", op.csrf.clone())),
    };
    layout::page(&chrome, title, content)
}

/// The CSRF field of an operator's forms.
pub fn csrf(op: &Operator) -> Markup {
    layout::csrf_field(&op.csrf)
}
