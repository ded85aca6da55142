//! `herald-dispatcher`: delivers webhooks.

use herald_alloc as _;
use herald_core::config::{Env, Reader};
use herald_dispatcher::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut telemetry = herald_telemetry::init("herald-dispatcher");
    let config = Config::load(&Reader::new(&Env))?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        herald_telemetry::wait_for_signal().await;
        token.cancel();
    });
    let result = herald_dispatcher::run(config, shutdown).await;
    telemetry.shutdown();
    result
}
