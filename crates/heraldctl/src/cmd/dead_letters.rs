//! `heraldctl dead-letters`: messages the broker gave up on, as the ledger recorded them, with
//! the operator token: list them (newest first), show one with its body, and send some back to
//! the queue they died in once their cause is fixed.

use clap::Subcommand;
use herald_proto::v1 as pb;
use serde_json::{Value, json};

use crate::context::Ctx;
use crate::views;

const COLUMNS: &[&str] = &[
    "id",
    "queue",
    "reason",
    "tenant_id",
    "delivery_id",
    "error",
    "dead_lettered_at",
    "replayed_at",
];

const DETAIL_FIELDS: &[&str] = &[
    "id",
    "queue",
    "reason",
    "tenant_id",
    "delivery_id",
    "endpoint_id",
    "event_id",
    "error",
    "headers",
    "body_bytes",
    "body",
    "dead_lettered_at",
    "replayed_at",
];

#[derive(Subcommand, Debug)]
pub enum DeadLettersCmd {
    /// List dead letters, newest first (not yet replayed ones unless --include-replayed)
    List {
        /// Only this tenant's
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
        /// Replayed letters too
        #[arg(long)]
        include_replayed: bool,
        /// Letters per page (at most 500)
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: u32,
        /// Where the list goes on from (printed under a page that has more)
        #[arg(long, default_value = "")]
        cursor: String,
    },
    /// Show one dead letter with its headers and body (at most 64 KiB)
    Show {
        /// Dead letter id
        id: String,
    },
    /// Send dead letters back to the queue they died in; already replayed ones are skipped
    Replay {
        /// Dead letter ids (at most 1,000)
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
    },
}

impl DeadLettersCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let mut c = ctx.operations().await?;
        match self {
            DeadLettersCmd::List {
                tenant,
                include_replayed,
                limit,
                cursor,
            } => {
                let req = pb::ListDeadLettersRequest {
                    tenant_id: tenant,
                    include_replayed,
                    page_size: limit,
                    cursor,
                };
                let r = c
                    .list_dead_letters(ctx.admin_call(req)?)
                    .await?
                    .into_inner();
                let rows: Vec<Value> = r.dead_letters.iter().map(views::dead_letter).collect();
                ctx.out
                    .page("dead_letters", rows, COLUMNS, &r.next_cursor, "--cursor")
            }
            DeadLettersCmd::Show { id } => {
                let req = pb::GetDeadLetterRequest { id };
                let d = c.get_dead_letter(ctx.admin_call(req)?).await?.into_inner();
                ctx.out.record(&views::dead_letter(&d), DETAIL_FIELDS)
            }
            DeadLettersCmd::Replay { ids } => {
                let req = pb::ReplayDeadLettersRequest { ids };
                let r = c
                    .replay_dead_letters(ctx.admin_call(req)?)
                    .await?
                    .into_inner();
                let row = json!({"replayed": r.replayed, "skipped": r.skipped});
                ctx.out.rows(&[row], &["replayed", "skipped"])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Line {
        #[command(subcommand)]
        cmd: DeadLettersCmd,
    }

    fn parse(args: &[&str]) -> Result<DeadLettersCmd, clap::Error> {
        Line::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|l| l.cmd)
    }

    #[test]
    fn commands_parse_and_replay_needs_ids() {
        match parse(&["list", "--tenant", "t_1", "--include-replayed"]).unwrap() {
            DeadLettersCmd::List {
                tenant,
                include_replayed,
                limit,
                ..
            } => {
                assert_eq!(tenant.as_deref(), Some("t_1"));
                assert!(include_replayed);
                assert_eq!(limit, 50);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["replay", "a", "b"]).unwrap() {
            DeadLettersCmd::Replay { ids } => assert_eq!(ids, ["a", "b"]),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["replay"]).is_err());
        assert!(parse(&["show"]).is_err());
    }

    #[test]
    fn every_column_is_in_the_view() {
        let v = views::dead_letter(&pb::DeadLetter::default());
        for f in COLUMNS.iter().chain(DETAIL_FIELDS) {
            assert!(v.get(*f).is_some(), "dead letter view has no {f}");
        }
    }
}
