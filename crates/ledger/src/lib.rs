//! Herald ledger: the durable record of every event, delivery and attempt.
//!
//! It consumes record batches from the ledger queue, writes them to Postgres in one
//! transaction per batch (idempotently, see [`write`]), and serves the delivery log over gRPC.
//! Records are acked only after their transaction committed.

mod api;
mod config;
mod consume;
mod deadletter;
mod metrics;
mod retention;
pub mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_broker::{Publisher, QueueType, Topology};
use herald_proto::v1::deliveries_server::DeliveriesServer;
use herald_store::{KeyCache, Store};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;

/// Runs migrations, consumes records and serves the delivery log on `listener` until
/// `shutdown`; the batch in hand is written before it stops.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let c = &config.common;
    let store = Store::from_config(c, c.database_max_connections).await?;
    store.migrate().await?;
    let queue_type: QueueType = c.queue_type.parse().map_err(anyhow::Error::msg)?;
    let topology = Topology::new(c.amqp_prefix.clone(), queue_type);
    // Publishes manual attempts (redeliver, replay).
    let publisher = Publisher::connect(
        &c.amqp_url,
        "herald-ledger",
        topology.clone(),
        1,
        c.amqp_client,
    )
    .await?;

    let consuming = Arc::new(AtomicBool::new(false));
    let ready: herald_telemetry::ops::Readiness = {
        let (store, publisher, consuming) = (store.clone(), publisher.clone(), consuming.clone());
        Arc::new(move || {
            let (store, publisher, consuming) =
                (store.clone(), publisher.clone(), consuming.clone());
            Box::pin(async move {
                vec![
                    ("database", store.ping().await),
                    (
                        "broker",
                        publisher.is_up() && consuming.load(Ordering::Relaxed),
                    ),
                ]
            })
        })
    };
    herald_telemetry::ops::serve(&config.metrics_addr, ready, shutdown.clone()).await?;
    let sampled = vec![topology.ledger_queue(), topology.dead_queue()];
    tokio::spawn(herald_broker::sample_queue_depths(
        c.amqp_url.clone(),
        move || sampled.clone(),
        shutdown.clone(),
    ));

    tokio::spawn(retention::run(
        store.pool().clone(),
        config.payload_retention,
        config.attempt_retention,
        config.retention_interval,
        shutdown.clone(),
    ));

    let consumer = {
        let (config, topology, pool, shutdown, consuming) = (
            config.clone(),
            topology.clone(),
            store.pool().clone(),
            shutdown.clone(),
            consuming.clone(),
        );
        tokio::spawn(
            async move { consume::run(&config, &topology, &pool, &shutdown, &consuming).await },
        )
    };

    let dead_letters = {
        let (config, topology, pool, shutdown) = (
            config.clone(),
            topology.clone(),
            store.pool().clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            consume::supervise("dead-letter consumer", &shutdown, || {
                deadletter::session(&config, &topology, &pool, &shutdown)
            })
            .await
        })
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<DeliveriesServer<api::DeliveriesApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(herald_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let api = api::DeliveriesApi {
        pool: store.pool().clone(),
        keys: KeyCache::new(store.clone(), Duration::from_secs(10)),
        publisher: publisher.clone(),
    };
    tracing::info!(addr = %listener.local_addr()?, "ledger listening");
    tonic::transport::Server::builder()
        .trace_fn(herald_telemetry::grpc_span)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(DeliveriesServer::new(api))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
        .await?;
    consumer.await?;
    dead_letters.await?;
    publisher.close().await;
    tracing::info!("ledger stopped");
    Ok(())
}
