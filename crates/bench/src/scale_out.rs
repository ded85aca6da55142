//! `scale-out`: does another process mean more deliveries, and where does it stop?
//!
//! The hundred-endpoints load (closed loop, 100 endpoints) runs against 1, 2 and 4
//! dispatchers, then 4 dispatchers with 2 ingests, each on a fresh installation, and the
//! broker's own one-hop limit is measured in the same invocation (the minimal client: what
//! RabbitMQ itself allows here). For each configuration the report gives deliveries/s and the
//! machine's CPU per delivery: on a machine with few cores the rate flattens when the cores
//! are busy, and a flat CPU per delivery says that is the machine, while a rate that flattens
//! with CPU per delivery rising or the cores idle would be a lock or a single queue.

use std::fmt::Write as _;

use crate::baseline;
use crate::cli::{ScenarioName, Settings};
use crate::report::{BaselineFigure, BenchOutput, RunEntry, RunReport};
use crate::run;
use crate::scenarios::spec;
use crate::usage::ProcUsage;

/// (dispatchers, ingests) of each run, in order.
pub const CONFIGS: [(usize, usize); 4] = [(1, 1), (2, 1), (4, 1), (4, 2)];

/// The name of the run with this configuration.
pub fn run_name(dispatchers: usize, ingests: usize) -> String {
    format!("scale-out: {dispatchers} dispatcher(s), {ingests} ingest(s)")
}

/// Runs every configuration; returns their entries (reported like any run) and the broker's
/// limit measured alongside.
pub async fn run(settings: &Settings, payload_bytes: usize) -> (Vec<RunEntry>, BaselineFigure) {
    eprintln!("bench: scale-out: the broker's own limit (one hop, minimal client)");
    let broker = baseline::broker_limit(settings, payload_bytes).await;
    let load = spec(ScenarioName::HundredEndpoints, settings.scale)
        .expect("hundred-endpoints is a load scenario");
    let mut entries = Vec::new();
    let mut writes = Vec::new();
    for (dispatchers, ingests) in CONFIGS {
        let name = run_name(dispatchers, ingests);
        eprintln!("bench: running {name}");
        let s = Settings {
            dispatchers,
            ingests,
            ..settings.clone()
        };
        let before = row_writes(&settings.database_url).await;
        let result = run::run_one(&s, &name, &load).await;
        // The statistics collector publishes a backend's counts at most once a second.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let after = row_writes(&settings.database_url).await;
        if let (Ok(r), Some(b), Some(a)) = (&result, before, after)
            && r.deliveries_expected > 0
        {
            writes.push(Some((a - b) as f64 / r.deliveries_expected as f64));
        } else {
            writes.push(None);
        }
        let entry = RunEntry::new(&name, result, None);
        if let Some(e) = &entry.error {
            eprintln!("bench: {name} failed: {e}");
        }
        entries.push(entry);
    }
    eprint!("{}", table(&entries, &broker));
    for ((d, i), w) in CONFIGS.iter().zip(&writes) {
        if let Some(w) = w {
            eprintln!(
                "bench: scale-out: {d} dispatcher(s), {i} ingest(s): {w:.2} Postgres row writes (inserted + updated + deleted) per delivery"
            );
        }
    }
    (entries, broker)
}

/// The scale-out table (Markdown), from the runs of `output` named by [`run_name`].
pub fn markdown(output: &BenchOutput) -> Option<String> {
    let broker = output.scale_out_broker.as_ref()?;
    let runs: Vec<RunEntry> = output
        .runs
        .iter()
        .filter(|r| r.name.starts_with("scale-out:"))
        .cloned()
        .collect();
    Some(format!(
        "### scale-out\n\nhundred-endpoints with more processes, each on a fresh installation (`bench scenario scale-out`).\n\n{}",
        table(&runs, broker)
    ))
}

fn table(runs: &[RunEntry], broker: &BaselineFigure) -> String {
    let mut out = String::from(
        "| dispatchers | ingests | deliveries/s | vs 1 dispatcher | machine CPU µs/delivery | Herald µs | of which dispatchers | RabbitMQ µs | Postgres µs | machine busy |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let first = runs
        .first()
        .and_then(|r| r.report.as_ref())
        .map(|r| r.deliveries_per_sec);
    for entry in runs {
        let Some(r) = &entry.report else {
            let _ = writeln!(
                out,
                "| {} | failed: {} | | | | | | | | |",
                entry.name,
                entry.error.as_deref().unwrap_or("?")
            );
            continue;
        };
        let cpu = r.cpu_per_delivery.as_ref();
        let f = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.dispatchers,
            r.ingests,
            r.deliveries_per_sec,
            first.map_or("–".into(), |b| format!(
                "{:.2}×",
                r.deliveries_per_sec / b
            )),
            f(cpu.map(|c| c.machine_us)),
            f(cpu.map(|c| c.client_us)),
            f(per_delivery(r, |p| p.role.starts_with("dispatcher"))),
            f(cpu.map(|c| c.rabbitmq_us)),
            f(per_delivery_infra(r, "postgres")),
            r.usage
                .machine_busy_pct
                .map_or("–".into(), |p| format!("{p:.0} %")),
        );
    }
    let _ = writeln!(
        out,
        "\nThe broker's own limit in the same invocation (one hop, persistent, confirmed, minimal client): {} msg/s at {} µs of machine CPU per message.\n",
        broker.per_sec.map_or("–".into(), |v| format!("{v:.0}")),
        broker
            .cpu
            .as_ref()
            .map_or("–".into(), |c| format!("{:.0}", c.machine_us)),
    );
    out
}

/// Herald's CPU seconds in the run's window (every process but the bench's own).
fn herald_secs(r: &RunReport) -> f64 {
    r.usage
        .processes
        .iter()
        .filter(|p| p.role != "bench")
        .map(|p| p.cpu_secs)
        .sum()
}

/// µs per delivery of `secs` CPU seconds, on the scale of the run's CPU per delivery.
fn per_secs(r: &RunReport, secs: f64) -> Option<f64> {
    let herald_us = r.cpu_per_delivery.as_ref()?.client_us;
    let herald = herald_secs(r);
    (herald > 0.0 && herald_us > 0.0).then(|| secs * herald_us / herald)
}

/// µs per delivery of the processes of Herald's that `pick` selects.
fn per_delivery(r: &RunReport, pick: impl Fn(&ProcUsage) -> bool) -> Option<f64> {
    let secs = r
        .usage
        .processes
        .iter()
        .filter(|p| pick(p))
        .map(|p| p.cpu_secs)
        .sum();
    per_secs(r, secs)
}

/// µs per delivery of a backing service (`postgres`, `redis`).
fn per_delivery_infra(r: &RunReport, service: &str) -> Option<f64> {
    per_secs(r, r.usage.infra_secs(service))
}

/// Rows inserted, updated and deleted in the database so far (`pg_stat_database`): the writes a
/// run made are the difference across it (every schema of the database; the bench runs alone).
async fn row_writes(url: &str) -> Option<i64> {
    crate::db::psql(
        url,
        "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = current_database()",
    )
    .await
    .ok()?
    .parse()
    .ok()
}
