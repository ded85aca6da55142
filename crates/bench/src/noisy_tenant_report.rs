//! What a noisy-tenant run found, for the terminal, the JSON file and BENCHMARKS.md.
//!
//! Each attack phase is judged against B alone in the same run, on the figures alone: B's
//! Publish p99 and publish→receiver p99 within 2× of alone (the latter over every accepted
//! event, one never received counting as slowest, as in noisy-neighbour), none of B's calls
//! refused, ingest's RSS within its bound, and A stopped by Herald rather than by the bench's
//! safety bound. A phase whose figures are incomplete (it failed, B's deliveries were lost,
//! the installation never went quiet after it) is a shortfall, which fails the bench; a missed
//! target is a result.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::markdown::cell;
use crate::noisy_report::BFigures;
use crate::noisy_tenant::Plan;
use crate::noisy_tenant_attacks::AttackFigures;
use crate::noisy_tenant_calls::Tally;
use crate::report::{Percentiles, ms, thousands};

/// B's p99s under an attack may be at most this multiple of alone.
const TARGET_RATIO: f64 = 2.0;
/// Ingest's peak RSS in a phase may be at most this. Herald states no bound of its own yet;
/// this is the bench's line: a PublishBatch at the default size limits is 256 MiB before
/// fan-out, so a bound must sit above it, and 4× that means ingest holds what a tenant pushes.
const INGEST_RSS_BOUND_MB: f64 = 1024.0;
const TARGET_TEXT: &str = "B's Publish p99 and publish→receiver p99 within 2x of alone, \
    nothing of B refused, ingest RSS <= 1,024 MB, A stopped by Herald (not by the bench)";

/// B's ListDeliveries in one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ListFigures {
    pub calls: u64,
    /// Of the calls answered, from when each was due.
    pub latency: Percentiles,
    pub errors: BTreeMap<String, u64>,
}

/// Tenant B's figures in one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TenantB {
    /// Publish calls answered OK, from their intended send time.
    pub publish_call: Percentiles,
    /// Publishing and publish→receiver latency.
    pub delivery: BFigures,
    pub list: ListFigures,
}

impl TenantB {
    /// B's refused calls, by call and code.
    pub fn refused(&self) -> Vec<String> {
        let publish = self
            .delivery
            .publish_errors
            .iter()
            .map(|(c, n)| (c, n, "Publish"));
        let list = self
            .list
            .errors
            .iter()
            .map(|(c, n)| (c, n, "ListDeliveries"));
        publish
            .chain(list)
            .map(|(code, n, call)| format!("{call} {code} {n}"))
            .collect()
    }
}

/// B's p99s in a phase divided by alone.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ratios {
    pub publish_p99: Option<f64>,
    pub delivery_p99: Option<f64>,
    pub list_p99: Option<f64>,
}

/// Whether a phase met the target, and if not why.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    pub met: bool,
    pub failed: Vec<String>,
}

/// Everything one phase measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseFigures {
    pub secs: f64,
    pub b: TenantB,
    /// A's attack; None in the phase alone.
    pub a: Option<AttackFigures>,
    /// Peak sampled RSS (once a second) over the phase.
    pub ingest_rss_mb: f64,
    pub ledger_rss_mb: f64,
    /// Seconds until the installation was quiet after the phase; None: not within the bound.
    pub settle_secs: Option<f64>,
    /// B's accepted events still not received once the installation was quiet.
    pub b_lost: u64,
    pub ratios: Ratios,
    /// None in the phase alone.
    pub verdict: Option<Verdict>,
    pub notes: Vec<String>,
}

/// One phase: its figures or why it failed.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseEntry {
    pub phase: String,
    pub figures: Option<PhaseFigures>,
    pub error: Option<String>,
}

impl PhaseEntry {
    pub fn new(phase: &str, result: Result<PhaseFigures>) -> Self {
        let (figures, error) = match result {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Self {
            phase: phase.to_owned(),
            figures,
            error,
        }
    }
}

/// Everything a noisy-tenant run measured.
#[derive(Clone, Debug, Serialize)]
pub struct NoisyTenantReport {
    pub plan: Plan,
    /// The work shard B (and every A) was on.
    pub shard: usize,
    /// Alone first, then one per attack.
    pub phases: Vec<PhaseEntry>,
    pub log_dir: String,
}

fn ratio(under: f64, alone: f64) -> Option<f64> {
    (alone > 0.0 && under > 0.0).then(|| under / alone)
}

fn p99(p: &Percentiles) -> Option<f64> {
    (p.count > 0).then_some(p.p99_ms)
}

/// The ratio's text for a failed criterion, or None when it holds.
fn over_target(what: &str, under: Option<f64>, r: Option<f64>) -> Option<String> {
    match (under, r) {
        (None, _) => Some(format!("{what}: no p99 (not delivered or no answer)")),
        (Some(_), Some(r)) if r <= TARGET_RATIO => None,
        (Some(v), Some(r)) => Some(format!("{what} p99 {} ms is {r:.2}× alone", ms(v))),
        (Some(_), None) => Some(format!("{what}: nothing alone to compare with")),
    }
}

/// Fills in a phase's ratios to `alone` and, for an attack phase, its verdict.
fn judge(p: &mut PhaseFigures, alone: Option<&PhaseFigures>) {
    let alone_b = alone.map(|a| &a.b);
    let pair = |get: fn(&TenantB) -> Option<f64>| {
        let under = get(&p.b);
        let r = match (under, alone_b.and_then(get)) {
            (Some(u), Some(a)) => ratio(u, a),
            _ => None,
        };
        (under, r)
    };
    let publish = pair(|b| p99(&b.publish_call));
    let delivery = pair(|b| b.delivery.p99_ms);
    let list = pair(|b| p99(&b.list.latency));
    p.ratios = Ratios {
        publish_p99: publish.1,
        delivery_p99: delivery.1,
        list_p99: list.1,
    };
    let Some(a) = &p.a else { return };
    let mut failed: Vec<String> = [
        over_target("Publish", publish.0, publish.1),
        over_target("publish→receiver", delivery.0, delivery.1),
    ]
    .into_iter()
    .flatten()
    .collect();
    let refused = p.b.refused();
    if !refused.is_empty() {
        failed.push(format!("B refused: {}", refused.join(", ")));
    }
    if p.ingest_rss_mb > INGEST_RSS_BOUND_MB {
        failed.push(format!("ingest RSS {:.0} MB", p.ingest_rss_mb));
    }
    failed.extend(a.stopped_by_bench());
    p.verdict = Some(Verdict {
        met: failed.is_empty(),
        failed,
    });
}

impl NoisyTenantReport {
    pub fn new(plan: Plan, shard: usize, mut phases: Vec<PhaseEntry>, log_dir: String) -> Self {
        let alone = phases
            .iter()
            .find(|e| e.phase == "alone")
            .and_then(|e| e.figures.clone());
        for p in phases.iter_mut().filter_map(|e| e.figures.as_mut()) {
            judge(p, alone.as_ref());
        }
        Self {
            plan,
            shard,
            phases,
            log_dir,
        }
    }

    /// Why the figures do not describe the whole scenario (empty when they do): a phase that
    /// failed, B's deliveries lost or mis-signed, B refused while alone, a phase after which
    /// the installation never went quiet (the next one started unclean).
    pub fn shortfalls(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in &self.phases {
            let name = &entry.phase;
            let Some(p) = &entry.figures else {
                let error = entry.error.as_deref().unwrap_or("not run");
                out.push(format!("phase {name} failed: {error}"));
                continue;
            };
            if p.b_lost > 0 {
                out.push(format!("phase {name}: {} of B's deliveries lost", p.b_lost));
            }
            if p.b.delivery.signature_failures > 0 {
                let n = p.b.delivery.signature_failures;
                out.push(format!(
                    "phase {name}: {n} of B's signatures checked failed"
                ));
            }
            if p.a.is_none() && !p.b.refused().is_empty() {
                out.push(format!(
                    "phase {name}: B refused: {}",
                    p.b.refused().join(", ")
                ));
            }
            if p.settle_secs.is_none() {
                out.push(format!(
                    "phase {name}: Herald was not quiet within {} s after it",
                    self.plan.settle_bound_secs
                ));
            }
        }
        out
    }
}

/// The noisy-tenant run in the output: its report or why it failed.
#[derive(Clone, Debug, Serialize)]
pub struct NoisyTenantEntry {
    pub report: Option<NoisyTenantReport>,
    pub error: Option<String>,
}

impl NoisyTenantEntry {
    pub fn new(result: Result<NoisyTenantReport>) -> Self {
        match result {
            Ok(report) => Self {
                report: Some(report),
                error: None,
            },
            Err(e) => Self {
                report: None,
                error: Some(format!("{e:#}")),
            },
        }
    }

    pub fn name(&self) -> String {
        "noisy-tenant".to_owned()
    }
}

fn latency(p: Option<f64>) -> String {
    p.map_or("-".to_owned(), |v| format!("{} ms", ms(v)))
}

fn percentiles_text(p: &Percentiles) -> String {
    if p.count == 0 {
        return "no answers".to_owned();
    }
    format!("{} / {} ms", ms(p.p50_ms), ms(p.p99_ms))
}

fn delivery_text(b: &BFigures) -> String {
    let p = |v: Option<f64>| v.map_or("not delivered".to_owned(), |v| format!("{} ms", ms(v)));
    format!("{} / {}", p(b.p50_ms), p(b.p99_ms))
}

fn ratios_text(r: &Ratios) -> String {
    let x = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}×"));
    format!(
        "{} / {} / {}",
        x(r.publish_p99),
        x(r.delivery_p99),
        x(r.list_p99)
    )
}

fn refused_text(b: &TenantB) -> String {
    let refused = b.refused();
    if refused.is_empty() {
        "0".to_owned()
    } else {
        refused.join(", ")
    }
}

/// A's calls per second over the phase, done and refused, summed over its kinds of call.
fn a_rates(a: &AttackFigures) -> String {
    let secs = a.secs.max(1e-9);
    let done: u64 = a.calls.iter().map(|t| t.done).sum();
    let refused: u64 = a.calls.iter().map(Tally::refused_total).sum();
    format!(
        "{} / {}",
        thousands(done as f64 / secs),
        thousands(refused as f64 / secs)
    )
}

fn verdict_text(p: &PhaseFigures) -> String {
    match &p.verdict {
        None => "-".to_owned(),
        Some(v) if v.met => "pass".to_owned(),
        Some(v) => format!("FAIL ({})", v.failed.join("; ")),
    }
}

fn settle_text(p: &PhaseFigures, bound: u64) -> String {
    p.settle_secs
        .map_or(format!("not within {bound} s"), |s| format!("{s:.1} s"))
}

/// One of A's kinds of call as text: rates, refusals by code, work accepted.
fn tally_text(t: &Tally, secs: f64) -> String {
    let secs = secs.max(1e-9);
    let mut text = format!(
        "{} loops: {} done ({}/s), {} refused ({}/s)",
        t.loops,
        thousands(t.done as f64),
        thousands(t.done as f64 / secs),
        thousands(t.refused_total() as f64),
        thousands(t.refused_total() as f64 / secs)
    );
    if !t.refused.is_empty() {
        let codes: Vec<String> = t
            .refused
            .iter()
            .map(|(c, n)| match t.messages.get(c).filter(|m| !m.is_empty()) {
                Some(m) => format!("{c} {n}: \"{m}\""),
                None => format!("{c} {n}"),
            })
            .collect();
        let _ = write!(text, " [{}]", codes.join("; "));
    }
    if t.cut > 0 {
        let _ = write!(text, ", {} cut at the phase end", t.cut);
    }
    if t.units > 0 {
        let _ = write!(text, "; {} deliveries accepted", thousands(t.units as f64));
    }
    if let Some(s) = t.bound_hit_secs {
        let _ = write!(text, "; stopped by the bench after {s:.1} s");
    }
    text
}

/// A phase's figures as (label, value) rows.
fn rows(p: &PhaseFigures, plan: &Plan) -> Vec<(String, String)> {
    let b = &p.b;
    let mut rows: Vec<(String, String)> = vec![
        (
            "B Publish p50 / p99".into(),
            percentiles_text(&b.publish_call),
        ),
        (
            "B publish→receiver p50 / p99".into(),
            delivery_text(&b.delivery),
        ),
        (
            "B ListDeliveries p50 / p99".into(),
            percentiles_text(&b.list.latency),
        ),
        (
            "B p99 ÷ alone (Publish / delivery / list)".into(),
            ratios_text(&p.ratios),
        ),
        (
            "B events".into(),
            format!(
                "{} accepted of {}, {} received in the phase, {} lost",
                thousands(b.delivery.accepted as f64),
                thousands(b.delivery.attempted as f64),
                thousands(b.delivery.delivered as f64),
                thousands(p.b_lost as f64)
            ),
        ),
        ("B refused".into(), refused_text(b)),
        (
            "peak RSS".into(),
            format!(
                "ingest {:.0} MB, ledger {:.0} MB",
                p.ingest_rss_mb, p.ledger_rss_mb
            ),
        ),
        ("quiet after".into(), settle_text(p, plan.settle_bound_secs)),
    ];
    if let Some(a) = &p.a {
        for t in &a.calls {
            rows.push((format!("A {}", t.call), tally_text(t, a.secs)));
        }
        rows.push((
            "A's endpoints got".into(),
            format!("{} requests", thousands(a.requests as f64)),
        ));
        rows.extend(a.notes.iter().map(|n| ("note".to_owned(), n.clone())));
    }
    rows.extend(p.notes.iter().map(|n| ("note".to_owned(), n.clone())));
    rows.push(("target: within 2x of alone".into(), verdict_text(p)));
    rows
}

/// Prints the run (or why it failed), one aligned block per phase.
pub fn print(entry: &NoisyTenantEntry) {
    println!();
    println!("== {} ==", entry.name());
    let Some(r) = &entry.report else {
        println!("  failed: {}", entry.error.as_deref().unwrap_or("unknown"));
        return;
    };
    for phase in &r.phases {
        println!("  -- {} --", phase.phase);
        let Some(p) = &phase.figures else {
            println!(
                "    failed: {}",
                phase.error.as_deref().unwrap_or("unknown")
            );
            continue;
        };
        let rows = rows(p, &r.plan);
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (k, v) in rows {
            println!("    {k:<width$}  {v}");
        }
    }
}

/// What the scenario does, for the Markdown section.
fn explanation(plan: &Plan) -> String {
    let a = &plan.attacks;
    format!(
        "Tenant isolation against what a tenant does through the API. On one installation \
         (Herald's default limits) tenant B publishes {} events/s (open loop, one Publish per \
         event, {} B payloads) to one endpoint that answers at once and lists its deliveries \
         once a second, in phases of {} s: first alone, then beside tenant A (a fresh tenant on \
         B's work shard each time) running one attack for the whole phase. Heavy filters: {} \
         TestFilter loops with a {}-byte filter of {} `$and` branches of `$nin` lists of {} \
         values, against a payload of {} numbers ({} bytes) none of them holds, while {} \
         loops publish that payload to an endpoint storing the filter. Maximal fan-out: {} \
         endpoints subscribed to `*`, {} callers of PublishBatch with {} events of {} KiB. \
         Concurrent replays: {} ReplayEndpoint loops over {} delivered deliveries. SendTest \
         flood: {} loops to an endpoint that holds every request {} s (timeout {} s). \
         Junk-token flood: {} loops calling ingest's Publish and ListEndpoints, the ledger's \
         ListDeliveries and Admin's GetTenant with API-key-shaped tokens never issued. A \
         refused loop waits {} ms before its next call. The bench stops A itself when Herald \
         accepted {} fan-out or {} replayed deliveries in one phase (a missing budget). After \
         each phase B's deliveries are waited for (at most {} s; B's publish→receiver p99 is \
         over all accepted events, one never received counting as slowest), A's endpoints are \
         deleted, and the next phase begins once no work is queued and A's endpoints got \
         nothing for 2 s (at most {} s). Ratios are B's p99 in the phase ÷ alone (Publish / \
         publish→receiver / ListDeliveries); A's calls/s are done / refused.",
        thousands(plan.b_rate),
        plan.b_payload_bytes,
        plan.phase_secs,
        a.filter_loops,
        thousands(a.filter_bytes as f64),
        a.filter_branches,
        a.filter_list_len,
        thousands(a.filter_payload_numbers as f64),
        thousands(a.filter_payload_bytes as f64),
        a.filter_publish_loops,
        a.fanout_endpoints,
        a.fanout_callers,
        a.fanout_batch,
        a.fanout_event_bytes / 1024,
        a.replay_loops,
        thousands(a.replay_deliveries as f64),
        a.send_test_loops,
        a.hang_hold_secs,
        a.hang_timeout_ms / 1000,
        a.junk_loops,
        a.refusal_pause_ms,
        thousands(a.fanout_bound as f64),
        thousands(a.replay_bound as f64),
        plan.b_grace_secs,
        plan.settle_bound_secs
    )
}

/// Appends the noisy-tenant section: the explanation, one summary row per phase, A's calls
/// per phase, then the notes.
pub fn markdown(md: &mut String, entry: &NoisyTenantEntry) {
    let _ = writeln!(md, "### noisy-tenant\n");
    let Some(r) = &entry.report else {
        let error = entry.error.as_deref().unwrap_or("not run");
        let _ = writeln!(md, "Failed: {}\n", cell(error));
        return;
    };
    let _ = writeln!(md, "{}\n", explanation(&r.plan));
    let _ = writeln!(md, "Target: {TARGET_TEXT}.\n");
    let _ = writeln!(
        md,
        "| phase | B Publish p50 / p99 | B publish→receiver p50 / p99 | B ListDeliveries p99 | \
         p99 ÷ alone | B refused | A calls/s done / refused | ingest peak RSS | quiet after | \
         target |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for phase in &r.phases {
        let Some(p) = &phase.figures else {
            let error = phase.error.as_deref().unwrap_or("not run");
            let _ = writeln!(md, "| {} | failed: {} |", phase.phase, cell(error));
            continue;
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} MB | {} | {} |",
            phase.phase,
            percentiles_text(&p.b.publish_call),
            delivery_text(&p.b.delivery),
            latency(p99(&p.b.list.latency)),
            ratios_text(&p.ratios),
            cell(&refused_text(&p.b)),
            p.a.as_ref().map_or("-".to_owned(), a_rates),
            p.ingest_rss_mb,
            settle_text(p, r.plan.settle_bound_secs),
            cell(&verdict_text(p))
        );
    }
    md.push('\n');
    let _ = writeln!(md, "| phase | A's call | what it did |\n|---|---|---|");
    let mut notes = Vec::new();
    for phase in &r.phases {
        let Some(p) = &phase.figures else { continue };
        if let Some(a) = &p.a {
            for t in &a.calls {
                let text = tally_text(t, a.secs);
                let _ = writeln!(md, "| {} | {} | {} |", phase.phase, t.call, cell(&text));
            }
            notes.extend(a.notes.iter().map(|n| format!("{}: {n}", phase.phase)));
        }
        notes.extend(p.notes.iter().map(|n| format!("{}: {n}", phase.phase)));
    }
    md.push('\n');
    for note in notes {
        let _ = writeln!(md, "- {note}");
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(publish_p99: f64, delivery_p99: Option<f64>, attack: bool) -> PhaseFigures {
        let mut p = PhaseFigures::default();
        p.b.publish_call = Percentiles {
            count: 100,
            p50_ms: publish_p99 / 2.0,
            p99_ms: publish_p99,
            ..Percentiles::default()
        };
        p.b.delivery.p99_ms = delivery_p99;
        p.settle_secs = Some(2.0);
        p.a = attack.then(AttackFigures::default);
        p
    }

    fn report(phases: Vec<(&str, PhaseFigures)>) -> NoisyTenantReport {
        let entries = phases
            .into_iter()
            .map(|(name, p)| PhaseEntry::new(name, Ok(p)))
            .collect();
        NoisyTenantReport::new(
            crate::noisy_tenant::Plan::new(1.0),
            0,
            entries,
            String::new(),
        )
    }

    fn verdict(r: &NoisyTenantReport, phase: usize) -> Verdict {
        let figures = r.phases[phase].figures.as_ref().expect("figures");
        figures.verdict.clone().expect("an attack phase is judged")
    }

    #[test]
    fn each_attack_is_judged_against_b_alone() {
        let mut refused = phase(4.0, Some(8.0), true);
        refused.b.list.errors.insert("Unavailable".into(), 1);
        let mut bounded = phase(4.0, Some(8.0), true);
        if let Some(a) = bounded.a.as_mut() {
            a.calls.push(Tally {
                call: "PublishBatch".into(),
                bound_hit_secs: Some(3.0),
                ..Tally::default()
            });
        }
        let r = report(vec![
            ("alone", phase(2.0, Some(5.0), false)),
            ("within", phase(4.0, Some(10.0), true)),
            ("slow", phase(4.5, Some(8.0), true)),
            ("lost", phase(3.0, None, true)),
            ("refused", refused),
            ("bounded", bounded),
        ]);
        assert!(r.phases[0].figures.as_ref().unwrap().verdict.is_none());
        assert!(verdict(&r, 1).met, "{:?}", verdict(&r, 1));
        let slow = verdict(&r, 2);
        assert!(!slow.met && slow.failed[0].contains("2.25×"), "{slow:?}");
        assert!(!verdict(&r, 3).met);
        assert!(verdict(&r, 4).failed[0].contains("ListDeliveries Unavailable 1"));
        assert!(verdict(&r, 5).failed[0].contains("the bench stopped A"));
        assert!(r.shortfalls().is_empty(), "{:?}", r.shortfalls());

        let mut md = String::new();
        markdown(
            &mut md,
            &NoisyTenantEntry {
                report: Some(r),
                error: None,
            },
        );
        assert!(
            md.starts_with("### noisy-tenant\n\nTenant isolation"),
            "{md}"
        );
        assert!(md.contains("| within |") && md.contains("| pass |"), "{md}");
        assert!(
            md.contains("FAIL (Publish p99 4.50 ms is 2.25× alone)"),
            "{md}"
        );
    }

    #[test]
    fn a_phase_that_never_went_quiet_or_lost_deliveries_is_a_shortfall() {
        let mut unquiet = phase(2.0, Some(5.0), true);
        unquiet.settle_secs = None;
        unquiet.b_lost = 3;
        let r = report(vec![
            ("alone", phase(2.0, Some(5.0), false)),
            ("x", unquiet),
        ]);
        let shortfalls = r.shortfalls();
        assert_eq!(shortfalls.len(), 2, "{shortfalls:?}");
        assert!(shortfalls[0].contains("3 of B's deliveries lost"));
        assert!(shortfalls[1].contains("not quiet"));
    }
}
