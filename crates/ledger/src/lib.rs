//! Herald ledger: the durable record of every event, delivery and attempt.
//!
//! It consumes record batches from the ledger queue, writes them to Postgres in one
//! transaction per batch (idempotently, see [`write`]), and serves the delivery log over gRPC.
//! Records are acked only after their transaction committed.

mod api;
mod auth;
mod budget;
mod config;
mod consume;
mod deadletter;
mod error;
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
pub use crate::deadletter::ReplayReport;

const USAGE: &str = "usage: herald-ledger                        serve (the default)
       herald-ledger dead-letters replay [--queue work|ledger] [--limit N]
                                            send dead letters back where they died, once their
                                            cause is fixed (default: both queues, 1000)";

/// What the binary was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    ReplayDeadLetters { queue: Option<String>, limit: u32 },
}

impl Command {
    /// Reads the arguments after the program name; `Err` is the message to print.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut it = args.iter().map(String::as_str);
        match (it.next(), it.next()) {
            (None, _) => Ok(Command::Serve),
            (Some("dead-letters"), Some("replay")) => {
                let (mut queue, mut limit) = (None, 1000);
                while let Some(flag) = it.next() {
                    let value = it
                        .next()
                        .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
                    match flag {
                        "--queue" if matches!(value, "work" | "ledger") => {
                            queue = Some(value.to_owned())
                        }
                        "--queue" => {
                            return Err(format!(
                                "--queue must be work or ledger, not {value:?}\n{USAGE}"
                            ));
                        }
                        "--limit" => {
                            limit = value.parse().map_err(|_| {
                                format!("--limit must be a whole number, not {value:?}\n{USAGE}")
                            })?
                        }
                        other => return Err(format!("unknown option {other:?}\n{USAGE}")),
                    }
                }
                Ok(Command::ReplayDeadLetters { queue, limit })
            }
            _ => Err(USAGE.to_owned()),
        }
    }
}

/// Runs a maintenance command and returns.
pub async fn run_command(command: Command, config: &Config) -> anyhow::Result<()> {
    let Command::ReplayDeadLetters { queue, limit } = command else {
        anyhow::bail!("serving is not a maintenance command");
    };
    let c = &config.common;
    let store = Store::from_config(c, 2).await?;
    store.migrate().await?;
    let queue_type: QueueType = c.queue_type.parse().map_err(anyhow::Error::msg)?;
    let topology = Topology::new(c.amqp_prefix.clone(), queue_type);
    let publisher = Publisher::connect(&c.amqp_url, "herald-ledger-replay", topology, 1).await?;
    let report = deadletter::replay(store.pool(), &publisher, queue.as_deref(), limit).await;
    publisher.close().await;
    let r = report?;
    println!(
        "replayed {} dead letters; skipped {} kept only in part (over 64 KiB) and {} that are not readable tasks",
        r.replayed, r.truncated, r.unreadable
    );
    Ok(())
}

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
    let publisher = Publisher::connect(&c.amqp_url, "herald-ledger", topology.clone(), 1).await?;

    let consuming = Arc::new(AtomicBool::new(false));
    let ready: herald_telemetry::ops::Readiness = {
        use herald_telemetry::ops::Dependency;
        let (store, publisher, consuming) = (store.clone(), publisher.clone(), consuming.clone());
        Arc::new(move || {
            let (store, publisher, consuming) =
                (store.clone(), publisher.clone(), consuming.clone());
            Box::pin(async move {
                vec![
                    Dependency::required("database", store.ping().await),
                    Dependency::required(
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
        budget: budget::Budget::new(&config)?,
        replay_page: config.replay_page,
    };
    // API keys are checked from the headers, before a message is read.
    let gate = api.auth.clone();
    tracing::info!(addr = %listener.local_addr()?, "ledger listening");
    let limits = &config.api;
    let small = limits.max_message_bytes;
    tonic::transport::Server::builder()
        .trace_fn(herald_telemetry::grpc_span)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(health_service.max_decoding_message_size(small))
        .add_service(reflection.max_decoding_message_size(small))
        .add_service(herald_proto::server::CredentialsFirst::new(
            DeliveriesServer::new(api).max_decoding_message_size(small),
            gate,
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
        .await?;
    consumer.await?;
    dead_letters.await?;
    let _ = watch.await;
    publisher.close().await;
    tracing::info!("ledger stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        Command::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn commands_are_read_or_refused_with_the_usage() {
        assert_eq!(parse(&[]), Ok(Command::Serve));
        assert_eq!(
            parse(&["dead-letters", "replay"]),
            Ok(Command::ReplayDeadLetters {
                queue: None,
                limit: 1000
            })
        );
        assert_eq!(
            parse(&[
                "dead-letters",
                "replay",
                "--limit",
                "5",
                "--queue",
                "ledger"
            ]),
            Ok(Command::ReplayDeadLetters {
                queue: Some("ledger".into()),
                limit: 5
            })
        );
        for bad in [
            &["serve"][..],
            &["dead-letters"],
            &["dead-letters", "replay", "--limit"],
            &["dead-letters", "replay", "--limit", "x"],
            &["dead-letters", "replay", "--queue", "dead"],
            &["dead-letters", "replay", "--force", "1"],
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("usage: herald-ledger"), "{bad:?}: {err}");
        }
    }
}
