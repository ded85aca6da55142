//! Server plumbing shared by the services of the `herald.v1` API (ingest and the ledger).
//!
//! [`CredentialsFirst`] checks a call's credentials from its headers before tonic reads the
//! message. tonic reads and decodes the whole message before a handler runs, up to the
//! service's decoding limit (hundreds of MiB for `PublishBatch`, 4 MiB elsewhere): checked only
//! in the handler, anyone who can reach the port could make a service buffer and parse that
//! much per call without a credential, and a malformed message would be answered with a decode
//! error instead of `UNAUTHENTICATED`. A call that passes carries what the check found (the
//! tenant, the operator) to its handler in the request's extensions.
//!
//! [`reflection`] serves the API's descriptors in both reflection versions: v1, and v1alpha,
//! the only one grpcurl before 1.9 and other older tools ask for.
//!
//! [`retry_later`] is how every limit with a known wait answers: `RESOURCE_EXHAUSTED` with a
//! standard `google.rpc.RetryInfo` detail and a `retry-after-ms` header, so any gRPC client
//! can back off by the right amount.

use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

/// A credential check made from a call's `authorization` header alone.
pub trait Gate: Clone + Send + Sync + 'static {
    /// What an admitted call carries to its handler (inserted in the request's extensions).
    type Pass: Clone + Send + Sync + 'static;

    /// Admits the call, or says why not (the status the caller gets).
    fn admit(&self, authorization: Option<String>) -> BoxFuture<Self::Pass, tonic::Status>;

    /// The body an admitted call's message is read from: `body` itself, or a wrapper that
    /// counts what the caller sends.
    fn meter(&self, _pass: &Self::Pass, body: Body) -> Body {
        body
    }
}

/// A gRPC service whose calls are admitted by a [`Gate`] before their message is read.
#[derive(Clone)]
pub struct CredentialsFirst<S, G> {
    inner: S,
    gate: G,
}

impl<S, G> CredentialsFirst<S, G> {
    pub fn new(inner: S, gate: G) -> Self {
        Self { inner, gate }
    }
}

impl<S: NamedService, G> NamedService for CredentialsFirst<S, G> {
    const NAME: &'static str = S::NAME;
}

impl<S, G> Service<http::Request<Body>> for CredentialsFirst<S, G>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    G: Gate,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone is the one made ready by `poll_ready`'s caller next time; this one was.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let admitted = self.gate.admit(authorization);
        let gate = self.gate.clone();
        Box::pin(async move {
            match admitted.await {
                Ok(pass) => {
                    let (parts, body) = req.into_parts();
                    let mut req = http::Request::from_parts(parts, gate.meter(&pass, body));
                    req.extensions_mut().insert(pass);
                    inner.call(req).await.map(too_large_is_exhausted)
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// tonic answers a message over the decoding limit with `OUT_OF_RANGE` in a trailers-only
/// response: say `RESOURCE_EXHAUSTED` instead (a size limit, as the API documents its limits);
/// tonic's message, with both sizes, stays.
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

/// `RESOURCE_EXHAUSTED` with `message`, a `google.rpc.RetryInfo` detail of `retry_after` and
/// the same delay in milliseconds in a `retry-after-ms` header.
pub fn retry_later(message: impl Into<String>, retry_after: Duration) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let mut status = tonic::Status::with_error_details(
        tonic::Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    );
    if let Ok(v) = retry_after.as_millis().to_string().parse() {
        status.metadata_mut().insert("retry-after-ms", v);
    }
    status
}

/// The reflection services of a server, v1 and v1alpha, describing the `herald.v1` API and
/// the other descriptor sets in `extra` (the health service's, say).
#[allow(clippy::type_complexity)]
pub fn reflection(
    extra: &[&'static [u8]],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        extra.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::v1::FILE_DESCRIPTOR_SET),
            |b, set| b.register_encoded_file_descriptor_set(set),
        )
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
