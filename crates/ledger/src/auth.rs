//! Which tenant is calling the delivery log, decided from the call's headers before its
//! message is read ([`herald_proto::server::CredentialsFirst`]): a call without a valid API
//! key is answered `UNAUTHENTICATED` whatever its message (oversized or malformed), and it
//! costs no database query when its token is known (valid or not) or when the budget of
//! lookups of unknown tokens is spent (`HERALD_AUTH_LOOKUP_RATE`, see
//! [`herald_store::KeyCache`]).

use std::sync::Arc;

use herald_proto::server::Gate;
use herald_store::{KeyCache, KeyCheck};
use tonic::Status;
use tonic::codegen::BoxFuture;
use uuid::Uuid;

/// The tenant whose key [`TenantKey`] accepted, in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct Authenticated(pub Uuid);

/// Admits calls carrying a tenant's API key.
#[derive(Clone)]
pub struct TenantKey {
    pub keys: KeyCache,
    /// The operator token (`HERALD_ADMIN_TOKEN`), only to refuse it as not a tenant's key.
    pub admin_token: Option<Arc<str>>,
}

impl TenantKey {
    /// The tenant of the API key in an `authorization` header, or why the call is refused.
    pub async fn tenant(&self, authorization: Option<&str>) -> Result<Uuid, Status> {
        if herald_store::is_operator(authorization, self.admin_token.as_deref()) {
            return Err(Status::permission_denied(
                "tenant API key required: the operator token serves only the Admin service",
            ));
        }
        match self.keys.check(authorization).await {
            Ok(KeyCheck::Tenant(t)) => Ok(t),
            Ok(KeyCheck::Missing) => Err(Status::unauthenticated(
                "missing API key: send \"authorization: Bearer <key>\"",
            )),
            Ok(KeyCheck::Invalid) => Err(Status::unauthenticated("invalid or revoked API key")),
            Ok(KeyCheck::Unchecked) => Err(Status::unavailable(
                "too many calls with unknown credentials reached this server: the API key could not be checked now, retry shortly",
            )),
            Err(e) if e.is_unavailable() => {
                Err(Status::unavailable("database unavailable, retry later"))
            }
            Err(e) => {
                tracing::error!(error = %e, "api key check failed");
                Err(Status::internal("internal error"))
            }
        }
    }
}

impl Gate for TenantKey {
    type Pass = Authenticated;

    fn admit(&self, authorization: Option<String>) -> BoxFuture<Authenticated, Status> {
        let gate = self.clone();
        Box::pin(async move {
            gate.tenant(authorization.as_deref())
                .await
                .map(Authenticated)
        })
    }
}
