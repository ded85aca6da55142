//! BENCHMARKS.md: the machine, the exact command, the baselines and one table per scenario.
//!
//! Figures only mean something next to the hardware and the software that produced them, so
//! the machine description is gathered here from `/proc` and the running services (each probe
//! bounded by a timeout and simply left out when it fails).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::Settings;
use crate::report::{self, BenchOutput};
use crate::{db, noisy_report, noisy_tenant_report};

/// The machine and the backing services' versions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub memory: Option<String>,
    pub kernel: Option<String>,
    pub postgres: Option<String>,
    pub rabbitmq: Option<String>,
    pub redis: Option<String>,
}

fn proc_field(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

async fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let run = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

async fn redis_version(url: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let probe = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), probe)
        .await
        .ok()
        .flatten()
}

/// Describes this machine and the services the settings point at.
pub async fn describe(settings: &Settings) -> Machine {
    let memory = proc_field("/proc/meminfo", "MemTotal").and_then(|v| {
        let kb: f64 = v.split_whitespace().next()?.parse().ok()?;
        Some(format!("{:.1} GiB", kb / 1024.0 / 1024.0))
    });
    let kernel = std::fs::read_to_string("/proc/version")
        .ok()
        .map(|v| v.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: proc_field("/proc/cpuinfo", "model name"),
        memory,
        kernel,
        postgres: db::psql(&settings.database_url, "SHOW server_version")
            .await
            .ok()
            .map(|v| format!("PostgreSQL {v}")),
        rabbitmq: command_output("rabbitmqctl", &["version"])
            .await
            .map(|v| format!("RabbitMQ {v}")),
        redis: redis_version(&settings.redis_url)
            .await
            .map(|v| format!("Redis {v}")),
    }
}

/// Escapes a table cell.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Renders the whole output as Markdown.
pub fn render(output: &BenchOutput, settings: &Settings) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Herald benchmarks\n");
    let _ = writeln!(
        md,
        "Generated {} by `{}` (crates/bench). Everything runs on this one machine over \
         127.0.0.1: PostgreSQL, RabbitMQ and Redis, Herald's release binaries (1 ingest, 1 \
         ledger, {} dispatcher(s), `{}` queues), the load generator and the receiver.\n",
        output.generated_at, output.command, settings.dispatchers, settings.queue_type
    );
    if let Some(m) = &output.machine {
        let _ = writeln!(md, "## Machine\n");
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| CPUs | {} |", m.cpus);
        let rows = [
            ("CPU model", &m.cpu_model),
            ("memory", &m.memory),
            ("kernel", &m.kernel),
            ("PostgreSQL", &m.postgres),
            ("RabbitMQ", &m.rabbitmq),
            ("Redis", &m.redis),
        ];
        for (label, value) in rows {
            if let Some(v) = value {
                let _ = writeln!(md, "| {label} | {} |", cell(v));
            }
        }
        md.push('\n');
    }
    if let Some(b) = &output.baselines {
        let _ = writeln!(md, "## Baselines\n");
        let _ = writeln!(
            md,
            "What the machine does without Herald, measured in the same run ({} B payloads, {} \
             queues, persistent messages, publisher confirms with 256 in flight; the HTTP loop \
             keeps 64 requests in flight against the same receiver). The RabbitMQ rows use lapin \
             (Herald's client in every service); the minimal-client rows do the same work over \
             raw frames on the tokio runtime (`crates/bench/src/rawamqp/`, a baseline only: no \
             service uses it), the closer figure to the broker's own limit. CPU per message is the machine's busy time over \
             the window divided by the messages; the client is the bench process.\n",
            b.payload_bytes, b.queue_type
        );
        let _ = writeln!(md, "| baseline | figure |\n|---|---|");
        for (label, f) in report::baseline_rows(b) {
            let _ = writeln!(md, "| {label} | {} |", cell(&report::figure_text(f)));
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Scenarios\n");
    let _ = writeln!(
        md,
        "Latencies are from the intended send time (open loop) or the call (closed loop) to the \
         receiver's arrival; ledger times are from the start of publishing, polled every 200 ms. \
         CPU shares are of one core (200 % = the whole machine).\n"
    );
    for run in &output.runs {
        let _ = writeln!(md, "### {}\n", run.name);
        match (&run.report, &run.error) {
            (Some(r), _) => {
                let _ = writeln!(md, "{}\n", describe_spec(r));
                let _ = writeln!(md, "| metric | value |\n|---|---|");
                for (k, v) in report::rows(r, run.ratios.as_ref()) {
                    let _ = writeln!(md, "| {} | {} |", cell(&k), cell(&v));
                }
            }
            (None, Some(e)) => {
                let _ = writeln!(md, "Failed: {}", cell(e));
            }
            (None, None) => {
                let _ = writeln!(md, "Not run.");
            }
        }
        md.push('\n');
    }
    if !output.noisy_neighbour.is_empty() {
        noisy_report::markdown(&mut md, &output.noisy_neighbour);
    }
    if let Some(entry) = &output.noisy_tenant {
        noisy_tenant_report::markdown(&mut md, entry);
    }
    if let Some(entry) = &output.portal_log {
        crate::portal_log::markdown(&mut md, entry);
    }
    if let Some(table) = crate::scale_out::markdown(output) {
        md.push_str(&table);
    }
    if let Some(entry) = &output.ledger_growth {
        crate::ledger_growth::markdown(&mut md, entry);
    }
    md
}

fn describe_spec(r: &report::RunReport) -> String {
    let s = &r.spec;
    let shape = match (s.rate, s.batch) {
        (Some(rate), _) => format!("open loop at {} events/s", report::thousands(rate)),
        (None, Some(b)) => format!("PublishBatch of {b}, {} concurrent callers", s.concurrency),
        (None, None) => format!("closed loop, {} concurrent callers", s.concurrency),
    };
    let failing = if s.failing_endpoints > 0 {
        format!(
            " ({} always answering 500, retried after {})",
            s.failing_endpoints, s.retry_schedule
        )
    } else {
        String::new()
    };
    let accept_only = if s.accept_only {
        " No dispatcher runs: this measures acceptance alone."
    } else {
        ""
    };
    format!(
        "{} events of ~{} B to {} endpoint(s){failing}; {shape}.{accept_only}",
        report::thousands(s.events as f64),
        s.payload_bytes,
        s.endpoints
    )
}

/// Writes the Markdown file.
pub fn write(path: &Path, output: &BenchOutput, settings: &Settings) -> Result<()> {
    std::fs::write(path, render(output, settings))
        .with_context(|| format!("writing {}", path.display()))
}
