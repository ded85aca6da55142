//! Outbound test fixtures: a private certificate authority with an HTTPS receiver and a TLS
//! front for the broker it signed, and a small HTTP proxy (CONNECT tunnels and absolute-form
//! forwarding) that records the targets it was asked for.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA made for one test and a server certificate it issued for `localhost` and 127.0.0.1.
pub struct TestCa {
    /// The CA certificate, PEM (what `HERALD_CA_CERTS` points at).
    pub ca_pem: String,
    /// The CA certificate, DER (a root to trust in code).
    pub ca_der: CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "herald test ca");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .expect("server config");
        TestCa {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server: Arc::new(server),
        }
    }

    /// Writes the CA certificate to a file and returns its path.
    pub fn write_ca(&self, name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("{name}-{}.pem", std::process::id()));
        std::fs::write(&path, &self.ca_pem).expect("write ca");
        path
    }

    /// A TLS front for `upstream` (the broker, say): terminates TLS with the server certificate
    /// and relays the plain bytes both ways. Returns its port and the count of TLS sessions it
    /// accepted (a client refusing the certificate is not counted).
    pub async fn tls_front(&self, upstream: SocketAddr) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sessions = Arc::new(AtomicUsize::new(0));
        let acceptor = TlsAcceptor::from(self.server.clone());
        let counter = sessions.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        (port, sessions)
    }

    /// An HTTPS receiver answering 200 to every request; returns its port and a request count.
    pub async fn receiver(&self) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let acceptor = TlsAcceptor::from(self.server.clone());
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    // A client refusing the certificate just drops the connection.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut reader = BufReader::new(tls);
                    while let Some(length) = read_head(&mut reader).await {
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if reader.get_mut().write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, hits)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads one request head; returns its content length (None at end of stream).
async fn read_head<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Option<usize> {
    let mut length = 0;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == "\r\n" && !first {
            return Some(length);
        }
        first = false;
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
}

/// A forwarding HTTP proxy: `CONNECT host:port` tunnels (https targets) and absolute-form
/// requests (`POST http://host:port/path`, http targets).
pub struct Proxy {
    pub addr: SocketAddr,
    /// `host:port` of every target, in order.
    pub targets: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = Self::serve(client, seen).await;
                });
            }
        });
        Proxy { addr, targets }
    }

    async fn serve(client: TcpStream, seen: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
        let mut reader = BufReader::new(client);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).await?;
        let mut parts = request_line.split_whitespace();
        let (method, target, version) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or("HTTP/1.1").to_owned(),
        );
        if method == "CONNECT" {
            // Skip the rest of the head, open the tunnel.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await? == 0 || line == "\r\n" {
                    break;
                }
            }
            seen.lock().unwrap().push(target.clone());
            let mut upstream = TcpStream::connect(&target).await?;
            let mut client = reader.into_inner();
            client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            return Ok(());
        }
        // Absolute form: http://host:port/path -> connect, send the origin form.
        let rest = target.strip_prefix("http://").unwrap_or(&target);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        seen.lock().unwrap().push(authority.clone());
        let mut upstream = TcpStream::connect(&authority).await?;
        upstream
            .write_all(format!("{method} {path} {version}\r\n").as_bytes())
            .await?;
        let buffered = reader.buffer().to_vec();
        upstream.write_all(&buffered).await?;
        let mut client = reader.into_inner();
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        Ok(())
    }

    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}
