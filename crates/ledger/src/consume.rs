//! The ledger's consumer: gathers record messages into batches, writes each batch in one
//! transaction, then acks every message of it at once.
//!
//! While Postgres is down the batch is held and retried with backoff; the messages stay
//! unacked in the broker, so nothing is lost and the queue simply grows until the database is
//! back. An unreadable message is dead-lettered on its own and never blocks the rest; so is a
//! message whose records Postgres refuses as data (found by writing the batch message by
//! message), recorded by the dead-letter consumer.
//!
//! The `pending` rows of a batch's deliveries are held back to the next write (see
//! [`apply_with`]): their first attempt record usually arrives in that next batch, and the row
//! is then inserted once instead of inserted and updated. The messages that carried them stay
//! unacked until that write commits; when no next batch starts within `batch_wait` the held rows
//! are written alone, so a row waits at most about two `batch_wait`s plus a write. A write with
//! held rows that Postgres refuses is redone message by message, the held batch's messages
//! included, so a poison row is dead-lettered with its message like any other. Rows are held
//! only while the prefetch leaves room for a whole next batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_broker::{Consumer, Delivery, Settler, Topology};
use herald_core::backoff::Backoff;
use herald_core::wire::LedgerBatch;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::write::{Batch, PendingRow, apply_with};

/// Most message bytes gathered into one transaction.
const MAX_TRANSACTION_BYTES: usize = 8 * 1024 * 1024;

/// Consumes until `shutdown`, reconnecting with backoff when the broker goes away.
pub async fn run(
    config: &Config,
    topology: &Topology,
    pool: &PgPool,
    shutdown: &CancellationToken,
    consuming: &AtomicBool,
) {
    herald_service::supervise("ledger consumer", shutdown, || async {
        let result = session(config, topology, pool, shutdown, consuming).await;
        consuming.store(false, Ordering::Relaxed);
        result
    })
    .await;
}

async fn session(
    config: &Config,
    topology: &Topology,
    pool: &PgPool,
    shutdown: &CancellationToken,
    consuming: &AtomicBool,
) -> anyhow::Result<()> {
    let mut consumer = Consumer::open(
        &config.common.amqp_url,
        "herald-ledger",
        Some(topology),
        &topology.ledger_queue(),
        config.prefetch,
    )
    .await?;
    let settler = consumer.settler();
    tracing::info!(queue = %topology.ledger_queue(), "ledger consuming");
    consuming.store(true, Ordering::Relaxed);
    let mut held = Held::default();
    loop {
        // Rows held from the last batch wait no longer than `batch_wait` for the next one.
        let patience = (!held.is_empty()).then_some(config.batch_wait);
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            first = first_message(&mut consumer, patience) => first,
        };
        let messages = match first {
            Some(first) => gather(&mut consumer, first?, config).await?,
            None => Vec::new(),
        };
        let Read {
            batch,
            readable,
            spans,
        } = read(messages, &settler).await?;
        if readable.is_empty() {
            // Nothing came, or only unreadable messages: the held rows go on their own.
            if !held.flush(pool, &settler, shutdown).await? {
                return Ok(());
            }
            continue;
        }
        // Hold this batch's rows only if the prefetch still lets a whole next batch in.
        let defer = readable.len() + config.batch_messages <= usize::from(config.prefetch);
        let written = write_held(pool, &batch, &held.rows, defer, shutdown).await;
        if !held
            .settle(written, &batch, readable, pool, &settler, shutdown)
            .await?
        {
            return Ok(());
        }
        drop(spans);
        tracing::debug!(records = batch.len(), "ledger batch written");
    }
    // Stopping: the held rows are written now, or their messages come back to the next ledger.
    let _ = held.flush(pool, &settler, shutdown).await;
    consumer.close().await;
    Ok(())
}

/// The first message of a batch, waiting at most `patience` for it when given (`None`:
/// nothing came in time).
async fn first_message(
    consumer: &mut Consumer,
    patience: Option<Duration>,
) -> Option<herald_broker::Result<Delivery>> {
    match patience {
        Some(wait) => tokio::time::timeout(wait, consumer.next()).await.ok(),
        None => Some(consumer.next().await),
    }
}

/// `first` and the messages that follow it within `batch_wait`, up to a batch's count and
/// bytes.
async fn gather(
    consumer: &mut Consumer,
    first: Delivery,
    config: &Config,
) -> herald_broker::Result<Vec<Delivery>> {
    let deadline = tokio::time::Instant::now() + config.batch_wait;
    // Messages carry many records each (group commit upstream): bound the transaction by
    // bytes as well as by messages.
    let mut bytes = first.body.len();
    let mut deliveries = vec![first];
    while deliveries.len() < config.batch_messages && bytes < MAX_TRANSACTION_BYTES {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(d) => {
                let d = d?;
                bytes += d.body.len();
                deliveries.push(d);
            }
            Err(_) => break,
        }
    }
    Ok(deliveries)
}

/// The records of a batch's readable messages.
struct Read {
    batch: Batch,
    readable: Vec<Delivery>,
    /// One span per message, in the trace of the work that produced it, closed at commit.
    spans: Vec<tracing::Span>,
}

/// Decodes each message into the batch; an unreadable one is dead-lettered on its own.
async fn read(deliveries: Vec<Delivery>, settler: &Settler) -> herald_broker::Result<Read> {
    let mut read = Read {
        batch: Batch::default(),
        readable: Vec::with_capacity(deliveries.len()),
        spans: Vec::with_capacity(deliveries.len()),
    };
    for d in deliveries {
        match LedgerBatch::decode(&d.body) {
            Ok(b) => {
                let span = tracing::info_span!("ledger.write", records = b.records.len());
                herald_telemetry::set_parent_from(
                    &span,
                    d.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                );
                read.spans.push(span);
                b.records.into_iter().for_each(|r| read.batch.push(r));
                read.readable.push(d);
            }
            Err(e) => {
                metrics::counter!("herald_ledger_unreadable_messages_total").increment(1);
                tracing::error!(error = %e, "unreadable ledger message, dead-lettering it");
                settler.reject(d.tag).await?;
            }
        }
    }
    Ok(read)
}

/// A batch written but for its `pending` rows, which wait for the next write.
#[derive(Default)]
struct Held {
    rows: Vec<PendingRow>,
    /// The batch's readable messages: acked once the rows are written (a multiple ack up to the
    /// last), or written again one by one when Postgres refuses a write with the rows.
    messages: Vec<Delivery>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn tag(&self) -> Option<u64> {
        self.messages.last().map(|d| d.tag)
    }

    /// Settles the messages of `written` (the write of `batch`, from `readable`, with the held
    /// rows): acks what is written, holds this batch's deferred rows, or writes message by
    /// message what Postgres refused. False when shutting down (the messages stay unacked).
    async fn settle(
        &mut self,
        written: Written,
        batch: &Batch,
        readable: Vec<Delivery>,
        pool: &PgPool,
        settler: &Settler,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<bool> {
        match written {
            Written::Yes(deferred) => {
                // The held rows are in: everything up to this batch can go, except this batch
                // when it left rows of its own for the next write.
                if deferred.is_empty() {
                    if let Some(d) = readable.last() {
                        settler.ack(d.tag, true).await?;
                    }
                    *self = Held::default();
                } else {
                    if let Some(tag) = self.tag() {
                        settler.ack(tag, true).await?;
                    }
                    *self = Held {
                        rows: deferred,
                        messages: readable,
                    };
                }
                crate::metrics::batch_written(batch);
                Ok(true)
            }
            Written::Stopping => Ok(false),
            Written::Refused(e) => {
                // Postgres will never take some record of this batch or of the held rows (a
                // data error, not an outage): write message by message, the held batch's
                // first, and dead-letter only the culprit.
                tracing::error!(error = %e, messages = readable.len() + self.messages.len(), "ledger batch refused, writing its messages one by one");
                let mut messages = std::mem::take(self).messages;
                messages.extend(readable);
                one_by_one(pool, settler, messages, shutdown).await
            }
        }
    }

    /// Writes the rows on their own and acks their messages; false when shutting down before
    /// they could be written (the messages stay unacked).
    async fn flush(
        &mut self,
        pool: &PgPool,
        settler: &Settler,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<bool> {
        let Some(tag) = self.tag() else {
            return Ok(true);
        };
        let held = std::mem::take(self);
        match write_held(pool, &Batch::default(), &held.rows, false, shutdown).await {
            Written::Yes(_) => {
                settler.ack(tag, true).await?;
                Ok(true)
            }
            Written::Stopping => Ok(false),
            Written::Refused(e) => {
                tracing::error!(error = %e, messages = held.messages.len(), "held ledger rows refused, writing their messages one by one");
                one_by_one(pool, settler, held.messages, shutdown).await
            }
        }
    }
}

/// Writes each message in a transaction of its own, acking it, and dead-letters the ones
/// Postgres refuses; false when shutting down midway (the rest stay unacked).
async fn one_by_one(
    pool: &PgPool,
    settler: &Settler,
    messages: Vec<Delivery>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    for d in messages {
        let mut one = Batch::default();
        if let Ok(b) = LedgerBatch::decode(&d.body) {
            b.records.into_iter().for_each(|r| one.push(r));
        }
        match write_held(pool, &one, &[], false, shutdown).await {
            Written::Yes(_) => {
                settler.ack(d.tag, false).await?;
                crate::metrics::batch_written(&one);
            }
            Written::Stopping => return Ok(false),
            Written::Refused(e) => {
                metrics::counter!("herald_ledger_refused_messages_total").increment(1);
                tracing::error!(error = %e, records = one.len(), "ledger message refused by the database, dead-lettering it");
                settler.reject(d.tag).await?;
            }
        }
    }
    Ok(true)
}

/// How holding a batch until it is written ended.
enum Written {
    /// Written; the rows deferred to the next write.
    Yes(Vec<PendingRow>),
    /// Shutting down before it could be written: the messages stay unacked.
    Stopping,
    /// The database refuses the data itself; retrying cannot help.
    Refused(sqlx::Error),
}

/// Writes `batch` with the rows `held` from the last one (see [`apply_with`]), holding it with
/// backoff while the database is unavailable.
async fn write_held(
    pool: &PgPool,
    batch: &Batch,
    held: &[PendingRow],
    defer: bool,
    shutdown: &CancellationToken,
) -> Written {
    let mut backoff = Backoff::held();
    loop {
        let started = std::time::Instant::now();
        match apply_with(pool, batch, held, defer).await {
            Ok(deferred) => {
                metrics::histogram!("herald_ledger_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                return Written::Yes(deferred);
            }
            Err(e) if refused(&e) => return Written::Refused(e),
            Err(e) => {
                metrics::counter!("herald_ledger_write_failures_total").increment(1);
                tracing::warn!(error = %e, records = batch.len(), retry_in_ms = backoff.next_wait().as_millis() as u64, "ledger write failed, holding batch");
                // Unacked: on shutdown the broker redelivers the batch to the next ledger.
                if !backoff.wait(shutdown.cancelled()).await {
                    return Written::Stopping;
                }
            }
        }
    }
}

/// Errors about the data (SQLSTATE classes 22 data exception, 23 integrity, 54 limits), as
/// opposed to an unreachable or overloaded database.
fn refused(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54")),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}
