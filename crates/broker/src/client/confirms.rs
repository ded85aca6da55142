//! Which publish call each broker confirm settles: the bookkeeping of a confirm-mode
//! connection, kept apart from its IO so every rule here is tested without a broker.
//!
//! Per channel, messages get delivery tags 1, 2, 3… in the order they are written. The broker
//! answers each with `basic.ack` or `basic.nack`, singly or "multiple" (every tag up to this
//! one). A call is settled when its last message is; it fails if any of its messages was
//! nacked or returned.
//!
//! Returns carry no tag. RabbitMQ sends a mandatory message's `basic.return` before the ack
//! that confirms it, so when a return arrives its message is still in flight: every message in
//! flight on that channel with the same exchange and routing key is marked returned, and its
//! call fails when it is confirmed. Usually that is exactly the returned ones (a missing delay
//! queue returns all its messages); when a queue appears or vanishes while messages to it are
//! in flight, routable ones may be marked too. A spurious failure costs a duplicate publish, a
//! missed one would lose a message, so this errs on that side whatever the timing of the acks.

use std::collections::{HashMap, VecDeque};

use crate::error::Error;

/// The exchange and routing key of one message.
pub type Route = (String, String);

/// Messages published on one channel, oldest first.
#[derive(Default)]
struct Channel {
    next_tag: u64,
    in_flight: VecDeque<InFlight>,
}

struct InFlight {
    tag: u64,
    batch: u64,
    /// Index of the message in its batch's routes.
    index: usize,
    /// A return with this message's route arrived while it was in flight.
    returned: bool,
}

/// One publish call: its waiter, its messages' routes and how many are still unconfirmed.
struct Batch<W> {
    waiter: W,
    routes: Vec<Route>,
    remaining: usize,
    error: Option<Error>,
}

/// The confirm state of every channel of a connection. `W` is what waits for a call (a
/// oneshot sender in the connection; anything in tests).
pub struct Tracker<W> {
    channels: Vec<Channel>,
    batches: HashMap<u64, Batch<W>>,
    next_batch: u64,
}

/// A broker confirm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    Ack,
    Nack,
}

impl<W> Tracker<W> {
    pub fn new(channels: usize) -> Self {
        Self {
            channels: (0..channels)
                .map(|_| Channel {
                    next_tag: 1,
                    ..Channel::default()
                })
                .collect(),
            batches: HashMap::new(),
            next_batch: 0,
        }
    }

    /// Messages awaiting their confirm, over all channels.
    pub fn in_flight(&self) -> usize {
        self.channels.iter().map(|c| c.in_flight.len()).sum()
    }

    /// Records messages written on `channel` (0-based), in order; they take its next tags.
    /// A call with no messages is settled at once.
    pub fn register(&mut self, channel: usize, routes: Vec<Route>, waiter: W) -> Option<W> {
        if routes.is_empty() {
            return Some(waiter);
        }
        let id = self.next_batch;
        self.next_batch += 1;
        let ch = &mut self.channels[channel];
        for index in 0..routes.len() {
            ch.in_flight.push_back(InFlight {
                tag: ch.next_tag,
                batch: id,
                index,
                returned: false,
            });
            ch.next_tag += 1;
        }
        self.batches.insert(
            id,
            Batch {
                waiter,
                remaining: routes.len(),
                routes,
                error: None,
            },
        );
        None
    }

    /// A `basic.return` on `channel`: every message in flight there with its route is marked
    /// (see the module doc).
    pub fn returned(&mut self, channel: usize, exchange: &str, routing_key: &str) {
        let batches = &self.batches;
        for m in &mut self.channels[channel].in_flight {
            let Some(batch) = batches.get(&m.batch) else {
                continue;
            };
            let (e, k) = &batch.routes[m.index];
            if e == exchange && k == routing_key {
                m.returned = true;
            }
        }
    }

    /// A confirm on `channel`; the calls it completes go to `done` with their outcome. An
    /// error means the broker confirmed a tag never published, a broken protocol.
    pub fn confirm(
        &mut self,
        channel: usize,
        tag: u64,
        multiple: bool,
        confirm: Confirm,
        done: &mut Vec<(W, Result<(), Error>)>,
    ) -> Result<(), String> {
        let ch = &mut self.channels[channel];
        if tag == 0 && !multiple || tag >= ch.next_tag {
            return Err(format!(
                "the broker confirmed delivery tag {tag} on a channel whose last tag is {}",
                ch.next_tag - 1
            ));
        }
        let settled: Vec<InFlight> = if multiple {
            let n = ch.in_flight.partition_point(|m| m.tag <= tag);
            ch.in_flight.drain(..n).collect()
        } else {
            match ch.in_flight.binary_search_by_key(&tag, |m| m.tag) {
                Ok(i) => ch.in_flight.remove(i).into_iter().collect(),
                Err(_) => {
                    return Err(format!(
                        "the broker confirmed delivery tag {tag} twice or out of turn"
                    ));
                }
            }
        };
        for m in &settled {
            let Some(batch) = self.batches.get_mut(&m.batch) else {
                continue;
            };
            if batch.error.is_none() {
                if confirm == Confirm::Nack {
                    batch.error = Some(Error::Nacked);
                } else if m.returned {
                    let (exchange, routing_key) = batch.routes[m.index].clone();
                    batch.error = Some(Error::Unroutable {
                        exchange,
                        routing_key,
                    });
                }
            }
            batch.remaining -= 1;
            if batch.remaining == 0 {
                let b = self.batches.remove(&m.batch).expect("batch just seen");
                done.push((b.waiter, b.error.map_or(Ok(()), Err)));
            }
        }
        Ok(())
    }

    /// Ends every call still waiting, each with an error made by `error` (the connection is
    /// gone, so no confirm will come).
    pub fn fail_all(&mut self, error: impl Fn() -> Error) -> Vec<(W, Result<(), Error>)> {
        for ch in &mut self.channels {
            ch.in_flight.clear();
        }
        self.batches
            .drain()
            .map(|(_, b)| (b.waiter, Err(error())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(q: &str) -> Route {
        ("x".to_owned(), q.to_owned())
    }

    fn routes(qs: &[&str]) -> Vec<Route> {
        qs.iter().map(|q| route(q)).collect()
    }

    /// Outcomes as (waiter, "ok" | error kind), sorted by waiter.
    fn outcomes(done: &mut Vec<(u32, Result<(), Error>)>) -> Vec<(u32, &'static str)> {
        let mut out: Vec<_> = done
            .drain(..)
            .map(|(w, r)| {
                let kind = match r {
                    Ok(()) => "ok",
                    Err(Error::Nacked) => "nacked",
                    Err(Error::Unroutable { .. }) => "unroutable",
                    Err(_) => "other",
                };
                (w, kind)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_call_is_settled_by_its_last_confirm_single_or_multiple() {
        let mut t = Tracker::new(1);
        let mut done = Vec::new();
        assert!(t.register(0, routes(&["a", "a"]), 1).is_none()); // tags 1, 2
        assert!(t.register(0, routes(&["a"]), 2).is_none()); // tag 3
        assert!(t.register(0, routes(&["a", "a"]), 3).is_none()); // tags 4, 5
        t.confirm(0, 3, false, Confirm::Ack, &mut done).unwrap();
        assert_eq!(outcomes(&mut done), [(2, "ok")]);
        t.confirm(0, 1, false, Confirm::Ack, &mut done).unwrap();
        assert!(done.is_empty(), "call 1 still has tag 2 out");
        t.confirm(0, 4, true, Confirm::Ack, &mut done).unwrap();
        assert_eq!(outcomes(&mut done), [(1, "ok")]);
        assert_eq!(t.in_flight(), 1);
        t.confirm(0, 5, true, Confirm::Ack, &mut done).unwrap();
        assert_eq!(outcomes(&mut done), [(3, "ok")]);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.register(0, Vec::new(), 9), Some(9), "nothing to wait for");
    }

    #[test]
    fn a_nack_fails_its_call_and_only_its_call() {
        let mut t = Tracker::new(2);
        let mut done = Vec::new();
        t.register(0, routes(&["a", "a"]), 1);
        t.register(1, routes(&["a"]), 2); // tag 1 of channel 2
        t.confirm(0, 1, false, Confirm::Nack, &mut done).unwrap();
        t.confirm(1, 1, false, Confirm::Ack, &mut done).unwrap();
        t.confirm(0, 2, false, Confirm::Ack, &mut done).unwrap();
        assert_eq!(outcomes(&mut done), [(1, "nacked"), (2, "ok")]);
    }

    #[test]
    fn returns_fail_the_call_of_the_message_with_their_route() {
        let mut t = Tracker::new(1);
        let mut done = Vec::new();
        t.register(0, routes(&["work"]), 1); // tag 1
        t.register(0, routes(&["delay.5000", "work"]), 2); // tags 2, 3
        t.register(0, routes(&["work"]), 3); // tag 4
        // The unroutable tag 2 is returned, then acked alone.
        t.returned(0, "x", "delay.5000");
        t.confirm(0, 2, false, Confirm::Ack, &mut done).unwrap();
        t.confirm(0, 4, true, Confirm::Ack, &mut done).unwrap();
        assert_eq!(
            outcomes(&mut done),
            [(1, "ok"), (2, "unroutable"), (3, "ok")]
        );
    }

    #[test]
    fn many_returns_under_one_multiple_ack_mark_exactly_their_messages() {
        let mut t = Tracker::new(1);
        let mut done = Vec::new();
        t.register(0, routes(&["work", "gone", "work"]), 1);
        t.register(0, routes(&["gone"]), 2);
        t.register(0, routes(&["work"]), 3);
        t.returned(0, "x", "gone");
        t.returned(0, "x", "gone");
        t.confirm(0, 5, true, Confirm::Ack, &mut done).unwrap();
        assert_eq!(
            outcomes(&mut done),
            [(1, "unroutable"), (2, "unroutable"), (3, "ok")]
        );
    }

    #[test]
    fn a_return_marks_every_message_in_flight_with_its_route() {
        // One return, two messages in flight with its route (the queue appeared or vanished
        // meanwhile): both calls fail rather than risk acking the returned one.
        let mut t = Tracker::new(1);
        let mut done = Vec::new();
        t.register(0, routes(&["q"]), 1);
        t.register(0, routes(&["q"]), 2);
        t.register(0, routes(&["other"]), 3);
        t.returned(0, "x", "q");
        t.confirm(0, 3, true, Confirm::Ack, &mut done).unwrap();
        assert_eq!(
            outcomes(&mut done),
            [(1, "unroutable"), (2, "unroutable"), (3, "ok")]
        );
    }

    #[test]
    fn a_return_is_kept_whatever_confirm_comes_first() {
        // The returned message's ack may come after an ack of another message alone.
        let mut t = Tracker::new(1);
        let mut done = Vec::new();
        t.register(0, routes(&["a"]), 1);
        t.register(0, routes(&["b"]), 2);
        t.returned(0, "x", "b");
        t.confirm(0, 1, false, Confirm::Ack, &mut done).unwrap();
        assert_eq!(outcomes(&mut done), [(1, "ok")]);
        t.confirm(0, 2, false, Confirm::Ack, &mut done).unwrap();
        assert_eq!(outcomes(&mut done), [(2, "unroutable")]);
    }

    #[test]
    fn a_returned_message_never_succeeds_even_when_another_ack_comes_between() {
        // M (tag 1) was routed, then its queue vanished and N (tag 2, same route) was
        // returned; the broker acks M alone after N's return, then N.
        let mut t = Tracker::new(1);
        let mut done = Vec::new();
        t.register(0, routes(&["q"]), 1);
        t.register(0, routes(&["q"]), 2);
        t.returned(0, "x", "q");
        t.confirm(0, 1, false, Confirm::Ack, &mut done).unwrap();
        t.confirm(0, 2, false, Confirm::Ack, &mut done).unwrap();
        let outcomes = outcomes(&mut done);
        assert_eq!(
            outcomes[1],
            (2, "unroutable"),
            "N must not be reported delivered"
        );
    }

    #[test]
    fn confirms_of_tags_never_published_or_twice_are_protocol_errors() {
        let mut t = Tracker::new(1);
        let mut done = Vec::new();
        t.register(0, routes(&["a", "a"]), 1);
        assert!(t.confirm(0, 3, false, Confirm::Ack, &mut done).is_err());
        assert!(t.confirm(0, 3, true, Confirm::Ack, &mut done).is_err());
        assert!(t.confirm(0, 0, false, Confirm::Ack, &mut done).is_err());
        t.confirm(0, 1, false, Confirm::Ack, &mut done).unwrap();
        assert!(t.confirm(0, 1, false, Confirm::Ack, &mut done).is_err());
        // A multiple confirm over tags already settled is allowed.
        t.confirm(0, 1, true, Confirm::Ack, &mut done).unwrap();
        assert!(done.is_empty());
    }

    #[test]
    fn failing_all_ends_every_waiting_call_once() {
        let mut t = Tracker::new(2);
        let mut done = Vec::new();
        t.register(0, routes(&["a", "a"]), 1);
        t.register(1, routes(&["a"]), 2);
        t.confirm(0, 1, false, Confirm::Ack, &mut done).unwrap();
        let mut failed = t.fail_all(|| Error::Unavailable("gone".into()));
        assert_eq!(outcomes(&mut failed), [(1, "other"), (2, "other")]);
        assert_eq!(t.in_flight(), 0);
        assert!(t.fail_all(|| Error::Nacked).is_empty());
    }
}
