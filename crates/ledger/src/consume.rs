//! The ledger's consumer: gathers record messages into batches, writes each batch in one
//! transaction, then acks every message of it at once.
//!
//! While Postgres is down the batch is held and retried with backoff; the messages stay
//! unacked in the broker, so nothing is lost and the queue simply grows until the database is
//! back. An unreadable message is dead-lettered on its own and never blocks the rest; so is a
//! message whose records Postgres refuses as data (found by writing the batch message by
//! message), recorded by the dead-letter consumer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use herald_broker::lapin::options::{BasicAckOptions, BasicRejectOptions};
use herald_broker::lapin::types::ShortString;
use herald_broker::{Topology, consume};
use herald_core::wire::LedgerBatch;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::write::{Batch, apply};

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
    supervise("ledger consumer", shutdown, || async {
        let result = session(config, topology, pool, shutdown, consuming).await;
        consuming.store(false, Ordering::Relaxed);
        result
    })
    .await;
}

/// Runs `session` until it ends cleanly or `shutdown`, starting it again with backoff (up to
/// 30 s, one log line per failure) when it fails.
pub async fn supervise<F, Fut>(what: &str, shutdown: &CancellationToken, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        match session().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "{what} stopped, reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn session(
    config: &Config,
    topology: &Topology,
    pool: &PgPool,
    shutdown: &CancellationToken,
    consuming: &AtomicBool,
) -> anyhow::Result<()> {
    let (conn, ch, mut consumer) = consume(
        &config.common.amqp_url,
        "herald-ledger",
        topology,
        &topology.ledger_queue(),
        config.prefetch,
    )
    .await?;
    tracing::info!(queue = %topology.ledger_queue(), "ledger consuming");
    consuming.store(true, Ordering::Relaxed);
    loop {
        // Wait for the first message of a batch, then gather for at most `batch_wait`.
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = consumer.next() => next,
        };
        let mut deliveries = vec![match first {
            Some(d) => d?,
            None => anyhow::bail!("ledger consumer cancelled by the broker"),
        }];
        let deadline = tokio::time::Instant::now() + config.batch_wait;
        // Messages carry many records each (group commit upstream): bound the transaction by
        // bytes as well as by messages.
        let mut bytes = deliveries[0].data.len();
        while deliveries.len() < config.batch_messages && bytes < MAX_TRANSACTION_BYTES {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => {
                    let d = d?;
                    bytes += d.data.len();
                    deliveries.push(d);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut batch = Batch::default();
        let mut readable = Vec::with_capacity(deliveries.len());
        // One span per message, in the trace of the work that produced it, closed at commit.
        let mut spans = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match LedgerBatch::decode(&d.data) {
                Ok(b) => {
                    let span = tracing::info_span!("ledger.write", records = b.records.len());
                    let headers = herald_broker::string_headers(&d.properties);
                    herald_telemetry::set_parent_from(
                        &span,
                        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    );
                    spans.push(span);
                    b.records.into_iter().for_each(|r| batch.push(r));
                    readable.push(d);
                }
                Err(e) => {
                    metrics::counter!("herald_ledger_unreadable_messages_total").increment(1);
                    tracing::error!(error = %e, "unreadable ledger message, dead-lettering it");
                    d.acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await?;
                }
            }
        }
        let Some(last_tag) = readable.last().map(|d| d.delivery_tag) else {
            continue;
        };
        match write_held(pool, &batch, shutdown).await {
            Written::Yes => {
                ch.basic_ack(last_tag, BasicAckOptions { multiple: true })
                    .await?;
                crate::metrics::batch_written(&batch);
            }
            Written::Stopping => return Ok(()),
            Written::Refused(e) => {
                // Postgres will never take some record of this batch (a data error, not an
                // outage): write message by message and dead-letter only the culprit.
                tracing::error!(error = %e, messages = readable.len(), "ledger batch refused, writing its messages one by one");
                for d in readable {
                    let mut one = Batch::default();
                    if let Ok(b) = LedgerBatch::decode(&d.data) {
                        b.records.into_iter().for_each(|r| one.push(r));
                    }
                    match write_held(pool, &one, shutdown).await {
                        Written::Yes => {
                            d.acker.ack(BasicAckOptions::default()).await?;
                            crate::metrics::batch_written(&one);
                        }
                        Written::Stopping => return Ok(()),
                        Written::Refused(e) => {
                            metrics::counter!("herald_ledger_refused_messages_total").increment(1);
                            tracing::error!(error = %e, records = one.len(), "ledger message refused by the database, dead-lettering it");
                            d.acker
                                .reject(BasicRejectOptions { requeue: false })
                                .await?;
                        }
                    }
                }
            }
        }
        drop(spans);
        tracing::debug!(records = batch.len(), "ledger batch written");
    }
    let _ = ch.close(200, ShortString::from("stopping")).await;
    let _ = conn.close(200, ShortString::from("stopping")).await;
    Ok(())
}

/// How holding a batch until it is written ended.
enum Written {
    Yes,
    /// Shutting down before it could be written: the messages stay unacked.
    Stopping,
    /// The database refuses the data itself; retrying cannot help.
    Refused(sqlx::Error),
}

/// Writes `batch`, holding it with backoff while the database is unavailable.
async fn write_held(pool: &PgPool, batch: &Batch, shutdown: &CancellationToken) -> Written {
    let mut wait = Duration::from_millis(200);
    loop {
        let started = std::time::Instant::now();
        match apply(pool, batch).await {
            Ok(()) => {
                metrics::histogram!("herald_ledger_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                return Written::Yes;
            }
            Err(e) if refused(&e) => return Written::Refused(e),
            Err(e) => {
                metrics::counter!("herald_ledger_write_failures_total").increment(1);
                tracing::warn!(error = %e, records = batch.len(), retry_in_ms = wait.as_millis() as u64, "ledger write failed, holding batch");
                tokio::select! {
                    // Unacked: the broker redelivers the batch to the next ledger.
                    _ = shutdown.cancelled() => return Written::Stopping,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(10));
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
