//! Exchange and queue names, and their idempotent declaration.

use std::str::FromStr;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::error::{Error, Result};
use crate::publisher::Outgoing;

/// Routing key of the work queue on the deliveries exchange.
pub const WORK_KEY: &str = "work";

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

/// Classic queues (fast, single node) or quorum queues (replicated, at-least-once
/// dead-lettering, delivery limit): the durability promise needs quorum in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    Quorum,
}

impl FromStr for QueueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!(
                "unknown queue type {other:?} (use classic or quorum)"
            )),
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
}

fn short(s: &str) -> ShortString {
    ShortString::from(s)
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

impl Topology {
    pub fn new(prefix: impl Into<String>, queue_type: QueueType) -> Self {
        Self {
            prefix: prefix.into(),
            queue_type,
            delivery_limit: 20,
        }
    }

    pub fn deliveries_exchange(&self) -> String {
        format!("{}.deliveries", self.prefix)
    }

    pub fn work_queue(&self) -> String {
        format!("{}.deliveries.work", self.prefix)
    }

    pub fn delay_queue(&self, delay_ms: u64) -> String {
        format!("{}.deliveries.delay.{delay_ms}", self.prefix)
    }

    /// The delay of a [`Self::delay_queue`] name; `None` for any other name.
    pub fn delay_of(&self, queue: &str) -> Option<u64> {
        queue
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".deliveries.delay.")?
            .parse()
            .ok()
    }

    /// A message for the work queue: a delivery task due now.
    pub fn work_message(&self, body: Vec<u8>, headers: Vec<(String, String)>) -> Outgoing {
        Outgoing {
            exchange: self.deliveries_exchange(),
            routing_key: WORK_KEY.to_owned(),
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
            .map_err(|e| Error::Topology(format!("declaring queue {name}: {e}")))
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
    pub async fn declare(&self, ch: &Channel) -> Result<()> {
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

        self.exchange(ch, &self.ledger_exchange(), ExchangeKind::Fanout)
            .await?;
        self.queue(ch, &self.ledger_queue(), self.consumed_args())
            .await?;
        self.bind(ch, &self.ledger_queue(), &self.ledger_exchange(), "")
            .await?;
        Ok(())
    }

    /// Declares the delay queue for one retry delay: messages wait `delay_ms`, then return to the
    /// work queue.
    pub async fn declare_delay(&self, ch: &Channel, delay_ms: u64) -> Result<()> {
        let mut args = self.base_args();
        args.insert(
            short("x-message-ttl"),
            AMQPValue::LongLongInt(delay_ms as i64),
        );
        args.insert(
            short("x-dead-letter-exchange"),
            long(&self.deliveries_exchange()),
        );
        args.insert(short("x-dead-letter-routing-key"), long(WORK_KEY));
        if self.queue_type == QueueType::Quorum {
            args.insert(short("x-dead-letter-strategy"), long("at-least-once"));
            args.insert(short("x-overflow"), long("reject-publish"));
        }
        self.queue(ch, &self.delay_queue(delay_ms), args).await
    }

    /// Deletes everything under the prefix (tests use it to leave no residue): every delay
    /// queue of [`DELAY_RUNGS_MS`], and `delays`, those of other delays that may exist (an
    /// installation older than the rungs declared one per retry delay).
    pub async fn delete(&self, ch: &Channel, delays: &[u64]) -> Result<()> {
        let mut queues = vec![self.work_queue(), self.ledger_queue(), self.dead_queue()];
        let mut delays: Vec<u64> = DELAY_RUNGS_MS.iter().chain(delays).copied().collect();
        delays.sort_unstable();
        delays.dedup();
        queues.extend(delays.iter().map(|d| self.delay_queue(*d)));
        for q in queues {
            ch.queue_delete(short(&q), QueueDeleteOptions::default())
                .await?;
        }
        for x in [
            self.deliveries_exchange(),
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
    fn delay_queue_names_read_back() {
        let t = Topology::new("herald", QueueType::Quorum);
        assert_eq!(t.delay_of(&t.delay_queue(60_000)), Some(60_000));
        assert_eq!(t.delay_of(&t.work_queue()), None);
        assert_eq!(t.delay_of("other.deliveries.delay.5"), None);
        assert_eq!(t.delay_of("herald.deliveries.delay.x"), None);
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
}
