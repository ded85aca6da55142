//! Herald's telemetry, one module for every service: logs, traces, metrics and health.
//!
//! - Logs: `tracing` with `HERALD_LOG` (or `RUST_LOG`) as the filter, default
//!   `info,sqlx=warn,lapin=warn`, and `HERALD_LOG_FORMAT` = `pretty` (default) or `json`, on
//!   stdout, coloured only when stdout is a terminal. Log lines are lowercase with structured
//!   fields and never carry secrets, signatures or API keys.
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans go to an OTLP/gRPC collector (the
//!   standard `OTEL_*` variables apply: service name, batch delays, headers; `HERALD_TRACE_FILTER`
//!   selects spans, default `info,sqlx=warn,lapin=warn,h2=warn,hyper=warn,tower=warn`,
//!   independent of the log filter). W3C trace context
//!   travels in gRPC metadata ([`grpc_span`]) and in AMQP message headers ([`trace_headers`],
//!   [`set_parent_from`]), so one trace runs publish → fan-out → every attempt → ledger write.
//! - Metrics: a process-wide Prometheus recorder ([`metrics_handle`]); services record with the
//!   `metrics` macros and [`ops`] serves `/metrics` with `/livez` and `/readyz`.

pub mod ops;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes buffered spans when dropped (keep it alive for the life of `main`).
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Guard {
    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("herald: flushing traces failed: {e}");
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A variable's value; set but empty counts as unset, as for every other `HERALD_*` setting.
fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Installs logging (and OTLP tracing when configured) for `service`; later calls in the same
/// process do nothing. Must run inside a tokio runtime when tracing is on.
pub fn init(service: &'static str) -> Guard {
    let filter = env_set("HERALD_LOG")
        .or_else(|| env_set("RUST_LOG"))
        .unwrap_or_else(|| "info,sqlx=warn,lapin=warn".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = env_set("HERALD_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
    ]));
    let provider = otlp_provider(service);
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    // Spans are exported per `HERALD_TRACE_FILTER` whatever the log filter says: quiet logs
    // must not mean missing traces.
    let trace_filter = EnvFilter::try_new(
        env_set("HERALD_TRACE_FILTER")
            .unwrap_or_else(|| "info,sqlx=warn,lapin=warn,h2=warn,hyper=warn,tower=warn".into()),
    )
    .unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(trace_filter)
    });
    // Logs go to stdout: colours only for a person at a terminal, never into a file, a pipe or
    // a log collector.
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let registry = tracing_subscriber::registry().with(otel);
    let result = if json {
        registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        registry.with(fmt.with_filter(filter)).try_init()
    };
    if result.is_ok() {
        tracing::debug!(
            service,
            tracing = provider.is_some(),
            "telemetry initialised"
        );
    }
    Guard { provider }
}

fn otlp_provider(service: &'static str) -> Option<SdkTracerProvider> {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .ok()
        .filter(|v| !v.is_empty())?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("herald: cannot export traces to {endpoint}: {e}");
            return None;
        }
    };
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Some(provider)
}

/// Whether spans are exported (an OTLP endpoint is configured): without it no span has a
/// trace context to pass on, and [`trace_headers`] skips the propagator on the hot path.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The current span's trace context as W3C headers (`traceparent`, `tracestate`), to carry in
/// a message; empty when tracing is off or there is no span.
pub fn trace_headers() -> Vec<(String, String)> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return Vec::new();
    }
    let cx = tracing::Span::current().context();
    let mut map: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut map));
    map.into_iter().collect()
}

/// Makes `span` a child of the trace context found in `headers` (from an AMQP message or
/// gRPC metadata), if any.
pub fn set_parent_from<'a>(
    span: &tracing::Span,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let map: HashMap<String, String> = headers
        .into_iter()
        .filter(|(k, _)| {
            k.eq_ignore_ascii_case("traceparent") || k.eq_ignore_ascii_case("tracestate")
        })
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    if map.is_empty() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&map));
    let _ = span.set_parent(cx);
}

/// The span of one incoming gRPC call, continuing the caller's trace when its metadata
/// carries one (`tonic::transport::Server::builder().trace_fn(herald_telemetry::grpc_span)`).
pub fn grpc_span(req: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc",
        otel.name = %req.uri().path(),
        rpc.system = "grpc",
        otel.kind = "server"
    );
    set_parent_from(
        &span,
        req.headers()
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))),
    );
    span
}

/// The process-wide Prometheus recorder (installed on first use; services started in one
/// process, as in tests, share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0, 3600.0,
            ];
            let sizes = [
                1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_records".into()), &sizes))
                .expect("bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist (a test harness); then ours only renders what it saw.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Resolves on SIGTERM or Ctrl-C (the start of a graceful shutdown). A second one ends the
/// process at once (exit status 130), as an operator who signals again means: once the
/// handlers are installed the default action of the signal never comes back, and a drain that
/// hangs must not leave `kill -9` as the only way out. Nothing acknowledged is lost by it:
/// what is unacked goes back to its queue.
pub async fn wait_for_signal() {
    // The same streams serve both waits, so a second signal arriving before the task below
    // first runs is still seen.
    let mut signals = Signals::new();
    signals.next().await;
    tracing::info!("shutdown signal received (a second one stops at once)");
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("second shutdown signal received, exiting now");
        std::process::exit(130);
    });
}

/// SIGTERM and SIGINT (Ctrl-C), registered once.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                streams: signal(SignalKind::terminate())
                    .ok()
                    .zip(signal(SignalKind::interrupt()).ok()),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next SIGTERM or Ctrl-C.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = self.streams.as_mut() {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
