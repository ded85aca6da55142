//! `heraldctl endpoint`: the endpoints a tenant's customers subscribed, what a "Webhooks" page
//! shows of them (state, statistics, latency) and its buttons: test send, secret rotation,
//! filter check.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herald_proto::v1 as pb;
use serde_json::json;

use crate::context::Ctx;
use crate::errors::Reported;
use crate::input::{parse_headers, parse_schedule, parse_scheme, read_input};
use crate::output::Output;
use crate::views;

/// The endpoint list, one line each.
const LIST_COLUMNS: &[&str] = &[
    "id",
    "url",
    "event_types",
    "enabled",
    "signing_scheme",
    "last_status",
    "total_deliveries",
    "success_rate",
    "disabled_reason",
];

/// One endpoint (get, update): its settings, how deliveries to it are going, its statistics.
const DETAIL_FIELDS: &[&str] = &[
    "id",
    "url",
    "description",
    "event_types",
    "filter",
    "enabled",
    "disabled_reason",
    "disabled_at",
    "state",
    "signing_scheme",
    "timeout_ms",
    "retry_schedule",
    "rate_limit_per_second",
    "max_in_flight",
    "consecutive_failures",
    "last_status",
    "last_delivery_at",
    "total_deliveries",
    "window_hours",
    "success_rate",
    "p50_latency_ms",
    "p95_latency_ms",
    "created_at",
    "updated_at",
];

#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Create an endpoint; prints its id and signing secret
    Create {
        #[command(flatten)]
        fields: EndpointFields,
        /// Create it switched off
        #[arg(long)]
        disabled: bool,
    },
    /// List the tenant's endpoints with their latest status and success rate
    List {
        /// Endpoints per page (at most 500)
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: u32,
        /// Where the list goes on from (printed under a page that has more)
        #[arg(long, default_value = "")]
        cursor: String,
    },
    /// Show one endpoint: settings, delivery state, statistics and latency
    Get {
        /// Endpoint id
        id: String,
    },
    /// Change an endpoint; flags left out stay as they are
    Update {
        /// Endpoint id
        id: String,
        #[command(flatten)]
        fields: EndpointFields,
        /// Switch it on (also clears an automatic disable and the failure streak)
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Switch it off; deliveries that come due meanwhile end failed
        #[arg(long)]
        disable: bool,
    },
    /// Delete an endpoint
    Delete {
        /// Endpoint id
        id: String,
    },
    /// Print the endpoint's signing secret alone (JSON with --json)
    Secret {
        /// Endpoint id
        id: String,
    },
    /// Send a test event to the endpoint now and print the outcome; exits 1 unless it got a 2xx
    Test {
        /// Endpoint id
        id: String,
        /// Event type (default webhook.test)
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
        /// File holding a JSON payload (default: a generated one)
        #[arg(long, value_name = "PATH")]
        file: Option<String>,
    },
    /// Rotate the signing secret; the old one keeps signing during the grace period
    RotateSecret {
        /// Endpoint id
        id: String,
        /// Grace period, e.g. 24h, 30m, 0s (default: the server's, 24 h; none for hex
        /// endpoints, whose one signature cannot overlap)
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
        /// The new secret (default: generated)
        #[arg(long)]
        secret: Option<String>,
    },
    /// Check a payload filter against a sample payload
    TestFilter {
        /// The filter, a JSON object such as '{"data.amount": {"$gt": 100}}'
        #[arg(long)]
        filter: String,
        /// File holding the sample JSON payload ("-" or absent: standard input)
        #[arg(long, value_name = "PATH")]
        file: Option<String>,
    },
}

/// An endpoint's settings, as `create` and `update` take them.
#[derive(Args, Debug)]
pub struct EndpointFields {
    /// The URL deliveries are POSTed to (required by create)
    #[arg(long)]
    url: Option<String>,
    /// A note for people
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Subscription: exact type, "prefix.*" or "*" (repeat; update replaces the list)
    #[arg(long = "event-type", value_name = "PATTERN")]
    event_types: Vec<String>,
    /// Signing scheme: standard, timestamped or hex
    #[arg(long)]
    scheme: Option<String>,
    /// Signing secret (default on create: generated; on update: replaced at once, no grace)
    #[arg(long)]
    secret: Option<String>,
    /// Time allowed for the endpoint's answer, in milliseconds (default 30000)
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u32>,
    /// Retry delays, e.g. "1m,5m,15m,1h,6h"; "none": one attempt, a failure is final;
    /// "default" (update only) goes back to the server's schedule
    #[arg(long, value_name = "DELAYS")]
    retry_schedule: Option<String>,
    /// Custom header "Name: value" sent with every delivery (repeat)
    #[arg(long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Payload filter, a JSON object such as '{"data.amount": {"$gt": 100}}' ("" removes it)
    #[arg(long)]
    filter: Option<String>,
    /// Most deliveries per second (0: unlimited)
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Most POSTs at once a dispatcher sends the endpoint, up to 256 (0: the server default)
    #[arg(long, value_name = "N")]
    max_in_flight: Option<u32>,
}

impl EndpointCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            EndpointCmd::Create { fields, disabled } => create(ctx, fields, disabled).await,
            EndpointCmd::List { limit, cursor } => list(ctx, limit, cursor).await,
            EndpointCmd::Get { id } => get(ctx, id).await,
            EndpointCmd::Update {
                id,
                fields,
                enable,
                disable,
            } => {
                let enabled = (enable || disable).then_some(enable);
                update(ctx, update_request(id, fields, enabled)?).await
            }
            EndpointCmd::Delete { id } => delete(ctx, id).await,
            EndpointCmd::Secret { id } => secret(ctx, id).await,
            EndpointCmd::Test {
                id,
                event_type,
                file,
            } => {
                let payload = file.as_deref().map(|f| read_input(Some(f))).transpose()?;
                let req = pb::SendTestRequest {
                    endpoint_id: id,
                    event_type,
                    payload,
                };
                send_test(ctx, req).await
            }
            EndpointCmd::RotateSecret { id, grace, secret } => {
                rotate_secret(ctx, id, grace.as_deref(), secret).await
            }
            EndpointCmd::TestFilter { filter, file } => {
                let payload = read_input(file.as_deref())?;
                test_filter(ctx, pb::TestFilterRequest { filter, payload }).await
            }
        }
    }
}

fn create_request(f: EndpointFields, disabled: bool) -> anyhow::Result<pb::CreateEndpointRequest> {
    let scheme = f.scheme.as_deref().map(parse_scheme).transpose()?;
    let no_retries = f.retry_schedule.as_deref() == Some("none");
    let retry_schedule_ms = match f.retry_schedule.as_deref() {
        None | Some("none") => Vec::new(),
        Some(s) => parse_schedule(s)?,
    };
    Ok(pb::CreateEndpointRequest {
        url: f.url.context("--url is required")?,
        description: f.description.unwrap_or_default(),
        event_types: f.event_types,
        enabled: Some(!disabled),
        signing_scheme: scheme.unwrap_or(pb::SigningScheme::Standard) as i32,
        secret: f.secret,
        timeout_ms: f.timeout_ms,
        retry_schedule_ms,
        no_retries,
        headers: parse_headers(&f.headers)?,
        filter: f.filter,
        rate_limit_per_second: f.rate_limit,
        max_in_flight: f.max_in_flight,
    })
}

fn update_request(
    id: String,
    f: EndpointFields,
    enabled: Option<bool>,
) -> anyhow::Result<pb::UpdateEndpointRequest> {
    let retry_schedule = match f.retry_schedule.as_deref() {
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
    let headers = match f.headers.is_empty() {
        true => None,
        false => Some(pb::HeaderMap {
            headers: parse_headers(&f.headers)?,
        }),
    };
    Ok(pb::UpdateEndpointRequest {
        id,
        url: f.url,
        description: f.description,
        event_types: (!f.event_types.is_empty()).then_some(pb::StringList {
            values: f.event_types,
        }),
        enabled,
        signing_scheme: f
            .scheme
            .as_deref()
            .map(parse_scheme)
            .transpose()?
            .map(|s| s as i32),
        timeout_ms: f.timeout_ms,
        retry_schedule,
        headers,
        secret: f.secret,
        filter: f.filter,
        rate_limit_per_second: f.rate_limit,
        max_in_flight: f.max_in_flight,
    })
}

async fn create(ctx: &Ctx, fields: EndpointFields, disabled: bool) -> anyhow::Result<()> {
    let req = create_request(fields, disabled)?;
    let mut c = ctx.endpoints().await?;
    let r = c.create_endpoint(ctx.tenant_call(req)?).await?.into_inner();
    let mut row = views::endpoint(&r.endpoint.unwrap_or_default());
    row["secret"] = json!(r.secret);
    ctx.out.rows(
        &[row],
        &["id", "url", "event_types", "signing_scheme", "secret"],
    )
}

async fn list(ctx: &Ctx, limit: u32, cursor: String) -> anyhow::Result<()> {
    let req = pb::ListEndpointsRequest {
        page_size: limit,
        cursor,
    };
    let mut c = ctx.endpoints().await?;
    let r = c.list_endpoints(ctx.tenant_call(req)?).await?.into_inner();
    let rows = r.endpoints.iter().map(views::endpoint).collect();
    ctx.out
        .page("endpoints", rows, LIST_COLUMNS, &r.next_cursor, "--cursor")
}

async fn get(ctx: &Ctx, id: String) -> anyhow::Result<()> {
    let mut c = ctx.endpoints().await?;
    let e = c
        .get_endpoint(ctx.tenant_call(pb::GetEndpointRequest { id })?)
        .await?;
    ctx.out
        .record(&views::endpoint(&e.into_inner()), DETAIL_FIELDS)
}

async fn update(ctx: &Ctx, req: pb::UpdateEndpointRequest) -> anyhow::Result<()> {
    let mut c = ctx.endpoints().await?;
    let e = c.update_endpoint(ctx.tenant_call(req)?).await?;
    ctx.out
        .record(&views::endpoint(&e.into_inner()), DETAIL_FIELDS)
}

async fn delete(ctx: &Ctx, id: String) -> anyhow::Result<()> {
    let mut c = ctx.endpoints().await?;
    c.delete_endpoint(ctx.tenant_call(pb::DeleteEndpointRequest { id: id.clone() })?)
        .await?;
    ctx.out
        .rows(&[json!({"id": id, "deleted": true})], &["id", "deleted"])
}

/// The secret alone on a line, as a receiver's configuration wants it.
async fn secret(ctx: &Ctx, id: String) -> anyhow::Result<()> {
    let mut c = ctx.endpoints().await?;
    let req = ctx.tenant_call(pb::GetEndpointSecretRequest { id: id.clone() })?;
    let s = c.get_endpoint_secret(req).await?.into_inner();
    let row = json!({"id": id, "secret": s.secret});
    match &ctx.out {
        Output::Table => crate::output::emit(&format!("{}\n", s.secret)),
        other => other.rows(&[row], &["id", "secret"]),
    }
}

async fn send_test(ctx: &Ctx, req: pb::SendTestRequest) -> anyhow::Result<()> {
    let mut c = ctx.endpoints().await?;
    let r = c.send_test(ctx.tenant_call(req)?).await?.into_inner();
    let row = json!({
        "delivery_id": r.delivery_id, "success": r.success,
        "response_status": views::http_status(r.response_status), "latency_ms": r.latency_ms,
        "response_body": r.response_body, "error": r.error,
    });
    let columns = [
        "delivery_id",
        "success",
        "response_status",
        "latency_ms",
        "error",
        "response_body",
    ];
    ctx.out.rows(&[row], &columns)?;
    match r.success {
        true => Ok(()),
        false => Err(Reported.into()),
    }
}

async fn rotate_secret(
    ctx: &Ctx,
    id: String,
    grace: Option<&str>,
    secret: Option<String>,
) -> anyhow::Result<()> {
    let grace = grace
        .map(herald_core::schedule::parse_duration)
        .transpose()?
        .map(|g| g.as_secs().min(u64::from(u32::MAX)) as u32);
    let req = pb::RotateSecretRequest {
        endpoint_id: id.clone(),
        grace_period_seconds: grace,
        secret,
    };
    let mut c = ctx.endpoints().await?;
    let r = c.rotate_secret(ctx.tenant_call(req)?).await?.into_inner();
    let row = json!({"id": id, "secret": r.secret,
        "previous_expires_at": views::time(&r.previous_expires_at)});
    ctx.out
        .rows(&[row], &["id", "secret", "previous_expires_at"])
}

async fn test_filter(ctx: &Ctx, req: pb::TestFilterRequest) -> anyhow::Result<()> {
    let mut c = ctx.endpoints().await?;
    let r = c.test_filter(ctx.tenant_call(req)?).await?.into_inner();
    let row = json!({"matches": r.matches, "explanation": r.explanation});
    ctx.out.rows(&[row], &["matches", "explanation"])
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Line {
        #[command(subcommand)]
        cmd: EndpointCmd,
    }

    fn fields(line: &[&str]) -> (EndpointFields, Option<String>) {
        let all = ["t", "update", "ep_1"].iter().chain(line);
        match Line::try_parse_from(all).unwrap().cmd {
            EndpointCmd::Update { fields, id, .. } => (fields, Some(id)),
            _ => unreachable!("parsed as update"),
        }
    }

    #[test]
    fn create_needs_a_url_and_reads_none_as_no_retries() {
        let (f, _) = fields(&["--retry-schedule", "none"]);
        assert_eq!(
            create_request(f, false).unwrap_err().to_string(),
            "--url is required"
        );
        let (f, _) = fields(&[
            "--url",
            "https://x/h",
            "--retry-schedule",
            "none",
            "--scheme",
            "hex",
        ]);
        let req = create_request(f, true).unwrap();
        assert!(req.no_retries && req.retry_schedule_ms.is_empty());
        assert_eq!(req.enabled, Some(false));
        assert_eq!(req.signing_scheme, pb::SigningScheme::Hex as i32);
    }

    #[test]
    fn update_sends_only_what_was_given() {
        let (f, id) = fields(&["--retry-schedule", "default"]);
        let req = update_request(id.unwrap(), f, None).unwrap();
        assert_eq!(req.retry_schedule, Some(pb::DelayList::default()));
        assert!(req.url.is_none() && req.event_types.is_none() && req.headers.is_none());
        assert!(req.enabled.is_none());
        let (f, _) = fields(&["--header", "X-A: 1", "--event-type", "a.*"]);
        let req = update_request("ep_1".into(), f, Some(false)).unwrap();
        assert_eq!(req.headers.unwrap().headers["X-A"], "1");
        assert_eq!(req.event_types.unwrap().values, ["a.*"]);
        assert_eq!(req.enabled, Some(false));
    }

    #[test]
    fn a_bad_schedule_or_header_is_refused_before_any_call() {
        let (f, _) = fields(&["--retry-schedule", "soon"]);
        assert!(update_request("ep_1".into(), f, None).is_err());
        let (f, _) = fields(&["--url", "https://x/h", "--header", "novalue"]);
        assert!(create_request(f, false).is_err());
    }

    #[test]
    fn the_detail_shows_latency_and_last_delivery() {
        for field in [
            "p50_latency_ms",
            "p95_latency_ms",
            "last_delivery_at",
            "state",
        ] {
            assert!(DETAIL_FIELDS.contains(&field), "{field}");
        }
        let row = views::endpoint(&pb::Endpoint::default());
        for field in DETAIL_FIELDS.iter().chain(LIST_COLUMNS) {
            assert!(row.get(*field).is_some(), "the view has no {field}");
        }
    }
}
