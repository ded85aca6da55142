//! Where the CPU-heavy part of a call runs (validating large payloads, evaluating payload
//! filters), and how much of an ingest's CPU one tenant's such work may take.
//!
//! `HERALD_FILTER_STEP_BUDGET` and the payload limit bound the work of one event, not a
//! tenant's share: a tenant calling `TestFilter`, publishing to filtered endpoints or sending
//! batches of large payloads in a loop could keep every core busy with work that each call
//! keeps within its limits, and every other tenant's calls would wait for CPU. So:
//!
//! - **Threads.** Work that can be long (above [`INLINE_WORK`]: payload bytes parsed plus
//!   estimated filter steps, known before parsing anything) runs on `HERALD_PAYLOAD_THREADS`
//!   threads of its own (default half the cores, at least one), in arrival order, at nice
//!   [`PAYLOAD_NICE`]: the async workers never run it, and when the machine is short of CPU
//!   the scheduler gives it to the threads that serve calls first. Small work stays inline
//!   and pays no thread hop.
//! - **Share.** Each tenant may use `HERALD_TENANT_PAYLOAD_CPU_MS` milliseconds of this CPU
//!   per second on an instance (default 250: a quarter of a core, some 100 MB/s of payloads
//!   validated), with one second's worth saved up at most. What a job took is measured on
//!   its thread (the thread's CPU clock: time spent waiting for a core is not counted) and
//!   taken after it ran; while a tenant is in debt, its calls with such work get
//!   `RESOURCE_EXHAUSTED` with `RetryInfo` (when the debt is paid) having written nothing.
//!   Inline filter work is measured and charged the same way; a call with no such work
//!   (small, no filter reached) is neither measured, charged nor refused.
//! - **Queue.** A tenant has at most `HERALD_PAYLOAD_THREADS` jobs on the threads at once,
//!   running or waiting; another of its calls waits up to [`QUEUE_WAIT`] for one to finish,
//!   else it is refused like a tenant in debt. So another tenant's job waits behind at most
//!   that many jobs of each busy tenant, each bounded by the limits above.
//!
//! Per instance, not shared through Redis: the CPU is this instance's, and a local count costs
//! no round trip. A tenant may use its share on every instance.
//!
//! Refusals are counted in `herald_payload_refused_total{limit}` (`cpu`, `queue`); the CPU each
//! job took in the histogram `herald_payload_job_cpu_seconds{where}` (`inline`, `threads`; its
//! sum is the CPU used).
//!
//! The threads are our own (a channel and a loop) because tokio's blocking pool serves other
//! work too (name resolution, files) which must not run at a lower priority, and a thread's
//! priority cannot be raised back without privileges.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::shares::Shares;

/// Tenants whose places are remembered before those with none taken are forgotten.
const TENANTS_KEPT: usize = 1024;

/// Work (payload bytes parsed plus estimated filter steps, see
/// `herald_store::SubscriptionIndex::filter_work`) above which it runs on the payload threads.
/// Below it the worst case is a fraction of a millisecond.
pub const INLINE_WORK: u64 = 128 * 1024;

/// The payload threads' nice value: below every thread that serves calls (nice 0).
pub const PAYLOAD_NICE: i32 = 10;

/// How long a call waits for one of its tenant's places on the payload threads.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);

type Job = Box<dyn FnOnce() + Send>;

/// The payload threads and each tenant's share of them; cheap to clone.
#[derive(Clone)]
pub struct PayloadWork {
    jobs: crossbeam_channel::Sender<Job>,
    /// CPU seconds per second, per tenant.
    cpu: Arc<Shares>,
    /// Each busy tenant's places on the threads.
    places: Arc<Mutex<HashMap<Uuid, Arc<Semaphore>>>>,
    per_tenant: usize,
}

/// Leave to run one call's payload work: inline, or on the threads holding a place.
pub struct Ticket {
    pool: PayloadWork,
    tenant: Uuid,
    place: Option<OwnedSemaphorePermit>,
    /// Whether the work is measured and charged (not when there is none to speak of).
    charged: bool,
}

impl PayloadWork {
    /// Starts `threads` payload threads (at least one); each tenant may use `cpu_per_second`
    /// of them per second (zero: no limit).
    pub fn start(threads: usize, cpu_per_second: Duration) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("herald-payload-{i}"))
                .spawn(move || {
                    lower_priority();
                    // Ends when every sender is gone: the pool was dropped.
                    for job in queue {
                        job();
                    }
                })?;
        }
        Ok(Self {
            jobs,
            cpu: Arc::new(Shares::new(cpu_per_second.as_secs_f64())),
            places: Arc::default(),
            per_tenant: threads,
        })
    }

    /// Leave for `tenant` to run work of `work` (0: nothing to do, nothing charged), or
    /// `RESOURCE_EXHAUSTED` with a retry delay when the tenant used its share or its places.
    pub async fn admit(&self, tenant: Uuid, work: u64) -> Result<Ticket> {
        let ticket = |place, charged| Ticket {
            pool: self.clone(),
            tenant,
            place,
            charged,
        };
        if work == 0 {
            return Ok(ticket(None, false));
        }
        self.check(tenant)?;
        if work <= INLINE_WORK {
            return Ok(ticket(None, true));
        }
        let places = self.places(tenant);
        let place = match tokio::time::timeout(QUEUE_WAIT, places.acquire_owned()).await {
            Ok(Ok(place)) => place,
            Ok(Err(_closed)) => return Err(Error::Internal("payload places closed".into())),
            Err(_elapsed) => {
                metrics::counter!("herald_payload_refused_total", "limit" => "queue").increment(1);
                return Err(Error::RateLimited {
                    message: format!(
                        "this tenant already has {} calls validating payloads or evaluating filters on this ingest (HERALD_PAYLOAD_THREADS); retry after {} ms",
                        self.per_tenant,
                        QUEUE_WAIT.as_millis()
                    ),
                    retry_after: QUEUE_WAIT,
                });
            }
        };
        // It may have run into debt while this call waited.
        self.check(tenant)?;
        Ok(ticket(Some(place), true))
    }

    /// A refusal while `tenant` is in debt.
    fn check(&self, tenant: Uuid) -> Result<()> {
        let Some(retry_after) = self.cpu.owed(tenant) else {
            return Ok(());
        };
        metrics::counter!("herald_payload_refused_total", "limit" => "cpu").increment(1);
        Err(Error::RateLimited {
            message: format!(
                "this tenant's payload work (validating payloads, evaluating filters) used its share of this ingest's CPU ({} ms per second, HERALD_TENANT_PAYLOAD_CPU_MS); retry after {} ms",
                (self.cpu.rate() * 1e3).round(),
                retry_after.as_millis()
            ),
            retry_after,
        })
    }

    /// The tenant's places on the threads (forgetting those of tenants with none taken).
    fn places(&self, tenant: Uuid) -> Arc<Semaphore> {
        let mut places = self.places.lock().expect("payload places lock");
        if places.len() >= TENANTS_KEPT {
            places.retain(|_, p| p.available_permits() < self.per_tenant);
        }
        places
            .entry(tenant)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone()
    }
}

impl Ticket {
    /// Runs `job` (inline, or on the payload threads when the ticket holds a place), then
    /// charges the CPU it took to the tenant (unless there was no work to charge).
    pub async fn run<T: Send + 'static>(mut self, job: impl FnOnce() -> T + Send + 'static) -> T {
        if !self.charged {
            return job();
        }
        let Some(place) = self.place.take() else {
            let started = thread_cpu();
            let out = job();
            self.settle(thread_cpu().saturating_sub(started), "inline");
            return out;
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        let sent = self.pool.jobs.send(Box::new(move || {
            let started = thread_cpu();
            let out = std::panic::catch_unwind(AssertUnwindSafe(job));
            let _ = done.send((out, thread_cpu().saturating_sub(started)));
        }));
        assert!(
            sent.is_ok(),
            "the payload threads outlive the pool's senders"
        );
        let (out, used) = answer.await.expect("a payload thread answers every job");
        drop(place);
        self.settle(used, "threads");
        match out {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn settle(&self, used: Duration, place: &'static str) {
        metrics::histogram!("herald_payload_job_cpu_seconds", "where" => place)
            .record(used.as_secs_f64());
        self.pool.cpu.charge(self.tenant, used.as_secs_f64());
    }
}

/// CPU time of the calling thread (zero where the clock cannot be read).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Puts the calling thread at [`PAYLOAD_NICE`] (Linux's nice is per thread).
fn lower_priority() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), PAYLOAD_NICE) {
        tracing::warn!(error = %e, "payload thread keeps the default priority");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn spin(for_cpu: Duration) {
        let started = thread_cpu();
        while thread_cpu().saturating_sub(started) < for_cpu {
            std::hint::black_box(0u64);
        }
    }

    #[tokio::test]
    async fn a_tenant_in_debt_is_refused_with_a_delay_and_others_are_not() {
        let pool = PayloadWork::start(1, Duration::from_millis(20)).expect("pool");
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ticket = pool.admit(a, INLINE_WORK + 1).await.expect("first call");
        ticket.run(|| spin(Duration::from_millis(60))).await;
        let refused = pool.admit(a, 1).await.err().expect("a is in debt");
        let Error::RateLimited {
            message,
            retry_after,
        } = refused
        else {
            panic!("{refused:?}")
        };
        assert!(
            message.contains("HERALD_TENANT_PAYLOAD_CPU_MS"),
            "{message}"
        );
        // About 40 ms of debt at 20 ms per second: about two seconds.
        assert!(
            retry_after > Duration::from_millis(1500) && retry_after <= Duration::from_secs(3),
            "{retry_after:?}"
        );
        pool.admit(b, INLINE_WORK + 1)
            .await
            .expect("b has its own share");
        pool.admit(a, 0)
            .await
            .expect("no filter work is never refused");
        let c = Uuid::now_v7();
        let free = pool.admit(c, 0).await.expect("nothing to refuse");
        free.run(|| spin(Duration::from_millis(60))).await;
        pool.admit(c, 1).await.expect("work of 0 is not charged");
    }

    #[tokio::test]
    async fn heavy_work_runs_on_the_payload_threads_at_a_lower_priority() {
        let pool = PayloadWork::start(1, Duration::ZERO).expect("pool");
        let ticket = pool.admit(Uuid::now_v7(), INLINE_WORK + 1).await.unwrap();
        let (name, nice) = ticket
            .run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                (name, rustix::process::getpriority_process(None).ok())
            })
            .await;
        assert_eq!(name.as_deref(), Some("herald-payload-0"));
        // getpriority(PRIO_PROCESS, 0) reads the calling thread's nice on Linux.
        assert_eq!(nice, Some(PAYLOAD_NICE));
        let ticket = pool.admit(Uuid::now_v7(), INLINE_WORK).await.unwrap();
        let here = std::thread::current().id();
        assert_eq!(ticket.run(move || std::thread::current().id()).await, here);
    }

    #[tokio::test]
    async fn a_tenant_holds_at_most_its_places_and_waits_a_bounded_time() {
        let pool = PayloadWork::start(1, Duration::ZERO).expect("pool");
        let tenant = Uuid::now_v7();
        let first = pool.admit(tenant, INLINE_WORK + 1).await.unwrap();
        let started = Instant::now();
        let refused = pool.admit(tenant, INLINE_WORK + 1).await.err().unwrap();
        assert!(started.elapsed() >= QUEUE_WAIT, "{:?}", started.elapsed());
        assert!(
            matches!(&refused, Error::RateLimited { message, .. } if message.contains("HERALD_PAYLOAD_THREADS")),
            "{refused:?}"
        );
        let other = pool.admit(Uuid::now_v7(), INLINE_WORK + 1).await;
        assert!(other.is_ok(), "another tenant has places of its own");
        first.run(|| ()).await;
        pool.admit(tenant, INLINE_WORK + 1)
            .await
            .expect("the place came back");
    }

    #[tokio::test]
    async fn a_panic_in_a_job_reaches_the_caller_and_the_thread_survives() {
        let pool = PayloadWork::start(1, Duration::ZERO).expect("pool");
        let tenant = Uuid::now_v7();
        let ticket = pool.admit(tenant, INLINE_WORK + 1).await.unwrap();
        let panicked = tokio::spawn(ticket.run(|| panic!("boom"))).await;
        assert!(panicked.is_err());
        let ticket = pool.admit(tenant, INLINE_WORK + 1).await.unwrap();
        assert_eq!(ticket.run(|| 7).await, 7);
    }
}
