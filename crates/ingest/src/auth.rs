//! Who is calling: the operator (Admin) or a tenant's credential (everything else), and what
//! that credential may do.
//!
//! Both checks run from the call's headers before its message is read ([`crate::preauth`]).
//! Neither costs a database query for a token already known (valid or invalid), and tokens
//! never seen are looked up within a budget (`HERALD_AUTH_LOOKUP_RATE`, see
//! [`herald_store::KeyCache`]): a flood of junk tokens leaves the pool to real tenants.
//!
//! A tenant's credential is an API key or a portal session ([`Principal`]); each handler asks
//! for the one [`Scope`] its call needs ([`Ingest::tenant`]), so a narrow key or a read-only
//! session is refused with `PERMISSION_DENIED` naming the scope it lacks.

use herald_store::{KeyCache, KeyCheck, Principal, Scope};
use tonic::Request;
use uuid::Uuid;

use crate::Ingest;
use crate::error::{Error, Result};

/// What a caller whose token could not be checked is told (see [`KeyCheck::Unchecked`]).
const UNCHECKED: &str = "too many calls with unknown credentials reached this server: the API key could not be checked now, retry shortly";

pub(crate) fn authorization<T>(req: &Request<T>) -> Option<&str> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

/// The principal of the credential in an `authorization` header, or why the call is refused.
/// The operator token is recognised without a lookup and refused (`PERMISSION_DENIED`), as a
/// tenant key is on the Admin service.
pub(crate) async fn tenant_key(
    keys: &KeyCache,
    authorization: Option<&str>,
    admin_token: Option<&str>,
) -> Result<Principal> {
    if herald_store::is_operator(authorization, admin_token) {
        return Err(Error::PermissionDenied(
            "tenant API key required: the operator token serves only the Admin service".into(),
        ));
    }
    principal(keys, authorization).await
}

/// The principal of a tenant's credential, without regard to the operator token.
pub(crate) async fn principal(keys: &KeyCache, authorization: Option<&str>) -> Result<Principal> {
    match keys.check(authorization).await? {
        KeyCheck::Tenant(p) => Ok(p),
        KeyCheck::Missing => Err(Error::Unauthenticated(
            "missing API key: send \"authorization: Bearer <key>\"",
        )),
        KeyCheck::Invalid => Err(Error::Unauthenticated(
            "invalid, expired or revoked API key",
        )),
        KeyCheck::Unchecked => Err(Error::Unavailable(UNCHECKED.into())),
    }
}

/// Checks the operator token (compared in constant time): a tenant's API key is recognised and
/// refused (`PERMISSION_DENIED`), any other wrong token is `UNAUTHENTICATED`, also when the
/// budget of lookups was spent (only the operator token is accepted here anyway).
pub(crate) async fn operator(
    keys: &KeyCache,
    authorization: Option<&str>,
    admin_token: Option<&str>,
) -> Result<()> {
    let Some(expected) = admin_token else {
        return Err(Error::PermissionDenied(
            "the Admin service is disabled: set HERALD_ADMIN_TOKEN".into(),
        ));
    };
    let Some(given) = herald_store::bearer(authorization) else {
        return Err(Error::Unauthenticated(
            "missing operator token: send \"authorization: Bearer <token>\"",
        ));
    };
    if herald_store::same_secret(given, expected) {
        return Ok(());
    }
    match keys.check(authorization).await? {
        KeyCheck::Tenant(_) => Err(Error::PermissionDenied(
            "operator token required: a tenant API key cannot use the Admin service".into(),
        )),
        KeyCheck::Missing | KeyCheck::Invalid | KeyCheck::Unchecked => {
            Err(Error::Unauthenticated("invalid operator token"))
        }
    }
}

impl Ingest {
    /// The principal of the calling credential: the one [`crate::preauth`] already found,
    /// else checked here.
    pub async fn principal<T>(&self, req: &Request<T>) -> Result<Principal> {
        if let Some(crate::preauth::Authenticated(p)) = req.extensions().get() {
            return Ok(*p);
        }
        tenant_key(
            &self.keys,
            authorization(req),
            self.config.admin_token.as_deref(),
        )
        .await
    }

    /// The tenant of the calling credential, if it has `scope`.
    pub async fn tenant<T>(&self, req: &Request<T>, scope: Scope) -> Result<Uuid> {
        Ok(self.principal(req).await?.require(scope)?.tenant)
    }

    /// Checks the operator token, unless [`crate::preauth`] already did.
    pub async fn admin<T>(&self, req: &Request<T>) -> Result<()> {
        if req.extensions().get::<crate::preauth::Operator>().is_some() {
            return Ok(());
        }
        operator(
            &self.keys,
            authorization(req),
            self.config.admin_token.as_deref(),
        )
        .await
    }
}
