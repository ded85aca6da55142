//! The Endpoints and EventTypes services.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use herald_core::filter::{Budget, Filter};
use herald_core::matching::validate_event_type;
use herald_core::signing::{Scheme, Secret};
use herald_core::wire::{
    AttemptRecord, DeliveryKey, DeliveryRef, DeliveryStatus, DeliveryTask, EventRecord,
    LedgerBatch, Record, Trigger, VERSION,
};
use herald_proto::v1 as pb;
use herald_store::{EndpointChanges, EventTypeChanges, EventTypePosition, NewEndpoint, Scope};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::convert::{self, scheme_from_pb};
use crate::delivery_state::State;
use crate::error::{Error, parse_id};
use crate::{Ingest, validate};

/// Event type of a test send when none is given.
const TEST_EVENT_TYPE: &str = "webhook.test";
/// Rotation grace period when none is given.
const DEFAULT_GRACE_SECONDS: u32 = 24 * 3600;

pub struct EndpointsApi(pub Ingest);
pub struct EventTypesApi(pub Ingest);

fn store_err(e: herald_store::Error) -> Status {
    Error::from(e).into()
}

fn page_size(requested: u32) -> u32 {
    match requested {
        0 => 50,
        n => n.min(500),
    }
}

#[tonic::async_trait]
impl pb::endpoints_server::Endpoints for EndpointsApi {
    async fn create_endpoint(
        &self,
        req: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::CreateEndpointResponse>, Status> {
        let s = &self.0;
        let tenant = s.tenant(&req, Scope::EndpointsWrite).await?;
        let r = req.into_inner();
        let tenant_row = s.store.get_tenant(tenant).await.map_err(store_err)?;
        let scheme = scheme_from_pb(r.signing_scheme)?;
        let require_https = s.config.require_https || tenant_row.require_https;
        let secret = match r.secret.as_deref() {
            Some(v) => Secret::parse(v, scheme)
                .map_err(|e| Error::InvalidArgument(format!("secret: {e}")))?,
            None => Secret::generate(),
        };
        let headers: BTreeMap<String, String> = r.headers.into_iter().collect();
        let new = NewEndpoint {
            url: validate::url(&r.url, require_https, &s.policy)?,
            description: validate::description(&r.description)?,
            event_types: validate::event_types(&r.event_types)?,
            enabled: r.enabled.unwrap_or(true),
            scheme,
            secret,
            timeout_ms: validate::timeout_ms(
                r.timeout_ms
                    .unwrap_or(s.config.default_timeout.as_millis().min(u32::MAX as u128) as u32),
            )?,
            retry_schedule_ms: validate::retry_choice(&r.retry_schedule_ms, r.no_retries)?,
            headers: validate::headers(&headers, &tenant_row.header_prefix)?,
            filter: validate::filter(r.filter.as_deref().unwrap_or_default())?,
            rate_limit_per_second: validate::rate_limit(r.rate_limit_per_second.unwrap_or(0))?,
            max_in_flight: validate::max_in_flight(r.max_in_flight.unwrap_or(0))?,
        };
        validate::resolved_url(&new.url, &s.policy).await?;
        let e = s
            .store
            .create_endpoint(tenant, &new, s.config.max_endpoints_per_tenant)
            .await
            .map_err(store_err)?;
        s.subscriptions.invalidate(tenant);
        tracing::info!(tenant_id = %tenant, endpoint_id = %e.id, "endpoint created");
        let default_retry = s.config.retry_schedule.as_millis();
        let mut card =
            convert::endpoint_with_stats(&e, None, s.stats_window_hours(), &default_retry);
        State::fresh(e.enabled).fill(&mut card);
        Ok(Response::new(pb::CreateEndpointResponse {
            endpoint: Some(card),
            secret: e.secret.expose().to_owned(),
        }))
    }

    async fn get_endpoint(
        &self,
        req: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let tenant = self.0.tenant(&req, Scope::EndpointsRead).await?;
        let id = parse_id("id", &req.get_ref().id)?;
        let e = self
            .0
            .store
            .get_endpoint(tenant, id)
            .await
            .map_err(store_err)?;
        let mut cards = self.0.cards(std::slice::from_ref(&e)).await?;
        Ok(Response::new(cards.remove(0)))
    }

    async fn list_endpoints(
        &self,
        req: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let tenant = self.0.tenant(&req, Scope::EndpointsRead).await?;
        let r = req.get_ref();
        let after = if r.cursor.is_empty() {
            None
        } else {
            Some(parse_id("cursor", &r.cursor)?)
        };
        let limit = page_size(r.page_size);
        // One row past the page tells whether another page exists: the last page carries no
        // cursor, even when it is full.
        let mut rows = self
            .0
            .store
            .list_endpoints(tenant, after, limit + 1)
            .await
            .map_err(store_err)?;
        let next_cursor = if rows.len() as u32 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: self.0.cards(&rows).await?,
            next_cursor,
        }))
    }

    async fn update_endpoint(
        &self,
        req: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let s = &self.0;
        let tenant = s.tenant(&req, Scope::EndpointsWrite).await?;
        let r = req.into_inner();
        let id = parse_id("id", &r.id)?;
        let current = s.store.get_endpoint(tenant, id).await.map_err(store_err)?;
        let require_https = s.config.require_https
            || s.store
                .get_tenant(tenant)
                .await
                .map_err(store_err)?
                .require_https;
        let scheme = r.signing_scheme.map(scheme_from_pb).transpose()?;
        let effective = scheme.unwrap_or(current.scheme);
        let secret = match r.secret.as_deref() {
            Some(v) => Some(
                Secret::parse(v, effective)
                    .map_err(|e| Error::InvalidArgument(format!("secret: {e}")))?,
            ),
            None => {
                if scheme.is_some() {
                    Secret::parse(current.secret.expose(), effective).map_err(|_| {
                        Error::InvalidArgument(format!(
                            "the current secret is not valid for the {effective} scheme: send a new secret with the scheme"
                        ))
                    })?;
                }
                None
            }
        };
        let changes = EndpointChanges {
            url: r
                .url
                .as_deref()
                .map(|u| validate::url(u, require_https, &s.policy))
                .transpose()?,
            description: r
                .description
                .as_deref()
                .map(validate::description)
                .transpose()?,
            event_types: r
                .event_types
                .map(|l| validate::event_types(&l.values))
                .transpose()?,
            enabled: r.enabled,
            scheme,
            secret,
            timeout_ms: r.timeout_ms.map(validate::timeout_ms).transpose()?,
            retry_schedule_ms: r
                .retry_schedule
                .map(|d| validate::retry_choice(&d.delays_ms, d.no_retries))
                .transpose()?,
            headers: r
                .headers
                .map(|h| {
                    validate::headers(&h.headers.into_iter().collect(), &current.header_prefix)
                })
                .transpose()?,
            filter: r.filter.as_deref().map(validate::filter).transpose()?,
            rate_limit_per_second: r
                .rate_limit_per_second
                .map(validate::rate_limit)
                .transpose()?,
            max_in_flight: r.max_in_flight.map(validate::max_in_flight).transpose()?,
        };
        if let Some(url) = &changes.url {
            validate::resolved_url(url, &s.policy).await?;
        }
        let e = s
            .store
            .update_endpoint(tenant, id, &changes)
            .await
            .map_err(store_err)?;
        s.subscriptions.invalidate(tenant);
        tracing::info!(tenant_id = %tenant, endpoint_id = %id, enabled = e.enabled, "endpoint updated");
        let mut cards = s.cards(std::slice::from_ref(&e)).await?;
        Ok(Response::new(cards.remove(0)))
    }

    async fn delete_endpoint(
        &self,
        req: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        let tenant = self.0.tenant(&req, Scope::EndpointsWrite).await?;
        let id = parse_id("id", &req.get_ref().id)?;
        self.0
            .store
            .delete_endpoint(tenant, id)
            .await
            .map_err(store_err)?;
        self.0.subscriptions.invalidate(tenant);
        tracing::info!(tenant_id = %tenant, endpoint_id = %id, "endpoint deleted");
        Ok(Response::new(pb::DeleteEndpointResponse {}))
    }

    async fn get_endpoint_secret(
        &self,
        req: Request<pb::GetEndpointSecretRequest>,
    ) -> Result<Response<pb::GetEndpointSecretResponse>, Status> {
        let tenant = self.0.tenant(&req, Scope::SecretsRead).await?;
        let id = parse_id("id", &req.get_ref().id)?;
        let e = self
            .0
            .store
            .get_endpoint(tenant, id)
            .await
            .map_err(store_err)?;
        Ok(Response::new(pb::GetEndpointSecretResponse {
            secret: e.secret.expose().to_owned(),
        }))
    }

    async fn rotate_secret(
        &self,
        req: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        let s = &self.0;
        let tenant = s.tenant(&req, Scope::EndpointsWrite).await?;
        let r = req.into_inner();
        let id = parse_id("endpoint_id", &r.endpoint_id)?;
        let grace = r.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
        if grace > validate::MAX_GRACE_SECONDS {
            return Err(Error::InvalidArgument(format!(
                "grace_period_seconds must be at most {} (7 days)",
                validate::MAX_GRACE_SECONDS
            ))
            .into());
        }
        let current = s.store.get_endpoint(tenant, id).await.map_err(store_err)?;
        // `sha256=<hex>` has room for one signature: a hex endpoint has no overlap, so the new
        // secret takes over at once, and asking for a grace period is an error, not a no-op.
        let grace = match (current.scheme, r.grace_period_seconds) {
            (Scheme::Hex, Some(g)) if g > 0 => {
                return Err(Error::InvalidArgument(
                    "grace_period_seconds: the hex scheme carries one signature, so its secret cannot overlap; rotate with 0 (or no grace period) and switch the receiver at the same time".into(),
                )
                .into());
            }
            (Scheme::Hex, _) => 0,
            _ => grace,
        };
        let secret = match r.secret.as_deref() {
            Some(v) => Secret::parse(v, current.scheme)
                .map_err(|e| Error::InvalidArgument(format!("secret: {e}")))?,
            None => Secret::generate(),
        };
        if secret.expose() == current.secret.expose() {
            return Err(Error::InvalidArgument(
                "secret: the new secret must differ from the current one".into(),
            )
            .into());
        }
        let until = Utc::now() + chrono::Duration::seconds(i64::from(grace));
        let e = s
            .store
            .rotate_secret(tenant, id, &secret, until)
            .await
            .map_err(store_err)?;
        tracing::info!(tenant_id = %tenant, endpoint_id = %id, grace_seconds = grace, "endpoint secret rotated");
        Ok(Response::new(pb::RotateSecretResponse {
            secret: e.secret.expose().to_owned(),
            previous_expires_at: Some(convert::ts(until)),
        }))
    }

    async fn send_test(
        &self,
        req: Request<pb::SendTestRequest>,
    ) -> Result<Response<pb::SendTestResponse>, Status> {
        let s = &self.0;
        let tenant = s.tenant(&req, Scope::DeliveriesResend).await?;
        let r = req.into_inner();
        let id = parse_id("endpoint_id", &r.endpoint_id)?;
        let event_type = r.event_type.as_deref().unwrap_or(TEST_EVENT_TYPE);
        let payload = match r.payload {
            Some(p) => p,
            None => serde_json::to_vec(&serde_json::json!({
                "type": event_type,
                "data": {
                    "message": "This is a test delivery from Herald.",
                    "endpoint_id": id.to_string(),
                },
                "created_at": Utc::now().to_rfc3339(),
            }))
            .expect("a JSON value always serialises"),
        };
        let event = validate::event(event_type, &payload, None, None, s.config.max_payload_bytes)?;
        // Held until the endpoint answered (or timed out): a slot first, so that a refused
        // call takes no token of the tenant's rate.
        let _slot = s.test_slots.take(tenant)?;
        s.charge_test_sends(tenant, 1).await?;
        let endpoint = Arc::new(s.store.get_endpoint(tenant, id).await.map_err(store_err)?);
        Ok(Response::new(s.send_test(endpoint, event).await))
    }

    async fn test_filter(
        &self,
        req: Request<pb::TestFilterRequest>,
    ) -> Result<Response<pb::TestFilterResponse>, Status> {
        let tenant = self.0.tenant(&req, Scope::EndpointsRead).await?;
        let r = req.into_inner();
        let max = self.0.config.max_payload_bytes;
        if r.payload.len() > max {
            return Err(Error::InvalidArgument(format!(
                "payload is {} bytes; the limit is {max} bytes (HERALD_MAX_PAYLOAD_BYTES), as for a publish",
                r.payload.len()
            ))
            .into());
        }
        let doc = validate::filter(&r.filter)?
            .ok_or_else(|| Error::InvalidArgument("filter is empty".into()))?;
        let filter = Filter::parse(&doc).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // The budget an event's filters share at publish, whole: running out is an answer that
        // depends on the filter and the payload only (INVALID_ARGUMENT, never worth a retry).
        let steps = self.0.config.filter_step_budget;
        let work =
            (r.payload.len() as u64).saturating_add(filter.cost_hint(r.payload.len()).min(steps));
        let ticket = self.0.payload_work.admit(tenant, work).await?;
        let explanation = ticket
            .run(move || {
                let payload: serde_json::Value =
                    serde_json::from_slice(&r.payload).map_err(|e| {
                        Error::InvalidArgument(format!("payload is not valid JSON: {e}"))
                    })?;
                Ok::<_, Error>(filter.explain_within(&payload, &mut Budget::new(steps))?)
            })
            .await?;
        Ok(Response::new(pb::TestFilterResponse {
            matches: explanation.is_none(),
            explanation: explanation.unwrap_or_default(),
        }))
    }
}

impl Ingest {
    /// Window of the statistics shown on endpoints, in hours.
    pub fn stats_window_hours(&self) -> u32 {
        (self.config.stats_window.as_secs() / 3600).max(1) as u32
    }

    /// Endpoints as the API shows them: with their statistics (one query for all of them)
    /// and delivery states (one Redis read, at the same time; never an error).
    async fn cards(&self, rows: &[herald_store::Endpoint]) -> Result<Vec<pb::Endpoint>, Status> {
        let window = self.stats_window_hours();
        let default_retry = self.config.retry_schedule.as_millis();
        let ids: Vec<Uuid> = rows.iter().map(|e| e.id).collect();
        let (stats, states) = tokio::join!(
            self.store.endpoint_stats(&ids, window),
            self.delivery_states.of(rows)
        );
        let stats = stats.map_err(store_err)?;
        Ok(rows
            .iter()
            .zip(states)
            .map(|(e, state)| {
                let mut card =
                    convert::endpoint_with_stats(e, stats.get(&e.id), window, &default_retry);
                state.fill(&mut card);
                card
            })
            .collect())
    }

    /// POSTs a synthetic event to one endpoint now and records it in the ledger as a test
    /// delivery (trigger `test`). A test is one attempt: it is never retried.
    async fn send_test(
        &self,
        endpoint: Arc<herald_store::Endpoint>,
        event: validate::Event,
    ) -> pb::SendTestResponse {
        let now = Utc::now();
        let task = DeliveryTask {
            v: VERSION,
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            tenant_id: endpoint.tenant_id,
            endpoint_id: endpoint.id,
            event_type: event.event_type,
            attempt: 1,
            tiers: None,
            due: None,
            rest_ms: None,
            parked: None,
            turn: None,
            trigger: Trigger::Test,
            created_at: now,
            payload: event.payload,
        };
        let outcome = herald_outbound::post_task(&self.http, &endpoint, &task, now).await;
        let (status, body, latency, error) = match outcome {
            Ok(r) => (Some(r.status), r.body, r.latency, None),
            Err(f) => (None, Vec::new(), f.latency, Some(f.reason)),
        };
        let success = status.is_some_and(|c| (200..300).contains(&c));
        let latency_ms = latency.as_millis().min(u32::MAX as u128) as u32;
        let excerpt = herald_outbound::excerpt(&body);
        let records = vec![
            Record::Event(EventRecord {
                event_id: task.event_id,
                tenant_id: task.tenant_id,
                event_type: task.event_type.clone(),
                occurred_at: now,
                accepted_at: now,
                idempotency_key: None,
                payload: String::from_utf8_lossy(&task.payload).into_owned(),
                deliveries: vec![DeliveryRef {
                    delivery_id: task.delivery_id,
                    endpoint_id: task.endpoint_id,
                }],
                test: true,
            }),
            Record::Attempt(AttemptRecord {
                attempt_id: Uuid::now_v7(),
                delivery: DeliveryKey::of(&task),
                attempt: 1,
                trigger: Trigger::Test,
                started_at: now,
                latency_ms,
                response_status: status,
                response_body: excerpt.clone(),
                error: error.clone(),
                outcome: if success {
                    DeliveryStatus::Success
                } else {
                    DeliveryStatus::Failed
                },
                next_retry_at: None,
            }),
        ];
        let message = self.publisher.topology().ledger_message(
            LedgerBatch::new(records).encode(),
            herald_telemetry::trace_headers(),
        );
        if let Err(e) = self.publisher.publish(&[message]).await {
            tracing::warn!(endpoint_id = %endpoint.id, error = %e, "test delivery sent but not recorded: broker unavailable");
        }
        tracing::info!(endpoint_id = %endpoint.id, delivery_id = %task.delivery_id, success, status = status.unwrap_or(0), "test delivery sent");
        pb::SendTestResponse {
            delivery_id: task.delivery_id.to_string(),
            event_id: task.event_id.to_string(),
            success,
            response_status: u32::from(status.unwrap_or(0)),
            latency_ms,
            response_body: excerpt,
            error: error.unwrap_or_default(),
        }
    }
}

#[tonic::async_trait]
impl pb::event_types_server::EventTypes for EventTypesApi {
    async fn create_event_type(
        &self,
        req: Request<pb::CreateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let tenant = self.0.tenant(&req, Scope::EventTypesWrite).await?;
        let r = req.into_inner();
        validate_event_type(&r.name).map_err(|e| Error::InvalidArgument(format!("name: {e}")))?;
        let description = validate::description(&r.description)?;
        let group = validate::group(&r.group)?;
        let t = self
            .0
            .store
            .create_event_type(
                tenant,
                &r.name,
                &description,
                &group,
                self.0.config.max_event_types_per_tenant,
            )
            .await
            .map_err(store_err)?;
        self.0.subscriptions.invalidate(tenant);
        Ok(Response::new(convert::event_type(t)))
    }

    async fn update_event_type(
        &self,
        req: Request<pb::UpdateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let tenant = self.0.tenant(&req, Scope::EventTypesWrite).await?;
        let r = req.into_inner();
        validate_event_type(&r.name).map_err(|e| Error::InvalidArgument(format!("name: {e}")))?;
        let changes = EventTypeChanges {
            description: r
                .description
                .as_deref()
                .map(validate::description)
                .transpose()?,
            group: r.group.as_deref().map(validate::group).transpose()?,
            archived: r.archived,
        };
        let t = self
            .0
            .store
            .update_event_type(tenant, &r.name, &changes)
            .await
            .map_err(store_err)?;
        self.0.subscriptions.invalidate(tenant);
        Ok(Response::new(convert::event_type(t)))
    }

    async fn list_event_types(
        &self,
        req: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        let tenant = self.0.tenant(&req, Scope::EventTypesRead).await?;
        let r = req.get_ref();
        if let Some(g) = &r.group {
            validate::no_nul("group", g)?;
        }
        let after = match r.cursor.trim() {
            "" => None,
            c => Some(parse_event_type_cursor(c)?),
        };
        let limit = page_size(r.page_size);
        // One row past the page tells whether another page exists.
        let mut rows = self
            .0
            .store
            .event_types_page(
                tenant,
                r.include_archived,
                r.group.as_deref(),
                after.as_ref(),
                Some(limit + 1),
            )
            .await
            .map_err(store_err)?;
        let next_cursor = if rows.len() as u32 > limit {
            rows.truncate(limit as usize);
            rows.last().map(event_type_cursor).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListEventTypesResponse {
            event_types: rows.into_iter().map(convert::event_type).collect(),
            next_cursor,
        }))
    }
}

/// The cursor of the page after `t`: its group and name (neither can hold NUL), base64url.
fn event_type_cursor(t: &herald_store::EventType) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}\0{}", t.group, t.name))
}

fn parse_event_type_cursor(cursor: &str) -> Result<EventTypePosition, Error> {
    use base64::Engine;
    let bad = || Error::InvalidArgument("cursor is not one ListEventTypes returned".into());
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (group, name) = text.split_once('\0').ok_or_else(bad)?;
    Ok(EventTypePosition {
        group: group.to_owned(),
        name: name.to_owned(),
    })
}
