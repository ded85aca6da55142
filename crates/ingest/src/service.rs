//! `herald-ingest` as a [`herald_service::Service`]: the one start-up path every Herald binary shares
//! (command line, configuration, telemetry, signals) calls into this crate from here.

use herald_core::config::{ConfigError, Reader};
use herald_service::{CancellationToken, Service};

use crate::Config;

impl Service for Config {
    const NAME: &'static str = "herald-ingest";
    const ABOUT: &'static str =
        "Herald ingest: the gRPC API platforms publish events to and manage endpoints with";
    type Command = crate::Command;

    fn load(env: &Reader<'_>) -> Result<Self, ConfigError> {
        Config::load(env)
    }

    async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let listener = herald_service::listen(&self.listen_addr).await?;
        crate::run(self, listener, shutdown).await
    }

    async fn maintain(self, command: crate::Command) -> anyhow::Result<()> {
        crate::run_command(command, &self).await
    }
}
