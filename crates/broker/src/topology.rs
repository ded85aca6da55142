//! Exchange and queue names, and their idempotent declaration.

pub use herald_core::config::QueueType;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::error::{Error, Result};
use crate::publisher::Outgoing;

/// Routing key of the legacy work queue on the deliveries exchange.
pub const WORK_KEY: &str = "work";

/// Work shards delivery tasks are spread over, by tenant ([`shard_of`]); each has a queue of
/// fresh, of bulk and of returning tasks. Every dispatcher consumes every queue with a prefetch
/// window of its own, so a tenant's backlog fills its shard's queues and windows and no other
/// shard's: a tenant on another shard is served at once.
/// Fixed, because ingest, the ledger and every dispatcher must agree on it.
pub const WORK_SHARDS: usize = 8;

/// The work shard of a tenant's delivery tasks: FNV-1a of the tenant id, stable across
/// versions and processes (never the standard library's seeded hasher).
pub fn shard_of(tenant: uuid::Uuid) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % WORK_SHARDS as u64) as usize
}

/// The delays, in milliseconds, that have a delay queue of their own. Every quorum queue is a
/// Raft group on every broker node, so their number must not follow what tenants choose: a
/// retry delay that is not one of these travels through several of them, largest first (the
/// task carries when it is due; see [`delay_hop`]). Each usual tier (Stripe's, Svix's, the
/// defaults 1 min, 5 min, 15 min, 1 h, 6 h) is one queue, so one hop.
pub const DELAY_RUNGS_MS: [u64; 23] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 30_000, 60_000, 120_000, 300_000,
    600_000, 900_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000,
    43_200_000, 86_400_000,
];

/// The first leg of a wait of `ms`: the longest delay queue not longer than the wait (`None`
/// when even the shortest is: such a wait is spent by the dispatcher itself), and what is left
/// after it.
pub fn delay_hop(ms: u64) -> (Option<u64>, u64) {
    match DELAY_RUNGS_MS.iter().rev().find(|r| **r <= ms) {
        Some(r) => (Some(*r), ms - r),
        None => (None, ms),
    }
}

/// What a queue of the topology is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// Delivery tasks dispatchers consume (the shards and the legacy queue).
    Work,
    /// A rung of the delay ladder.
    Delay,
    /// Record batches the ledger consumes.
    Ledger,
    /// Messages the broker gave up on, which the ledger records.
    DeadLetter,
}

impl QueueKind {
    /// The kind's name in the API: `work`, `delay`, `ledger`, `dead_letter`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Work => "work",
            QueueKind::Delay => "delay",
            QueueKind::Ledger => "ledger",
            QueueKind::DeadLetter => "dead_letter",
        }
    }
}

/// The names and shape of Herald's exchanges and queues.
#[derive(Clone, Debug)]
pub struct Topology {
    pub prefix: String,
    pub queue_type: QueueType,
    /// Deliveries of one message after which a quorum queue dead-letters it.
    pub delivery_limit: u32,
    /// Replicas of each quorum queue (`x-quorum-initial-group-size`); 0: the broker's default
    /// (every node of the cluster). Only a new queue takes it: the broker keeps an existing
    /// queue's membership (grow or shrink it with `rabbitmq-queues`).
    pub quorum_replicas: u32,
}

fn short(s: &str) -> ShortString {
    ShortString::from(s)
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

impl Topology {
    /// The topology the configuration names (`HERALD_AMQP_PREFIX`, `HERALD_QUEUE_TYPE`).
    pub fn from_config(c: &herald_core::config::Common) -> Self {
        Self {
            quorum_replicas: c.quorum_replicas,
            ..Self::new(c.amqp_prefix.clone(), c.queue_type)
        }
    }

    pub fn new(prefix: impl Into<String>, queue_type: QueueType) -> Self {
        Self {
            prefix: prefix.into(),
            queue_type,
            delivery_limit: 20,
            quorum_replicas: 0,
        }
    }

    pub fn deliveries_exchange(&self) -> String {
        format!("{}.deliveries", self.prefix)
    }

    /// The work queue of an older Herald (one for every tenant): still declared and consumed,
    /// so tasks it and its delay queues hold are delivered after an upgrade.
    pub fn work_queue(&self) -> String {
        format!("{}.deliveries.work", self.prefix)
    }

    /// The topic exchange of the work shards: a fresh task has the key `work.<shard>` (bound
    /// to its shard's queue), or `bulk.<shard>` when its tenant is publishing faster than its
    /// fresh allowance (bound to the shard's bulk queue), one that waited (a retry, a parked
    /// task) `again.<shard>` or, back from a delay queue, `<ms>.again.<shard>` (bound with `#.again.<shard>` to its shard's
    /// queue of returning tasks).
    pub fn work_exchange(&self) -> String {
        format!("{}.work", self.prefix)
    }

    /// The queue of a shard's fresh tasks.
    pub fn shard_queue(&self, shard: usize) -> String {
        format!("{}.deliveries.work.{shard}", self.prefix)
    }

    /// The queue of a shard's returning tasks (retries and parked tasks): apart from the fresh
    /// ones, so a tenant's retries and parked backlog never stand in front of the fresh
    /// deliveries of a tenant that shares its shard.
    pub fn again_queue(&self, shard: usize) -> String {
        format!("{}.deliveries.again.{shard}", self.prefix)
    }

    /// The queue of a shard's bulk tasks: fresh tasks of a tenant publishing faster than its
    /// fresh allowance (ingest's `HERALD_TENANT_FRESH_RATE`), apart from the fresh ones, so one
    /// tenant's burst never stands in front of the fresh deliveries of a tenant that shares
    /// its shard.
    pub fn bulk_queue(&self, shard: usize) -> String {
        format!("{}.deliveries.bulk.{shard}", self.prefix)
    }

    /// Every queue dispatchers consume: the fresh shards, the returning shards, the bulk
    /// shards, then the legacy work queue.
    pub fn work_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = (0..WORK_SHARDS).map(|s| self.shard_queue(s)).collect();
        queues.extend((0..WORK_SHARDS).map(|s| self.again_queue(s)));
        queues.extend((0..WORK_SHARDS).map(|s| self.bulk_queue(s)));
        queues.push(self.work_queue());
        queues
    }

    /// Every queue of this installation with what it is for: the work queues, the delay
    /// ladder, the ledger's queue and the dead-letter queue (what an operator watches).
    pub fn every_queue(&self) -> Vec<(String, QueueKind)> {
        let mut queues: Vec<(String, QueueKind)> = self
            .work_queues()
            .into_iter()
            .map(|q| (q, QueueKind::Work))
            .collect();
        queues.extend(
            DELAY_RUNGS_MS
                .iter()
                .map(|ms| (self.delay_queue(*ms), QueueKind::Delay)),
        );
        queues.push((self.ledger_queue(), QueueKind::Ledger));
        queues.push((self.dead_queue(), QueueKind::DeadLetter));
        queues
    }

    /// A queue's name without this installation's prefix (`deliveries.work.3`).
    pub fn unprefixed<'a>(&self, queue: &'a str) -> &'a str {
        queue
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(queue)
    }

    /// True for a shard's bulk queue ([`Self::bulk_queue`]).
    pub fn is_bulk_queue(&self, queue: &str) -> bool {
        (0..WORK_SHARDS).any(|s| self.bulk_queue(s) == queue)
    }

    /// True for every queue of [`Self::work_queues`].
    pub fn is_work_queue(&self, queue: &str) -> bool {
        self.work_queues().iter().any(|q| q == queue)
    }

    /// The topic exchange of the delay ladder: the queue of rung `ms` is bound with `ms.#`.
    pub fn delay_exchange(&self) -> String {
        format!("{}.delays", self.prefix)
    }

    /// The delay queue of one rung of [`DELAY_RUNGS_MS`].
    pub fn delay_queue(&self, delay_ms: u64) -> String {
        format!("{}.deliveries.wait.{delay_ms}", self.prefix)
    }

    /// A delay queue of an older Herald (it dead-letters to the legacy work queue); only
    /// named to delete it.
    pub fn legacy_delay_queue(&self, delay_ms: u64) -> String {
        format!("{}.deliveries.delay.{delay_ms}", self.prefix)
    }

    /// A message for `tenant`'s work shard: a delivery task due now.
    pub fn work_message(
        &self,
        tenant: uuid::Uuid,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Outgoing {
        self.shard_message("work", tenant, body, headers)
    }

    /// A message for `tenant`'s shard on the work exchange, with key `<lane>.<shard>`.
    fn shard_message(
        &self,
        lane: &str,
        tenant: uuid::Uuid,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Outgoing {
        Outgoing {
            exchange: self.work_exchange(),
            routing_key: format!("{lane}.{}", shard_of(tenant)),
            body,
            headers,
        }
    }

    /// A fresh task of a tenant over its fresh allowance: for `tenant`'s bulk queue.
    pub fn bulk_message(
        &self,
        tenant: uuid::Uuid,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Outgoing {
        self.shard_message("bulk", tenant, body, headers)
    }

    /// A task that waited, due now: for `tenant`'s queue of returning tasks.
    pub fn again_message(
        &self,
        tenant: uuid::Uuid,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Outgoing {
        self.shard_message("again", tenant, body, headers)
    }

    /// A message that waits on rung `delay_ms` of the ladder, then enters `tenant`'s queue of
    /// returning tasks: the delay queue dead-letters it with the key it was published with.
    pub fn delay_message(
        &self,
        delay_ms: u64,
        tenant: uuid::Uuid,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Outgoing {
        Outgoing {
            exchange: self.delay_exchange(),
            routing_key: format!("{delay_ms}.again.{}", shard_of(tenant)),
            body,
            headers,
        }
    }

    /// A message for the ledger exchange (an encoded record batch).
    pub fn ledger_message(&self, body: Vec<u8>, headers: Vec<(String, String)>) -> Outgoing {
        Outgoing {
            exchange: self.ledger_exchange(),
            routing_key: String::new(),
            body,
            headers,
        }
    }

    pub fn ledger_exchange(&self) -> String {
        format!("{}.ledger", self.prefix)
    }

    pub fn ledger_queue(&self) -> String {
        format!("{}.ledger.records", self.prefix)
    }

    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead.letters", self.prefix)
    }

    fn base_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert(short("x-queue-type"), long("quorum"));
            if self.quorum_replicas > 0 {
                args.insert(
                    short("x-quorum-initial-group-size"),
                    AMQPValue::LongLongInt(i64::from(self.quorum_replicas)),
                );
            }
        }
        args
    }

    fn consumed_args(&self) -> FieldTable {
        let mut args = self.base_args();
        args.insert(short("x-dead-letter-exchange"), long(&self.dead_exchange()));
        if self.queue_type == QueueType::Quorum {
            args.insert(
                short("x-delivery-limit"),
                AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
            );
        }
        args
    }

    async fn queue(&self, ch: &Channel, name: &str, args: FieldTable) -> Result<()> {
        let opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(short(name), opts, args)
            .await
            .map(|_| ())
            .map_err(|e| {
                let e = e.to_string();
                if e.contains("x-quorum-initial-group-size") {
                    Error::Topology(format!(
                        "queue {name} exists with another replica count: HERALD_QUORUM_REPLICAS applies only to queues not declared yet (unset it, or change an existing queue's replicas with rabbitmq-queues grow / shrink): {e}"
                    ))
                } else {
                    Error::Topology(format!("declaring queue {name}: {e}"))
                }
            })
    }

    async fn exchange(&self, ch: &Channel, name: &str, kind: ExchangeKind) -> Result<()> {
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(short(name), kind, opts, FieldTable::default())
            .await
            .map_err(|e| Error::Topology(format!("declaring exchange {name}: {e}")))
    }

    async fn bind(&self, ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
        ch.queue_bind(
            short(queue),
            short(exchange),
            short(key),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| Error::Topology(format!("binding {queue} to {exchange}: {e}")))
    }

    /// Declares every fixed exchange and queue; safe to run from every service at start.
    pub(crate) async fn declare(&self, ch: &Channel) -> Result<()> {
        self.exchange(ch, &self.dead_exchange(), ExchangeKind::Fanout)
            .await?;
        self.queue(ch, &self.dead_queue(), self.base_args()).await?;
        self.bind(ch, &self.dead_queue(), &self.dead_exchange(), "")
            .await?;

        self.exchange(ch, &self.deliveries_exchange(), ExchangeKind::Direct)
            .await?;
        self.queue(ch, &self.work_queue(), self.consumed_args())
            .await?;
        self.bind(
            ch,
            &self.work_queue(),
            &self.deliveries_exchange(),
            WORK_KEY,
        )
        .await?;

        self.exchange(ch, &self.work_exchange(), ExchangeKind::Topic)
            .await?;
        for shard in 0..WORK_SHARDS {
            let (fresh, again) = (self.shard_queue(shard), self.again_queue(shard));
            self.queue(ch, &fresh, self.consumed_args()).await?;
            self.queue(ch, &again, self.consumed_args()).await?;
            let x = self.work_exchange();
            self.bind(ch, &fresh, &x, &format!("work.{shard}")).await?;
            self.bind(ch, &again, &x, &format!("#.again.{shard}"))
                .await?;
            let bulk = self.bulk_queue(shard);
            self.queue(ch, &bulk, self.consumed_args()).await?;
            self.bind(ch, &bulk, &x, &format!("bulk.{shard}")).await?;
        }

        self.exchange(ch, &self.delay_exchange(), ExchangeKind::Topic)
            .await?;
        for ms in DELAY_RUNGS_MS {
            self.declare_delay(ch, ms).await?;
        }

        self.exchange(ch, &self.ledger_exchange(), ExchangeKind::Fanout)
            .await?;
        self.queue(ch, &self.ledger_queue(), self.consumed_args())
            .await?;
        self.bind(ch, &self.ledger_queue(), &self.ledger_exchange(), "")
            .await?;
        Ok(())
    }

    /// Declares the delay queue of one rung: messages wait `delay_ms`, then go to the work
    /// exchange with the key they were published with (`<ms>.work.<shard>`), so each returns
    /// to its own tenant's shard.
    async fn declare_delay(&self, ch: &Channel, delay_ms: u64) -> Result<()> {
        let mut args = self.base_args();
        args.insert(
            short("x-message-ttl"),
            AMQPValue::LongLongInt(delay_ms as i64),
        );
        args.insert(short("x-dead-letter-exchange"), long(&self.work_exchange()));
        if self.queue_type == QueueType::Quorum {
            args.insert(short("x-dead-letter-strategy"), long("at-least-once"));
            args.insert(short("x-overflow"), long("reject-publish"));
        }
        let queue = self.delay_queue(delay_ms);
        self.queue(ch, &queue, args).await?;
        self.bind(ch, &queue, &self.delay_exchange(), &format!("{delay_ms}.#"))
            .await
    }

    /// Deletes everything under the prefix (tests use it to leave no residue): the ladder,
    /// and the legacy delay queues of `legacy_delays` (an older installation declared one per
    /// retry delay).
    pub(crate) async fn delete(&self, ch: &Channel, legacy_delays: &[u64]) -> Result<()> {
        let mut queues = self.work_queues();
        queues.extend([self.ledger_queue(), self.dead_queue()]);
        queues.extend(DELAY_RUNGS_MS.iter().map(|d| self.delay_queue(*d)));
        let mut legacy: Vec<u64> = DELAY_RUNGS_MS
            .iter()
            .chain(legacy_delays)
            .copied()
            .collect();
        legacy.sort_unstable();
        legacy.dedup();
        queues.extend(legacy.iter().map(|d| self.legacy_delay_queue(*d)));
        for q in queues {
            ch.queue_delete(short(&q), QueueDeleteOptions::default())
                .await?;
        }
        for x in [
            self.deliveries_exchange(),
            self.work_exchange(),
            self.delay_exchange(),
            self.ledger_exchange(),
            self.dead_exchange(),
        ] {
            ch.exchange_delete(short(&x), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_keeps_its_shard_and_tenants_spread_over_all() {
        let t = Topology::new("herald", QueueType::Quorum);
        let tenant = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        // Stable across versions: ingest and dispatchers of different builds must agree.
        assert_eq!(shard_of(tenant), shard_of(tenant));
        let work = t.work_message(tenant, Vec::new(), Vec::new());
        assert_eq!(work.routing_key, format!("work.{}", shard_of(tenant)));
        let delayed = t.delay_message(60_000, tenant, Vec::new(), Vec::new());
        assert_eq!(delayed.exchange, "herald.delays");
        assert_eq!(
            delayed.routing_key,
            format!("60000.again.{}", shard_of(tenant))
        );
        let again = t.again_message(tenant, Vec::new(), Vec::new());
        assert_eq!(again.routing_key, format!("again.{}", shard_of(tenant)));
        let bulk = t.bulk_message(tenant, Vec::new(), Vec::new());
        assert_eq!(bulk.routing_key, format!("bulk.{}", shard_of(tenant)));
        assert_eq!(t.work_queues().len(), 3 * WORK_SHARDS + 1);
        assert!(t.is_work_queue("herald.deliveries.again.7"));
        assert!(t.is_work_queue("herald.deliveries.bulk.0"));
        assert!(t.is_bulk_queue("herald.deliveries.bulk.0"));
        assert!(!t.is_bulk_queue("herald.deliveries.work.0"));
        let mut seen = [0usize; WORK_SHARDS];
        for n in 0..8_000u128 {
            seen[shard_of(uuid::Uuid::from_u128(n * 0x9e37_79b9_7f4a_7c15))] += 1;
        }
        assert!(seen.iter().all(|n| (800..1_200).contains(n)), "{seen:?}");
        assert!(t.is_work_queue("herald.deliveries.work.3"));
        assert!(t.is_work_queue("herald.deliveries.work"));
        assert!(!t.is_work_queue("herald.deliveries.wait.1000"));
    }

    /// Walks a wait through its hops the way the dispatcher does.
    fn hops(mut ms: u64) -> (Vec<u64>, u64) {
        let mut legs = Vec::new();
        while let (Some(rung), rest) = delay_hop(ms) {
            legs.push(rung);
            ms = rest;
        }
        (legs, ms)
    }

    #[test]
    fn usual_tiers_are_one_hop_and_others_add_up_exactly() {
        for tier in [
            1_000, 5_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000,
        ] {
            assert_eq!(hops(tier), (vec![tier], 0));
        }
        assert_eq!(hops(300), (vec![200, 100], 0));
        assert_eq!(hops(1_350), (vec![1_000, 200, 100], 50));
        assert_eq!(hops(99), (vec![], 99));
        // The worst waits (59 min 59.999 s and the like) take 17 hops: a broker round trip
        // each, rare next to an HTTP attempt.
        let worst = (0..86_400u64)
            .map(|s| hops(s * 1_000 + 999).0.len())
            .max()
            .unwrap();
        assert!(worst <= 17, "{worst} hops");
        for ms in [7, 1_234, 59_999, 86_399_999, 123_456_789] {
            let (legs, rest) = hops(ms);
            assert_eq!(legs.iter().sum::<u64>() + rest, ms);
            assert!(rest < 100);
        }
    }

    #[test]
    fn rungs_ascend() {
        assert!(DELAY_RUNGS_MS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn every_queue_is_listed_once_with_its_kind() {
        let t = Topology::new("h", QueueType::Quorum);
        let all = t.every_queue();
        let count = |k: QueueKind| all.iter().filter(|(_, kind)| *kind == k).count();
        assert_eq!(count(QueueKind::Work), 3 * WORK_SHARDS + 1);
        assert_eq!(count(QueueKind::Delay), DELAY_RUNGS_MS.len());
        assert_eq!(count(QueueKind::Ledger), 1);
        assert_eq!(count(QueueKind::DeadLetter), 1);
        let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert_eq!(t.unprefixed(&t.shard_queue(3)), "deliveries.work.3");
        assert_eq!(t.unprefixed(&t.dead_queue()), "dead.letters");
        assert_eq!(t.unprefixed("hx.other"), "hx.other");
    }
}
