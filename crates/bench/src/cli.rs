//! Command line of `bench`: the settings every run shares (where the binaries and the
//! services are, how long anything may take) and the commands.
//!
//! Shared settings are global flags, so they may follow the subcommand:
//! `bench scenario one-endpoint --json-out one.json`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::load::LoadSpec;

/// Herald's own default database (the `postgres` database of a local server).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Herald's own default broker.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Herald's own default Redis.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Measures Herald end to end on this machine: real ingest, ledger and dispatcher processes,
/// a local receiver, and baselines of what the hardware allows.
#[derive(Parser, Debug)]
#[command(name = "bench", version)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

/// What to measure.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// One run with the load given by flags.
    Run(LoadSpec),
    /// One of the standard scenarios.
    Scenario {
        name: ScenarioName,
        /// Events to publish instead of the scenario's default (noisy-neighbour: tenant A's
        /// events per endpoint; noisy-tenant takes none).
        #[arg(long)]
        events: Option<u64>,
    },
    /// Every standard scenario plus the baselines.
    All {
        /// Also write the results as Markdown to this file (e.g. BENCHMARKS.md).
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// Only the baselines: raw RabbitMQ one and two hops, and a bare HTTP POST loop.
    Baselines,
}

/// Settings shared by every run.
#[derive(Args, Clone, Debug, Serialize)]
pub struct Settings {
    /// Directory holding herald-ingest, herald-ledger and herald-dispatcher.
    #[arg(long, global = true, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// PostgreSQL (also used by `psql` for the ledger polls and the cleanup).
    #[arg(long, global = true, env = "HERALD_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// RabbitMQ.
    #[arg(long, global = true, env = "HERALD_AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Redis.
    #[arg(long, global = true, env = "HERALD_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,
    /// Queue type of Herald's queues and of the RabbitMQ baselines.
    #[arg(long, global = true, default_value = "quorum", value_parser = ["quorum", "classic"])]
    pub queue_type: String,
    /// Dispatcher processes.
    #[arg(long, global = true, default_value_t = 1)]
    pub dispatchers: usize,
    /// Ingest processes, each on its own port; the load's connections are spread over them
    /// (as a gRPC client balancing over the addresses behind one name would).
    #[arg(long, global = true, default_value_t = 1)]
    pub ingests: usize,
    /// Longest one run (or one baseline, or one phase of noisy-tenant) may take, in seconds;
    /// it is then cut short and reported as timed out.
    #[arg(long, global = true, default_value_t = 600)]
    pub timeout: u64,
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    pub json_out: Option<PathBuf>,
    /// Also measure the baselines (always done by `all`).
    #[arg(long, global = true)]
    pub baselines: bool,
    /// Duration of each baseline, in seconds.
    #[arg(long, global = true, default_value_t = 10)]
    pub baseline_secs: u64,
    /// Multiplies the standard scenarios' event counts (e.g. 0.1 for a quick smoke run),
    /// noisy-neighbour's event counts and publishing time (0.05: 500 events per endpoint, 10 s),
    /// and the length of noisy-tenant's phases (20 s; not below 10 s).
    #[arg(long, global = true, default_value_t = 1.0)]
    pub scale: f64,
    /// Verify the signature of every n-th request at the receiver (0: never).
    #[arg(long, global = true, default_value_t = 100)]
    pub verify_every: u64,
    /// Extra environment for the Herald processes, e.g. `--set HERALD_DISPATCHER_CONCURRENCY=256`
    /// (repeatable; wins over the bench's own settings).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// The standard scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScenarioName {
    /// One endpoint, closed loop.
    #[value(name = "one-endpoint")]
    OneEndpoint,
    /// A hundred endpoints, closed loop: maximum deliveries/s over about a minute.
    #[value(name = "hundred-endpoints")]
    HundredEndpoints,
    /// Ten endpoints, one of which always answers 500.
    #[value(name = "failing-10pct")]
    Failing10Pct,
    /// 10 kB payloads.
    #[value(name = "payload-10k")]
    Payload10k,
    /// Open loop at 1,000 events/s.
    #[value(name = "open-loop-1000")]
    OpenLoop1000,
    /// Open loop at 5,000 deliveries/s (50 events/s to 100 endpoints) for 70 s: the target
    /// rate held, with its latency.
    #[value(name = "sustained-5000")]
    Sustained5000,
    /// PublishBatch of 500 events.
    #[value(name = "batch")]
    Batch,
    /// PublishBatch of 500 events with no dispatcher running: acceptance alone.
    #[value(name = "batch-accept")]
    BatchAccept,
    /// Tenant isolation: one tenant's latency alone, then beside a tenant whose endpoints hang
    /// and fail, with 1 and then 2 dispatchers (its own phases, see `noisy.rs`).
    #[value(name = "noisy-neighbour")]
    NoisyNeighbour,
    /// Tenant isolation against the API: one tenant's latency alone, then beside a tenant
    /// attacking with heavy filters, fan-out, replays, a SendTest flood and junk tokens (its
    /// own phases, see `noisy_tenant.rs`).
    #[value(name = "noisy-tenant")]
    NoisyTenant,
    /// The portal's delivery-log page (herald-console) over a tenant with 1,000,000
    /// deliveries generated into PostgreSQL: p50/p95/p99 of its fetches (see `portal_log.rs`).
    #[value(name = "portal-log")]
    PortalLog,
    /// hundred-endpoints with 1, 2 and 4 dispatchers, then 4 dispatchers and 2 ingests:
    /// deliveries/s and CPU per delivery for each (see `scale_out.rs`).
    #[value(name = "scale-out")]
    ScaleOut,
    /// The ledger's queries and retention over 50,000,000 attempt rows generated into
    /// PostgreSQL, on the layout before partitioning and after it (see `ledger_growth.rs`).
    #[value(name = "ledger-growth")]
    LedgerGrowth,
}

impl ScenarioName {
    /// Every scenario made of one load run, in the order `all` runs them (noisy-neighbour and
    /// noisy-tenant follow them).
    pub const LOADS: [ScenarioName; 8] = [
        ScenarioName::OneEndpoint,
        ScenarioName::HundredEndpoints,
        ScenarioName::Failing10Pct,
        ScenarioName::Payload10k,
        ScenarioName::OpenLoop1000,
        ScenarioName::Sustained5000,
        ScenarioName::Batch,
        ScenarioName::BatchAccept,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::OneEndpoint => "one-endpoint",
            ScenarioName::HundredEndpoints => "hundred-endpoints",
            ScenarioName::Failing10Pct => "failing-10pct",
            ScenarioName::Payload10k => "payload-10k",
            ScenarioName::OpenLoop1000 => "open-loop-1000",
            ScenarioName::Sustained5000 => "sustained-5000",
            ScenarioName::Batch => "batch",
            ScenarioName::BatchAccept => "batch-accept",
            ScenarioName::NoisyNeighbour => "noisy-neighbour",
            ScenarioName::NoisyTenant => "noisy-tenant",
            ScenarioName::PortalLog => "portal-log",
            ScenarioName::ScaleOut => "scale-out",
            ScenarioName::LedgerGrowth => "ledger-growth",
        }
    }
}
