//! The dead-letter queue's consumer: every message the broker gave up on is counted, recorded
//! in `dead_letters` and settled, so a poison message never loops and never blocks a queue.
//!
//! Messages arrive here from the work and ledger queues when a service rejected them as
//! unreadable (corrupt, unknown version, a ledger batch Postgres refuses) or when a quorum
//! queue's delivery limit was reached (a task that kept coming back unacked, for example one
//! that crashes its dispatcher). When the body is still a readable delivery task, the delivery
//! is ended `failed` in the delivery log with the reason, so the tenant sees it; otherwise only
//! the operator's `dead_letters` row and the `herald_dead_letters_total` metric tell.

use std::collections::BTreeMap;

use herald_broker::{Consumer, Delivery, Topology};
use herald_core::backoff::Backoff;
use herald_core::wire::{AbandonedRecord, DeliveryKey, DeliveryTask, storable};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::error::Error;
use crate::write::{Batch, apply};

/// Most body bytes kept per dead letter.
const BODY_KEPT: usize = 64 * 1024;

/// One dead letter, read off its broker message.
#[derive(Debug)]
pub struct DeadLetter {
    /// The queue it last died in, without the installation prefix (`work`, `ledger`): a task
    /// that waited on a delay queue first "died" there (its TTL expired, back to work).
    pub queue: String,
    /// Why it last died: `rejected`, `delivery_limit`, `expired`, `maxlen` (RabbitMQ's words).
    pub reason: String,
    /// When it first died from that queue for that reason (seconds since the epoch, from
    /// `x-death`), else 0: the same for every redelivery of one dead letter, so part of the
    /// fingerprint.
    pub died_at: u64,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The delivery task, when the body still reads as one.
    pub task: Option<DeliveryTask>,
    /// Why the body does not read as a delivery task (for messages from the work queue).
    pub error: Option<String>,
}

impl DeadLetter {
    /// Reads a message of the dead-letter queue of `topology`.
    pub fn from_delivery(topology: &Topology, d: &Delivery) -> Self {
        let headers: BTreeMap<String, String> = d
            .headers
            .iter()
            // Trace context is noise here; the rest is the broker's own bookkeeping.
            .filter(|(k, _)| k != "traceparent" && k != "tracestate")
            .cloned()
            .map(|(mut k, mut v)| {
                // Anything may arrive here; jsonb refuses NUL and the row must be written.
                storable(&mut k);
                storable(&mut v);
                (k, v)
            })
            .collect();
        // The newest `x-death` entry; the first-death headers only for a broker that gave none.
        let last = d.last_death.as_ref();
        let queue_name = last
            .map(|death| death.queue.clone())
            .filter(|q| !q.is_empty())
            .or_else(|| headers.get("x-first-death-queue").cloned())
            .unwrap_or_default();
        let queue = if topology.is_work_queue(&queue_name) {
            "work".to_owned()
        } else if queue_name == topology.ledger_queue() {
            "ledger".to_owned()
        } else if queue_name.is_empty() {
            "unknown".to_owned()
        } else {
            queue_name
                .strip_prefix(&format!("{}.", topology.prefix))
                .unwrap_or(&queue_name)
                .to_owned()
        };
        let reason = last
            .map(|death| death.reason.clone())
            .filter(|r| !r.is_empty())
            .or_else(|| headers.get("x-first-death-reason").cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        let (task, error) = if queue == "work" {
            match DeliveryTask::decode(&d.body) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (None, None)
        };
        // Everything here is text from the message (a decode error quotes the bad value):
        // Postgres refuses NUL in text and jsonb, and one such letter must not wedge the
        // consumer.
        let clean = |mut s: String| {
            storable(&mut s);
            s
        };
        let headers = headers
            .into_iter()
            .map(|(k, v)| (clean(k), clean(v)))
            .collect();
        DeadLetter {
            queue: clean(queue),
            reason: clean(reason),
            died_at: last.map_or(0, |death| death.time),
            error: error.map(clean),
            headers,
            body: d.body.to_vec(),
            task,
        }
    }

    /// The text the delivery log shows for a dead-lettered delivery.
    pub fn delivery_error(&self) -> String {
        match self.reason.as_str() {
            "delivery_limit" => format!(
                "dead-lettered: the task came back unacknowledged too many times (delivery limit of the {} queue)",
                self.queue
            ),
            reason => format!("dead-lettered from the {} queue ({reason})", self.queue),
        }
    }
}

/// Records `letter`: ends its delivery `failed` when attributable, then stores the row.
/// Idempotent: a redelivered dead letter changes nothing.
pub async fn record(pool: &PgPool, letter: &DeadLetter) -> Result<(), sqlx::Error> {
    if let Some(task) = &letter.task {
        let mut batch = Batch::default();
        batch.abandoned.push(AbandonedRecord {
            delivery: DeliveryKey::of(task),
            at: chrono::Utc::now(),
            reason: letter.delivery_error(),
            attempts_before: task.attempt.saturating_sub(1),
        });
        apply(pool, &batch).await?;
    }
    let task = letter.task.as_ref();
    let kept = &letter.body[..letter.body.len().min(BODY_KEPT)];
    sqlx::query(
        "INSERT INTO dead_letters (id, fingerprint, queue, reason, tenant_id, delivery_id,
             endpoint_id, event_id, error, headers, body, body_bytes)
         VALUES ($1, sha256(convert_to($2 || '/' || $3 || '/' || $12, 'UTF8') || $11),
             $2, $3, $4, $5, $6, $7, $8, $9, $10, $13)
         ON CONFLICT (fingerprint) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(&letter.queue)
    .bind(&letter.reason)
    .bind(task.map(|t| t.tenant_id))
    .bind(task.map(|t| t.delivery_id))
    .bind(task.map(|t| t.endpoint_id))
    .bind(task.map(|t| t.event_id))
    .bind(&letter.error)
    .bind(sqlx::types::Json(&letter.headers))
    .bind(kept)
    .bind(&letter.body)
    .bind(letter.died_at.to_string())
    .bind(letter.body.len().min(i32::MAX as usize) as i32)
    .execute(pool)
    .await?;
    Ok(())
}

/// Consumes the dead-letter queue until `shutdown` (one reconnecting session at a time).
pub async fn session(
    config: &Config,
    topology: &Topology,
    pool: &PgPool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut consumer = Consumer::open(
        &config.common.amqp_url,
        "herald-ledger-dead-letters",
        Some(topology),
        &topology.dead_queue(),
        16,
    )
    .await?;
    let settler = consumer.settler();
    loop {
        let d = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = consumer.next() => next?,
        };
        let letter = DeadLetter::from_delivery(topology, &d);
        let mut backoff = Backoff::held();
        while let Err(e) = record(pool, &letter).await {
            tracing::warn!(error = %e, retry_in_ms = backoff.next_wait().as_millis() as u64, "cannot record dead letter, holding it");
            // Unacked: on shutdown the broker hands it back later.
            if !backoff.wait(shutdown.cancelled()).await {
                return Ok(());
            }
        }
        metrics::counter!(
            "herald_dead_letters_total",
            "queue" => letter.queue.clone(),
            "reason" => letter.reason.clone()
        )
        .increment(1);
        tracing::warn!(
            queue = %letter.queue,
            reason = %letter.reason,
            delivery_id = ?letter.task.as_ref().map(|t| t.delivery_id),
            bytes = letter.body.len(),
            "message dead-lettered, recorded in dead_letters"
        );
        settler.ack(d.tag, false).await?;
    }
    consumer.close().await;
    Ok(())
}

/// What [`replay`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Sent back to their queue (confirmed) and marked replayed.
    pub replayed: u64,
    /// Kept only in part (`dead_letters` keeps 64 KiB of a body): cannot be sent back.
    pub truncated: u64,
    /// Work-queue letters that are not a readable task: they would die again.
    pub unreadable: u64,
}

/// Which dead letters [`replay`] sends back; either way only those not replayed yet, of the
/// queues a letter can be sent back to (`work`, `ledger`).
#[derive(Clone, Copy, Debug)]
pub enum Selection<'a> {
    /// Of one queue (`work`, `ledger`) or both, oldest first, at most `limit`
    /// (`herald-ledger dead-letters replay`).
    Oldest { queue: Option<&'a str>, limit: u32 },
    /// These ones (`ReplayDeadLetters`).
    Ids(&'a [Uuid]),
}

/// A dead letter with what sending it back needs.
#[derive(sqlx::FromRow)]
struct Replayable {
    id: Uuid,
    queue: String,
    body: Vec<u8>,
    body_bytes: i32,
    delivery_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
}

const REPLAYABLE: &str = "SELECT id, queue, body, body_bytes, delivery_id, tenant_id
     FROM dead_letters WHERE replayed_at IS NULL AND queue IN ('work', 'ledger')";

async fn replayable(pool: &PgPool, selection: Selection<'_>) -> Result<Vec<Replayable>, Error> {
    let rows = match selection {
        Selection::Oldest { queue, limit } => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{REPLAYABLE} AND ($1::text IS NULL OR queue = $1) ORDER BY id LIMIT $2"
            )))
            .bind(queue)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        }
        Selection::Ids(ids) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{REPLAYABLE} AND id = ANY($1) ORDER BY id"
            )))
            .bind(ids)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows)
}

/// Sends the dead letters of `selection` back where they died, oldest first; each is marked
/// replayed once the broker confirmed it. For use once the cause is fixed (an endpoint key
/// restored, a ledger bug mended): a letter that fails again is dead-lettered and recorded
/// again. A crash between the confirm and the mark sends one letter twice, which the
/// dispatcher's done marks and the ledger's idempotent writes absorb. The one path of both
/// `herald-ledger dead-letters replay` and the Operations service's `ReplayDeadLetters`.
pub async fn replay(
    pool: &PgPool,
    publisher: &herald_broker::Publisher,
    selection: Selection<'_>,
) -> Result<ReplayReport, Error> {
    let topology = publisher.topology();
    let mut report = ReplayReport::default();
    for l in replayable(pool, selection).await? {
        if usize::try_from(l.body_bytes).ok() != Some(l.body.len()) {
            report.truncated += 1;
            continue;
        }
        let message = if l.queue == "work" {
            // Both were recorded from the task when it decoded (see `record`).
            let tenant = match (l.delivery_id, l.tenant_id) {
                (Some(_), Some(tenant)) => tenant,
                _ => {
                    report.unreadable += 1;
                    continue;
                }
            };
            topology.work_message(tenant, l.body, Vec::new())
        } else {
            topology.ledger_message(l.body, Vec::new())
        };
        publisher
            .publish(&[message])
            .await
            .map_err(|source| Error::Broker {
                message: format!(
                    "the message broker is unavailable: {} dead letters were sent back before it failed, retry for the rest",
                    report.replayed
                ),
                source,
            })?;
        sqlx::query("UPDATE dead_letters SET replayed_at = now() WHERE id = $1")
            .bind(l.id)
            .execute(pool)
            .await?;
        report.replayed += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_broker::{Death, QueueType};
    use herald_core::wire::Trigger;

    fn task() -> DeliveryTask {
        DeliveryTask {
            v: herald_core::wire::VERSION,
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            endpoint_id: Uuid::now_v7(),
            event_type: "order.created".into(),
            attempt: 2,
            tiers: None,
            due: None,
            rest_ms: None,
            parked: None,
            turn: None,
            trigger: Trigger::Scheduled,
            created_at: chrono::Utc::now(),
            payload: br#"{"id":1}"#.to_vec(),
        }
    }

    #[test]
    fn a_retried_task_is_recorded_where_it_last_died_not_where_it_first_waited() {
        let topology = Topology::new("h", QueueType::Quorum);
        let t = task();
        let d = Delivery {
            tag: 1,
            redelivered: false,
            body: t.encode().into(),
            headers: vec![
                ("x-first-death-queue".into(), topology.delay_queue(1000)),
                ("x-first-death-reason".into(), "expired".into()),
                ("traceparent".into(), "00-1-2-01".into()),
            ],
            last_death: Some(Death {
                queue: topology.work_queue(),
                reason: "delivery_limit".into(),
                time: 1_700_000_500,
            }),
        };
        let letter = DeadLetter::from_delivery(&topology, &d);
        assert_eq!(
            (
                letter.queue.as_str(),
                letter.reason.as_str(),
                letter.died_at
            ),
            ("work", "delivery_limit", 1_700_000_500)
        );
        assert_eq!(letter.task.map(|t| t.delivery_id), Some(t.delivery_id));
        assert!(!letter.headers.contains_key("traceparent"));
    }

    #[test]
    fn without_x_death_the_first_death_headers_say_where() {
        let topology = Topology::new("h", QueueType::Quorum);
        let d = Delivery {
            tag: 1,
            redelivered: false,
            body: b"not a task".to_vec().into(),
            headers: vec![
                ("x-first-death-queue".into(), topology.ledger_queue()),
                ("x-first-death-reason".into(), "rejected".into()),
            ],
            last_death: None,
        };
        let letter = DeadLetter::from_delivery(&topology, &d);
        assert_eq!(
            (
                letter.queue.as_str(),
                letter.reason.as_str(),
                letter.died_at
            ),
            ("ledger", "rejected", 0)
        );
        assert!(letter.task.is_none());
    }

    #[test]
    fn text_postgres_would_refuse_is_made_storable() {
        let topology = Topology::new("h", QueueType::Quorum);
        // A task whose trigger is a NUL: serde's error quotes the unknown variant as it is.
        let body = String::from_utf8(task().encode())
            .unwrap()
            .replace(r#""trigger":"scheduled""#, r#""trigger":"\u0000""#);
        assert!(body.contains(r#""trigger":"\u0000""#));
        let d = Delivery {
            tag: 1,
            redelivered: false,
            body: body.into_bytes().into(),
            headers: vec![
                ("x-first-death-queue".into(), topology.work_queue()),
                ("x-first-death-reason".into(), "rejected".into()),
                ("x-custom\0".into(), "a\0b".into()),
            ],
            last_death: None,
        };
        let letter = DeadLetter::from_delivery(&topology, &d);
        assert!(letter.task.is_none());
        let error = letter.error.as_deref().expect("the decode error is kept");
        assert!(!error.contains('\0'), "{error:?}");
        assert!(
            letter
                .headers
                .iter()
                .all(|(k, v)| !k.contains('\0') && !v.contains('\0'))
        );
    }
}
