//! One-shot maintenance commands of the `herald-ingest` binary, for operators and deploy hooks:
//! `migrate`, and the `secrets` family that rotates the key endpoint secrets are encrypted with.
//! They use the same `HERALD_*` settings as the service and exit when done.

use herald_core::secretbox::Keyring;
use herald_store::Store;

use crate::Config;

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// No arguments: serve gRPC.
    Serve,
    /// `migrate`: apply database migrations.
    Migrate,
    /// `secrets status`: stored secrets per key id.
    SecretsStatus,
    /// `secrets reencrypt`: move every stored secret to the current key.
    SecretsReencrypt,
    /// `secrets generate-key [ID]`: print a new key for `HERALD_SECRET_KEY`.
    SecretsGenerateKey(String),
}

const USAGE: &str = "usage: herald-ingest [migrate | secrets status | secrets reencrypt | secrets generate-key [ID]]";

impl Command {
    /// Reads the command from the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match args.as_slice() {
            [] => Ok(Command::Serve),
            ["migrate"] => Ok(Command::Migrate),
            ["secrets", "status"] => Ok(Command::SecretsStatus),
            ["secrets", "reencrypt"] => Ok(Command::SecretsReencrypt),
            ["secrets", "generate-key"] => Ok(Command::SecretsGenerateKey(default_key_id())),
            ["secrets", "generate-key", id] => Ok(Command::SecretsGenerateKey((*id).to_owned())),
            ["-h" | "--help" | "help"] => Err(USAGE.to_owned()),
            other => Err(format!("unknown command {:?}\n{USAGE}", other.join(" "))),
        }
    }
}

/// A key id that sorts by creation: `k` and the UTC date and time.
fn default_key_id() -> String {
    format!("k{}", chrono::Utc::now().format("%Y%m%d%H%M%S"))
}

/// Runs a maintenance command (not `Serve`), printing its result on stdout.
pub async fn run_command(command: Command, config: &Config) -> anyhow::Result<()> {
    let c = &config.common;
    match command {
        Command::Serve => anyhow::bail!("serve is not a maintenance command"),
        Command::SecretsGenerateKey(id) => {
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
        Command::SecretsStatus => {
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
        Command::SecretsReencrypt => {
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
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        Command::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn commands_parse_and_unknown_ones_show_usage() {
        assert_eq!(parse(&[]), Ok(Command::Serve));
        assert_eq!(parse(&["migrate"]), Ok(Command::Migrate));
        assert_eq!(
            parse(&["secrets", "reencrypt"]),
            Ok(Command::SecretsReencrypt)
        );
        assert_eq!(
            parse(&["secrets", "generate-key", "k2"]),
            Ok(Command::SecretsGenerateKey("k2".into()))
        );
        assert!(matches!(
            parse(&["secrets", "generate-key"]),
            Ok(Command::SecretsGenerateKey(id)) if id.starts_with('k')
        ));
        let e = parse(&["secrets", "rotate"]).unwrap_err();
        assert!(
            e.contains("unknown command \"secrets rotate\"") && e.contains("usage:"),
            "{e}"
        );
    }
}
