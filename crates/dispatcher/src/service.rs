//! `herald-dispatcher` as a [`herald_service::Service`]: the one start-up path every Herald binary shares
//! (command line, configuration, telemetry, signals) calls into this crate from here.

use herald_core::config::{ConfigError, Reader};
use herald_service::{CancellationToken, Service};

use crate::Config;

impl Service for Config {
    const NAME: &'static str = "herald-dispatcher";
    const ABOUT: &'static str =
        "Herald dispatcher: delivers webhooks (signs, POSTs, retries on delay queues)";
    type Command = herald_service::NoCommand;

    fn load(env: &Reader<'_>) -> Result<Self, ConfigError> {
        Config::load(env)
    }

    async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        crate::run(self, shutdown).await
    }

    async fn maintain(self, command: herald_service::NoCommand) -> anyhow::Result<()> {
        match command {}
    }
}
