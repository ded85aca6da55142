//! What a noisy-neighbour run found, for the terminal, the JSON file and BENCHMARKS.md.
//!
//! B's percentiles are taken over every accepted event, not only the delivered ones: an event
//! that never arrived counts as slower than any that did, so a p99 whose rank falls among the
//! missing events reads "not delivered" instead of a flattering figure of the survivors. The
//! target is judged on these figures alone, never assumed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::load::{OpenLoopStats, PublishOutcome};
use crate::markdown::cell;
use crate::noisy::Plan;
use crate::receiver::Receiver;
use crate::report::{ms, thousands};

/// B's p99 under A may be at most this multiple of its p99 alone...
const TARGET_RATIO: f64 = 2.0;
/// ...and at most this many milliseconds.
const TARGET_P99_MS: f64 = 50.0;
const TARGET_TEXT: &str = "B's p99 under A <= 2x alone and <= 50 ms";

/// Tenant B's figures in one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BFigures {
    pub attempted: u64,
    pub accepted: u64,
    /// Distinct events the receiver got by the end of the phase.
    pub delivered: u64,
    pub publish_errors: BTreeMap<String, u64>,
    /// Publish→receiver over the accepted events; None when the rank falls among those never
    /// delivered.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub duplicates: u64,
    pub signature_failures: u64,
    pub open_loop: Option<OpenLoopStats>,
}

/// The latency at quantile `q` of `total` events of which `sorted_us` (ascending) arrived, the
/// missing ones counting as slowest (nearest rank).
fn rank_ms(sorted_us: &[u64], total: u64, q: f64) -> Option<f64> {
    let total = total.max(sorted_us.len() as u64);
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as usize).max(1);
    sorted_us.get(rank - 1).map(|&us| us as f64 / 1e3)
}

impl BFigures {
    /// Reads B's phase off its publishing and the receiver it published to.
    pub fn new(outcome: &PublishOutcome, receiver: &Receiver) -> Self {
        let mut us = receiver.take_latencies();
        us.sort_unstable();
        let stats = receiver.stats();
        Self {
            attempted: outcome.attempted,
            accepted: outcome.accepted,
            delivered: stats.delivered,
            publish_errors: outcome.errors.clone(),
            p50_ms: rank_ms(&us, outcome.accepted, 0.50),
            p99_ms: rank_ms(&us, outcome.accepted, 0.99),
            duplicates: stats.duplicates,
            signature_failures: stats.signature_failures,
            open_loop: outcome.open_loop.clone(),
        }
    }

    /// Accepted events the receiver never got.
    pub fn missing(&self) -> u64 {
        self.accepted.saturating_sub(self.delivered)
    }
}

/// One of A's endpoints.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EndpointFigures {
    /// Deliveries it was due (A's accepted events for it).
    pub deliveries: u64,
    /// Requests its path received per second while B published.
    pub attempts_per_sec: f64,
    /// Requests its path received over the whole phase.
    pub requests: u64,
    /// The most requests its path held at once.
    pub max_held: u64,
    /// Deliveries that ended `success` / `failed` in the ledger.
    pub success: u64,
    pub failed: u64,
    /// Final deliveries by the ledger's attempt count.
    pub attempts: BTreeMap<u32, u64>,
    /// Requests beyond the attempts a delivery may get, summed over delivery ids.
    pub extra_requests: u64,
    /// Seconds after H's recovery until all its deliveries were final (0: already before).
    pub final_after_secs: Option<f64>,
}

impl EndpointFigures {
    pub fn not_final(&self) -> u64 {
        self.deliveries.saturating_sub(self.success + self.failed)
    }
}

/// Tenant A's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AFigures {
    pub attempted: u64,
    pub accepted: u64,
    /// Sum of the fan-out Herald reported (one delivery per accepted event expected).
    pub fanout: u64,
    pub publish_errors: BTreeMap<String, u64>,
    pub publish_secs: f64,
    pub hold: EndpointFigures,
    pub fail: EndpointFigures,
    /// Seconds after H's recovery until every one of A's deliveries was final.
    pub drain_secs: Option<f64>,
    pub ledger_error: Option<String>,
    /// A and B landed on the same work shard (1 run in 8): B then shares A's queue order.
    pub same_shard_as_b: bool,
}

/// Everything one noisy-neighbour run measured.
#[derive(Clone, Debug, Serialize)]
pub struct NoisyReport {
    pub dispatchers: usize,
    pub plan: Plan,
    pub alone: BFigures,
    pub under: BFigures,
    pub a: AFigures,
    pub p99_ratio: Option<f64>,
    pub target_met: bool,
    pub losses: u64,
    pub duplicates: u64,
    pub log_dir: String,
}

impl NoisyReport {
    pub fn new(
        dispatchers: usize,
        plan: Plan,
        alone: BFigures,
        under: BFigures,
        a: AFigures,
        log_dir: String,
    ) -> Self {
        let p99_ratio = match (alone.p99_ms, under.p99_ms) {
            (Some(alone), Some(under)) if alone > 0.0 => Some(under / alone),
            _ => None,
        };
        let target_met = matches!(
            (p99_ratio, under.p99_ms),
            (Some(ratio), Some(p99)) if ratio <= TARGET_RATIO && p99 <= TARGET_P99_MS
        );
        let losses = a.hold.not_final() + a.fail.not_final() + alone.missing() + under.missing();
        let duplicates =
            alone.duplicates + under.duplicates + a.hold.extra_requests + a.fail.extra_requests;
        Self {
            dispatchers,
            plan,
            alone,
            under,
            a,
            p99_ratio,
            target_met,
            losses,
            duplicates,
            log_dir,
        }
    }

    /// Why the figures do not describe the whole scenario (empty when they do): events
    /// refused, deliveries lost or mis-signed, the ledger unreadable. A missed target is a
    /// result, not a shortfall.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        let refused = [
            ("B alone", self.alone.attempted, self.alone.accepted),
            ("B under A", self.under.attempted, self.under.accepted),
            ("A", self.a.attempted, self.a.accepted),
        ];
        for (who, attempted, accepted) in refused {
            if accepted < attempted {
                out.push(format!(
                    "{who}: {} of {attempted} events were not accepted",
                    attempted - accepted
                ));
            }
        }
        if self.losses > 0 {
            out.push(format!(
                "{} deliveries lost ({})",
                self.losses,
                losses_text(self)
            ));
        }
        let bad_signatures = self.alone.signature_failures + self.under.signature_failures;
        if bad_signatures > 0 {
            out.push(format!("{bad_signatures} of B's signatures checked failed"));
        }
        if let Some(e) = &self.a.ledger_error {
            out.push(e.clone());
        }
        out
    }
}

/// One noisy-neighbour run in the output: its report or why it failed.
#[derive(Clone, Debug, Serialize)]
pub struct NoisyEntry {
    pub dispatchers: usize,
    /// A's tenant was put on B's work shard.
    pub same_shard: bool,
    pub report: Option<NoisyReport>,
    pub error: Option<String>,
}

impl NoisyEntry {
    pub fn new(dispatchers: usize, same_shard: bool, result: Result<NoisyReport>) -> Self {
        let (report, error) = match result {
            Ok(report) => (Some(report), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Self {
            dispatchers,
            same_shard,
            report,
            error,
        }
    }

    /// `noisy-neighbour/<dispatchers>`, with `/same-shard` when A was on B's shard.
    pub fn name(&self) -> String {
        let placement = if self.same_shard { "/same-shard" } else { "" };
        format!("noisy-neighbour/{}{placement}", self.dispatchers)
    }

    /// The dispatcher count, and where A was, for a table's first column.
    fn label(&self) -> String {
        let placement = if self.same_shard {
            "A on B's shard"
        } else {
            "A on another shard"
        };
        format!("{}, {placement}", self.dispatchers)
    }
}

fn latency(p: Option<f64>) -> String {
    p.map_or("not delivered".to_owned(), |v| format!("{} ms", ms(v)))
}

fn p50_p99(b: &BFigures) -> String {
    format!("{} / {}", latency(b.p50_ms), latency(b.p99_ms))
}

fn ratio_text(r: &NoisyReport) -> String {
    r.p99_ratio.map_or("-".to_owned(), |x| format!("{x:.2}×"))
}

fn secs(s: Option<f64>, bound: u64) -> String {
    s.map_or(format!("not within {bound} s"), |s| format!("{s:.1} s"))
}

fn verdict(r: &NoisyReport) -> &'static str {
    if r.target_met { "pass" } else { "FAIL" }
}

fn losses_text(r: &NoisyReport) -> String {
    format!(
        "A not final {}, B not received: alone {}, under A {}",
        thousands((r.a.hold.not_final() + r.a.fail.not_final()) as f64),
        thousands(r.alone.missing() as f64),
        thousands(r.under.missing() as f64)
    )
}

fn b_row(b: &BFigures) -> String {
    let mut text = format!(
        "{}; {} of {} accepted events delivered",
        p50_p99(b),
        thousands(b.delivered as f64),
        thousands(b.accepted as f64)
    );
    if !b.publish_errors.is_empty() {
        let errors: Vec<String> = b
            .publish_errors
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        let _ = write!(text, " (publish failed: {})", errors.join(", "));
    }
    if let Some(o) = b.open_loop.as_ref().filter(|o| o.saturated) {
        let _ = write!(
            text,
            "; generator SATURATED at {} in flight",
            o.max_in_flight
        );
    }
    text
}

fn endpoint_row(e: &EndpointFigures) -> String {
    let attempts: Vec<String> = e
        .attempts
        .iter()
        .map(|(n, count)| format!("{} with {n}", thousands(*count as f64)))
        .collect();
    format!(
        "{} success, {} failed, {} not final of {}; {} requests; final deliveries by attempts: {}",
        thousands(e.success as f64),
        thousands(e.failed as f64),
        thousands(e.not_final() as f64),
        thousands(e.deliveries as f64),
        thousands(e.requests as f64),
        if attempts.is_empty() {
            "-".to_owned()
        } else {
            attempts.join(", ")
        }
    )
}

/// The figures of a run as (label, value) rows.
pub fn rows(r: &NoisyReport) -> Vec<(String, String)> {
    let (a, plan) = (&r.a, &r.plan);
    let bound = plan.drain_bound_secs;
    let mut rows: Vec<(String, String)> = vec![
        ("B alone p50 / p99".into(), b_row(&r.alone)),
        ("B under A p50 / p99".into(), b_row(&r.under)),
        ("B p99 under A ÷ alone".into(), ratio_text(r)),
        (
            "A attempts/s during B".into(),
            format!(
                "H {:.1}/s (held at most {} at once), E {:.1}/s",
                a.hold.attempts_per_sec, a.hold.max_held, a.fail.attempts_per_sec
            ),
        ),
        (
            "A and B on one work shard".into(),
            match a.same_shard_as_b {
                true => "yes: B shares A's queue order (1 tenant pair in 8)".into(),
                false => "no".into(),
            },
        ),
        (
            "A published".into(),
            format!(
                "{} of {} events accepted in {:.1} s (fan-out {})",
                thousands(a.accepted as f64),
                thousands(a.attempted as f64),
                a.publish_secs,
                thousands(a.fanout as f64)
            ),
        ),
        (
            "A drain after H recovered".into(),
            format!(
                "{} (H {}, E {})",
                secs(a.drain_secs, bound),
                secs(a.hold.final_after_secs, bound),
                secs(a.fail.final_after_secs, bound)
            ),
        ),
        ("H (hangs, no retries)".into(), endpoint_row(&a.hold)),
        (
            format!("E (500, {} attempts)", plan.e_attempts()),
            endpoint_row(&a.fail),
        ),
        (
            "losses".into(),
            format!("{} ({})", thousands(r.losses as f64), losses_text(r)),
        ),
        (
            "duplicates".into(),
            format!(
                "{} (B {} + {}; H {} beyond 1 request per delivery; E {} beyond {})",
                thousands(r.duplicates as f64),
                r.alone.duplicates,
                r.under.duplicates,
                a.hold.extra_requests,
                a.fail.extra_requests,
                plan.e_attempts()
            ),
        ),
        ("target".into(), format!("{TARGET_TEXT}: {}", verdict(r))),
    ];
    if let Some(e) = &a.ledger_error {
        rows.push(("note".into(), e.clone()));
    }
    if a.fanout != a.accepted {
        rows.push((
            "note".into(),
            format!(
                "Herald reported a fan-out of {} for {} accepted events of A",
                a.fanout, a.accepted
            ),
        ));
    }
    rows
}

/// Prints a run (or why it failed) as an aligned table ending with the target line.
pub fn print(entry: &NoisyEntry) {
    println!();
    println!("== {} ==", entry.name());
    let Some(r) = &entry.report else {
        println!("  failed: {}", entry.error.as_deref().unwrap_or("unknown"));
        return;
    };
    let rows = rows(r);
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
}

/// What the scenario does, for the Markdown section.
fn explanation(plan: &Plan) -> String {
    let retries: Vec<String> = plan
        .e_retry_schedule_ms
        .iter()
        .map(|d| format!("{} s", f64::from(*d) / 1e3))
        .collect();
    format!(
        "Tenant isolation in the dispatchers. Tenant B publishes {} events/s (open loop, one \
         Publish per event, small payloads) for {} s to one endpoint that answers at once: first \
         alone, then, on the same processes with fresh tenants, right after tenant A had {} \
         events per endpoint accepted for endpoint H, whose receiver holds every request {} s \
         (H's timeout {} s, no retries), and endpoint E, which answers 500 (retried after {}: {} \
         attempts). A's attempts/s are the requests H's and E's paths received while B \
         published. Then H answers 200 at once and the run waits (at most {} s) until the \
         ledger holds a final status for each of A's deliveries: the drain is timed from that \
         recovery. B's p50/p99 are over all its accepted events, an event never received \
         counting as the slowest. Losses are A's deliveries without a final status plus B's \
         events never received; duplicates are requests for one delivery id beyond the \
         attempts it may get (B and H 1, E {}). Run with 1 and with 2 dispatchers, each with A's \
         tenant on another work shard than B's and on B's own shard.",
        thousands(plan.b_rate),
        plan.b_secs,
        thousands(plan.a_events_per_endpoint as f64),
        plan.hold_secs,
        f64::from(plan.h_timeout_ms) / 1e3,
        retries.join(" and "),
        plan.e_attempts(),
        plan.drain_bound_secs,
        plan.e_attempts()
    )
}

/// Appends the noisy-neighbour section: the explanation, one summary row per dispatcher count,
/// then each run's full figures.
pub fn markdown(md: &mut String, entries: &[NoisyEntry]) {
    let _ = writeln!(md, "### noisy-neighbour\n");
    if let Some(plan) = entries
        .iter()
        .find_map(|e| e.report.as_ref().map(|r| &r.plan))
    {
        let _ = writeln!(md, "{}\n", explanation(plan));
    }
    let _ = writeln!(md, "Target: {TARGET_TEXT}.\n");
    let _ = writeln!(
        md,
        "| dispatchers | B p50 / p99 alone | B p50 / p99 under A | p99 under ÷ alone | \
         H attempts/s | H max concurrent | E attempts/s | A drain | losses | duplicates | \
         target |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for entry in entries {
        let Some(r) = &entry.report else {
            let error = entry.error.as_deref().unwrap_or("not run");
            let _ = writeln!(md, "| {} | failed: {} |", entry.label(), cell(error));
            continue;
        };
        let a = &r.a;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {} | {} | {} | {} |",
            entry.label(),
            p50_p99(&r.alone),
            p50_p99(&r.under),
            ratio_text(r),
            a.hold.attempts_per_sec,
            a.hold.max_held,
            a.fail.attempts_per_sec,
            secs(a.drain_secs, r.plan.drain_bound_secs),
            thousands(r.losses as f64),
            thousands(r.duplicates as f64),
            verdict(r)
        );
    }
    md.push('\n');
    for entry in entries {
        let Some(r) = &entry.report else { continue };
        let _ = writeln!(md, "#### {} dispatcher(s)\n", entry.label());
        let _ = writeln!(md, "| metric | value |\n|---|---|");
        for (k, v) in rows(r) {
            let _ = writeln!(md, "| {} | {} |", cell(&k), cell(&v));
        }
        md.push('\n');
    }
}
