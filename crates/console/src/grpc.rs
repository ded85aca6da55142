//! The console's gRPC clients: ingest (Admin, Portal, Endpoints, EventTypes) and the ledger
//! (Deliveries, Operations), over lazily connected channels, exactly as any other client of
//! the public API. Every call carries the credential of the person at the page: the portal
//! session's `hs_` token or the operator's token; the console holds none of its own.

use std::time::Duration;

use herald_proto::v1 as pb;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

pub type AdminClient = pb::admin_client::AdminClient<Channel>;
pub type PortalClient = pb::portal_client::PortalClient<Channel>;
pub type EndpointsClient = pb::endpoints_client::EndpointsClient<Channel>;
pub type EventTypesClient = pb::event_types_client::EventTypesClient<Channel>;
pub type DeliveriesClient = pb::deliveries_client::DeliveriesClient<Channel>;
pub type OperationsClient = pb::operations_client::OperationsClient<Channel>;
type HealthClient = tonic_health::pb::health_client::HealthClient<Channel>;

/// Channels to ingest and the ledger.
#[derive(Clone, Debug)]
pub struct Clients {
    ingest: Channel,
    ledger: Channel,
}

/// A channel to `url` that connects on first use (the console starts before, and survives,
/// the services it talks to).
fn lazy(name: &str, url: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| anyhow::anyhow!("{name} address {url:?} is not a URL: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        // SendTest waits up to the endpoint's timeout (at most 120 s).
        .timeout(Duration::from_secs(130));
    Ok(endpoint.connect_lazy())
}

impl Clients {
    pub fn new(ingest_url: &str, ledger_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            ingest: lazy("ingest", ingest_url)?,
            ledger: lazy("ledger", ledger_url)?,
        })
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.ingest.clone())
    }
    pub fn portal(&self) -> PortalClient {
        PortalClient::new(self.ingest.clone())
    }
    pub fn endpoints(&self) -> EndpointsClient {
        EndpointsClient::new(self.ingest.clone())
    }
    pub fn event_types(&self) -> EventTypesClient {
        EventTypesClient::new(self.ingest.clone())
    }
    pub fn deliveries(&self) -> DeliveriesClient {
        DeliveriesClient::new(self.ledger.clone())
    }
    pub fn operations(&self) -> OperationsClient {
        OperationsClient::new(self.ledger.clone())
    }

    /// Whether ingest and the ledger answer their gRPC health checks (the console's `/readyz`).
    pub async fn health(&self) -> (bool, bool) {
        async fn serving(channel: Channel) -> bool {
            let mut client = HealthClient::new(channel);
            let req = tonic_health::pb::HealthCheckRequest::default();
            let answer = tokio::time::timeout(Duration::from_secs(2), client.check(req)).await;
            matches!(answer, Ok(Ok(r)) if r.get_ref().status == 1)
        }
        tokio::join!(serving(self.ingest.clone()), serving(self.ledger.clone()))
    }
}

/// `msg` as a call carrying `token` as its bearer credential. A token a header cannot carry
/// is refused as the server would refuse a wrong one.
pub fn call<T>(msg: T, token: &str) -> Result<Request<T>, tonic::Status> {
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::unauthenticated("the credential is not valid"))?;
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}
