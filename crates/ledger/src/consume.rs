//! The ledger's consumer: gathers record messages into batches, writes each batch in one
//! transaction, then acks every message of it at once.
//!
//! While Postgres is down the batch is held and retried with backoff; the messages stay
//! unacked in the broker, so nothing is lost and the queue simply grows until the database is
//! back. An unreadable message is dead-lettered on its own and never blocks the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use herald_broker::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use herald_broker::lapin::types::{FieldTable, ShortString};
use herald_broker::{Topology, connect};
use herald_core::wire::LedgerBatch;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::write::{Batch, apply};

/// Consumes until `shutdown`, reconnecting with backoff when the broker goes away.
pub async fn run(
    config: &Config,
    topology: &Topology,
    pool: &PgPool,
    shutdown: &CancellationToken,
    consuming: &AtomicBool,
) {
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        let result = session(config, topology, pool, shutdown, consuming).await;
        consuming.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "ledger consumer stopped, reconnecting");
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
    let conn = connect(&config.common.amqp_url, "herald-ledger").await?;
    let ch = conn.create_channel().await?;
    topology.declare(&ch).await?;
    ch.basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            ShortString::from(topology.ledger_queue()),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
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
        while deliveries.len() < config.batch_messages {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => deliveries.push(d?),
                Ok(None) | Err(_) => break,
            }
        }
        let mut batch = Batch::default();
        let mut last_tag = None;
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
                    last_tag = Some(d.delivery_tag);
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
        let Some(last_tag) = last_tag else { continue };
        let mut wait = Duration::from_millis(200);
        loop {
            let started = std::time::Instant::now();
            match apply(pool, &batch).await {
                Ok(()) => {
                    metrics::histogram!("herald_ledger_write_seconds")
                        .record(started.elapsed().as_secs_f64());
                    break;
                }
                Err(e) => {
                    metrics::counter!("herald_ledger_write_failures_total").increment(1);
                    tracing::warn!(error = %e, records = batch.len(), retry_in_ms = wait.as_millis() as u64, "ledger write failed, holding batch");
                    tokio::select! {
                        // Unacked: the broker redelivers the batch to the next ledger.
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        ch.basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await?;
        drop(spans);
        crate::metrics::batch_written(&batch);
        tracing::debug!(records = batch.len(), "ledger batch written");
    }
    let _ = ch.close(200, ShortString::from("stopping")).await;
    let _ = conn.close(200, ShortString::from("stopping")).await;
    Ok(())
}
