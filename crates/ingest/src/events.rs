//! The Events service: accept, dedupe, fan out, hand off.

use chrono::Utc;
use herald_core::wire::{EventRecord, Record};
use herald_dispatcher::ratelimit::Take;
use herald_proto::v1 as pb;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::idempotency::Reservation;
use crate::{Ingest, validate};

pub struct EventsApi(pub Ingest);

/// Ledger records per broker message are capped by size so one message stays small.
const LEDGER_MESSAGE_BYTES: usize = 512 * 1024;

/// One event on its way through a publish call.
enum Slot {
    Done(Result<pb::PublishResponse>),
    Pending {
        event: validate::Event,
        event_id: Uuid,
    },
    /// The same event (key and content) as the pending slot at this index earlier in the
    /// call: answered with that slot's outcome, as a duplicate.
    SameAs(usize),
}

impl Ingest {
    /// Refuses a call publishing `events` events when the tenant is over its publish rate
    /// (its own, else `HERALD_PUBLISH_RATE_LIMIT`). Shared by every ingest through Redis; when
    /// Redis cannot answer the limit is not enforced (the publish is not refused for it).
    async fn check_publish_rate(&self, tenant: Uuid, events: u32) -> Result<()> {
        if events == 0 {
            return Ok(());
        }
        let index = self.subscriptions.index(tenant).await?;
        let rate = index
            .publish_rate_limit
            .unwrap_or(self.config.publish_rate_limit);
        if rate == 0 {
            return Ok(());
        }
        let burst = publish_burst(rate, self.config.publish_burst);
        let bucket = format!("publish-rate:{tenant}");
        match self.limiter.take_from(&bucket, rate, burst, events).await {
            Ok(Take::Now) => Ok(()),
            Ok(Take::Wait(retry_after)) => {
                metrics::counter!("herald_publish_rate_limited_total").increment(1);
                Err(Error::RateLimited {
                    message: format!(
                        "publish rate limit of {rate} events/s for this tenant reached; retry after {} ms",
                        retry_after.as_millis()
                    ),
                    retry_after,
                })
            }
            Ok(Take::AboveBurst) => {
                metrics::counter!("herald_publish_rate_limited_total").increment(1);
                Err(Error::ResourceExhausted(format!(
                    "a call of {events} events exceeds this tenant's publish burst of {burst} events (limit {rate} events/s): send at most {burst} events per call"
                )))
            }
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "publish rate limit unavailable (redis), not enforced");
                Ok(())
            }
        }
    }

    /// Publishes a list of validated (or already failed) events with one broker round trip.
    async fn publish_all(
        &self,
        tenant: Uuid,
        input: Vec<Result<validate::Event>>,
    ) -> Vec<Result<pb::PublishResponse>> {
        // Reserve every key at once (one pipelined round trip rather than one per event). A key
        // repeated within the call with the same content gets what its first occurrence gets
        // (as a duplicate); with other content it is refused like any reuse of a key.
        let mut seen = std::collections::HashMap::new();
        let earlier: Vec<Option<(usize, bool)>> = input
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Ok(validate::Event {
                    idempotency_key: Some(key),
                    fingerprint,
                    ..
                }) => match seen.entry(key.as_str()) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let (at, first_fp) = *first.get();
                        Some((at, first_fp == fingerprint))
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert((i, fingerprint));
                        None
                    }
                },
                _ => None,
            })
            .collect();
        let reservations = futures::future::join_all(input.iter().zip(&earlier).map(
            |(item, earlier)| async move {
                match item {
                    Ok(validate::Event {
                        idempotency_key: Some(key),
                        fingerprint,
                        ..
                    }) if earlier.is_none() => Some(
                        self.idempotency
                            .reserve(tenant, key, fingerprint.as_deref().unwrap_or_default())
                            .await,
                    ),
                    _ => None,
                }
            },
        ))
        .await;
        let mut slots: Vec<Slot> = Vec::with_capacity(input.len());
        for ((item, earlier), reservation) in input.into_iter().zip(earlier).zip(reservations) {
            let slot = match (item, reservation) {
                (Err(e), _) => Slot::Done(Err(e)),
                (Ok(event), None) if earlier.is_some_and(|(_, same)| !same) => {
                    Slot::Done(Err(crate::idempotency::reused(
                        event.idempotency_key.as_deref().unwrap_or_default(),
                    )))
                }
                (Ok(_), None) if earlier.is_some() => match earlier.map(|(i, _)| (i, &slots[i])) {
                    Some((_, Slot::Done(r))) => Slot::Done(as_duplicate(r)),
                    Some((i, Slot::Pending { .. })) => Slot::SameAs(i),
                    _ => Slot::Done(Err(Error::Aborted(
                        "this idempotency key appears earlier in the same batch; retry it on its own"
                            .into(),
                    ))),
                },
                (Ok(event), None) => Slot::Pending {
                    event,
                    event_id: Uuid::now_v7(),
                },
                (Ok(event), Some(Ok(Reservation::Publish { event_id }))) => {
                    Slot::Pending { event, event_id }
                }
                (
                    Ok(_),
                    Some(Ok(Reservation::Duplicate {
                        event_id,
                        deliveries,
                    })),
                ) => {
                    metrics::counter!("herald_idempotency_hits_total").increment(1);
                    Slot::Done(Ok(pb::PublishResponse {
                        event_id: event_id.to_string(),
                        deliveries,
                        duplicate: true,
                    }))
                }
                (Ok(_), Some(Err(e))) => Slot::Done(Err(e)),
            };
            slots.push(slot);
        }
        if !slots.iter().any(|s| matches!(s, Slot::Pending { .. })) {
            return slots
                .into_iter()
                .map(|s| match s {
                    Slot::Done(r) => r,
                    Slot::Pending { .. } | Slot::SameAs(_) => unreachable!(),
                })
                .collect();
        }

        let index = match self.subscriptions.index(tenant).await {
            Ok(i) => i,
            Err(e) => {
                self.release_all(tenant, &slots).await;
                let msg = e.to_string();
                let code = e.code();
                return slots
                    .into_iter()
                    .map(|s| match s {
                        Slot::Done(r) => r,
                        Slot::Pending { .. } | Slot::SameAs(_) => Err(clone_err(code, &msg)),
                    })
                    .collect();
            }
        };

        if index.reject_unknown {
            for slot in &mut slots {
                if let Slot::Pending { event, .. } = slot
                    && !index.accepts(&event.event_type)
                {
                    if let Some(key) = &event.idempotency_key {
                        self.idempotency.release(tenant, key).await;
                    }
                    *slot = Slot::Done(Err(Error::InvalidArgument(format!(
                        "event type {:?} is not one of this tenant's event types (create it with CreateEventType, or unarchive it)",
                        event.event_type
                    ))));
                }
            }
        }

        let topo = self.publisher.topology();
        let now = Utc::now();
        let mut messages = Vec::new();
        let mut records: Vec<Record> = Vec::new();
        let mut accepted: Vec<Option<(Uuid, u32)>> = Vec::with_capacity(slots.len());
        for slot in &slots {
            let Slot::Pending { event, event_id } = slot else {
                accepted.push(None);
                continue;
            };
            let targets = index.targets(&event.event_type, &event.payload);
            // One span per event: its deliveries (and their retries and ledger writes) carry it.
            let span = tracing::info_span!(
                "ingest.fan_out",
                event_type = %event.event_type,
                event_id = tracing::field::Empty,
                deliveries = targets.len()
            );
            let _entered = span.enter();
            let trace = herald_telemetry::trace_headers();
            let (record, tasks) = EventRecord::fan_out(
                *event_id,
                tenant,
                &event.event_type,
                &event.payload,
                event.occurred_at.unwrap_or(now),
                event.idempotency_key.clone(),
                &targets,
            );
            span.record("event_id", tracing::field::display(record.event_id));
            for task in &tasks {
                messages.push(topo.work_message(tenant, task.encode(), trace.clone()));
            }
            accepted.push(Some((record.event_id, tasks.len() as u32)));
            records.push(Record::Event(record));
        }
        // Delivery tasks on their own, event records in ledger messages shared with concurrent
        // calls; OK only once the broker confirmed all of it.
        let trace = herald_telemetry::trace_headers();
        let records = futures::future::join_all(
            chunk_records(records)
                .into_iter()
                .map(|chunk| self.records.submit(chunk, trace.clone())),
        );
        let (tasks, records) = tokio::join!(self.publisher.publish(&messages), records);
        let handed_off = records.into_iter().fold(tasks, |all, r| all.and(r));
        crate::metrics::handed_off(&accepted, handed_off.is_ok());
        // Record the outcome of every key at once, then answer in input order.
        let same_as: Vec<Option<usize>> = slots
            .iter()
            .map(|s| match s {
                Slot::SameAs(i) => Some(*i),
                _ => None,
            })
            .collect();
        let mut results = futures::future::join_all(slots.into_iter().zip(accepted).map(|(slot, acc)| {
                let handed_off = &handed_off;
                async move {
                    let (event, event_id, n) = match (slot, acc) {
                        (Slot::Done(r), _) => return r,
                        // Filled in below from the slot it repeats.
                        (Slot::SameAs(_), _) => {
                            return Err(Error::Internal("unanswered repeat".into()));
                        }
                        (Slot::Pending { event, .. }, Some((event_id, n))) => (event, event_id, n),
                        (Slot::Pending { .. }, None) => {
                            unreachable!("every pending slot was accepted")
                        }
                    };
                    match handed_off {
                        Ok(()) => {
                            if let Some(key) = &event.idempotency_key {
                                let fp = event.fingerprint.as_deref().unwrap_or_default();
                                self.idempotency.complete(tenant, key, fp, event_id, n).await;
                            }
                            tracing::debug!(%event_id, event_type = %event.event_type, deliveries = n, "event accepted");
                            Ok(pb::PublishResponse {
                                event_id: event_id.to_string(),
                                deliveries: n,
                                duplicate: false,
                            })
                        }
                        Err(e) => {
                            // Some of it may be in the broker: a retry resumes this event id.
                            if let Some(key) = &event.idempotency_key {
                                let fp = event.fingerprint.as_deref().unwrap_or_default();
                                self.idempotency.interrupted(tenant, key, fp, event_id).await;
                            }
                            Err(clone_broker_err(e))
                        }
                    }
                }
            }))
            .await;
        for (at, first) in same_as.into_iter().enumerate() {
            if let Some(first) = first {
                results[at] = as_duplicate(&results[first]);
            }
        }
        results
    }

    async fn release_all(&self, tenant: Uuid, slots: &[Slot]) {
        for s in slots {
            if let Slot::Pending { event, .. } = s
                && let Some(key) = &event.idempotency_key
            {
                self.idempotency.release(tenant, key).await;
            }
        }
    }
}

/// The answer to a repeat of an event published earlier in the same call: the first one's,
/// as a duplicate.
fn as_duplicate(first: &Result<pb::PublishResponse>) -> Result<pb::PublishResponse> {
    match first {
        Ok(r) => Ok(pb::PublishResponse {
            duplicate: true,
            ..r.clone()
        }),
        Err(e) => Err(e.clone()),
    }
}

fn clone_err(code: tonic::Code, msg: &str) -> Error {
    match code {
        tonic::Code::Unavailable => Error::Unavailable(msg.to_owned()),
        _ => Error::Internal(msg.to_owned()),
    }
}

fn clone_broker_err(e: &herald_broker::Error) -> Error {
    tracing::warn!(error = %e, "hand-off to the broker failed");
    Error::Unavailable("event not accepted: the message broker is unavailable, retry later".into())
}

/// Bucket size of a publish limit: `burst` seconds' worth of events, at least one.
fn publish_burst(rate: u32, burst: std::time::Duration) -> u32 {
    ((u64::from(rate) * burst.as_millis() as u64) / 1000).clamp(1, u64::from(u32::MAX)) as u32
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

fn to_event(r: &pb::PublishRequest, max: usize) -> Result<validate::Event> {
    validate::event(
        &r.event_type,
        &r.payload,
        r.idempotency_key.as_deref(),
        r.occurred_at.as_ref(),
        max,
    )
}

#[tonic::async_trait]
impl pb::events_server::Events for EventsApi {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let started = std::time::Instant::now();
        let tenant = self.0.tenant(&req).await?;
        let event = to_event(req.get_ref(), self.0.config.max_payload_bytes)?;
        self.0.check_publish_rate(tenant, 1).await?;
        let result = self
            .0
            .publish_all(tenant, vec![Ok(event)])
            .await
            .pop()
            .expect("one result per event");
        metrics::histogram!("herald_publish_seconds").record(started.elapsed().as_secs_f64());
        Ok(Response::new(result?))
    }

    async fn publish_batch(
        &self,
        req: Request<pb::PublishBatchRequest>,
    ) -> Result<Response<pb::PublishBatchResponse>, Status> {
        let tenant = self.0.tenant(&req).await?;
        let events = &req.get_ref().events;
        let max_batch = self.0.config.max_batch;
        if events.is_empty() {
            return Err(Error::InvalidArgument("events is empty".into()).into());
        }
        if events.len() > max_batch {
            return Err(Error::InvalidArgument(format!(
                "batch has {} events; at most {max_batch} are allowed",
                events.len()
            ))
            .into());
        }
        let max = self.0.config.max_payload_bytes;
        let input: Vec<_> = events.iter().map(|e| to_event(e, max)).collect();
        let valid = input.iter().filter(|e| e.is_ok()).count() as u32;
        self.0.check_publish_rate(tenant, valid).await?;
        let started = std::time::Instant::now();
        let results = self.0.publish_all(tenant, input).await;
        metrics::histogram!("herald_publish_seconds").record(started.elapsed().as_secs_f64());
        let results = results
            .into_iter()
            .map(|r| pb::PublishResult {
                outcome: Some(match r {
                    Ok(ok) => pb::publish_result::Outcome::Accepted(ok),
                    Err(e) => pb::publish_result::Outcome::Error(pb::PublishError {
                        code: e.code() as i32,
                        message: e.to_string(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(pb::PublishBatchResponse { results }))
    }
}
