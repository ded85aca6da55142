//! Which publish call each broker confirm settles: the bookkeeping of a confirm-mode
//! connection, kept apart from its IO so every rule here is tested without a broker.
//!
//! Per channel, messages get delivery tags 1, 2, 3… in the order they are written. The broker
//! answers each with `basic.ack` or `basic.nack`, singly or "multiple" (every tag up to this
//! one). A call is settled when its last message is; it fails if any of its messages was
//! nacked or returned.
//!
//! Returns carry no tag. RabbitMQ sends a mandatory message's `basic.return` before the ack
//! that confirms it, so a return is matched, at the next ack or nack on its channel, to a
//! message that ack settles with the same exchange and routing key. When the count does not
//! come out even (a queue declared or deleted while messages to it were in flight), every
//! settled message with that route counts as returned: a spurious failure costs a duplicate
//! publish, a missed one would lose a message.

use std::collections::{HashMap, VecDeque};

use crate::error::Error;

/// The exchange and routing key of one message.
pub type Route = (String, String);

/// Messages published on one channel, oldest first.
#[derive(Default)]
struct Channel {
    next_tag: u64,
    in_flight: VecDeque<InFlight>,
    /// Routes of returns not yet matched to a message.
    returns: Vec<Route>,
}

struct InFlight {
    tag: u64,
    batch: u64,
    /// Index of the message in its batch's routes.
    index: usize,
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

    /// A `basic.return` on `channel`; it is matched at the next confirm.
    pub fn returned(&mut self, channel: usize, exchange: String, routing_key: String) {
        self.channels[channel].returns.push((exchange, routing_key));
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
        let returns = std::mem::take(&mut ch.returns);
        let returned = self.match_returns(&settled, returns, channel);
        for (m, returned) in settled.iter().zip(returned) {
            let Some(batch) = self.batches.get_mut(&m.batch) else {
                continue;
            };
            if batch.error.is_none() {
                if confirm == Confirm::Nack {
                    batch.error = Some(Error::Nacked);
                } else if returned {
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

    /// Which settled messages the pending returns stand for (see the module doc); returns
    /// that match none of them wait for the next confirm.
    fn match_returns(
        &mut self,
        settled: &[InFlight],
        returns: Vec<Route>,
        channel: usize,
    ) -> Vec<bool> {
        let mut marked = vec![false; settled.len()];
        if returns.is_empty() {
            return marked;
        }
        let route = |m: &InFlight| self.batches.get(&m.batch).map(|b| &b.routes[m.index]);
        let mut counts: HashMap<&Route, usize> = HashMap::new();
        for r in &returns {
            *counts.entry(r).or_default() += 1;
        }
        let mut unmatched = Vec::new();
        for (r, &wanted) in &counts {
            let candidates: Vec<usize> = (0..settled.len())
                .filter(|&i| route(&settled[i]) == Some(*r))
                .collect();
            for &i in &candidates {
                marked[i] = true;
            }
            for _ in candidates.len()..wanted {
                unmatched.push((*r).clone());
            }
        }
        self.channels[channel].returns = unmatched;
        marked
    }

    /// Ends every call still waiting, each with an error made by `error` (the connection is
    /// gone, so no confirm will come).
    pub fn fail_all(&mut self, error: impl Fn() -> Error) -> Vec<(W, Result<(), Error>)> {
        for ch in &mut self.channels {
            ch.in_flight.clear();
            ch.returns.clear();
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
        t.returned(0, "x".into(), "delay.5000".into());
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
        t.returned(0, "x".into(), "gone".into());
        t.returned(0, "x".into(), "gone".into());
        t.confirm(0, 5, true, Confirm::Ack, &mut done).unwrap();
        assert_eq!(
            outcomes(&mut done),
            [(1, "unroutable"), (2, "unroutable"), (3, "ok")]
        );
    }

    #[test]
    fn an_uneven_match_fails_every_message_of_the_route() {
        // One return, two settled messages with its route (the queue appeared or vanished
        // meanwhile): both calls fail rather than risk acking the returned one.
        let mut t = Tracker::new(1);
        let mut done = Vec::new();
        t.register(0, routes(&["q"]), 1);
        t.register(0, routes(&["q"]), 2);
        t.register(0, routes(&["other"]), 3);
        t.returned(0, "x".into(), "q".into());
        t.confirm(0, 3, true, Confirm::Ack, &mut done).unwrap();
        assert_eq!(
            outcomes(&mut done),
            [(1, "unroutable"), (2, "unroutable"), (3, "ok")]
        );
    }

    #[test]
    fn a_return_whose_message_is_not_yet_confirmed_waits_for_it() {
        let mut t = Tracker::new(1);
        let mut done = Vec::new();
        t.register(0, routes(&["a"]), 1);
        t.register(0, routes(&["b"]), 2);
        t.returned(0, "x".into(), "b".into());
        t.confirm(0, 1, false, Confirm::Ack, &mut done).unwrap();
        assert_eq!(outcomes(&mut done), [(1, "ok")]);
        t.confirm(0, 2, false, Confirm::Ack, &mut done).unwrap();
        assert_eq!(outcomes(&mut done), [(2, "unroutable")]);
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
