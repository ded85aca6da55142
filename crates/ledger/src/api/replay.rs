//! `ReplayEndpoint` a page at a time.
//!
//! A replay may go through 10,000 deliveries with their payloads (each up to the payload
//! limit): read at once, one call could hold gigabytes and a long query. It reads
//! `HERALD_REPLAY_PAGE` deliveries at a time instead (keyset on the delivery id), and for each
//! page takes one token per delivery it will send from the tenant's publish bucket, publishes
//! them (confirmed) and renews its lease ([`crate::budget`]), then reads the next page. The
//! cursor it answers (`last_delivery_id`) is always the last delivery gone through, so a call
//! cut short (the limit, the rate, a lost lease, the broker) is continued exactly.
//!
//! A replay is paced at `HERALD_REPLAY_RATE` deliveries a second (pages of at most that many,
//! published in slices of a twentieth of a second's worth, each sent once the ones before have
//! had their share of time), whatever the tenant's publish rate: re-sending a backlog as fast
//! as the broker takes it would take the machine from every other tenant for as long as it
//! runs, and a page sent at once lands on the dispatchers as a burst that other tenants'
//! deliveries queue behind.
//!
//! Under a rate, a page is at most the tenant's burst. When the bucket runs dry before anything
//! was gone through, the call is refused with `RetryInfo` (nothing queued); when it runs dry
//! later, the call ends there, `truncated`, and the next call continues after its cursor.

use std::time::{Duration, Instant};

use herald_broker::Outgoing;
use herald_proto::v1 as pb;
use uuid::Uuid;

use super::{DeliveriesApi, REPLAY_SELECT, ReplayRow, status_column, ts};
use crate::budget::{Charged, Lease, rate_limited};
use crate::error::{Error, Result};

/// Broker messages per confirmed publish while replaying.
const PUBLISH_CHUNK: usize = 500;

/// What a replay goes through: one endpoint's deliveries of one status, with ids in
/// `[since, until)` and after `after`, at most `limit` of them.
pub(super) struct Replay {
    pub tenant: Uuid,
    pub endpoint: Uuid,
    pub status: &'static str,
    pub since: Option<Uuid>,
    pub until: Option<Uuid>,
    pub after: Option<Uuid>,
    pub limit: u32,
    /// The tenant's publish rate (0: unlimited).
    pub rate: u32,
}

impl DeliveriesApi {
    /// Replays page by page while `lease` is held; see the module docs.
    pub(super) async fn replay(
        &self,
        mut r: Replay,
        lease: &mut Lease,
    ) -> Result<pb::ReplayEndpointResponse> {
        let mut page = match r.rate {
            0 => self.replay_page,
            rate => self.replay_page.min(self.budget.burst(rate)),
        };
        if self.replay_rate > 0 {
            page = page.min(self.replay_rate);
        }
        let mut pacer = Pacer {
            started: Instant::now(),
            sent: 0,
            rate: self.replay_rate,
        };
        let mut out = pb::ReplayEndpointResponse::default();
        let mut remaining = r.limit;
        while remaining > 0 {
            let size = page.min(remaining);
            let mut rows = self.replay_rows(&r, size).await?;
            let more = rows.len() as u32 > size;
            rows.truncate(size as usize);
            let Some(last) = rows.last().map(|row| (row.id, row.created_at)) else {
                break;
            };
            // A delivery whose event is not in the ledger (payload retention removed it, or
            // its record is not written yet) cannot be sent again: skipped and counted, so one
            // such delivery does not block the replay of the rest.
            let (sendable, purged): (Vec<ReplayRow>, Vec<ReplayRow>) =
                rows.into_iter().partition(|row| row.payload.is_some());
            match self
                .budget
                .take(r.tenant, r.rate, sendable.len() as u32)
                .await
            {
                Ok(Charged::Taken) => {}
                // Redis is away: not charged, nor asked again for the rest of this replay.
                Ok(Charged::Unenforced) => r.rate = 0,
                Err(wait) if out.last_delivery_id.is_empty() => {
                    return Err(rate_limited(r.rate, wait));
                }
                Err(_) => {
                    tracing::info!(tenant_id = %r.tenant, queued = out.queued, "replay stopped by the tenant's publish rate");
                    out.truncated = true;
                    break;
                }
            }
            self.publish_page(sendable, &mut out, &mut pacer).await?;
            out.skipped += purged.len() as u32;
            out.last_delivery_id = last.0.to_string();
            out.last_created_at = Some(ts(last.1));
            r.after = Some(last.0);
            remaining -= size;
            if !more {
                break;
            }
            out.truncated = remaining == 0;
            if !out.truncated && !lease.renew().await {
                tracing::warn!(tenant_id = %r.tenant, "replay lease lost, replay stopped");
                out.truncated = true;
                break;
            }
        }
        Ok(out)
    }

    /// The next page of a replay: `size` deliveries and one more (there is a next page).
    async fn replay_rows(&self, r: &Replay, size: u32) -> Result<Vec<ReplayRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{REPLAY_SELECT}
             WHERE d.endpoint_id = $1 AND d.tenant_id = $2 AND d.{} = $3 AND NOT d.test
               AND ($4::uuid IS NULL OR d.id >= $4) AND ($5::uuid IS NULL OR d.id < $5)
               AND ($7::uuid IS NULL OR d.id > $7)
             ORDER BY d.id LIMIT $6",
            status_column(r.status)
        )))
        .bind(r.endpoint)
        .bind(r.tenant)
        .bind(r.status)
        .bind(r.since)
        .bind(r.until)
        .bind(i64::from(size) + 1)
        .bind(r.after)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Publishes a page's manual attempts (confirmed) in slices `pacer` spaces out, counting
    /// them in `out`. When the broker fails partway, the error says where to go on from.
    async fn publish_page(
        &self,
        rows: Vec<ReplayRow>,
        out: &mut pb::ReplayEndpointResponse,
        pacer: &mut Pacer,
    ) -> Result<()> {
        let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
        let messages = rows
            .into_iter()
            .map(|row| self.manual_task(row))
            .collect::<Result<Vec<Outgoing>>>()?;
        // Where a retry goes on from: the last delivery queued (the pages before, or the
        // chunks of this page before the failure).
        let mut resume = out.last_delivery_id.clone();
        let slice = pacer.slice();
        for (chunk, chunk_ids) in messages.chunks(slice).zip(ids.chunks(slice)) {
            pacer.wait().await;
            pacer.sent += chunk.len() as u64;
            if let Err(source) = self.publisher.publish(chunk).await {
                let resume = match resume.as_str() {
                    "" => "retry".to_owned(),
                    id => format!("retry with after_delivery_id {id}"),
                };
                return Err(Error::Broker {
                    message: format!(
                        "the message broker became unavailable after {} deliveries were queued; {resume}",
                        out.queued
                    ),
                    source,
                });
            }
            out.queued += chunk_ids.len() as u32;
            resume = chunk_ids.last().map(Uuid::to_string).unwrap_or(resume);
        }
        Ok(())
    }
}

/// Spaces a replay's publishes out at `rate` deliveries a second (0: not paced).
struct Pacer {
    started: Instant,
    sent: u64,
    rate: u32,
}

impl Pacer {
    /// Deliveries published at once: a twentieth of a second's worth (at most
    /// [`PUBLISH_CHUNK`], at least one).
    fn slice(&self) -> usize {
        match self.rate {
            0 => PUBLISH_CHUNK,
            rate => (rate as usize / 20).clamp(1, PUBLISH_CHUNK),
        }
    }

    /// Waits until what was sent has had its share of time.
    async fn wait(&self) {
        tokio::time::sleep(pace(self.started.elapsed(), self.sent, self.rate)).await;
    }
}

/// How long to wait so that `sent` deliveries took at least their share of time at `rate` a
/// second (0: no wait).
fn pace(elapsed: Duration, sent: u64, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(sent as f64 / f64::from(rate)).saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_wait_for_their_share_of_the_rate() {
        let ms = Duration::from_millis;
        assert_eq!(pace(ms(100), 500, 1000), ms(400));
        assert_eq!(
            pace(ms(700), 500, 1000),
            Duration::ZERO,
            "already slower than the rate"
        );
        assert_eq!(pace(ms(0), 1500, 1000), ms(1500));
        assert_eq!(pace(ms(0), 1_000_000, 0), Duration::ZERO, "0: unpaced");
    }

    #[test]
    fn a_page_goes_out_in_slices_of_a_twentieth_of_a_second() {
        let pacer = |rate| Pacer {
            started: Instant::now(),
            sent: 0,
            rate,
        };
        assert_eq!(pacer(250).slice(), 12);
        assert_eq!(pacer(10).slice(), 1);
        assert_eq!(pacer(1_000_000).slice(), PUBLISH_CHUNK);
        assert_eq!(
            pacer(0).slice(),
            PUBLISH_CHUNK,
            "unpaced: as large as a publish goes"
        );
    }
}
