//! `heraldctl deliveries replay`: re-send an endpoint's deliveries, all of them.
//!
//! The ledger replays a page at a time: one `ReplayEndpoint` call goes through at most 10,000
//! deliveries and stops early when the tenant's publish rate runs dry, answering `truncated`
//! with the cursor to go on from. The command calls again from that cursor until the server
//! says it is done (or `--limit` is reached), waits as long as a rate refusal asks, reports
//! progress on standard error and prints the totals once.

use std::time::Duration;

use clap::Args;
use herald_proto::v1 as pb;
use serde_json::json;
use tonic::{Code, Status};

use crate::context::Ctx;
use crate::input::{parse_status, parse_time};
use crate::views;

/// Rate refusals in a row, each waited out, before the command gives up.
const MAX_WAITS: u32 = 30;
/// Longest single wait for the tenant's publish rate.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Endpoint id
    endpoint: String,
    /// Only deliveries created at or after (RFC 3339)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only deliveries created before (RFC 3339)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Status of the deliveries to re-send: pending, success, retrying or failed
    #[arg(long, default_value = "failed")]
    status: String,
    /// Go through at most this many deliveries in all (0: every matching one)
    #[arg(long, default_value_t = 0, value_name = "N")]
    limit: u32,
    /// Continue after this delivery id (a previous replay's last_delivery_id)
    #[arg(long, value_name = "ID")]
    after: Option<String>,
}

/// What the calls so far went through.
#[derive(Debug, Default)]
struct Progress {
    queued: u64,
    skipped: u64,
    last_delivery_id: String,
    last_created_at: Option<prost_types::Timestamp>,
    /// More deliveries match than were gone through.
    more: bool,
}

impl Progress {
    fn gone_through(&self) -> u64 {
        self.queued + self.skipped
    }

    /// The `limit` of the next call: what is left of `total` (0: the server's page).
    fn call_limit(&self, total: u32) -> u32 {
        match total {
            0 => 0,
            t => u64::from(t).saturating_sub(self.gone_through()).max(1) as u32,
        }
    }

    /// Adds one answer; true when another call should follow.
    fn take(&mut self, r: &pb::ReplayEndpointResponse, total: u32) -> bool {
        self.queued += u64::from(r.queued);
        self.skipped += u64::from(r.skipped);
        let moved = !r.last_delivery_id.is_empty() && r.last_delivery_id != self.last_delivery_id;
        if moved {
            self.last_delivery_id = r.last_delivery_id.clone();
            self.last_created_at = r.last_created_at;
        }
        self.more = r.truncated;
        let room = total == 0 || self.gone_through() < u64::from(total);
        // An answer that did not move the cursor would only be asked again.
        r.truncated && moved && room
    }
}

/// How long a refusal asks to wait before calling again: the tenant's publish rate ran dry.
fn retry_after(status: &Status) -> Option<Duration> {
    if status.code() != Code::ResourceExhausted {
        return None;
    }
    let ms = status.metadata().get("retry-after-ms")?.to_str().ok()?;
    Some(Duration::from_millis(ms.trim().parse().ok()?).min(MAX_WAIT))
}

impl ReplayArgs {
    fn request(&self) -> anyhow::Result<pb::ReplayEndpointRequest> {
        Ok(pb::ReplayEndpointRequest {
            endpoint_id: self.endpoint.clone(),
            since: self.since.as_deref().map(parse_time).transpose()?,
            until: self.until.as_deref().map(parse_time).transpose()?,
            status: parse_status(&self.status)? as i32,
            limit: 0,
            after_delivery_id: self.after.clone().unwrap_or_default(),
        })
    }

    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let mut req = self.request()?;
        let mut progress = Progress {
            last_delivery_id: req.after_delivery_id.clone(),
            ..Progress::default()
        };
        let mut c = ctx.deliveries().await?;
        let mut waits = 0;
        loop {
            req.limit = progress.call_limit(self.limit);
            req.after_delivery_id = progress.last_delivery_id.clone();
            let answer = match c.replay_endpoint(ctx.tenant_call(req.clone())?).await {
                Ok(answer) => answer.into_inner(),
                Err(status) => match retry_after(&status) {
                    Some(wait) if waits < MAX_WAITS => {
                        waits += 1;
                        ctx.out.hint(&format!(
                            "replay: the tenant's publish rate is used up, waiting {} ms",
                            wait.as_millis()
                        ));
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    _ => return Err(status.into()),
                },
            };
            waits = 0;
            if !progress.take(&answer, self.limit) {
                break;
            }
            ctx.out.hint(&format!(
                "replay: {} queued, {} skipped so far; going on after {}",
                progress.queued, progress.skipped, progress.last_delivery_id
            ));
        }
        report(ctx, &progress)
    }
}

fn report(ctx: &Ctx, p: &Progress) -> anyhow::Result<()> {
    let row = json!({"queued": p.queued, "skipped": p.skipped, "truncated": p.more,
        "last_delivery_id": p.last_delivery_id, "last_created_at": views::time(&p.last_created_at)});
    let columns = [
        "queued",
        "skipped",
        "truncated",
        "last_delivery_id",
        "last_created_at",
    ];
    ctx.out.rows(&[row], &columns)?;
    if p.more {
        ctx.out.hint(&format!(
            "more deliveries match: go on with --after {}",
            p.last_delivery_id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        queued: u32,
        skipped: u32,
        truncated: bool,
        last: &str,
    ) -> pb::ReplayEndpointResponse {
        pb::ReplayEndpointResponse {
            queued,
            skipped,
            truncated,
            last_delivery_id: last.into(),
            last_created_at: None,
        }
    }

    #[test]
    fn a_truncated_answer_is_followed_from_its_cursor() {
        let mut p = Progress::default();
        assert!(p.take(&answer(10_000, 0, true, "d_1"), 0));
        assert_eq!(p.last_delivery_id, "d_1");
        assert!(!p.take(&answer(20, 3, false, "d_2"), 0));
        assert_eq!((p.queued, p.skipped, p.more), (10_020, 3, false));
        assert_eq!(p.last_delivery_id, "d_2");
    }

    #[test]
    fn the_limit_counts_every_call() {
        let mut p = Progress::default();
        assert_eq!(p.call_limit(25), 25);
        assert!(p.take(&answer(10, 5, true, "d_1"), 25));
        assert_eq!(p.call_limit(25), 10);
        assert!(
            !p.take(&answer(10, 0, true, "d_2"), 25),
            "the limit is reached"
        );
        assert!(p.more, "more matched than the limit");
        assert_eq!(p.call_limit(0), 0, "no limit: the server's page");
    }

    #[test]
    fn an_answer_that_does_not_move_ends_the_loop() {
        let mut p = Progress {
            last_delivery_id: "d_1".into(),
            ..Progress::default()
        };
        assert!(!p.take(&answer(0, 0, true, "d_1"), 0));
        assert!(!p.take(&answer(0, 0, true, ""), 0));
        assert!(p.more);
    }

    #[test]
    fn a_rate_refusal_says_how_long_to_wait() {
        let mut status = Status::resource_exhausted("publish rate limit reached");
        status
            .metadata_mut()
            .insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&status), Some(Duration::from_millis(250)));
        status
            .metadata_mut()
            .insert("retry-after-ms", "99999999".parse().unwrap());
        assert_eq!(retry_after(&status), Some(MAX_WAIT));
        let busy = Status::resource_exhausted("another replay of this tenant is running");
        assert_eq!(retry_after(&busy), None, "no wait given: not retried");
        let mut other = Status::invalid_argument("bad");
        other
            .metadata_mut()
            .insert("retry-after-ms", "5".parse().unwrap());
        assert_eq!(retry_after(&other), None);
    }
}
