//! `heraldctl queues`: messages waiting and consumers of every queue of the installation
//! (work shards, delay ladder, the ledger's queue, dead letters), with the operator token.

use clap::Args;
use herald_proto::v1 as pb;
use serde_json::Value;

use crate::context::Ctx;
use crate::views;

const COLUMNS: &[&str] = &["name", "kind", "messages", "consumers"];

#[derive(Args, Debug)]
pub struct QueuesArgs {
    /// Only queues of this kind
    #[arg(long, value_parser = ["work", "delay", "ledger", "dead_letter"])]
    kind: Option<String>,
    /// Only queues holding messages
    #[arg(long)]
    non_empty: bool,
}

impl QueuesArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let mut c = ctx.operations().await?;
        let req = ctx.admin_call(pb::GetQueueDepthsRequest {})?;
        let r = c.get_queue_depths(req).await?.into_inner();
        let rows: Vec<Value> = r
            .queues
            .iter()
            .filter(|q| self.kind.as_deref().is_none_or(|k| q.kind == k))
            .filter(|q| !self.non_empty || q.messages > 0)
            .map(views::queue_depth)
            .collect();
        ctx.out.rows(&rows, COLUMNS)
    }
}
