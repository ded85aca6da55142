//! Console settings (`HERALD_CONSOLE_*` environment variables over the defaults documented
//! here). The public URL decides the cookies' attributes: behind https the portal's cookie is
//! `Secure; SameSite=None; Partitioned` so that it works inside a platform's cross-site iframe;
//! over plain http it is `SameSite=Lax` (browsers drop `SameSite=None` cookies without TLS).

use herald_core::config::{ConfigError, Reader};
use secrecy::SecretSlice;

/// Everything the console needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// `HERALD_CONSOLE_ADDR`: HTTP listen address, default `127.0.0.1:8080`.
    pub listen_addr: String,
    /// `HERALD_CONSOLE_PUBLIC_URL`: the URL browsers reach the console at, default
    /// `http://127.0.0.1:8080`; its origin is the only one a form may be posted from.
    pub public_url: url::Url,
    /// `HERALD_CONSOLE_INGEST_URL`: ingest's gRPC address, default `http://127.0.0.1:50051`.
    pub ingest_url: String,
    /// `HERALD_CONSOLE_LEDGER_URL`: the ledger's gRPC address, default `http://127.0.0.1:50052`.
    pub ledger_url: String,
    /// `HERALD_CONSOLE_SECRET`: key of the CSRF tokens and of the portal's view cookie; random
    /// per process when unset (a restart then invalidates open forms and portal pages).
    pub secret: SecretSlice<u8>,
    /// Whether `secret` was configured (false: generated at start).
    pub secret_configured: bool,
    /// `HERALD_CONSOLE_HEALTH_URLS`: `name=url,…` of the services' `/readyz`, shown on the
    /// operator overview; default the three local services.
    pub health_urls: Vec<(String, String)>,
    /// `HERALD_METRICS_ADDR`: `/metrics`, `/livez`, `/readyz`, default `127.0.0.1:9604`.
    pub metrics_addr: String,
}

/// The default `HERALD_CONSOLE_HEALTH_URLS`.
pub const DEFAULT_HEALTH_URLS: &str = "ingest=http://127.0.0.1:9601/readyz,\
     dispatcher=http://127.0.0.1:9603/readyz,ledger=http://127.0.0.1:9602/readyz";

impl Config {
    pub fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let public = r.string("HERALD_CONSOLE_PUBLIC_URL", "http://127.0.0.1:8080");
        let secret = r
            .optional("HERALD_CONSOLE_SECRET")
            .filter(|s| !s.is_empty());
        Ok(Self {
            listen_addr: r.string("HERALD_CONSOLE_ADDR", "127.0.0.1:8080"),
            public_url: public_url(&public)?,
            ingest_url: r.string("HERALD_CONSOLE_INGEST_URL", "http://127.0.0.1:50051"),
            ledger_url: r.string("HERALD_CONSOLE_LEDGER_URL", "http://127.0.0.1:50052"),
            secret_configured: secret.is_some(),
            secret: match secret {
                Some(s) if s.len() < 16 => {
                    return Err(err(
                        "HERALD_CONSOLE_SECRET",
                        "must be at least 16 characters",
                    ));
                }
                Some(s) => SecretSlice::from(s.into_bytes()),
                None => SecretSlice::from(crate::csrf::random_bytes(32)),
            },
            health_urls: health_urls(&r.string("HERALD_CONSOLE_HEALTH_URLS", DEFAULT_HEALTH_URLS))?,
            metrics_addr: r.string("HERALD_METRICS_ADDR", "127.0.0.1:9604"),
        })
    }

    /// True when browsers reach the console over TLS.
    pub fn https(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// `scheme://host[:port]` of the public URL, as browsers send it in `Origin`.
    pub fn origin(&self) -> String {
        self.public_url.origin().ascii_serialization()
    }

    /// The public URL without a trailing slash, to put paths after.
    pub fn base(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }
}

fn err(name: &str, message: &str) -> ConfigError {
    ConfigError {
        name: name.into(),
        message: message.into(),
    }
}

fn public_url(text: &str) -> Result<url::Url, ConfigError> {
    let name = "HERALD_CONSOLE_PUBLIC_URL";
    let url = url::Url::parse(text).map_err(|e| err(name, &format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(err(name, "must be an http:// or https:// URL with a host"));
    }
    Ok(url)
}

/// Parses `name=url,…`.
fn health_urls(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, url)) if !name.trim().is_empty() && url.trim().starts_with("http") => {
                Ok((name.trim().to_owned(), url.trim().to_owned()))
            }
            _ => Err(err(
                "HERALD_CONSOLE_HEALTH_URLS",
                &format!("{pair:?} is not name=http(s)://host:port/readyz"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load(&Reader::new(&env))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = load(&[]).unwrap();
        assert_eq!(c.listen_addr, "127.0.0.1:8080");
        assert_eq!(c.origin(), "http://127.0.0.1:8080");
        assert!(!c.https());
        assert!(!c.secret_configured);
        assert_eq!(c.health_urls.len(), 3);
        assert_eq!(c.metrics_addr, "127.0.0.1:9604");
    }

    #[test]
    fn an_https_public_url_is_what_makes_cookies_secure() {
        let c = load(&[("HERALD_CONSOLE_PUBLIC_URL", "https://hooks.acme.example/")]).unwrap();
        assert!(c.https());
        assert_eq!(c.origin(), "https://hooks.acme.example");
        assert_eq!(c.base(), "https://hooks.acme.example");
        let cookie = crate::cookies::set(
            crate::cookies::Area::Portal,
            c.https(),
            crate::cookies::PORTAL,
            "hs_x",
            60,
        );
        assert!(
            cookie.ends_with("; Secure; SameSite=None; Partitioned"),
            "{cookie}"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let e = load(&[("HERALD_CONSOLE_PUBLIC_URL", "ftp://x")]).unwrap_err();
        assert_eq!(e.name, "HERALD_CONSOLE_PUBLIC_URL");
        let e = load(&[("HERALD_CONSOLE_SECRET", "short")]).unwrap_err();
        assert_eq!(e.name, "HERALD_CONSOLE_SECRET");
        let e = load(&[("HERALD_CONSOLE_HEALTH_URLS", "ingest")]).unwrap_err();
        assert_eq!(e.name, "HERALD_CONSOLE_HEALTH_URLS");
    }
}
