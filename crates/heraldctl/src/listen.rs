//! `heraldctl listen`: a local receiver for trying Herald out, printing every delivery with its
//! event type, attempt and whether its signature verifies.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use herald_core::signing::{Scheme, Secret, verify};

struct Settings {
    secret: Option<Secret>,
    scheme: Scheme,
    prefix: String,
    status: StatusCode,
}

pub async fn run(
    host: &str,
    port: u16,
    secret: Option<String>,
    scheme: Scheme,
    prefix: String,
    status: u16,
) -> anyhow::Result<()> {
    let settings = Arc::new(Settings {
        secret: secret.map(Secret::from_stored),
        scheme,
        prefix,
        status: StatusCode::from_u16(status)?,
    });
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let s = settings.clone();
        async move {
            let h = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let event = h(&format!("{}Event", s.prefix)).unwrap_or_default();
            let attempt = h(&format!("{}Attempt", s.prefix)).unwrap_or_default();
            let id = h(&format!("{}Delivery-Id", s.prefix)).unwrap_or_default();
            let verdict = match &s.secret {
                None => "not checked (no --secret)".to_owned(),
                Some(secret) => {
                    let now = chrono::Utc::now().timestamp();
                    match verify(s.scheme, secret, &s.prefix, &h, &body, now, 300) {
                        Ok(()) => "valid".to_owned(),
                        Err(e) => format!("INVALID ({e})"),
                    }
                }
            };
            println!(
                "POST {uri} event={event} delivery={id} attempt={attempt} signature={verdict}"
            );
            println!("{}", String::from_utf8_lossy(&body));
            s.status
        }
    });
    let listener = tokio::net::TcpListener::bind((host, port)).await?;
    eprintln!("listening on http://{host}:{port} (Ctrl-C to stop)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
