//! A recording webhook receiver: hands every request (path, headers, raw body, arrival time) to
//! the test and answers with a status the test chooses per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

/// One received request.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// What to answer: status, extra headers, body, and a delay before answering.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }
}

type Policy = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct AppState {
    tx: mpsc::UnboundedSender<Received>,
    policy: Policy,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
}

/// A running receiver.
pub struct Receiver {
    pub base_url: String,
    pub rx: mpsc::UnboundedReceiver<Received>,
    total: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

async fn handle(State(s): State<AppState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let n = {
        let mut counts = s.counts.lock().unwrap();
        let c = counts.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    s.total.fetch_add(1, Ordering::Relaxed);
    let reply = (s.policy)(&path, n);
    let _ = s.tx.send(Received {
        path,
        headers,
        body,
        at: Instant::now(),
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

impl Receiver {
    /// Starts a receiver; `policy(path, n)` answers the n-th request (1-based) to `path`.
    pub async fn start(policy: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let total = Arc::new(AtomicUsize::new(0));
        let state = AppState {
            tx,
            policy: Arc::new(policy),
            counts: Arc::default(),
            total: total.clone(),
        };
        let app = Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            base_url,
            rx,
            total,
            task,
        }
    }

    /// Answers 200 to everything.
    pub async fn ok() -> Receiver {
        Self::start(|_, _| Reply::status(200)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Requests received so far.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Waits for the next request, failing the test after `within`.
    pub async fn next(&mut self, within: Duration) -> Received {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .expect("no request arrived in time")
            .expect("receiver closed")
    }

    /// Waits up to `within` for `n` requests, then keeps listening for `quiet` so that an
    /// extra one shows up too: the caller asserts the count. Slow machines only make the
    /// first wait longer, never the outcome different.
    pub async fn exactly(&mut self, n: usize, within: Duration, quiet: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(r)) => out.push(r),
                _ => break,
            }
        }
        out.extend(self.drain_for(quiet).await);
        out
    }

    /// Collects requests for `during`.
    pub async fn drain_for(&mut self, during: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + during;
        let mut out = Vec::new();
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            out.push(r);
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
