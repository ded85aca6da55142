//! noisy-neighbour: do one tenant's broken endpoints slow down another tenant's deliveries?
//!
//! Every tenant's tasks share the dispatchers' work queue and POST slots, so an endpoint that
//! hangs (each request holds a slot for the endpoint's whole timeout) or fails (each delivery
//! comes back for its retries) competes with every other tenant. What a well-behaved tenant B
//! sees is measured in two phases on the same processes (so both find the same warm caches and
//! connections), each with fresh tenants and a fresh receiver:
//!
//! 1. alone: B publishes 100 events/s (open loop, one Publish per event) for 60 s to one
//!    endpoint that answers 200 at once; publish→receiver latency per event.
//! 2. under A: tenant A has endpoint H, whose path holds every request 25 s (H's timeout is
//!    20 s, no retries), and endpoint E, which answers 500 (retried after 1 s and 2 s). A
//!    publishes 10,000 events to each; once all are accepted B runs exactly as in 1. Then H
//!    recovers (answers 200 at once) and the run waits, at most 6 minutes, until the ledger
//!    holds a final status for every one of A's deliveries. B's events are counted until then,
//!    so one that A's backlog held back shows with its whole latency.
//!
//! The whole is run with 1 and then 2 dispatchers, each time with A's tenant on another work
//! shard than B's and then on B's own shard (tenants share 8 shards: 1 pair in 8 does, the case
//! where B's fresh deliveries are in one queue with A's burst). Waits are bounded, so what never arrived is
//! reported as lost rather than waited for. `--scale` shrinks the event counts and B's 60 s
//! (not below 10 s); the hold, the timeouts and the retry schedule stay as they are, since they
//! are what A's misbehaviour is made of.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use axum::http::StatusCode;
use futures::StreamExt;
use herald_proto::v1 as pb;
use herald_proto::v1::events_client::EventsClient;
use serde::Serialize;
use uuid::Uuid;

use crate::cli::Settings;
use crate::db::{Outcome, Poller};
use crate::grpc::authed;
use crate::load::{self, LoadSpec, Tenant};
use crate::noisy_report::{self, AFigures, BFigures, EndpointFigures, NoisyEntry, NoisyReport};
use crate::procs::Herald;
use crate::receiver::{Behaviour, ManagedPath, Receiver, ReceiverOptions};
use crate::run::wait_receiver;

/// Dispatcher processes of each run, in order.
const DISPATCHER_COUNTS: [usize; 2] = [1, 2];
/// Whether A's tenant is on B's work shard, in the order run for each dispatcher count.
const SAME_SHARD: [bool; 2] = [false, true];
/// Tenants created at most to find one on (or off) B's shard.
const SHARD_TRIES: usize = 64;
/// A's events per endpoint, and B's rate and duration (before `--scale`).
const A_EVENTS: u64 = 10_000;
const B_RATE: f64 = 100.0;
const B_SECS: u64 = 60;
/// Fewer seconds of B give too few samples for a p99.
const MIN_B_SECS: u64 = 10;
const B_PAYLOAD_BYTES: usize = 128;
/// How long H's path holds a request, and H's timeout: every attempt at H times out.
const HOLD: Duration = Duration::from_secs(25);
const H_TIMEOUT_MS: u32 = 20_000;
const E_TIMEOUT_MS: u32 = 10_000;
const E_RETRY_SCHEDULE_MS: [u32; 2] = [1_000, 2_000];
/// The longest wait for A's deliveries to become final once H recovered.
const DRAIN_BOUND: Duration = Duration::from_secs(360);
/// How long B's deliveries are waited for once its publishing ended.
const B_GRACE: Duration = Duration::from_secs(30);
/// A publishes with PublishBatch of this many events, this many calls at once.
const A_BATCH: u64 = 500;
const A_CALLERS: usize = 4;
/// How often the ledger is asked about A's deliveries during the drain.
const DRAIN_POLL: Duration = Duration::from_secs(1);
const H_PATH: &str = "/a/hold";
const E_PATH: &str = "/a/fail";
const H_EVENT_TYPE: &str = "noisy.hold";
const E_EVENT_TYPE: &str = "noisy.fail";
/// The run's default retry schedule (only B's endpoint uses it, and B never fails).
const RUN_RETRY_SCHEDULE: &str = "1s,1s";
/// Environment of the Herald processes: no publish rate limit (A publishes 20,000 events in
/// seconds; 0 is unlimited), and no endpoint disabled for its failures (H and E fail on
/// purpose). `--set` still wins.
const PROCESS_ENV: [(&str, &str); 2] = [
    ("HERALD_PUBLISH_RATE_LIMIT", "0"),
    ("HERALD_DISABLE_AFTER_FAILURES", "0"),
];

/// The sizes of a noisy-neighbour run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// A's events to H, and as many to E.
    pub a_events_per_endpoint: u64,
    pub b_rate: f64,
    pub b_secs: u64,
    pub hold_secs: u64,
    pub h_timeout_ms: u32,
    pub e_retry_schedule_ms: Vec<u32>,
    pub drain_bound_secs: u64,
}

impl Plan {
    /// The standard plan with its counts and B's duration multiplied by `scale`;
    /// `a_events` replaces A's events per endpoint.
    pub fn new(scale: f64, a_events: Option<u64>) -> Self {
        let scaled = |base: u64| (base as f64 * scale).round() as u64;
        Self {
            a_events_per_endpoint: a_events.unwrap_or_else(|| scaled(A_EVENTS).max(1)),
            b_rate: B_RATE,
            b_secs: scaled(B_SECS).max(MIN_B_SECS),
            hold_secs: HOLD.as_secs(),
            h_timeout_ms: H_TIMEOUT_MS,
            e_retry_schedule_ms: E_RETRY_SCHEDULE_MS.to_vec(),
            drain_bound_secs: DRAIN_BOUND.as_secs(),
        }
    }

    /// Requests one E delivery gets: the first attempt and its retries.
    pub fn e_attempts(&self) -> u32 {
        1 + self.e_retry_schedule_ms.len() as u32
    }

    fn b_spec(&self) -> LoadSpec {
        LoadSpec {
            endpoints: 1,
            events: (self.b_rate * self.b_secs as f64).round() as u64,
            rate: Some(self.b_rate),
            payload_bytes: B_PAYLOAD_BYTES,
            ..LoadSpec::default()
        }
    }
}

/// Runs the scenario once per dispatcher count and placement of A, printing each run as it
/// ends.
pub async fn run_all(settings: &Settings, plan: &Plan) -> Vec<NoisyEntry> {
    let mut entries = Vec::with_capacity(DISPATCHER_COUNTS.len() * SAME_SHARD.len());
    for dispatchers in DISPATCHER_COUNTS {
        for same_shard in SAME_SHARD {
            let result = run_once(settings, plan, dispatchers, same_shard).await;
            let entry = NoisyEntry::new(dispatchers, same_shard, result);
            noisy_report::print(&entry);
            entries.push(entry);
        }
    }
    entries
}

/// Says what the run is doing, on stderr like the other scenarios.
fn progress(dispatchers: usize, what: &str) {
    eprintln!("bench: noisy-neighbour/{dispatchers}: {what}");
}

async fn run_once(
    settings: &Settings,
    plan: &Plan,
    dispatchers: usize,
    same_shard: bool,
) -> Result<NoisyReport> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(settings.timeout);
    let mut set: Vec<String> = PROCESS_ENV
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    set.extend(settings.set.iter().cloned());
    let settings = Settings {
        dispatchers,
        set,
        ..settings.clone()
    };
    progress(dispatchers, "starting Herald");
    let mut herald = Herald::start(&settings, RUN_RETRY_SCHEDULE, deadline).await?;
    let result = measure(&settings, plan, &herald, same_shard, start, deadline).await;
    progress(
        dispatchers,
        &format!("stopping Herald and removing {}", herald.name),
    );
    herald.stop().await;
    result
}

async fn measure(
    settings: &Settings,
    plan: &Plan,
    herald: &Herald,
    same_shard: bool,
    start: Instant,
    deadline: Instant,
) -> Result<NoisyReport> {
    let options = ReceiverOptions {
        delay: Duration::ZERO,
        verify_every: settings.verify_every,
    };
    let alone = {
        let receiver = Receiver::start(start, options.clone()).await?;
        alone(settings, plan, herald, &receiver, start, deadline).await?
    };
    let receiver = Receiver::start(start, options).await?;
    let (a, under) = under_a(
        settings, plan, herald, &receiver, same_shard, start, deadline,
    )
    .await?;
    Ok(NoisyReport::new(
        settings.dispatchers,
        plan.clone(),
        alone,
        under,
        a,
        herald.log_dir.display().to_string(),
    ))
}

/// Waits, at most [`B_GRACE`], until the receiver has B's `accepted` events.
async fn wait_b(receiver: &Receiver, accepted: u64, deadline: Instant) {
    wait_receiver(receiver, accepted, deadline.min(Instant::now() + B_GRACE)).await;
}

/// Phase 1: B alone.
async fn alone(
    settings: &Settings,
    plan: &Plan,
    herald: &Herald,
    receiver: &Receiver,
    start: Instant,
    deadline: Instant,
) -> Result<BFigures> {
    let spec = plan.b_spec();
    progress(
        settings.dispatchers,
        &format!("B alone: {} events", spec.events),
    );
    let target = load::setup(herald, receiver, &spec).await?;
    let outcome = load::publish(&target, &spec, start, deadline).await;
    wait_b(receiver, outcome.accepted, deadline).await;
    Ok(BFigures::new(&outcome, receiver))
}

/// Tenant A: its endpoints' paths on the receiver and their ids in the ledger.
struct Neighbour {
    tenant: Tenant,
    hold: Arc<ManagedPath>,
    fail: Arc<ManagedPath>,
    hold_id: Uuid,
    fail_id: Uuid,
}

/// Creates tenant A on B's work shard (`same_shard`) or on another one.
async fn tenant_a(herald: &Herald, b_shard: Option<usize>, same_shard: bool) -> Result<Tenant> {
    let mut tenant = load::create_tenant(herald, "noisy-a").await?;
    for _ in 1..SHARD_TRIES {
        let shard = tenant.id.parse::<Uuid>().map(herald_broker::shard_of).ok();
        if (shard == b_shard) == same_shard {
            break;
        }
        tenant = load::create_tenant(herald, "noisy-a").await?;
    }
    let shard = tenant.id.parse::<Uuid>().map(herald_broker::shard_of).ok();
    anyhow::ensure!(
        (shard == b_shard) == same_shard,
        "no tenant A {} B's shard within {SHARD_TRIES} tries",
        if same_shard { "on" } else { "off" }
    );
    Ok(tenant)
}

async fn setup_a(receiver: &Receiver, plan: &Plan, tenant: Tenant) -> Result<Neighbour> {
    let hold = receiver.manage(
        H_PATH,
        Behaviour {
            hold: Duration::from_secs(plan.hold_secs),
            status: StatusCode::OK,
        },
    );
    let fail = receiver.manage(E_PATH, Behaviour::answer(StatusCode::INTERNAL_SERVER_ERROR));
    let h = pb::CreateEndpointRequest {
        event_types: vec![H_EVENT_TYPE.into()],
        timeout_ms: Some(plan.h_timeout_ms),
        no_retries: true,
        ..Default::default()
    };
    let e = pb::CreateEndpointRequest {
        event_types: vec![E_EVENT_TYPE.into()],
        timeout_ms: Some(E_TIMEOUT_MS),
        retry_schedule_ms: plan.e_retry_schedule_ms.clone(),
        ..Default::default()
    };
    let hold_id = load::create_endpoint(&tenant, receiver, H_PATH, h).await?;
    let fail_id = load::create_endpoint(&tenant, receiver, E_PATH, e).await?;
    Ok(Neighbour {
        tenant,
        hold,
        fail,
        hold_id,
        fail_id,
    })
}

/// What A's publishing achieved, accepted events counted per endpoint.
#[derive(Debug, Default)]
struct APublished {
    attempted: u64,
    accepted_hold: u64,
    accepted_fail: u64,
    fanout: u64,
    errors: BTreeMap<String, u64>,
    secs: f64,
}

/// A's even events go to H, the odd ones to E, so both backlogs are interleaved in the queue.
fn to_hold(seq: u64) -> bool {
    seq.is_multiple_of(2)
}

async fn publish_a(tenant: &Tenant, per_endpoint: u64, deadline: Instant) -> APublished {
    let begin = Instant::now();
    let total = 2 * per_endpoint;
    let client = EventsClient::new(tenant.channel.clone());
    let calls = (0..total).step_by(A_BATCH as usize).map(|first| {
        let mut client = client.clone();
        let seqs = first..(first + A_BATCH).min(total);
        let events = seqs
            .clone()
            .map(|seq| pb::PublishRequest {
                event_type: if to_hold(seq) {
                    H_EVENT_TYPE
                } else {
                    E_EVENT_TYPE
                }
                .to_owned(),
                payload: format!(r#"{{"seq":{seq}}}"#).into_bytes(),
                ..Default::default()
            })
            .collect();
        let request = authed(pb::PublishBatchRequest { events }, &tenant.auth);
        async move { (seqs, client.publish_batch(request).await) }
    });
    let mut out = APublished::default();
    let mut answers = futures::stream::iter(calls).buffer_unordered(A_CALLERS);
    let until = tokio::time::Instant::from_std(deadline);
    while let Ok(Some((seqs, answer))) = tokio::time::timeout_at(until, answers.next()).await {
        out.attempted += seqs.end - seqs.start;
        let results = match answer {
            Ok(r) => r.into_inner().results,
            Err(s) => {
                *out.errors.entry(format!("{:?}", s.code())).or_insert(0) += seqs.end - seqs.start;
                continue;
            }
        };
        for (seq, result) in seqs.zip(results) {
            match result.outcome {
                Some(pb::publish_result::Outcome::Accepted(a)) => {
                    out.fanout += u64::from(a.deliveries);
                    if to_hold(seq) {
                        out.accepted_hold += 1;
                    } else {
                        out.accepted_fail += 1;
                    }
                }
                Some(pb::publish_result::Outcome::Error(e)) => {
                    let code = format!("{:?}", tonic::Code::from_i32(e.code));
                    *out.errors.entry(code).or_insert(0) += 1;
                }
                None => *out.errors.entry("no outcome".into()).or_insert(0) += 1,
            }
        }
    }
    out.secs = begin.elapsed().as_secs_f64();
    out
}

/// Requests A's paths received while B published, per second.
struct Window {
    hold_per_sec: f64,
    fail_per_sec: f64,
}

/// Phase 2: A's backlog, B beside it, then H's recovery and the drain.
async fn under_a(
    settings: &Settings,
    plan: &Plan,
    herald: &Herald,
    receiver: &Receiver,
    same_shard: bool,
    start: Instant,
    deadline: Instant,
) -> Result<(AFigures, BFigures)> {
    let dispatchers = settings.dispatchers;
    let spec = plan.b_spec();
    let b = load::setup(herald, receiver, &spec).await?;
    let shard = |id: &str| id.parse::<Uuid>().map(herald_broker::shard_of).ok();
    let tenant = tenant_a(herald, shard(&b.tenant_id), same_shard).await?;
    let a = setup_a(receiver, plan, tenant).await?;
    let shards = (shard(&a.tenant.id), shard(&b.tenant_id));
    progress(
        dispatchers,
        &format!(
            "A publishes {} events to H and to E (work shards: A {:?}, B {:?})",
            plan.a_events_per_endpoint, shards.0, shards.1
        ),
    );
    let published = publish_a(&a.tenant, plan.a_events_per_endpoint, deadline).await;

    progress(dispatchers, &format!("B under A: {} events", spec.events));
    let before = (a.hold.requests(), a.fail.requests(), Instant::now());
    let outcome = load::publish(&b, &spec, start, deadline).await;
    let secs = before.2.elapsed().as_secs_f64().max(1e-9);
    let window = Window {
        hold_per_sec: (a.hold.requests() - before.0) as f64 / secs,
        fail_per_sec: (a.fail.requests() - before.1) as f64 / secs,
    };
    wait_b(receiver, outcome.accepted, deadline).await;

    progress(dispatchers, "H recovers; waiting for A's deliveries to end");
    a.hold.set(Behaviour::answer(StatusCode::OK));
    let expected = [published.accepted_hold, published.accepted_fail];
    let until = deadline.min(Instant::now() + DRAIN_BOUND);
    let drain = drain_a(settings, herald, &a, expected, until).await;
    // B's stragglers, if A's backlog held them back.
    wait_b(receiver, outcome.accepted, deadline).await;
    let under = BFigures::new(&outcome, receiver);
    let mut figures = a_figures(plan, &a, &published, &window, drain);
    figures.same_shard_as_b = shards.0.is_some() && shards.0 == shards.1;
    Ok((figures, under))
}

/// The ledger's view of A's deliveries at the end of the drain.
struct Drain {
    rows: Vec<Outcome>,
    /// Seconds after the recovery until each endpoint's (H, E) and all deliveries were final.
    hold_secs: Option<f64>,
    fail_secs: Option<f64>,
    all_secs: Option<f64>,
    error: Option<String>,
}

/// Deliveries of `endpoint` with a final status in `rows`: (success, failed).
fn finals(rows: &[Outcome], endpoint: Uuid) -> (u64, u64) {
    rows.iter()
        .filter(|r| r.endpoint_id == endpoint)
        .fold((0, 0), |(ok, failed), r| match r.status.as_str() {
            "success" => (ok + r.deliveries, failed),
            "failed" => (ok, failed + r.deliveries),
            _ => (ok, failed),
        })
}

/// Polls the ledger until every one of A's `expected` (H, E) deliveries is final, or `until`.
async fn drain_a(
    settings: &Settings,
    herald: &Herald,
    a: &Neighbour,
    expected: [u64; 2],
    until: Instant,
) -> Drain {
    let recovered = Instant::now();
    let mut db = Poller::new(&settings.database_url);
    let mut drain = Drain {
        rows: Vec::new(),
        hold_secs: None,
        fail_secs: None,
        all_secs: None,
        error: None,
    };
    let mut errors = 0;
    loop {
        match db.outcomes(&herald.name, &[a.hold_id, a.fail_id]).await {
            Ok(rows) => {
                errors = 0;
                drain.rows = rows;
                drain.error = None;
            }
            Err(e) => {
                errors += 1;
                drain.error = Some(format!("reading the ledger: {e:#}"));
            }
        }
        let at = recovered.elapsed().as_secs_f64();
        let done = |id: Uuid, n: u64| {
            let (ok, failed) = finals(&drain.rows, id);
            ok + failed >= n
        };
        let hold_done = done(a.hold_id, expected[0]);
        let fail_done = done(a.fail_id, expected[1]);
        drain.hold_secs = drain.hold_secs.or(hold_done.then_some(at));
        drain.fail_secs = drain.fail_secs.or(fail_done.then_some(at));
        if hold_done && fail_done {
            drain.all_secs = Some(at);
            break;
        }
        if Instant::now() >= until || errors >= 10 {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    db.close().await;
    drain
}

fn a_figures(
    plan: &Plan,
    a: &Neighbour,
    published: &APublished,
    window: &Window,
    drain: Drain,
) -> AFigures {
    let endpoint = |path: &ManagedPath, id: Uuid, deliveries: u64, per_sec: f64| {
        let (success, failed) = finals(&drain.rows, id);
        let mut attempts = BTreeMap::new();
        for r in drain.rows.iter().filter(|r| r.endpoint_id == id) {
            if r.status == "success" || r.status == "failed" {
                *attempts.entry(r.attempts).or_insert(0) += r.deliveries;
            }
        }
        EndpointFigures {
            deliveries,
            attempts_per_sec: per_sec,
            requests: path.requests(),
            max_held: path.max_in_flight(),
            success,
            failed,
            attempts,
            extra_requests: 0,
            final_after_secs: None,
        }
    };
    let hold = EndpointFigures {
        extra_requests: a.hold.requests_beyond(1),
        final_after_secs: drain.hold_secs,
        ..endpoint(
            &a.hold,
            a.hold_id,
            published.accepted_hold,
            window.hold_per_sec,
        )
    };
    let fail = EndpointFigures {
        extra_requests: a.fail.requests_beyond(plan.e_attempts()),
        final_after_secs: drain.fail_secs,
        ..endpoint(
            &a.fail,
            a.fail_id,
            published.accepted_fail,
            window.fail_per_sec,
        )
    };
    AFigures {
        attempted: published.attempted,
        accepted: published.accepted_hold + published.accepted_fail,
        fanout: published.fanout,
        publish_errors: published.errors.clone(),
        publish_secs: published.secs,
        hold,
        fail,
        drain_secs: drain.all_secs,
        ledger_error: drain.error,
        same_shard_as_b: false,
    }
}
