//! `heraldctl key`: a tenant's API keys, with the operator token. The key itself is printed
//! once, at creation; Herald keeps only its hash. A key may be narrowed to some scopes and may
//! expire.

use clap::Subcommand;
use herald_proto::v1 as pb;
use serde_json::json;

use crate::context::Ctx;
use crate::views;

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create an API key for a tenant and print it (shown only this once)
    Create {
        /// Tenant id the key acts for
        #[arg(long)]
        tenant: String,
        /// A name to tell keys apart
        #[arg(long, default_value = "default")]
        name: String,
        /// A scope the key gets (repeat; default every scope), e.g. events:publish
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Seconds until the key stops working (default: it does not expire)
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u32>,
    },
    /// List a tenant's API keys (never the keys themselves), newest first
    List {
        /// Tenant id
        #[arg(long)]
        tenant: String,
        /// Revoked and expired keys too
        #[arg(long)]
        all: bool,
        /// Most keys to show (at most 500)
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this key id (the previous page's next_cursor)
        #[arg(long, default_value = "")]
        cursor: String,
    },
    /// Revoke an API key; every service stops accepting it at once
    Revoke {
        /// Key id (not the key itself)
        key_id: String,
    },
}

impl KeyCmd {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let mut c = ctx.admin().await?;
        match self {
            KeyCmd::Create {
                tenant,
                name,
                scopes,
                ttl,
            } => {
                let req = pb::CreateApiKeyRequest {
                    tenant_id: tenant,
                    name,
                    scopes,
                    ttl_seconds: ttl,
                };
                let k = c.create_api_key(ctx.admin_call(req)?).await?.into_inner();
                let row = json!({"key_id": k.key_id, "tenant_id": k.tenant_id, "api_key": k.api_key,
                    "scopes": k.scopes.join(" "), "expires_at": views::time(&k.expires_at)});
                ctx.out
                    .rows(&[row], &["key_id", "tenant_id", "api_key", "scopes"])
            }
            KeyCmd::List {
                tenant,
                all,
                limit,
                cursor,
            } => {
                let req = pb::ListApiKeysRequest {
                    tenant_id: tenant,
                    include_revoked: all,
                    page_size: limit,
                    cursor,
                };
                let r = c.list_api_keys(ctx.admin_call(req)?).await?.into_inner();
                let rows: Vec<_> = r.keys.iter().map(views::api_key).collect();
                let columns = [
                    "id",
                    "name",
                    "scopes",
                    "created_at",
                    "expires_at",
                    "revoked_at",
                ];
                ctx.out
                    .page("keys", rows, &columns, &r.next_cursor, "--cursor")
            }
            KeyCmd::Revoke { key_id } => {
                let req = pb::RevokeApiKeyRequest {
                    key_id: key_id.clone(),
                };
                c.revoke_api_key(ctx.admin_call(req)?).await?;
                let row = json!({"key_id": key_id, "revoked": true});
                ctx.out.rows(&[row], &["key_id", "revoked"])
            }
        }
    }
}
