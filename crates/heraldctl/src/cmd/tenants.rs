//! `heraldctl tenant`: tenants and their delivery settings, with the operator token; the
//! tenants in trouble (failing, throttled or auto-disabled endpoints).

use clap::{Args, Subcommand};
use herald_proto::v1 as pb;

use crate::context::Ctx;
use crate::views;

const COLUMNS: &[&str] = &["id", "name", "header_prefix", "user_agent"];
const LIST_COLUMNS: &[&str] = &["id", "name", "created_at"];

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Create a tenant and print its id
    Create {
        /// Display name, e.g. the customer's company
        #[arg(long)]
        name: String,
        #[command(flatten)]
        settings: TenantSettings,
        /// Events per second the tenant may publish (0: unlimited; unset: the server default)
        #[arg(long, value_name = "N")]
        publish_rate_limit: Option<u32>,
        /// An origin allowed to embed the portal, https://host[:port] (repeat; at most 16)
        #[arg(long = "portal-origin", value_name = "ORIGIN")]
        portal_origins: Vec<String>,
    },
    /// List tenants, newest first
    List {
        /// Most tenants to show (at most 500)
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this tenant id (the previous page's next_cursor)
        #[arg(long, default_value = "")]
        cursor: String,
    },
    /// The tenants with the most failing, throttled or auto-disabled endpoints, worst first
    Troubled {
        /// Most tenants to show (at most 100)
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one tenant
    Get {
        /// Tenant id
        id: String,
    },
    /// Change a tenant's name or settings; flags left out stay as they are
    Update {
        /// Tenant id
        id: String,
        /// New display name
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        settings: TenantSettings,
        /// Events per second the tenant may publish (0: unlimited)
        #[arg(long, value_name = "N", conflicts_with = "default_publish_rate_limit")]
        publish_rate_limit: Option<u32>,
        /// Return the publish rate limit to the server default
        #[arg(long)]
        default_publish_rate_limit: bool,
        /// Replace the origins allowed to embed the portal (repeat; see --no-portal-origins)
        #[arg(long = "portal-origin", value_name = "ORIGIN")]
        portal_origins: Vec<String>,
        /// Allow no origin to embed the portal
        #[arg(long, conflicts_with = "portal_origins")]
        no_portal_origins: bool,
    },
}

/// Settings shared by `create` and `update`.
#[derive(Args, Debug)]
pub struct TenantSettings {
    /// Prefix of the delivery headers, e.g. "X-Acme-" (default "Webhook-")
    #[arg(long, value_name = "PREFIX")]
    header_prefix: Option<String>,
    /// User-Agent of the deliveries
    #[arg(long, value_name = "TEXT")]
    user_agent: Option<String>,
    /// Endpoint URLs must use https (true/false)
    #[arg(long, value_name = "BOOL")]
    require_https: Option<bool>,
    /// Refuse events whose type is not in the catalogue (true/false)
    #[arg(long, value_name = "BOOL")]
    reject_unknown_event_types: Option<bool>,
}

impl TenantCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let mut c = ctx.admin().await?;
        let tenant = match self {
            TenantCmd::Create {
                name,
                settings: s,
                publish_rate_limit,
                portal_origins,
            } => {
                let req = pb::CreateTenantRequest {
                    name,
                    header_prefix: s.header_prefix,
                    user_agent: s.user_agent,
                    require_https: s.require_https,
                    reject_unknown_event_types: s.reject_unknown_event_types,
                    publish_rate_limit,
                    portal_allowed_origins: portal_origins,
                };
                c.create_tenant(ctx.admin_call(req)?).await?
            }
            TenantCmd::List { limit, cursor } => {
                let req = pb::ListTenantsRequest {
                    page_size: limit,
                    cursor,
                };
                let r = c.list_tenants(ctx.admin_call(req)?).await?.into_inner();
                let rows = r.tenants.iter().map(views::tenant).collect();
                return ctx
                    .out
                    .page("tenants", rows, LIST_COLUMNS, &r.next_cursor, "--cursor");
            }
            TenantCmd::Troubled { limit } => {
                let req = pb::ListTroubledTenantsRequest { limit };
                let r = c
                    .list_troubled_tenants(ctx.admin_call(req)?)
                    .await?
                    .into_inner();
                let rows: Vec<_> = r.tenants.iter().map(views::troubled_tenant).collect();
                return ctx.out.rows(
                    &rows,
                    &[
                        "tenant_id",
                        "name",
                        "failing",
                        "throttled",
                        "auto_disabled",
                        "endpoints",
                    ],
                );
            }
            TenantCmd::Get { id } => {
                c.get_tenant(ctx.admin_call(pb::GetTenantRequest { id })?)
                    .await?
            }
            TenantCmd::Update {
                id,
                name,
                settings: s,
                publish_rate_limit,
                default_publish_rate_limit,
                portal_origins,
                no_portal_origins,
            } => {
                let req = pb::UpdateTenantRequest {
                    id,
                    name,
                    header_prefix: s.header_prefix,
                    user_agent: s.user_agent,
                    require_https: s.require_https,
                    reject_unknown_event_types: s.reject_unknown_event_types,
                    publish_rate_limit,
                    default_publish_rate_limit,
                    portal_allowed_origins: (no_portal_origins || !portal_origins.is_empty())
                        .then_some(pb::StringList {
                            values: portal_origins,
                        }),
                };
                c.update_tenant(ctx.admin_call(req)?).await?
            }
        };
        ctx.out
            .rows(&[views::tenant(&tenant.into_inner())], COLUMNS)
    }
}
