//! Egress settings: the proxy every delivery goes through, if any, and extra trusted roots.
//!
//! Operators who must publish fixed egress IPs send every delivery through a proxy
//! (`HERALD_EGRESS_PROXY`: http, https, socks5 or socks5h); how the address guard still holds
//! through each kind is in [`crate::client`]'s docs. `HERALD_CA_CERTS` adds CA certificates to
//! the platform's roots. The proxy URL may carry a password, so it is never echoed.

use herald_core::config::{ConfigError, Reader};

/// Outbound settings of every process that POSTs (dispatchers; ingest for test sends). Its
/// `Debug` leaves the proxy URL out: it may carry credentials.
#[derive(Clone, Default)]
pub struct Egress {
    pub(crate) proxy: Option<reqwest::Proxy>,
    /// The proxy's host name, exempt from the address guard.
    pub(crate) proxy_host: Option<String>,
    /// An HTTP(S) proxy, which resolves targets itself (see [`crate::client`]).
    pub(crate) proxy_resolves: bool,
    pub(crate) roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("proxied", &self.proxy.is_some())
            .field("extra_roots", &self.roots.len())
            .finish()
    }
}

impl Egress {
    /// Reads `HERALD_EGRESS_PROXY` and `HERALD_CA_CERTS`.
    pub fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        let err = |name: &str, message: String| ConfigError {
            name: name.to_owned(),
            message,
        };
        let mut egress = Egress::default();
        if let Some(raw) = r.optional("HERALD_EGRESS_PROXY") {
            // Never echo the value: it may hold a password.
            let mut url = reqwest::Url::parse(raw.trim()).map_err(|e| {
                err(
                    "HERALD_EGRESS_PROXY",
                    format!(
                        "not a URL ({e}); use http://, https://, socks5:// or socks5h://host:port"
                    ),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https" | "socks5" | "socks5h") {
                return Err(err(
                    "HERALD_EGRESS_PROXY",
                    format!(
                        "scheme {:?} is not supported; use http, https, socks5 or socks5h",
                        url.scheme()
                    ),
                ));
            }
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| err("HERALD_EGRESS_PROXY", "has no host".into()))?;
            egress.proxy_host = Some(host.trim_matches(['[', ']']).to_owned());
            egress.proxy_resolves = matches!(url.scheme(), "http" | "https");
            // Names are resolved and checked here, and the proxy gets the checked address.
            if url.scheme() == "socks5h" {
                url.set_scheme("socks5")
                    .expect("socks5h and socks5 are both non-special schemes");
            }
            egress.proxy = Some(
                reqwest::Proxy::all(url.as_str())
                    .map_err(|_| err("HERALD_EGRESS_PROXY", "is not a usable proxy URL".into()))?,
            );
        }
        if let Some(path) = r.optional("HERALD_CA_CERTS") {
            let pem = std::fs::read(&path)
                .map_err(|e| err("HERALD_CA_CERTS", format!("cannot read {path:?}: {e}")))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                err(
                    "HERALD_CA_CERTS",
                    format!("{path:?} is not a PEM certificate bundle: {e}"),
                )
            })?;
            if roots.is_empty() {
                return Err(err(
                    "HERALD_CA_CERTS",
                    format!("{path:?} holds no PEM certificate"),
                ));
            }
            egress.roots = roots;
        }
        Ok(egress)
    }

    /// Whether deliveries go through a proxy.
    pub fn proxied(&self) -> bool {
        self.proxy.is_some()
    }
}
