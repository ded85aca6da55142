//! `heraldctl listen`: a local receiver for trying Herald out, printing every delivery with its
//! event type, attempt and whether its signature verifies.
//!
//! The secret is best given in `HERALD_WEBHOOK_SECRET`: a flag's value shows in `ps` to every
//! user of the machine. It must be one line (several lines are several secrets captured at
//! once). When whoever reads the output goes away (`heraldctl listen | head`), the receiver
//! stops quietly instead of panicking on the closed pipe.

use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use clap::Args;
use herald_core::signing::{Scheme, Secret, verify};
use tokio::sync::Notify;

use crate::errors::is_broken_pipe;
use crate::input::webhook_secret;
use crate::output::emit;

/// Largest clock difference a delivery's timestamp may show, in seconds.
const TOLERANCE_SECS: i64 = 300;

#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Address to listen on (0.0.0.0 to accept deliveries from other hosts or containers)
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Secret to verify signatures with; prefer the environment variable, which `ps` does not show
    #[arg(long, env = "HERALD_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The endpoint's signing scheme: standard, timestamped or hex
    #[arg(long, default_value = "standard")]
    scheme: String,
    /// The tenant's header prefix (names the Event, Delivery-Id and Attempt headers)
    #[arg(long, default_value = "Webhook-")]
    prefix: String,
    /// HTTP status to answer with (e.g. 500 to watch retries)
    #[arg(long, default_value_t = 200)]
    status: u16,
}

/// What the receiver checks deliveries with and answers.
struct Receiver {
    secret: Option<Secret>,
    scheme: Scheme,
    prefix: String,
    status: StatusCode,
    /// Woken when standard output is closed.
    stop: Notify,
}

impl ListenArgs {
    fn receiver(self) -> anyhow::Result<Receiver> {
        let secret = self.secret.as_deref().map(webhook_secret).transpose()?;
        let status = StatusCode::from_u16(self.status)
            .ok()
            .filter(|_| (100..=599).contains(&self.status))
            .with_context(|| format!("--status {} is not an HTTP status", self.status))?;
        Ok(Receiver {
            secret: secret.map(Secret::from_stored),
            scheme: self.scheme.parse()?,
            prefix: self.prefix,
            status,
            stop: Notify::new(),
        })
    }

    pub async fn run(self) -> anyhow::Result<()> {
        let (host, port) = (self.host.clone(), self.port);
        let receiver = Arc::new(self.receiver()?);
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .with_context(|| format!("cannot listen on {host}:{port}"))?;
        eprintln!("listening on http://{host}:{port} (Ctrl-C to stop)");
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = receiver.stop.notified() => {}
                }
            })
            .await?;
        Ok(())
    }
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let text = r.describe(&uri, &headers, &body, chrono::Utc::now().timestamp());
    if let Err(e) = emit(&text)
        && is_broken_pipe(&e)
    {
        r.stop.notify_one();
    }
    r.status
}

impl Receiver {
    /// Two lines for one delivery: what it is and whether it verifies, then its body.
    fn describe(&self, uri: &Uri, headers: &HeaderMap, body: &[u8], now: i64) -> String {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let named = |suffix: &str| header(&format!("{}{suffix}", self.prefix)).unwrap_or_default();
        let verdict = match &self.secret {
            None => "not checked (no secret)".to_owned(),
            Some(secret) => {
                match verify(
                    self.scheme,
                    secret,
                    &self.prefix,
                    &header,
                    body,
                    now,
                    TOLERANCE_SECS,
                ) {
                    Ok(()) => "valid".to_owned(),
                    Err(e) => format!("INVALID ({e})"),
                }
            }
        };
        format!(
            "POST {uri} event={} delivery={} attempt={} signature={verdict}\n{}\n",
            named("Event"),
            named("Delivery-Id"),
            named("Attempt"),
            String::from_utf8_lossy(body)
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use herald_core::signing::{SignInput, sign};

    use super::*;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: ListenArgs,
    }

    fn receiver(line: &[&str]) -> anyhow::Result<Receiver> {
        Line::try_parse_from(std::iter::once(&"listen").chain(line))?
            .args
            .receiver()
    }

    fn signed(secret: &str, body: &[u8], now: i64) -> HeaderMap {
        let secret = Secret::from_stored(secret.to_owned());
        let input = SignInput {
            id: "d_1",
            timestamp: now,
            body,
        };
        let mut headers = HeaderMap::new();
        for (k, v) in sign(Scheme::Standard, &[&secret], "Webhook-", &input) {
            headers.insert(
                axum::http::HeaderName::try_from(k).unwrap(),
                v.parse().unwrap(),
            );
        }
        headers.insert("Webhook-Event", "invoice.paid".parse().unwrap());
        headers
    }

    #[test]
    fn a_multi_line_secret_is_refused() {
        let err = receiver(&["--secret", "whsec_a\nwhsec_b"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("the webhook secret spans 2 lines"), "{err}");
        assert!(receiver(&["--secret", "whsec_a\n"]).is_ok());
    }

    #[test]
    fn a_status_outside_http_is_refused() {
        let err = receiver(&["--status", "42"]).err().unwrap().to_string();
        assert_eq!(err, "--status 42 is not an HTTP status");
    }

    #[test]
    fn a_delivery_prints_with_its_verdict() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let r = receiver(&["--secret", secret]).unwrap();
        let body = br#"{"invoice":"in_1"}"#;
        let uri: Uri = "/hook".parse().unwrap();
        let text = r.describe(&uri, &signed(secret, body, 1_000), body, 1_010);
        assert_eq!(
            text,
            "POST /hook event=invoice.paid delivery= attempt= signature=valid\n{\"invoice\":\"in_1\"}\n"
        );
        let other = signed("whsec_b3RoZXJvdGhlcm90aGVyb3RoZXJvdGhlcm8=", body, 1_000);
        let text = r.describe(&uri, &other, body, 1_010);
        assert!(
            text.contains("signature=INVALID (no signature matches)"),
            "{text}"
        );
        let unchecked = receiver(&[]).unwrap().describe(&uri, &other, body, 1_010);
        assert!(unchecked.contains("signature=not checked"), "{unchecked}");
    }
}
