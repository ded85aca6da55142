//! `heraldctl`: manage tenants, keys, endpoints and event types, publish events, read the
//! delivery log, and verify signatures, from a shell.
//!
//! Tables for people, `--json` for scripts, `--get FIELD` for shell variables. Standard output
//! carries results only: hints (the next page's cursor, progress, "the log trails") go to
//! standard error, so `X=$(heraldctl --get id …)` captures exactly the value. Credentials come
//! from flags or the environment (`HERALD_ADMIN_TOKEN`, `HERALD_API_KEY`) and are never printed.
//!
//! # Layout
//! - [`cli`]: the top-level parser and the options every command shares (connection, output).
//! - `cmd/*`: one module per command group, each holding its clap definitions and handlers.
//! - [`context`]: what a handler gets: clients connected on demand, authenticated requests and
//!   the output mode.
//! - [`output`]: tables, records, `--get` and JSON; [`views`]: API messages as JSON rows.
//! - [`errors`]: one line per failure (gRPC status, unreachable service, broken pipe).
//! - [`input`]: payload files and the small parsers flags share.

pub mod cli;
mod cmd;
mod context;
pub mod errors;
mod input;
mod output;
mod views;

pub use cli::Cli;

/// Runs one command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = context::Ctx::new(cli.connection, cli.output);
    cli.command.run(&ctx).await
}
