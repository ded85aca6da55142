//! One-shot maintenance commands of the `herald-ingest` binary, for operators and deploy hooks:
//! `migrate`, and the `secrets` family that rotates the key endpoint secrets are encrypted with.
//! They use the same `HERALD_*` settings as the service and exit when done.

use herald_core::secretbox::Keyring;
use herald_store::Store;

use crate::Config;

/// The maintenance commands of `herald-ingest` (without one, it serves).
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Apply the database migrations and exit (a deploy hook runs this before the services).
    Migrate,
    /// Rotate the key endpoint secrets are encrypted with (HERALD_SECRET_KEY).
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

/// `herald-ingest secrets …`.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum SecretsCommand {
    /// How many stored secrets each key id holds, and which need re-encrypting.
    Status,
    /// Move every stored secret to the current (first) key of HERALD_SECRET_KEY.
    Reencrypt,
    /// Print a new key for HERALD_SECRET_KEY (`ID:base64key`).
    GenerateKey {
        /// The key's id; default `k` and the UTC date and time, so ids sort by age.
        id: Option<String>,
    },
}

/// A key id that sorts by creation: `k` and the UTC date and time.
fn default_key_id() -> String {
    format!("k{}", chrono::Utc::now().format("%Y%m%d%H%M%S"))
}

/// Runs a maintenance command, printing its result on stdout.
pub async fn run_command(command: Command, config: &Config) -> anyhow::Result<()> {
    let c = &config.common;
    match command {
        Command::Secrets(SecretsCommand::GenerateKey { id }) => {
            let id = id.unwrap_or_else(default_key_id);
            let spec = Keyring::generate_spec(&id)?;
            println!("{spec}");
            // Only a rotation has steps to follow; a first key (`make run` makes one) is
            // simply HERALD_SECRET_KEY.
            if let Some(current) = c.secret_keys.current_id() {
                eprintln!(
                    "to rotate from key {current}: put the new key first in HERALD_SECRET_KEY (keep the old key after it, comma-separated), restart the services, then run `herald-ingest secrets reencrypt`"
                );
            }
        }
        Command::Migrate => {
            let store = Store::from_config(c, 2).await?;
            store.migrate().await?;
            tracing::info!(schema = %c.database_schema, "migrations applied");
        }
        Command::Secrets(SecretsCommand::Status) => {
            let store = Store::from_config(c, 2).await?;
            store.migrate().await?;
            let current = c.secret_keys.current_id();
            println!(
                "current key: {}",
                current.unwrap_or("(none: secrets stored in clear)")
            );
            for row in store.secret_key_counts().await? {
                let id = row.key_id.as_deref();
                let note = match id {
                    None => "in clear",
                    Some(k) if Some(k) == current => "current",
                    Some(_) => "needs reencrypt",
                };
                println!(
                    "{:<24} {:>10} secrets  {note}",
                    id.unwrap_or("-"),
                    row.secrets
                );
            }
        }
        Command::Secrets(SecretsCommand::Reencrypt) => {
            let store = Store::from_config(c, 2).await?;
            store.migrate().await?;
            let report = store.reencrypt_secrets().await?;
            println!(
                "re-encrypted {} secrets of {} endpoints with key {}",
                report.secrets,
                report.endpoints,
                c.secret_keys.current_id().unwrap_or("-")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{FromArgMatches, Subcommand};

    use super::*;

    fn parse(line: &str) -> Result<Command, clap::Error> {
        let cli = clap::Command::new("herald-ingest").subcommand_required(true);
        let matches = Command::augment_subcommands(cli).try_get_matches_from(
            std::iter::once("herald-ingest").chain(line.split_whitespace()),
        )?;
        Command::from_arg_matches(&matches)
    }

    #[test]
    fn commands_parse_and_unknown_ones_are_refused() {
        assert_eq!(parse("migrate").unwrap(), Command::Migrate);
        assert_eq!(
            parse("secrets reencrypt").unwrap(),
            Command::Secrets(SecretsCommand::Reencrypt)
        );
        assert_eq!(
            parse("secrets generate-key k2").unwrap(),
            Command::Secrets(SecretsCommand::GenerateKey {
                id: Some("k2".into())
            })
        );
        assert_eq!(
            parse("secrets generate-key").unwrap(),
            Command::Secrets(SecretsCommand::GenerateKey { id: None })
        );
        assert!(default_key_id().starts_with('k'));
        let e = parse("secrets rotate").unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidSubcommand);
    }
}
