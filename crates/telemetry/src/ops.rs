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

/// Checks a service's dependencies.
pub type Readiness = Arc<dyn Fn() -> BoxFuture<'static, Vec<Dependency>> + Send + Sync>;

/// One dependency of a service as `/readyz` reports it.
#[derive(Clone, Copy, Debug)]
pub struct Dependency {
    pub name: &'static str,
    pub up: bool,
    /// Without it the service cannot do its work, so `/readyz` answers 503 and an orchestrator
    /// takes the instance out of rotation. An optional one that is down is reported (200,
    /// "degraded") without that: taking every instance out for it would refuse what the
    /// service can still serve (ingest without Redis still accepts keyless publishes).
    pub required: bool,
}

impl Dependency {
    pub fn required(name: &'static str, up: bool) -> Self {
        Self {
            name,
            up,
            required: true,
        }
    }

    pub fn optional(name: &'static str, up: bool) -> Self {
        Self {
            name,
            up,
            required: false,
        }
    }
}

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
    readiness_answer(&(s.ready)().await)
}

/// `/readyz`'s status and body for these dependencies.
fn readiness_answer(checks: &[Dependency]) -> (StatusCode, String) {
    let down = |required: bool| -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.up && c.required == required)
            .map(|c| c.name)
            .collect()
    };
    let (required, optional) = (down(true), down(false));
    if !required.is_empty() {
        let mut body = format!("not ready: {} unavailable", required.join(", "));
        if !optional.is_empty() {
            body.push_str(&format!("; also {} unavailable", optional.join(", ")));
        }
        (StatusCode::SERVICE_UNAVAILABLE, body + "\n")
    } else if !optional.is_empty() {
        (
            StatusCode::OK,
            format!("ready, degraded: {} unavailable\n", optional.join(", ")),
        )
    } else {
        (StatusCode::OK, "ready\n".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_required_dependency_makes_a_service_unready() {
        let all_up = [
            Dependency::required("broker", true),
            Dependency::optional("redis", true),
        ];
        assert_eq!(
            readiness_answer(&all_up),
            (StatusCode::OK, "ready\n".into())
        );
        let redis_down = [
            Dependency::required("broker", true),
            Dependency::optional("redis", false),
        ];
        assert_eq!(
            readiness_answer(&redis_down),
            (
                StatusCode::OK,
                "ready, degraded: redis unavailable\n".into()
            )
        );
        let both_down = [
            Dependency::required("broker", false),
            Dependency::optional("redis", false),
        ];
        assert_eq!(
            readiness_answer(&both_down),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: broker unavailable; also redis unavailable\n".into()
            )
        );
    }
}
