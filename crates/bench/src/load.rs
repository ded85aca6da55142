//! Load generation over Herald's public API, the way a platform would call it.
//!
//! Setup creates a tenant and an API key (Admin API) and the endpoints (`*` subscriptions
//! pointing at the receiver). Publishing then runs in one of three shapes:
//! - closed loop: C callers each publish, wait for the answer, publish again (max rate);
//! - batch: the same with `PublishBatch` of N events per call;
//! - open loop: event i is due at `start + i/R` and is sent then whatever happened to earlier
//!   ones, and every latency is measured from that intended time, so a stalled server shows up
//!   as latency instead of silently slowing the generator down (no coordinated omission).
//!
//! Every payload carries its sequence number and its send time (`sent_ns`, on the clock the
//! receiver shares), so the receiver computes publish→receiver latency by itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use herald_core::signing::Secret;
use herald_proto::v1 as pb;
use herald_proto::v1::events_client::EventsClient;
use serde::Serialize;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::grpc::{self, authed};
use crate::procs::Herald;
use crate::receiver::Receiver;

/// Event type of every published event.
pub const EVENT_TYPE: &str = "bench.event";
/// HTTP/2 connections the publishers spread over.
const CONNECTIONS: usize = 4;
/// Open loop: beyond this many calls in flight the generator waits (and says so), rather than
/// exhaust memory against a server that stopped answering.
const MAX_IN_FLIGHT: u64 = 20_000;

/// The shape of one run's load.
#[derive(Clone, Debug, Serialize, clap::Args)]
pub struct LoadSpec {
    /// Endpoints, all subscribed to `*`.
    #[arg(long, default_value_t = 1)]
    pub endpoints: usize,
    /// How many of the endpoints always answer 500 (retried on --retry-schedule, then failed).
    #[arg(long, default_value_t = 0)]
    pub failing_endpoints: usize,
    /// Events to publish.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Concurrent callers (closed loop and batch).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Publish with PublishBatch of this many events per call.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Open loop at this many events per second.
    #[arg(long, conflicts_with = "batch")]
    pub rate: Option<f64>,
    /// Approximate payload size in bytes (a JSON object with a padding string).
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Receiver delay before answering, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// HERALD_RETRY_SCHEDULE of the run (short, so failing deliveries end within the run).
    #[arg(long, default_value = "1s,1s")]
    pub retry_schedule: String,
    /// Measure acceptance alone: no dispatcher runs, so nothing is delivered (the tasks stay
    /// queued and go with the run's queues) and the broker serves publishes only.
    #[arg(long)]
    pub accept_only: bool,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            endpoints: 1,
            failing_endpoints: 0,
            events: 10_000,
            concurrency: 32,
            batch: None,
            rate: None,
            payload_bytes: 1024,
            delay_ms: 0,
            retry_schedule: "1s,1s".into(),
            accept_only: false,
        }
    }
}

impl LoadSpec {
    pub fn ok_endpoints(&self) -> usize {
        self.endpoints.saturating_sub(self.failing_endpoints)
    }
}

/// Builds payloads of about the configured size.
#[derive(Clone)]
pub struct PayloadMaker {
    pad: Arc<str>,
}

impl PayloadMaker {
    pub fn new(size: usize) -> Self {
        // `{"seq":…,"sent_ns":…,"pad":""}` takes about 50 bytes.
        Self {
            pad: "x".repeat(size.saturating_sub(50)).into(),
        }
    }

    pub fn make(&self, seq: u64, sent_ns: u64) -> Vec<u8> {
        let pad = &self.pad;
        format!(r#"{{"seq":{seq},"sent_ns":{sent_ns},"pad":"{pad}"}}"#).into_bytes()
    }
}

/// A tenant ready to publish, with its endpoints in place.
pub struct Target {
    clients: Vec<EventsClient<Channel>>,
    auth: AsciiMetadataValue,
    /// The tenant's id.
    pub tenant_id: String,
}

/// A tenant with an API key, and a channel to ingest to act for it.
pub struct Tenant {
    /// The tenant's id, as the Admin API returned it.
    pub id: String,
    pub channel: Channel,
    /// `authorization` value of the tenant's API key.
    pub auth: AsciiMetadataValue,
}

/// Creates a tenant named `name` and an API key for it (Admin API).
pub async fn create_tenant(herald: &Herald, name: &str) -> Result<Tenant> {
    let channel = grpc::connect(herald.ingest_addr).await?;
    let admin_auth = grpc::bearer(&herald.admin_token)?;
    let mut admin = pb::admin_client::AdminClient::new(channel.clone());
    let tenant = admin
        .create_tenant(authed(
            pb::CreateTenantRequest {
                name: name.into(),
                ..Default::default()
            },
            &admin_auth,
        ))
        .await
        .with_context(|| format!("creating tenant {name}"))?
        .into_inner();
    let key = admin
        .create_api_key(authed(
            pb::CreateApiKeyRequest {
                tenant_id: tenant.id.clone(),
                name: name.into(),
                ..Default::default()
            },
            &admin_auth,
        ))
        .await
        .with_context(|| format!("creating the API key of tenant {name}"))?
        .into_inner();
    Ok(Tenant {
        id: tenant.id,
        channel,
        auth: grpc::bearer(&key.api_key)?,
    })
}

/// Creates the tenant, its API key and the endpoints, and registers every endpoint's secret
/// with the receiver.
pub async fn setup(herald: &Herald, receiver: &Receiver, spec: &LoadSpec) -> Result<Target> {
    ensure!(spec.endpoints >= 1, "--endpoints must be at least 1");
    ensure!(
        spec.failing_endpoints <= spec.endpoints,
        "--failing-endpoints must not exceed --endpoints"
    );
    let tenant = create_tenant(herald, "bench").await?;
    let ok = spec.ok_endpoints();
    for i in 0..spec.endpoints {
        let path = if i < ok {
            format!("/ok/{i}")
        } else {
            format!("/fail/{i}")
        };
        let request = pb::CreateEndpointRequest {
            event_types: vec!["*".into()],
            timeout_ms: Some(10_000),
            ..Default::default()
        };
        create_endpoint(&tenant, receiver, &path, request).await?;
    }
    target(herald, &tenant).await
}

/// Creates an endpoint of `tenant` pointing at `path` on the receiver (`request` gives the
/// rest) and registers its secret with the receiver; returns the endpoint's id.
pub async fn create_endpoint(
    tenant: &Tenant,
    receiver: &Receiver,
    path: &str,
    request: pb::CreateEndpointRequest,
) -> Result<Uuid> {
    let request = pb::CreateEndpointRequest {
        url: receiver.url(path),
        description: format!("bench {path}"),
        ..request
    };
    let created = pb::endpoints_client::EndpointsClient::new(tenant.channel.clone())
        .create_endpoint(authed(request, &tenant.auth))
        .await
        .with_context(|| format!("creating endpoint {path}"))?
        .into_inner();
    receiver.register_secret(path, Secret::from_stored(created.secret));
    let id = created
        .endpoint
        .with_context(|| format!("endpoint {path} created without its description"))?
        .id;
    Uuid::parse_str(&id).with_context(|| format!("endpoint id {id:?}"))
}

/// Publishing for `tenant`, over its channel and [`CONNECTIONS`]` - 1` more, spread over the
/// ingests in turn.
pub async fn target(herald: &Herald, tenant: &Tenant) -> Result<Target> {
    let mut clients = vec![EventsClient::new(tenant.channel.clone())];
    let ingests = herald.ingest_addrs();
    for i in 1..CONNECTIONS {
        let addr = ingests[i % ingests.len()];
        clients.push(EventsClient::new(grpc::connect(addr).await?));
    }
    Ok(Target {
        clients,
        auth: tenant.auth.clone(),
        tenant_id: tenant.id.clone(),
    })
}

/// Open-loop figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OpenLoopStats {
    pub target_rate: f64,
    /// Events sent per second of schedule actually covered.
    pub achieved_rate: f64,
    pub max_in_flight: u64,
    /// Largest delay between an event's intended time and its actual send, in ms: how far the
    /// generator itself fell behind.
    pub max_schedule_lag_ms: f64,
    /// The in-flight cap was hit: the figures understate latency.
    pub saturated: bool,
}

/// What publishing achieved.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    pub attempted: u64,
    pub accepted: u64,
    /// Sum of the fan-out Herald reported per accepted event.
    pub fanout: u64,
    /// Failed events by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// Latency of each successful call, in µs (per batch in batch mode; from the intended send
    /// time in open loop).
    pub latencies_us: Vec<u64>,
    /// First send and last answer, in ns since start.
    pub started_ns: u64,
    pub finished_ns: u64,
    pub open_loop: Option<OpenLoopStats>,
    pub timed_out: bool,
}

impl PublishOutcome {
    fn merge(&mut self, other: PublishOutcome) {
        self.attempted += other.attempted;
        self.accepted += other.accepted;
        self.fanout += other.fanout;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_insert(0) += n;
        }
        self.latencies_us.extend(other.latencies_us);
        self.timed_out |= other.timed_out;
    }

    fn error(&mut self, code: String, n: u64) {
        *self.errors.entry(code).or_insert(0) += n;
    }
}

fn nanos(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// Publishes `spec.events` events in the shape `spec` asks for.
pub async fn publish(
    target: &Target,
    spec: &LoadSpec,
    start: Instant,
    deadline: Instant,
) -> PublishOutcome {
    let payloads = PayloadMaker::new(spec.payload_bytes);
    let started_ns = nanos(start);
    let mut outcome = match (spec.rate, spec.batch) {
        (Some(rate), _) => open_loop(target, spec.events, rate, payloads, start, deadline).await,
        (None, batch) => {
            closed_loop(
                target,
                spec.events,
                spec.concurrency.max(1),
                batch.unwrap_or(0),
                payloads,
                start,
                deadline,
            )
            .await
        }
    };
    outcome.started_ns = started_ns;
    outcome.finished_ns = nanos(start);
    outcome
}

async fn closed_loop(
    target: &Target,
    events: u64,
    concurrency: usize,
    batch: usize,
    payloads: PayloadMaker,
    start: Instant,
    deadline: Instant,
) -> PublishOutcome {
    let next = Arc::new(AtomicU64::new(0));
    let per_call = batch.max(1) as u64;
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let mut client = target.clients[w % target.clients.len()].clone();
        let auth = target.auth.clone();
        let next = next.clone();
        let payloads = payloads.clone();
        tasks.push(tokio::spawn(async move {
            let mut part = PublishOutcome::default();
            loop {
                if Instant::now() >= deadline {
                    part.timed_out = true;
                    break;
                }
                let first = next.fetch_add(per_call, Ordering::Relaxed);
                if first >= events {
                    break;
                }
                let n = per_call.min(events - first);
                let sent = start.elapsed();
                let sent_ns = sent.as_nanos() as u64;
                let request = |seq: u64| pb::PublishRequest {
                    event_type: EVENT_TYPE.into(),
                    payload: payloads.make(seq, sent_ns),
                    ..Default::default()
                };
                part.attempted += n;
                if batch == 0 {
                    match client.publish(authed(request(first), &auth)).await {
                        Ok(r) => {
                            part.accepted += 1;
                            part.fanout += u64::from(r.get_ref().deliveries);
                            let took = start.elapsed().saturating_sub(sent);
                            part.latencies_us.push(took.as_micros() as u64);
                        }
                        Err(s) => {
                            part.error(format!("{:?}", s.code()), 1);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                } else {
                    let batch_events = (first..first + n).map(request).collect();
                    let call = pb::PublishBatchRequest {
                        events: batch_events,
                    };
                    match client.publish_batch(authed(call, &auth)).await {
                        Ok(r) => {
                            let took = start.elapsed().saturating_sub(sent);
                            part.latencies_us.push(took.as_micros() as u64);
                            for result in &r.get_ref().results {
                                match &result.outcome {
                                    Some(pb::publish_result::Outcome::Accepted(a)) => {
                                        part.accepted += 1;
                                        part.fanout += u64::from(a.deliveries);
                                    }
                                    Some(pb::publish_result::Outcome::Error(e)) => {
                                        let code = tonic::Code::from_i32(e.code);
                                        part.error(format!("{code:?}"), 1);
                                    }
                                    None => part.error("no outcome".into(), 1),
                                }
                            }
                        }
                        Err(s) => {
                            part.error(format!("{:?}", s.code()), n);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            part
        }));
    }
    let mut outcome = PublishOutcome::default();
    for joined in futures::future::join_all(tasks).await {
        match joined {
            Ok(part) => outcome.merge(part),
            Err(e) => outcome.error(format!("publisher task failed: {e}"), 0),
        }
    }
    outcome
}

/// Result of one open-loop call: latency from the intended time and fan-out, or the code.
type Sent = Result<(u64, u32), String>;

async fn open_loop(
    target: &Target,
    events: u64,
    rate: f64,
    payloads: PayloadMaker,
    start: Instant,
    deadline: Instant,
) -> PublishOutcome {
    let mut outcome = PublishOutcome::default();
    let mut stats = OpenLoopStats {
        target_rate: rate,
        ..Default::default()
    };
    let interval_ns = 1e9 / rate.max(0.001);
    let begin = start.elapsed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sent>();
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut last_intended = begin;
    for i in 0..events {
        let intended = begin + Duration::from_nanos((i as f64 * interval_ns) as u64);
        let due = start + intended;
        if due >= deadline {
            outcome.timed_out = true;
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        while in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT && Instant::now() < deadline {
            stats.saturated = true;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let lag = start.elapsed().saturating_sub(intended);
        stats.max_schedule_lag_ms = stats.max_schedule_lag_ms.max(lag.as_secs_f64() * 1e3);
        let now_in_flight = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.max_in_flight = stats.max_in_flight.max(now_in_flight);
        last_intended = intended;
        outcome.attempted += 1;

        let mut client = target.clients[i as usize % target.clients.len()].clone();
        let auth = target.auth.clone();
        let payload = payloads.make(i, intended.as_nanos() as u64);
        let tx = tx.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            let request = pb::PublishRequest {
                event_type: EVENT_TYPE.into(),
                payload,
                ..Default::default()
            };
            let sent: Sent = match client.publish(authed(request, &auth)).await {
                Ok(r) => {
                    let took = start.elapsed().saturating_sub(intended);
                    Ok((took.as_micros() as u64, r.get_ref().deliveries))
                }
                Err(s) => Err(format!("{:?}", s.code())),
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(sent);
        });
    }
    drop(tx);
    let covered = last_intended.saturating_sub(begin).as_secs_f64();
    stats.achieved_rate = if covered > 0.0 {
        outcome.attempted as f64 / covered
    } else {
        0.0
    };
    let collect_until = tokio::time::Instant::from_std(deadline);
    loop {
        match tokio::time::timeout_at(collect_until, rx.recv()).await {
            Ok(Some(Ok((us, fanout)))) => {
                outcome.accepted += 1;
                outcome.fanout += u64::from(fanout);
                outcome.latencies_us.push(us);
            }
            Ok(Some(Err(code))) => outcome.error(code, 1),
            Ok(None) => break,
            Err(_) => {
                outcome.timed_out = true;
                break;
            }
        }
    }
    outcome.open_loop = Some(stats);
    outcome
}
