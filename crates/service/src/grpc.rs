//! The gRPC server every service with an API starts from: the same limits, tracing, health
//! and reflection everywhere, so a limit an operator sets means the same thing on each.

use herald_core::config::ApiLimits;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::server::HealthReporter;

/// Binds the API's listening address, with an error that names it.
pub async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// The connections `listener` accepts, each with `TCP_NODELAY`. tonic sets it only on
/// listeners it binds itself; without it a response written in several pieces (HTTP/2
/// headers, data, trailers) waits on Nagle's algorithm for the client's delayed ACK: about
/// 40 ms added to a call on Linux.
pub fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A server with `limits` applied (concurrent streams, request timeout, HTTP/2 keep-alive), a
/// span per call, and the health service and reflection (v1 and v1alpha, so grpcurl 1.8 and
/// newer both list the API) already added under the small-message limit. The caller marks its
/// services serving on the returned reporter and adds them.
pub fn server(limits: &ApiLimits) -> anyhow::Result<(HealthReporter, Router)> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let (reflection, reflection_v1alpha) =
        herald_proto::server::reflection(&[tonic_health::pb::FILE_DESCRIPTOR_SET])?;
    let small = limits.max_message_bytes;
    let router = Server::builder()
        .trace_fn(herald_telemetry::grpc_span)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .add_service(health_service.max_decoding_message_size(small))
        .add_service(reflection.max_decoding_message_size(small))
        .add_service(reflection_v1alpha.max_decoding_message_size(small));
    Ok((health, router))
}
