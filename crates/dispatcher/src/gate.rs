//! Per-endpoint and per-tenant in-flight caps: why one slow endpoint cannot hold up anyone else.
//!
//! A global pool of POST slots is captured by whichever endpoint is slowest: with a 20 s timeout
//! and a backlog, every slot (and the whole prefetch window) ends up waiting on that endpoint.
//! So, in each dispatcher:
//! - an endpoint holds at most `cap` POSTs at once. The cap starts at the endpoint's
//!   `max_in_flight` (or `HERALD_ENDPOINT_MAX_IN_FLIGHT`), halves on every timeout, never below
//!   1 (one probe at a time: a circuit that stays half-open), drops by a quarter on every fast
//!   failure (5xx, 429, connection error) but not below a quarter of the full cap (a fast
//!   failure frees its slot at once), and grows back by `1/cap` per success (AIMD);
//! - a tenant holds at most `HERALD_TENANT_MAX_IN_FLIGHT` POSTs at once, whatever the number
//!   of its endpoints;
//! - a task that finds its endpoint (or tenant) at its cap waits here only while that is likely
//!   to be short (at most `HERALD_PARK_AFTER`, judged from the endpoint's latency and the tasks
//!   ahead of it); otherwise it is *parked*: published to a delay queue and acked, so it holds
//!   neither a POST slot nor a place in the prefetch window. Parking is not an attempt: no
//!   record, no status change. A park lasts about as long as the endpoint needs to take the
//!   tasks ahead of it (those waiting here and those parked and not back yet), at most
//!   `HERALD_PARK_MAX`; tasks whose turn is further off are spread over the longer delay
//!   queues ([`spread_rung`]) so that a backlog parked in one burst does not come back in one.
//!
//! The caps are per dispatcher, not global: a global cap would cost a Redis round trip per
//! delivery and leak leases when a dispatcher is killed, while per-dispatcher caps need no
//! coordination and an endpoint's total is at most `cap × dispatchers` (stated in the README).
//!
//! Throttled endpoints are announced through [`herald_redis::throttle_notes`] notes (see
//! [`NoteSink`]) so `GetEndpoint` can tell a tenant why its deliveries are slow.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use herald_redis::throttle_notes::{Note, NoteSink, Reason};

use crate::pace::Pace;
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

/// Shortest park: a parked task costs two broker messages, so it never comes back sooner.
pub const PARK_MIN: Duration = Duration::from_secs(1);

/// Idle lanes are forgotten after this long (a throttled one keeps its state that long too).
const IDLE_FORGET: Duration = Duration::from_secs(600);

/// Gate settings (see the README's configuration table).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Default cap of an endpoint with no `max_in_flight` of its own.
    pub endpoint_max: u32,
    /// Cap of a tenant, all its endpoints together.
    pub tenant_max: u32,
    /// Longest a task waits in the dispatcher for room before it is parked.
    pub park_after: Duration,
    /// Longest park.
    pub park_max: Duration,
    /// Attempts a second at an endpoint that keeps failing fast, all dispatchers together
    /// (0: not paced); see [`crate::pace`].
    pub failing_rate: u32,
}

/// What a task may do now.
pub enum Admission {
    /// POST now; finish the permit with the attempt's outcome.
    Go(Permit),
    /// No room soon enough: park the task this long (not an attempt).
    Park(Duration, ParkReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParkReason {
    EndpointCap,
    TenantCap,
    /// The endpoint keeps failing and the task's turn is further off ([`crate::pace`]).
    FailingPace,
}

impl ParkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::EndpointCap => "endpoint_cap",
            ParkReason::TenantCap => "tenant_cap",
            ParkReason::FailingPace => "failing_pace",
        }
    }
}

/// How an attempt went, for the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered (2xx, or a 4xx other than 429): it is alive and keeping up.
    Answered,
    /// No answer within the endpoint's timeout.
    TimedOut,
    /// 5xx, 429 or a connection error.
    Failed,
}

fn rungs_ms() -> impl DoubleEndedIterator<Item = u64> {
    herald_broker::DELAY_RUNGS_MS.iter().copied()
}

/// The shortest delay queue at least `wait` long (and at least [`PARK_MIN`]; the longest
/// when none is that long): a park is one hop.
pub(crate) fn rung_at_least(wait: Duration) -> Duration {
    let ms = (wait.as_millis().min(u128::from(u64::MAX)) as u64).max(PARK_MIN.as_millis() as u64);
    let longest = rungs_ms().next_back().unwrap_or(ms);
    Duration::from_millis(rungs_ms().find(|r| *r >= ms).unwrap_or(longest))
}

/// The longest delay queue at most `wait` long (at least [`PARK_MIN`]).
fn rung_at_most(wait: Duration) -> Duration {
    let ms = wait.as_millis().min(u128::from(u64::MAX)) as u64;
    Duration::from_millis(herald_broker::delay_hop(ms).0.unwrap_or(0)).max(PARK_MIN)
}

/// A delay queue between `lo` and `hi` (at least [`PARK_MIN`]), chosen with a chance
/// proportional to its length (`u` uniform in [0, 1)): the park of a task whose turn is
/// further off than the longest park.
///
/// Such tasks (a backlog meeting a dark endpoint, arriving within seconds) would come back
/// together if they all took the longest park, and again a minute later, forever: a burst of
/// re-parking each minute that saturates the dispatcher and delays everyone. Spread this way,
/// each rung returns its share at the same rate per second, so the returns even out within a
/// few rounds (at a mean of ~70 % of `hi` with the default rungs). A park is always one hop.
fn spread_rung(lo: Duration, hi: Duration, u: f64) -> Duration {
    let lo = (lo.as_millis() as u64).max(PARK_MIN.as_millis() as u64);
    let hi = hi.as_millis().min(u128::from(u64::MAX)) as u64;
    let rungs: Vec<u64> = rungs_ms().filter(|r| (lo..=hi).contains(r)).collect();
    let total: u64 = rungs.iter().sum();
    let mut pick = (u.clamp(0.0, 1.0) * total as f64) as u64;
    for r in &rungs {
        if pick < *r {
            return Duration::from_millis(*r);
        }
        pick -= r;
    }
    rungs.last().map_or_else(
        || rung_at_most(Duration::from_millis(hi)),
        |r| Duration::from_millis(*r),
    )
}

/// Waits the delay queues cover in one hop (a queue's delay), then in two (the sum of two
/// delays that the ladder splits back into them, longest first), each shortest first: the
/// turns a paced task is given first, so that its park costs the broker one or two hops,
/// where a wait of any length may take several (e.g. 37.3 s: five).
fn cheap_waits() -> &'static [Duration] {
    static WAITS: std::sync::OnceLock<Vec<Duration>> = std::sync::OnceLock::new();
    WAITS.get_or_init(|| {
        let hops = |ms: u64| {
            let (mut n, mut rest) = (0, ms);
            while let (Some(_), left) = herald_broker::delay_hop(rest) {
                (n, rest) = (n + 1, left);
            }
            n
        };
        let mut two: Vec<u64> = rungs_ms()
            .flat_map(|a| rungs_ms().map(move |b| a + b))
            .filter(|ms| hops(*ms) == 2)
            .collect();
        two.sort_unstable();
        two.dedup();
        rungs_ms().chain(two).map(Duration::from_millis).collect()
    })
}

/// Gives out a turn of `pace` at least `earliest` from now (`earliest` itself first, when
/// longer than `after` and free): the cheapest for the broker ([`cheap_waits`]) longer than
/// `after` and at most twice as far as the first free turn (at least 1 s, at most `max`), else
/// the first free turn. The bound keeps a cheap turn from leaving earlier ones unused for
/// long; the fallback keeps every turn usable (turns only one or two hops reach leave gaps
/// when a backlog arrives at once: measured, half the rate).
fn give_turn(
    pace: &mut Pace,
    now: Instant,
    step: Duration,
    earliest: Duration,
    after: Duration,
    max: Duration,
) -> Duration {
    let first = pace.next_free(earliest, now, step);
    let reach = max.max(earliest).min(first.max(Duration::from_secs(1)) * 2);
    let cheap = cheap_waits()
        .iter()
        .copied()
        .filter(|w| *w > after && *w >= earliest && *w <= reach);
    let own = (earliest > after).then_some(earliest);
    pace.take_turn_at(now, step, own.into_iter().chain(cheap))
        .unwrap_or_else(|| pace.take_turn(now + earliest, now, step) - now)
}

/// What an attempt's result means for its endpoint's cap.
pub fn outcome_of(result: &Result<herald_outbound::Response, herald_outbound::Failure>) -> Outcome {
    match result {
        Ok(r) if r.status == 429 || r.status >= 500 => Outcome::Failed,
        Ok(_) => Outcome::Answered,
        Err(f) if f.timed_out() => Outcome::TimedOut,
        Err(_) => Outcome::Failed,
    }
}

/// One endpoint's state in this dispatcher.
struct Lane {
    tenant: Uuid,
    cap: f64,
    max: u32,
    in_flight: BTreeMap<u64, Instant>,
    next_id: u64,
    waiters: u32,
    notify: Arc<Notify>,
    /// Moving average of attempt latency, ms (0: none yet).
    latency_ms: f64,
    /// When the tasks this dispatcher parked for the endpoint come back (how many at each
    /// instant): the ones still out are the queue a new park joins the end of.
    parked: BTreeMap<Instant, u32>,
    throttled: Option<Note>,
    pace: Pace,
    /// Cap last announced, and when.
    noted: Option<(u32, bool, Instant)>,
    last_used: Instant,
}

impl Lane {
    fn new(tenant: Uuid, max: u32, now: Instant) -> Self {
        Lane {
            tenant,
            cap: f64::from(max),
            max,
            in_flight: BTreeMap::new(),
            next_id: 0,
            waiters: 0,
            notify: Arc::new(Notify::new()),
            latency_ms: 0.0,
            parked: BTreeMap::new(),
            throttled: None,
            pace: Pace::default(),
            noted: None,
            last_used: now,
        }
    }

    fn limit(&self) -> usize {
        (self.cap.floor() as usize).max(1)
    }

    fn full(&self) -> bool {
        self.in_flight.len() >= self.limit()
    }

    /// What one POST to this endpoint is taking, ms: the average, or longer when the oldest
    /// request in flight has been out longer (a hanging endpoint shows before any timeout).
    fn service_ms(&self, now: Instant) -> f64 {
        let oldest = self
            .in_flight
            .values()
            .next()
            .map_or(0.0, |t| now.duration_since(*t).as_secs_f64() * 1e3);
        self.latency_ms.max(oldest).max(1.0)
    }

    /// The dispatcher's guess of how long a task arriving now would wait for room.
    fn expected_wait(&self, now: Instant) -> Duration {
        let ahead = f64::from(self.waiters) + 1.0;
        Duration::from_secs_f64(ahead * self.service_ms(now) / self.cap.max(1.0) / 1e3)
    }

    /// How long to park a task: behind the tasks waiting here and those parked and not back
    /// yet, each taking one POST's share of the cap, so parked tasks come back about as fast
    /// as the endpoint takes them. Parks that are due have come back (to this dispatcher or
    /// another), so they no longer count: the estimate corrects itself.
    fn park(&mut self, now: Instant, limits: &Limits) -> Duration {
        let due: Vec<Instant> = self.parked.range(..=now).map(|(t, _)| *t).collect();
        for t in due {
            self.parked.remove(&t);
        }
        let out: u32 = self.parked.values().sum();
        let ahead = f64::from(out) + f64::from(self.waiters) + 1.0;
        let step = self.service_ms(now) / self.cap.max(1.0) / 1e3;
        let target = Duration::from_secs_f64((ahead * step).min(86_400.0));
        let max = limits.park_max.max(PARK_MIN);
        let wait = if target <= max {
            // Back when its turn comes (rounded up: a task back early only parks again).
            rung_at_least(target).min(rung_at_most(max))
        } else {
            spread_rung(max / 4, max, rand::rng().random::<f64>())
        };
        *self.parked.entry(now + wait).or_default() += 1;
        wait
    }

    fn set_max(&mut self, max: u32) {
        if max != self.max {
            // A new setting applies at once; a throttled lane stays as low as it is.
            self.cap = if self.throttled.is_some() {
                self.cap.min(f64::from(max))
            } else {
                f64::from(max)
            };
            self.max = max;
        }
    }

    /// Folds one attempt into the cap; true when the cap went down.
    fn record(&mut self, outcome: Outcome, latency: Duration) -> bool {
        self.pace.record(outcome);
        let ms = latency.as_secs_f64() * 1e3;
        self.latency_ms = if self.latency_ms == 0.0 {
            ms
        } else {
            0.8 * self.latency_ms + 0.2 * ms
        };
        let (factor, reason) = match outcome {
            Outcome::Answered => {
                self.cap = (self.cap + 1.0 / self.cap.max(1.0)).min(f64::from(self.max));
                if self.cap >= f64::from(self.max) {
                    self.throttled = None;
                }
                return false;
            }
            Outcome::TimedOut => (0.5, Reason::Timeouts),
            Outcome::Failed => (0.75, Reason::Errors),
        };
        // A fast failure holds its slot for milliseconds: below a quarter of the full cap a
        // smaller cap saves nothing, and only makes the endpoint's backlog wait (parked, at
        // two broker hops a round) for attempts its schedule makes anyway. A timeout holds its
        // slot for the whole timeout: down to one probe.
        let floor = match outcome {
            Outcome::Failed => (f64::from(self.max) / 4.0).max(1.0),
            _ => 1.0,
        };
        let before = self.cap;
        self.cap = (self.cap * factor).max(floor.min(self.cap));
        let since = self.throttled.as_ref().map_or_else(Utc::now, |n| n.since);
        self.throttled = Some(Note {
            reason,
            cap: self.limit() as u32,
            max: self.max,
            since,
            paced: None,
        });
        self.cap < before
    }
}

/// A tenant's POSTs in flight in this dispatcher.
#[derive(Default)]
struct TenantLane {
    in_flight: u32,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    endpoints: HashMap<Uuid, Lane>,
    tenants: HashMap<Uuid, TenantLane>,
}

/// The gates of one dispatcher.
#[derive(Clone)]
pub struct Gates {
    table: Arc<Mutex<Table>>,
    limits: Arc<Limits>,
    /// Dispatchers sharing a failing endpoint's pace (this one included), as last counted.
    dispatchers: Arc<AtomicU32>,
    notes: Option<NoteSink>,
}

/// Room for one POST; give it back with [`Permit::finish`] (dropping it gives the room back
/// without an outcome).
pub struct Permit {
    gates: Gates,
    endpoint: Uuid,
    id: u64,
    done: bool,
}

/// A paced endpoint's answer to a new task ([`Gates::pace_turn`]).
enum Turn {
    /// Its turn is this soon: it waits here.
    Near(Duration),
    /// Parked until its turn, this far off.
    Parked(Duration),
}

enum Step {
    Go(Permit),
    Park(Duration, ParkReason),
    Wait(Arc<Notify>),
}

impl Gates {
    pub fn new(limits: Limits, notes: Option<NoteSink>) -> Self {
        Gates {
            table: Arc::default(),
            limits: Arc::new(limits),
            dispatchers: Arc::new(AtomicU32::new(1)),
            notes,
        }
    }

    /// Room for one POST to `endpoint` (cap `max`, 0: the default) of `tenant`: at once, after
    /// a short wait, or a park. A task of an endpoint that keeps failing takes a turn first,
    /// unless it was given one already (`has_turn`). `None` when `shutdown` fired while waiting.
    pub async fn admit(
        &self,
        tenant: Uuid,
        endpoint: Uuid,
        max: u32,
        has_turn: bool,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<Admission> {
        let max = if max == 0 {
            self.limits.endpoint_max
        } else {
            max
        }
        .max(1);
        let mut has_turn = has_turn;
        let mut deadline = Instant::now() + self.limits.park_after;
        loop {
            // Also after a wait for room: the endpoint may have started failing meanwhile.
            if !has_turn && let Some(turn) = self.pace_turn(endpoint) {
                has_turn = true;
                let wait = match turn {
                    Turn::Near(wait) => wait,
                    Turn::Parked(wait) => {
                        return Some(Admission::Park(wait, ParkReason::FailingPace));
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                deadline = Instant::now() + self.limits.park_after;
            }
            let notify = match self.step(tenant, endpoint, max, deadline) {
                Step::Go(p) => return Some(Admission::Go(p)),
                Step::Park(d, why) => return Some(Admission::Park(d, why)),
                Step::Wait(n) => n,
            };
            let woke = tokio::select! {
                _ = shutdown.cancelled() => None,
                _ = notify.notified() => Some(()),
                _ = tokio::time::sleep_until(deadline) => Some(()),
            };
            let mut t = self.table.lock().expect("gate lock");
            if let Some(lane) = t.endpoints.get_mut(&endpoint) {
                lane.waiters = lane.waiters.saturating_sub(1);
            }
            woke?;
        }
    }

    /// Sets how many dispatchers share a failing endpoint's pace (at least this one): each
    /// gives it `HERALD_FAILING_ENDPOINT_RATE / n` attempts a second, since a shard's tasks are
    /// spread over every dispatcher consuming it.
    pub fn set_dispatchers(&self, n: u32) {
        self.dispatchers.store(n.max(1), Ordering::Relaxed);
    }

    /// Time between two turns this dispatcher gives a failing endpoint, `None` when pacing
    /// is off.
    fn pace_step(&self) -> Option<Duration> {
        let rate = self.limits.failing_rate;
        let n = self.dispatchers.load(Ordering::Relaxed).max(1);
        (rate > 0).then(|| Duration::from_secs_f64(f64::from(n) / f64::from(rate)))
    }

    /// A new task's turn at `endpoint` when the endpoint is paced (`None` when it is not, or
    /// has no lane yet: nothing known): near enough to wait for here, or one to be parked
    /// until, cheap for the broker to reach where one is ([`give_turn`]).
    fn pace_turn(&self, endpoint: Uuid) -> Option<Turn> {
        let step = self.pace_step()?;
        let now = Instant::now();
        let mut t = self.table.lock().expect("gate lock");
        let pace = &mut t.endpoints.get_mut(&endpoint)?.pace;
        if !pace.paced() {
            return None;
        }
        if pace.next_free(Duration::ZERO, now, step) <= self.limits.park_after {
            return Some(Turn::Near(pace.take_turn(now, now, step) - now));
        }
        let (after, max) = (self.limits.park_after, self.limits.park_max);
        Some(Turn::Parked(give_turn(
            pace,
            now,
            step,
            Duration::ZERO,
            after,
            max,
        )))
    }

    /// The wait until the turn of a retry due in `due` at `endpoint`, given out, when the
    /// endpoint is paced; `None` when it is not. Its own time when free, else as a new task's
    /// ([`give_turn`]) from its time on.
    pub fn turn(&self, endpoint: Uuid, due: Duration) -> Option<Duration> {
        let step = self.pace_step()?;
        let now = Instant::now();
        let mut t = self.table.lock().expect("gate lock");
        let pace = &mut t.endpoints.get_mut(&endpoint)?.pace;
        if !pace.paced() {
            return None;
        }
        let max = self.limits.park_max;
        Some(give_turn(pace, now, step, due, Duration::ZERO, max))
    }

    /// One look at the lanes: go, park, or wait (registered as a waiter).
    fn step(&self, tenant: Uuid, endpoint: Uuid, max: u32, deadline: Instant) -> Step {
        let now = Instant::now();
        let mut t = self.table.lock().expect("gate lock");
        let Table { endpoints, tenants } = &mut *t;
        let lane = endpoints
            .entry(endpoint)
            .or_insert_with(|| Lane::new(tenant, max, now));
        lane.set_max(max);
        lane.last_used = now;
        let owner = tenants.entry(tenant).or_default();
        let tenant_full = owner.in_flight >= self.limits.tenant_max.max(1);
        if !lane.full() && !tenant_full {
            owner.in_flight += 1;
            let id = lane.next_id;
            lane.next_id += 1;
            lane.in_flight.insert(id, now);
            return Step::Go(Permit {
                gates: self.clone(),
                endpoint,
                id,
                done: false,
            });
        }
        let late = now >= deadline;
        if lane.full() {
            if late || now + lane.expected_wait(now) > deadline {
                let d = lane.park(now, &self.limits);
                return Step::Park(d, ParkReason::EndpointCap);
            }
            lane.waiters += 1;
            return Step::Wait(lane.notify.clone());
        }
        if late {
            return Step::Park(PARK_MIN, ParkReason::TenantCap);
        }
        // Waits for the tenant's room; counted on the lane so the wake-up bookkeeping is one.
        lane.waiters += 1;
        Step::Wait(owner.notify.clone())
    }

    fn release(&self, endpoint: Uuid, id: u64, outcome: Option<(Outcome, Duration)>) {
        let mut t = self.table.lock().expect("gate lock");
        let Table { endpoints, tenants } = &mut *t;
        let Some(lane) = endpoints.get_mut(&endpoint) else {
            return;
        };
        lane.in_flight.remove(&id);
        let was = lane.throttled.is_some();
        if let Some((outcome, latency)) = outcome
            && lane.record(outcome, latency)
        {
            let reason = lane
                .throttled
                .as_ref()
                .map_or("errors", |n| n.reason.as_str());
            metrics::counter!("herald_endpoint_cap_reductions_total", "reason" => reason)
                .increment(1);
        }
        self.announce(endpoint, lane, was);
        lane.notify.notify_one();
        if let Some(owner) = tenants.get_mut(&lane.tenant) {
            owner.in_flight = owner.in_flight.saturating_sub(1);
            owner.notify.notify_one();
        }
    }

    /// Sends the lane's note when its state changed (throttled, paced), or its cap did (at
    /// most once a second).
    fn announce(&self, endpoint: Uuid, lane: &mut Lane, was_throttled: bool) {
        let Some(sink) = &self.notes else { return };
        let now = Instant::now();
        let limit = lane.limit() as u32;
        let rate = self.limits.failing_rate;
        let paced = (lane.pace.paced() && rate > 0).then_some(rate);
        match &mut lane.throttled {
            None if was_throttled => {
                lane.noted = None;
                let _ = sink.send((endpoint, None));
            }
            None => {}
            Some(note) => {
                note.cap = limit;
                note.paced = paced;
                let fresh = lane.noted.is_none_or(|(cap, was_paced, at)| {
                    was_paced != paced.is_some()
                        || (cap != note.cap && now.duration_since(at) >= Duration::from_secs(1))
                });
                if fresh || !was_throttled {
                    lane.noted = Some((note.cap, paced.is_some(), now));
                    let _ = sink.send((endpoint, Some(note.clone())));
                }
            }
        }
    }

    /// Sets the gauges and forgets idle lanes; called every few seconds.
    pub fn sample(&self) {
        let now = Instant::now();
        let mut t = self.table.lock().expect("gate lock");
        let (mut at_cap, mut throttled, mut paced) = (0u32, 0u32, 0u32);
        let mut forgotten = Vec::new();
        t.endpoints.retain(|id, lane| {
            let idle = lane.in_flight.is_empty()
                && lane.waiters == 0
                && now.duration_since(lane.last_used) > IDLE_FORGET;
            if idle {
                if lane.throttled.is_some() {
                    forgotten.push(*id);
                }
                return false;
            }
            at_cap += u32::from(lane.full());
            throttled += u32::from(lane.throttled.is_some());
            paced += u32::from(lane.pace.paced());
            true
        });
        t.tenants
            .retain(|_, owner| owner.in_flight > 0 || Arc::strong_count(&owner.notify) > 1);
        metrics::gauge!("herald_endpoints_at_cap").set(f64::from(at_cap));
        metrics::gauge!("herald_endpoints_throttled").set(f64::from(throttled));
        metrics::gauge!("herald_endpoints_paced").set(f64::from(paced));
        if let Some(sink) = &self.notes {
            for id in forgotten {
                let _ = sink.send((id, None));
            }
        }
    }

    /// The lane of `endpoint` as (cap now, throttled reason), for tests and diagnostics.
    #[cfg(test)]
    fn view(&self, endpoint: Uuid) -> Option<(usize, Option<Reason>)> {
        let t = self.table.lock().expect("gate lock");
        let lane = t.endpoints.get(&endpoint)?;
        Some((lane.limit(), lane.throttled.as_ref().map(|n| n.reason)))
    }
}

/// Samples the gates every 5 s until `shutdown`.
pub async fn sample_every(gates: Gates, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => gates.sample(),
        }
    }
}

impl Permit {
    /// Gives the room back and folds the attempt's outcome into the endpoint's cap.
    pub fn finish(mut self, outcome: Outcome, latency: Duration) {
        self.done = true;
        self.gates
            .release(self.endpoint, self.id, Some((outcome, latency)));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.gates.release(self.endpoint, self.id, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;

    fn gates(endpoint_max: u32, tenant_max: u32) -> Gates {
        Gates::new(
            Limits {
                endpoint_max,
                tenant_max,
                park_after: Duration::from_millis(50),
                park_max: Duration::from_secs(60),
                failing_rate: 0,
            },
            None,
        )
    }

    async fn admit(g: &Gates, tenant: Uuid, endpoint: Uuid) -> Admission {
        g.admit(tenant, endpoint, 0, false, &CancellationToken::new())
            .await
            .expect("not shutting down")
    }

    /// Gates pacing a failing endpoint at `rate` attempts a second.
    fn paced_gates(rate: u32) -> Gates {
        let mut g = gates(16, 100);
        g.limits = Arc::new(Limits {
            failing_rate: rate,
            ..(*g.limits).clone()
        });
        g
    }

    fn go(a: Admission) -> Permit {
        match a {
            Admission::Go(p) => p,
            Admission::Park(d, why) => panic!("parked {d:?} ({why:?})"),
        }
    }

    fn parked(a: Admission) -> (Duration, ParkReason) {
        match a {
            Admission::Go(_) => panic!("admitted"),
            Admission::Park(d, why) => (d, why),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_that_keeps_failing_fast_gets_turns() {
        let g = paced_gates(10);
        let (tenant, ep) = (Uuid::new_v4(), Uuid::new_v4());
        let ms = Duration::from_millis;
        for _ in 0..crate::pace::PACE_AFTER {
            assert_eq!(g.turn(ep, ms(0)), None, "not paced yet");
            go(admit(&g, tenant, ep).await).finish(Outcome::Failed, ms(1));
        }
        // Paced: the first turn is now, the next 100 ms on, past the 50 ms a task may wait
        // here: parked until it, which is not an attempt.
        let first = go(admit(&g, tenant, ep).await);
        let (wait, why) = parked(admit(&g, tenant, ep).await);
        assert_eq!((wait, why), (ms(100), ParkReason::FailingPace));
        // Back at its turn, a task is not paced again (only its cap applies).
        let with_turn = g
            .admit(tenant, ep, 0, true, &CancellationToken::new())
            .await;
        let with_turn = go(with_turn.expect("not shutting down"));
        // A retry due in 1 s keeps its time, and holds up no turn before it.
        assert_eq!(g.turn(ep, ms(1_000)), Some(ms(1_000)));
        assert_eq!(g.turn(ep, ms(0)), Some(ms(200)));
        // The first answer ends the pacing.
        first.finish(Outcome::Answered, ms(1));
        assert_eq!(g.turn(ep, ms(0)), None);
        let _p = go(admit(&g, tenant, ep).await);
        drop(with_turn);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_park_takes_the_turns_fewest_delay_queues_reach_first() {
        let g = paced_gates(10);
        let (tenant, ep) = (Uuid::new_v4(), Uuid::new_v4());
        let ms = Duration::from_millis;
        for _ in 0..crate::pace::PACE_AFTER {
            go(admit(&g, tenant, ep).await).finish(Outcome::Failed, ms(1));
        }
        // One turn a 100 ms bucket: now; then, up to twice as far as the first free turn (at
        // least 1 s: 2 s), those one delay queue reaches, then those two reach, then the free
        // ones in between (several hops); then, up to 2.6 s, the next two-hop one.
        let _now = go(admit(&g, tenant, ep).await);
        let mut parks = Vec::new();
        for _ in 0..15 {
            let (wait, why) = parked(admit(&g, tenant, ep).await);
            assert_eq!(why, ParkReason::FailingPace);
            parks.push(wait.as_millis());
        }
        let want = [
            100, 200, 500, 1_000, 2_000, 300, 400, 600, 700, 1_100, 1_200, 1_500, 800, 900, 2_100,
        ];
        assert_eq!(parks, want);
        // A retry: its own time when free, else as a new task's from then on.
        assert_eq!(g.turn(ep, ms(3_000)), Some(ms(3_000)));
        assert_eq!(g.turn(ep, ms(1_000)), Some(ms(2_200)));
        assert_eq!(g.turn(ep, ms(120_000)), Some(ms(120_000)));
        assert_eq!(g.turn(ep, ms(120_000)), Some(ms(120_100)));
    }

    #[test]
    fn cheap_waits_are_one_hop_then_two_as_the_ladder_splits_them() {
        let waits = cheap_waits();
        let rungs = herald_broker::DELAY_RUNGS_MS.len();
        let one: Vec<u64> = waits[..rungs]
            .iter()
            .map(|w| w.as_millis() as u64)
            .collect();
        assert_eq!(one, herald_broker::DELAY_RUNGS_MS);
        for w in &waits[rungs..] {
            let ms = w.as_millis() as u64;
            let (first, rest) = herald_broker::delay_hop(ms);
            assert!(first.is_some(), "{ms}");
            assert_eq!(herald_broker::delay_hop(rest), (Some(rest), 0), "{ms}");
        }
        assert!(waits[rungs..].windows(2).all(|w| w[0] < w[1]));
        // 35 s is 30 s + 5 s; 37 s would be three (30 s + 5 s + 2 s).
        assert!(waits.contains(&Duration::from_millis(35_000)));
        assert!(!waits.contains(&Duration::from_millis(37_000)));
    }

    #[test]
    fn dispatchers_share_a_failing_endpoints_pace() {
        let g = paced_gates(10);
        let ms = Duration::from_millis;
        assert_eq!(g.pace_step(), Some(ms(100)));
        g.set_dispatchers(2);
        assert_eq!(g.pace_step(), Some(ms(200)), "5 a second each");
        g.set_dispatchers(0);
        assert_eq!(g.pace_step(), Some(ms(100)), "this one counts");
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_at_its_cap_parks_what_cannot_go_soon() {
        let g = gates(2, 100);
        let (tenant, ep) = (Uuid::new_v4(), Uuid::new_v4());
        let held = [
            go(admit(&g, tenant, ep).await),
            go(admit(&g, tenant, ep).await),
        ];
        // Nothing known of its latency yet: a short wait, then parked.
        let (d, why) = parked(admit(&g, tenant, ep).await);
        assert_eq!(why, ParkReason::EndpointCap);
        assert!(d >= PARK_MIN, "{d:?}");
        // Another endpoint of the same tenant is not held up.
        let other = go(admit(&g, tenant, Uuid::new_v4()).await);
        drop(other);
        // Room given back: the next task goes at once.
        drop(held);
        let _p = go(admit(&g, tenant, ep).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_task_takes_room_freed_within_the_wait() {
        let g = gates(1, 100);
        let (tenant, ep) = (Uuid::new_v4(), Uuid::new_v4());
        let first = go(admit(&g, tenant, ep).await);
        first.finish(Outcome::Answered, Duration::from_millis(5));
        let held = go(admit(&g, tenant, ep).await);
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { admit(&g2, tenant, ep).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        held.finish(Outcome::Answered, Duration::from_millis(5));
        let _p = go(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_halve_the_cap_and_successes_bring_it_back() {
        let g = gates(16, 100);
        let (tenant, ep) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..4 {
            go(admit(&g, tenant, ep).await).finish(Outcome::TimedOut, Duration::from_secs(20));
        }
        assert_eq!(g.view(ep), Some((1, Some(Reason::Timeouts))));
        // A hanging endpoint at cap 1: every other task parks, on rungs up to the longest park.
        let probe = go(admit(&g, tenant, ep).await);
        let parks: Vec<Duration> = futures::future::join_all(
            (0..50).map(|_| async { parked(admit(&g, tenant, ep).await).0 }),
        )
        .await;
        assert!(
            parks
                .iter()
                .all(|d| *d >= PARK_MIN && *d <= Duration::from_secs(60)),
            "{parks:?}"
        );
        let distinct: std::collections::BTreeSet<_> = parks.iter().collect();
        assert!(distinct.len() >= 3, "parks spread over rungs: {parks:?}");
        probe.finish(Outcome::Answered, Duration::from_millis(3));
        for _ in 0..200 {
            go(admit(&g, tenant, ep).await).finish(Outcome::Answered, Duration::from_millis(3));
        }
        assert_eq!(g.view(ep), Some((16, None)));
    }

    #[test]
    fn parks_take_the_rung_of_their_turn_or_spread_past_the_longest() {
        let s = Duration::from_secs;
        assert_eq!(rung_at_least(Duration::from_millis(3)), s(1));
        assert_eq!(rung_at_least(Duration::from_millis(2_100)), s(5));
        assert_eq!(rung_at_least(s(40)), s(60));
        assert_eq!(rung_at_most(s(45)), s(30));
        assert_eq!(rung_at_most(Duration::from_millis(10)), s(1));
        let secs = |u: f64| spread_rung(s(15), s(60), u).as_secs();
        // Rungs 15, 20, 30 and 60 s (125 s in all).
        assert_eq!(secs(0.0), 15);
        assert_eq!(secs(0.999), 60);
        assert_eq!(secs(65.0 / 125.0), 60);
        assert_eq!(secs(64.0 / 125.0), 30);
        // No rung in the range: the longest below its top.
        assert_eq!(spread_rung(s(3), s(4), 0.5), s(2));
        let n = 10_000;
        let mut at_60 = 0;
        for i in 0..n {
            let d = secs(i as f64 / n as f64);
            assert!((15..=60).contains(&d));
            at_60 += usize::from(d == 60);
        }
        // 60 of 125: its share of the returns per second equals every other rung's.
        assert!((4_750..4_850).contains(&at_60), "{at_60}");
    }

    #[tokio::test(start_paused = true)]
    async fn fast_failures_lower_the_cap_less_than_timeouts() {
        let g = gates(16, 100);
        let (tenant, ep) = (Uuid::new_v4(), Uuid::new_v4());
        go(admit(&g, tenant, ep).await).finish(Outcome::Failed, Duration::from_millis(2));
        assert_eq!(g.view(ep), Some((12, Some(Reason::Errors))));
        // Fast failures alone stop at a quarter of the full cap.
        for _ in 0..10 {
            go(admit(&g, tenant, ep).await).finish(Outcome::Failed, Duration::from_millis(2));
        }
        assert_eq!(g.view(ep), Some((4, Some(Reason::Errors))));
        go(admit(&g, tenant, ep).await).finish(Outcome::TimedOut, Duration::from_secs(1));
        assert_eq!(g.view(ep), Some((2, Some(Reason::Timeouts))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_holds_at_most_its_cap_across_endpoints() {
        let g = gates(16, 3);
        let tenant = Uuid::new_v4();
        let held: Vec<Permit> = futures::future::join_all(
            (0..3).map(|_| async { go(admit(&g, tenant, Uuid::new_v4()).await) }),
        )
        .await;
        let (_, why) = parked(admit(&g, tenant, Uuid::new_v4()).await);
        assert_eq!(why, ParkReason::TenantCap);
        // Another tenant is not touched.
        let _other = go(admit(&g, Uuid::new_v4(), Uuid::new_v4()).await);
        drop(held);
        let _p = go(admit(&g, tenant, Uuid::new_v4()).await);
    }

    #[tokio::test(start_paused = true)]
    async fn notes_announce_throttling_and_recovery() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let g = Gates::new(
            Limits {
                endpoint_max: 2,
                tenant_max: 10,
                park_after: Duration::from_millis(50),
                park_max: Duration::from_secs(60),
                failing_rate: 0,
            },
            Some(tx),
        );
        let (tenant, ep) = (Uuid::new_v4(), Uuid::new_v4());
        go(admit(&g, tenant, ep).await).finish(Outcome::TimedOut, Duration::from_secs(5));
        let (id, note) = rx.try_recv().expect("a note");
        assert_eq!(id, ep);
        let note = note.expect("throttled");
        assert_eq!((note.reason, note.cap, note.max), (Reason::Timeouts, 1, 2));
        for _ in 0..3 {
            go(admit(&g, tenant, ep).await).finish(Outcome::Answered, Duration::from_millis(1));
        }
        let mut last = None;
        while let Ok((_, n)) = rx.try_recv() {
            last = Some(n);
        }
        assert_eq!(last, Some(None), "recovery clears the note");
    }

    #[tokio::test(start_paused = true)]
    async fn notes_say_when_a_failing_endpoint_is_paced_and_when_no_longer() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let g = Gates::new(
            Limits {
                endpoint_max: 16,
                tenant_max: 100,
                park_after: Duration::from_millis(50),
                park_max: Duration::from_secs(60),
                failing_rate: 10,
            },
            Some(tx),
        );
        let (tenant, ep) = (Uuid::new_v4(), Uuid::new_v4());
        let ms = Duration::from_millis;
        let mut notes = Vec::new();
        for _ in 0..crate::pace::PACE_AFTER {
            go(admit(&g, tenant, ep).await).finish(Outcome::Failed, ms(1));
            while let Ok((_, n)) = rx.try_recv() {
                notes.push(n.expect("throttled").paced);
            }
        }
        // Throttled at the first failure; paced at the fifth, announced at once.
        assert_eq!(notes, [None, Some(10)]);
        go(admit(&g, tenant, ep).await).finish(Outcome::Answered, ms(1));
        let (_, note) = rx.try_recv().expect("a note");
        let note = note.expect("still below its full cap");
        assert_eq!((note.reason, note.paced), (Reason::Errors, None));
    }
}
