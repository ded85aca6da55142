//! Group commit of ledger records: records handed in by concurrent calls (ingest's publishes,
//! a dispatcher's deliveries) travel together in one confirmed broker message.
//!
//! Each record used to cost a persistent, confirmed message of its own, which made the broker
//! the bottleneck (one delivery = work task + event record + attempt record). Here a single
//! task takes whatever records are waiting when a publish slot frees up, so under load batches
//! grow by themselves and when idle a record goes out at once: there is no timer and no added
//! latency. A caller that can afford to wait (the dispatcher: the wait delays only its acks,
//! never a POST) may set a *linger*: a message then also waits up to that long after its first
//! record was handed in, so at moderate rates many records share a message instead of a few
//! (`HERALD_RECORD_LINGER`, read by [`record_linger`]). The durability contract is unchanged:
//! [`RecordBatcher::submit`] returns only after the broker confirmed the message holding the
//! caller's records, so callers still answer OK (ingest) or ack (dispatcher) only once their
//! records are safe.

use std::sync::Arc;
use std::time::Duration;

use herald_core::config::{ConfigError, Reader};
use herald_core::wire::{LedgerBatch, Record};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::publisher::Publisher;

/// Most bytes (estimated) of records in one message.
const MAX_MESSAGE_BYTES: usize = 512 * 1024;

struct Job {
    records: Vec<Record>,
    /// Trace context of the work that produced the records (the first job's travels).
    headers: Vec<(String, String)>,
    done: oneshot::Sender<Result<(), String>>,
    /// When it was handed in: the linger counts from the oldest job of a message.
    queued: Instant,
}

/// How records are gathered into messages.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// Most records in one message.
    pub max_records: usize,
    /// Most messages awaiting their confirm at once.
    pub in_flight: usize,
    /// How long a message may wait for more records after its oldest one was handed in
    /// (zero: it goes out as soon as a publish slot is free).
    pub linger: Duration,
}

impl Batching {
    /// What every service uses: at most 500 records per message, two messages awaiting their
    /// confirm at once (one fills while the other is confirmed), and the service's linger.
    pub fn ledger(linger: Duration) -> Self {
        Self {
            max_records: 500,
            in_flight: 2,
            linger,
        }
    }
}

/// Longest `HERALD_RECORD_LINGER` accepted.
pub const MAX_RECORD_LINGER: Duration = Duration::from_secs(1);

/// `HERALD_RECORD_LINGER` (the service's `default` when unset), at most
/// [`MAX_RECORD_LINGER`]: a caller waiting for its records' confirm waits out the linger too.
pub fn record_linger(
    r: &Reader<'_>,
    default: Duration,
) -> std::result::Result<Duration, ConfigError> {
    let linger = r.duration("HERALD_RECORD_LINGER", default)?;
    if linger > MAX_RECORD_LINGER {
        return Err(ConfigError {
            name: "HERALD_RECORD_LINGER".into(),
            message: format!(
                "{} ms is too long: at most {} ms (records waiting hold their tasks' acks)",
                linger.as_millis(),
                MAX_RECORD_LINGER.as_millis()
            ),
        });
    }
    Ok(linger)
}

/// Hands ledger records to the broker in shared messages; cheap to clone.
#[derive(Clone)]
pub struct RecordBatcher {
    tx: mpsc::UnboundedSender<Job>,
}

impl RecordBatcher {
    /// Starts the batching task.
    pub fn start(publisher: Publisher, batching: Batching) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let batching = Batching {
            max_records: batching.max_records.max(1),
            in_flight: batching.in_flight.max(1),
            linger: batching.linger,
        };
        tokio::spawn(run(publisher, rx, batching));
        Self { tx }
    }

    /// Publishes `records` (in a message shared with other callers' records) and returns once
    /// the broker confirmed that message.
    pub async fn submit(&self, records: Vec<Record>, headers: Vec<(String, String)>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let stopped = || Error::Unavailable("the ledger record batcher stopped".into());
        let (done, confirmed) = oneshot::channel();
        self.tx
            .send(Job {
                records,
                headers,
                done,
                queued: Instant::now(),
            })
            .map_err(|_| stopped())?;
        confirmed
            .await
            .map_err(|_| stopped())?
            .map_err(Error::Unavailable)
    }
}

fn weight(job: &Job) -> usize {
    job.records.iter().map(Record::approx_size).sum()
}

/// Takes the next job for the message being gathered: one already waiting, else (while the
/// linger of the message's oldest record runs) the next one handed in. `None` when the message
/// should go now.
async fn next_job(rx: &mut mpsc::UnboundedReceiver<Job>, until: Option<Instant>) -> Option<Job> {
    match rx.try_recv() {
        Ok(job) => Some(job),
        Err(_) => match until {
            Some(until) => tokio::time::timeout_at(until, rx.recv())
                .await
                .ok()
                .flatten(),
            None => None,
        },
    }
}

async fn run(publisher: Publisher, mut rx: mpsc::UnboundedReceiver<Job>, batching: Batching) {
    let Batching {
        max_records,
        in_flight,
        linger,
    } = batching;
    let slots = Arc::new(Semaphore::new(in_flight));
    // A job taken from the channel that did not fit in the previous message.
    let mut carried: Option<Job> = None;
    loop {
        // Wait for a free slot first: meanwhile records pile up into the next message.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        let (mut count, mut bytes) = (first.records.len(), weight(&first));
        let until = (!linger.is_zero()).then(|| first.queued + linger);
        let mut jobs = vec![first];
        while count < max_records && bytes < MAX_MESSAGE_BYTES {
            let Some(job) = next_job(&mut rx, until).await else {
                break;
            };
            let (c, b) = (job.records.len(), weight(&job));
            if count + c > max_records || bytes + b > MAX_MESSAGE_BYTES {
                carried = Some(job);
                break;
            }
            count += c;
            bytes += b;
            jobs.push(job);
        }
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let headers = std::mem::take(&mut jobs[0].headers);
            let mut records = Vec::with_capacity(count);
            let mut waiting = Vec::with_capacity(jobs.len());
            for job in jobs {
                records.extend(job.records);
                waiting.push(job.done);
            }
            metrics::histogram!("herald_ledger_records_per_message").record(records.len() as f64);
            let message = publisher
                .topology()
                .ledger_message(LedgerBatch::new(records).encode(), headers);
            let result = publisher
                .publish(std::slice::from_ref(&message))
                .await
                .map_err(|e| e.to_string());
            for done in waiting {
                let _ = done.send(result.clone());
            }
        });
    }
}
