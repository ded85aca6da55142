//! What a run found, in one shape for the terminal, the JSON file and BENCHMARKS.md.
//!
//! Latencies are kept as raw samples until the end and reduced to exact percentiles here
//! (a few hundred thousand values sort in milliseconds); the rows shown to people are built
//! once, so the terminal and the Markdown never disagree.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::db::LedgerPoll;
use crate::load::{LoadSpec, OpenLoopStats};
use crate::markdown::Machine;
use crate::noisy_report::NoisyEntry;
use crate::noisy_tenant_report::NoisyTenantEntry;
use crate::receiver::ReceiverStats;
use crate::usage::{RssTrend, Usage};

/// Exact percentiles of a latency sample, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Reduces microsecond samples to percentiles (nearest rank).
pub fn percentiles(mut us: Vec<u64>) -> Percentiles {
    if us.is_empty() {
        return Percentiles::default();
    }
    us.sort_unstable();
    let len = us.len();
    let at = |q: f64| {
        let rank = ((q * len as f64).ceil() as usize).clamp(1, len);
        us[rank - 1] as f64 / 1e3
    };
    let sum: u128 = us.iter().map(|&v| u128::from(v)).sum();
    Percentiles {
        count: len,
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: us[len - 1] as f64 / 1e3,
        mean_ms: sum as f64 / len as f64 / 1e3,
    }
}

/// How the ledger caught up, relative to the start of publishing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LedgerFigures {
    pub complete: bool,
    pub final_count: Option<u64>,
    pub secs_to_50pct: Option<f64>,
    pub secs_to_99pct: Option<f64>,
    pub secs_to_100pct: Option<f64>,
    /// Expected deliveries ÷ time until the ledger held all of them.
    pub deliveries_per_sec: Option<f64>,
    pub error: Option<String>,
}

impl LedgerFigures {
    /// Reads the thresholds off the poll samples; `publish_start` in seconds since start.
    pub fn from_poll(poll: &LedgerPoll, expected: u64, publish_start: f64) -> Self {
        let reached = |share: f64| {
            let need = (expected as f64 * share).ceil() as u64;
            poll.samples
                .iter()
                .find(|(_, n)| *n >= need)
                .map(|(t, _)| (t - publish_start).max(0.0))
        };
        let secs_to_100pct = poll.complete_at.map(|t| (t - publish_start).max(0.0));
        Self {
            complete: poll.complete_at.is_some(),
            final_count: poll.final_count,
            secs_to_50pct: reached(0.50),
            secs_to_99pct: reached(0.99),
            secs_to_100pct,
            deliveries_per_sec: secs_to_100pct
                .filter(|s| *s > 0.0)
                .map(|s| expected as f64 / s),
            error: poll.error.clone(),
        }
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub spec: LoadSpec,
    pub queue_type: String,
    pub dispatchers: usize,
    pub ingests: usize,
    pub events_attempted: u64,
    pub events_accepted: u64,
    pub publish_errors: BTreeMap<String, u64>,
    /// Sum of the fan-out Herald reported for the accepted events.
    pub fanout_reported: u64,
    /// Deliveries the receiver must answer 200 (accepted events × ok endpoints).
    pub deliveries_expected: u64,
    pub publish_secs: f64,
    pub accepted_events_per_sec: f64,
    pub receiver: ReceiverStats,
    /// From the start of publishing to the last expected delivery's arrival.
    pub deliver_secs: f64,
    pub deliveries_per_sec: f64,
    /// Every request the receiver answered (failures and retries included) per second.
    pub requests_per_sec: f64,
    pub ledger: LedgerFigures,
    /// Per call (per batch call with PublishBatch; from the intended send time in open loop).
    pub publish_latency: Percentiles,
    pub end_to_end_latency: Percentiles,
    pub open_loop: Option<OpenLoopStats>,
    pub usage: Usage,
    /// `usage` divided by the deliveries received (Herald = ingest, dispatchers, ledger).
    pub cpu_per_delivery: Option<CpuCost>,
    pub dispatcher_rss: RssTrend,
    pub timed_out: bool,
    pub notes: Vec<String>,
    pub log_dir: String,
}

impl RunReport {
    /// Why this run's figures do not describe the whole scenario (empty when they do): a run
    /// cut short, events refused, deliveries missing or mis-signed, a ledger left incomplete.
    /// `bench` prints the figures of such a run but exits non-zero.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.timed_out {
            out.push("the run hit --timeout".to_owned());
        }
        if self.events_accepted < self.events_attempted {
            out.push(format!(
                "{} of {} events were not accepted",
                self.events_attempted - self.events_accepted,
                self.events_attempted
            ));
        }
        if self.receiver.delivered < self.deliveries_expected {
            out.push(format!(
                "{} of {} deliveries never reached the receiver",
                self.deliveries_expected - self.receiver.delivered,
                self.deliveries_expected
            ));
        }
        if self.receiver.signature_failures > 0 {
            out.push(format!(
                "{} of {} signatures checked failed",
                self.receiver.signature_failures, self.receiver.signatures_checked
            ));
        }
        if !self.ledger.complete {
            out.push(match &self.ledger.error {
                Some(e) => format!("the ledger was not complete: {e}"),
                None => "the ledger was not complete".to_owned(),
            });
        }
        out
    }
}

/// One baseline's result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BaselineFigure {
    pub per_sec: Option<f64>,
    pub count: u64,
    pub secs: f64,
    pub error: Option<String>,
    /// What each message cost in CPU while the baseline ran.
    pub cpu: Option<CpuCost>,
}

/// CPU microseconds per message (or per delivery), split by who spent them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuCost {
    /// Every process of the machine (from `/proc/stat`), per unit.
    pub machine_us: f64,
    /// RabbitMQ (`beam.smp`), per unit.
    pub rabbitmq_us: f64,
    /// The client side: the bench process in a baseline, Herald's own processes in a scenario.
    pub client_us: f64,
    /// Units per second all cores of this machine would allow at `machine_us` each.
    pub cpu_ceiling_per_sec: f64,
}

impl CpuCost {
    /// The cost of `units` over the window of `u`; `client` picks the processes charged as
    /// the client side. None when nothing was counted.
    pub fn new(u: &Usage, units: u64, client: impl Fn(&str) -> bool) -> Option<Self> {
        let busy = u.machine_busy_pct?;
        if units == 0 || u.window_secs <= 0.0 {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let per = |secs: f64| secs * 1e6 / units as f64;
        let machine_us = per(busy / 100.0 * cores * u.window_secs);
        let client_secs: f64 = u
            .processes
            .iter()
            .filter(|p| client(&p.role))
            .map(|p| p.cpu_secs)
            .sum();
        Some(Self {
            machine_us,
            rabbitmq_us: per(u.infra_secs("rabbitmq")),
            client_us: per(client_secs),
            cpu_ceiling_per_sec: if machine_us > 0.0 {
                cores * 1e6 / machine_us
            } else {
                0.0
            },
        })
    }
}

/// What the machine allows without Herald in the way.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Baselines {
    pub payload_bytes: usize,
    pub queue_type: String,
    /// Persistent, confirmed (window 256) publish → consume and ack.
    pub rabbit_one_hop: BaselineFigure,
    /// The same hop with the bench's minimal client ([`crate::rawamqp`]) instead of lapin:
    /// closer to the broker's own limit.
    pub rabbit_one_hop_raw: BaselineFigure,
    /// Publish → relay (consume, republish confirmed, ack) → consume and ack.
    pub rabbit_two_hops: BaselineFigure,
    /// Persistent, confirmed (window 256) publish into a queue nobody consumes: the most a
    /// publisher can hand to the broker, the ceiling of `PublishBatch` acceptance.
    pub rabbit_publish: BaselineFigure,
    /// The same with the minimal client: the broker's own acceptance ceiling.
    pub rabbit_publish_raw: BaselineFigure,
    /// reqwest, 64 in flight, to the bench's receiver.
    pub http_post: BaselineFigure,
}

/// Herald's delivery rate as a share of each baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    pub vs_rabbit_one_hop: Option<f64>,
    pub vs_rabbit_one_hop_raw: Option<f64>,
    pub vs_rabbit_two_hops: Option<f64>,
    pub vs_http_post: Option<f64>,
    /// Accepted events/s as a share of the publish-only rate.
    pub accepted_vs_rabbit_publish: Option<f64>,
    pub accepted_vs_rabbit_publish_raw: Option<f64>,
}

impl Ratios {
    pub fn new(per_sec: f64, accepted_per_sec: f64, b: &Baselines) -> Self {
        let ratio = |f: &BaselineFigure, of: f64| f.per_sec.filter(|x| *x > 0.0).map(|x| of / x);
        let delivered = |f: &BaselineFigure| ratio(f, per_sec).filter(|_| per_sec > 0.0);
        Self {
            vs_rabbit_one_hop: delivered(&b.rabbit_one_hop),
            vs_rabbit_one_hop_raw: delivered(&b.rabbit_one_hop_raw),
            vs_rabbit_two_hops: delivered(&b.rabbit_two_hops),
            vs_http_post: delivered(&b.http_post),
            accepted_vs_rabbit_publish: ratio(&b.rabbit_publish, accepted_per_sec),
            accepted_vs_rabbit_publish_raw: ratio(&b.rabbit_publish_raw, accepted_per_sec),
        }
    }
}

/// One scenario in the output: its report or why it failed.
#[derive(Clone, Debug, Serialize)]
pub struct RunEntry {
    pub name: String,
    pub report: Option<RunReport>,
    pub error: Option<String>,
    pub ratios: Option<Ratios>,
}

impl RunEntry {
    pub fn new(name: &str, result: Result<RunReport>, baselines: Option<&Baselines>) -> Self {
        match result {
            Ok(report) => Self {
                name: name.to_owned(),
                ratios: baselines.map(|b| {
                    Ratios::new(report.deliveries_per_sec, report.accepted_events_per_sec, b)
                }),
                report: Some(report),
                error: None,
            },
            Err(e) => Self {
                name: name.to_owned(),
                report: None,
                error: Some(format!("{e:#}")),
                ratios: None,
            },
        }
    }
}

/// The whole output of one `bench` invocation.
#[derive(Clone, Debug, Serialize)]
pub struct BenchOutput {
    pub command: String,
    pub generated_at: String,
    pub machine: Option<Machine>,
    pub baselines: Option<Baselines>,
    pub runs: Vec<RunEntry>,
    /// The noisy-neighbour runs (one per dispatcher count), when it ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub noisy_neighbour: Vec<NoisyEntry>,
    /// The noisy-tenant run, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noisy_tenant: Option<NoisyTenantEntry>,
    /// The portal-log run, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub portal_log: Option<crate::portal_log::PortalLogEntry>,
    /// The broker's one-hop limit measured with the scale-out runs (which are in `runs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_out_broker: Option<BaselineFigure>,
    /// The ledger-growth run, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_growth: Option<crate::ledger_growth::LedgerGrowthEntry>,
}

pub fn write_json(path: &Path, output: &BenchOutput) -> Result<()> {
    let text = serde_json::to_string_pretty(output)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `12,345` (rounded).
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A millisecond figure with sensible precision.
pub fn ms(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else if x < 100.0 {
        format!("{x:.1}")
    } else {
        thousands(x)
    }
}

fn latency_row(p: &Percentiles) -> String {
    if p.count == 0 {
        return "no samples".into();
    }
    format!(
        "{} / {} / {} / {} ms",
        ms(p.p50_ms),
        ms(p.p90_ms),
        ms(p.p99_ms),
        ms(p.max_ms)
    )
}

fn ratio_text(r: &Ratios) -> String {
    let one = |label: &str, v: Option<f64>| v.map(|v| format!("{v:.2}× {label}"));
    let parts: Vec<String> = [
        one("RabbitMQ 1 hop", r.vs_rabbit_one_hop),
        one("RabbitMQ 1 hop, minimal client", r.vs_rabbit_one_hop_raw),
        one("RabbitMQ 2 hops", r.vs_rabbit_two_hops),
        one("bare HTTP", r.vs_http_post),
    ]
    .into_iter()
    .flatten()
    .collect();
    parts.join(", ")
}

/// (label, value) rows, in the order they are shown.
type Rows = Vec<(String, String)>;

/// Appends one (label, value) row.
fn push(rows: &mut Rows, k: &str, v: String) {
    rows.push((k.to_owned(), v));
}

/// The figures of a run as (label, value) rows.
pub fn rows(r: &RunReport, ratios: Option<&Ratios>) -> Vec<(String, String)> {
    let mut rows: Rows = Vec::new();
    throughput_rows(&mut rows, r, ratios);
    push(&mut rows, "ledger-complete deliveries/s", ledger_text(r));
    latency_rows(&mut rows, r);
    cost_rows(&mut rows, r);
    note_rows(&mut rows, r);
    rows
}

/// ` (failed: CODE n, …)` after the accepted count, or nothing when no publish failed.
fn publish_errors_text(r: &RunReport) -> String {
    if r.publish_errors.is_empty() {
        return String::new();
    }
    let list: Vec<String> = r
        .publish_errors
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    format!(" (failed: {})", list.join(", "))
}

/// Events accepted, accepted and delivered rates (with their ratios to the baselines), and
/// the receiver's requests when some were answered 500.
fn throughput_rows(rows: &mut Rows, r: &RunReport, ratios: Option<&Ratios>) {
    push(
        rows,
        "events accepted",
        format!(
            "{} of {}{}",
            thousands(r.events_accepted as f64),
            thousands(r.events_attempted as f64),
            publish_errors_text(r)
        ),
    );
    let mut accepted = format!(
        "{} over {:.1} s",
        thousands(r.accepted_events_per_sec),
        r.publish_secs
    );
    if let Some(v) = ratios.and_then(|r| r.accepted_vs_rabbit_publish) {
        accepted.push_str(&format!("; {v:.2}× RabbitMQ publish only"));
    }
    if let Some(v) = ratios.and_then(|r| r.accepted_vs_rabbit_publish_raw) {
        accepted.push_str(&format!(", {v:.2}× with the minimal client"));
    }
    push(rows, "accepted events/s", accepted);
    let mut delivered = format!(
        "{} ({} of {} deliveries in {:.1} s)",
        thousands(r.deliveries_per_sec),
        thousands(r.receiver.delivered as f64),
        thousands(r.deliveries_expected as f64),
        r.deliver_secs
    );
    if let Some(text) = ratios.map(ratio_text).filter(|t| !t.is_empty()) {
        delivered.push_str(&format!("; {text}"));
    }
    push(rows, "deliveries received/s", delivered);
    if r.receiver.failed_requests > 0 {
        push(
            rows,
            "requests incl. failures",
            format!(
                "{} ({} answered 500), {}/s",
                thousands(r.receiver.requests as f64),
                thousands(r.receiver.failed_requests as f64),
                thousands(r.requests_per_sec)
            ),
        );
    }
}

/// The ledger's rate and when it held 50, 99 and 100 % of the deliveries, or how far it got.
fn ledger_text(r: &RunReport) -> String {
    let ledger = &r.ledger;
    let at = |t: Option<f64>| t.map_or("-".to_owned(), |t| format!("{t:.1} s"));
    match ledger.deliveries_per_sec {
        Some(rate) if ledger.complete => format!(
            "{}; 50 % at {}, 99 % at {}, 100 % at {}",
            thousands(rate),
            at(ledger.secs_to_50pct),
            at(ledger.secs_to_99pct),
            at(ledger.secs_to_100pct)
        ),
        _ => format!(
            "incomplete: {} of {} ({})",
            ledger
                .final_count
                .map_or("?".to_owned(), |n| thousands(n as f64)),
            thousands(r.deliveries_expected as f64),
            ledger.error.as_deref().unwrap_or("unknown")
        ),
    }
}

/// The open-loop figures (when it ran open loop), both latencies, duplicates and signatures.
fn latency_rows(rows: &mut Rows, r: &RunReport) {
    if let Some(o) = &r.open_loop {
        push(
            rows,
            "open loop",
            format!(
                "target {}/s, achieved {}/s, max in flight {}, generator lag max {} ms{}",
                thousands(o.target_rate),
                thousands(o.achieved_rate),
                thousands(o.max_in_flight as f64),
                ms(o.max_schedule_lag_ms),
                if o.saturated { ", SATURATED" } else { "" }
            ),
        );
    }
    let call = if r.spec.batch.is_some() {
        "PublishBatch call p50/p90/p99/max"
    } else {
        "Publish call p50/p90/p99/max"
    };
    push(rows, call, latency_row(&r.publish_latency));
    push(
        rows,
        "publish→receiver p50/p90/p99/max",
        latency_row(&r.end_to_end_latency),
    );
    push(rows, "duplicates", thousands(r.receiver.duplicates as f64));
    push(
        rows,
        "signature failures",
        format!(
            "{} of {} checked",
            r.receiver.signature_failures, r.receiver.signatures_checked
        ),
    );
}

/// CPU of each process and backing service over the window, and the machine's busy share.
fn cpu_text(u: &Usage) -> String {
    let mut cpu: Vec<String> = u
        .processes
        .iter()
        .map(|p| format!("{} {:.1} s ({:.0} %)", p.role, p.cpu_secs, p.cpu_pct))
        .collect();
    cpu.extend(
        u.infrastructure_cpu_secs
            .iter()
            .map(|(name, s)| format!("{name} {s:.1} s ({:.0} %)", s / u.window_secs * 100.0)),
    );
    if let Some(busy) = u.machine_busy_pct {
        cpu.push(format!("machine {busy:.0} % busy"));
    }
    cpu.join(", ")
}

/// What the run cost: CPU, CPU per delivery (when counted), peak RSS and the dispatchers' RSS.
fn cost_rows(rows: &mut Rows, r: &RunReport) {
    let u = &r.usage;
    push(
        rows,
        &format!("CPU over {:.1} s", u.window_secs),
        cpu_text(u),
    );
    if let Some(c) = &r.cpu_per_delivery {
        push(
            rows,
            "CPU per delivery",
            format!(
                "{:.0} µs of the machine (RabbitMQ {:.0}, Herald {:.0}, the rest Postgres, Redis \
                 and the bench); all cores at this cost allow {}/s",
                c.machine_us,
                c.rabbitmq_us,
                c.client_us,
                thousands(c.cpu_ceiling_per_sec)
            ),
        );
    }
    let rss: Vec<String> = u
        .processes
        .iter()
        .map(|p| format!("{} {:.0} MB", p.role, p.peak_rss_mb))
        .collect();
    push(rows, "peak RSS", rss.join(", "));
    let d = &r.dispatcher_rss;
    push(
        rows,
        "dispatcher RSS first → last",
        format!(
            "{:.1} → {:.1} MB (max {:.1}, {} samples)",
            d.first_mb, d.last_mb, d.max_mb, d.samples
        ),
    );
}

/// A note when the run hit `--timeout`, then the run's own notes.
fn note_rows(rows: &mut Rows, r: &RunReport) {
    if r.timed_out {
        push(
            rows,
            "note",
            "the run hit --timeout: figures cover only what finished".into(),
        );
    }
    for note in &r.notes {
        push(rows, "note", note.clone());
    }
}

/// Prints a run as an aligned table.
pub fn print_run(name: &str, r: &RunReport, ratios: Option<&Ratios>) {
    println!();
    println!("== {name} ==");
    let rows = rows(r, ratios);
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
}

/// Prints the baselines.
pub fn print_baselines(b: &Baselines) {
    println!();
    println!(
        "== baselines ({} B payload, {} queues) ==",
        b.payload_bytes, b.queue_type
    );
    for (label, f) in baseline_rows(b) {
        println!("  {label:<44}  {}", figure_text(f));
    }
}

/// (label, figure) of each baseline.
pub fn baseline_rows(b: &Baselines) -> [(&'static str, &BaselineFigure); 6] {
    [
        ("RabbitMQ 1 hop msg/s", &b.rabbit_one_hop),
        (
            "RabbitMQ 1 hop, minimal client msg/s",
            &b.rabbit_one_hop_raw,
        ),
        ("RabbitMQ 2 hops msg/s", &b.rabbit_two_hops),
        ("RabbitMQ publish only msg/s", &b.rabbit_publish),
        (
            "RabbitMQ publish only, minimal client msg/s",
            &b.rabbit_publish_raw,
        ),
        ("bare HTTP POST req/s", &b.http_post),
    ]
}

pub fn figure_text(f: &BaselineFigure) -> String {
    match (f.per_sec, &f.error) {
        (Some(rate), _) => {
            let mut text = format!(
                "{} ({} in {:.1} s)",
                thousands(rate),
                thousands(f.count as f64),
                f.secs
            );
            if let Some(c) = &f.cpu {
                text.push_str(&format!(
                    "; CPU per message {:.0} µs (RabbitMQ {:.0}, client {:.0})",
                    c.machine_us, c.rabbitmq_us, c.client_us
                ));
            }
            text
        }
        (None, Some(e)) => format!("failed: {e}"),
        (None, None) => "-".into(),
    }
}
