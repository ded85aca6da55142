//! Command-line parsing and the calls behind each command.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use herald_core::signing::{Scheme, Secret, verify};
use herald_proto::v1 as pb;
use serde_json::json;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::output::{self, print};

#[derive(Parser)]
#[command(
    name = "heraldctl",
    version,
    about = "Manage and use a Herald webhook installation"
)]
pub struct Cli {
    /// Ingest gRPC address.
    #[arg(
        long,
        env = "HERALD_INGEST_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    ingest: String,
    /// Ledger gRPC address (delivery log).
    #[arg(
        long,
        env = "HERALD_LEDGER_URL",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    ledger: String,
    /// Tenant API key.
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Operator token (tenant and key management).
    #[arg(
        long,
        env = "HERALD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    admin_token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Print only this field of the result (e.g. `--get id`), for scripts without jq.
    #[arg(long, global = true)]
    get: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tenants (operator token).
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// API keys (operator token).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Endpoints (API key).
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Event types (API key).
    #[command(subcommand, name = "event-type")]
    EventType(EventTypeCmd),
    /// Publish an event; the payload comes from --file or standard input.
    Publish {
        /// Event type, e.g. invoice.paid.
        #[arg(long = "type")]
        event_type: String,
        /// File holding the JSON payload ("-" or absent: standard input).
        #[arg(long)]
        file: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// The delivery log (API key).
    #[command(subcommand)]
    Deliveries(DeliveriesCmd),
    /// Run a local webhook receiver that prints each delivery and checks its signature.
    Listen {
        /// Address to listen on (0.0.0.0 to accept deliveries from other hosts or containers).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Secret to verify with (standard scheme unless --scheme says otherwise).
        #[arg(long, env = "HERALD_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[arg(long, default_value = "standard")]
        scheme: String,
        #[arg(long, default_value = "Webhook-")]
        prefix: String,
        /// HTTP status to answer with.
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
    /// Verify a delivery's signature as a receiver would; exits 1 when it does not verify.
    Verify {
        #[arg(long, default_value = "standard")]
        scheme: String,
        #[arg(long, env = "HERALD_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Header prefix of the timestamped and hex schemes.
        #[arg(long, default_value = "Webhook-")]
        prefix: String,
        /// A received header as "Name: value" (repeat).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// File holding the raw body ("-" for standard input).
        #[arg(long)]
        body_file: String,
        /// Largest accepted clock difference in seconds.
        #[arg(long, default_value_t = 300)]
        tolerance: i64,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        header_prefix: Option<String>,
        #[arg(long)]
        user_agent: Option<String>,
        /// Endpoint URLs must use https (true/false).
        #[arg(long)]
        require_https: Option<bool>,
        /// Refuse events whose type was not created (true/false).
        #[arg(long)]
        reject_unknown_event_types: Option<bool>,
        /// Events per second the tenant may publish (0: unlimited; unset: server default).
        #[arg(long)]
        publish_rate_limit: Option<u32>,
    },
    Get {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        header_prefix: Option<String>,
        #[arg(long)]
        user_agent: Option<String>,
        #[arg(long)]
        require_https: Option<bool>,
        #[arg(long)]
        reject_unknown_event_types: Option<bool>,
        /// Events per second the tenant may publish (0: unlimited).
        #[arg(long, conflicts_with = "default_publish_rate_limit")]
        publish_rate_limit: Option<u32>,
        /// Return the publish rate limit to the server default.
        #[arg(long)]
        default_publish_rate_limit: bool,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "default")]
        name: String,
    },
    Revoke {
        key_id: String,
    },
}

#[derive(Args)]
struct EndpointFields {
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Subscription: exact type, "prefix.*" or "*" (repeat).
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// standard, timestamped or hex.
    #[arg(long)]
    scheme: Option<String>,
    #[arg(long, hide_env_values = true)]
    secret: Option<String>,
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Retry delays, e.g. "1m,5m,15m,1h,6h"; "none": one attempt, a failure is final;
    /// "default" (update only) goes back to the server's schedule.
    #[arg(long)]
    retry_schedule: Option<String>,
    /// Custom header "Name: value" (repeat).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Payload filter, a JSON object such as '{"data.amount": {"$gt": 100}}' ("" removes it).
    #[arg(long)]
    filter: Option<String>,
    /// Most deliveries per second (0: unlimited).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Most POSTs at once a dispatcher sends the endpoint, up to 256 (0: the server default).
    #[arg(long)]
    max_in_flight: Option<u32>,
}

#[derive(Subcommand)]
enum EndpointCmd {
    Create {
        #[command(flatten)]
        fields: EndpointFields,
        /// Create it switched off.
        #[arg(long)]
        disabled: bool,
    },
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, default_value = "")]
        cursor: String,
    },
    Get {
        id: String,
    },
    Update {
        id: String,
        #[command(flatten)]
        fields: EndpointFields,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    Delete {
        id: String,
    },
    /// Print the signing secret.
    Secret {
        id: String,
    },
    /// Send a test event to the endpoint now and print the outcome.
    Test {
        id: String,
        /// Event type (default webhook.test).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// File holding a JSON payload (default: a generated one).
        #[arg(long)]
        file: Option<String>,
    },
    /// Rotate the signing secret; the old one keeps signing during the grace period.
    RotateSecret {
        id: String,
        /// Grace period, e.g. 24h, 30m, 0s (default: the server's, 24 h; none for hex
        /// endpoints, whose one signature cannot overlap).
        #[arg(long)]
        grace: Option<String>,
        /// The new secret (default: generated).
        #[arg(long, hide_env_values = true)]
        secret: Option<String>,
    },
    /// Check a payload filter against a sample payload.
    TestFilter {
        #[arg(long)]
        filter: String,
        /// File holding the sample JSON payload ("-" or absent: standard input).
        #[arg(long)]
        file: Option<String>,
    },
}

#[derive(Subcommand)]
enum EventTypeCmd {
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value = "")]
        group: String,
    },
    List {
        /// Include archived types.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        group: Option<String>,
    },
    Update {
        name: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        group: Option<String>,
    },
    Archive {
        name: String,
    },
    Unarchive {
        name: String,
    },
}

#[derive(Subcommand)]
enum DeliveriesCmd {
    List {
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        event: Option<String>,
        /// pending, success, retrying or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, default_value = "")]
        cursor: String,
        /// Created at or after (RFC 3339, e.g. 2026-11-23T08:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Created before (RFC 3339).
        #[arg(long)]
        until: Option<String>,
    },
    Show {
        id: String,
        /// Attempts shown (oldest first; default 100, at most 500).
        #[arg(long, default_value_t = 100)]
        attempts_limit: u32,
        /// Where the attempts go on from (printed under a page that has more).
        #[arg(long, default_value = "")]
        attempts_cursor: String,
    },
    /// The latest deliveries across all endpoints.
    Activity {
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// A new attempt of one delivery, now.
    Redeliver { id: String },
    /// Re-send an endpoint's deliveries (default: the failed ones).
    Replay {
        endpoint: String,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// pending, success, retrying or failed.
        #[arg(long, default_value = "failed")]
        status: String,
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Continue after this delivery id (a previous replay's last_delivery_id).
        #[arg(long)]
        after: Option<String>,
    },
}

pub(crate) fn authed<T>(msg: T, token: &Option<String>, what: &str) -> anyhow::Result<Request<T>> {
    let token = token.as_deref().with_context(|| {
        format!(
            "no {what}: pass --{} or set the environment variable",
            what.replace(' ', "-")
        )
    })?;
    let mut req = Request::new(msg);
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("credential has invalid characters")?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

async fn channel(url: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(url.to_owned())?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

fn read_input(path: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match path {
        None | Some("-") => {
            std::io::stdin().read_to_end(&mut buf)?;
        }
        Some(p) => buf = std::fs::read(p).with_context(|| format!("cannot read {p}"))?,
    }
    Ok(buf)
}

fn parse_headers(list: &[String]) -> anyhow::Result<HashMap<String, String>> {
    list.iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("header {h:?} is not \"Name: value\""))?;
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn parse_scheme(s: &str) -> anyhow::Result<pb::SigningScheme> {
    Ok(match s.parse::<Scheme>()? {
        Scheme::Standard => pb::SigningScheme::Standard,
        Scheme::Timestamped => pb::SigningScheme::Timestamped,
        Scheme::Hex => pb::SigningScheme::Hex,
    })
}

fn parse_schedule(s: &str) -> anyhow::Result<Vec<u32>> {
    Ok(herald_core::schedule::RetrySchedule::parse(s)?.as_millis())
}

pub(crate) fn parse_status(s: &str) -> anyhow::Result<pb::DeliveryStatus> {
    Ok(match s {
        "pending" => pb::DeliveryStatus::Pending,
        "success" => pb::DeliveryStatus::Success,
        "retrying" => pb::DeliveryStatus::Retrying,
        "failed" => pb::DeliveryStatus::Failed,
        other => bail!("unknown status {other:?} (pending, success, retrying, failed)"),
    })
}

/// One endpoint (get, update): the list's columns and how deliveries to it are going.
const ENDPOINT_DETAIL_COLUMNS: &[&str] = &[
    "id",
    "url",
    "event_types",
    "enabled",
    "signing_scheme",
    "last_status",
    "total_deliveries",
    "success_rate",
    "disabled_reason",
    "max_in_flight",
    "state",
];
/// The endpoint list: the detail's columns before `max_in_flight`.
const ENDPOINT_COLUMNS: &[&str] = ENDPOINT_DETAIL_COLUMNS.split_at(9).0;
const DELIVERY_COLUMNS: &[&str] = &[
    "id",
    "event_type",
    "endpoint_id",
    "status",
    "attempt_count",
    "response_status",
    "created_at",
    "next_retry_at",
];

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let j = cli.json;
    if let Some(field) = cli.get.clone() {
        let _ = output::GET.set(field);
    }
    match cli.command {
        Command::Tenant(cmd) => {
            let mut c = pb::admin_client::AdminClient::new(channel(&cli.ingest).await?);
            let t = match cmd {
                TenantCmd::Create {
                    name,
                    header_prefix,
                    user_agent,
                    require_https,
                    reject_unknown_event_types,
                    publish_rate_limit,
                } => {
                    c.create_tenant(authed(
                        pb::CreateTenantRequest {
                            name,
                            header_prefix,
                            user_agent,
                            require_https,
                            reject_unknown_event_types,
                            publish_rate_limit,
                        },
                        &cli.admin_token,
                        "admin token",
                    )?)
                    .await?
                }
                TenantCmd::Get { id } => {
                    c.get_tenant(authed(
                        pb::GetTenantRequest { id },
                        &cli.admin_token,
                        "admin token",
                    )?)
                    .await?
                }
                TenantCmd::Update {
                    id,
                    name,
                    header_prefix,
                    user_agent,
                    require_https,
                    reject_unknown_event_types,
                    publish_rate_limit,
                    default_publish_rate_limit,
                } => {
                    c.update_tenant(authed(
                        pb::UpdateTenantRequest {
                            id,
                            name,
                            header_prefix,
                            user_agent,
                            require_https,
                            reject_unknown_event_types,
                            publish_rate_limit,
                            default_publish_rate_limit,
                        },
                        &cli.admin_token,
                        "admin token",
                    )?)
                    .await?
                }
            }
            .into_inner();
            print(
                j,
                &[output::tenant(&t)],
                &["id", "name", "header_prefix", "user_agent"],
            );
        }
        Command::Key(cmd) => {
            let mut c = pb::admin_client::AdminClient::new(channel(&cli.ingest).await?);
            match cmd {
                KeyCmd::Create { tenant, name } => {
                    let k = c
                        .create_api_key(authed(
                            pb::CreateApiKeyRequest {
                                tenant_id: tenant,
                                name,
                            },
                            &cli.admin_token,
                            "admin token",
                        )?)
                        .await?
                        .into_inner();
                    print(
                        j,
                        &[
                            json!({"key_id": k.key_id, "tenant_id": k.tenant_id, "api_key": k.api_key}),
                        ],
                        &["key_id", "tenant_id", "api_key"],
                    );
                }
                KeyCmd::Revoke { key_id } => {
                    c.revoke_api_key(authed(
                        pb::RevokeApiKeyRequest {
                            key_id: key_id.clone(),
                        },
                        &cli.admin_token,
                        "admin token",
                    )?)
                    .await?;
                    print(
                        j,
                        &[json!({"key_id": key_id, "revoked": true})],
                        &["key_id", "revoked"],
                    );
                }
            }
        }
        Command::Endpoint(cmd) => {
            let mut c = pb::endpoints_client::EndpointsClient::new(channel(&cli.ingest).await?);
            let key = &cli.api_key;
            match cmd {
                EndpointCmd::Create {
                    fields: f,
                    disabled,
                } => {
                    let req = pb::CreateEndpointRequest {
                        url: f.url.context("--url is required")?,
                        description: f.description.unwrap_or_default(),
                        event_types: f.event_types,
                        enabled: Some(!disabled),
                        signing_scheme: f
                            .scheme
                            .as_deref()
                            .map(parse_scheme)
                            .transpose()?
                            .unwrap_or(pb::SigningScheme::Standard)
                            as i32,
                        secret: f.secret,
                        timeout_ms: f.timeout_ms,
                        retry_schedule_ms: match f.retry_schedule.as_deref() {
                            None | Some("none") => Vec::new(),
                            Some(s) => parse_schedule(s)?,
                        },
                        no_retries: f.retry_schedule.as_deref() == Some("none"),
                        headers: parse_headers(&f.headers)?,
                        filter: f.filter,
                        rate_limit_per_second: f.rate_limit,
                        max_in_flight: f.max_in_flight,
                    };
                    let r = c
                        .create_endpoint(authed(req, key, "api key")?)
                        .await?
                        .into_inner();
                    let mut v = output::endpoint(&r.endpoint.unwrap_or_default());
                    v["secret"] = json!(r.secret);
                    print(
                        j,
                        &[v],
                        &["id", "url", "event_types", "signing_scheme", "secret"],
                    );
                }
                EndpointCmd::List { limit, cursor } => {
                    let r = c
                        .list_endpoints(authed(
                            pb::ListEndpointsRequest {
                                page_size: limit,
                                cursor,
                            },
                            key,
                            "api key",
                        )?)
                        .await?
                        .into_inner();
                    let rows: Vec<_> = r.endpoints.iter().map(output::endpoint).collect();
                    if j {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(
                                &json!({"endpoints": rows, "next_cursor": r.next_cursor})
                            )?
                        );
                    } else {
                        print(false, &rows, ENDPOINT_COLUMNS);
                        if !r.next_cursor.is_empty() {
                            println!("next page: --cursor {}", r.next_cursor);
                        }
                    }
                }
                EndpointCmd::Get { id } => {
                    let e = c
                        .get_endpoint(authed(pb::GetEndpointRequest { id }, key, "api key")?)
                        .await?
                        .into_inner();
                    print(j, &[output::endpoint(&e)], ENDPOINT_DETAIL_COLUMNS);
                }
                EndpointCmd::Update {
                    id,
                    fields: f,
                    enable,
                    disable,
                } => {
                    let schedule = match f.retry_schedule.as_deref() {
                        None => None,
                        Some("default") => Some(pb::DelayList::default()),
                        Some("none") => Some(pb::DelayList {
                            delays_ms: vec![],
                            no_retries: true,
                        }),
                        Some(s) => Some(pb::DelayList {
                            delays_ms: parse_schedule(s)?,
                            no_retries: false,
                        }),
                    };
                    let req = pb::UpdateEndpointRequest {
                        id,
                        url: f.url,
                        description: f.description,
                        event_types: (!f.event_types.is_empty()).then_some(pb::StringList {
                            values: f.event_types,
                        }),
                        enabled: if enable {
                            Some(true)
                        } else if disable {
                            Some(false)
                        } else {
                            None
                        },
                        signing_scheme: f
                            .scheme
                            .as_deref()
                            .map(parse_scheme)
                            .transpose()?
                            .map(|s| s as i32),
                        timeout_ms: f.timeout_ms,
                        retry_schedule: schedule,
                        headers: (!f.headers.is_empty())
                            .then(|| parse_headers(&f.headers))
                            .transpose()?
                            .map(|headers| pb::HeaderMap { headers }),
                        secret: f.secret,
                        filter: f.filter,
                        rate_limit_per_second: f.rate_limit,
                        max_in_flight: f.max_in_flight,
                    };
                    let e = c
                        .update_endpoint(authed(req, key, "api key")?)
                        .await?
                        .into_inner();
                    print(j, &[output::endpoint(&e)], ENDPOINT_DETAIL_COLUMNS);
                }
                EndpointCmd::Delete { id } => {
                    c.delete_endpoint(authed(
                        pb::DeleteEndpointRequest { id: id.clone() },
                        key,
                        "api key",
                    )?)
                    .await?;
                    print(j, &[json!({"id": id, "deleted": true})], &["id", "deleted"]);
                }
                EndpointCmd::Test {
                    id,
                    event_type,
                    file,
                } => {
                    let payload = file.as_deref().map(|f| read_input(Some(f))).transpose()?;
                    crate::page::send_test(&mut c, key, j, id, event_type, payload).await?;
                }
                EndpointCmd::RotateSecret { id, grace, secret } => {
                    crate::page::rotate_secret(&mut c, key, j, id, grace.as_deref(), secret)
                        .await?;
                }
                EndpointCmd::TestFilter { filter, file } => {
                    let payload = read_input(file.as_deref())?;
                    crate::page::test_filter(&mut c, key, j, filter, payload).await?;
                }
                EndpointCmd::Secret { id } => {
                    let s = c
                        .get_endpoint_secret(authed(
                            pb::GetEndpointSecretRequest { id: id.clone() },
                            key,
                            "api key",
                        )?)
                        .await?
                        .into_inner();
                    print(
                        j,
                        &[json!({"id": id, "secret": s.secret})],
                        &["id", "secret"],
                    );
                }
            }
        }
        Command::EventType(cmd) => {
            let mut c = pb::event_types_client::EventTypesClient::new(channel(&cli.ingest).await?);
            let rows: Vec<pb::EventType> = match cmd {
                EventTypeCmd::Create {
                    name,
                    description,
                    group,
                } => {
                    vec![
                        c.create_event_type(authed(
                            pb::CreateEventTypeRequest {
                                name,
                                description,
                                group,
                            },
                            &cli.api_key,
                            "api key",
                        )?)
                        .await?
                        .into_inner(),
                    ]
                }
                EventTypeCmd::List { all, group } => {
                    crate::page::list_event_types(&mut c, &cli.api_key, all, group).await?
                }
                EventTypeCmd::Update {
                    name,
                    description,
                    group,
                } => vec![
                    crate::page::update_event_type(
                        &mut c,
                        &cli.api_key,
                        name,
                        description,
                        group,
                        None,
                    )
                    .await?,
                ],
                EventTypeCmd::Archive { name } => vec![
                    crate::page::update_event_type(
                        &mut c,
                        &cli.api_key,
                        name,
                        None,
                        None,
                        Some(true),
                    )
                    .await?,
                ],
                EventTypeCmd::Unarchive { name } => vec![
                    crate::page::update_event_type(
                        &mut c,
                        &cli.api_key,
                        name,
                        None,
                        None,
                        Some(false),
                    )
                    .await?,
                ],
            };
            let rows: Vec<_> = rows.iter().map(output::event_type).collect();
            print(
                j,
                &rows,
                &["name", "group", "description", "archived", "created_at"],
            );
        }
        Command::Publish {
            event_type,
            file,
            idempotency_key,
        } => {
            let payload = read_input(file.as_deref())?;
            let mut c = pb::events_client::EventsClient::new(channel(&cli.ingest).await?);
            let r = c
                .publish(authed(
                    pb::PublishRequest {
                        event_type,
                        payload,
                        idempotency_key,
                        occurred_at: None,
                    },
                    &cli.api_key,
                    "api key",
                )?)
                .await?
                .into_inner();
            print(
                j,
                &[
                    json!({"event_id": r.event_id, "deliveries": r.deliveries, "duplicate": r.duplicate}),
                ],
                &["event_id", "deliveries", "duplicate"],
            );
        }
        Command::Deliveries(cmd) => {
            let mut c = pb::deliveries_client::DeliveriesClient::new(channel(&cli.ledger).await?);
            match cmd {
                DeliveriesCmd::List {
                    endpoint,
                    event,
                    status,
                    event_type,
                    limit,
                    cursor,
                    since,
                    until,
                } => {
                    let req = pb::ListDeliveriesRequest {
                        since: since.as_deref().map(crate::page::parse_time).transpose()?,
                        until: until.as_deref().map(crate::page::parse_time).transpose()?,
                        endpoint_id: endpoint,
                        event_id: event,
                        status: status
                            .as_deref()
                            .map(parse_status)
                            .transpose()?
                            .unwrap_or(pb::DeliveryStatus::Unspecified)
                            as i32,
                        event_type,
                        page_size: limit,
                        cursor,
                    };
                    let r = c
                        .list_deliveries(authed(req, &cli.api_key, "api key")?)
                        .await?
                        .into_inner();
                    let rows: Vec<_> = r.deliveries.iter().map(output::delivery).collect();
                    if j {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(
                                &json!({"deliveries": rows, "next_cursor": r.next_cursor})
                            )?
                        );
                    } else {
                        print(false, &rows, DELIVERY_COLUMNS);
                        if !r.next_cursor.is_empty() {
                            println!("next page: --cursor {}", r.next_cursor);
                        }
                    }
                }
                DeliveriesCmd::Activity { limit } => {
                    crate::page::activity(&mut c, &cli.api_key, j, limit).await?;
                }
                DeliveriesCmd::Redeliver { id } => {
                    crate::page::redeliver(&mut c, &cli.api_key, j, id).await?;
                }
                DeliveriesCmd::Replay {
                    endpoint,
                    since,
                    until,
                    status,
                    limit,
                    after,
                } => {
                    let req = pb::ReplayEndpointRequest {
                        endpoint_id: endpoint,
                        since: since.as_deref().map(crate::page::parse_time).transpose()?,
                        until: until.as_deref().map(crate::page::parse_time).transpose()?,
                        status: parse_status(&status)? as i32,
                        limit,
                        after_delivery_id: after.unwrap_or_default(),
                    };
                    crate::page::replay(&mut c, &cli.api_key, j, req).await?;
                }
                DeliveriesCmd::Show {
                    id,
                    attempts_limit,
                    attempts_cursor,
                } => {
                    let r = c
                        .get_delivery(authed(
                            pb::GetDeliveryRequest {
                                id,
                                attempts_page_size: attempts_limit,
                                attempts_cursor,
                            },
                            &cli.api_key,
                            "api key",
                        )?)
                        .await?
                        .into_inner();
                    let d = r.delivery.unwrap_or_default();
                    if j {
                        let mut v = output::delivery(&d);
                        v["attempts"] = r.attempts.iter().map(output::attempt).collect();
                        v["next_attempts_cursor"] = json!(r.next_attempts_cursor);
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        print(false, &[output::delivery(&d)], DELIVERY_COLUMNS);
                        println!();
                        let rows: Vec<_> = r.attempts.iter().map(output::attempt).collect();
                        print(
                            false,
                            &rows,
                            &[
                                "attempt",
                                "status",
                                "started_at",
                                "response_status",
                                "latency_ms",
                                "error",
                                "trigger",
                            ],
                        );
                        if !r.next_attempts_cursor.is_empty() {
                            println!(
                                "more attempts: --attempts-cursor {}",
                                r.next_attempts_cursor
                            );
                        }
                    }
                }
            }
        }
        Command::Listen {
            host,
            port,
            secret,
            scheme,
            prefix,
            status,
        } => {
            crate::listen::run(&host, port, secret, scheme.parse()?, prefix, status).await?;
        }
        Command::Verify {
            scheme,
            secret,
            prefix,
            headers,
            body_file,
            tolerance,
        } => {
            let scheme: Scheme = scheme.parse()?;
            let body = read_input(Some(&body_file))?;
            let headers = parse_headers(&headers)?;
            let lookup = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let now = chrono::Utc::now().timestamp();
            match verify(
                scheme,
                &Secret::from_stored(secret),
                &prefix,
                &lookup,
                &body,
                now,
                tolerance,
            ) {
                Ok(()) => print(j, &[json!({"valid": true})], &["valid"]),
                Err(e) => {
                    print(
                        j,
                        &[json!({"valid": false, "reason": e.to_string()})],
                        &["valid", "reason"],
                    );
                    std::process::exit(1);
                }
            }
        }
    }
    Ok(())
}
