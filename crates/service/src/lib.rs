//! The one start-up path of Herald's services (ingest, dispatcher, ledger).
//!
//! Every service binary is `fn main() { herald_service::main::<Config>() }`: its command line
//! is parsed by clap (serving when there is no subcommand, a maintenance command otherwise,
//! `--help` everywhere), telemetry starts, the `HERALD_*` configuration is read and checked,
//! and then either the maintenance command runs to completion or the service serves until
//! SIGTERM/Ctrl-C cancels its one [`CancellationToken`] and it has drained. Telemetry is
//! flushed last, whatever happened.
//!
//! What a service does is its [`Service`] implementation; what keeps its long-running parts
//! alive across broker and database outages is [`supervise`], with the one doubling back-off
//! of [`herald_core::backoff::Backoff`].

mod grpc;
mod supervise;

use std::future::Future;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
pub use grpc::{incoming as grpc_incoming, listen, server as grpc_server};
use herald_core::config::{ConfigError, Env, Reader};
pub use supervise::supervise;
pub use tokio_util::sync::CancellationToken;

/// A Herald service, implemented by its configuration type.
pub trait Service: Sized + Send + 'static {
    /// The binary's name (`herald-ingest`): the process name in logs, metrics and traces.
    const NAME: &'static str;
    /// One line on what the service does, for `--help`.
    const ABOUT: &'static str;
    /// Maintenance commands besides serving ([`NoCommand`] when there are none).
    type Command: Subcommand + Send;

    /// Reads and checks the `HERALD_*` configuration.
    fn load(env: &Reader<'_>) -> Result<Self, ConfigError>;

    /// Serves until `shutdown` is cancelled, then drains and returns.
    fn serve(self, shutdown: CancellationToken) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Runs one maintenance command to completion, printing its result on stdout.
    fn maintain(self, command: Self::Command) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The subcommands of a service that has no maintenance commands.
#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCommand {}

/// The command line: no subcommand serves.
#[derive(Parser, Debug)]
struct Cli<C: Subcommand> {
    #[command(subcommand)]
    command: Option<C>,
}

/// Parses `args` (the program name first) for service `S`; clap's error on bad usage or help.
fn parse<S: Service>(args: &[String]) -> Result<Option<S::Command>, clap::Error> {
    let command = Cli::<S::Command>::command()
        .name(S::NAME)
        .about(S::ABOUT)
        .after_help(
            "Without a command the service serves until SIGTERM or Ctrl-C. Configuration \
             comes from HERALD_* environment variables (see the README).",
        );
    let matches = command.try_get_matches_from(args)?;
    Ok(Cli::<S::Command>::from_arg_matches(&matches)?.command)
}

/// The whole life of a service process: parse, start telemetry, load the configuration, then
/// serve or run the maintenance command; flushes telemetry on the way out.
pub fn main<S: Service>() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let command = parse::<S>(&args).unwrap_or_else(|e| e.exit());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut telemetry = herald_telemetry::init(S::NAME);
        let result = async {
            let config = S::load(&Reader::new(&Env))?;
            match command {
                Some(command) => config.maintain(command).await,
                None => config.serve(shutdown_on_signal()).await,
            }
        }
        .await;
        if let Err(e) = &result {
            tracing::error!(
                error = format!("{e:#}"),
                "{} stopped with an error",
                S::NAME
            );
        }
        telemetry.shutdown();
        result
    })
}

/// A token cancelled by the first SIGTERM or Ctrl-C (a second one exits at once, see
/// [`herald_telemetry::wait_for_signal`]).
pub fn shutdown_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        herald_telemetry::wait_for_signal().await;
        token.cancel();
    });
    shutdown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Subcommand, Debug, PartialEq, Eq)]
    enum Maintenance {
        /// Apply migrations.
        Migrate,
    }

    struct Probe;

    impl Service for Probe {
        const NAME: &'static str = "herald-probe";
        const ABOUT: &'static str = "a probe";
        type Command = Maintenance;

        fn load(_: &Reader<'_>) -> Result<Self, ConfigError> {
            Ok(Probe)
        }

        async fn serve(self, _: CancellationToken) -> anyhow::Result<()> {
            Ok(())
        }

        async fn maintain(self, _: Maintenance) -> anyhow::Result<()> {
            Ok(())
        }
    }

    struct Plain;

    impl Service for Plain {
        const NAME: &'static str = "herald-plain";
        const ABOUT: &'static str = "no commands";
        type Command = NoCommand;

        fn load(_: &Reader<'_>) -> Result<Self, ConfigError> {
            Ok(Plain)
        }

        async fn serve(self, _: CancellationToken) -> anyhow::Result<()> {
            Ok(())
        }

        async fn maintain(self, command: NoCommand) -> anyhow::Result<()> {
            match command {}
        }
    }

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn no_subcommand_serves_and_a_subcommand_maintains() {
        assert_eq!(parse::<Probe>(&args("herald-probe")).unwrap(), None);
        assert_eq!(
            parse::<Probe>(&args("herald-probe migrate")).unwrap(),
            Some(Maintenance::Migrate)
        );
        assert_eq!(parse::<Plain>(&args("herald-plain")).unwrap(), None);
    }

    #[test]
    fn unknown_words_are_usage_errors_and_help_names_the_service() {
        let err = parse::<Probe>(&args("herald-probe migrat")).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidSubcommand);
        assert!(parse::<Plain>(&args("herald-plain serve")).is_err());
        let help = parse::<Probe>(&args("herald-probe --help")).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        let text = help.to_string();
        assert!(text.contains("herald-probe"), "{text}");
        assert!(text.contains("Apply migrations"), "{text}");
        assert!(text.contains("HERALD_"), "{text}");
    }
}
