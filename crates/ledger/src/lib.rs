//! Herald ledger: the durable record of every event, delivery and attempt.
//!
//! It consumes record batches from the ledger queue, writes them to Postgres in one
//! transaction per batch (idempotently, see [`write`]), and serves the delivery log over gRPC
//! (`Deliveries`, per tenant) with the operator's `Operations` service (dead letters, queue
//! depths; [`operations`]). Records are acked only after their transaction committed.

mod api;
mod auth;
mod budget;
mod config;
mod consume;
mod deadletter;
mod error;
mod maintenance;
mod metrics;
mod operations;
mod partitions;
mod retention;
mod service;
pub mod write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_broker::{Publisher, Topology};
use herald_proto::v1::deliveries_server::DeliveriesServer;
use herald_proto::v1::operations_server::OperationsServer;
use herald_store::{KeyCache, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;
pub use crate::deadletter::ReplayReport;
pub use crate::maintenance::{Command, DeadLetters, run_command};

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
    partitions::ensure(store.pool(), chrono::Utc::now(), config.partitions_ahead).await?;
    let topology = Topology::from_config(c);
    // Publishes manual attempts (redeliver, replay): up to 8 calls at once.
    let publisher = Publisher::connect(&c.amqp_url, "herald-ledger", topology.clone(), 8).await?;
    let ledger = Ledger {
        config: Arc::new(config),
        store,
        topology,
        publisher,
        consuming: Arc::new(AtomicBool::new(false)),
    };
    herald_telemetry::ops::serve(
        &ledger.config.metrics_addr,
        ledger.readiness(),
        shutdown.clone(),
    )
    .await?;
    ledger.spawn_housekeeping(&shutdown);
    let (consumer, dead_letters) = ledger.spawn_consumers(&shutdown);
    ledger.serve_api(listener, &shutdown).await?;
    consumer.await?;
    dead_letters.await?;
    ledger.publisher.close().await;
    tracing::info!("ledger stopped");
    Ok(())
}

/// Shared handles of one ledger.
#[derive(Clone)]
struct Ledger {
    config: Arc<Config>,
    store: Store,
    topology: Topology,
    publisher: Publisher,
    /// The record consumer is attached (ready when it is).
    consuming: Arc<AtomicBool>,
}

impl Ledger {
    /// Ready when the database is reachable, the publisher is up and records are consumed.
    fn readiness(&self) -> herald_telemetry::ops::Readiness {
        use herald_telemetry::ops::Dependency;
        let l = self.clone();
        Arc::new(move || {
            let l = l.clone();
            Box::pin(async move {
                vec![
                    Dependency::required("database", l.store.ping().await),
                    Dependency::required(
                        "broker",
                        l.publisher.is_up() && l.consuming.load(Ordering::Relaxed),
                    ),
                ]
            })
        })
    }

    /// Queue-depth gauges and the retention sweeps, in the background until `shutdown`.
    fn spawn_housekeeping(&self, shutdown: &CancellationToken) {
        let sampled = vec![self.topology.ledger_queue(), self.topology.dead_queue()];
        tokio::spawn(herald_broker::sample_queue_depths(
            self.config.common.amqp_url.clone(),
            move || sampled.clone(),
            |_| {},
            shutdown.clone(),
        ));
        tokio::spawn(retention::run(
            self.store.pool().clone(),
            retention::Settings {
                payloads: self.config.payload_retention,
                attempts: self.config.attempt_retention,
                interval: self.config.retention_interval,
                partitions_ahead: self.config.partitions_ahead,
            },
            shutdown.clone(),
        ));
    }

    /// The record consumer and the dead-letter consumer, each kept alive across broker
    /// outages until `shutdown`.
    fn spawn_consumers(
        &self,
        shutdown: &CancellationToken,
    ) -> (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>) {
        let (l, stop) = (self.clone(), shutdown.clone());
        let consumer = tokio::spawn(async move {
            let pool = l.store.pool().clone();
            consume::run(&l.config, &l.topology, &pool, &stop, &l.consuming).await
        });
        let (l, stop) = (self.clone(), shutdown.clone());
        let dead_letters = tokio::spawn(async move {
            let pool = l.store.pool().clone();
            herald_service::supervise("dead-letter consumer", &stop, || {
                deadletter::session(&l.config, &l.topology, &pool, &stop)
            })
            .await
        });
        (consumer, dead_letters)
    }

    /// Serves the delivery log (with health and reflection) on `listener` until `shutdown`;
    /// in-flight calls finish first.
    async fn serve_api(
        &self,
        listener: TcpListener,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (config, store, publisher) = (&self.config, &self.store, &self.publisher);
        let c = &config.common;
        let (health, router) = herald_service::grpc_server(&config.api)?;
        health
            .set_serving::<DeliveriesServer<api::DeliveriesApi>>()
            .await;
        health
            .set_serving::<OperationsServer<operations::OperationsApi>>()
            .await;
        let keys = KeyCache::new(store.clone(), Duration::from_secs(10))
            .with_lookup_rate(config.auth_lookup_rate);
        keys.warm();
        // A key revoked through ingest stops working here as soon as its notice arrives.
        let watch = {
            let keys = keys.clone();
            store.watch_changes(shutdown.clone(), move |c| keys.apply(c))
        };
        // The delivery log's queries, driven by tenants, are bounded by the statement timeout; the
        // batch writer, dead letters and retention keep `store`'s pool, without the bound.
        let api_store = store.bounded(config.api.statement_timeout, c.database_max_connections);
        let api = api::DeliveriesApi {
            pool: api_store.pool().clone(),
            auth: auth::TenantKey {
                keys,
                admin_token: config.admin_token.as_deref().map(Into::into),
            },
            publisher: publisher.clone(),
            budget: budget::Budget::new(config)?,
            replay_page: config.replay_page,
            replay_rate: config.replay_rate,
        };
        let ops = self.operations_api(api_store.pool().clone(), api.auth.keys.clone());
        // API keys and the operator token are checked from the headers, before a message is read.
        let gate = api.auth.clone();
        let ops_gate = ops.gate.clone();
        tracing::info!(addr = %listener.local_addr()?, "ledger listening");
        let small = config.api.max_message_bytes;
        router
            .add_service(herald_proto::server::CredentialsFirst::new(
                DeliveriesServer::new(api).max_decoding_message_size(small),
                gate,
            ))
            .add_service(herald_proto::server::CredentialsFirst::new(
                OperationsServer::new(ops).max_decoding_message_size(small),
                ops_gate,
            ))
            .serve_with_incoming_shutdown(
                herald_service::grpc_incoming(listener),
                shutdown.cancelled(),
            )
            .await?;
        let _ = watch.await;
        Ok(())
    }

    /// The Operations service (dead letters, queue depths) on the API's pool.
    fn operations_api(&self, pool: sqlx::PgPool, keys: KeyCache) -> operations::OperationsApi {
        operations::OperationsApi {
            pool,
            publisher: self.publisher.clone(),
            topology: self.topology.clone(),
            amqp_url: self.config.common.amqp_url.clone(),
            admin: Arc::default(),
            gate: operations::gate::OperatorToken {
                keys,
                admin_token: self.config.admin_token.as_deref().map(Into::into),
            },
        }
    }
}
