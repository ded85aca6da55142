//! What every handler works with: a connection to ingest or the ledger made when the command
//! needs it (a command that fails on its arguments never touches the network), requests that
//! carry the right credential, and the output mode.
//!
//! A missing credential is named with both ways to give it (flag and environment variable),
//! and an unreachable service with the address that was tried.

use anyhow::{Context as _, anyhow};
use herald_proto::v1 as pb;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::cli::{Connection, OutputArgs};
use crate::errors;
use crate::output::Output;

pub type AdminClient = pb::admin_client::AdminClient<Channel>;
pub type EndpointsClient = pb::endpoints_client::EndpointsClient<Channel>;
pub type EventTypesClient = pb::event_types_client::EventTypesClient<Channel>;
pub type EventsClient = pb::events_client::EventsClient<Channel>;
pub type DeliveriesClient = pb::deliveries_client::DeliveriesClient<Channel>;
pub type OperationsClient = pb::operations_client::OperationsClient<Channel>;
pub type PortalClient = pb::portal_client::PortalClient<Channel>;

/// A credential a call needs, with the two ways to give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    ApiKey,
    AdminToken,
}

impl Credential {
    fn name(self) -> &'static str {
        match self {
            Credential::ApiKey => "API key",
            Credential::AdminToken => "operator token",
        }
    }

    fn missing(self) -> anyhow::Error {
        match self {
            Credential::ApiKey => {
                anyhow!("no API key: set HERALD_API_KEY or pass --api-key (`key create` makes one)")
            }
            Credential::AdminToken => {
                anyhow!("no operator token: set HERALD_ADMIN_TOKEN or pass --admin-token")
            }
        }
    }
}

pub struct Ctx {
    connection: Connection,
    pub out: Output,
}

impl Ctx {
    pub fn new(connection: Connection, output: OutputArgs) -> Self {
        Self {
            connection,
            out: Output::new(output),
        }
    }

    // Each client checks for its credential first: a command without one fails on that,
    // whether or not the service is up.

    pub async fn admin(&self) -> anyhow::Result<AdminClient> {
        Ok(AdminClient::new(self.ingest(Credential::AdminToken).await?))
    }

    pub async fn endpoints(&self) -> anyhow::Result<EndpointsClient> {
        Ok(EndpointsClient::new(self.ingest(Credential::ApiKey).await?))
    }

    pub async fn event_types(&self) -> anyhow::Result<EventTypesClient> {
        Ok(EventTypesClient::new(
            self.ingest(Credential::ApiKey).await?,
        ))
    }

    pub async fn events(&self) -> anyhow::Result<EventsClient> {
        Ok(EventsClient::new(self.ingest(Credential::ApiKey).await?))
    }

    pub async fn deliveries(&self) -> anyhow::Result<DeliveriesClient> {
        self.token(Credential::ApiKey)?;
        let channel = connect("ledger", &self.connection.ledger).await?;
        Ok(DeliveriesClient::new(channel))
    }

    /// The ledger's Operations service (dead letters, queue depths), with the operator token.
    pub async fn operations(&self) -> anyhow::Result<OperationsClient> {
        self.token(Credential::AdminToken)?;
        let channel = connect("ledger", &self.connection.ledger).await?;
        Ok(OperationsClient::new(channel))
    }

    /// The Portal service, with the operator token when one is given, else the API key (which
    /// needs the scope `portal:create`).
    pub async fn portal(&self) -> anyhow::Result<PortalClient> {
        Ok(PortalClient::new(
            self.ingest(self.operator_or_key()).await?,
        ))
    }

    /// The operator token when one is given, else the API key.
    fn operator_or_key(&self) -> Credential {
        match self.connection.admin_token.as_deref() {
            Some(t) if !t.is_empty() => Credential::AdminToken,
            _ => Credential::ApiKey,
        }
    }

    /// `msg` as a call authenticated with the operator token when one is given, else with the
    /// tenant's API key.
    pub fn operator_or_key_call<T>(&self, msg: T) -> anyhow::Result<Request<T>> {
        let which = self.operator_or_key();
        authed(msg, self.token(which)?, which)
    }

    async fn ingest(&self, needs: Credential) -> anyhow::Result<Channel> {
        self.token(needs)?;
        connect("ingest", &self.connection.ingest).await
    }

    fn token(&self, which: Credential) -> anyhow::Result<&str> {
        let token = match which {
            Credential::ApiKey => self.connection.api_key.as_deref(),
            Credential::AdminToken => self.connection.admin_token.as_deref(),
        };
        token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| which.missing())
    }

    /// `msg` as a call authenticated with the tenant's API key.
    pub fn tenant_call<T>(&self, msg: T) -> anyhow::Result<Request<T>> {
        authed(msg, self.token(Credential::ApiKey)?, Credential::ApiKey)
    }

    /// `msg` as a call authenticated with the operator token.
    pub fn admin_call<T>(&self, msg: T) -> anyhow::Result<Request<T>> {
        authed(
            msg,
            self.token(Credential::AdminToken)?,
            Credential::AdminToken,
        )
    }
}

fn authed<T>(msg: T, token: &str, which: Credential) -> anyhow::Result<Request<T>> {
    let value: MetadataValue<_> = format!("Bearer {token}").parse().with_context(|| {
        format!(
            "the {} holds characters a header cannot carry (a stray newline?)",
            which.name()
        )
    })?;
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

/// A channel to `service` at `url`, or an error naming both and why it failed.
async fn connect(service: &str, url: &str) -> anyhow::Result<Channel> {
    let endpoint = Channel::from_shared(url.to_owned())
        .map_err(|e| anyhow!("{service} address {url:?} is not a URL: {e}"))?;
    endpoint
        .connect()
        .await
        .map_err(|e| anyhow!("cannot reach {service} at {url}: {}", errors::cause(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(api_key: Option<&str>, admin_token: Option<&str>) -> Ctx {
        let connection = Connection {
            // Nothing listens on port 1: a test that got past the credential check fails there.
            ingest: "http://127.0.0.1:1".into(),
            ledger: "http://127.0.0.1:1".into(),
            api_key: api_key.map(str::to_owned),
            admin_token: admin_token.map(str::to_owned),
        };
        Ctx::new(connection, OutputArgs::default())
    }

    #[tokio::test]
    async fn a_missing_credential_names_its_variable_and_flag_before_connecting() {
        let err = ctx(None, Some("t"))
            .endpoints()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no API key: set HERALD_API_KEY or pass --api-key"),
            "{err}"
        );
        let err = ctx(Some("k"), Some(""))
            .admin()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no operator token: set HERALD_ADMIN_TOKEN or pass --admin-token"),
            "{err}"
        );
        let err = ctx(None, None).deliveries().await.unwrap_err().to_string();
        assert!(err.contains("HERALD_API_KEY"), "{err}");
    }

    #[test]
    fn each_call_carries_its_own_credential() {
        let ctx = ctx(Some("hk_1"), Some("op_1"));
        let req = ctx.tenant_call(()).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer hk_1");
        let req = ctx.admin_call(()).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer op_1");
    }

    #[test]
    fn a_credential_with_a_newline_is_refused() {
        let err = authed((), "hk_1\nhk_2", Credential::ApiKey)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("the API key holds characters"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_service_is_named_once_with_its_address() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let err = connect("ingest", "http://127.0.0.1:1").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot reach ingest at http://127.0.0.1:1: "),
            "{text}"
        );
        assert!(!text.contains("tcp connect error"), "{text}");
        assert!(text.ends_with("connection refused"), "{text}");
    }

    #[tokio::test]
    async fn a_malformed_address_is_named() {
        let err = connect("ledger", "not a url")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("ledger address \"not a url\" is not a URL"),
            "{err}"
        );
    }
}
