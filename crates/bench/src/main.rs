//! `bench`: measures Herald end to end on this machine — real ingest, ledger and dispatcher
//! processes against the local PostgreSQL, RabbitMQ and Redis, a load generator on the public
//! gRPC API, a receiver that times and checks every delivery, and baselines of what the same
//! hardware does without Herald.
//!
//! `bench all --markdown BENCHMARKS.md` runs every standard scenario (noisy-neighbour and
//! noisy-tenant measure tenant isolation, portal-log the portal's delivery log over a million
//! deliveries); `bench scenario <name>` one of them;
//! `bench run --endpoints … --events …` any load; `bench baselines` only those.

mod baseline;
mod cli;
mod db;
mod grpc;
mod ledger_growth;
mod load;
mod markdown;
mod noisy;
mod noisy_report;
mod noisy_tenant;
mod noisy_tenant_attacks;
mod noisy_tenant_calls;
mod noisy_tenant_report;
mod portal_log;
mod procs;
mod rawamqp;
mod receiver;
mod report;
mod run;
mod scale_out;
mod scenarios;
mod usage;

use clap::Parser;
use herald_alloc as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    tokio::select! {
        result = scenarios::execute(cli) => result,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the run kills the Herald processes; their data is left behind.
            anyhow::bail!("interrupted: bench* schemas, queues and Redis keys of the current run remain")
        }
    }
}
