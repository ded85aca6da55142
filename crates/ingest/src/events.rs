//! The Events service: accept, dedupe, fan out, hand off.
//!
//! A call reserves its events' idempotency keys, matches the events against the tenant's
//! subscriptions (filters within their step budget), and then either refuses itself whole
//! (over a fan-out or memory limit of [`crate::fanout`], or the tenant's share of payload CPU
//! of [`crate::payload_work`]: the keys are released, nothing was written) or hands every
//! delivery task and event record to the broker before it answers.

use std::sync::Arc;

use herald_proto::v1 as pb;
use herald_redis::Take;
use herald_store::Targets;
use tokio::sync::OwnedSemaphorePermit;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::fanout::{self, Outbound};
use crate::idempotency::{self, Reservation};
use crate::payload_work::Ticket;
use crate::subscriptions::Index;
use crate::{Ingest, validate};

pub struct EventsApi(pub Ingest);

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

impl Slot {
    fn pending(&self) -> Option<&validate::Event> {
        match self {
            Slot::Pending { event, .. } => Some(event),
            _ => None,
        }
    }
}

/// The filter work of a call's pending events (see `SubscriptionIndex::filter_work`).
fn filter_work(index: &Index, slots: &[Slot], steps: u64) -> u64 {
    slots
        .iter()
        .filter_map(Slot::pending)
        .map(|e| index.filter_work(&e.event_type, e.payload.len(), steps))
        .fold(0, u64::saturating_add)
}

/// Where each pending event goes, its filters within `HERALD_FILTER_STEP_BUDGET`, run where
/// `ticket` says (see [`crate::payload_work`]).
async fn match_filters(
    ticket: Ticket,
    index: Arc<Index>,
    slots: Vec<Slot>,
    steps: u64,
) -> (Vec<Slot>, Vec<Option<Targets>>) {
    ticket
        .run(move || {
            let targets = slots
                .iter()
                .map(|s| {
                    s.pending()
                        .map(|e| index.targets_within(&e.event_type, &e.payload, steps))
                })
                .collect();
            (slots, targets)
        })
        .await
}

/// The answers of a call in which no event is left to publish.
fn finished(slots: Vec<Slot>) -> Vec<Result<pb::PublishResponse>> {
    slots
        .into_iter()
        .map(|s| match s {
            Slot::Done(r) => r,
            Slot::Pending { .. } | Slot::SameAs(_) => unreachable!("no event left to publish"),
        })
        .collect()
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
        let burst = herald_redis::publish_burst(rate, self.config.publish_burst);
        let taken = self
            .limiter
            .take_publish(tenant, rate, self.config.publish_burst, events);
        match taken.await {
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

    /// Publishes a list of validated (or already failed) events: one answer per event, or an
    /// error for the whole call when it is over a limit of [`crate::fanout`] (then nothing of
    /// it was written).
    async fn publish_all(
        &self,
        tenant: Uuid,
        input: Vec<Result<validate::Event>>,
    ) -> Result<Vec<Result<pb::PublishResponse>>> {
        let mut slots = self.reserve_keys(tenant, input).await;
        if !slots.iter().any(|s| s.pending().is_some()) {
            return Ok(finished(slots));
        }
        let index = match self.subscriptions.index(tenant).await {
            Ok(i) => i,
            Err(e) => {
                self.release_all(tenant, &slots).await;
                let msg = e.to_string();
                let code = e.code();
                return Ok(slots
                    .into_iter()
                    .map(|s| match s {
                        Slot::Done(r) => r,
                        Slot::Pending { .. } | Slot::SameAs(_) => Err(clone_err(code, &msg)),
                    })
                    .collect());
            }
        };
        if index.reject_unknown {
            self.refuse_unknown_types(tenant, &index, &mut slots).await;
        }
        let steps = self.config.filter_step_budget;
        let ticket = match self
            .payload_work
            .admit(tenant, filter_work(&index, &slots, steps))
            .await
        {
            Ok(ticket) => ticket,
            Err(e) => {
                self.release_all(tenant, &slots).await;
                return Err(e);
            }
        };
        let (slots, targets) = match_filters(ticket, index, slots, steps).await;
        let mut outbound = Vec::new();
        let mut accepted: Vec<Option<(Uuid, u32)>> = Vec::with_capacity(slots.len());
        for (slot, targets) in slots.iter().zip(targets) {
            let (Slot::Pending { event, event_id }, Some(targets)) = (slot, targets) else {
                accepted.push(None);
                continue;
            };
            report_exhausted(*event_id, event, &targets.exhausted);
            accepted.push(Some((*event_id, targets.endpoints.len() as u32)));
            outbound.push(Outbound::new(event, *event_id, targets.endpoints));
        }
        let handed_off = match self.admit(&outbound).await {
            Ok(_held) => {
                let chunk = self.config.publish_chunk_bytes;
                self.hand_off(tenant, &mut outbound, chunk).await
            }
            Err(e) => {
                drop(outbound);
                self.release_all(tenant, &slots).await;
                return Err(e);
            }
        };
        drop(outbound);
        crate::metrics::handed_off(&accepted, handed_off.is_ok());
        Ok(self.answer(tenant, slots, accepted, handed_off).await)
    }

    /// Reserves the events' idempotency keys: a slot per event, pending when it is to be
    /// published, done when it is already answered (invalid, a duplicate, a key in use).
    async fn reserve_keys(&self, tenant: Uuid, input: Vec<Result<validate::Event>>) -> Vec<Slot> {
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
                        idempotency::reserve(
                            &self.idempotency,
                            tenant,
                            key,
                            fingerprint.as_deref().unwrap_or_default(),
                        )
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
        slots
    }

    /// Answers the events of types the tenant does not know, when it refuses those.
    async fn refuse_unknown_types(&self, tenant: Uuid, index: &Index, slots: &mut [Slot]) {
        for slot in slots {
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

    /// Refuses a call whose fan-out is over `HERALD_MAX_FANOUT_BYTES`; else holds the bytes
    /// its largest chunk needs under `HERALD_PUBLISH_MEMORY` until dropped.
    async fn admit(&self, events: &[Outbound<'_>]) -> Result<OwnedSemaphorePermit> {
        let deliveries = events.iter().map(|e| e.deliveries() as u64).sum();
        let bytes = events
            .iter()
            .map(Outbound::fanout_bytes)
            .fold(0, u64::saturating_add);
        fanout::check_fanout(deliveries, bytes, self.config.max_fanout_bytes)?;
        let chunk = self.config.publish_chunk_bytes as u64;
        self.publish_memory.hold(bytes.min(chunk)).await
    }

    /// Records the outcome of every key at once, then answers in input order.
    async fn answer(
        &self,
        tenant: Uuid,
        slots: Vec<Slot>,
        accepted: Vec<Option<(Uuid, u32)>>,
        handed_off: Result<(), herald_broker::Error>,
    ) -> Vec<Result<pb::PublishResponse>> {
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

/// Logs and counts the endpoints an event is not delivered to because their filter ran out of
/// its step budget (no payload content in the log).
fn report_exhausted(event_id: Uuid, event: &validate::Event, exhausted: &[(Uuid, u64)]) {
    for (endpoint_id, steps) in exhausted {
        metrics::counter!("herald_filter_budget_exhausted_total").increment(1);
        tracing::warn!(
            %endpoint_id,
            %event_id,
            event_type = %event.event_type,
            steps,
            "payload filter ran out of its step budget: the event is not delivered to this endpoint"
        );
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

impl Ingest {
    /// Validates a call's events, on the payload threads when their payloads are large
    /// ([`crate::payload_work`]); first refuses a call over `HERALD_MAX_FANOUT_BYTES` through
    /// its endpoints without filters alone, before parsing anything.
    async fn validate(
        &self,
        tenant: Uuid,
        events: Vec<pb::PublishRequest>,
    ) -> Result<Vec<Result<validate::Event>>> {
        // Without the index (database down, nothing cached) the check after matching decides.
        if let Ok(index) = self.subscriptions.index(tenant).await {
            fanout::check_reach(&index, &events, self.config.max_fanout_bytes)?;
        }
        let bytes = events
            .iter()
            .map(|e| e.payload.len() as u64)
            .fold(0, u64::saturating_add);
        let max = self.config.max_payload_bytes;
        // A small call takes a fraction of a millisecond: no work to charge or refuse.
        let work = if bytes <= crate::payload_work::INLINE_WORK {
            0
        } else {
            bytes
        };
        let ticket = self.payload_work.admit(tenant, work).await?;
        Ok(ticket
            .run(move || events.iter().map(|e| to_event(e, max)).collect())
            .await)
    }
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
        let tenant = self
            .0
            .tenant(&req, herald_store::Scope::EventsPublish)
            .await?;
        let event = self
            .0
            .validate(tenant, vec![req.into_inner()])
            .await?
            .pop()
            .expect("one event in, one out")?;
        self.0.check_publish_rate(tenant, 1).await?;
        let results = self.0.publish_all(tenant, vec![Ok(event)]).await;
        metrics::histogram!("herald_publish_seconds").record(started.elapsed().as_secs_f64());
        let result = results?.pop().expect("one result per event");
        Ok(Response::new(result?))
    }

    async fn publish_batch(
        &self,
        req: Request<pb::PublishBatchRequest>,
    ) -> Result<Response<pb::PublishBatchResponse>, Status> {
        let tenant = self
            .0
            .tenant(&req, herald_store::Scope::EventsPublish)
            .await?;
        let events = req.into_inner().events;
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
        let input = self.0.validate(tenant, events).await?;
        let valid = input.iter().filter(|e| e.is_ok()).count() as u32;
        self.0.check_publish_rate(tenant, valid).await?;
        let started = std::time::Instant::now();
        let results = self.0.publish_all(tenant, input).await;
        metrics::histogram!("herald_publish_seconds").record(started.elapsed().as_secs_f64());
        let results = results?
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
