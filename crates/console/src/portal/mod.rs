//! The tenant portal (`/portal/…`): the webhooks page a platform embeds for one tenant.
//!
//! Modules by page group: `session` (open a link, the session, logout, theme), `endpoints`
//! (cards, an endpoint's page and its actions), `endpoint_form` (create and edit, "try it" for
//! filters), `deliveries` (activity, the log, a delivery, redeliver), `catalogue` (event
//! types). Controls for what the session's scopes do not allow are not shown; the servers
//! refuse such calls anyway (PERMISSION_DENIED → a 403 page).

mod catalogue;
mod deliveries;
mod endpoint_form;
mod endpoints;
pub mod session;

use axum::Router;
use axum::routing::{get, post};
use maud::Markup;

use crate::Console;
use crate::layout::{self, Chrome};
pub use session::Session;

pub const ENDPOINTS_READ: &str = "endpoints:read";
pub const ENDPOINTS_WRITE: &str = "endpoints:write";
pub const SECRETS_READ: &str = "secrets:read";
pub const EVENT_TYPES_READ: &str = "event_types:read";
pub const DELIVERIES_READ: &str = "deliveries:read";
pub const DELIVERIES_RESEND: &str = "deliveries:resend";

/// The portal's routes; every response of a session may be framed by its allowed origins.
pub fn routes(state: &Console) -> Router<Console> {
    Router::new()
        .route(
            "/portal",
            get(|| async { axum::response::Redirect::to("/portal/") }),
        )
        .route("/portal/", get(endpoints::overview))
        .route("/portal/open", get(session::open))
        .route("/portal/logout", post(session::logout))
        .route("/portal/theme.css", get(session::theme_css))
        .route("/portal/endpoints", post(endpoint_form::create))
        .route("/portal/endpoints/new", get(endpoint_form::new))
        .route(
            "/portal/endpoints/{id}",
            get(endpoints::page).post(endpoint_form::update),
        )
        .route("/portal/endpoints/{id}/edit", get(endpoint_form::edit))
        .route("/portal/endpoints/{id}/toggle", post(endpoints::toggle))
        .route("/portal/endpoints/{id}/test", post(endpoints::send_test))
        .route(
            "/portal/endpoints/{id}/secret",
            post(endpoints::reveal_secret),
        )
        .route(
            "/portal/endpoints/{id}/rotate",
            post(endpoints::rotate_secret),
        )
        .route("/portal/endpoints/{id}/replay", post(endpoints::replay))
        .route(
            "/portal/endpoints/{id}/delete",
            get(endpoints::confirm_delete).post(endpoints::delete),
        )
        .route("/portal/deliveries", get(deliveries::log))
        .route("/portal/deliveries/{id}", get(deliveries::page))
        .route(
            "/portal/deliveries/{id}/redeliver",
            post(deliveries::redeliver),
        )
        .route("/portal/event-types", get(catalogue::page))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::frame,
        ))
}

/// A portal page: the session's theme and the navigation its scopes allow.
pub fn page(session: &Session, current: &'static str, title: &str, content: Markup) -> Markup {
    let mut nav = vec![("/portal/", "Endpoints")];
    if session.can(DELIVERIES_READ) {
        nav.push(("/portal/deliveries", "Delivery log"));
    }
    if session.can(EVENT_TYPES_READ) {
        nav.push(("/portal/event-types", "Event types"));
    }
    let chrome = Chrome {
        brand: session.view.theme.title(),
        theme_css: true,
        nav,
        current,
        logout: Some(("/portal/logout", session.csrf.clone())),
    };
    layout::page(&chrome, title, content)
}

/// The CSRF field of a session's forms.
pub fn csrf(session: &Session) -> Markup {
    layout::csrf_field(&session.csrf)
}
