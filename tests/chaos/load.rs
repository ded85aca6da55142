//! A publish loop that survives outages, a receiver that counts, and the completeness check.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_proto::v1 as pb;
use herald_tests::authed;
use herald_tests::procs::Processes;
use herald_tests::receiver::{Receiver, Reply};
use tokio::sync::Mutex;

/// One chaos test at a time: they stop shared services.
pub static SERIAL: Mutex<()> = Mutex::const_new(());

pub fn scale() -> usize {
    std::env::var("CHAOS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// A tenant with `endpoints` endpoints on one receiver.
pub struct Setup {
    pub key: String,
    pub rx: Receiver,
    pub endpoints: usize,
}

pub async fn setup(p: &Processes, endpoints: usize) -> Setup {
    let channel = Processes::channel(p.ingest_addr).await;
    let key = p.tenant_key("chaos").await;
    let rx = Receiver::start(|_, _| Reply::status(200)).await;
    let mut eps = pb::endpoints_client::EndpointsClient::new(channel);
    for i in 0..endpoints {
        eps.create_endpoint(authed(
            pb::CreateEndpointRequest {
                url: rx.url(&format!("/e{i}")),
                event_types: vec!["*".into()],
                ..Default::default()
            },
            &key,
        ))
        .await
        .expect("endpoint");
    }
    Setup { key, rx, endpoints }
}

/// What the publish loop saw.
#[derive(Default, Debug)]
pub struct Published {
    /// Accepted events by idempotency key → event id.
    pub accepted: HashMap<String, String>,
    /// Calls answered UNAVAILABLE (then retried with the same key).
    pub unavailable: usize,
    /// Calls that failed at the transport (ingest down), then retried.
    pub transport: usize,
    /// Longest time from a refused call to the next accepted one: the window a publisher
    /// could not publish in.
    pub longest_outage: Duration,
}

/// Publishes `n` events, each with its own idempotency key, retrying every failure until the
/// event is accepted (or `deadline`). `pace` spaces the events out so faults land mid-run.
pub async fn publish_all(
    addr: std::net::SocketAddr,
    key: &str,
    prefix: &str,
    n: usize,
    pace: Duration,
    deadline: Duration,
) -> Published {
    let start = Instant::now();
    let mut out = Published::default();
    let mut client = pb::events_client::EventsClient::new(Processes::channel(addr).await);
    let mut refused_since: Option<Instant> = None;
    for i in 0..n {
        let ik = format!("{prefix}-{i}");
        loop {
            assert!(
                start.elapsed() < deadline,
                "publishing did not finish: {out:?}"
            );
            let r = client
                .publish(authed(
                    pb::PublishRequest {
                        event_type: "chaos.event".into(),
                        payload: format!("{{\"i\":{i}}}").into_bytes(),
                        idempotency_key: Some(ik.clone()),
                        occurred_at: None,
                    },
                    key,
                ))
                .await;
            match r {
                Ok(r) => {
                    out.accepted.insert(ik.clone(), r.into_inner().event_id);
                    if let Some(since) = refused_since.take() {
                        out.longest_outage = out.longest_outage.max(since.elapsed());
                    }
                    break;
                }
                Err(s) if s.code() == tonic::Code::Unavailable && s.message().contains("retry") => {
                    out.unavailable += 1
                }
                Err(_) => out.transport += 1,
            }
            refused_since.get_or_insert_with(Instant::now);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    out
}

/// Counts deliveries by delivery id as they arrive (in the background).
pub struct Tally {
    pub seen: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
}

impl Tally {
    pub fn start(mut rx: Receiver) -> Tally {
        let seen: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                if let Ok(Some(r)) =
                    tokio::time::timeout(Duration::from_millis(200), rx.rx.recv()).await
                {
                    let id = r.header("webhook-id").unwrap_or_default();
                    *s.lock().unwrap().entry(id).or_insert(0) += 1;
                }
            }
        });
        Tally { seen, stop }
    }

    pub fn distinct(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn duplicates(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .values()
            .map(|n| n.saturating_sub(1))
            .sum()
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until every event in the ledger reached every endpoint and every delivery is
/// `success` there, and checks that every event the publisher was told about is among them.
/// `extra_events` allows events the publisher was never told about: ingest killed after the
/// broker confirmed but before it answered, so the caller retried (at-least-once publishing).
/// Returns (events, deliveries, duplicate deliveries); fails if anything is lost.
pub async fn assert_complete(
    p: &Processes,
    published: &Published,
    endpoints: usize,
    tally: &Tally,
    within: Duration,
    extra_events: bool,
) -> (usize, usize, usize) {
    let accepted = published.accepted.len() as i64;
    let pool = p.pool().await;
    let deadline = Instant::now() + within;
    let mut stable = 0;
    let (events, deliveries) = loop {
        let (events, total, ok): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM deliveries),
                    (SELECT count(*) FROM deliveries WHERE status = 'success')",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or((-1, -1, -2));
        let received = tally.distinct() as i64;
        let done = events >= accepted
            && (extra_events || events == accepted)
            && total == events * endpoints as i64
            && ok == total
            && received == total;
        stable = if done { stable + 1 } else { 0 };
        if stable >= 3 {
            break (events as usize, total as usize);
        }
        assert!(
            Instant::now() < deadline,
            "incomplete after the faults: {received}/{total} deliveries received, {ok}/{total} successful in the ledger, {events} events in the ledger for {accepted} accepted; publisher saw {} unavailable and {} transport errors",
            published.unavailable,
            published.transport
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Every event id the publisher got back is in the ledger.
    let ids: Vec<uuid::Uuid> = published
        .accepted
        .values()
        .map(|v| v.parse().unwrap())
        .collect();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        found, accepted,
        "an accepted event is missing from the ledger"
    );
    pool.close().await;
    let dup = tally.duplicates();
    eprintln!(
        "chaos: {events} events ({} republished after an unanswered call), {deliveries} deliveries, {dup} duplicate deliveries, 0 lost (publisher retried {} unavailable, {} transport errors)",
        events - accepted as usize,
        published.unavailable,
        published.transport
    );
    (events, deliveries, dup)
}
