//! The Admin service: tenants and API keys, for the operator.

use herald_proto::v1 as pb;
use herald_store::TenantChanges;
use tonic::{Request, Response, Status};

use crate::error::parse_id;
use crate::{Ingest, convert, validate};

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
        let key = self
            .0
            .store
            .create_api_key(tenant_id, &name)
            .await
            .map_err(crate::Error::from)?;
        tracing::info!(%tenant_id, key_id = %key.id, "api key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            key_id: key.id.to_string(),
            tenant_id: key.tenant_id.to_string(),
            api_key: key.secret,
        }))
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
