//! `heraldctl key`: a tenant's API keys, with the operator token. The key itself is printed
//! once, at creation; Herald keeps only its hash.

use clap::Subcommand;
use herald_proto::v1 as pb;
use serde_json::json;

use crate::context::Ctx;

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
            KeyCmd::Create { tenant, name } => {
                let req = pb::CreateApiKeyRequest {
                    tenant_id: tenant,
                    name,
                };
                let k = c.create_api_key(ctx.admin_call(req)?).await?.into_inner();
                let row =
                    json!({"key_id": k.key_id, "tenant_id": k.tenant_id, "api_key": k.api_key});
                ctx.out.rows(&[row], &["key_id", "tenant_id", "api_key"])
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
