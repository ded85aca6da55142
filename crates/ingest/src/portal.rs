//! The Portal service: links and sessions of the embeddable webhooks page (herald-console).
//!
//! `CreatePortalSession` makes a single-use link for one tenant, with the operator token (any
//! tenant) or a tenant credential with `portal:create` (its own tenant only; the session's
//! scopes never exceed the caller's). `RedeemPortalLink` trades the link's token (the call's
//! bearer) for a session credential, once. `EndPortalSession` ends the calling session at once
//! on every service (a revocation like a key's: change notices reach every key cache).
//! Tokens are never logged; the store keeps their SHA-256 only ([`herald_store::portal`]).

use herald_proto::v1 as pb;
use herald_store::{CredentialKind, NewPortalLink, Principal, Scope};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::credentials::{self, LINK_TTL, SESSION_TTL};
use crate::error::{Error, Result, parse_id};
use crate::preauth::{LINK_PREFIX, PortalCaller};
use crate::{Ingest, convert};

/// What a link that cannot open a session is told (whatever the reason: unknown, used,
/// expired, or made by a key revoked since).
const BAD_LINK: &str = "invalid, used or expired portal link";

pub struct PortalApi(pub Ingest);

impl Ingest {
    /// Who calls the Portal service: what [`crate::preauth`] found, else checked here.
    async fn portal_caller<T>(&self, req: &Request<T>) -> Result<PortalCaller> {
        if let Some(c) = req.extensions().get::<PortalCaller>() {
            return Ok(c.clone());
        }
        let auth = crate::auth::authorization(req);
        if herald_store::is_operator(auth, self.config.admin_token.as_deref()) {
            return Ok(PortalCaller::Operator);
        }
        match herald_store::bearer(auth) {
            Some(t) if t.starts_with(LINK_PREFIX) => Ok(PortalCaller::Link(t.to_owned())),
            _ => crate::auth::principal(&self.keys, auth)
                .await
                .map(PortalCaller::Tenant),
        }
    }
}

/// The tenant a session is asked for, and the credential asking (`None`: the operator).
fn requested_tenant(caller: PortalCaller, tenant_id: &str) -> Result<(Uuid, Option<Principal>)> {
    match caller {
        PortalCaller::Operator => Ok((parse_id("tenant_id", tenant_id)?, None)),
        PortalCaller::Tenant(p) => {
            p.require(Scope::PortalCreate)?;
            // Another tenant's id is answered as a missing one.
            if !tenant_id.trim().is_empty() && parse_id("tenant_id", tenant_id)? != p.tenant {
                return Err(Error::NotFound("tenant"));
            }
            Ok((p.tenant, Some(p)))
        }
        PortalCaller::Link(_) => Err(Error::PermissionDenied(
            "CreatePortalSession takes the operator token or a credential with the scope \"portal:create\", not a link token"
                .into(),
        )),
    }
}

/// Whether `token` has the form of a link token (`hl_` and 43 URL-safe base64 characters).
fn link_shaped(token: &str) -> bool {
    token.strip_prefix(LINK_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[tonic::async_trait]
impl pb::portal_server::Portal for PortalApi {
    async fn create_portal_session(
        &self,
        req: Request<pb::CreatePortalSessionRequest>,
    ) -> Result<Response<pb::CreatePortalSessionResponse>, Status> {
        let s = &self.0;
        let caller = s.portal_caller(&req).await?;
        let r = req.into_inner();
        let (tenant_id, principal) = requested_tenant(caller, &r.tenant_id)?;
        let ttl = credentials::seconds("ttl_seconds", r.ttl_seconds, SESSION_TTL)?;
        let link_ttl = credentials::seconds("link_ttl_seconds", r.link_ttl_seconds, LINK_TTL)?;
        let scopes = credentials::session_scopes(&r.scopes, r.read_only, principal.as_ref())?;
        let theme = credentials::theme(r.theme.as_ref())?;
        let link = s
            .store
            .create_portal_link(&NewPortalLink {
                tenant_id,
                scopes,
                session_ttl_seconds: ttl,
                link_ttl_seconds: link_ttl,
                theme,
                created_by_key: principal.map(|p| p.key_id),
            })
            .await
            .map_err(Error::from)?;
        tracing::info!(%tenant_id, scopes = ?scopes.names(), by_operator = principal.is_none(), "portal link created");
        let url = match s.config.console_url.as_str() {
            "" => String::new(),
            base => format!("{base}/portal/open?token={}", link.token),
        };
        Ok(Response::new(pb::CreatePortalSessionResponse {
            url,
            token: link.token,
            link_expires_at: Some(convert::ts(link.expires_at)),
            scopes: scopes.names(),
            ttl_seconds: ttl,
        }))
    }

    async fn redeem_portal_link(
        &self,
        req: Request<pb::RedeemPortalLinkRequest>,
    ) -> Result<Response<pb::RedeemPortalLinkResponse>, Status> {
        let s = &self.0;
        let PortalCaller::Link(token) = s.portal_caller(&req).await? else {
            return Err(Error::Unauthenticated(
                "RedeemPortalLink takes a portal link's token: send \"authorization: Bearer hl_...\"",
            )
            .into());
        };
        if !link_shaped(&token) {
            return Err(Error::Unauthenticated(BAD_LINK).into());
        }
        if !s.keys.take_lookup() {
            return Err(Error::Unavailable(
                "too many calls with unknown credentials reached this server: the link could not be checked now, retry shortly".into(),
            )
            .into());
        }
        let hash = herald_store::hash_api_key(&token);
        let Some(session) = s
            .store
            .redeem_portal_link(&hash)
            .await
            .map_err(Error::from)?
        else {
            return Err(Error::Unauthenticated(BAD_LINK).into());
        };
        tracing::info!(tenant_id = %session.tenant_id, "portal link redeemed");
        Ok(Response::new(pb::RedeemPortalLinkResponse {
            session_token: session.token,
            tenant_id: session.tenant_id.to_string(),
            tenant_name: session.tenant_name,
            scopes: session.scopes.names(),
            expires_at: Some(convert::ts(session.expires_at)),
            theme: Some(credentials::theme_to_pb(&session.theme)),
            allowed_origins: session.allowed_origins,
        }))
    }

    async fn end_portal_session(
        &self,
        req: Request<pb::EndPortalSessionRequest>,
    ) -> Result<Response<pb::EndPortalSessionResponse>, Status> {
        let s = &self.0;
        let p = match s.portal_caller(&req).await? {
            PortalCaller::Tenant(p) if p.kind == CredentialKind::Portal => p,
            PortalCaller::Tenant(_) => {
                return Err(Error::PermissionDenied(
                    "EndPortalSession ends a portal session (its hs_ credential as the bearer): revoke an API key with Admin.RevokeApiKey".into(),
                )
                .into());
            }
            PortalCaller::Operator | PortalCaller::Link(_) => {
                return Err(Error::PermissionDenied(
                    "EndPortalSession takes the session's own credential (hs_...) as the bearer"
                        .into(),
                )
                .into());
            }
        };
        let token = herald_store::bearer(crate::auth::authorization(&req)).unwrap_or_default();
        s.store
            .end_portal_session(&herald_store::hash_api_key(token))
            .await
            .map_err(Error::from)?;
        // This instance at once; the others through the revocation's change notice.
        s.keys.apply(herald_store::Change::Tenant(p.tenant));
        tracing::info!(tenant_id = %p.tenant, "portal session ended");
        Ok(Response::new(pb::EndPortalSessionResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_have_one_shape() {
        let ok = herald_store::new_secret("hl_");
        assert!(link_shaped(&ok));
        assert!(!link_shaped(&herald_store::new_secret("hk_")));
        assert!(!link_shaped("hl_short"));
        assert!(!link_shaped(&format!("{ok}x")));
    }
}
