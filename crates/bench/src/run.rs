//! One measured run: receiver up, Herald up, tenant and endpoints created, load published,
//! then wait until the receiver has every expected delivery and the ledger has recorded all of
//! them, and account for what it cost.
//!
//! Every wait is bounded by the run's deadline (`--timeout`) and by a stall rule (no progress
//! for a minute), and Herald is stopped and its data removed whatever happened.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::task::JoinHandle;

use crate::cli::Settings;
use crate::db::{self, LedgerPoll};
use crate::load::{self, LoadSpec, PublishOutcome};
use crate::procs::Herald;
use crate::receiver::{Receiver, ReceiverOptions, ReceiverStats};
use crate::report::{CpuCost, LedgerFigures, RunReport, percentiles};
use crate::usage::{CpuSnapshot, RssSampler, RssTrend, Usage, usage_between};

/// Give up waiting for deliveries when none arrived for this long.
const STALL: Duration = Duration::from_secs(60);

/// Runs one load against a fresh Herald and reports on it.
pub async fn run_one(settings: &Settings, scenario: &str, spec: &LoadSpec) -> Result<RunReport> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(settings.timeout);
    let receiver = Receiver::start(
        start,
        ReceiverOptions {
            delay: Duration::from_millis(spec.delay_ms),
            verify_every: settings.verify_every,
        },
    )
    .await?;
    eprintln!("bench: {scenario}: starting Herald");
    let accept_only = Settings {
        dispatchers: 0,
        ..settings.clone()
    };
    let settings = if spec.accept_only {
        &accept_only
    } else {
        settings
    };
    let mut herald = Herald::start(settings, &spec.retry_schedule, deadline).await?;
    let run = Run {
        settings,
        scenario,
        spec,
        herald: &herald,
        receiver: &receiver,
        start,
        deadline,
    };
    let result = measure(&run).await;
    eprintln!(
        "bench: {scenario}: stopping Herald and removing {}",
        herald.name
    );
    herald.stop().await;
    result
}

/// The run being measured: what it was asked for, what serves it, and its clock.
struct Run<'a> {
    settings: &'a Settings,
    scenario: &'a str,
    spec: &'a LoadSpec,
    herald: &'a Herald,
    receiver: &'a Receiver,
    start: Instant,
    deadline: Instant,
}

/// Sets up the tenant and endpoints, publishes the load, waits for the receiver and the
/// ledger, and reports on the run.
async fn measure(run: &Run<'_>) -> Result<RunReport> {
    let (scenario, spec, receiver, deadline) = (run.scenario, run.spec, run.receiver, run.deadline);
    let target = load::setup(run.herald, receiver, spec).await?;
    let watch = Watch::start(run);

    eprintln!(
        "bench: {scenario}: publishing {} events to {} endpoint(s)",
        spec.events, spec.endpoints
    );
    let outcome = load::publish(&target, spec, run.start, deadline).await;
    let deliveries_expected = if spec.accept_only {
        0
    } else {
        outcome.accepted * spec.ok_endpoints() as u64
    };
    watch.expected.store(deliveries_expected, Ordering::SeqCst);
    let mut notes = publish_notes(spec, &outcome);

    eprintln!("bench: {scenario}: waiting for {deliveries_expected} deliveries");
    let delivered_all = wait_receiver(receiver, deliveries_expected, deadline).await;
    if !delivered_all {
        notes.push(format!(
            "the receiver got {} of {deliveries_expected} deliveries before giving up",
            receiver.delivered()
        ));
    }
    eprintln!("bench: {scenario}: waiting for the ledger");
    let (poll, usage, dispatcher_rss) = watch.finish(deadline).await;
    Ok(build_report(
        run,
        Collected {
            outcome,
            deliveries_expected,
            notes,
            poll,
            usage,
            dispatcher_rss,
        },
    ))
}

/// What runs beside the load: CPU and RSS accounting, and the ledger poller (told how many
/// deliveries to expect once publishing has ended).
struct Watch {
    procs: Vec<(String, u32)>,
    cpu_begin: CpuSnapshot,
    rss: RssSampler,
    expected: Arc<AtomicU64>,
    ledger_task: JoinHandle<LedgerPoll>,
}

impl Watch {
    /// Takes the first CPU snapshot of Herald and the bench, starts sampling the dispatchers'
    /// RSS and starts polling the ledger.
    fn start(run: &Run<'_>) -> Self {
        let herald = run.herald;
        let mut procs = herald.pids();
        procs.push(("bench".to_owned(), std::process::id()));
        let cpu_begin = CpuSnapshot::take(&procs);
        let rss = RssSampler::start(herald.dispatcher_pids(), run.start);
        let expected = Arc::new(AtomicU64::new(u64::MAX));
        let ledger_task = tokio::spawn(db::poll_ledger(
            run.settings.database_url.clone(),
            herald.name.clone(),
            run.start,
            expected.clone(),
            run.deadline,
        ));
        Self {
            procs,
            cpu_begin,
            rss,
            expected,
            ledger_task,
        }
    }

    /// Waits for the ledger poller, then ends the CPU window and the RSS sampling.
    async fn finish(self, deadline: Instant) -> (LedgerPoll, Usage, RssTrend) {
        let poll = wait_ledger(self.ledger_task, deadline).await;
        let cpu_end = CpuSnapshot::take(&self.procs);
        let dispatcher_rss = self.rss.finish().await;
        let usage = usage_between(&self.cpu_begin, &cpu_end);
        (poll, usage, dispatcher_rss)
    }
}

/// The ledger poller's result; a poll carrying the error when it failed or outlived the
/// deadline by more than 35 s.
async fn wait_ledger(task: JoinHandle<LedgerPoll>, deadline: Instant) -> LedgerPoll {
    let ledger_wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(35);
    match tokio::time::timeout(ledger_wait, task).await {
        Ok(Ok(poll)) => poll,
        Ok(Err(e)) => LedgerPoll {
            error: Some(format!("ledger poller failed: {e}")),
            ..Default::default()
        },
        Err(_) => LedgerPoll {
            error: Some("ledger poller did not finish".into()),
            ..Default::default()
        },
    }
}

/// Notes on publishing: an acceptance-only run, a fan-out other than the endpoints'.
fn publish_notes(spec: &LoadSpec, outcome: &PublishOutcome) -> Vec<String> {
    let mut notes = Vec::new();
    if spec.accept_only {
        notes.push("acceptance only: no dispatcher ran, nothing was delivered".to_owned());
    }
    let fanout_per_event = spec.endpoints as u64;
    if outcome.fanout != outcome.accepted * fanout_per_event {
        notes.push(format!(
            "Herald reported a fan-out of {} for {} accepted events ({} expected)",
            outcome.fanout,
            outcome.accepted,
            outcome.accepted * fanout_per_event
        ));
    }
    notes
}

/// Notes on what the receiver saw (foreign bodies, missing ids) and on a saturated open loop.
fn receiver_notes(notes: &mut Vec<String>, stats: &ReceiverStats, outcome: &PublishOutcome) {
    if stats.unparsed_bodies > 0 {
        notes.push(format!(
            "{} deliveries carried a body the load generator did not write",
            stats.unparsed_bodies
        ));
    }
    if stats.missing_id > 0 {
        notes.push(format!(
            "{} deliveries had no delivery id header",
            stats.missing_id
        ));
    }
    if let Some(o) = &outcome.open_loop
        && o.saturated
    {
        notes.push("open loop hit the in-flight cap: latencies are understated".into());
    }
}

/// What a run gathered once the load was published and waited for.
struct Collected {
    outcome: PublishOutcome,
    deliveries_expected: u64,
    notes: Vec<String>,
    poll: LedgerPoll,
    usage: Usage,
    dispatcher_rss: RssTrend,
}

/// Turns what the run gathered and the receiver's figures into the run's report.
fn build_report(run: &Run<'_>, c: Collected) -> RunReport {
    let Collected {
        outcome,
        deliveries_expected,
        mut notes,
        poll,
        usage,
        dispatcher_rss,
    } = c;
    let stats = run.receiver.stats();
    let publish_start = outcome.started_ns as f64 / 1e9;
    let publish_secs =
        (outcome.finished_ns.saturating_sub(outcome.started_ns) as f64 / 1e9).max(1e-9);
    let deliver_secs =
        (stats.last_delivered_ns.saturating_sub(outcome.started_ns) as f64 / 1e9).max(1e-9);
    let requests_secs = (run.start.elapsed().as_secs_f64() - publish_start).max(1e-9);
    let ledger = LedgerFigures::from_poll(&poll, deliveries_expected, publish_start);
    let timed_out = outcome.timed_out || Instant::now() >= run.deadline;
    receiver_notes(&mut notes, &stats, &outcome);
    // Herald's own processes are the client side; the bench (load and receiver) is not.
    let cpu_per_delivery = CpuCost::new(&usage, stats.delivered.min(deliveries_expected), |r| {
        r != "bench"
    });
    RunReport {
        scenario: run.scenario.to_owned(),
        spec: run.spec.clone(),
        queue_type: run.settings.queue_type.clone(),
        dispatchers: run.settings.dispatchers,
        ingests: run.settings.ingests.max(1),
        events_attempted: outcome.attempted,
        events_accepted: outcome.accepted,
        publish_errors: outcome.errors,
        fanout_reported: outcome.fanout,
        deliveries_expected,
        publish_secs,
        accepted_events_per_sec: outcome.accepted as f64 / publish_secs,
        deliver_secs,
        deliveries_per_sec: stats.delivered.min(deliveries_expected) as f64 / deliver_secs,
        requests_per_sec: stats.requests as f64 / requests_secs,
        receiver: stats,
        ledger,
        publish_latency: percentiles(outcome.latencies_us),
        end_to_end_latency: percentiles(run.receiver.take_latencies()),
        open_loop: outcome.open_loop,
        cpu_per_delivery,
        usage,
        dispatcher_rss,
        timed_out,
        notes,
        log_dir: run.herald.log_dir.display().to_string(),
    }
}

/// Waits until the receiver has `expected` distinct deliveries; false on deadline or stall.
pub async fn wait_receiver(receiver: &Receiver, expected: u64, deadline: Instant) -> bool {
    let mut last = (receiver.delivered(), Instant::now());
    loop {
        let n = receiver.delivered();
        if n >= expected {
            return true;
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        if Instant::now() >= deadline || last.1.elapsed() > STALL {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
