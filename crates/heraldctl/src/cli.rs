//! The top-level command line: the options every command shares, under headings of their own
//! so a command's `--help` lists its own flags first, and the command groups.

use clap::{Args, Parser, Subcommand};

use crate::cmd::{
    dead_letters, deliveries, endpoints, event_types, keys, listen, portal, publish, queues,
    tenants, verify,
};
use crate::context::Ctx;

#[derive(Parser, Debug)]
#[command(
    name = "heraldctl",
    version,
    about = "Manage and use a Herald webhook installation",
    long_about = "Manage and use a Herald webhook installation.\n\n\
        Results go to standard output (tables, --json, or one field with --get); hints and \
        errors go to standard error."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the services are and the credentials to call them with.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection options")]
pub struct Connection {
    /// Ingest's gRPC address (tenants, keys, endpoints, event types, publishing)
    #[arg(
        long,
        env = "HERALD_INGEST_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:50051",
        global = true,
        value_name = "URL"
    )]
    pub ingest: String,
    /// The ledger's gRPC address (the delivery log, dead letters, queues)
    #[arg(
        long,
        env = "HERALD_LEDGER_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:50052",
        global = true,
        value_name = "URL"
    )]
    pub ledger: String,
    /// Tenant API key, for every command but `tenant` and `key`
    #[arg(
        long,
        env = "HERALD_API_KEY",
        hide_env_values = true,
        global = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Operator token, for `tenant`, `key`, `dead-letters` and `queues`
    #[arg(
        long,
        env = "HERALD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
}

/// How results are printed.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Output options")]
pub struct OutputArgs {
    /// Print JSON instead of tables
    #[arg(long, global = true, conflicts_with = "get")]
    pub json: bool,
    /// Print only this field of each result, one per line (e.g. `--get id`), for shell variables
    #[arg(long, global = true, value_name = "FIELD")]
    pub get: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tenants (operator token)
    #[command(subcommand, visible_alias = "tenants")]
    Tenant(tenants::TenantCmd),
    /// API keys (operator token)
    #[command(subcommand, visible_alias = "keys")]
    Key(keys::KeyCmd),
    /// Portal links that open a tenant's webhooks page (operator token, or an API key with
    /// portal:create)
    #[command(subcommand)]
    Portal(portal::PortalCmd),
    /// Endpoints: create, inspect, test, rotate secrets (API key)
    #[command(subcommand)]
    Endpoint(endpoints::EndpointCmd),
    /// The event type catalogue (API key)
    #[command(subcommand, name = "event-type")]
    EventType(event_types::EventTypeCmd),
    /// Publish an event; the payload comes from --file or standard input (API key)
    Publish(publish::PublishArgs),
    /// The delivery log: list, show, redeliver, replay, hourly stats (API key)
    #[command(subcommand)]
    Deliveries(deliveries::DeliveriesCmd),
    /// Dead letters: list, show, send back (operator token)
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(dead_letters::DeadLettersCmd),
    /// Messages and consumers of every queue (operator token)
    Queues(queues::QueuesArgs),
    /// Run a local webhook receiver that prints each delivery and checks its signature
    Listen(listen::ListenArgs),
    /// Verify a delivery's signature as a receiver would; exits 1 when it does not verify
    Verify(verify::VerifyArgs),
}

impl Command {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            Command::Tenant(cmd) => cmd.run(ctx).await,
            Command::Key(cmd) => cmd.run(ctx).await,
            Command::Portal(cmd) => cmd.run(ctx).await,
            Command::Endpoint(cmd) => cmd.run(ctx).await,
            Command::EventType(cmd) => cmd.run(ctx).await,
            Command::Publish(args) => args.run(ctx).await,
            Command::Deliveries(cmd) => cmd.run(ctx).await,
            Command::DeadLetters(cmd) => cmd.run(ctx).await,
            Command::Queues(args) => args.run(ctx).await,
            Command::Listen(args) => args.run().await,
            Command::Verify(args) => args.run(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(line: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("heraldctl").chain(line.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every subcommand and every flag says what it is for in `--help`.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "heraldctl", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    /// A command's help lists its own flags first and the shared ones under their headings.
    #[test]
    fn shared_options_have_their_own_headings() {
        let mut cli = Cli::command();
        cli.build();
        let list = cli
            .find_subcommand_mut("endpoint")
            .and_then(|c| c.find_subcommand_mut("list"))
            .expect("endpoint list exists");
        let help = list.render_help().to_string();
        let own = help.find("--limit").expect("own flag listed");
        let connection = help
            .find("Connection options:")
            .expect("connection heading");
        let ingest = help.find("--ingest").expect("--ingest listed");
        let output = help.find("Output options:").expect("output heading");
        assert!(own < connection && connection < ingest, "{help}");
        assert!(help[output..].contains("--json"), "{help}");
    }

    #[test]
    fn shared_options_go_anywhere_on_the_line() {
        let cli = parse(&[
            "endpoint",
            "get",
            "ep_1",
            "--json",
            "--ingest",
            "http://h:1",
        ])
        .unwrap();
        assert!(cli.output.json);
        assert_eq!(cli.connection.ingest, "http://h:1");
        let cli = parse(&["--get", "id", "tenant", "create", "--name", "acme"]).unwrap();
        assert_eq!(cli.output.get.as_deref(), Some("id"));
        assert!(matches!(cli.command, Command::Tenant(_)));
    }

    #[test]
    fn json_and_get_exclude_each_other() {
        let err = parse(&["--json", "--get", "id", "endpoint", "list"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn representative_lines_parse_to_their_commands() {
        let lines: &[&[&str]] = &[
            &["key", "create", "--tenant", "t_1"],
            &[
                "endpoint",
                "create",
                "--url",
                "https://x/h",
                "--event-type",
                "a.*",
            ],
            &[
                "endpoint",
                "update",
                "ep_1",
                "--disable",
                "--retry-schedule",
                "none",
            ],
            &["endpoint", "rotate-secret", "ep_1", "--grace", "1h"],
            &["event-type", "list", "--all", "--group", "billing"],
            &[
                "publish",
                "--type",
                "invoice.paid",
                "--idempotency-key",
                "k1",
            ],
            &["deliveries", "list", "--status", "failed", "--limit", "5"],
            &[
                "deliveries",
                "replay",
                "ep_1",
                "--since",
                "2026-11-23T08:00:00Z",
            ],
            &["listen", "--port", "9000", "--scheme", "hex"],
            &["deliveries", "stats", "ep_1", "--hours", "168"],
            &["dead-letters", "list", "--tenant", "t_1", "--limit", "5"],
            &["dead-letters", "replay", "dl_1", "dl_2"],
            &["queues", "--kind", "delay", "--non-empty"],
            &[
                "portal",
                "link",
                "--tenant",
                "t_1",
                "--ttl",
                "600",
                "--read-only",
            ],
            &[
                "portal",
                "link",
                "--scope",
                "deliveries:read",
                "--accent",
                "#112233",
                "--mode",
                "dark",
            ],
            &[
                "keys",
                "create",
                "--tenant",
                "t_1",
                "--scope",
                "events:publish",
                "--ttl",
                "60",
            ],
            &["keys", "list", "--tenant", "t_1", "--all"],
            &["tenants", "list"],
            &["tenants", "troubled", "--limit", "5"],
            &[
                "tenant",
                "update",
                "t_1",
                "--portal-origin",
                "https://app.example.com",
            ],
        ];
        for line in lines {
            if let Err(e) = parse(line) {
                panic!("{line:?} does not parse: {e}");
            }
        }
    }

    #[test]
    fn conflicting_or_missing_arguments_are_refused() {
        let enable_and_disable = parse(&["endpoint", "update", "ep_1", "--enable", "--disable"]);
        assert!(enable_and_disable.is_err());
        assert!(parse(&["publish"]).is_err(), "--type is required");
        assert!(
            parse(&["deliveries", "show"]).is_err(),
            "the id is required"
        );
        assert!(parse(&["endpoint", "frobnicate"]).is_err());
    }
}
