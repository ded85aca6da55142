//! Who is calling: the operator (Admin) or a tenant (everything else).

use herald_store::KeyCheck;
use tonic::Request;
use uuid::Uuid;

use crate::Ingest;
use crate::error::{Error, Result};

fn authorization<T>(req: &Request<T>) -> Option<&str> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

/// The tenant of a key check, or why the call is refused. `authorization` is the header the
/// check was made of: the operator token is recognised and refused (`PERMISSION_DENIED`), as
/// a tenant key is on the Admin service.
pub(crate) fn tenant_of(
    check: herald_store::Result<KeyCheck>,
    authorization: Option<&str>,
    admin_token: Option<&str>,
) -> Result<Uuid> {
    match check? {
        KeyCheck::Tenant(t) => Ok(t),
        KeyCheck::Missing => Err(Error::Unauthenticated(
            "missing API key: send \"authorization: Bearer <key>\"",
        )),
        KeyCheck::Invalid if herald_store::is_operator(authorization, admin_token) => {
            Err(Error::PermissionDenied(
                "tenant API key required: the operator token serves only the Admin service",
            ))
        }
        KeyCheck::Invalid => Err(Error::Unauthenticated("invalid or revoked API key")),
    }
}

impl Ingest {
    /// The tenant of the calling API key: the one [`crate::preauth::KeyFirst`] already found,
    /// else looked up here.
    pub async fn tenant<T>(&self, req: &Request<T>) -> Result<Uuid> {
        if let Some(crate::preauth::Authenticated(t)) = req.extensions().get() {
            return Ok(*t);
        }
        tenant_of(
            self.keys.check(authorization(req)).await,
            authorization(req),
            self.config.admin_token.as_deref(),
        )
    }

    /// Checks the operator token: a tenant's API key is recognised and refused
    /// (`PERMISSION_DENIED`), any other wrong token is `UNAUTHENTICATED`.
    pub async fn admin<T>(&self, req: &Request<T>) -> Result<()> {
        let Some(expected) = self.config.admin_token.as_deref() else {
            return Err(Error::PermissionDenied(
                "the Admin service is disabled: set HERALD_ADMIN_TOKEN",
            ));
        };
        let Some(given) = herald_store::bearer(authorization(req)) else {
            return Err(Error::Unauthenticated(
                "missing operator token: send \"authorization: Bearer <token>\"",
            ));
        };
        if herald_store::same_secret(given, expected) {
            return Ok(());
        }
        match self.keys.check(authorization(req)).await? {
            KeyCheck::Tenant(_) => Err(Error::PermissionDenied(
                "operator token required: a tenant API key cannot use the Admin service",
            )),
            KeyCheck::Missing | KeyCheck::Invalid => {
                Err(Error::Unauthenticated("invalid operator token"))
            }
        }
    }
}
