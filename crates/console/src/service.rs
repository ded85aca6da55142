//! `herald-console` as a [`herald_service::Service`]: the start-up path every Herald binary
//! shares (command line, configuration, telemetry, signals).

use herald_core::config::{ConfigError, Reader};
use herald_service::{CancellationToken, NoCommand, Service};

use crate::Config;

impl Service for Config {
    const NAME: &'static str = "herald-console";
    const ABOUT: &'static str =
        "Herald console: the embeddable tenant portal and the operator console (web pages)";
    type Command = NoCommand;

    fn load(env: &Reader<'_>) -> Result<Self, ConfigError> {
        Config::load(env)
    }

    async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let listener = herald_service::listen(&self.listen_addr).await?;
        crate::run(self, listener, shutdown).await
    }

    async fn maintain(self, command: NoCommand) -> anyhow::Result<()> {
        match command {}
    }
}
