//! The outbound HTTP side: one pooled client, no redirects, a resolver that refuses forbidden
//! addresses at every connection (so a DNS answer that changes after the endpoint was created
//! cannot reach the internal network), and a capped body read.
//!
//! Through an egress proxy ([`crate::Egress`]: http, https, socks5 or socks5h), the proxy host
//! itself is exempt from the address guard (it is usually on the private network). The address
//! checked must be the address the proxy connects to, or a name whose DNS answer changes between
//! the check and the proxy's own lookup (rebinding) would reach the operator's network through
//! the proxy:
//!
//! - SOCKS5 (`socks5://`, and `socks5h://` too): the target's name is resolved here, through
//!   the guarded resolver, and the proxy is asked to connect to that checked address. A
//!   `socks5h://` proxy is used this way as well: it is never handed a name to resolve.
//! - HTTP(S) proxies get the name (`CONNECT name:443`, or an absolute-form `http://name/...`):
//!   the TLS handshake inside the tunnel must name and verify the original host, and a proxy
//!   replaces the Host header with the absolute-form's authority, so the request cannot carry a
//!   checked IP instead. Every address of the name is checked before each request; a name
//!   answering differently to the proxy's lookup moments later is not caught here. The proxy
//!   must refuse private destinations itself (e.g. Smokescreen, or Squid `dst` ACLs), or use
//!   SOCKS5.
//!
//! TLS is always verified, against the platform's roots plus any CA certificates from
//! `HERALD_CA_CERTS`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::address_policy::AddressPolicy;
use crate::egress::Egress;

/// Result of one POST.
#[derive(Debug)]
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

impl Failure {
    /// No answer within the deadline (this module's reasons for it start with `timeout`).
    pub fn timed_out(&self) -> bool {
        self.reason.starts_with("timeout")
    }
}

struct GuardedResolver {
    policy: AddressPolicy,
    /// Resolved without the guard: the operator's own proxy.
    exempt: Option<String>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        let exempt = self.exempt.as_deref() == Some(host.as_str());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if exempt {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
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

/// Most parsed endpoint URLs kept; past it the cache starts over.
const PARSED_URLS: usize = 4096;

/// Endpoint URLs already parsed, by their text: a URL parse (with IDNA host processing) cost
/// about 6,000 instructions per delivery under callgrind, a lookup a few hundred.
#[derive(Default)]
struct ParsedUrls(std::sync::Mutex<std::collections::HashMap<Box<str>, reqwest::Url>>);

impl ParsedUrls {
    fn get(&self, url: &str) -> Option<reqwest::Url> {
        let mut cache = self.0.lock().expect("url cache lock");
        if let Some(parsed) = cache.get(url) {
            return Some(parsed.clone());
        }
        let parsed = reqwest::Url::parse(url).ok()?;
        if cache.len() >= PARSED_URLS {
            cache.clear();
        }
        cache.insert(url.into(), parsed.clone());
        Some(parsed)
    }
}

/// The shared delivery client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    urls: Arc<ParsedUrls>,
    policy: AddressPolicy,
    max_body: usize,
    /// Through an HTTP(S) proxy, which resolves targets itself: they are resolved and checked
    /// here before each request.
    proxy_resolves: bool,
    /// The proxy's host name: the resolver lets it through unchecked, so a target of that
    /// name is checked before each request, as through an HTTP(S) proxy.
    proxy_host: Option<String>,
}

impl Client {
    /// `idle_per_host` should be at least the deliveries in flight: a smaller pool closes
    /// connections that the next deliveries to the same host then open again (perf showed
    /// `connect`/`shutdown`/`close` in the dispatcher's profile with 64 for 128 in flight).
    pub fn new(
        policy: AddressPolicy,
        max_body: usize,
        egress: &Egress,
        idle_per_host: usize,
    ) -> crate::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
                exempt: egress.proxy_host.clone(),
            }))
            .pool_max_idle_per_host(idle_per_host.max(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            // Header names go out as the products document them (`X-Acme-Signature`,
            // `Webhook-Id`), not lowercased: HTTP says case does not matter, but receivers
            // written against a doc sometimes compare bytes.
            .http1_title_case_headers()
            .tls_certs_merge(egress.roots.iter().cloned());
        builder = match &egress.proxy {
            Some(proxy) => builder.proxy(proxy.clone()),
            // Never pick up HTTP_PROXY and friends by accident: egress is configured explicitly.
            None => builder.no_proxy(),
        };
        Ok(Self {
            http: builder.build()?,
            urls: Arc::default(),
            policy,
            max_body,
            proxy_resolves: egress.proxy_resolves,
            proxy_host: egress.proxy_host.clone(),
        })
    }

    /// Through an HTTP(S) proxy the target's name is resolved by the proxy, out of the
    /// resolver's reach: resolve it here and refuse it if any address is forbidden.
    async fn check_proxied_target(&self, url: &reqwest::Url) -> Result<(), String> {
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("connection failed: cannot resolve {host}: {e}"))?;
        for a in addrs {
            if let Err(reason) = self.policy.check(a.ip()) {
                return Err(format!("blocked_address: {host} resolves to a {reason}"));
            }
        }
        Ok(())
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
        let parsed = self
            .urls
            .get(url)
            .ok_or_else(|| fail("invalid url".into()))?;
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
        let names_the_proxy =
            self.proxy_host.is_some() && parsed.host_str() == self.proxy_host.as_deref();
        if self.proxy_resolves || names_the_proxy {
            self.check_proxied_target(&parsed).await.map_err(fail)?;
        }
        // One deadline for the whole exchange, the body included.
        let deadline = tokio::time::Instant::now() + timeout;
        let sent = self.http.post(parsed).headers(headers).body(body).send();
        let mut resp = match tokio::time::timeout_at(deadline, sent).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(fail(describe(&e))),
            Err(_) => return Err(fail(format!("timeout after {} ms", timeout.as_millis()))),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // The status is the receiver's answer: a body then cut short (reset, or still
        // trickling at the deadline) shortens the excerpt, it does not turn a 2xx into a
        // failure that would be retried, and delivered twice.
        let mut body = Vec::new();
        let read = async {
            while body.len() < self.max_body {
                match resp.chunk().await? {
                    Some(chunk) => body
                        .extend_from_slice(&chunk[..chunk.len().min(self.max_body - body.len())]),
                    None => break,
                }
            }
            Ok::<_, reqwest::Error>(())
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(status, error = %describe(&e), "response body cut short"),
            Err(_) => tracing::debug!(status, "response body still arriving at the deadline"),
        }
        Ok(Response {
            status,
            retry_after,
            body,
            latency: start.elapsed(),
        })
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
    use herald_core::config::Reader;

    use super::*;

    #[test]
    fn parsed_urls_are_the_parse_of_their_text_and_bounded() {
        let urls = ParsedUrls::default();
        let text = "https://Bücher.example:8443/hooks/a?x=1";
        let first = urls.get(text).unwrap();
        assert_eq!(first, reqwest::Url::parse(text).unwrap());
        assert_eq!(first.host_str(), Some("xn--bcher-kva.example"));
        assert_eq!(urls.get(text).unwrap(), first, "served from the cache");
        assert!(urls.get("not a url").is_none());
        assert!(urls.get("http://").is_none());
        for i in 0..PARSED_URLS + 10 {
            let u = format!("http://h{i}.example/");
            assert_eq!(urls.get(&u).unwrap().as_str(), u);
        }
        assert!(urls.0.lock().unwrap().len() <= PARSED_URLS);
    }

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

    /// A receiver that answers the status line and headers, then sends `sent` of the body and
    /// either resets the connection or keeps it open past the client's deadline.
    async fn half_answer(status: u16, sent: &'static [u8], reset: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let _ = conn.read(&mut buf).await;
            let head = format!("HTTP/1.1 {status} OK\r\ncontent-length: 10000\r\n\r\n");
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.write_all(sent).await.unwrap();
            conn.flush().await.unwrap();
            if reset {
                drop(conn);
            } else {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        format!("http://{addr}/hook")
    }

    #[tokio::test]
    async fn header_names_go_out_title_cased() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let n = conn.read(&mut buf).await.unwrap();
            conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let loopback = vec!["127.0.0.0/8".parse().unwrap()];
        let client =
            Client::new(AddressPolicy::new(loopback), 4096, &Egress::default(), 4).unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-acme-signature", "sha256=00".parse().unwrap());
        headers.insert("webhook-id", "msg_1".parse().unwrap());
        let timeout = Duration::from_secs(5);
        let r = client
            .post(&url, headers, Bytes::from_static(b"{}"), timeout)
            .await
            .unwrap();
        assert_eq!(r.status, 204);
        let raw = server.await.unwrap();
        assert!(raw.contains("\r\nX-Acme-Signature: sha256=00\r\n"), "{raw}");
        assert!(raw.contains("\r\nWebhook-Id: msg_1\r\n"), "{raw}");
    }

    /// A SOCKS5 proxy that records the target of each CONNECT (`ip 1.2.3.4:80` or
    /// `name example.com:80`) and answers the tunnelled request itself with a 204.
    async fn socks_proxy() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut head = [0u8; 2];
                conn.read_exact(&mut head).await.unwrap();
                let mut methods = vec![0u8; usize::from(head[1])];
                conn.read_exact(&mut methods).await.unwrap();
                conn.write_all(&[5, 0]).await.unwrap();
                let mut req = [0u8; 4];
                conn.read_exact(&mut req).await.unwrap();
                let target = match req[3] {
                    1 => {
                        let mut ip = [0u8; 4];
                        conn.read_exact(&mut ip).await.unwrap();
                        format!("ip {}", std::net::Ipv4Addr::from(ip))
                    }
                    4 => {
                        let mut ip = [0u8; 16];
                        conn.read_exact(&mut ip).await.unwrap();
                        format!("ip {}", std::net::Ipv6Addr::from(ip))
                    }
                    _ => {
                        let mut len = [0u8; 1];
                        conn.read_exact(&mut len).await.unwrap();
                        let mut name = vec![0u8; usize::from(len[0])];
                        conn.read_exact(&mut name).await.unwrap();
                        format!("name {}", String::from_utf8_lossy(&name))
                    }
                };
                let mut port = [0u8; 2];
                conn.read_exact(&mut port).await.unwrap();
                record
                    .lock()
                    .unwrap()
                    .push(format!("{target}:{}", u16::from_be_bytes(port)));
                conn.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
                    .await
                    .unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn a_socks_proxy_connects_to_the_checked_address_never_to_a_name() {
        let (proxy, seen) = socks_proxy().await;
        for scheme in ["socks5h", "socks5"] {
            let env: std::collections::HashMap<String, String> = [(
                "HERALD_EGRESS_PROXY".to_owned(),
                format!("{scheme}://{proxy}"),
            )]
            .into();
            let egress = Egress::load(&Reader::new(&env)).unwrap();
            let post = |policy: AddressPolicy| {
                let egress = egress.clone();
                async move {
                    let client = Client::new(policy, 4096, &egress, 4).unwrap();
                    let timeout = Duration::from_secs(5);
                    let url = "http://localhost:8080/hook";
                    client
                        .post(url, Default::default(), Bytes::from_static(b"{}"), timeout)
                        .await
                }
            };
            // Allowed: the proxy is asked for the address the guard passed, not the name it
            // would resolve again (where a second DNS answer could point inside).
            let loopback = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
            let r = post(loopback).await.expect("delivered through the proxy");
            assert_eq!(r.status, 204);
            assert_eq!(
                std::mem::take(&mut *seen.lock().unwrap()),
                ["ip 127.0.0.1:8080"],
                "{scheme}"
            );
            // Refused: the proxy is never contacted.
            let f = post(AddressPolicy::default()).await.unwrap_err();
            assert!(f.reason.starts_with("blocked_address"), "{}", f.reason);
            assert!(seen.lock().unwrap().is_empty(), "{scheme}");
        }
    }

    #[tokio::test]
    async fn a_status_that_arrived_stands_when_the_body_is_cut_short() {
        let loopback = vec!["127.0.0.0/8".parse().unwrap()];
        let client =
            Client::new(AddressPolicy::new(loopback), 4096, &Egress::default(), 4).unwrap();
        let post = |url: String| {
            let client = &client;
            async move {
                let timeout = Duration::from_millis(300);
                client
                    .post(&url, Default::default(), Bytes::from_static(b"{}"), timeout)
                    .await
            }
        };
        // Body still trickling at the deadline: the 200 counts, the excerpt is what came.
        let r = post(half_answer(200, b"accepted", false).await)
            .await
            .expect("a 2xx whose body is late is still a response");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"accepted"[..]));
        assert!(r.latency >= Duration::from_millis(300));
        // Connection dropped mid-body.
        let r = post(half_answer(503, b"busy", true).await).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (503, &b"busy"[..]));
        // No answer at all within the deadline is still a timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", silent.local_addr().unwrap());
        let f = post(url).await.unwrap_err();
        assert!(f.reason.starts_with("timeout"), "{}", f.reason);
    }
}
