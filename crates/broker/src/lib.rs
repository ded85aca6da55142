//! RabbitMQ seam: the queue topology, confirmed publishing and consumption.
//!
//! Topology (names under a configurable prefix `p`, default `herald`):
//! - exchange `p.work` (topic) → per shard (0..8) the queues `p.deliveries.work.<shard>` (fresh
//!   tasks, key `work.<shard>`), `p.deliveries.bulk.<shard>` (a tenant's fresh tasks past its
//!   fresh allowance, key `bulk.<shard>`) and `p.deliveries.again.<shard>` (retries and parked
//!   tasks, keys `#.again.<shard>`): a tenant's delivery tasks always take its shard
//!   ([`shard_of`]), and every dispatcher consumes every queue with a prefetch window of its
//!   own, so one tenant's backlog never stands in front of another tenant on another shard, nor
//!   its burst or retries in front of the fresh tasks of one on its shard.
//! - exchange `p.delays` (topic) → queues `p.deliveries.wait.<ms>`, the fixed ladder of
//!   [`DELAY_RUNGS_MS`], all declared at start: a message published with key `<ms>.again.<shard>`
//!   waits there for the queue's TTL and is dead-lettered to `p.work` with that same key, so it
//!   returns to its tenant's shard of returning tasks. Per-queue TTL expires head first, so timing stays exact.
//! - exchange `p.deliveries` (direct) → queue `p.deliveries.work` (key `work`): the single work
//!   queue of older versions, still declared and consumed so that what it (and the old
//!   `p.deliveries.delay.<ms>` queues that dead-letter into it) holds is delivered after an
//!   upgrade.
//! - exchange `p.ledger` (fanout) → queue `p.ledger.records`: event and attempt records in
//!   batches; analysts may bind their own queues to the exchange.
//! - exchange `p.dead` (fanout) → queue `p.dead.letters`: messages rejected as unprocessable or
//!   redelivered too often (quorum delivery limit), so one poison message never blocks a queue.
//!
//! Ledger records from concurrent calls share messages ([`RecordBatcher`], group commit), and
//! consumer acks of completed deliveries share frames ([`Acks`]).
//!
//! Everything goes over lapin: publishes ([`Publisher`]), consumers ([`Consumer`]) and
//! housekeeping ([`Admin`]). No lapin type leaves this crate: the services see Herald's own
//! publisher, consumer, delivery and settler types, so the client could change without them.
//!
//! Every publish is persistent, mandatory and confirmed: [`Publisher::publish`] returns only
//! after the broker confirmed every message, and fails if any was nacked or unroutable. That is
//! what lets ingest answer OK and the dispatcher ack only once follow-ups are safe.

mod acks;
mod admin;
mod batcher;
mod consumer;
mod error;
mod publisher;
mod topology;

pub use acks::{AckPolicy, Acks};
pub use admin::{Admin, QueueState, sample_queue_depths};
pub use batcher::{Batching, MAX_RECORD_LINGER, RecordBatcher, record_linger};
pub use consumer::{Consumer, Death, Delivery, Settler};
pub use error::{Error, Result};
pub use publisher::{Outgoing, Publisher};
pub use topology::{
    DELAY_RUNGS_MS, QueueKind, QueueType, Topology, WORK_KEY, WORK_SHARDS, delay_hop, shard_of,
};
