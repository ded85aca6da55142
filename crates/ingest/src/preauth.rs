//! The API key of a tenant's call (`Events`, `Endpoints`, `EventTypes`) is checked before its
//! message is read.
//!
//! `PublishBatch` needs a large decoding limit (`HERALD_MAX_PAYLOAD_BYTES` × `HERALD_MAX_BATCH`),
//! and tonic reads and decodes the whole message before a handler runs. Checked only in the
//! handler, any client that can reach the port could make ingest buffer hundreds of MiB per
//! call without a key. Wrapped in [`KeyFirst`], a call without a valid key is answered
//! `UNAUTHENTICATED` from its headers alone, and an accepted call carries its tenant to the
//! handler ([`Authenticated`]), which then does not look the key up a second time.
//!
//! A message over the limit gets `RESOURCE_EXHAUSTED` (a size limit, as the API documents its
//! limits) rather than tonic's `OUT_OF_RANGE`; tonic's message, with both sizes, stays.

use std::task::{Context, Poll};

use herald_store::KeyCache;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

/// The tenant whose key [`KeyFirst`] accepted, in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct Authenticated(pub uuid::Uuid);

/// A gRPC service whose calls must carry a tenant's API key.
#[derive(Clone)]
pub struct KeyFirst<S> {
    inner: S,
    keys: KeyCache,
    /// The operator token, to refuse it with `PERMISSION_DENIED` rather than as a bad key.
    admin_token: Option<std::sync::Arc<str>>,
}

impl<S> KeyFirst<S> {
    pub fn new(inner: S, keys: KeyCache, admin_token: Option<std::sync::Arc<str>>) -> Self {
        Self {
            inner,
            keys,
            admin_token,
        }
    }
}

impl<S: NamedService> NamedService for KeyFirst<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for KeyFirst<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone is the one made ready by `poll_ready`'s caller next time; this one was.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let keys = self.keys.clone();
        let admin_token = self.admin_token.clone();
        Box::pin(async move {
            let authorization = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let check = keys.check(authorization.as_deref()).await;
            match crate::auth::tenant_of(check, authorization.as_deref(), admin_token.as_deref()) {
                Ok(tenant) => {
                    req.extensions_mut().insert(Authenticated(tenant));
                    inner.call(req).await.map(too_large_is_exhausted)
                }
                Err(e) => Ok(tonic::Status::from(e).into_http()),
            }
        })
    }
}

/// tonic answers a message over the decoding limit with `OUT_OF_RANGE` in a trailers-only
/// response: say `RESOURCE_EXHAUSTED` instead.
fn too_large_is_exhausted(mut resp: http::Response<Body>) -> http::Response<Body> {
    let headers = resp.headers_mut();
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| {
            m.contains("message%20length%20too%20large") || m.contains("message length too large")
        });
    if too_large && headers.get("grpc-status").is_some_and(|s| s == "11") {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
    }
    resp
}
