//! Tenant A's attacks of noisy-tenant: each one of the costs a tenant controls, pushed as far
//! as the public API lets one tenant push it.
//!
//! An attack is armed before its phase (a fresh tenant A with what the attack needs: a stored
//! filter, 200 endpoints, 5,000 deliveries in the ledger, an endpoint that never answers),
//! then runs as concurrent call loops until the phase ends, and is disarmed after it (A's
//! endpoints deleted, so what A left queued is dropped by the dispatchers instead of delivered
//! into the next phase).
//!
//! A's tenant is created on B's work shard ([`herald_broker::shard_of`]): tenants on other
//! shards have queues and prefetch windows of their own, so the shared shard is where one
//! tenant's backlog can stand in front of another's, the case budgets must cover.
//!
//! Each attack's calls run as [`crate::noisy_tenant_calls::flood`]s, counted by outcome.
//!
//! Two attacks can push more into the broker than the machine holds when nothing refuses
//! them: every accepted delivery task carries its payload, so a fan-out batch of 100 × 64 KiB
//! events to 200 endpoints is 1.25 GiB. The bench stops A once it got [`FANOUT_BOUND`] fan-out
//! deliveries or [`REPLAY_BOUND`] replayed ones accepted in one phase, and reports that as a
//! missing budget rather than filling the disk to prove it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::http::StatusCode;
use futures::StreamExt;
use herald_core::filter::{MAX_FILTER_BYTES, MAX_LIST_LEN};
use herald_proto::v1 as pb;
use herald_proto::v1::deliveries_client::DeliveriesClient;
use herald_proto::v1::endpoints_client::EndpointsClient;
use herald_proto::v1::events_client::EventsClient;
use rand::Rng;
use serde::Serialize;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::cli::Settings;
use crate::db::Poller;
use crate::grpc::{self, authed};
use crate::load::{self, PayloadMaker, Tenant};
use crate::noisy_tenant_calls::{Outcome, REFUSAL_PAUSE, Tally, code, flood};
use crate::procs::Herald;
use crate::receiver::{Behaviour, ManagedPath, Receiver};

/// Herald's default `HERALD_MAX_PAYLOAD_BYTES`: the largest payload a tenant may publish.
const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Heavy filters: `$and` branches, TestFilter loops and Publish loops.
const FILTER_BRANCHES: usize = 30;
const FILTER_LOOPS: usize = 4;
const FILTER_PUBLISH_LOOPS: usize = 2;
/// Fan-out: endpoints, events per PublishBatch, payload per event, concurrent callers.
const FANOUT_ENDPOINTS: usize = 200;
const FANOUT_BATCH: usize = 100;
const FANOUT_EVENT_BYTES: usize = 64 * 1024;
const FANOUT_CALLERS: usize = 2;
/// Fan-out deliveries accepted in one phase after which the bench stops A: 4 GiB of tasks.
pub const FANOUT_BOUND: u64 = (4 << 30) / FANOUT_EVENT_BYTES as u64;
/// Replays: deliveries A has in the ledger, concurrent ReplayEndpoint loops.
const REPLAY_DELIVERIES: u64 = 5_000;
const REPLAY_LOOPS: usize = 4;
/// Replayed deliveries queued in one phase after which the bench stops A: over a minute of
/// the dispatchers' whole throughput on this machine.
pub const REPLAY_BOUND: u64 = 200_000;
/// How long the ledger may take to record A's deliveries before the replays.
const REPLAY_SETUP_BOUND: Duration = Duration::from_secs(120);
/// SendTest flood: loops, how long the endpoint holds a request, the endpoint's timeout.
const SEND_TEST_LOOPS: usize = 32;
const HANG_HOLD: Duration = Duration::from_secs(60);
const HANG_TIMEOUT_MS: u32 = 10_000;
/// Junk-token flood: loops, spread evenly over its four kinds of call.
const JUNK_LOOPS: usize = 16;
/// A's tenants created at most while looking for one on B's shard (1 in 8 is).
const SHARD_TRIES: usize = 64;

/// The attacks, in the order the scenario runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    HeavyFilters,
    FanOut,
    Replays,
    SendTestFlood,
    JunkTokens,
}

impl Attack {
    pub const ALL: [Attack; 5] = [
        Attack::HeavyFilters,
        Attack::FanOut,
        Attack::Replays,
        Attack::SendTestFlood,
        Attack::JunkTokens,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Attack::HeavyFilters => "heavy filters",
            Attack::FanOut => "maximal fan-out",
            Attack::Replays => "concurrent replays",
            Attack::SendTestFlood => "SendTest flood",
            Attack::JunkTokens => "junk-token flood",
        }
    }
}

/// The sizes of the attacks, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct AttackPlan {
    pub filter_branches: usize,
    /// Values in each branch's `$nin` list: as many as keep the filter within its size limit.
    pub filter_list_len: usize,
    pub filter_bytes: usize,
    /// Numbers in the payload's array, and its size (within the publish limit).
    pub filter_payload_numbers: usize,
    pub filter_payload_bytes: usize,
    pub filter_loops: usize,
    pub filter_publish_loops: usize,
    pub fanout_endpoints: usize,
    pub fanout_batch: usize,
    pub fanout_event_bytes: usize,
    pub fanout_callers: usize,
    pub fanout_bound: u64,
    pub replay_deliveries: u64,
    pub replay_loops: usize,
    pub replay_bound: u64,
    pub send_test_loops: usize,
    pub hang_hold_secs: u64,
    pub hang_timeout_ms: u32,
    pub junk_loops: usize,
    pub refusal_pause_ms: u64,
}

impl AttackPlan {
    pub fn standard() -> Self {
        let (filter, list_len) = heavy_filter();
        let (payload, numbers) = big_array_payload(MAX_PAYLOAD_BYTES);
        Self {
            filter_branches: FILTER_BRANCHES,
            filter_list_len: list_len,
            filter_bytes: filter.len(),
            filter_payload_numbers: numbers,
            filter_payload_bytes: payload.len(),
            filter_loops: FILTER_LOOPS,
            filter_publish_loops: FILTER_PUBLISH_LOOPS,
            fanout_endpoints: FANOUT_ENDPOINTS,
            fanout_batch: FANOUT_BATCH,
            fanout_event_bytes: FANOUT_EVENT_BYTES,
            fanout_callers: FANOUT_CALLERS,
            fanout_bound: FANOUT_BOUND,
            replay_deliveries: REPLAY_DELIVERIES,
            replay_loops: REPLAY_LOOPS,
            replay_bound: REPLAY_BOUND,
            send_test_loops: SEND_TEST_LOOPS,
            hang_hold_secs: HANG_HOLD.as_secs(),
            hang_timeout_ms: HANG_TIMEOUT_MS,
            junk_loops: JUNK_LOOPS,
            refusal_pause_ms: REFUSAL_PAUSE.as_millis() as u64,
        }
    }
}

/// `{"$and":[{"a":{"$nin":[0,…,n-1]}} × 30]}` with the largest `n` (at most the list limit)
/// that keeps it within the filter size limit; and that `n`.
fn heavy_filter() -> (String, usize) {
    let build = |n: usize| {
        let list: Vec<usize> = (0..n).collect();
        let branch = serde_json::json!({ "a": { "$nin": list } });
        serde_json::json!({ "$and": vec![branch; FILTER_BRANCHES] }).to_string()
    };
    (1..=MAX_LIST_LEN)
        .rev()
        .map(|n| (build(n), n))
        .find(|(f, _)| f.len() <= MAX_FILTER_BYTES)
        .unwrap_or_else(|| (build(1), 1))
}

/// `{"a":[256,257,…]}` as long as `limit` bytes allow, and how many numbers it holds. No
/// number is in any `$nin` list of [`heavy_filter`], so evaluating it compares every listed
/// value with every element (a match would end a branch at its first element).
fn big_array_payload(limit: usize) -> (Vec<u8>, usize) {
    let mut text = String::from(r#"{"a":["#);
    let mut count = 0;
    let mut next = MAX_LIST_LEN;
    loop {
        let number = next.to_string();
        let comma = usize::from(count > 0);
        if text.len() + comma + number.len() + "]}".len() > limit {
            break;
        }
        if comma == 1 {
            text.push(',');
        }
        text.push_str(&number);
        count += 1;
        next += 1;
    }
    text.push_str("]}");
    (text.into_bytes(), count)
}

/// What differs between the attacks once armed.
enum Kit {
    HeavyFilters { filter: String, payload: Vec<u8> },
    FanOut { payload: Vec<u8> },
    Replays { endpoint: Uuid, ledger: Channel },
    SendTestFlood { endpoint: Uuid },
    JunkTokens { ingest: Channel, ledger: Channel },
}

/// Tenant A, ready for one attack.
pub struct Armed {
    pub attack: Attack,
    tenant: Option<Tenant>,
    endpoints: Vec<Uuid>,
    paths: Vec<Arc<ManagedPath>>,
    kit: Kit,
    /// What setting up found worth telling (e.g. a filter refused when stored).
    notes: Vec<String>,
}

/// What A did in one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttackFigures {
    pub attack: String,
    pub calls: Vec<Tally>,
    pub secs: f64,
    /// Requests A's endpoints received during the phase.
    pub requests: u64,
    pub notes: Vec<String>,
}

impl AttackFigures {
    /// Why the bench, not Herald, stopped A (a bound reached), if it did.
    pub fn stopped_by_bench(&self) -> Option<String> {
        self.calls.iter().find_map(|t| {
            t.bound_hit_secs.map(|s| {
                format!(
                    "{}: Herald accepted {} deliveries in {s:.1} s and the bench stopped A",
                    t.call,
                    crate::report::thousands(t.units as f64)
                )
            })
        })
    }
}

/// Creates tenant A on `shard` (trying at most [`SHARD_TRIES`] tenants).
async fn tenant_on_shard(herald: &Herald, shard: usize) -> Result<(Tenant, Option<String>)> {
    let mut last = None;
    for _ in 0..SHARD_TRIES {
        let tenant = load::create_tenant(herald, "noisy-tenant-a").await?;
        let id = Uuid::parse_str(&tenant.id).with_context(|| format!("tenant id {}", tenant.id))?;
        if herald_broker::shard_of(id) == shard {
            return Ok((tenant, None));
        }
        last = Some(tenant);
    }
    let note = format!("no tenant on B's work shard within {SHARD_TRIES} tries");
    Ok((last.context("no tenant created")?, Some(note)))
}

/// Prepares `attack` against tenant B (on work shard `shard`), on `receiver`.
pub async fn arm(
    attack: Attack,
    settings: &Settings,
    herald: &Herald,
    receiver: &Receiver,
    shard: usize,
) -> Result<Armed> {
    if attack == Attack::JunkTokens {
        let kit = Kit::JunkTokens {
            ingest: grpc::connect(herald.ingest_addr).await?,
            ledger: grpc::connect(herald.ledger_addr).await?,
        };
        return Ok(Armed {
            attack,
            tenant: None,
            endpoints: Vec::new(),
            paths: Vec::new(),
            kit,
            notes: Vec::new(),
        });
    }
    let (tenant, note) = tenant_on_shard(herald, shard).await?;
    let mut setup = Setup {
        tenant: &tenant,
        receiver,
        endpoints: Vec::new(),
        paths: Vec::new(),
        notes: note.into_iter().collect(),
    };
    let kit = match attack {
        Attack::HeavyFilters => setup.filters().await?,
        Attack::FanOut => setup.fanout().await?,
        Attack::Replays => setup.replays(settings, herald).await?,
        Attack::SendTestFlood => setup.hang().await?,
        Attack::JunkTokens => unreachable!("armed above"),
    };
    let Setup {
        endpoints,
        paths,
        notes,
        ..
    } = setup;
    Ok(Armed {
        attack,
        tenant: Some(tenant),
        endpoints,
        paths,
        kit,
        notes,
    })
}

/// A's endpoints and receiver paths as an attack is being armed.
struct Setup<'a> {
    tenant: &'a Tenant,
    receiver: &'a Receiver,
    endpoints: Vec<Uuid>,
    paths: Vec<Arc<ManagedPath>>,
    notes: Vec<String>,
}

impl Setup<'_> {
    /// An endpoint at `path` doing `behaviour`, created with `request` (url and description
    /// filled in).
    async fn endpoint(
        &mut self,
        path: &str,
        behaviour: Behaviour,
        request: pb::CreateEndpointRequest,
    ) -> Result<Uuid> {
        let managed = self.receiver.manage(path, behaviour);
        let id = load::create_endpoint(self.tenant, self.receiver, path, request).await?;
        self.paths.push(managed);
        self.endpoints.push(id);
        Ok(id)
    }

    /// An endpoint subscribed to `*` at `path`, answering 200 at once.
    async fn ok_endpoint(&mut self, path: &str, filter: Option<String>) -> Result<Uuid> {
        let request = pb::CreateEndpointRequest {
            event_types: vec!["*".into()],
            timeout_ms: Some(10_000),
            filter,
            ..Default::default()
        };
        self.endpoint(path, Behaviour::answer(StatusCode::OK), request)
            .await
    }

    async fn filters(&mut self) -> Result<Kit> {
        let (filter, _) = heavy_filter();
        let (payload, _) = big_array_payload(MAX_PAYLOAD_BYTES);
        // A server that refuses to store so costly a filter is a budget too: A then publishes
        // all the same, its payloads still parsed but filtered by nothing.
        if let Err(e) = self.ok_endpoint("/a/filter", Some(filter.clone())).await {
            self.notes.push(format!("the filter was not stored: {e:#}"));
        }
        Ok(Kit::HeavyFilters { filter, payload })
    }

    async fn fanout(&mut self) -> Result<Kit> {
        for i in 0..FANOUT_ENDPOINTS {
            if let Err(e) = self.ok_endpoint(&format!("/a/fan/{i}"), None).await {
                if i == 0 {
                    return Err(e);
                }
                self.notes.push(format!(
                    "endpoint {} of {FANOUT_ENDPOINTS} refused: {e:#}",
                    i + 1
                ));
                break;
            }
        }
        let payload = PayloadMaker::new(FANOUT_EVENT_BYTES).make(0, 0);
        Ok(Kit::FanOut { payload })
    }

    /// An endpoint whose requests are held far beyond its timeout.
    async fn hang(&mut self) -> Result<Kit> {
        let behaviour = Behaviour {
            hold: HANG_HOLD,
            status: StatusCode::OK,
        };
        let request = pb::CreateEndpointRequest {
            event_types: vec!["noisy.hang".into()],
            timeout_ms: Some(HANG_TIMEOUT_MS),
            ..Default::default()
        };
        let endpoint = self.endpoint("/a/hang", behaviour, request).await?;
        Ok(Kit::SendTestFlood { endpoint })
    }

    /// An endpoint with [`REPLAY_DELIVERIES`] successful deliveries in the ledger.
    async fn replays(&mut self, settings: &Settings, herald: &Herald) -> Result<Kit> {
        let endpoint = self.ok_endpoint("/a/replay", None).await?;
        let accepted = publish_small(self.tenant, REPLAY_DELIVERIES).await?;
        let recorded = wait_recorded(settings, herald, endpoint, accepted).await?;
        if recorded < REPLAY_DELIVERIES {
            self.notes.push(format!(
                "{recorded} of {REPLAY_DELIVERIES} deliveries to replay were in the ledger"
            ));
        }
        Ok(Kit::Replays {
            endpoint,
            ledger: grpc::connect(herald.ledger_addr).await?,
        })
    }
}

/// Publishes `events` small events for `tenant` (PublishBatch of 500, two calls at once);
/// returns how many were accepted.
async fn publish_small(tenant: &Tenant, events: u64) -> Result<u64> {
    let client = EventsClient::new(tenant.channel.clone());
    let calls = (0..events).step_by(500).map(|first| {
        let mut client = client.clone();
        let batch = (first..(first + 500).min(events))
            .map(|seq| pb::PublishRequest {
                event_type: "noisy.replay".into(),
                payload: format!(r#"{{"seq":{seq}}}"#).into_bytes(),
                ..Default::default()
            })
            .collect();
        let request = authed(pb::PublishBatchRequest { events: batch }, &tenant.auth);
        async move { client.publish_batch(request).await }
    });
    let mut answers = futures::stream::iter(calls).buffer_unordered(2);
    let mut accepted = 0;
    while let Some(answer) = answers.next().await {
        let results = answer.context("publishing A's deliveries to replay")?;
        accepted += results
            .into_inner()
            .results
            .iter()
            .filter(|r| matches!(r.outcome, Some(pb::publish_result::Outcome::Accepted(_))))
            .count() as u64;
    }
    Ok(accepted)
}

/// Waits until the ledger holds `expected` successful deliveries of `endpoint`; how many it
/// holds when that or [`REPLAY_SETUP_BOUND`] is reached.
async fn wait_recorded(
    settings: &Settings,
    herald: &Herald,
    endpoint: Uuid,
    expected: u64,
) -> Result<u64> {
    let until = Instant::now() + REPLAY_SETUP_BOUND;
    let mut db = Poller::new(&settings.database_url);
    let mut recorded = 0;
    while Instant::now() < until {
        let rows = db.outcomes(&herald.name, &[endpoint]).await;
        recorded = rows
            .context("reading A's deliveries from the ledger")?
            .iter()
            .filter(|r| r.status == "success")
            .map(|r| r.deliveries)
            .sum();
        if recorded >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    db.close().await;
    if recorded == 0 {
        bail!("none of A's {expected} deliveries to replay reached the ledger");
    }
    Ok(recorded)
}

impl Armed {
    /// Runs the attack until `until`.
    pub async fn run(&self, until: Instant) -> AttackFigures {
        let began = Instant::now();
        let before = self.requests();
        let calls = match &self.kit {
            Kit::HeavyFilters { filter, payload } => self.filters(filter, payload, until).await,
            Kit::FanOut { payload } => vec![self.fanout(payload, until).await],
            Kit::Replays { endpoint, ledger } => {
                vec![self.replays(*endpoint, ledger, until).await]
            }
            Kit::SendTestFlood { endpoint } => vec![self.send_tests(*endpoint, until).await],
            Kit::JunkTokens { ingest, ledger } => junk(ingest, ledger, until).await,
        };
        AttackFigures {
            attack: self.attack.as_str().to_owned(),
            calls,
            secs: began.elapsed().as_secs_f64(),
            requests: self.requests() - before,
            notes: self.notes.clone(),
        }
    }

    /// Requests A's endpoints received so far.
    pub fn requests(&self) -> u64 {
        self.paths.iter().map(|p| p.requests()).sum()
    }

    /// A's receiver paths, to tell when they went quiet.
    pub fn paths(&self) -> &[Arc<ManagedPath>] {
        &self.paths
    }

    fn tenant(&self) -> &Tenant {
        self.tenant
            .as_ref()
            .expect("an attack with endpoints has a tenant")
    }

    /// Deletes A's endpoints, so the dispatchers drop what A still has queued; returns the
    /// deletions that failed, as notes.
    pub async fn disarm(&self) -> Vec<String> {
        let Some(tenant) = &self.tenant else {
            return Vec::new();
        };
        let client = EndpointsClient::new(tenant.channel.clone());
        let deletions = self.endpoints.iter().map(|id| {
            let mut client = client.clone();
            let request = authed(
                pb::DeleteEndpointRequest { id: id.to_string() },
                &tenant.auth,
            );
            async move { client.delete_endpoint(request).await }
        });
        let mut failed = BTreeMap::<String, u64>::new();
        let mut answers = futures::stream::iter(deletions).buffer_unordered(8);
        while let Some(answer) = answers.next().await {
            if let Err(s) = answer {
                *failed.entry(code(&s)).or_insert(0) += 1;
            }
        }
        failed
            .into_iter()
            .map(|(code, n)| format!("{n} of A's endpoints not deleted after the phase: {code}"))
            .collect()
    }

    async fn filters(&self, filter: &str, payload: &[u8], until: Instant) -> Vec<Tally> {
        let tenant = self.tenant();
        let endpoints = EndpointsClient::new(tenant.channel.clone());
        let test = pb::TestFilterRequest {
            filter: filter.to_owned(),
            payload: payload.to_vec(),
        };
        let auth = tenant.auth.clone();
        let test_filter = flood("TestFilter", FILTER_LOOPS, until, None, move || {
            let mut client = endpoints.clone();
            let request = authed(test.clone(), &auth);
            async move { client.test_filter(request).await.map(|_| 0) }
        });
        let events = EventsClient::new(tenant.channel.clone());
        let publish = pb::PublishRequest {
            event_type: "noisy.filter".into(),
            payload: payload.to_vec(),
            ..Default::default()
        };
        let auth = tenant.auth.clone();
        let call = "Publish to the filtered endpoint";
        let publishes = flood(call, FILTER_PUBLISH_LOOPS, until, None, move || {
            let mut client = events.clone();
            let request = authed(publish.clone(), &auth);
            async move {
                let answer = client.publish(request).await?;
                Ok(u64::from(answer.get_ref().deliveries))
            }
        });
        let (a, b) = tokio::join!(test_filter, publishes);
        vec![a, b]
    }

    async fn fanout(&self, payload: &[u8], until: Instant) -> Tally {
        let tenant = self.tenant();
        let events = EventsClient::new(tenant.channel.clone());
        let batch = pb::PublishBatchRequest {
            events: vec![
                pb::PublishRequest {
                    event_type: "noisy.fanout".into(),
                    payload: payload.to_vec(),
                    ..Default::default()
                };
                FANOUT_BATCH
            ],
        };
        let auth = tenant.auth.clone();
        flood(
            "PublishBatch",
            FANOUT_CALLERS,
            until,
            Some(FANOUT_BOUND),
            move || {
                let mut client = events.clone();
                let request = authed(batch.clone(), &auth);
                async move {
                    let answer = client.publish_batch(request).await?;
                    batch_outcome(&answer.into_inner().results)
                }
            },
        )
        .await
    }

    async fn replays(&self, endpoint: Uuid, ledger: &Channel, until: Instant) -> Tally {
        let client = DeliveriesClient::new(ledger.clone());
        let replay = pb::ReplayEndpointRequest {
            endpoint_id: endpoint.to_string(),
            status: pb::DeliveryStatus::Success as i32,
            ..Default::default()
        };
        let auth = self.tenant().auth.clone();
        flood(
            "ReplayEndpoint",
            REPLAY_LOOPS,
            until,
            Some(REPLAY_BOUND),
            move || {
                let mut client = client.clone();
                let request = authed(replay.clone(), &auth);
                async move {
                    let answer = client.replay_endpoint(request).await?;
                    Ok(u64::from(answer.get_ref().queued))
                }
            },
        )
        .await
    }

    async fn send_tests(&self, endpoint: Uuid, until: Instant) -> Tally {
        let tenant = self.tenant();
        let client = EndpointsClient::new(tenant.channel.clone());
        let send = pb::SendTestRequest {
            endpoint_id: endpoint.to_string(),
            ..Default::default()
        };
        let auth = tenant.auth.clone();
        flood("SendTest", SEND_TEST_LOOPS, until, None, move || {
            let mut client = client.clone();
            let request = authed(send.clone(), &auth);
            async move { client.send_test(request).await.map(|_| 0) }
        })
        .await
    }
}

/// A PublishBatch answer as one outcome: the deliveries of its accepted events, or (when none
/// was accepted) its first refused event's error.
fn batch_outcome(results: &[pb::PublishResult]) -> Outcome {
    let mut deliveries = 0;
    let mut first_error = None;
    let mut accepted = false;
    for result in results {
        match &result.outcome {
            Some(pb::publish_result::Outcome::Accepted(a)) => {
                accepted = true;
                deliveries += u64::from(a.deliveries);
            }
            Some(pb::publish_result::Outcome::Error(e)) => {
                let status = || tonic::Status::new(tonic::Code::from_i32(e.code), &e.message);
                first_error.get_or_insert_with(status);
            }
            None => {
                first_error.get_or_insert_with(|| tonic::Status::unknown("no outcome"));
            }
        }
    }
    match first_error {
        Some(status) if !accepted => Err(status),
        _ => Ok(deliveries),
    }
}

/// A bearer token shaped like an API key (`hk_` and 43 URL-safe characters), so it is looked
/// up rather than refused for its form.
fn junk_token() -> tonic::metadata::AsciiMetadataValue {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let key: String = (0..43)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    grpc::bearer(&format!("hk_{key}")).expect("an ASCII token is a valid header value")
}

/// The junk-token flood: a quarter of the loops on each of ingest's Publish and
/// ListEndpoints, the ledger's ListDeliveries and Admin's GetTenant, every call with a token
/// never issued.
async fn junk(ingest: &Channel, ledger: &Channel, until: Instant) -> Vec<Tally> {
    let loops = JUNK_LOOPS / 4;
    let refused = |r: Result<(), tonic::Status>| r.map(|()| 0);
    let events = EventsClient::new(ingest.clone());
    let publish = flood("junk Publish (ingest)", loops, until, None, move || {
        let mut client = events.clone();
        let request = pb::PublishRequest {
            event_type: "noisy.junk".into(),
            payload: br#"{"junk":true}"#.to_vec(),
            ..Default::default()
        };
        async move {
            refused(
                client
                    .publish(authed(request, &junk_token()))
                    .await
                    .map(drop),
            )
        }
    });
    let endpoints = EndpointsClient::new(ingest.clone());
    let list_endpoints = flood(
        "junk ListEndpoints (ingest)",
        loops,
        until,
        None,
        move || {
            let mut client = endpoints.clone();
            let request = authed(pb::ListEndpointsRequest::default(), &junk_token());
            async move { refused(client.list_endpoints(request).await.map(drop)) }
        },
    );
    let deliveries = DeliveriesClient::new(ledger.clone());
    let list_deliveries = flood(
        "junk ListDeliveries (ledger)",
        loops,
        until,
        None,
        move || {
            let mut client = deliveries.clone();
            let request = authed(pb::ListDeliveriesRequest::default(), &junk_token());
            async move { refused(client.list_deliveries(request).await.map(drop)) }
        },
    );
    let admin = pb::admin_client::AdminClient::new(ingest.clone());
    let get_tenant = flood(
        "junk Admin GetTenant (ingest)",
        loops,
        until,
        None,
        move || {
            let mut client = admin.clone();
            let request = pb::GetTenantRequest {
                id: Uuid::new_v4().to_string(),
            };
            async move {
                refused(
                    client
                        .get_tenant(authed(request, &junk_token()))
                        .await
                        .map(drop),
                )
            }
        },
    );
    let (a, b, c, d) = tokio::join!(publish, list_endpoints, list_deliveries, get_tenant);
    vec![a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heavy_filter_is_within_the_limits_and_none_of_its_values_is_in_the_payload() {
        let (filter, n) = heavy_filter();
        assert!(filter.len() <= MAX_FILTER_BYTES, "{}", filter.len());
        assert!(n > 100 && n <= MAX_LIST_LEN, "{n}");
        let parsed: serde_json::Value = serde_json::from_str(&filter).unwrap();
        assert_eq!(parsed["$and"].as_array().unwrap().len(), FILTER_BRANCHES);
        assert!(herald_core::filter::Filter::parse(&parsed).is_ok());

        let (payload, count) = big_array_payload(MAX_PAYLOAD_BYTES);
        assert!(payload.len() <= MAX_PAYLOAD_BYTES);
        assert!(payload.len() > MAX_PAYLOAD_BYTES - 8, "{}", payload.len());
        let doc: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let numbers = doc["a"].as_array().unwrap();
        assert_eq!(numbers.len(), count);
        assert!(count > 40_000, "{count}");
        assert!(numbers.iter().all(|v| v.as_u64().unwrap() >= n as u64));
    }

    #[test]
    fn a_batch_is_refused_only_when_none_of_its_events_was_accepted() {
        let accepted = |d| pb::PublishResult {
            outcome: Some(pb::publish_result::Outcome::Accepted(pb::PublishResponse {
                deliveries: d,
                ..Default::default()
            })),
        };
        let refused = pb::PublishResult {
            outcome: Some(pb::publish_result::Outcome::Error(pb::PublishError {
                code: tonic::Code::ResourceExhausted as i32,
                message: String::new(),
            })),
        };
        assert_eq!(
            batch_outcome(&[accepted(200), refused.clone()]).ok(),
            Some(200)
        );
        let e = batch_outcome(&[refused.clone(), refused]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    }
}
