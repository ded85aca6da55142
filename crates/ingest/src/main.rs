//! `herald-ingest`: the publishing and management API.

use herald_core::config::{Env, Reader};
use herald_ingest::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    herald_core::telemetry::init("herald-ingest");
    let config = Config::load(&Reader::new(&Env))?;
    let listener = tokio::net::TcpListener::bind(&config.listen_addr).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    herald_ingest::run(config, listener, shutdown).await
}

async fn signals(token: CancellationToken) {
    herald_core::telemetry::wait_for_signal().await;
    token.cancel();
}
