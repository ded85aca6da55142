//! The outbound HTTP side: one pooled client, no redirects, a resolver that refuses forbidden
//! addresses at every connection (so a DNS answer that changes after the endpoint was created
//! cannot reach the internal network), and a capped body read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_core::net::AddressPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Result of one POST.
pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
    pub latency: Duration,
}

/// Why a POST produced no response.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    pub latency: Duration,
}

struct GuardedResolver {
    policy: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(reason) => {
                        refused = Some(reason);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let reason = refused.unwrap_or("no address");
                return Err(format!("blocked_address: {host} resolves to a {reason}").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The shared delivery client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: AddressPolicy,
    max_body: usize,
}

impl Client {
    pub fn new(policy: AddressPolicy, max_body: usize) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            policy,
            max_body,
        })
    }

    /// POSTs `body` with `headers`, bounded by `timeout` for the whole exchange.
    pub async fn post(
        &self,
        url: &str,
        headers: reqwest::header::HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let start = Instant::now();
        let fail = |reason: String| Failure {
            reason,
            latency: start.elapsed(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|_| fail("invalid url".into()))?;
        // Literal IPs bypass the resolver: check them here.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = literal
            && let Err(reason) = self.policy.check(ip)
        {
            return Err(fail(format!("blocked_address: {ip} is a {reason}")));
        }
        let exchange = async {
            let mut resp = self
                .http
                .post(parsed)
                .headers(headers)
                .body(body)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let mut body = Vec::new();
            while body.len() < self.max_body {
                match resp.chunk().await? {
                    Some(chunk) => body
                        .extend_from_slice(&chunk[..chunk.len().min(self.max_body - body.len())]),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>((status, retry_after, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok((status, retry_after, body))) => Ok(Response {
                status,
                retry_after,
                body,
                latency: start.elapsed(),
            }),
            Ok(Err(e)) => Err(fail(describe(&e))),
            Err(_) => Err(fail(format!("timeout after {} ms", timeout.as_millis()))),
        }
    }
}

/// A short reason without the URL (which may carry tokens).
fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut innermost = String::new();
    while let Some(s) = source {
        innermost = s.to_string();
        source = s.source();
    }
    if innermost.starts_with("blocked_address") {
        return innermost;
    }
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body error"
    } else {
        "request failed"
    };
    format!("{kind}: {innermost}")
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let future =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(600));
        let d = parse_retry_after(&future).unwrap();
        assert!(d > Duration::from_secs(590) && d <= Duration::from_secs(600));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
