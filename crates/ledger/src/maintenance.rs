//! One-shot maintenance commands of the `herald-ledger` binary, for operators: sending dead
//! letters back where they died once their cause is fixed. They use the same `HERALD_*`
//! settings as the service and exit when done.

use herald_broker::{Publisher, Topology};
use herald_store::Store;

use crate::Config;
use crate::deadletter;

/// The maintenance commands of `herald-ledger` (without one, it serves).
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Dead letters: messages a queue gave up on (unreadable, or redelivered too often).
    #[command(subcommand)]
    DeadLetters(DeadLetters),
}

/// `herald-ledger dead-letters …`.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum DeadLetters {
    /// Send recorded dead letters back to the queue they died in, oldest first, once their
    /// cause is fixed.
    Replay {
        /// Only the letters of this queue (default: both).
        #[arg(long, value_parser = ["work", "ledger"])]
        queue: Option<String>,
        /// At most this many letters.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

/// Runs a maintenance command, printing its result on stdout.
pub async fn run_command(command: Command, config: &Config) -> anyhow::Result<()> {
    let Command::DeadLetters(DeadLetters::Replay { queue, limit }) = command;
    let c = &config.common;
    let store = Store::from_config(c, 2).await?;
    store.migrate().await?;
    let topology = Topology::from_config(c);
    let publisher = Publisher::connect(&c.amqp_url, "herald-ledger-replay", topology, 1).await?;
    let selection = deadletter::Selection::Oldest {
        queue: queue.as_deref(),
        limit,
    };
    let report = deadletter::replay(store.pool(), &publisher, selection).await;
    publisher.close().await;
    let r = report?;
    println!(
        "replayed {} dead letters; skipped {} kept only in part (over 64 KiB) and {} that are not readable tasks",
        r.replayed, r.truncated, r.unreadable
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{FromArgMatches, Subcommand};

    use super::*;

    fn parse(line: &str) -> Result<Command, clap::Error> {
        let cli = clap::Command::new("herald-ledger").subcommand_required(true);
        let matches = Command::augment_subcommands(cli).try_get_matches_from(
            std::iter::once("herald-ledger").chain(line.split_whitespace()),
        )?;
        Command::from_arg_matches(&matches)
    }

    fn replay(queue: Option<&str>, limit: u32) -> Command {
        Command::DeadLetters(DeadLetters::Replay {
            queue: queue.map(str::to_owned),
            limit,
        })
    }

    #[test]
    fn commands_are_read_or_refused() {
        assert_eq!(parse("dead-letters replay").unwrap(), replay(None, 1000));
        assert_eq!(
            parse("dead-letters replay --limit 5 --queue ledger").unwrap(),
            replay(Some("ledger"), 5)
        );
        for bad in [
            "serve",
            "dead-letters",
            "dead-letters replay --limit",
            "dead-letters replay --limit x",
            "dead-letters replay --queue dead",
            "dead-letters replay --force 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
