//! The Endpoints and EventTypes services.

use std::collections::BTreeMap;

use herald_core::matching::validate_event_type;
use herald_core::signing::Secret;
use herald_proto::v1 as pb;
use herald_store::{EndpointChanges, NewEndpoint};
use tonic::{Request, Response, Status};

use crate::convert::{self, scheme_from_pb};
use crate::error::{Error, parse_id};
use crate::{Ingest, validate};

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
        let tenant = s.tenant(&req).await?;
        let r = req.into_inner();
        let tenant_row = s.store.get_tenant(tenant).await.map_err(store_err)?;
        let scheme = scheme_from_pb(r.signing_scheme)?;
        let secret = match r.secret.as_deref() {
            Some(v) => Secret::parse(v, scheme)
                .map_err(|e| Error::InvalidArgument(format!("secret: {e}")))?,
            None => Secret::generate(),
        };
        let headers: BTreeMap<String, String> = r.headers.into_iter().collect();
        let new = NewEndpoint {
            url: validate::url(&r.url, s.config.require_https, &s.policy)?,
            description: validate::description(&r.description)?,
            event_types: validate::event_types(&r.event_types)?,
            enabled: r.enabled.unwrap_or(true),
            scheme,
            secret,
            timeout_ms: validate::timeout_ms(
                r.timeout_ms
                    .unwrap_or(s.config.default_timeout.as_millis().min(u32::MAX as u128) as u32),
            )?,
            retry_schedule_ms: if r.retry_schedule_ms.is_empty() {
                None
            } else {
                Some(validate::retry_schedule(&r.retry_schedule_ms)?)
            },
            headers: validate::headers(&headers, &tenant_row.header_prefix)?,
        };
        let count = s.store.count_endpoints(tenant).await.map_err(store_err)?;
        if count >= s.config.max_endpoints_per_tenant {
            return Err(Error::ResourceExhausted(format!(
                "tenant has {count} endpoints; the limit is {}",
                s.config.max_endpoints_per_tenant
            ))
            .into());
        }
        let e = s
            .store
            .create_endpoint(tenant, &new)
            .await
            .map_err(store_err)?;
        s.subscriptions.invalidate(tenant);
        tracing::info!(tenant_id = %tenant, endpoint_id = %e.id, "endpoint created");
        Ok(Response::new(pb::CreateEndpointResponse {
            endpoint: Some(convert::endpoint(&e)),
            secret: e.secret.expose().to_owned(),
        }))
    }

    async fn get_endpoint(
        &self,
        req: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let tenant = self.0.tenant(&req).await?;
        let id = parse_id("id", &req.get_ref().id)?;
        let e = self
            .0
            .store
            .get_endpoint(tenant, id)
            .await
            .map_err(store_err)?;
        Ok(Response::new(convert::endpoint(&e)))
    }

    async fn list_endpoints(
        &self,
        req: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let tenant = self.0.tenant(&req).await?;
        let r = req.get_ref();
        let after = if r.cursor.is_empty() {
            None
        } else {
            Some(parse_id("cursor", &r.cursor)?)
        };
        let limit = page_size(r.page_size);
        let rows = self
            .0
            .store
            .list_endpoints(tenant, after, limit)
            .await
            .map_err(store_err)?;
        let next_cursor = if rows.len() as u32 == limit {
            rows.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: rows.iter().map(convert::endpoint).collect(),
            next_cursor,
        }))
    }

    async fn update_endpoint(
        &self,
        req: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let s = &self.0;
        let tenant = s.tenant(&req).await?;
        let r = req.into_inner();
        let id = parse_id("id", &r.id)?;
        let current = s.store.get_endpoint(tenant, id).await.map_err(store_err)?;
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
                .map(|u| validate::url(u, s.config.require_https, &s.policy))
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
                .map(|d| {
                    if d.delays_ms.is_empty() {
                        Ok(None)
                    } else {
                        validate::retry_schedule(&d.delays_ms).map(Some)
                    }
                })
                .transpose()?,
            headers: r
                .headers
                .map(|h| {
                    validate::headers(&h.headers.into_iter().collect(), &current.header_prefix)
                })
                .transpose()?,
        };
        let e = s
            .store
            .update_endpoint(tenant, id, &changes)
            .await
            .map_err(store_err)?;
        s.subscriptions.invalidate(tenant);
        tracing::info!(tenant_id = %tenant, endpoint_id = %id, enabled = e.enabled, "endpoint updated");
        Ok(Response::new(convert::endpoint(&e)))
    }

    async fn delete_endpoint(
        &self,
        req: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        let tenant = self.0.tenant(&req).await?;
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
        let tenant = self.0.tenant(&req).await?;
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
}

#[tonic::async_trait]
impl pb::event_types_server::EventTypes for EventTypesApi {
    async fn create_event_type(
        &self,
        req: Request<pb::CreateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let tenant = self.0.tenant(&req).await?;
        let r = req.into_inner();
        validate_event_type(&r.name).map_err(|e| Error::InvalidArgument(format!("name: {e}")))?;
        let description = validate::description(&r.description)?;
        let t = self
            .0
            .store
            .create_event_type(tenant, &r.name, &description)
            .await
            .map_err(store_err)?;
        Ok(Response::new(pb::EventType {
            name: t.name,
            description: t.description,
            created_at: Some(convert::ts(t.created_at)),
        }))
    }

    async fn list_event_types(
        &self,
        req: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        let tenant = self.0.tenant(&req).await?;
        let rows = self
            .0
            .store
            .list_event_types(tenant)
            .await
            .map_err(store_err)?;
        Ok(Response::new(pb::ListEventTypesResponse {
            event_types: rows
                .into_iter()
                .map(|t| pb::EventType {
                    name: t.name,
                    description: t.description,
                    created_at: Some(convert::ts(t.created_at)),
                })
                .collect(),
        }))
    }
}
