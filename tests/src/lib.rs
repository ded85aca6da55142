//! Test harness: a whole Herald (ingest, ledger, dispatchers) against the real PostgreSQL,
//! Redis and RabbitMQ, isolated per test by a unique name used as Postgres schema, queue
//! prefix and Redis key prefix, and removed again when the test ends (even when it panics).

pub mod browser;
pub mod console;
pub mod egress;
pub mod procs;
pub mod receiver;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald_broker::{QueueType, Topology};
use herald_core::config::Reader;
use herald_proto::v1 as pb;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;

pub const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// `HERALD_SECRET_KEY` of every test installation: secrets are encrypted at rest in all tests.
pub const SECRET_KEY: &str = "t1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// How to start a test installation.
#[derive(Clone)]
pub struct Options {
    /// Default retry schedule (`HERALD_RETRY_SCHEDULE`).
    pub retry_schedule: String,
    /// In-process dispatchers to start.
    pub dispatchers: usize,
    /// Extra `HERALD_*` settings.
    pub env: Vec<(String, String)>,
    /// Also start `herald-console` (a process) against this installation; ingest gets its URL
    /// as `HERALD_CONSOLE_URL`.
    pub console: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            retry_schedule: "200ms,400ms,800ms".into(),
            dispatchers: 1,
            env: Vec::new(),
            console: false,
        }
    }
}

/// A running, isolated Herald.
pub struct Herald {
    pub name: String,
    pub env: HashMap<String, String>,
    pub ingest_addr: SocketAddr,
    pub ledger_addr: SocketAddr,
    pub pool: sqlx::PgPool,
    /// The console, when `Options::console` asked for one.
    pub console: Option<console::Console>,
    services: Vec<(CancellationToken, JoinHandle<()>)>,
    dispatchers: Vec<(CancellationToken, JoinHandle<()>)>,
    processes: Vec<Child>,
    delays_ms: Vec<u64>,
}

/// A tenant with a working API key.
#[derive(Clone)]
pub struct Tenant {
    pub id: String,
    pub api_key: String,
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    r
}

fn unique_name() -> String {
    let n: u64 = rand::rng().random();
    format!("t{:012x}", n & 0xffff_ffff_ffff)
}

/// The retry delay of a `RESOURCE_EXHAUSTED` refusal: its `google.rpc.RetryInfo` detail,
/// checked against its `retry-after-ms` header.
pub fn retry_delay(status: &tonic::Status) -> Duration {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let hint = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo detail");
    let header: u64 = status
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms header");
    assert_eq!(header, hint.as_millis() as u64);
    hint
}

/// Directory of the workspace's built binaries (for tests that kill real processes).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HERALD_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

fn delays_of(schedule: &str) -> Vec<u64> {
    herald_core::schedule::RetrySchedule::parse(schedule)
        .map(|s| s.delays().iter().map(|d| d.as_millis() as u64).collect())
        .unwrap_or_default()
}

impl Herald {
    pub async fn start(opts: Options) -> Herald {
        let name = unique_name();
        let mut env: HashMap<String, String> = [
            ("HERALD_DATABASE_URL", DATABASE_URL),
            ("HERALD_DATABASE_MAX_CONNECTIONS", "5"),
            ("HERALD_AMQP_URL", AMQP_URL),
            ("HERALD_REDIS_URL", REDIS_URL),
            ("HERALD_ADMIN_TOKEN", ADMIN_TOKEN),
            ("HERALD_SECRET_KEY", SECRET_KEY),
            ("HERALD_ALLOW_NETWORKS", "127.0.0.0/8,::1/128"),
            ("HERALD_ENDPOINT_CACHE_TTL", "100ms"),
            ("HERALD_SUBSCRIPTION_CACHE_TTL", "100ms"),
            ("HERALD_SHUTDOWN_GRACE", "5s"),
            ("HERALD_LEDGER_BATCH_WAIT", "10ms"),
            // Services share this process: no fixed ports (a test that wants them sets them).
            ("HERALD_METRICS_ADDR", "off"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.insert("HERALD_DATABASE_SCHEMA".into(), name.clone());
        env.insert("HERALD_AMQP_PREFIX".into(), name.clone());
        env.insert("HERALD_REDIS_PREFIX".into(), name.clone());
        env.insert("HERALD_RETRY_SCHEDULE".into(), opts.retry_schedule.clone());
        let console_addr = opts.console.then(free_addr);
        if let Some(addr) = console_addr {
            env.insert("HERALD_CONSOLE_URL".into(), console::public_url(addr));
        }
        for (k, v) in &opts.env {
            env.insert(k.clone(), v.clone());
        }
        let mut delays_ms = delays_of(&opts.retry_schedule);
        delays_ms.extend([100, 200, 300, 400, 500, 800, 1000, 2000, 60_000, 300_000]);

        let ingest_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ledger_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ingest_addr = ingest_listener.local_addr().unwrap();
        let ledger_addr = ledger_listener.local_addr().unwrap();
        let reader = Reader::new(&env);
        let ingest_cfg = herald_ingest::Config::load(&reader).expect("ingest config");
        let ledger_cfg = herald_ledger::Config::load(&reader).expect("ledger config");

        let mut services = Vec::new();
        // Ingest first: it runs migrations and declares the topology.
        let token = CancellationToken::new();
        let t = token.clone();
        services.push((
            token,
            tokio::spawn(async move {
                if let Err(e) = herald_ingest::run(ingest_cfg, ingest_listener, t).await {
                    panic!("ingest failed: {e:#}");
                }
            }),
        ));
        let pool = schema_pool(&name, 3).await;
        let mut herald = Herald {
            name,
            env,
            ingest_addr,
            ledger_addr,
            pool,
            console: None,
            services,
            dispatchers: Vec::new(),
            processes: Vec::new(),
            delays_ms,
        };
        herald.wait_ready().await;
        let token = CancellationToken::new();
        let t = token.clone();
        herald.services.push((
            token,
            tokio::spawn(async move {
                if let Err(e) = herald_ledger::run(ledger_cfg, ledger_listener, t).await {
                    panic!("ledger failed: {e:#}");
                }
            }),
        ));
        for _ in 0..opts.dispatchers {
            herald.start_dispatcher();
        }
        if let Some(addr) = console_addr {
            let mut console =
                console::Console::spawn(&herald.env, addr, herald.ingest_addr, herald.ledger_addr);
            console.wait_ready().await;
            herald.console = Some(console);
        }
        herald
    }

    /// The console `Options::console` started.
    pub fn console(&self) -> &console::Console {
        self.console
            .as_ref()
            .expect("started without Options::console")
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tenants")
                .fetch_one(&self.pool)
                .await
                .is_ok();
            if ok
                && self
                    .admin()
                    .await
                    .get_tenant(authed(
                        pb::GetTenantRequest {
                            id: uuid::Uuid::nil().to_string(),
                        },
                        ADMIN_TOKEN,
                    ))
                    .await
                    .is_err_and(|s| s.code() == tonic::Code::NotFound)
            {
                return;
            }
            assert!(Instant::now() < deadline, "ingest did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts one more in-process dispatcher.
    pub fn start_dispatcher(&mut self) {
        let cfg =
            herald_dispatcher::Config::load(&Reader::new(&self.env)).expect("dispatcher config");
        let token = CancellationToken::new();
        let t = token.clone();
        self.dispatchers.push((
            token,
            tokio::spawn(async move {
                if let Err(e) = herald_dispatcher::run(cfg, t).await {
                    panic!("dispatcher failed: {e:#}");
                }
            }),
        ));
    }

    /// Starts a dispatcher as a real process (`herald-dispatcher` binary); returns its index.
    pub fn spawn_dispatcher_process(&mut self) -> usize {
        let bin = bin_dir().join("herald-dispatcher");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --bins` first (make test does)",
            bin.display()
        );
        let child = Command::new(bin)
            .envs(&self.env)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dispatcher");
        self.processes.push(child);
        self.processes.len() - 1
    }

    /// SIGKILLs a dispatcher process (no cleanup, no acks: the crash case).
    pub fn kill_dispatcher_process(&mut self, index: usize) {
        let child = &mut self.processes[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn restart_dispatcher_process(&mut self, index: usize) {
        self.kill_dispatcher_process(index);
        let bin = bin_dir().join("herald-dispatcher");
        self.processes[index] = Command::new(bin)
            .envs(&self.env)
            .env("HERALD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dispatcher");
    }

    pub async fn ingest_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.ingest_addr))
            .unwrap()
            .connect()
            .await
            .expect("connect ingest")
    }

    pub async fn ledger_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.ledger_addr))
            .unwrap()
            .connect()
            .await
            .expect("connect ledger")
    }

    pub async fn admin(&self) -> pb::admin_client::AdminClient<Channel> {
        pb::admin_client::AdminClient::new(self.ingest_channel().await)
    }

    pub async fn events(&self) -> pb::events_client::EventsClient<Channel> {
        pb::events_client::EventsClient::new(self.ingest_channel().await)
    }

    pub async fn endpoints(&self) -> pb::endpoints_client::EndpointsClient<Channel> {
        pb::endpoints_client::EndpointsClient::new(self.ingest_channel().await)
    }

    pub async fn event_types(&self) -> pb::event_types_client::EventTypesClient<Channel> {
        pb::event_types_client::EventTypesClient::new(self.ingest_channel().await)
    }

    pub async fn deliveries(&self) -> pb::deliveries_client::DeliveriesClient<Channel> {
        pb::deliveries_client::DeliveriesClient::new(self.ledger_channel().await)
    }

    /// Creates a tenant (optionally with a header prefix and User-Agent) and an API key.
    pub async fn tenant_with(
        &self,
        header_prefix: Option<&str>,
        user_agent: Option<&str>,
    ) -> Tenant {
        let mut admin = self.admin().await;
        let t = admin
            .create_tenant(authed(
                pb::CreateTenantRequest {
                    name: "test tenant".into(),
                    header_prefix: header_prefix.map(str::to_owned),
                    user_agent: user_agent.map(str::to_owned),
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("create tenant")
            .into_inner();
        let k = admin
            .create_api_key(authed(
                pb::CreateApiKeyRequest {
                    tenant_id: t.id.clone(),
                    name: "test".into(),
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("create key")
            .into_inner();
        Tenant {
            id: t.id,
            api_key: k.api_key,
        }
    }

    pub async fn tenant(&self) -> Tenant {
        self.tenant_with(None, None).await
    }

    /// Creates an endpoint from a request; returns (endpoint, secret).
    pub async fn create_endpoint(
        &self,
        tenant: &Tenant,
        req: pb::CreateEndpointRequest,
    ) -> (pb::Endpoint, String) {
        let r = self
            .endpoints()
            .await
            .create_endpoint(authed(req, &tenant.api_key))
            .await
            .expect("create endpoint")
            .into_inner();
        (r.endpoint.expect("endpoint"), r.secret)
    }

    /// The endpoint's on/off toggle (`UpdateEndpoint{enabled}`); returns the endpoint.
    pub async fn set_enabled(&self, tenant: &Tenant, id: &str, enabled: bool) -> pb::Endpoint {
        self.endpoints()
            .await
            .update_endpoint(authed(
                pb::UpdateEndpointRequest {
                    id: id.into(),
                    enabled: Some(enabled),
                    ..Default::default()
                },
                &tenant.api_key,
            ))
            .await
            .expect("toggle endpoint")
            .into_inner()
    }

    pub async fn publish(
        &self,
        tenant: &Tenant,
        event_type: &str,
        payload: &[u8],
    ) -> pb::PublishResponse {
        self.events()
            .await
            .publish(authed(
                pb::PublishRequest {
                    event_type: event_type.into(),
                    payload: payload.to_vec(),
                    idempotency_key: None,
                    occurred_at: None,
                },
                &tenant.api_key,
            ))
            .await
            .expect("publish")
            .into_inner()
    }

    /// Polls the ledger until `check` accepts the delivery, or fails after `within`.
    pub async fn wait_delivery(
        &self,
        tenant: &Tenant,
        delivery_id: &str,
        within: Duration,
        check: impl Fn(&pb::GetDeliveryResponse) -> bool,
    ) -> pb::GetDeliveryResponse {
        let mut client = self.deliveries().await;
        let deadline = Instant::now() + within;
        loop {
            let r = client
                .get_delivery(authed(
                    pb::GetDeliveryRequest {
                        id: delivery_id.into(),
                        ..Default::default()
                    },
                    &tenant.api_key,
                ))
                .await;
            if let Ok(r) = &r
                && check(r.get_ref())
            {
                return r.get_ref().clone();
            }
            assert!(
                Instant::now() < deadline,
                "delivery {delivery_id} did not reach the expected state: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One page of a tenant's delivery log, as `request` filters it.
    pub async fn list_deliveries(
        &self,
        tenant: &Tenant,
        request: pb::ListDeliveriesRequest,
    ) -> Vec<pb::Delivery> {
        self.deliveries()
            .await
            .list_deliveries(authed(request, &tenant.api_key))
            .await
            .expect("list deliveries")
            .into_inner()
            .deliveries
    }

    /// Lists every delivery of an event (newest first).
    pub async fn deliveries_of(&self, tenant: &Tenant, event_id: &str) -> Vec<pb::Delivery> {
        self.list_deliveries(
            tenant,
            pb::ListDeliveriesRequest {
                event_id: Some(event_id.into()),
                page_size: 500,
                ..Default::default()
            },
        )
        .await
    }

    /// Polls the ledger until an event has `n` deliveries, none of them still pending.
    pub async fn wait_deliveries(
        &self,
        tenant: &Tenant,
        event_id: &str,
        n: usize,
    ) -> Vec<pb::Delivery> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ds = self.deliveries_of(tenant, event_id).await;
            if ds.len() == n
                && ds
                    .iter()
                    .all(|d| d.status != pb::DeliveryStatus::Pending as i32)
            {
                return ds;
            }
            assert!(
                Instant::now() < deadline,
                "deliveries of {event_id} did not settle: {ds:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rows in a table of this installation.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Whether this installation's delay queue for `delay_ms` exists on the broker.
    pub async fn delay_queue_exists(&self, delay_ms: u64) -> bool {
        let admin = herald_broker::Admin::connect(AMQP_URL, "herald-tests-probe")
            .await
            .expect("broker reachable");
        let name = Topology::new(self.name.as_str(), QueueType::Quorum).delay_queue(delay_ms);
        let found = !admin.queues(&[name]).await.is_empty();
        admin.close().await;
        found
    }

    /// Stops every service gracefully and removes the installation's schema, queues and keys.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        self.console = None;
        for c in &mut self.processes {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.processes.clear();
        for (t, h) in self
            .dispatchers
            .drain(..)
            .chain(self.services.drain(..).rev())
        {
            t.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }
        cleanup(&self.name, &self.delays_ms).await;
        self.name.clear();
    }
}

/// A pool of at most `connections` connections on the test schema `name`.
pub async fn schema_pool(name: &str, connections: u32) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(
            DATABASE_URL
                .parse::<sqlx::postgres::PgConnectOptions>()
                .unwrap()
                .options([("search_path", name)]),
        )
        .await
        .expect("postgres")
}

/// A test queue's name, with the connection and the channel that declared it (the queue
/// lives as long as they do when exclusive).
pub type TestQueue = (lapin::Connection, lapin::Channel, String);

/// A lapin connection of the test's own, named for the management UI (tests read and write
/// queues the way an analyst or an operator would, beside Herald's own types).
pub async fn amqp_connection(name: &str) -> lapin::Connection {
    let props = lapin::ConnectionProperties::default().with_connection_name(name.into());
    lapin::Connection::connect(AMQP_URL, props)
        .await
        .expect("broker reachable")
}

/// An exclusive queue (gone with its connection) named `herald-label-<uuid>`, with the
/// connection and the channel that declared it.
pub async fn exclusive_queue(label: &str) -> TestQueue {
    test_queue(label, true).await
}

/// A queue other connections may consume (an exclusive one is its declarer's alone), gone a
/// minute after its last use; with the connection and the channel that declared it.
pub async fn shared_queue(label: &str) -> TestQueue {
    test_queue(label, false).await
}

async fn test_queue(label: &str, exclusive: bool) -> TestQueue {
    use lapin::types::{AMQPValue, FieldTable};
    let conn = amqp_connection(&format!("herald-tests-{label}")).await;
    let ch = conn.create_channel().await.unwrap();
    let name = format!("herald-{label}-{}", uuid::Uuid::new_v4().simple());
    let options = lapin::options::QueueDeclareOptions {
        exclusive,
        ..Default::default()
    };
    let mut args = FieldTable::default();
    if !exclusive {
        args.insert("x-expires".into(), AMQPValue::LongLongInt(60_000));
    }
    ch.queue_declare(name.as_str().into(), options, args)
        .await
        .unwrap();
    (conn, ch, name)
}

/// Removes everything a test installation created.
pub async fn cleanup(name: &str, delays_ms: &[u64]) {
    if name.is_empty() {
        return;
    }
    // A lock timeout: a test that ended without `stop` may leave connections of its aborted
    // services holding locks until its runtime runs again, which it cannot while it waits here.
    let options = DATABASE_URL
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map(|o| o.options([("lock_timeout", "10s")]));
    if let Ok(options) = options
        && let Ok(pool) = sqlx::PgPool::connect_with(options).await
    {
        let sql = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
        pool.close().await;
    }
    if let Ok(admin) = herald_broker::Admin::connect(AMQP_URL, "herald-tests-cleanup").await {
        let _ = admin
            .delete(&Topology::new(name, QueueType::Quorum), delays_ms)
            .await;
        admin.close().await;
    }
    if let Ok(client) = redis::Client::open(REDIS_URL)
        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{name}:*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        // A panicking test never reached `stop`: clean up on a thread with its own runtime.
        if self.name.is_empty() {
            return;
        }
        for c in &mut self.processes {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (t, h) in self.dispatchers.iter().chain(self.services.iter()) {
            t.cancel();
            h.abort();
        }
        let (name, delays) = (self.name.clone(), self.delays_ms.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(cleanup(&name, &delays));
        })
        .join();
    }
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A free loopback port for a process a test starts. Taken below the kernel's ephemeral range
/// (32768 and up), which outgoing connections draw from: a port the OS handed out with
/// `bind(0)` and the test released could be taken by some client socket before the process
/// binds it ("Address already in use"). Each test binary walks its own stretch of ports.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 10_000 + (std::process::id() % 20) * 1_000;
    for _ in 0..1_000 {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 1_000;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().expect("local addr");
        }
    }
    panic!("no free port between {base} and {}", base + 999)
}
