//! gRPC plumbing shared by the process probe, the setup and the load generator: one way to
//! connect (with timeouts, so no call can hang a run) and one way to authenticate.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use tonic::Request;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Longest any single gRPC call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens an HTTP/2 channel to a Herald gRPC server.
pub async fn connect(addr: SocketAddr) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_TIMEOUT);
    Ok(endpoint.connect().await?)
}

/// The `authorization` value for a token.
pub fn bearer(token: &str) -> Result<AsciiMetadataValue> {
    Ok(format!("Bearer {token}").parse::<AsciiMetadataValue>()?)
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, auth: &AsciiMetadataValue) -> Request<T> {
    let mut request = Request::new(msg);
    request.metadata_mut().insert("authorization", auth.clone());
    request
}
