//! The Admin service: tenants and API keys, for the operator.

use chrono::{Duration, Utc};
use herald_proto::v1 as pb;
use herald_store::TenantChanges;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::parse_id;
use crate::{Ingest, convert, credentials, validate};

/// A page size: default 50, at most 500.
fn page_size(requested: u32) -> u32 {
    match requested {
        0 => 50,
        n => n.min(500),
    }
}

/// The id a page starts after (empty: the first page).
fn cursor(c: &str) -> Result<Option<Uuid>, crate::Error> {
    if c.is_empty() {
        return Ok(None);
    }
    parse_id("cursor", c).map(Some)
}

/// Cuts a page fetched with one row too many, and gives the next cursor (empty: the last page).
fn page<T>(mut rows: Vec<T>, size: u32, id: impl Fn(&T) -> Uuid) -> (Vec<T>, String) {
    if rows.len() > size as usize {
        rows.truncate(size as usize);
        let next = rows.last().map(|r| id(r).to_string()).unwrap_or_default();
        (rows, next)
    } else {
        (rows, String::new())
    }
}

fn api_key(k: herald_store::ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.to_string(),
        tenant_id: k.tenant_id.to_string(),
        name: k.name,
        scopes: k.scopes,
        created_at: Some(convert::ts(k.created_at)),
        expires_at: k.expires_at.map(convert::ts),
        revoked_at: k.revoked_at.map(convert::ts),
    }
}

pub struct AdminApi(pub Ingest);

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminApi {
    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.0.admin(&req).await?;
        let r = req.into_inner();
        let name = validate::name("name", &r.name)?;
        let prefix = r
            .header_prefix
            .as_deref()
            .map(validate::header_prefix)
            .transpose()?;
        let ua = r
            .user_agent
            .as_deref()
            .map(validate::user_agent)
            .transpose()?;
        let changes = TenantChanges {
            name: Some(name),
            header_prefix: prefix,
            user_agent: ua,
            require_https: r.require_https,
            reject_unknown_event_types: r.reject_unknown_event_types,
            publish_rate_limit: r.publish_rate_limit.map(Some),
            portal_allowed_origins: Some(credentials::allowed_origins(&r.portal_allowed_origins)?),
        };
        let t = self
            .0
            .store
            .create_tenant(&changes)
            .await
            .map_err(crate::Error::from)?;
        tracing::info!(tenant_id = %t.id, "tenant created");
        Ok(Response::new(convert::tenant(&t)))
    }

    async fn get_tenant(
        &self,
        req: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.0.admin(&req).await?;
        let id = parse_id("id", &req.get_ref().id)?;
        let t = self
            .0
            .store
            .get_tenant(id)
            .await
            .map_err(crate::Error::from)?;
        Ok(Response::new(convert::tenant(&t)))
    }

    async fn update_tenant(
        &self,
        req: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.0.admin(&req).await?;
        let r = req.into_inner();
        let id = parse_id("id", &r.id)?;
        let changes = TenantChanges {
            name: r
                .name
                .as_deref()
                .map(|n| validate::name("name", n))
                .transpose()?,
            header_prefix: r
                .header_prefix
                .as_deref()
                .map(validate::header_prefix)
                .transpose()?,
            user_agent: r
                .user_agent
                .as_deref()
                .map(validate::user_agent)
                .transpose()?,
            require_https: r.require_https,
            reject_unknown_event_types: r.reject_unknown_event_types,
            publish_rate_limit: match (r.default_publish_rate_limit, r.publish_rate_limit) {
                (true, Some(_)) => {
                    return Err(crate::Error::InvalidArgument(
                        "give publish_rate_limit or default_publish_rate_limit, not both".into(),
                    )
                    .into());
                }
                (true, None) => Some(None),
                (false, rate) => rate.map(Some),
            },
            portal_allowed_origins: r
                .portal_allowed_origins
                .map(|l| credentials::allowed_origins(&l.values))
                .transpose()?,
        };
        let t = self
            .0
            .store
            .update_tenant(id, &changes)
            .await
            .map_err(crate::Error::from)?;
        // The publish policy (rate limit, unknown types) lives in the cached index.
        self.0.subscriptions.invalidate(id);
        Ok(Response::new(convert::tenant(&t)))
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        self.0.admin(&req).await?;
        let r = req.into_inner();
        let tenant_id = parse_id("tenant_id", &r.tenant_id)?;
        let name = if r.name.trim().is_empty() {
            "default".to_owned()
        } else {
            validate::name("name", &r.name)?
        };
        let scopes = credentials::scopes("scopes", &r.scopes)?;
        let expires_at = match r.ttl_seconds {
            None | Some(0) => None,
            Some(s) => Some(Utc::now() + Duration::seconds(i64::from(s))),
        };
        let key = self
            .0
            .store
            .create_api_key(tenant_id, &name, scopes, expires_at)
            .await
            .map_err(crate::Error::from)?;
        tracing::info!(%tenant_id, key_id = %key.id, scopes = ?key.scopes.names(), "api key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            key_id: key.id.to_string(),
            tenant_id: key.tenant_id.to_string(),
            api_key: key.secret,
            scopes: key.scopes.names(),
            expires_at: key.expires_at.map(convert::ts),
        }))
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.0.admin(&req).await?;
        let r = req.into_inner();
        let size = page_size(r.page_size);
        let rows = self
            .0
            .store
            .list_tenants(cursor(&r.cursor)?, size + 1)
            .await
            .map_err(crate::Error::from)?;
        let (rows, next_cursor) = page(rows, size, |t| t.id);
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: rows.iter().map(convert::tenant).collect(),
            next_cursor,
        }))
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        self.0.admin(&req).await?;
        let r = req.into_inner();
        let tenant_id = parse_id("tenant_id", &r.tenant_id)?;
        let size = page_size(r.page_size);
        let rows = self
            .0
            .store
            .list_api_keys(tenant_id, r.include_revoked, cursor(&r.cursor)?, size + 1)
            .await
            .map_err(crate::Error::from)?;
        let (rows, next_cursor) = page(rows, size, |k| k.id);
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: rows.into_iter().map(api_key).collect(),
            next_cursor,
        }))
    }

    async fn list_troubled_tenants(
        &self,
        req: Request<pb::ListTroubledTenantsRequest>,
    ) -> Result<Response<pb::ListTroubledTenantsResponse>, Status> {
        self.0.admin(&req).await?;
        let limit = match req.get_ref().limit {
            0 => 20,
            n => n.min(100),
        };
        let tenants = crate::troubled::list(&self.0, limit).await?;
        Ok(Response::new(pb::ListTroubledTenantsResponse { tenants }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        self.0.admin(&req).await?;
        let id = parse_id("key_id", &req.get_ref().key_id)?;
        self.0
            .store
            .revoke_api_key(id)
            .await
            .map_err(crate::Error::from)?;
        self.0.keys.clear();
        tracing::info!(key_id = %id, "api key revoked");
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }
}
