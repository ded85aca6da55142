//! `herald-ingest`: the publishing and management API. With arguments it runs a maintenance
//! command and exits (`migrate`, `secrets status|reencrypt|generate-key`).

use herald_alloc as _;
use herald_core::config::{Env, Reader};
use herald_ingest::{Command, Config};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut telemetry = herald_telemetry::init("herald-ingest");
    let config = Config::load(&Reader::new(&Env))?;
    let command = herald_core::config::command_from_args(Command::parse);
    if command != Command::Serve {
        let result = herald_ingest::run_command(command, &config).await;
        telemetry.shutdown();
        return result;
    }
    let listener = tokio::net::TcpListener::bind(&config.listen_addr).await?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        herald_telemetry::wait_for_signal().await;
        token.cancel();
    });
    let result = herald_ingest::run(config, listener, shutdown).await;
    telemetry.shutdown();
    result
}
