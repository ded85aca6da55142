//! Credentials are checked before a call's message is read: the API key of a tenant's call
//! (`Events`, `Endpoints`, `EventTypes`), the operator token of an `Admin` call, and for
//! `Portal` calls whichever of the operator token, a tenant's credential or a link token the
//! call carries ([`PortalCaller`]; each handler then takes only its own kind).
//!
//! `PublishBatch` needs a large decoding limit (`HERALD_MAX_PAYLOAD_BYTES` × `HERALD_MAX_BATCH`)
//! and tonic reads and decodes the whole message before a handler runs: checked only in the
//! handler, any client that can reach the port could make ingest buffer hundreds of MiB per
//! call without a key, or get a decode error for a malformed message instead of
//! `UNAUTHENTICATED`. Behind [`key_first`] and [`operator_first`] a call without valid
//! credentials is answered from its headers alone ([`herald_proto::server::CredentialsFirst`]),
//! and an accepted call carries what was found to the handler ([`Authenticated`],
//! [`Operator`]), which then does not check a second time. A tenant's call is also refused
//! there while the tenant is over its share of bytes received ([`Ingress`]).

use std::sync::Arc;

use herald_proto::server::{CredentialsFirst, Gate};
use herald_store::KeyCache;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::BoxFuture;

use crate::ingress::Ingress;

/// The credential [`TenantKey`] accepted, in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct Authenticated(pub herald_store::Principal);

/// Who calls the Portal service.
#[derive(Clone, Debug)]
pub enum PortalCaller {
    Operator,
    /// A tenant's API key or portal session.
    Tenant(herald_store::Principal),
    /// A portal link's token (`hl_…`), not looked up yet: only `RedeemPortalLink` takes it.
    Link(String),
}

/// The prefix of portal link tokens.
pub const LINK_PREFIX: &str = "hl_";

/// The call carried the operator token ([`OperatorToken`] accepted it).
#[derive(Clone, Copy, Debug)]
pub struct Operator;

/// Admits calls carrying a tenant's API key, while the tenant is within its share of bytes
/// ([`Ingress`]), and counts the bytes its message carries.
#[derive(Clone)]
pub struct TenantKey {
    keys: KeyCache,
    /// The operator token, to refuse it with `PERMISSION_DENIED` rather than as a bad key.
    admin_token: Option<Arc<str>>,
    ingress: Ingress,
}

impl Gate for TenantKey {
    type Pass = Authenticated;

    fn admit(&self, authorization: Option<String>) -> BoxFuture<Authenticated, Status> {
        let gate = self.clone();
        Box::pin(async move {
            let principal = crate::auth::tenant_key(
                &gate.keys,
                authorization.as_deref(),
                gate.admin_token.as_deref(),
            )
            .await?;
            gate.ingress.check(principal.tenant)?;
            Ok(Authenticated(principal))
        })
    }

    fn meter(&self, pass: &Authenticated, body: Body) -> Body {
        self.ingress.meter(pass.0.tenant, body)
    }
}

/// Admits calls carrying the operator token (`HERALD_ADMIN_TOKEN`).
#[derive(Clone)]
pub struct OperatorToken {
    keys: KeyCache,
    admin_token: Option<Arc<str>>,
}

impl Gate for OperatorToken {
    type Pass = Operator;

    fn admit(&self, authorization: Option<String>) -> BoxFuture<Operator, Status> {
        let gate = self.clone();
        Box::pin(async move {
            crate::auth::operator(
                &gate.keys,
                authorization.as_deref(),
                gate.admin_token.as_deref(),
            )
            .await
            .map(|()| Operator)
            .map_err(Status::from)
        })
    }
}

/// Admits Portal calls: see [`PortalCaller`].
#[derive(Clone)]
pub struct PortalGate {
    keys: KeyCache,
    admin_token: Option<Arc<str>>,
}

impl Gate for PortalGate {
    type Pass = PortalCaller;

    fn admit(&self, authorization: Option<String>) -> BoxFuture<PortalCaller, Status> {
        let gate = self.clone();
        Box::pin(async move {
            let auth = authorization.as_deref();
            if herald_store::is_operator(auth, gate.admin_token.as_deref()) {
                return Ok(PortalCaller::Operator);
            }
            match herald_store::bearer(auth) {
                Some(token) if token.starts_with(LINK_PREFIX) => {
                    Ok(PortalCaller::Link(token.to_owned()))
                }
                _ => crate::auth::principal(&gate.keys, auth)
                    .await
                    .map(PortalCaller::Tenant)
                    .map_err(Status::from),
            }
        })
    }
}

/// Wraps the Portal service: see [`PortalCaller`].
pub fn portal_first<S>(
    inner: S,
    keys: KeyCache,
    admin_token: Option<Arc<str>>,
) -> CredentialsFirst<S, PortalGate> {
    CredentialsFirst::new(inner, PortalGate { keys, admin_token })
}

/// A tenant service whose calls must carry a tenant's API key.
pub type KeyFirst<S> = CredentialsFirst<S, TenantKey>;

/// Wraps a tenant service: its calls must carry a tenant's API key, and its tenant must be
/// within its share of `ingress`.
pub fn key_first<S>(
    inner: S,
    keys: KeyCache,
    admin_token: Option<Arc<str>>,
    ingress: Ingress,
) -> KeyFirst<S> {
    CredentialsFirst::new(
        inner,
        TenantKey {
            keys,
            admin_token,
            ingress,
        },
    )
}

/// Wraps the Admin service: its calls must carry the operator token.
pub fn operator_first<S>(
    inner: S,
    keys: KeyCache,
    admin_token: Option<Arc<str>>,
) -> CredentialsFirst<S, OperatorToken> {
    CredentialsFirst::new(inner, OperatorToken { keys, admin_token })
}
