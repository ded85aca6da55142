//! `heraldctl publish`: one event from a file or standard input.

use clap::Args;
use herald_proto::v1 as pb;
use serde_json::json;

use crate::context::Ctx;
use crate::input::read_input;

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Event type, e.g. invoice.paid
    #[arg(long = "type", value_name = "TYPE")]
    event_type: String,
    /// File holding the JSON payload ("-" or absent: standard input)
    #[arg(long, value_name = "PATH")]
    file: Option<String>,
    /// Publishing again with the same key within 24 h returns the first event
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
}

impl PublishArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let payload = read_input(self.file.as_deref())?;
        let req = pb::PublishRequest {
            event_type: self.event_type,
            payload,
            idempotency_key: self.idempotency_key,
            occurred_at: None,
        };
        let r = ctx
            .events()
            .await?
            .publish(ctx.tenant_call(req)?)
            .await?
            .into_inner();
        let row =
            json!({"event_id": r.event_id, "deliveries": r.deliveries, "duplicate": r.duplicate});
        ctx.out
            .rows(&[row], &["event_id", "deliveries", "duplicate"])
    }
}
