//! `heraldctl deliveries`: the delivery log on the ledger (list, one delivery with its
//! attempts, recent activity, an endpoint's hourly statistics) and re-sends (redeliver one,
//! replay an endpoint's).
//!
//! The log is written by the ledger from the broker in batches, so it trails publishing by a
//! moment: an empty first page says so on standard error rather than leaving a bare header.

use clap::{Args, Subcommand};
use herald_proto::v1 as pb;
use serde_json::{Value, json};

use crate::cmd::replay::ReplayArgs;
use crate::context::Ctx;
use crate::input::{parse_status, parse_time};
use crate::output::{self, emit};
use crate::views;

const COLUMNS: &[&str] = &[
    "id",
    "event_type",
    "endpoint_id",
    "status",
    "attempt_count",
    "response_status",
    "created_at",
    "next_retry_at",
];

const DETAIL_FIELDS: &[&str] = &[
    "id",
    "event_id",
    "event_type",
    "endpoint_id",
    "status",
    "attempt_count",
    "response_status",
    "latency_ms",
    "last_error",
    "response_body",
    "created_at",
    "last_attempt_at",
    "next_retry_at",
    "test",
];

const ATTEMPT_COLUMNS: &[&str] = &[
    "attempt",
    "status",
    "started_at",
    "response_status",
    "latency_ms",
    "error",
    "trigger",
];

const ACTIVITY_COLUMNS: &[&str] = &[
    "at",
    "event_type",
    "endpoint_url",
    "status",
    "response_status",
    "delivery_id",
];

const STATS_COLUMNS: &[&str] = &[
    "hour",
    "attempts",
    "successes",
    "success_rate",
    "p50_latency_ms",
    "p95_latency_ms",
];

/// Said under an empty first page.
pub const EMPTY_HINT: &str = "no deliveries yet: the delivery log trails publishing by a \
    moment, so an event published just now shows within a second or two";

#[derive(Subcommand, Debug)]
pub enum DeliveriesCmd {
    /// List deliveries, newest first
    List(ListArgs),
    /// Show one delivery and its attempts, oldest first
    Show {
        /// Delivery id
        id: String,
        /// Attempts shown (default 100, at most 500)
        #[arg(long, default_value_t = 100, value_name = "N")]
        attempts_limit: u32,
        /// Where the attempts go on from (printed under a page that has more)
        #[arg(long, default_value = "", value_name = "CURSOR")]
        attempts_cursor: String,
    },
    /// The latest deliveries across all endpoints
    Activity {
        /// How many (default 10, at most 100)
        #[arg(long, default_value_t = 10, value_name = "N")]
        limit: u32,
    },
    /// Queue a new attempt of one delivery, now
    Redeliver {
        /// Delivery id
        id: String,
    },
    /// Re-send an endpoint's deliveries (default: the failed ones), every page of them
    Replay(ReplayArgs),
    /// An endpoint's attempts hour by hour, oldest first: success rate, p50/p95 latency
    Stats {
        /// Endpoint id
        endpoint: String,
        /// Whole hours before the current one (1 to 720)
        #[arg(long, default_value_t = 24, value_name = "N")]
        hours: u32,
    },
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only deliveries to this endpoint id
    #[arg(long, value_name = "ID")]
    endpoint: Option<String>,
    /// Only deliveries of this event id
    #[arg(long, value_name = "ID")]
    event: Option<String>,
    /// Only this status: pending, success, retrying or failed
    #[arg(long)]
    status: Option<String>,
    /// Only this exact event type
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Deliveries per page (at most 500)
    #[arg(long, default_value_t = 50, value_name = "N")]
    limit: u32,
    /// Where the list goes on from (printed under a page that has more)
    #[arg(long, default_value = "")]
    cursor: String,
    /// Created at or after (RFC 3339, e.g. 2026-11-23T08:00:00Z)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Created before (RFC 3339)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
}

impl ListArgs {
    fn request(self) -> anyhow::Result<pb::ListDeliveriesRequest> {
        let status = self.status.as_deref().map(parse_status).transpose()?;
        Ok(pb::ListDeliveriesRequest {
            since: self.since.as_deref().map(parse_time).transpose()?,
            until: self.until.as_deref().map(parse_time).transpose()?,
            endpoint_id: self.endpoint,
            event_id: self.event,
            status: status.unwrap_or(pb::DeliveryStatus::Unspecified) as i32,
            event_type: self.event_type,
            page_size: self.limit,
            cursor: self.cursor,
        })
    }
}

impl DeliveriesCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            DeliveriesCmd::List(args) => list(ctx, args.request()?).await,
            DeliveriesCmd::Show {
                id,
                attempts_limit,
                attempts_cursor,
            } => {
                let req = pb::GetDeliveryRequest {
                    id,
                    attempts_page_size: attempts_limit,
                    attempts_cursor,
                };
                show(ctx, req).await
            }
            DeliveriesCmd::Activity { limit } => activity(ctx, limit).await,
            DeliveriesCmd::Redeliver { id } => redeliver(ctx, id).await,
            DeliveriesCmd::Replay(args) => args.run(ctx).await,
            DeliveriesCmd::Stats { endpoint, hours } => stats(ctx, endpoint, hours).await,
        }
    }
}

async fn list(ctx: &Ctx, req: pb::ListDeliveriesRequest) -> anyhow::Result<()> {
    let first_page = req.cursor.is_empty();
    let mut c = ctx.deliveries().await?;
    let r = c.list_deliveries(ctx.tenant_call(req)?).await?.into_inner();
    let rows: Vec<Value> = r.deliveries.iter().map(views::delivery).collect();
    let empty = rows.is_empty();
    ctx.out
        .page("deliveries", rows, COLUMNS, &r.next_cursor, "--cursor")?;
    if empty && first_page {
        ctx.out.hint(EMPTY_HINT);
    }
    Ok(())
}

async fn show(ctx: &Ctx, req: pb::GetDeliveryRequest) -> anyhow::Result<()> {
    let mut c = ctx.deliveries().await?;
    let r = c.get_delivery(ctx.tenant_call(req)?).await?.into_inner();
    let mut delivery = views::delivery(&r.delivery.unwrap_or_default());
    let attempts: Vec<Value> = r.attempts.iter().map(views::attempt).collect();
    if ctx.out.is_table() {
        let text = output::record(&delivery, DETAIL_FIELDS)
            + "\n"
            + &output::table(&attempts, ATTEMPT_COLUMNS);
        emit(&text)?;
    } else {
        delivery["attempts"] = Value::Array(attempts);
        delivery["next_attempts_cursor"] = json!(r.next_attempts_cursor);
        ctx.out.rows(&[delivery], DETAIL_FIELDS)?;
    }
    if !r.next_attempts_cursor.is_empty() {
        ctx.out.hint(&format!(
            "more attempts: --attempts-cursor {}",
            r.next_attempts_cursor
        ));
    }
    Ok(())
}

async fn activity(ctx: &Ctx, limit: u32) -> anyhow::Result<()> {
    let mut c = ctx.deliveries().await?;
    let req = ctx.tenant_call(pb::ListRecentActivityRequest { limit })?;
    let r = c.list_recent_activity(req).await?.into_inner();
    let rows: Vec<Value> = r.items.iter().map(views::activity).collect();
    ctx.out.rows(&rows, ACTIVITY_COLUMNS)
}

async fn stats(ctx: &Ctx, endpoint_id: String, hours: u32) -> anyhow::Result<()> {
    let mut c = ctx.deliveries().await?;
    let req = ctx.tenant_call(pb::GetEndpointStatsSeriesRequest { endpoint_id, hours })?;
    let r = c.get_endpoint_stats_series(req).await?.into_inner();
    let rows: Vec<Value> = r.points.iter().map(views::stats_point).collect();
    ctx.out.rows(&rows, STATS_COLUMNS)
}

async fn redeliver(ctx: &Ctx, id: String) -> anyhow::Result<()> {
    let mut c = ctx.deliveries().await?;
    let r = c
        .redeliver(ctx.tenant_call(pb::RedeliverRequest { delivery_id: id })?)
        .await?;
    let r = r.into_inner();
    let row = json!({"delivery_id": r.delivery_id, "attempt": r.attempt, "queued": true});
    ctx.out.rows(&[row], &["delivery_id", "attempt", "queued"])
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Line {
        #[command(subcommand)]
        cmd: DeliveriesCmd,
    }

    fn list_request(args: &[&str]) -> anyhow::Result<pb::ListDeliveriesRequest> {
        let line = ["t", "list"].iter().chain(args);
        match Line::try_parse_from(line)?.cmd {
            DeliveriesCmd::List(args) => args.request(),
            _ => unreachable!("parsed as list"),
        }
    }

    #[test]
    fn list_filters_become_the_request() {
        let req = list_request(&[
            "--status",
            "retrying",
            "--type",
            "a.b",
            "--since",
            "2026-11-23T08:00:00Z",
            "--limit",
            "7",
        ])
        .unwrap();
        assert_eq!(req.status, pb::DeliveryStatus::Retrying as i32);
        assert_eq!(req.event_type.as_deref(), Some("a.b"));
        assert_eq!(req.since.unwrap().seconds, 1_795_420_800);
        assert_eq!(req.page_size, 7);
        let req = list_request(&[]).unwrap();
        assert_eq!(req.status, pb::DeliveryStatus::Unspecified as i32);
    }

    #[test]
    fn a_bad_filter_is_refused_before_any_call() {
        assert!(list_request(&["--status", "lost"]).is_err());
        assert!(list_request(&["--until", "tomorrow"]).is_err());
    }

    #[test]
    fn every_column_is_in_the_views() {
        let d = views::delivery(&pb::Delivery::default());
        for f in COLUMNS.iter().chain(DETAIL_FIELDS) {
            assert!(d.get(*f).is_some(), "delivery view has no {f}");
        }
        let a = views::attempt(&pb::Attempt::default());
        assert!(ATTEMPT_COLUMNS.iter().all(|f| a.get(*f).is_some()));
        let i = views::activity(&pb::ActivityItem::default());
        assert!(ACTIVITY_COLUMNS.iter().all(|f| i.get(*f).is_some()));
        let p = views::stats_point(&pb::StatsPoint::default());
        assert!(STATS_COLUMNS.iter().all(|f| p.get(*f).is_some()));
    }
}
