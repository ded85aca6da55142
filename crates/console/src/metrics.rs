//! The console's metrics (names follow Prometheus conventions), served on
//! `HERALD_METRICS_ADDR` with the other services' process metrics.
//!
//! - `herald_console_request_seconds{route, status}` (histogram): one page or form, from the
//!   request to the response's headers, gRPC calls included. The same time goes back to the
//!   browser as `Server-Timing: app;dur=<ms>`, so a benchmark (or a person in the browser's
//!   developer tools) sees the server's share of a page without scraping metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// Times a request (the layer around every route).
pub async fn measure(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let mut response = next.run(req).await;
    let elapsed = start.elapsed();
    metrics::histogram!(
        "herald_console_request_seconds",
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(elapsed.as_secs_f64());
    let timing = format!("app;dur={:.1}", elapsed.as_secs_f64() * 1000.0);
    if let Ok(v) = HeaderValue::from_str(&timing) {
        response.headers_mut().insert("server-timing", v);
    }
    response
}
