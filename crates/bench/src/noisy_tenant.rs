//! noisy-tenant: can one tenant starve the service for the others through any cost it
//! controls?
//!
//! noisy-neighbour covers endpoints that hang or fail; this covers what a tenant does through
//! the API: filters that are costly to evaluate, maximal fan-out, replays, test sends to an
//! endpoint that never answers, and calls with tokens that were never issued. Each is one of
//! A's attacks ([`crate::noisy_tenant_attacks`]); a well-behaved tenant B measures what it
//! costs the others.
//!
//! One installation (1 ingest, 1 ledger, `--dispatchers`, Herald's default limits), one tenant
//! B for the whole run, and phases of 20 s (`--scale`d, not below 10 s), each on a receiver of
//! its own (kept until the end, so a late delivery of one phase never counts in another) with a
//! fresh endpoint of B's: first B alone, then one phase per attack, A running for the whole
//! phase beside B. In every phase B publishes 50 events/s (open loop, one Publish per event,
//! small payloads) and lists its deliveries once a second (ListDeliveries, from the intended
//! time too).
//!
//! A phase ends with A's loops; then B's deliveries are waited for (at most 30 s, what is still
//! missing counts as slowest), A's endpoints are deleted, and the next phase starts only once
//! the installation is quiet again: nothing ready in the work and ledger queues and no request
//! at A's paths for 2 s (at most 3 minutes; a phase that started unclean says so).
//!
//! Ingest's and the ledger's RSS are sampled once a second through the phase: what a tenant's
//! calls make the process hold is one of the costs bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use herald_proto::v1 as pb;
use herald_proto::v1::deliveries_client::DeliveriesClient;
use herald_proto::v1::endpoints_client::EndpointsClient;
use serde::Serialize;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::cli::Settings;
use crate::grpc::{self, authed};
use crate::load::{self, LoadSpec, Target, Tenant};
use crate::noisy_report::BFigures;
use crate::noisy_tenant_attacks::{self as attacks, Armed, Attack, AttackPlan};
use crate::noisy_tenant_report::{
    ListFigures, NoisyTenantEntry, NoisyTenantReport, PhaseEntry, PhaseFigures, TenantB,
};
use crate::procs::{BacklogProbe, Herald};
use crate::receiver::{ManagedPath, Receiver, ReceiverOptions};
use crate::report::percentiles;
use crate::run::wait_receiver;
use crate::usage::RssSampler;

/// A phase's length before `--scale`, and its floor (fewer seconds give too few samples).
const PHASE_SECS: u64 = 20;
const MIN_PHASE_SECS: u64 = 10;
/// B's publishing and listing.
const B_RATE: f64 = 50.0;
const B_PAYLOAD_BYTES: usize = 128;
const LIST_EVERY: Duration = Duration::from_secs(1);
const B_PATH: &str = "/b";
/// How long B's deliveries are waited for once the phase ended.
const B_GRACE: Duration = Duration::from_secs(30);
/// The longest wait for the installation to be quiet after a phase, and how long it must stay
/// quiet.
const SETTLE_BOUND: Duration = Duration::from_secs(180);
const QUIET: Duration = Duration::from_secs(2);
/// The run's retry schedule (only B's endpoint and A's answering ones use it; none fails).
const RUN_RETRY_SCHEDULE: &str = "1s,1s";

/// The sizes of a noisy-tenant run.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub phase_secs: u64,
    pub b_rate: f64,
    pub b_payload_bytes: usize,
    pub list_every_ms: u64,
    pub b_grace_secs: u64,
    pub settle_bound_secs: u64,
    pub attacks: AttackPlan,
}

impl Plan {
    /// The standard plan with its phases' length multiplied by `scale` (not below 10 s).
    pub fn new(scale: f64) -> Self {
        Self {
            phase_secs: ((PHASE_SECS as f64 * scale).round() as u64).max(MIN_PHASE_SECS),
            b_rate: B_RATE,
            b_payload_bytes: B_PAYLOAD_BYTES,
            list_every_ms: LIST_EVERY.as_millis() as u64,
            b_grace_secs: B_GRACE.as_secs(),
            settle_bound_secs: SETTLE_BOUND.as_secs(),
            attacks: AttackPlan::standard(),
        }
    }

    fn b_spec(&self) -> LoadSpec {
        LoadSpec {
            endpoints: 1,
            events: (self.b_rate * self.phase_secs as f64).round() as u64,
            rate: Some(self.b_rate),
            payload_bytes: self.b_payload_bytes,
            ..LoadSpec::default()
        }
    }
}

/// Says what the run is doing, on stderr like the other scenarios.
fn progress(what: &str) {
    eprintln!("bench: noisy-tenant: {what}");
}

/// Runs the scenario and prints it as it ends.
pub async fn run(settings: &Settings, plan: &Plan) -> NoisyTenantEntry {
    let entry = NoisyTenantEntry::new(run_once(settings, plan).await);
    crate::noisy_tenant_report::print(&entry);
    entry
}

async fn run_once(settings: &Settings, plan: &Plan) -> Result<NoisyTenantReport> {
    let start = Instant::now();
    progress("starting Herald");
    let boot_deadline = start + Duration::from_secs(settings.timeout);
    let mut herald = Herald::start(settings, RUN_RETRY_SCHEDULE, boot_deadline).await?;
    let result = phases(settings, plan, &herald, start).await;
    progress(&format!("stopping Herald and removing {}", herald.name));
    herald.stop().await;
    result
}

/// Tenant B and what it publishes and lists with.
struct B {
    tenant: Tenant,
    target: Target,
    ledger: Channel,
    shard: usize,
}

/// What every phase shares.
struct Run<'a> {
    settings: &'a Settings,
    plan: &'a Plan,
    herald: &'a Herald,
    start: Instant,
    b: B,
    /// The receivers of the phases so far, kept so late deliveries still find theirs.
    receivers: Vec<Receiver>,
    probe: BacklogProbe,
}

async fn phases(
    settings: &Settings,
    plan: &Plan,
    herald: &Herald,
    start: Instant,
) -> Result<NoisyTenantReport> {
    let tenant = load::create_tenant(herald, "noisy-tenant-b").await?;
    let id = Uuid::parse_str(&tenant.id).with_context(|| format!("tenant id {}", tenant.id))?;
    let b = B {
        target: load::target(herald, &tenant).await?,
        ledger: grpc::connect(herald.ledger_addr).await?,
        shard: herald_broker::shard_of(id),
        tenant,
    };
    let mut run = Run {
        settings,
        plan,
        herald,
        start,
        b,
        receivers: Vec::new(),
        probe: herald.backlog_probe(),
    };
    let mut entries = Vec::with_capacity(1 + Attack::ALL.len());
    for attack in std::iter::once(None).chain(Attack::ALL.map(Some)) {
        let name = attack.map_or("alone", Attack::as_str);
        progress(&format!("phase {name}"));
        let result = run.phase(attack).await;
        if let Err(e) = &result {
            progress(&format!("phase {name} failed: {e:#}"));
        }
        entries.push(PhaseEntry::new(name, result));
    }
    let shard = run.b.shard;
    run.probe.close().await;
    Ok(NoisyTenantReport::new(
        plan.clone(),
        shard,
        entries,
        herald.log_dir.display().to_string(),
    ))
}

impl Run<'_> {
    /// One phase on a receiver and an endpoint of B's of its own: B beside `attack` (alone
    /// when None), then the wait for a quiet installation. B's endpoint is deleted after it
    /// whatever happened, so B's later events fan out to the next phase's endpoint alone.
    async fn phase(&mut self, attack: Option<Attack>) -> Result<PhaseFigures> {
        let options = ReceiverOptions {
            delay: Duration::ZERO,
            verify_every: self.settings.verify_every,
        };
        let receiver = Receiver::start(self.start, options).await?;
        let result = match self.b_endpoint(&receiver).await {
            Ok(endpoint) => {
                let result = self.beside(attack, &receiver).await;
                let deleted = self.delete_b_endpoint(endpoint).await;
                result.map(|mut figures| {
                    figures
                        .notes
                        .extend(deleted.err().map(|e| format!("{e:#}")));
                    figures
                })
            }
            Err(e) => Err(e),
        };
        self.receivers.push(receiver);
        result
    }

    async fn beside(
        &mut self,
        attack: Option<Attack>,
        receiver: &Receiver,
    ) -> Result<PhaseFigures> {
        let deadline = Instant::now() + Duration::from_secs(self.settings.timeout);
        let armed = match attack {
            Some(a) => {
                let shard = self.b.shard;
                Some(attacks::arm(a, self.settings, self.herald, receiver, shard).await?)
            }
            None => None,
        };
        let paths: &[Arc<ManagedPath>] = armed.as_ref().map_or(&[], |a| a.paths());
        // Quiet before the phase: arming an attack may have queued work of its own.
        let quiet_before = self.settle(paths).await;
        let mut figures = self.measure(receiver, armed.as_ref(), deadline).await;
        if quiet_before.is_none() {
            let note = "the installation was not quiet when the phase began";
            figures.notes.push(note.to_owned());
        }
        if let Some(a) = &armed {
            figures.notes.extend(a.disarm().await);
        }
        figures.settle_secs = self.settle(paths).await;
        let accepted = figures.b.delivery.accepted;
        figures.b_lost = accepted.saturating_sub(receiver.delivered());
        Ok(figures)
    }

    /// B's publishing and listing beside A's attack for one phase, and B's deliveries waited
    /// for.
    async fn measure(
        &self,
        receiver: &Receiver,
        armed: Option<&Armed>,
        deadline: Instant,
    ) -> PhaseFigures {
        let spec = self.plan.b_spec();
        let pid = |role: &str| {
            self.herald
                .pids()
                .into_iter()
                .filter(|(r, _)| r == role)
                .map(|(_, pid)| pid)
                .collect::<Vec<_>>()
        };
        let ingest_rss = RssSampler::start(pid("ingest"), self.start);
        let ledger_rss = RssSampler::start(pid("ledger"), self.start);
        let began = Instant::now();
        let until = began + Duration::from_secs(self.plan.phase_secs);
        let attack = async {
            match armed {
                Some(a) => Some(a.run(until).await),
                None => None,
            }
        };
        let (outcome, list, a) = tokio::join!(
            load::publish(&self.b.target, &spec, self.start, deadline),
            list_deliveries(&self.b.ledger, &self.b.tenant.auth, until),
            attack
        );
        let secs = began.elapsed().as_secs_f64();
        let grace = deadline.min(Instant::now() + B_GRACE);
        wait_receiver(receiver, outcome.accepted, grace).await;
        let b = TenantB {
            publish_call: percentiles(outcome.latencies_us.clone()),
            delivery: BFigures::new(&outcome, receiver),
            list,
        };
        PhaseFigures {
            secs,
            b,
            a,
            ingest_rss_mb: ingest_rss.finish().await.max_mb,
            ledger_rss_mb: ledger_rss.finish().await.max_mb,
            ..PhaseFigures::default()
        }
    }

    /// Creates B's endpoint of this phase on `receiver`, and calls the ledger once so B's key
    /// is known there before anything is measured (ingest knows it from the creation).
    async fn b_endpoint(&self, receiver: &Receiver) -> Result<Uuid> {
        let request = pb::CreateEndpointRequest {
            event_types: vec!["*".into()],
            timeout_ms: Some(10_000),
            ..Default::default()
        };
        let id = load::create_endpoint(&self.b.tenant, receiver, B_PATH, request).await?;
        DeliveriesClient::new(self.b.ledger.clone())
            .list_deliveries(authed(
                pb::ListDeliveriesRequest::default(),
                &self.b.tenant.auth,
            ))
            .await
            .context("B's first ListDeliveries")?;
        Ok(id)
    }

    async fn delete_b_endpoint(&self, id: Uuid) -> Result<()> {
        let request = pb::DeleteEndpointRequest { id: id.to_string() };
        EndpointsClient::new(self.b.tenant.channel.clone())
            .delete_endpoint(authed(request, &self.b.tenant.auth))
            .await
            .context("deleting B's endpoint of the phase")?;
        Ok(())
    }

    /// Waits until nothing is ready in the work and ledger queues and `paths` received no
    /// request for [`QUIET`]; the seconds that took, None when [`SETTLE_BOUND`] passed first.
    async fn settle(&mut self, paths: &[Arc<ManagedPath>]) -> Option<f64> {
        let began = Instant::now();
        let requests = || paths.iter().map(|p| p.requests()).sum::<u64>();
        let mut last = (requests(), Instant::now());
        let mut empty_since: Option<Instant> = None;
        while began.elapsed() < SETTLE_BOUND {
            let now = requests();
            if now != last.0 {
                last = (now, Instant::now());
            }
            match self.probe.ready().await {
                Some(0) => {
                    let since = *empty_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= QUIET && last.1.elapsed() >= QUIET {
                        return Some(began.elapsed().as_secs_f64());
                    }
                }
                _ => empty_since = None,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }
}

/// B's ListDeliveries, one every [`LIST_EVERY`] until `until`, each timed from when it was due.
async fn list_deliveries(
    ledger: &Channel,
    auth: &AsciiMetadataValue,
    until: Instant,
) -> ListFigures {
    let mut client = DeliveriesClient::new(ledger.clone());
    let began = Instant::now();
    let mut figures = ListFigures::default();
    let mut latencies = Vec::new();
    for i in 0.. {
        let due = began + LIST_EVERY * i;
        if due >= until {
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        let request = authed(pb::ListDeliveriesRequest::default(), auth);
        match client.list_deliveries(request).await {
            Ok(_) => latencies.push(due.elapsed().as_micros() as u64),
            Err(s) => *figures.errors.entry(format!("{:?}", s.code())).or_insert(0) += 1,
        }
        figures.calls += 1;
    }
    figures.latency = percentiles(latencies);
    figures
}
