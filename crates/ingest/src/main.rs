//! `herald-ingest`: the publishing and management API.

use herald_core::config::{Env, Reader};
use herald_ingest::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    herald_core::telemetry::init("herald-ingest");
    let config = Config::load(&Reader::new(&Env))?;
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        let c = &config.common;
        let store = herald_store::Store::connect(&c.database_url, &c.database_schema, 2).await?;
        store.migrate().await?;
        tracing::info!(schema = %c.database_schema, "migrations applied");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(&config.listen_addr).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    herald_ingest::run(config, listener, shutdown).await
}

async fn signals(token: CancellationToken) {
    herald_core::telemetry::wait_for_signal().await;
    token.cancel();
}
