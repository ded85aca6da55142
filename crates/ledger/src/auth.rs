//! Which tenant is calling the delivery log, decided from the call's headers before its
//! message is read ([`herald_proto::server::CredentialsFirst`]): a call without a valid API
//! key is answered `UNAUTHENTICATED` whatever its message (oversized or malformed), and it
//! costs no database query when its token is known (valid or not) or when the budget of
//! lookups of unknown tokens is spent (`HERALD_AUTH_LOOKUP_RATE`, see
//! [`herald_store::KeyCache`]).
//!
//! The credential may be an API key or a portal session; each call asks it for the scope it
//! needs (`deliveries:read`, `deliveries:resend`), refused with `PERMISSION_DENIED` naming it.

use std::sync::Arc;

use herald_proto::server::Gate;
use herald_store::{KeyCache, KeyCheck, Principal};
use tonic::Status;
use tonic::codegen::BoxFuture;

use crate::error::{Error, Result};

/// The credential [`TenantKey`] accepted, in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct Authenticated(pub Principal);

/// Admits calls carrying a tenant's API key.
#[derive(Clone)]
pub struct TenantKey {
    pub keys: KeyCache,
    /// The operator token (`HERALD_ADMIN_TOKEN`), only to refuse it as not a tenant's key.
    pub admin_token: Option<Arc<str>>,
}

impl TenantKey {
    /// The principal of the credential in an `authorization` header, or why the call is
    /// refused.
    pub async fn principal(&self, authorization: Option<&str>) -> Result<Principal> {
        if herald_store::is_operator(authorization, self.admin_token.as_deref()) {
            return Err(Error::PermissionDenied(
                "tenant API key required: the operator token serves only the Admin service",
            ));
        }
        match self.keys.check(authorization).await? {
            KeyCheck::Tenant(t) => Ok(t),
            KeyCheck::Missing => Err(Error::Unauthenticated(
                "missing API key: send \"authorization: Bearer <key>\"",
            )),
            KeyCheck::Invalid => Err(Error::Unauthenticated(
                "invalid, expired or revoked API key",
            )),
            KeyCheck::Unchecked => Err(Error::Unavailable(
                "too many calls with unknown credentials reached this server: the API key could not be checked now, retry shortly",
            )),
        }
    }
}

impl Gate for TenantKey {
    type Pass = Authenticated;

    fn admit(&self, authorization: Option<String>) -> BoxFuture<Authenticated, Status> {
        let gate = self.clone();
        Box::pin(async move {
            gate.principal(authorization.as_deref())
                .await
                .map(Authenticated)
                .map_err(Status::from)
        })
    }
}
