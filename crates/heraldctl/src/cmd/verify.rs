//! `heraldctl verify`: check a received delivery's signature as a receiver would, from its
//! headers and raw body; exits 1 when it does not verify, so scripts can branch on it.

use clap::Args;
use herald_core::signing::{Scheme, Secret, verify};
use serde_json::json;

use crate::context::Ctx;
use crate::errors::Reported;
use crate::input::{parse_headers, read_input, webhook_secret};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The endpoint's signing scheme: standard, timestamped or hex
    #[arg(long, default_value = "standard")]
    scheme: String,
    /// The endpoint's secret; prefer the environment variable, which `ps` does not show
    #[arg(long, env = "HERALD_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// Header prefix of the timestamped and hex schemes
    #[arg(long, default_value = "Webhook-")]
    prefix: String,
    /// A received header as "Name: value" (repeat)
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    headers: Vec<String>,
    /// File holding the raw body ("-" for standard input)
    #[arg(long, value_name = "PATH")]
    body_file: String,
    /// Largest accepted clock difference in seconds
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    tolerance: i64,
}

impl VerifyArgs {
    pub fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let scheme: Scheme = self.scheme.parse()?;
        let secret = Secret::from_stored(webhook_secret(&self.secret)?);
        let headers = parse_headers(&self.headers)?;
        let body = read_input(Some(&self.body_file))?;
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let now = chrono::Utc::now().timestamp();
        match verify(
            scheme,
            &secret,
            &self.prefix,
            &lookup,
            &body,
            now,
            self.tolerance,
        ) {
            Ok(()) => ctx.out.rows(&[json!({"valid": true})], &["valid"]),
            Err(e) => {
                let row = json!({"valid": false, "reason": e.to_string()});
                ctx.out.rows(&[row], &["valid", "reason"])?;
                Err(Reported.into())
            }
        }
    }
}
