//! Herald console: the web pages of Herald, server-rendered, without any JavaScript.
//!
//! Two areas share one binary (`herald-console`):
//! - the **tenant portal** under `/portal/`: a platform embeds it (an iframe in its settings
//!   page) and opens it for one tenant with a single-use link (`Portal.CreatePortalSession`);
//!   its pages are a webhooks page: endpoint cards, charts, the delivery log, test sends,
//!   redelivery and replay, the event catalogue;
//! - the **operator console** under `/console/`: tenants and keys, dead letters, queue depths,
//!   service health and the tenants in trouble, behind the operator token.
//!
//! The console holds no data and no credential of its own: every page is built from calls to
//! ingest and the ledger through the public gRPC API ([`grpc`]) with the credential of the
//! person at the page (the portal session's token in an HttpOnly cookie; the operator's token in
//! a server-side session). Every action is an HTML form (POST, then a redirect or the page with
//! its result), each one checked against CSRF ([`csrf`]); every response carries a strict
//! Content-Security-Policy ([`csp`]).
//!
//! Layout: `config`, `service` (start-up), `grpc`, `error` (status → page), `csrf`, `csp`,
//! `cookies`, `theme`, `charts`, `layout`, `form`, `format`, `metrics`; `portal/*` and `operator/*` one
//! module per page group.

pub mod charts;
mod config;
pub mod cookies;
pub mod csp;
pub mod csrf;
pub mod error;
mod form;
mod format;
pub mod grpc;
mod layout;
mod metrics;
mod operator;
mod portal;
mod service;
#[cfg(test)]
mod tests;
pub mod theme;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;

/// Shared handles of one console.
#[derive(Clone)]
pub struct Console {
    pub config: Arc<Config>,
    pub clients: grpc::Clients,
    /// Operator sessions (in memory: a restart logs operators out).
    operators: operator::session::Sessions,
    /// For the services' `/readyz` on the operator overview.
    http: reqwest::Client,
}

impl Console {
    pub fn new(config: Config) -> anyhow::Result<Self> {
        Ok(Self {
            clients: grpc::Clients::new(&config.ingest_url, &config.ledger_url)?,
            operators: operator::session::Sessions::default(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .build()?,
            config: Arc::new(config),
        })
    }

    /// The key of CSRF tokens and signed cookies.
    fn key(&self) -> &[u8] {
        self.config.secret.expose_secret()
    }
}

/// Every route of the console, with the security headers on every response.
pub fn router(state: Console) -> Router {
    Router::new()
        .route(layout::CSS_PATH, get(stylesheet))
        .route("/", get(|| async { Redirect::to("/portal/") }))
        .merge(portal::routes(&state))
        .merge(operator::routes())
        .fallback(|| async { error::PageError::NotFound })
        .layer(axum::middleware::from_fn(metrics::measure))
        .layer(axum::middleware::map_response(csp::secure))
        .with_state(state)
}

/// The stylesheet, cacheable (its path changes with every version).
async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        layout::CSS,
    )
}

/// Serves the console on `listener` (and the operations endpoint on `HERALD_METRICS_ADDR`)
/// until `shutdown`; requests in flight finish first.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !config.secret_configured {
        tracing::warn!(
            "HERALD_CONSOLE_SECRET is unset: a random key is used, so a restart invalidates open \
             forms and portal pages, and several consoles behind one address refuse each other's \
             forms"
        );
    }
    let state = Console::new(config)?;
    herald_telemetry::ops::serve(
        &state.config.metrics_addr,
        readiness(state.clients.clone()),
        shutdown.clone(),
    )
    .await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, public_url = %state.config.public_url, "console listening");
    // TCP_NODELAY on every connection: a page written in pieces must not wait for the
    // browser's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on a connection");
        }
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    tracing::info!("console stopped");
    Ok(())
}

/// The console can serve pages only while ingest answers; the ledger's pages fail alone.
fn readiness(clients: grpc::Clients) -> herald_telemetry::ops::Readiness {
    use herald_telemetry::ops::Dependency;
    Arc::new(move || {
        let clients = clients.clone();
        Box::pin(async move {
            let (ingest, ledger) = clients.health().await;
            vec![
                Dependency::required("ingest", ingest),
                Dependency::optional("ledger", ledger),
            ]
        })
    })
}
