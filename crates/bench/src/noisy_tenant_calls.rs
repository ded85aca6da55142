//! A's call loops in noisy-tenant: how an attack calls, and how its calls are counted.
//!
//! A flood is a number of loops, each making its next call as soon as the last one ended,
//! until the phase ends. Every call is counted by its outcome: done, refused (by gRPC code; a
//! budget answers `RESOURCE_EXHAUSTED`) or cut (still in flight when the phase ended, then
//! dropped, which cancels it). A refused loop waits 10 ms before its next call, as the load
//! generator's closed loop does: the bench shares two cores with Herald, and a loop spinning
//! on instant refusals would measure the bench's own CPU beside B rather than what refusing
//! costs Herald.
//!
//! A flood may carry a bound on the work Herald accepts from it (deliveries queued): past it
//! the loops stop, and the tally says when, so the report can tell a budget that held from a
//! bench that gave up.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a loop waits after a refused call (see the module docs).
pub const REFUSAL_PAUSE: Duration = Duration::from_millis(10);

/// What one kind of A's calls achieved in a phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    /// The call, e.g. "TestFilter".
    pub call: String,
    pub loops: usize,
    pub done: u64,
    /// Failed calls by gRPC code.
    pub refused: BTreeMap<String, u64>,
    /// The first failed call's message, by gRPC code: which limit answered.
    pub messages: BTreeMap<String, String>,
    /// Calls still in flight when the phase ended (dropped, which cancels them).
    pub cut: u64,
    /// Work the done calls got accepted (deliveries fanned out or replayed), when counted.
    pub units: u64,
    /// Seconds into the phase at which the bench's bound stopped the loops.
    pub bound_hit_secs: Option<f64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.done += other.done;
        self.cut += other.cut;
        self.units += other.units;
        for (code, n) in other.refused {
            *self.refused.entry(code).or_insert(0) += n;
        }
        for (code, message) in other.messages {
            self.messages.entry(code).or_insert(message);
        }
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

/// What one call did: the work it got accepted, or how it failed.
pub type Outcome = Result<u64, tonic::Status>;

/// Characters of a refusal's message kept as its example.
const MESSAGE_CHARS: usize = 200;

/// A gRPC status's code as the tallies name it.
pub fn code(status: &tonic::Status) -> String {
    format!("{:?}", status.code())
}

/// Work accepted after which the loops of one flood stop, and when that happened.
struct Bound {
    limit: u64,
    total: AtomicU64,
    hit: AtomicBool,
    hit_at: Mutex<Option<Instant>>,
}

/// Runs `loops` loops of `call` until `until` (or until `bound` units were accepted) and
/// counts what they did.
pub async fn flood<F, Fut>(
    call_name: &str,
    loops: usize,
    until: Instant,
    bound: Option<u64>,
    call: F,
) -> Tally
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let began = Instant::now();
    let bound = Arc::new(Bound {
        limit: bound.unwrap_or(u64::MAX),
        total: AtomicU64::new(0),
        hit: AtomicBool::new(false),
        hit_at: Mutex::new(None),
    });
    let tasks = (0..loops).map(|_| {
        let call = call.clone();
        let bound = bound.clone();
        tokio::spawn(async move {
            let mut t = Tally::default();
            let stop_at = tokio::time::Instant::from_std(until);
            while Instant::now() < until && !bound.hit.load(Ordering::Relaxed) {
                match tokio::time::timeout_at(stop_at, call()).await {
                    Err(_) => {
                        t.cut += 1;
                        break;
                    }
                    Ok(Ok(units)) => {
                        t.done += 1;
                        t.units += units;
                        let total = bound.total.fetch_add(units, Ordering::Relaxed) + units;
                        if total >= bound.limit && !bound.hit.swap(true, Ordering::Relaxed) {
                            let mut at =
                                bound.hit_at.lock().unwrap_or_else(PoisonError::into_inner);
                            *at = Some(Instant::now());
                        }
                    }
                    Ok(Err(status)) => {
                        let code = code(&status);
                        t.messages.entry(code.clone()).or_insert_with(|| {
                            status.message().chars().take(MESSAGE_CHARS).collect()
                        });
                        *t.refused.entry(code).or_insert(0) += 1;
                        tokio::time::sleep(REFUSAL_PAUSE).await;
                    }
                }
            }
            t
        })
    });
    let mut tally = Tally {
        call: call_name.to_owned(),
        loops,
        ..Tally::default()
    };
    for joined in futures::future::join_all(tasks).await {
        match joined {
            Ok(part) => tally.merge(part),
            Err(e) => {
                *tally
                    .refused
                    .entry(format!("loop failed: {e}"))
                    .or_insert(0) += 1
            }
        }
    }
    let hit_at = *bound.hit_at.lock().unwrap_or_else(PoisonError::into_inner);
    tally.bound_hit_secs = hit_at.map(|at| at.duration_since(began).as_secs_f64());
    tally
}
