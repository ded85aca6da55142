//! `herald-ingest`: the publishing and management API (`herald-ingest migrate` applies the
//! database migrations and exits).

use herald_core::config::{Env, Reader};
use herald_ingest::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut telemetry = herald_telemetry::init("herald-ingest");
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
    let token = shutdown.clone();
    tokio::spawn(async move {
        herald_telemetry::wait_for_signal().await;
        token.cancel();
    });
    let result = herald_ingest::run(config, listener, shutdown).await;
    telemetry.shutdown();
    result
}
