//! The standard scenarios and the commands that run them.
//!
//! The defaults are sized so the eight load scenarios plus four 10 s baselines take under ten
//! minutes on two cores: most closed-loop scenarios produce about 60,000 deliveries,
//! hundred-endpoints 500,000 (about a minute at the top rate), the open loops run 60–70 s.
//! noisy-neighbour then runs twice (1 and 2 dispatchers), at least three minutes each and at
//! most `--timeout`; noisy-tenant, six phases of 20 s with their set-up and the waits between
//! them (about five minutes when Herald refuses what it should); portal-log last, a million
//! deliveries generated into PostgreSQL (about a minute) and 800 fetches of the portal's
//! delivery log. `--scale` shrinks or grows all of them at once; each run (each noisy-tenant
//! phase) is still bounded by `--timeout`.

use std::path::Path;

use anyhow::{Result, bail, ensure};

use crate::cli::{Cli, Command, ScenarioName, Settings};
use crate::ledger_growth;
use crate::load::LoadSpec;
use crate::noisy::{self, Plan};
use crate::noisy_report::NoisyReport;
use crate::noisy_tenant;
use crate::noisy_tenant_report::NoisyTenantReport;
use crate::portal_log;
use crate::report::{self, BenchOutput, RunEntry, RunReport};
use crate::{baseline, markdown, run};

/// Payload size of the baselines (the default scenarios' size).
const BASELINE_PAYLOAD_BYTES: usize = 1024;

/// The load of a standard scenario, its event count multiplied by `scale`; None for
/// noisy-neighbour and noisy-tenant, which are not one load but several phases ([`noisy`],
/// [`noisy_tenant`]).
pub fn spec(name: ScenarioName, scale: f64) -> Option<LoadSpec> {
    let n = |base: u64| ((base as f64 * scale).round() as u64).max(1);
    let base = LoadSpec::default();
    Some(match name {
        ScenarioName::OneEndpoint => LoadSpec {
            events: n(60_000),
            ..base
        },
        // Long enough to hold the top rate for a minute (the 5,000/s target is "over 60 s").
        ScenarioName::HundredEndpoints => LoadSpec {
            endpoints: 100,
            events: n(5_000),
            ..base
        },
        ScenarioName::Failing10Pct => LoadSpec {
            endpoints: 10,
            failing_endpoints: 1,
            events: n(6_000),
            ..base
        },
        ScenarioName::Payload10k => LoadSpec {
            payload_bytes: 10_000,
            events: n(20_000),
            ..base
        },
        ScenarioName::OpenLoop1000 => LoadSpec {
            rate: Some(1_000.0),
            events: n(60_000),
            ..base
        },
        ScenarioName::Sustained5000 => LoadSpec {
            endpoints: 100,
            rate: Some(50.0),
            events: n(3_500),
            ..base
        },
        ScenarioName::Batch => LoadSpec {
            batch: Some(500),
            concurrency: 4,
            events: n(50_000),
            ..base
        },
        ScenarioName::BatchAccept => LoadSpec {
            batch: Some(500),
            concurrency: 4,
            events: n(100_000),
            accept_only: true,
            ..base
        },
        ScenarioName::NoisyNeighbour
        | ScenarioName::NoisyTenant
        | ScenarioName::PortalLog
        | ScenarioName::ScaleOut
        | ScenarioName::LedgerGrowth => {
            return None;
        }
    })
}

/// What one `bench` invocation runs.
struct Plans {
    runs: Vec<(String, LoadSpec)>,
    noisy: Option<Plan>,
    noisy_tenant: Option<noisy_tenant::Plan>,
    portal_log: Option<portal_log::Plan>,
    scale_out: bool,
    ledger_growth: Option<ledger_growth::Plan>,
    baselines: bool,
}

/// Runs what the command line asks for.
pub async fn execute(cli: Cli) -> Result<()> {
    let settings = cli.settings;
    let command_line = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let (plans, markdown) = match cli.command {
        Command::Run(spec) => {
            let runs = vec![("custom".to_owned(), spec)];
            (Plans::loads(runs, settings.baselines), None)
        }
        Command::Scenario { name, events } => (Plans::scenario(name, events, &settings)?, None),
        Command::All { markdown } => {
            let runs = ScenarioName::LOADS
                .iter()
                .filter_map(|n| Some((n.as_str().to_owned(), spec(*n, settings.scale)?)))
                .collect();
            let plans = Plans {
                runs,
                noisy: Some(Plan::new(settings.scale, None)),
                noisy_tenant: Some(noisy_tenant::Plan::new(settings.scale)),
                portal_log: Some(portal_log::Plan::new(settings.scale)),
                scale_out: true,
                ledger_growth: Some(ledger_growth::Plan::new(settings.scale)),
                baselines: true,
            };
            (plans, markdown)
        }
        Command::Baselines => (Plans::loads(Vec::new(), true), None),
    };
    run_many(&settings, command_line, plans, markdown.as_deref()).await
}

impl Plans {
    fn loads(runs: Vec<(String, LoadSpec)>, baselines: bool) -> Self {
        Self {
            runs,
            noisy: None,
            noisy_tenant: None,
            portal_log: None,
            scale_out: false,
            ledger_growth: None,
            baselines,
        }
    }

    /// One standard scenario, `events` replacing its default count where it has one.
    fn scenario(name: ScenarioName, events: Option<u64>, settings: &Settings) -> Result<Self> {
        let mut plans = Self::loads(Vec::new(), settings.baselines);
        match (name, spec(name, settings.scale)) {
            (_, Some(mut spec)) => {
                if let Some(events) = events {
                    spec.events = events;
                }
                plans.runs.push((name.as_str().to_owned(), spec));
            }
            (ScenarioName::NoisyTenant, None) => {
                ensure!(
                    events.is_none(),
                    "--events does not apply to noisy-tenant (its phases are timed: use --scale)"
                );
                plans.noisy_tenant = Some(noisy_tenant::Plan::new(settings.scale));
            }
            (ScenarioName::PortalLog, None) => {
                ensure!(
                    events.is_none(),
                    "--events does not apply to portal-log (a million deliveries: use --scale)"
                );
                plans.portal_log = Some(portal_log::Plan::new(settings.scale));
            }
            (ScenarioName::ScaleOut, None) => {
                ensure!(
                    events.is_none(),
                    "--events does not apply to scale-out (hundred-endpoints' count: use --scale)"
                );
                plans.scale_out = true;
            }
            (ScenarioName::LedgerGrowth, None) => {
                ensure!(
                    events.is_none(),
                    "--events does not apply to ledger-growth (50,000,000 attempt rows: use --scale)"
                );
                plans.ledger_growth = Some(ledger_growth::Plan::new(settings.scale));
            }
            (_, None) => plans.noisy = Some(Plan::new(settings.scale, events)),
        }
        Ok(plans)
    }
}

async fn run_many(
    settings: &Settings,
    command: String,
    plans: Plans,
    markdown_path: Option<&Path>,
) -> Result<()> {
    let machine = if markdown_path.is_some() || settings.json_out.is_some() {
        Some(markdown::describe(settings).await)
    } else {
        None
    };
    let baselines = if plans.baselines {
        let b = baseline::run_all(settings, BASELINE_PAYLOAD_BYTES).await;
        report::print_baselines(&b);
        Some(b)
    } else {
        None
    };
    let mut entries = Vec::with_capacity(plans.runs.len());
    for (name, spec) in plans.runs {
        eprintln!("bench: running {name}");
        let result = run::run_one(settings, &name, &spec).await;
        let entry = RunEntry::new(&name, result, baselines.as_ref());
        match (&entry.report, &entry.error) {
            (Some(r), _) => report::print_run(&name, r, entry.ratios.as_ref()),
            (None, Some(e)) => eprintln!("bench: {name} failed: {e}"),
            (None, None) => {}
        }
        entries.push(entry);
    }
    let noisy_neighbour = match &plans.noisy {
        Some(plan) => noisy::run_all(settings, plan).await,
        None => Vec::new(),
    };
    let noisy_tenant = match &plans.noisy_tenant {
        Some(plan) => Some(noisy_tenant::run(settings, plan).await),
        None => None,
    };
    let portal_log = match &plans.portal_log {
        Some(plan) => Some(portal_log::run(settings, plan).await),
        None => None,
    };
    let scale_out_broker = if plans.scale_out {
        let (runs, broker) = crate::scale_out::run(settings, BASELINE_PAYLOAD_BYTES).await;
        entries.extend(runs);
        Some(broker)
    } else {
        None
    };
    let ledger_growth = match &plans.ledger_growth {
        Some(plan) => Some(ledger_growth::run(settings, plan).await),
        None => None,
    };
    let output = BenchOutput {
        command,
        generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        machine,
        baselines,
        runs: entries,
        noisy_neighbour,
        noisy_tenant,
        portal_log,
        scale_out_broker,
        ledger_growth,
    };
    if let Some(path) = &settings.json_out {
        report::write_json(path, &output)?;
        eprintln!("bench: wrote {}", path.display());
    }
    if let Some(path) = markdown_path {
        markdown::write(path, &output, settings)?;
        eprintln!("bench: wrote {}", path.display());
    }
    // A run that finished short (timed out, deliveries missing) has figures but is not a
    // result: callers that read them (`instructions.sh`, CI) must see a failure.
    let failed = failures(&output);
    if !failed.is_empty() {
        bail!(
            "{} of {} runs failed or finished short:\n  {}",
            failed.len(),
            output.runs.len()
                + output.noisy_neighbour.len()
                + usize::from(output.noisy_tenant.is_some())
                + usize::from(output.portal_log.is_some())
                + usize::from(output.ledger_growth.is_some()),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// One line per run that failed or finished short, naming it and why.
fn failures(output: &BenchOutput) -> Vec<String> {
    let loads = output.runs.iter().map(|r| {
        let shortfalls = r.report.as_ref().map(RunReport::shortfalls);
        (r.name.clone(), r.error.clone(), shortfalls)
    });
    let noisy = output.noisy_neighbour.iter().map(|r| {
        let shortfalls = r.report.as_ref().map(NoisyReport::shortfalls);
        (r.name(), r.error.clone(), shortfalls)
    });
    let tenant = output.noisy_tenant.iter().map(|e| {
        let shortfalls = e.report.as_ref().map(NoisyTenantReport::shortfalls);
        (e.name(), e.error.clone(), shortfalls)
    });
    let portal = output.portal_log.iter().map(|e| {
        let shortfalls = e
            .report
            .as_ref()
            .map(portal_log::PortalLogReport::shortfalls);
        (e.name(), e.error.clone(), shortfalls)
    });
    let growth = output
        .ledger_growth
        .iter()
        .map(|e| (e.name(), e.error.clone(), None));
    loads
        .chain(noisy)
        .chain(tenant)
        .chain(portal)
        .chain(growth)
        .filter_map(|(name, error, shortfalls)| {
            let why = match error {
                Some(e) => vec![e],
                None => shortfalls.unwrap_or_default(),
            };
            (!why.is_empty()).then(|| format!("{name}: {}", why.join("; ")))
        })
        .collect()
}
