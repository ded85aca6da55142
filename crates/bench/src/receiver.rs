//! The benchmark's webhook receiver: the far end of every delivery, and the clock that measures
//! publish→receiver latency.
//!
//! It must stay cheap (it shares the two cores with Herald), so per request it does only what
//! the report needs: read the delivery id, remember it (a second 2xx-answered copy of the same
//! id is a duplicate: at-least-once made visible), parse `sent_ns` from the body (the intended
//! send time the load generator wrote there, on the same monotonic clock), and on a sample
//! verify the Standard Webhooks signature with the endpoint's secret.
//!
//! Endpoints are told apart by path: `/ok/<n>` answers 200, `/fail/<n>` always answers 500.
//! A scenario that needs an endpoint misbehaving in other ways (hanging, then recovering while
//! the run goes on) registers a managed path ([`Receiver::manage`]): its behaviour can be
//! changed at any time, and it keeps a tally of its own (requests, requests held at once,
//! requests per delivery id) instead of counting towards the deliveries and latencies, which
//! stay those of the ordinary paths. A held request is only a sleeping task, so holding
//! thousands of them costs little.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::serve::ListenerExt;
use herald_core::signing::{self, Scheme, Secret};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// Header prefix of the bench tenant (Herald's default).
pub const HEADER_PREFIX: &str = "Webhook-";
/// Delivery id header of the `standard` scheme.
const ID_HEADER: &str = "webhook-id";
/// `<Prefix>Delivery-Id` for the default prefix, lower-cased.
const FALLBACK_ID_HEADER: &str = "webhook-delivery-id";
/// How far a signature timestamp may be from now.
const TOLERANCE_SECS: i64 = 300;

/// How the receiver behaves.
#[derive(Clone, Debug, Default)]
pub struct ReceiverOptions {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Verify the signature of every n-th request (0: never).
    pub verify_every: u64,
}

/// What the receiver saw so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReceiverStats {
    /// Every request, whatever the answer.
    pub requests: u64,
    /// Distinct delivery ids answered 200.
    pub delivered: u64,
    /// Requests for a delivery id that had already been answered 200.
    pub duplicates: u64,
    /// Requests answered 500 (the failing endpoints, retries included).
    pub failed_requests: u64,
    /// 200-answered requests without a usable delivery id header.
    pub missing_id: u64,
    /// First deliveries whose body had no `sent_ns` (not from the load generator).
    pub unparsed_bodies: u64,
    pub signatures_checked: u64,
    pub signature_failures: u64,
    /// Arrival of the first and the last distinct 200-answered delivery, in ns since the
    /// shared start (0 when none arrived).
    pub first_delivered_ns: u64,
    pub last_delivered_ns: u64,
}

#[derive(Deserialize)]
struct Probe {
    sent_ns: u64,
}

/// What a managed path does with a request: hold it this long, then answer this status.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    pub hold: Duration,
    pub status: StatusCode,
}

impl Behaviour {
    /// Answers `status` at once.
    pub fn answer(status: StatusCode) -> Self {
        Self {
            hold: Duration::ZERO,
            status,
        }
    }
}

/// A path whose behaviour the scenario sets, and its tally.
pub struct ManagedPath {
    /// The behaviour in one word (hold in ms above the status code), so a request never sees
    /// half of a change.
    behaviour: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Requests per delivery id (requests without one are not counted here).
    per_id: Mutex<HashMap<u128, u32>>,
}

/// Counts a request as held until its handler ends: answered, or dropped because the client
/// gave up and closed the connection (hyper notices the EOF of a connection awaiting its
/// answer), so the count is what the dispatchers really keep open.
struct Held<'a>(&'a AtomicU64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ManagedPath {
    fn new(behaviour: Behaviour) -> Self {
        let path = Self {
            behaviour: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            per_id: Mutex::new(HashMap::new()),
        };
        path.set(behaviour);
        path
    }

    /// Changes what requests arriving from now on get; requests already held keep theirs.
    pub fn set(&self, behaviour: Behaviour) {
        let hold_ms = behaviour.hold.as_millis() as u64;
        let word = (hold_ms << 16) | u64::from(behaviour.status.as_u16());
        self.behaviour.store(word, Ordering::Relaxed);
    }

    /// Every request so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The most requests held at once so far.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// Requests beyond `allowed` per delivery id, summed over the ids: the copies no retry
    /// schedule explains.
    pub fn requests_beyond(&self, allowed: u32) -> u64 {
        lock(&self.per_id)
            .values()
            .map(|&n| u64::from(n.saturating_sub(allowed)))
            .sum()
    }

    async fn serve(&self, headers: &HeaderMap) -> StatusCode {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = delivery_id(headers) {
            *lock(&self.per_id).entry(id).or_insert(0) += 1;
        }
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let _held = Held(&self.in_flight);
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let word = self.behaviour.load(Ordering::Relaxed);
        let hold = Duration::from_millis(word >> 16);
        let status = StatusCode::from_u16(word as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        status
    }
}

struct Shared {
    start: Instant,
    options: ReceiverOptions,
    secrets: RwLock<HashMap<String, Secret>>,
    managed: RwLock<HashMap<String, Arc<ManagedPath>>>,
    seen: Mutex<HashSet<u128>>,
    latencies_us: Mutex<Vec<u64>>,
    requests: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
    missing_id: AtomicU64,
    unparsed: AtomicU64,
    sig_checked: AtomicU64,
    sig_failed: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn delivery_id(headers: &HeaderMap) -> Option<u128> {
    headers
        .get(ID_HEADER)
        .or_else(|| headers.get(FALLBACK_ID_HEADER))
        .and_then(|v| v.to_str().ok())
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .map(|u| u.as_u128())
}

impl Shared {
    fn record_ok(&self, headers: &HeaderMap, body: &[u8], arrival_ns: u64) {
        let first = match delivery_id(headers) {
            Some(id) => lock(&self.seen).insert(id),
            None => {
                self.missing_id.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        if !first {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.first_ns.fetch_min(arrival_ns, Ordering::Relaxed);
        self.last_ns.fetch_max(arrival_ns, Ordering::Relaxed);
        match serde_json::from_slice::<Probe>(body) {
            Ok(p) => {
                let us = arrival_ns.saturating_sub(p.sent_ns) / 1_000;
                lock(&self.latencies_us).push(us);
            }
            Err(_) => {
                self.unparsed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn verify(&self, path: &str, headers: &HeaderMap, body: &[u8]) {
        let secret = read(&self.secrets).get(path).cloned();
        let Some(secret) = secret else { return };
        let lookup = |name: &str| -> Option<String> {
            headers
                .get(name.to_ascii_lowercase().as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.sig_checked.fetch_add(1, Ordering::Relaxed);
        let verdict = signing::verify(
            Scheme::Standard,
            &secret,
            HEADER_PREFIX,
            &lookup,
            body,
            unix_now(),
            TOLERANCE_SECS,
        );
        if verdict.is_err() {
            self.sig_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn handle(
    State(s): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let arrival_ns = s.start.elapsed().as_nanos() as u64;
    let n = s.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if s.options.verify_every > 0 && n.is_multiple_of(s.options.verify_every) {
        s.verify(uri.path(), &headers, &body);
    }
    let managed = read(&s.managed).get(uri.path()).cloned();
    if let Some(path) = managed {
        return path.serve(&headers).await;
    }
    let failing = uri.path().starts_with("/fail/");
    if failing {
        s.failed.fetch_add(1, Ordering::Relaxed);
    } else {
        s.record_ok(&headers, &body, arrival_ns);
    }
    if !s.options.delay.is_zero() {
        tokio::time::sleep(s.options.delay).await;
    }
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// A running receiver on `127.0.0.1:<random port>`; stops when dropped.
pub struct Receiver {
    base_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver whose clock is `start` (shared with the load generator).
    pub async fn start(start: Instant, options: ReceiverOptions) -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let shared = Arc::new(Shared {
            start,
            options,
            secrets: RwLock::new(HashMap::new()),
            managed: RwLock::new(HashMap::new()),
            seen: Mutex::new(HashSet::new()),
            latencies_us: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            missing_id: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            sig_checked: AtomicU64::new(0),
            sig_failed: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench: receiver stopped: {e}");
            }
        });
        Ok(Receiver {
            base_url: format!("http://{addr}"),
            shared,
            task,
        })
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Remembers the signing secret of the endpoint at `path`, for the sampled verification.
    pub fn register_secret(&self, path: &str, secret: Secret) {
        let mut map = self
            .shared
            .secrets
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(path.to_owned(), secret);
    }

    /// Makes `path` a managed path starting with `behaviour`; the handle changes it and reads
    /// its tally.
    pub fn manage(&self, path: &str, behaviour: Behaviour) -> Arc<ManagedPath> {
        let managed = Arc::new(ManagedPath::new(behaviour));
        let mut map = self
            .shared
            .managed
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(path.to_owned(), managed.clone());
        managed
    }

    /// Distinct deliveries answered 200 so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> ReceiverStats {
        let s = &self.shared;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let first = load(&s.first_ns);
        ReceiverStats {
            requests: load(&s.requests),
            delivered: load(&s.delivered),
            duplicates: load(&s.duplicates),
            failed_requests: load(&s.failed),
            missing_id: load(&s.missing_id),
            unparsed_bodies: load(&s.unparsed),
            signatures_checked: load(&s.sig_checked),
            signature_failures: load(&s.sig_failed),
            first_delivered_ns: if first == u64::MAX { 0 } else { first },
            last_delivered_ns: load(&s.last_ns),
        }
    }

    /// Publish→receiver latencies (µs) of the distinct deliveries so far; empties the list.
    pub fn take_latencies(&self) -> Vec<u64> {
        std::mem::take(&mut *lock(&self.shared.latencies_us))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
