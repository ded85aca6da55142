//! Coalesced consumer acknowledgements.
//!
//! Every `basic.ack` is a frame the broker parses and, for a quorum queue, a settle command that
//! goes through the queue's Raft log. Acking one delivery at a time made acks a large share of
//! the broker's CPU: the one-hop baseline consumer went from 12,700 to 16,500 msg/s on the same
//! machine when it acked every 32 messages with `multiple` instead of each one.
//!
//! A `multiple` ack of tag T settles *every* unacknowledged delivery up to T on the channel, so
//! it is only ever sent for a T below the oldest delivery still being worked on; completed
//! deliveries above such a straggler wait (at most `max_wait`, or until `max_waiting` of them
//! pile up) and are then acked one by one, so one slow endpoint cannot hold the rest hostage.
//! There is no timer on the common path: one task sends the frames, and acks that arrive while
//! it is sending one go out together in the next. Nacks and rejects are never delayed and
//! leave in order with the acks (they share the task), so a multiple ack can never swallow a
//! delivery meant to be handed back.
//!
//! Durability is unchanged: a caller acks only what it finished; a crash before the frame
//! leaves the delivery unacked and the broker hands it out again, exactly as before (the window
//! is the time one frame takes to be written, plus `max_wait` for deliveries behind a straggler).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::consumer::Settler;

/// When completed deliveries behind a straggler are acked one by one.
#[derive(Clone, Copy, Debug)]
pub struct AckPolicy {
    /// Longest a completed delivery waits for the ones before it.
    pub max_wait: Duration,
    /// Most completed deliveries waiting behind a straggler.
    pub max_waiting: usize,
}

impl Default for AckPolicy {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(50),
            max_waiting: 64,
        }
    }
}

enum Command {
    Received(u64),
    Ack(u64),
    Nack(u64),
    Reject(u64),
    Close(oneshot::Sender<()>),
}

/// Settles the deliveries of one consumer channel; cheap to clone. Every delivery must be
/// announced with [`Acks::received`] before it is settled.
#[derive(Clone)]
pub struct Acks {
    tx: mpsc::UnboundedSender<Command>,
}

impl Acks {
    /// Starts the task that sends the consumer's acknowledgements to its channel.
    pub fn start(settler: Settler, policy: AckPolicy) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Window::new(settler, policy).run(rx));
        Self { tx }
    }

    /// A delivery was handed to this consumer and is being worked on.
    pub fn received(&self, tag: u64) {
        let _ = self.tx.send(Command::Received(tag));
    }

    /// The delivery is done: acknowledge it (coalesced with others).
    pub fn ack(&self, tag: u64) {
        let _ = self.tx.send(Command::Ack(tag));
    }

    /// Hand the delivery back to the queue (sent at once).
    pub fn requeue(&self, tag: u64) {
        let _ = self.tx.send(Command::Nack(tag));
    }

    /// Refuse the delivery for good: it is dead-lettered (sent at once).
    pub fn reject(&self, tag: u64) {
        let _ = self.tx.send(Command::Reject(tag));
    }

    /// Sends every acknowledgement still held and stops; deliveries not settled stay unacked
    /// (the broker hands them out again when the channel closes).
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.tx.send(Command::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// The unsettled deliveries of the channel and what to send next. Pure bookkeeping (no I/O),
/// so the rules are tested on their own.
///
/// Kept so that every step costs O(log n) in the deliveries open, not a scan of the window
/// (the dispatcher holds hundreds unacked and plans after every burst of completions):
/// deliveries still being worked on and completed ones live in separate maps, and completed
/// ones also sit in completion order, so the oldest waiting one is at the front.
#[derive(Debug, Default)]
struct Ledger {
    working: BTreeSet<u64>,
    /// Completed, not yet acked: tag → when it completed.
    done: BTreeMap<u64, Instant>,
    /// Completed tags in completion order (instants never decrease); entries already acked or
    /// settled are skipped lazily.
    by_time: VecDeque<(Instant, u64)>,
}

/// Frames to send, in this order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// `multiple` ack up to and including this tag.
    up_to: Option<u64>,
    /// Single acks.
    single: Vec<u64>,
    /// When the next timed flush is due, if deliveries are waiting behind a straggler.
    next_due: Option<Instant>,
}

impl Ledger {
    fn received(&mut self, tag: u64) {
        self.working.insert(tag);
    }

    fn done(&mut self, tag: u64, now: Instant) {
        if self.working.remove(&tag) {
            self.done.insert(tag, now);
            self.by_time.push_back((now, tag));
        }
    }

    /// Forgets a delivery settled otherwise (nack, reject); true if it was open.
    fn settle(&mut self, tag: u64) -> bool {
        self.working.remove(&tag) || self.done.remove(&tag).is_some()
    }

    /// Deliveries not yet settled.
    #[cfg(test)]
    fn open(&self) -> Vec<u64> {
        let mut open: Vec<u64> = self
            .working
            .iter()
            .chain(self.done.keys())
            .copied()
            .collect();
        open.sort_unstable();
        open
    }

    /// When the oldest delivery still waiting completed (dropping stale order entries).
    fn oldest_waiting(&mut self) -> Option<Instant> {
        while let Some(&(at, tag)) = self.by_time.front() {
            if self.done.get(&tag) == Some(&at) {
                return Some(at);
            }
            self.by_time.pop_front();
        }
        None
    }

    /// What to send now: the completed run below the oldest working delivery as one multiple
    /// ack, plus single acks for completed deliveries above it once they waited long enough
    /// or too many wait (`flush_all` sends them regardless). Removes what it plans.
    fn plan(&mut self, now: Instant, policy: AckPolicy, flush_all: bool) -> Plan {
        let mut plan = Plan::default();
        // Everything completed below the oldest working delivery is one run.
        let above = match self.working.first() {
            Some(&straggler) => self.done.split_off(&straggler),
            None => BTreeMap::new(),
        };
        let run = std::mem::replace(&mut self.done, above);
        plan.up_to = run.last_key_value().map(|(t, _)| *t);
        let oldest = self.oldest_waiting();
        let due = oldest.is_some_and(|at| at + policy.max_wait <= now);
        if flush_all || due || self.done.len() >= policy.max_waiting {
            plan.single = std::mem::take(&mut self.done).into_keys().collect();
            self.by_time.clear();
        } else {
            plan.next_due = oldest.map(|at| at + policy.max_wait);
        }
        plan
    }
}

struct Window {
    settler: Settler,
    policy: AckPolicy,
    ledger: Ledger,
    /// The channel failed: nothing more can be settled on it (the broker requeues it all).
    broken: bool,
}

impl Window {
    fn new(settler: Settler, policy: AckPolicy) -> Self {
        Self {
            settler,
            policy,
            ledger: Ledger::default(),
            broken: false,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut due: Option<Instant> = None;
        loop {
            let command = tokio::select! {
                c = rx.recv() => c,
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    due = self.flush(false).await;
                    continue;
                }
            };
            let Some(first) = command else {
                break;
            };
            let mut closing = None;
            let mut next = Some(first);
            // Take everything already queued: acks that came in while the last frame was
            // being sent go out together.
            while let Some(command) = next.take() {
                match command {
                    Command::Received(tag) => self.ledger.received(tag),
                    Command::Ack(tag) => self.ledger.done(tag, Instant::now()),
                    Command::Nack(tag) => {
                        if self.ledger.settle(tag) {
                            let r = self.settler.requeue(tag).await;
                            self.check(r, "nack");
                        }
                    }
                    Command::Reject(tag) => {
                        if self.ledger.settle(tag) {
                            let r = self.settler.reject(tag).await;
                            self.check(r, "reject");
                        }
                    }
                    Command::Close(done) => closing = Some(done),
                }
                if closing.is_none() {
                    next = rx.try_recv().ok();
                }
            }
            due = self.flush(closing.is_some()).await;
            if let Some(done) = closing {
                let _ = done.send(());
                return;
            }
        }
        self.flush(true).await;
    }

    /// Sends what the ledger says is due; returns when the next timed flush is.
    async fn flush(&mut self, all: bool) -> Option<Instant> {
        let plan = self.ledger.plan(Instant::now(), self.policy, all);
        if let Some(tag) = plan.up_to {
            let r = self.settler.ack(tag, true).await;
            self.check(r, "ack");
            metrics::counter!("herald_consumer_ack_frames_total").increment(1);
        }
        for tag in plan.single {
            let r = self.settler.ack(tag, false).await;
            self.check(r, "ack");
            metrics::counter!("herald_consumer_ack_frames_total").increment(1);
        }
        plan.next_due
    }

    fn check(&mut self, result: crate::Result<()>, what: &str) {
        if let Err(e) = result {
            if !self.broken {
                tracing::warn!(error = %e, frame = what, "cannot settle deliveries, the broker will hand them out again");
            }
            self.broken = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AckPolicy {
        AckPolicy {
            max_wait: Duration::from_millis(50),
            max_waiting: 3,
        }
    }

    #[test]
    fn a_completed_run_is_one_multiple_ack() {
        let now = Instant::now();
        let mut l = Ledger::default();
        for t in 1..=5 {
            l.received(t);
        }
        for t in [3, 1, 2] {
            l.done(t, now);
        }
        let plan = l.plan(now, policy(), false);
        assert_eq!(plan.up_to, Some(3));
        assert!(plan.single.is_empty());
        assert_eq!(plan.next_due, None);
        assert_eq!(l.open(), vec![4, 5]);
    }

    #[test]
    fn a_straggler_is_never_covered_by_a_multiple_ack() {
        let now = Instant::now();
        let mut l = Ledger::default();
        for t in 1..=4 {
            l.received(t);
        }
        l.done(2, now);
        l.done(4, now);
        let plan = l.plan(now, policy(), false);
        assert_eq!(plan.up_to, None, "tag 1 is still being worked on");
        assert!(plan.single.is_empty());
        assert_eq!(plan.next_due, Some(now + Duration::from_millis(50)));
        // Once they waited long enough they go out one by one; 1 and 3 stay open.
        let later = now + Duration::from_millis(50);
        let plan = l.plan(later, policy(), false);
        assert_eq!(plan.single, vec![2, 4]);
        assert_eq!(l.open(), vec![1, 3]);
    }

    #[test]
    fn the_next_flush_follows_the_oldest_delivery_still_waiting() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Ledger::default();
        for t in 1..=4 {
            l.received(t);
        }
        l.done(2, t0);
        l.done(4, t0 + ms(10));
        assert_eq!(
            l.plan(t0 + ms(10), policy(), false).next_due,
            Some(t0 + ms(50))
        );
        // The straggler finishes: 1 and 2 go as one run; 4 (behind 3) waits from its own time.
        l.done(1, t0 + ms(20));
        let plan = l.plan(t0 + ms(20), policy(), false);
        assert_eq!(plan.up_to, Some(2));
        assert!(plan.single.is_empty());
        assert_eq!(plan.next_due, Some(t0 + ms(60)));
        assert_eq!(l.open(), vec![3, 4]);
        // A delivery settled otherwise no longer counts as waiting.
        assert!(l.settle(4));
        assert_eq!(l.plan(t0 + ms(20), policy(), false), Plan::default());
        // Acks for deliveries never received, or acked twice, change nothing.
        l.done(4, t0 + ms(30));
        l.done(9, t0 + ms(30));
        assert_eq!(l.open(), vec![3]);
    }

    #[test]
    fn too_many_waiting_are_acked_at_once() {
        let now = Instant::now();
        let mut l = Ledger::default();
        for t in 1..=5 {
            l.received(t);
        }
        for t in 2..=4 {
            l.done(t, now);
        }
        let plan = l.plan(now, policy(), false);
        assert_eq!(plan.single, vec![2, 3, 4]);
        assert_eq!(plan.up_to, None);
    }

    #[test]
    fn settled_deliveries_do_not_hold_the_run() {
        let now = Instant::now();
        let mut l = Ledger::default();
        for t in 1..=3 {
            l.received(t);
        }
        assert!(l.settle(1));
        assert!(!l.settle(1), "settled once");
        l.done(2, now);
        l.done(3, now);
        assert_eq!(l.plan(now, policy(), false).up_to, Some(3));
        assert!(l.open().is_empty());
        // An ack for a delivery the ledger never saw (an earlier channel) is ignored.
        l.done(9, now);
        assert_eq!(l.plan(now, policy(), true), Plan::default());
    }

    #[test]
    fn closing_acks_everything_completed_and_nothing_else() {
        let now = Instant::now();
        let mut l = Ledger::default();
        for t in 1..=3 {
            l.received(t);
        }
        l.done(3, now);
        let plan = l.plan(now, policy(), true);
        assert_eq!(plan.single, vec![3]);
        assert_eq!(plan.up_to, None);
        assert_eq!(l.open(), vec![1, 2]);
    }
}
