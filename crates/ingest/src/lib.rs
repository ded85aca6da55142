//! Herald ingest: the gRPC front door.
//!
//! It authenticates callers, validates events, dedupes them by idempotency key (Redis), matches
//! them against the tenant's subscriptions, and hands one delivery task per matching enabled
//! endpoint plus a ledger record to RabbitMQ. It answers OK only after the broker confirmed
//! every one of those messages; if the broker cannot take them the caller gets UNAVAILABLE and
//! nothing is half-accepted. It also owns tenant, key, endpoint and event-type management.

mod admin;
mod auth;
mod budget;
mod config;
mod convert;
mod credentials;
mod delivery_state;
mod endpoints;
mod error;
mod events;
mod fanout;
mod fresh_lane;
mod idempotency;
mod ingress;
mod maintenance;
mod metrics;
mod payload_work;
mod portal;
mod preauth;
mod service;
mod shares;
mod subscriptions;
mod troubled;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use herald_broker::{Publisher, RecordBatcher, Topology};
use herald_outbound::AddressPolicy;
use herald_proto::v1::admin_server::AdminServer;
use herald_proto::v1::endpoints_server::EndpointsServer;
use herald_proto::v1::event_types_server::EventTypesServer;
use herald_proto::v1::events_server::EventsServer;
use herald_proto::v1::portal_server::PortalServer;
use herald_store::{KeyCache, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;
pub use crate::error::{Error, Result};
pub use crate::maintenance::{Command, run_command};

/// Shared handles of one ingest instance.
#[derive(Clone)]
pub(crate) struct Ingest {
    pub config: Arc<Config>,
    pub store: Store,
    pub publisher: Publisher,
    /// Event records of concurrent publishes share ledger messages.
    pub records: RecordBatcher,
    pub keys: KeyCache,
    pub subscriptions: Arc<subscriptions::Subscriptions>,
    pub idempotency: idempotency::Idempotency,
    pub policy: AddressPolicy,
    /// Per-tenant publish rate (Redis token buckets shared by every ingest).
    pub limiter: herald_redis::RateLimiter,
    /// Endpoints' delivery states (dispatchers' throttle notes in Redis).
    pub delivery_states: delivery_state::DeliveryStates,
    /// Outbound client for test sends (as the dispatchers': same address guard, no redirects).
    pub http: herald_outbound::Client,
    /// Delivery-task bytes held by publishes in flight (`HERALD_PUBLISH_MEMORY`).
    pub publish_memory: fanout::MemoryGate,
    /// Test sends in progress per tenant (`HERALD_SEND_TEST_CONCURRENCY`).
    pub test_slots: budget::TestSlots,
    /// Threads for long filter work and each tenant's share of filter CPU.
    pub payload_work: payload_work::PayloadWork,
    /// Each tenant's allowance of fresh tasks a second; a burst past it goes to bulk.
    pub fresh_lane: Arc<fresh_lane::FreshLane>,
}

/// Connects to Postgres, Redis and RabbitMQ, runs migrations, declares the topology and serves
/// gRPC on `listener` until `shutdown` is cancelled; in-flight calls finish first.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = Ingest::connect(config).await?;
    state.keys.warm();
    // Endpoint, tenant and key changes made through other instances (or by an operator in SQL).
    let (subscriptions, keys) = (state.subscriptions.clone(), state.keys.clone());
    let watch = state.store.watch_changes(shutdown.clone(), move |c| {
        subscriptions.apply(c);
        keys.apply(c);
    });
    herald_telemetry::ops::serve(
        &state.config.metrics_addr,
        state.readiness(),
        shutdown.clone(),
    )
    .await?;
    let publisher = state.publisher.clone();
    state.serve_grpc(listener, &shutdown).await?;
    let _ = watch.await;
    publisher.close().await;
    tracing::info!("ingest stopped");
    Ok(())
}

impl Ingest {
    /// Runs the migrations, then connects to Postgres (bounded by the statement timeout), the
    /// broker (declaring the topology) and Redis.
    async fn connect(config: Config) -> anyhow::Result<Self> {
        let c = &config.common;
        let migrations = Store::from_config(c, c.database_max_connections).await?;
        migrations.migrate().await?;
        // Every query from here on answers a call: bounded by the statement timeout.
        let store = migrations.bounded(config.api.statement_timeout, c.database_max_connections);
        migrations.pool().close().await;
        let topology = Topology::from_config(c);
        let publisher = Publisher::connect(
            &c.amqp_url,
            "herald-ingest",
            topology,
            config.publish_channels,
        )
        .await?;
        let redis = redis::Client::open(c.redis_url.as_str())?;
        let redis = redis::aio::ConnectionManager::new(redis).await?;
        Ok(Ingest {
            limiter: herald_redis::RateLimiter::new(redis.clone(), &c.redis_prefix),
            delivery_states: delivery_state::DeliveryStates::new(redis.clone(), &c.redis_prefix),
            idempotency: idempotency::Idempotency::new(
                redis,
                &c.redis_prefix,
                config.idempotency_ttl,
                config.idempotency_pending_ttl,
            ),
            subscriptions: Arc::new(subscriptions::Subscriptions::new(
                store.clone(),
                config.subscription_cache_ttl,
            )),
            keys: KeyCache::new(store.clone(), Duration::from_secs(10))
                .with_lookup_rate(config.auth_lookup_rate),
            test_slots: budget::TestSlots::new(config.send_test_concurrency),
            payload_work: payload_work::PayloadWork::start(
                config.payload_threads,
                config.tenant_payload_cpu,
            )?,
            policy: AddressPolicy::new(config.allow_networks.clone()),
            fresh_lane: Arc::new(fresh_lane::FreshLane::new(config.tenant_fresh_rate)),
            publish_memory: fanout::MemoryGate::new(config.publish_memory),
            http: herald_outbound::Client::new(
                AddressPolicy::new(config.allow_networks.clone()),
                64 * 1024,
                &config.egress,
                16,
            )?,
            store,
            records: RecordBatcher::start(
                publisher.clone(),
                herald_broker::Batching::ledger(config.record_linger),
            ),
            publisher: publisher.clone(),
            config: Arc::new(config),
        })
    }

    /// Only the broker is required: without the database ingest answers from its caches, and
    /// without Redis it still accepts keyless publishes.
    fn readiness(&self) -> herald_telemetry::ops::Readiness {
        use herald_telemetry::ops::Dependency;
        let s = self.clone();
        Arc::new(move || {
            let s = s.clone();
            Box::pin(async move {
                vec![
                    Dependency::optional("database", s.store.ping().await),
                    Dependency::required("broker", s.publisher.is_up()),
                    Dependency::optional("redis", s.idempotency.ping().await),
                ]
            })
        })
    }

    /// Serves the gRPC API (with health and reflection) on `listener` until `shutdown`;
    /// in-flight calls finish first.
    async fn serve_grpc(
        self,
        listener: TcpListener,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (health, router) = herald_service::grpc_server(&self.config.api)?;
        health
            .set_serving::<EventsServer<events::EventsApi>>()
            .await;
        health
            .set_serving::<EndpointsServer<endpoints::EndpointsApi>>()
            .await;
        health.set_serving::<AdminServer<admin::AdminApi>>().await;
        health
            .set_serving::<PortalServer<portal::PortalApi>>()
            .await;
        health
            .set_serving::<EventTypesServer<endpoints::EventTypesApi>>()
            .await;
        let max = self.config.max_payload_bytes * self.config.max_batch.max(1) + (1 << 20);
        let small = self.config.api.max_message_bytes;

        let addr = listener.local_addr()?;
        let admin_token: Option<std::sync::Arc<str>> =
            self.config.admin_token.as_deref().map(Into::into);
        let ingress = ingress::Ingress::new(self.config.tenant_ingress_bytes);
        tracing::info!(%addr, "ingest listening");
        router
            .add_service(preauth::operator_first(
                AdminServer::new(admin::AdminApi(self.clone())).max_decoding_message_size(small),
                self.keys.clone(),
                admin_token.clone(),
            ))
            .add_service(preauth::portal_first(
                PortalServer::new(portal::PortalApi(self.clone())).max_decoding_message_size(small),
                self.keys.clone(),
                admin_token.clone(),
            ))
            .add_service(preauth::key_first(
                EventsServer::new(events::EventsApi(self.clone())).max_decoding_message_size(max),
                self.keys.clone(),
                admin_token.clone(),
                ingress.clone(),
            ))
            .add_service(preauth::key_first(
                EndpointsServer::new(endpoints::EndpointsApi(self.clone()))
                    .max_decoding_message_size(small),
                self.keys.clone(),
                admin_token.clone(),
                ingress.clone(),
            ))
            .add_service(preauth::key_first(
                EventTypesServer::new(endpoints::EventTypesApi(self.clone()))
                    .max_decoding_message_size(small),
                self.keys.clone(),
                admin_token.clone(),
                ingress.clone(),
            ))
            .serve_with_incoming_shutdown(
                herald_service::grpc_incoming(listener),
                shutdown.cancelled(),
            )
            .await?;
        Ok(())
    }
}
