//! The operations endpoint every service serves on its own port (`HERALD_METRICS_ADDR`):
//! `GET /metrics` (Prometheus text), `GET /livez` (200 while the process serves) and
//! `GET /readyz` (200 when every dependency answers, else 503 naming the ones that do not).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Checks a service's dependencies: each entry is (name, up).
pub type Readiness = Arc<dyn Fn() -> BoxFuture<'static, Vec<(&'static str, bool)>> + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: PrometheusHandle,
    ready: Readiness,
}

/// Binds `addr` (e.g. `127.0.0.1:9601`; `off` disables the endpoint) and serves until
/// `shutdown`. Returns the bound address.
pub async fn serve(
    addr: &str,
    ready: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<Option<std::net::SocketAddr>> {
    // `off`: an empty environment variable reads as unset (the default address), so turning
    // the endpoint off takes a word.
    if addr.trim().is_empty() || addr.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let state = Ops {
        metrics: crate::metrics_handle(),
        ready,
    };
    let upkeep = state.metrics.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "operations endpoint stopped");
        }
    });
    tracing::info!(addr = %local, "metrics and health on http");
    Ok(Some(local))
}

async fn metrics(State(s): State<Ops>) -> String {
    s.metrics.render()
}

async fn readyz(State(s): State<Ops>) -> (StatusCode, String) {
    let checks = (s.ready)().await;
    let down: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
    if down.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {} unavailable\n", down.join(", ")),
        )
    }
}
