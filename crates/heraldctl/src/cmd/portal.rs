//! `heraldctl portal`: links that open a tenant's webhooks page (herald-console), with the
//! operator token (any tenant) or a tenant's API key with the scope `portal:create` (its own
//! tenant). The link's token is printed once; it opens one session, once.

use clap::{Subcommand, ValueEnum};
use herald_proto::v1 as pb;
use serde_json::json;

use crate::context::Ctx;
use crate::views;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    Light,
    Dark,
}

#[derive(Subcommand, Debug)]
pub enum PortalCmd {
    /// Make a single-use link that opens the portal for one tenant and print it
    Link {
        /// Tenant id (with an API key: empty or the key's own tenant)
        #[arg(long, default_value = "")]
        tenant: String,
        /// Seconds the session lasts once the link is opened (60 to 86400; default 3600)
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u32>,
        /// Seconds the link can be opened in (10 to 3600; default 600)
        #[arg(long, value_name = "SECONDS")]
        link_ttl: Option<u32>,
        /// Keep only the :read scopes
        #[arg(long)]
        read_only: bool,
        /// A scope of the session (repeat; default: manage endpoints and read the log)
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Accent colour, #rrggbb
        #[arg(long, value_name = "#HEX")]
        accent: Option<String>,
        /// Title shown on the page (at most 64 characters)
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
        /// Light or dark (default: the viewer's system setting)
        #[arg(long, value_enum)]
        mode: Option<Mode>,
    },
}

impl PortalCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let PortalCmd::Link {
            tenant,
            ttl,
            link_ttl,
            read_only,
            scopes,
            accent,
            name,
            mode,
        } = self;
        let mut c = ctx.portal().await?;
        let theme = pb::PortalTheme {
            accent_color: accent.unwrap_or_default(),
            name: name.unwrap_or_default(),
            mode: match mode {
                None => pb::ThemeMode::Unspecified,
                Some(Mode::Light) => pb::ThemeMode::Light,
                Some(Mode::Dark) => pb::ThemeMode::Dark,
            } as i32,
        };
        let req = pb::CreatePortalSessionRequest {
            tenant_id: tenant,
            ttl_seconds: ttl,
            scopes,
            read_only,
            theme: Some(theme),
            link_ttl_seconds: link_ttl,
        };
        let r = c
            .create_portal_session(ctx.operator_or_key_call(req)?)
            .await?
            .into_inner();
        let row = json!({
            "url": r.url,
            "token": r.token,
            "link_expires_at": views::time(&r.link_expires_at),
            "scopes": r.scopes.join(" "),
            "ttl_seconds": r.ttl_seconds,
        });
        ctx.out
            .rows(&[row], &["url", "token", "link_expires_at", "scopes"])
    }
}
