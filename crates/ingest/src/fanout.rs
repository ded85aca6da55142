//! What one publish call may cost in CPU and memory, and its hand-off to the broker in chunks.
//!
//! - **Filters.** The payload filters an event reaches take at most `HERALD_FILTER_STEP_BUDGET`
//!   steps together (see `herald_store::SubscriptionIndex::targets_within`); where they run
//!   and a tenant's share of the CPU they take: [`crate::payload_work`].
//! - **Fan-out.** A call's delivery tasks weigh events × endpoints × payload bytes (1,000
//!   events of 256 KiB to 1,000 endpoints: 256 GB). A call is refused past
//!   `HERALD_MAX_FANOUT_BYTES`; below it its tasks are built and handed off in chunks of at most
//!   `HERALD_PUBLISH_CHUNK_BYTES`, each confirmed before the next is built.
//! - **Memory.** Every call in flight holds its chunk's bytes from one process-wide
//!   [`MemoryGate`] of `HERALD_PUBLISH_MEMORY`, taken before anything is handed off: a call
//!   that cannot get them within [`MEMORY_WAIT`] is refused (`RESOURCE_EXHAUSTED` with
//!   `RetryInfo`) having written nothing.
//!
//! Chunks change no guarantee: the call answers OK only once every task and every event record
//! was confirmed. Event records go with the last chunk, complete by then. A chunk the broker
//! fails stops the call (`UNAVAILABLE`) like a failed single hand-off: what was confirmed stays
//! handed off, and a retry with the idempotency key resumes under the same event and delivery
//! ids.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_broker::{Outgoing, Topology};
use herald_core::wire::{DeliveryTask, EventRecord, Record};
use herald_proto::v1 as pb;
use herald_store::SubscriptionIndex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::Ingest;
use crate::error::{Error, Result};
use crate::validate;

/// What a delivery task is counted as beside its payload: its metadata line, routing key and
/// trace headers take less.
pub const TASK_OVERHEAD_BYTES: usize = 1024;

/// How long a call waits for room under `HERALD_PUBLISH_MEMORY`, and the retry delay it is
/// told when there is none.
pub const MEMORY_WAIT: Duration = Duration::from_secs(1);

/// Ledger records per broker message are capped by size so one message stays small.
const LEDGER_MESSAGE_BYTES: usize = 512 * 1024;

/// Bytes a delivery task of a `payload_bytes` payload is counted as.
pub fn task_bytes(payload_bytes: usize) -> u64 {
    (payload_bytes + TASK_OVERHEAD_BYTES) as u64
}

/// Delivery-task bytes held by the publish calls in flight (`HERALD_PUBLISH_MEMORY`), counted
/// in KiB.
#[derive(Clone)]
pub struct MemoryGate {
    kib: Arc<Semaphore>,
    capacity: u32,
}

impl MemoryGate {
    pub fn new(bytes: u64) -> Self {
        let capacity = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        Self {
            kib: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// Takes `bytes` (at most the whole gate) until the permit is dropped, waiting up to
    /// [`MEMORY_WAIT`] (first come, first served), else `RESOURCE_EXHAUSTED` with a retry
    /// delay.
    pub async fn hold(&self, bytes: u64) -> Result<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.capacity);
        match tokio::time::timeout(MEMORY_WAIT, self.kib.clone().acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(Error::Internal("the publish memory gate is closed".into())),
            Err(_elapsed) => {
                metrics::counter!("herald_publish_memory_refused_total").increment(1);
                Err(Error::RateLimited {
                    message: format!(
                        "ingest is busy: publishes in flight hold its HERALD_PUBLISH_MEMORY of {} bytes for delivery tasks; retry after {} ms",
                        u64::from(self.capacity) * 1024,
                        MEMORY_WAIT.as_millis()
                    ),
                    retry_after: MEMORY_WAIT,
                })
            }
        }
    }
}

/// Refuses, before anything is parsed or reserved, a call that its endpoints without a filter
/// alone take past `HERALD_MAX_FANOUT_BYTES`: [`check_fanout`] after matching would refuse it
/// anyway, and parsing first would let a tenant make ingest validate any number of payloads of
/// calls bound to be refused.
pub fn check_reach(
    index: &SubscriptionIndex,
    events: &[pb::PublishRequest],
    max: u64,
) -> Result<()> {
    let (mut deliveries, mut bytes, mut maybe_more) = (0u64, 0u64, false);
    for e in events {
        let (sure, filtered) = index.reach(&e.event_type);
        deliveries += sure as u64;
        bytes = bytes.saturating_add((sure as u64).saturating_mul(task_bytes(e.payload.len())));
        maybe_more |= filtered > 0;
    }
    let at_least = if maybe_more { "at least " } else { "" };
    fanout_limit(deliveries, bytes, max, at_least)
}

/// Refuses a call whose tasks would weigh more than `HERALD_MAX_FANOUT_BYTES`.
pub fn check_fanout(deliveries: u64, bytes: u64, max: u64) -> Result<()> {
    fanout_limit(deliveries, bytes, max, "")
}

fn fanout_limit(deliveries: u64, bytes: u64, max: u64, at_least: &str) -> Result<()> {
    if bytes <= max {
        return Ok(());
    }
    metrics::counter!("herald_publish_fanout_refused_total").increment(1);
    Err(Error::ResourceExhausted(format!(
        "this call fans out to {at_least}{deliveries} deliveries weighing {at_least}{bytes} bytes (each its payload plus {TASK_OVERHEAD_BYTES} bytes); HERALD_MAX_FANOUT_BYTES allows {max} per call: send fewer events per call, or smaller payloads"
    )))
}

/// One accepted event on its way to the broker: its record fills up as its tasks are built.
pub struct Outbound<'a> {
    event: &'a validate::Event,
    event_id: Uuid,
    targets: Vec<Uuid>,
    /// Targets whose tasks were built so far.
    built: usize,
    record: Option<EventRecord>,
    /// Trace context of the event's span, carried by each of its tasks.
    trace: Vec<(String, String)>,
}

impl<'a> Outbound<'a> {
    pub fn new(event: &'a validate::Event, event_id: Uuid, targets: Vec<Uuid>) -> Self {
        // One span per event: its deliveries (and their retries and ledger writes) carry it.
        let span = tracing::info_span!(
            "ingest.fan_out",
            event_type = %event.event_type,
            %event_id,
            deliveries = targets.len()
        );
        let trace = span.in_scope(herald_telemetry::trace_headers);
        Self {
            event,
            event_id,
            targets,
            built: 0,
            record: None,
            trace,
        }
    }

    pub fn deliveries(&self) -> usize {
        self.targets.len()
    }

    /// Bytes of all of this event's tasks, as [`task_bytes`] counts them.
    pub fn fanout_bytes(&self) -> u64 {
        task_bytes(self.event.payload.len()).saturating_mul(self.targets.len() as u64)
    }

    fn done(&self) -> bool {
        self.record.is_some() && self.built == self.targets.len()
    }

    /// Builds the tasks of the targets up to `end`, adding their deliveries to the record.
    fn build(&mut self, end: usize, tenant: Uuid, now: DateTime<Utc>) -> Vec<DeliveryTask> {
        let e = self.event;
        let (part, tasks) = EventRecord::fan_out(
            self.event_id,
            tenant,
            &e.event_type,
            &e.payload,
            e.occurred_at.unwrap_or(now),
            e.idempotency_key.clone(),
            &self.targets[self.built..end],
        );
        match &mut self.record {
            Some(record) => record.deliveries.extend(part.deliveries),
            None => self.record = Some(part),
        }
        self.built = end;
        tasks
    }
}

impl Ingest {
    /// Hands the tasks and records of `events` to the broker, at most `chunk_bytes` of tasks
    /// at a time; `Ok` once all of it was confirmed.
    pub async fn hand_off(
        &self,
        tenant: Uuid,
        events: &mut [Outbound<'_>],
        chunk_bytes: usize,
    ) -> Result<(), herald_broker::Error> {
        let topo = self.publisher.topology();
        let now = Utc::now();
        loop {
            let mut messages = next_chunk(topo, tenant, events, chunk_bytes, now);
            self.route_burst(tenant, &mut messages);
            if !events.iter().all(Outbound::done) {
                self.publisher.publish(&messages).await?;
                continue;
            }
            // The last chunk: delivery tasks on their own, event records in ledger messages
            // shared with concurrent calls.
            let records = events
                .iter_mut()
                .filter_map(|e| e.record.take())
                .map(Record::Event)
                .collect();
            let trace = herald_telemetry::trace_headers();
            let records = futures::future::join_all(
                chunk_records(records)
                    .into_iter()
                    .map(|chunk| self.records.submit(chunk, trace.clone())),
            );
            let (tasks, records) = tokio::join!(self.publisher.publish(&messages), records);
            return records.into_iter().fold(tasks, |all, r| all.and(r));
        }
    }

    /// Sends the tasks of `messages` past `tenant`'s fresh allowance to its shard's bulk queue
    /// (see [`crate::fresh_lane`]).
    fn route_burst(&self, tenant: Uuid, messages: &mut [Outgoing]) {
        let fresh = self.fresh_lane.admit(tenant, messages.len());
        let topo = self.publisher.topology();
        for m in &mut messages[fresh..] {
            let (body, headers) = (std::mem::take(&mut m.body), std::mem::take(&mut m.headers));
            *m = topo.bulk_message(tenant, body, headers);
        }
    }
}

/// The next chunk of tasks: events in order, as many tasks as fit in `chunk_bytes` (at least
/// one, so that a chunk always makes progress).
fn next_chunk(
    topo: &Topology,
    tenant: Uuid,
    events: &mut [Outbound<'_>],
    chunk_bytes: usize,
    now: DateTime<Utc>,
) -> Vec<Outgoing> {
    let mut messages = Vec::new();
    let mut room = chunk_bytes as u64;
    for e in events.iter_mut().filter(|e| !e.done()) {
        let each = task_bytes(e.event.payload.len());
        let fit = (room / each).max(u64::from(messages.is_empty()));
        let end = e.targets.len().min(e.built + fit as usize);
        if end == e.built && e.record.is_some() {
            break;
        }
        room = room.saturating_sub((end - e.built) as u64 * each);
        for task in e.build(end, tenant, now) {
            messages.push(topo.work_message(tenant, task.encode(), e.trace.clone()));
        }
        if !e.done() {
            break;
        }
    }
    messages
}

/// Splits records into groups of at most about [`LEDGER_MESSAGE_BYTES`] each.
fn chunk_records(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for r in records {
        let approx = r.approx_size();
        if !batch.is_empty() && size + approx > LEDGER_MESSAGE_BYTES {
            out.push(std::mem::take(&mut batch));
            size = 0;
        }
        size += approx;
        batch.push(r);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload_bytes: usize) -> validate::Event {
        validate::Event {
            event_type: "a.b".into(),
            payload: vec![b' '; payload_bytes],
            idempotency_key: None,
            fingerprint: None,
            occurred_at: None,
        }
    }

    /// Builds every chunk; returns the endpoints of each chunk's tasks.
    fn chunks(events: &mut [Outbound<'_>], chunk_bytes: usize) -> Vec<Vec<Uuid>> {
        let topo = Topology::new("t", herald_broker::QueueType::Quorum);
        let tenant = Uuid::now_v7();
        let mut out = Vec::new();
        while !events.iter().all(Outbound::done) {
            let chunk = next_chunk(&topo, tenant, events, chunk_bytes, Utc::now());
            let bytes: usize = chunk.iter().map(|m| m.body.len()).sum();
            assert!(chunk.len() == 1 || bytes <= chunk_bytes, "{bytes} bytes");
            let endpoints = chunk
                .iter()
                .map(|m| {
                    let task = DeliveryTask::decode(&m.body).unwrap();
                    assert!(m.body.len() as u64 <= task_bytes(task.payload.len()));
                    task.endpoint_id
                })
                .collect();
            out.push(endpoints);
        }
        out
    }

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::now_v7()).collect()
    }

    #[test]
    fn chunks_hold_at_most_their_bytes_and_records_end_complete() {
        let (small, big, none) = (event(100), event(10_000), event(50));
        let (a, b) = (ids(30), ids(7));
        let mut events = vec![
            Outbound::new(&small, Uuid::now_v7(), a.clone()),
            Outbound::new(&none, Uuid::now_v7(), Vec::new()),
            Outbound::new(&big, Uuid::now_v7(), b.clone()),
        ];
        // 24 small tasks (1,124 bytes counted each) per chunk; then 2 of the big ones (11,024).
        let chunk_bytes = 27_000;
        let built = chunks(&mut events, chunk_bytes);
        let sizes: Vec<usize> = built.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![24, 6 + 1, 2, 2, 2]);
        let all: Vec<Uuid> = built.into_iter().flatten().collect();
        assert_eq!(all, [a.clone(), b.clone()].concat());
        let records: Vec<Vec<Uuid>> = events
            .iter()
            .map(|e| {
                let r = e.record.as_ref().expect("a record for every event");
                r.deliveries.iter().map(|d| d.endpoint_id).collect()
            })
            .collect();
        assert_eq!(records, vec![a, Vec::new(), b]);
    }

    #[test]
    fn a_task_larger_than_the_chunk_still_goes_alone() {
        let big = event(10_000);
        let targets = ids(3);
        let mut events = vec![Outbound::new(&big, Uuid::now_v7(), targets)];
        let sizes: Vec<usize> = chunks(&mut events, 100).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }

    #[test]
    fn fanout_over_the_limit_names_it() {
        assert!(check_fanout(2, 2_048, 2_048).is_ok());
        let e = check_fanout(2, 2_049, 2_048).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.to_string()
                .contains("HERALD_MAX_FANOUT_BYTES allows 2048"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_memory_gate_waits_then_refuses_with_a_retry_delay() {
        let gate = MemoryGate::new(10 * 1024);
        let held = gate.hold(8 * 1024).await.unwrap();
        // Room for 2 KiB more: granted at once; then nothing is left.
        let two = gate.hold(2 * 1024).await.unwrap();
        let started = std::time::Instant::now();
        let Err(Error::RateLimited {
            message,
            retry_after,
        }) = gate.hold(1).await
        else {
            panic!("expected a refusal");
        };
        assert!(started.elapsed() >= MEMORY_WAIT);
        assert_eq!(retry_after, MEMORY_WAIT);
        assert!(
            message.contains("HERALD_PUBLISH_MEMORY of 10240 bytes"),
            "{message}"
        );
        // Room comes back with the permits; a request for more than the gate takes all of it.
        drop((held, two));
        assert!(gate.hold(1 << 40).await.is_ok());
    }
}
