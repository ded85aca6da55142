//! A Herald made of real processes (`herald-ingest`, `herald-ledger`, `herald-dispatcher`
//! binaries), for tests that signal, kill and restart services or watch their telemetry. Same
//! isolation as [`crate::Herald`]: a unique schema, queue prefix and Redis prefix, removed when
//! it is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::{ADMIN_TOKEN, AMQP_URL, DATABASE_URL, REDIS_URL, bin_dir, cleanup, free_addr};

/// Which service a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Ingest,
    Ledger,
    Dispatcher(usize),
}

impl Role {
    fn binary(self) -> &'static str {
        match self {
            Role::Ingest => "herald-ingest",
            Role::Ledger => "herald-ledger",
            Role::Dispatcher(_) => "herald-dispatcher",
        }
    }
}

pub struct Processes {
    pub name: String,
    pub env: HashMap<String, String>,
    pub ingest_addr: SocketAddr,
    pub ledger_addr: SocketAddr,
    /// `HERALD_METRICS_ADDR` of each role.
    pub metrics: HashMap<Role, SocketAddr>,
    children: HashMap<Role, Child>,
    delays_ms: Vec<u64>,
}

impl Processes {
    /// Starts ingest (and waits for it), the ledger and `dispatchers` dispatchers with the test
    /// defaults plus `extra` settings.
    pub async fn start(dispatchers: usize, extra: &[(&str, &str)]) -> Processes {
        let name = format!("p{:011x}", rand::random::<u64>() & 0xfff_ffff_ffff);
        let mut env: HashMap<String, String> = [
            ("HERALD_DATABASE_URL", DATABASE_URL),
            ("HERALD_DATABASE_MAX_CONNECTIONS", "5"),
            ("HERALD_AMQP_URL", AMQP_URL),
            ("HERALD_REDIS_URL", REDIS_URL),
            ("HERALD_ADMIN_TOKEN", ADMIN_TOKEN),
            ("HERALD_SECRET_KEY", crate::SECRET_KEY),
            ("HERALD_ALLOW_NETWORKS", "127.0.0.0/8"),
            ("HERALD_LEDGER_BATCH_WAIT", "10ms"),
            ("HERALD_ENDPOINT_CACHE_TTL", "100ms"),
            ("HERALD_SUBSCRIPTION_CACHE_TTL", "100ms"),
            ("HERALD_RETRY_SCHEDULE", "200ms,400ms,800ms"),
            ("HERALD_SHUTDOWN_GRACE", "5s"),
            ("HERALD_LOG", "warn"),
            ("HERALD_IDEMPOTENCY_PENDING_TTL", "2s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for key in [
            "HERALD_DATABASE_SCHEMA",
            "HERALD_AMQP_PREFIX",
            "HERALD_REDIS_PREFIX",
        ] {
            env.insert(key.into(), name.clone());
        }
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        let mut delays_ms: Vec<u64> = env
            .get("HERALD_RETRY_SCHEDULE")
            .and_then(|s| herald_core::schedule::RetrySchedule::parse(s).ok())
            .map(|s| s.delays().iter().map(|d| d.as_millis() as u64).collect())
            .unwrap_or_default();
        delays_ms.extend([1000, 2000]);
        let mut p = Processes {
            name,
            env,
            ingest_addr: free_addr(),
            ledger_addr: free_addr(),
            metrics: HashMap::new(),
            children: HashMap::new(),
            delays_ms,
        };
        p.spawn(Role::Ingest);
        p.wait_for(p.ingest_addr).await;
        p.spawn(Role::Ledger);
        for i in 0..dispatchers {
            p.spawn(Role::Dispatcher(i));
        }
        p.wait_for(p.ledger_addr).await;
        p
    }

    /// Starts the process of `role` (again).
    pub fn spawn(&mut self, role: Role) {
        let path = bin_dir().join(role.binary());
        assert!(
            path.exists(),
            "{} is missing: run `cargo build --bins` first (make test does)",
            path.display()
        );
        let metrics = *self.metrics.entry(role).or_insert_with(free_addr);
        let mut cmd = Command::new(path);
        cmd.envs(&self.env)
            .env("HERALD_METRICS_ADDR", metrics.to_string())
            .env("HERALD_INGEST_ADDR", self.ingest_addr.to_string())
            .env("HERALD_LEDGER_ADDR", self.ledger_addr.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // `HERALD_TEST_LOG_DIR` (a harness setting, not Herald's) captures each process's output
        // in `<dir>/<role>.log` instead of the test's stderr.
        if let Some(dir) = self.env.get("HERALD_TEST_LOG_DIR") {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(std::path::Path::new(dir).join(format!("{role:?}.log")))
                .expect("log file");
            cmd.stdout(file.try_clone().expect("log file")).stderr(file);
        }
        let child = cmd.spawn().expect("spawn herald process");
        if let Some(mut old) = self.children.insert(role, child) {
            let _ = old.kill();
            let _ = old.wait();
        }
    }

    /// SIGKILL: no cleanup, no acks (the crash case).
    pub fn kill(&mut self, role: Role) {
        if let Some(mut c) = self.children.remove(&role) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and returns at once (a graceful stop begins; a second one ends it).
    pub fn sigterm(&self, role: Role) {
        if let Some(c) = self.children.get(&role) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// Waits at most `within` for a role's process to exit: its exit status, or `None` while
    /// it still runs.
    pub async fn exited(
        &mut self,
        role: Role,
        within: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.children.get_mut(&role)?.try_wait() {
                self.children.remove(&role);
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and wait for a graceful exit (at most `within`); true when it exited by itself.
    pub async fn terminate(&mut self, role: Role, within: Duration) -> bool {
        let Some(mut c) = self.children.remove(&role) else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a gRPC address accepts connections.
    pub async fn wait_for(&self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "{addr} did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn channel(addr: SocketAddr) -> Channel {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy()
            .clone()
    }

    /// Creates a tenant named `name` and returns a working API key for it.
    pub async fn tenant_key(&self, name: &str) -> String {
        let mut admin =
            herald_proto::v1::admin_client::AdminClient::new(Self::channel(self.ingest_addr).await);
        let tenant = admin
            .create_tenant(crate::authed(
                herald_proto::v1::CreateTenantRequest {
                    name: name.into(),
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("create tenant")
            .into_inner();
        admin
            .create_api_key(crate::authed(
                herald_proto::v1::CreateApiKeyRequest {
                    tenant_id: tenant.id,
                    name: "test".into(),
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .expect("create api key")
            .into_inner()
            .api_key
    }

    /// Creates an endpoint of the tenant of `key` receiving every event type at `url`.
    pub async fn endpoint(&self, key: &str, url: String) -> herald_proto::v1::Endpoint {
        herald_proto::v1::endpoints_client::EndpointsClient::new(
            Self::channel(self.ingest_addr).await,
        )
        .create_endpoint(crate::authed(
            herald_proto::v1::CreateEndpointRequest {
                url,
                event_types: vec!["*".into()],
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("create endpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
    }

    /// A pool on this installation's schema.
    pub async fn pool(&self) -> sqlx::PgPool {
        crate::schema_pool(&self.name, 2).await
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, mut c) in self.children.drain() {
            let _ = c.kill();
            let _ = c.wait();
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
