//! The Operations service's credential: the operator token (`HERALD_ADMIN_TOKEN`), checked
//! from the call's headers before its message is read
//! ([`herald_proto::server::CredentialsFirst`]), as ingest checks its Admin service. A tenant's
//! API key is recognised and refused with `PERMISSION_DENIED`; any other token is
//! `UNAUTHENTICATED`; without `HERALD_ADMIN_TOKEN` the service refuses every call.

use std::sync::Arc;

use herald_proto::server::Gate;
use herald_store::{KeyCache, KeyCheck};
use tonic::Status;
use tonic::codegen::BoxFuture;

use crate::error::{Error, Result};

/// The call carried the operator token ([`OperatorToken`] accepted it).
#[derive(Clone, Copy, Debug)]
pub struct Operator;

/// Admits calls carrying the operator token.
#[derive(Clone)]
pub struct OperatorToken {
    /// To tell a tenant's API key (`PERMISSION_DENIED`) from a wrong token.
    pub keys: KeyCache,
    pub admin_token: Option<Arc<str>>,
}

impl OperatorToken {
    /// Accepts the operator token in an `authorization` header (compared in constant time).
    pub async fn check(&self, authorization: Option<&str>) -> Result<Operator> {
        let Some(expected) = self.admin_token.as_deref() else {
            return Err(Error::PermissionDenied(
                "the Operations service is disabled: set HERALD_ADMIN_TOKEN",
            ));
        };
        let Some(given) = herald_store::bearer(authorization) else {
            return Err(Error::Unauthenticated(
                "missing operator token: send \"authorization: Bearer <token>\"",
            ));
        };
        if herald_store::same_secret(given, expected) {
            return Ok(Operator);
        }
        match self.keys.check(authorization).await? {
            KeyCheck::Tenant(_) => Err(Error::PermissionDenied(
                "operator token required: a tenant API key cannot use the Operations service",
            )),
            _ => Err(Error::Unauthenticated("invalid operator token")),
        }
    }
}

impl Gate for OperatorToken {
    type Pass = Operator;

    fn admit(&self, authorization: Option<String>) -> BoxFuture<Operator, Status> {
        let gate = self.clone();
        Box::pin(async move {
            gate.check(authorization.as_deref())
                .await
                .map_err(Status::from)
        })
    }
}
