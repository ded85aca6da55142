//! `heraldctl tenant`: tenants and their delivery settings, with the operator token.

use clap::{Args, Subcommand};
use herald_proto::v1 as pb;

use crate::context::Ctx;
use crate::views;

const COLUMNS: &[&str] = &["id", "name", "header_prefix", "user_agent"];

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
            } => {
                let req = pb::CreateTenantRequest {
                    name,
                    header_prefix: s.header_prefix,
                    user_agent: s.user_agent,
                    require_https: s.require_https,
                    reject_unknown_event_types: s.reject_unknown_event_types,
                    publish_rate_limit,
                };
                c.create_tenant(ctx.admin_call(req)?).await?
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
                };
                c.update_tenant(ctx.admin_call(req)?).await?
            }
        };
        ctx.out
            .rows(&[views::tenant(&tenant.into_inner())], COLUMNS)
    }
}
