//! Herald dispatcher: consumes delivery tasks, signs and POSTs them, and schedules retries.
//!
//! Stateless by design: everything a dispatcher knows is in the task, Postgres (endpoints) or
//! Redis (succeeded deliveries). A task is acked only after its follow-up publishes were
//! confirmed, so a dispatcher killed at any moment loses nothing: the broker hands its
//! unacked tasks to another one.
//!
//! When Postgres or the broker is unreachable mid-task, the task is held (not nacked) and the
//! step retried with backoff, so an outage never burns through a queue's delivery limit.

mod auto_disable;
mod cache;
mod config;
mod deliver;
mod gate;
mod metrics;
mod pace;
mod retry;
mod service;
mod streak_writes;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use herald_broker::{
    AckPolicy, Acks, Batching, Consumer, Delivery, Publisher, RecordBatcher, Topology,
};
use herald_core::backoff::Backoff;
use herald_core::wire::DeliveryTask;
use herald_store::Store;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use crate::config::Config;
use crate::deliver::Decision;

/// Tries of an endpoint lookup failing for another reason than a database outage before the
/// task is handed back to the broker.
const PERMANENT_ERROR_TRIES: u32 = 4;

/// The parts of a task's follow-ups the broker has not confirmed yet: each message on its own
/// (a retry task or an operational event published twice would be delivered twice), the
/// records together (the ledger applies a record twice as once).
struct Pending {
    messages: Vec<bool>,
    records: bool,
}

/// Shared handles of one dispatcher.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    config: Arc<Config>,
    store: Store,
    publisher: Publisher,
    /// Attempt records of concurrent deliveries share ledger messages.
    records: RecordBatcher,
    redis: redis::aio::ConnectionManager,
    /// Succeeded deliveries, marked in shared Redis pipelines.
    done: herald_redis::DoneMarks,
    endpoints: cache::EndpointCache,
    http: herald_outbound::Client,
    /// Per-endpoint and per-tenant in-flight caps.
    gates: gate::Gates,
    limiter: herald_redis::RateLimiter,
    /// Endpoints this dispatcher saw fail recently: a success to them resets the stored
    /// failure streak even when the cached endpoint does not show one yet.
    recent_failures: Arc<Mutex<HashSet<uuid::Uuid>>>,
    /// Endpoints' failure-streak outcomes, written a few times a second each.
    streaks: streak_writes::StreakBook,
    /// POSTs in flight at once (`HERALD_DISPATCHER_CONCURRENCY`). Tasks held (at most the
    /// prefetch) outnumber them: most of a task's time goes to waiting for its follow-up
    /// confirms, which needs no connection to the receiver.
    posts: Arc<Semaphore>,
    /// Work queues with a consumer open (ready when all are).
    consuming: Arc<AtomicUsize>,
}

/// Connects, then consumes the work queue until `shutdown`; in-flight deliveries get
/// `HERALD_SHUTDOWN_GRACE` to finish, the rest go back to the broker unacked.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let d = Dispatcher::connect(config).await?;
    herald_telemetry::ops::serve(&d.config.metrics_addr, d.readiness(), shutdown.clone()).await?;
    // Toggles, deletes and secret changes drop the cached endpoint at once.
    let endpoints = d.endpoints.clone();
    let watch = d
        .store
        .watch_changes(shutdown.clone(), move |c| endpoints.apply(c));
    d.spawn_samplers(&shutdown);
    herald_service::supervise("dispatcher consumer", &shutdown, || d.consume(&shutdown)).await;
    let _ = watch.await;
    d.publisher.close().await;
    tracing::info!("dispatcher stopped");
    Ok(())
}

impl Dispatcher {
    /// Connects to Postgres, the broker (declaring the topology) and Redis.
    async fn connect(config: Config) -> anyhow::Result<Self> {
        let c = &config.common;
        let store = Store::from_config(c, c.database_max_connections).await?;
        let topology = Topology::from_config(c);
        let publisher = Publisher::connect(
            &c.amqp_url,
            "herald-dispatcher",
            topology,
            config.publish_channels,
        )
        .await?;
        let redis =
            redis::aio::ConnectionManager::new(redis::Client::open(c.redis_url.as_str())?).await?;
        Ok(Dispatcher {
            endpoints: cache::EndpointCache::new(store.clone(), config.endpoint_cache_ttl),
            http: herald_outbound::Client::new(
                herald_outbound::AddressPolicy::new(config.allow_networks.clone()),
                config.max_response_bytes,
                &config.egress,
                config.concurrency,
            )?,
            store,
            records: RecordBatcher::start(
                publisher.clone(),
                Batching::ledger(config.record_linger),
            ),
            publisher: publisher.clone(),
            limiter: herald_redis::RateLimiter::new(redis.clone(), &c.redis_prefix),
            done: herald_redis::DoneMarks::start(redis.clone(), &c.redis_prefix, config.done_ttl),
            gates: gate::Gates::new(
                config.gates.clone(),
                Some(herald_redis::throttle_notes::start(
                    redis.clone(),
                    &c.redis_prefix,
                )),
            ),
            redis,
            recent_failures: Arc::default(),
            streaks: streak_writes::StreakBook::default(),
            consuming: Arc::default(),
            posts: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config: Arc::new(config),
        })
    }

    /// Ready when the database is reachable, the publisher is up and every work queue has a
    /// consumer; Redis is optional.
    fn readiness(&self) -> herald_telemetry::ops::Readiness {
        use herald_telemetry::ops::Dependency;
        let d = self.clone();
        Arc::new(move || {
            let d = d.clone();
            Box::pin(async move {
                let mut redis = d.redis.clone();
                let redis_up = redis::cmd("PING")
                    .query_async::<String>(&mut redis)
                    .await
                    .is_ok();
                // Without Redis deliveries go on (no done marks, no rate limits).
                vec![
                    Dependency::required("database", d.store.ping().await),
                    Dependency::required(
                        "broker",
                        d.publisher.is_up()
                            && d.consuming.load(Ordering::Relaxed)
                                == d.publisher.topology().work_queues().len(),
                    ),
                    Dependency::optional("redis", redis_up),
                ]
            })
        })
    }

    /// The gauges sampled in the background: queue depths and the gates' state.
    fn spawn_samplers(&self, shutdown: &CancellationToken) {
        let topo = self.publisher.topology().clone();
        let (gates, legacy) = (self.gates.clone(), topo.work_queue());
        tokio::spawn(herald_broker::sample_queue_depths(
            self.config.common.amqp_url.clone(),
            move || {
                let mut names = topo.work_queues();
                names.extend(
                    herald_broker::DELAY_RUNGS_MS
                        .iter()
                        .map(|ms| topo.delay_queue(*ms)),
                );
                names
            },
            // Every dispatcher consumes the legacy work queue once: its consumers are the
            // dispatchers, among which a failing endpoint's pace is shared (crate::pace).
            move |states: &[herald_broker::QueueState]| {
                if let Some(q) = states.iter().find(|q| q.name == legacy) {
                    gates.set_dispatchers(q.consumers);
                }
            },
            shutdown.clone(),
        ));
        tokio::spawn(gate::sample_every(self.gates.clone(), shutdown.clone()));
    }
}

/// The prefetch window of work queue `queue`: `prefetch`, a quarter of it (at least 1) for a
/// bulk queue. A burst is a backlog its tenant's own deliveries wait for; with a full window
/// beside its fresh one it would hold twice the POST slots and CPU share that a backlog held
/// before the bulk queues, and slow tenants on other shards (the isolation test caught that).
fn window_of(topo: &herald_broker::Topology, queue: &str, prefetch: u16) -> u16 {
    match topo.is_bulk_queue(queue) {
        true => (prefetch / 4).max(1),
        false => prefetch,
    }
}

/// How a worked task leaves the dispatcher.
enum Settle {
    /// Done (follow-ups confirmed): ack.
    Ack,
    /// Not attempted: back on the queue now.
    Requeue,
    /// Unreadable: dead-lettered.
    Reject,
    /// Left unacked (shutting down mid-step): the broker hands it out again.
    Hold,
}

impl Dispatcher {
    /// One consumer session of every work queue (the shards and the legacy queue); returns
    /// `Ok` on shutdown, `Err` when a connection broke (the others are then closed too, their
    /// in-flight deliveries finished, and everything reopened by the caller).
    async fn consume(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        // Queues lost with a broker node come back before anyone consumes them.
        self.publisher.redeclare().await?;
        let session = shutdown.child_token();
        let mut queues = JoinSet::new();
        let names = self.publisher.topology().work_queues();
        tracing::info!(
            queues = names.len(),
            prefetch = self.config.prefetch,
            "dispatcher consuming"
        );
        // A connection per queue: the broker writes a connection's deliveries in order on one
        // socket, so a shard with a backlog would stand in front of every other shard's
        // deliveries on a shared one (the isolation tests caught exactly that).
        let url = &self.config.common.amqp_url;
        let topo = self.publisher.topology();
        let opening = names.iter().map(|q| {
            let prefetch = window_of(topo, q, self.config.prefetch);
            Consumer::open(url, "herald-dispatcher-consumer", None, q, prefetch)
        });
        let mut opened = Vec::with_capacity(names.len());
        let mut failed = None;
        for (result, queue) in futures::future::join_all(opening)
            .await
            .into_iter()
            .zip(names)
        {
            match result {
                Ok(consumer) => opened.push((consumer, queue)),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            for (consumer, _) in opened {
                consumer.close().await;
            }
            return Err(e.into());
        }
        for (consumer, queue) in opened {
            let (this, stop) = (self.clone(), session.clone());
            queues.spawn(async move { this.consume_queue(consumer, &queue, &stop).await });
        }
        let mut result = Ok(());
        while let Some(done) = queues.join_next().await {
            let outcome = done.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = outcome {
                session.cancel();
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Consumes one work queue until `shutdown` (`Ok`) or until its connection broke (`Err`).
    async fn consume_queue(
        &self,
        mut consumer: Consumer,
        queue: &str,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        tracing::debug!(
            queue,
            prefetch = self.config.prefetch,
            "dispatcher consuming"
        );
        self.consuming.fetch_add(1, Ordering::Relaxed);
        let acks = Acks::start(consumer.settler(), AckPolicy::default());
        // Ends this session's work: on shutdown, or when the connection broke (the broker has
        // then handed every unacked task out again, so tasks not yet POSTed must not start).
        let session = shutdown.child_token();
        let mut inflight = JoinSet::new();
        let result = loop {
            while inflight.try_join_next().is_some() {}
            let next = tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                next = consumer.next() => next,
            };
            let delivery = match next {
                Ok(delivery) => delivery,
                Err(e) => break Err(anyhow::Error::from(e)),
            };
            let tag = delivery.tag;
            acks.received(tag);
            let this = self.clone();
            let stop = session.clone();
            let acks = acks.clone();
            // No local bound needed: the broker hands out at most `prefetch` unacked tasks.
            inflight.spawn(async move {
                let work = AssertUnwindSafe(this.handle(delivery, &acks, &stop));
                if work.catch_unwind().await.is_err() {
                    // Settle it, or its tag would hold every later ack back for the session.
                    tracing::error!(
                        delivery_tag = tag,
                        "delivery task panicked, handing it back"
                    );
                    acks.requeue(tag);
                }
            });
        };
        if result.is_err() {
            session.cancel();
        }
        // Stop taking new tasks, let the ones in flight finish and ack them; closing the
        // channel then hands back the rest (and whatever was prefetched but not started).
        consumer.cancel().await;
        let grace = self.config.shutdown_grace;
        if tokio::time::timeout(grace, async {
            while inflight.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                queue,
                left = inflight.len(),
                "grace period over, handing in-flight deliveries back"
            );
            inflight.shutdown().await;
        }
        // Bounded: a stalled socket must not hold the shutdown (unacked tasks come back).
        let _ = tokio::time::timeout(Duration::from_secs(5), acks.close()).await;
        self.consuming.fetch_sub(1, Ordering::Relaxed);
        consumer.close().await;
        result
    }

    async fn handle(&self, delivery: Delivery, acks: &Acks, shutdown: &CancellationToken) {
        // Continue the trace of the event (or the attempt) that queued this task.
        let span = tracing::info_span!(
            "dispatcher.deliver",
            delivery_id = tracing::field::Empty,
            attempt = tracing::field::Empty
        );
        herald_telemetry::set_parent_from(
            &span,
            delivery
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let in_flight = ::metrics::gauge!("herald_deliveries_in_flight");
        in_flight.increment(1.0);
        let tag = delivery.tag;
        // Boxed: the attempt's state (HTTP exchange, headers, follow-ups) is kilobytes, and a
        // spawned task's future is moved several times on its way into the runtime; a box
        // moves it once (callgrind: the spawn's copies were ~4,000 instructions a delivery).
        match Box::pin(self.handle_in(delivery, shutdown))
            .instrument(span)
            .await
        {
            Settle::Ack => acks.ack(tag),
            Settle::Requeue => acks.requeue(tag),
            Settle::Reject => acks.reject(tag),
            Settle::Hold => {}
        }
        in_flight.decrement(1.0);
    }

    /// Works a task; says how to settle it.
    async fn handle_in(&self, delivery: Delivery, shutdown: &CancellationToken) -> Settle {
        let task = match DeliveryTask::decode(&delivery.body) {
            Ok(t) => t,
            Err(e) => {
                ::metrics::counter!("herald_dispatcher_unreadable_tasks_total").increment(1);
                tracing::error!(error = %e, "unreadable delivery task, dead-lettering it");
                return Settle::Reject;
            }
        };
        let span = tracing::Span::current();
        span.record("delivery_id", tracing::field::display(task.delivery_id));
        span.record("attempt", task.attempt);
        let mut backoff = Backoff::held();
        let mut refused = 0;
        let decision = loop {
            match self.attempt(&task, delivery.redelivered, shutdown).await {
                Ok(d) => break d,
                // A database problem (an outage, a password being rotated, a migration rolling
                // out): hold the task; it must not burn its delivery limit meanwhile.
                Err(e) if !matches!(e, herald_store::Error::Secret(_)) => {
                    tracing::warn!(delivery_id = %task.delivery_id, error = %e, "cannot load endpoint, holding task");
                }
                // A secret sealed with a key this dispatcher lacks does not pass by waiting:
                // held, such tasks would fill the prefetch and stop every delivery. After a few
                // tries the task goes back to the broker, where a dispatcher with the key may
                // take it; past the queue's delivery limit it is dead-lettered and its delivery
                // ends `failed` with the reason.
                Err(e) => {
                    refused += 1;
                    if refused >= PERMANENT_ERROR_TRIES {
                        ::metrics::counter!("herald_dispatcher_endpoint_errors_total").increment(1);
                        tracing::error!(delivery_id = %task.delivery_id, endpoint_id = %task.endpoint_id, error = %e, "cannot use endpoint, handing the task back to the broker");
                        return Settle::Requeue;
                    }
                    tracing::warn!(delivery_id = %task.delivery_id, error = %e, "cannot use endpoint, trying again");
                }
            }
            if !backoff.wait(shutdown.cancelled()).await {
                return Settle::Requeue;
            }
        };
        if let Decision::Requeue = decision {
            return Settle::Requeue;
        }
        if let Decision::Publish(follow, done) = decision {
            let mut backoff = Backoff::held();
            // Only the part not yet confirmed is published again: a retry task published twice
            // would start a second retry chain for the same delivery.
            let mut left = Pending {
                messages: vec![true; follow.messages.len()],
                records: !follow.records.is_empty(),
            };
            loop {
                let e = match self.follow_up(&follow, &mut left).await {
                    Ok(()) => break,
                    Err(e) => e,
                };
                tracing::warn!(delivery_id = %task.delivery_id, error = %e, "follow-up publish failed, holding task");
                if let herald_broker::Error::Unroutable { .. } = &e {
                    // A queue deleted since this dispatcher declared the topology: declare it
                    // again before the next try.
                    if let Err(e) = self.publisher.redeclare().await {
                        tracing::warn!(error = %e, "could not declare the topology again");
                    }
                }
                if !backoff.wait(shutdown.cancelled()).await {
                    // Unacked: the task comes back and is attempted again (a duplicate at most).
                    return Settle::Hold;
                }
            }
            if let Some(id) = done {
                self.done.mark(id).await;
            }
        }
        Settle::Ack
    }

    /// Publishes what is `left` of a task's follow-ups: its own messages and its records (in a
    /// shared ledger message) at the same time. Each part the broker confirmed is struck off
    /// `left`; Ok once nothing is left.
    async fn follow_up(
        &self,
        follow: &deliver::FollowUps,
        left: &mut Pending,
    ) -> herald_broker::Result<()> {
        let messages = futures::future::join_all(
            follow
                .messages
                .iter()
                .zip(&left.messages)
                .filter(|(_, left)| **left)
                .map(|(m, _)| self.publisher.publish(std::slice::from_ref(m))),
        );
        let records = async {
            match left.records {
                true => {
                    let trace = herald_telemetry::trace_headers();
                    self.records.submit(follow.records.clone(), trace).await
                }
                false => Ok(()),
            }
        };
        let (messages, records) = tokio::join!(messages, records);
        let mut first_error = None;
        let mut outcomes = messages.into_iter();
        for left in left.messages.iter_mut().filter(|l| **l) {
            match outcomes.next().expect("one outcome per message left") {
                Ok(()) => *left = false,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        left.records &= records.is_err();
        match (first_error, records) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(()),
        }
    }
}
