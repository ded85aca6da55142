//! `heraldctl`: manage tenants, keys, endpoints and event types, publish events, read the
//! delivery log, and verify signatures, from a shell.
//!
//! Tables for people, `--json` for scripts. Credentials come from flags or the environment
//! (`HERALD_ADMIN_TOKEN`, `HERALD_API_KEY`) and are never printed.

mod commands;
mod listen;
mod output;
mod page;

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = commands::Cli::parse();
    if let Err(e) = commands::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
