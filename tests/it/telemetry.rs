//! Operability: one trace across ingest → dispatcher → ledger (exported over OTLP/gRPC to a
//! collector run by the test), Prometheus metrics that move with a run, and health endpoints.
//! The three services run as real processes, as they would in production.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::procs::{Processes, Role};
use herald_tests::receiver::Receiver;
use herald_tests::{authed, free_addr, http_get};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// One received span: (service, span name, trace id).
type SpanSeen = (String, String, Vec<u8>);

/// A minimal OTLP collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<SpanSeen>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((service.clone(), s.name, s.trace_id));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The value of a counter or gauge line (summed over label sets matching `labels`).
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split([' ', '{']).next() == Some(name) && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn one_trace_spans_all_services_and_metrics_and_health_are_served() {
    // The collector.
    let collector = Collector::default();
    let otlp = free_addr();
    let server = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve(otlp)
            .await
            .unwrap();
    });

    let endpoint = format!("http://{otlp}");
    let procs = Processes::start(
        1,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let channel = Processes::channel(procs.ingest_addr).await;
    let (m_ingest, m_ledger, m_dispatcher) = (
        procs.metrics[&Role::Ingest],
        procs.metrics[&Role::Ledger],
        procs.metrics[&Role::Dispatcher(0)],
    );

    // Health: live at once, ready once every dependency answers.
    for addr in [m_ingest, m_ledger, m_dispatcher] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live = http_get_retry(addr, "/livez").await;
            let ready = http_get_retry(addr, "/readyz").await;
            if live.0 == 200 && ready.0 == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{addr} not ready: {live:?} {ready:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let mut rx = Receiver::ok().await;
    let key = procs.tenant_key("t").await;
    pb::endpoints_client::EndpointsClient::new(channel.clone())
        .create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: rx.url("/hook"),
                event_types: vec!["*".into()],
                ..Default::default()
            },
            &key,
        ))
        .await
        .unwrap();
    let mut events = pb::events_client::EventsClient::new(channel.clone());
    for i in 0..3 {
        events
            .publish(authed(
                pb::PublishRequest {
                    event_type: "trace.me".into(),
                    payload: format!("{{\"i\":{i}}}").into_bytes(),
                    ..Default::default()
                },
                &key,
            ))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        rx.next(Duration::from_secs(15)).await;
    }

    // One trace holds spans of all three services for the same event.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = collector.spans.lock().unwrap().clone();
        let traces_of = |service: &str, span: &str| -> HashSet<Vec<u8>> {
            spans
                .iter()
                .filter(|(s, n, _)| s == service && n == span)
                .map(|(_, _, t)| t.clone())
                .collect()
        };
        let fan_out = traces_of("herald-ingest", "ingest.fan_out");
        let deliver = traces_of("herald-dispatcher", "dispatcher.deliver");
        let write = traces_of("herald-ledger", "ledger.write");
        let shared = fan_out
            .iter()
            .filter(|t| deliver.contains(*t) && write.contains(*t))
            .count();
        if shared >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no trace spans all three services: ingest {} dispatcher {} ledger {} shared {shared}; spans seen: {:?}",
            fan_out.len(),
            deliver.len(),
            write.len(),
            spans
                .iter()
                .map(|(s, n, _)| format!("{s}/{n}"))
                .collect::<HashSet<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Metrics parse and moved with the run.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, i) = http_get(m_ingest, "/metrics").await;
        let (_, d) = http_get(m_dispatcher, "/metrics").await;
        let (_, l) = http_get(m_ledger, "/metrics").await;
        let published = metric(
            &i,
            "herald_events_published_total",
            &["outcome=\"accepted\""],
        );
        let delivered = metric(
            &d,
            "herald_delivery_attempts_total",
            &["outcome=\"success\"", "status_class=\"2xx\""],
        );
        let e2e = metric(&d, "herald_delivery_e2e_seconds_count", &[]);
        let records = metric(&l, "herald_ledger_records_total", &[]);
        let sampled = l.contains("herald_queue_messages{queue=")
            && d.contains("herald_queue_messages{queue=");
        if published == 3.0 && delivered == 3.0 && e2e == 3.0 && records >= 6.0 && sampled {
            for text in [&i, &d, &l] {
                for line in text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                {
                    let value = line.rsplit(' ').next().unwrap();
                    assert!(value.parse::<f64>().is_ok(), "unparsable line {line:?}");
                    assert!(line.starts_with("herald_"), "unexpected metric {line:?}");
                }
            }
            assert!(i.contains("# TYPE herald_publish_seconds histogram"), "{i}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics did not move: published {published} delivered {delivered} e2e {e2e} records {records} sampled {sampled}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(procs);
}

async fn http_get_retry(addr: SocketAddr, path: &str) -> (u16, String) {
    match tokio::net::TcpStream::connect(addr).await {
        Ok(_) => http_get(addr, path).await,
        Err(_) => (0, String::new()),
    }
}
