//! Herald as real processes: `herald-ingest`, `herald-ledger` and N `herald-dispatcher`, built
//! in release mode and started from `--bin-dir`, exactly as they would run in production.
//!
//! Every run is isolated by one fresh name (`bench<hex>`) used as Postgres schema, queue prefix
//! and Redis key prefix, and everything under that name is removed again at the end: the
//! schema, the queues and exchanges (including the delay queues of the retry schedule), and
//! the Redis keys. Children are killed when dropped, so an aborted run leaves no process behind.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use herald_broker::{Admin, QueueType, Topology};
use herald_core::schedule::RetrySchedule;
use herald_proto::v1 as pb;
use rand::Rng;
use tokio::process::{Child, Command};

use crate::cli::Settings;
use crate::{db, grpc};

/// Delay queues a run may have declared besides those of its retry schedule (Herald's default
/// schedule), so the cleanup finds them all.
const DEFAULT_DELAYS_MS: [u64; 5] = [60_000, 300_000, 900_000, 3_600_000, 21_600_000];

/// One running Herald process.
pub struct Proc {
    pub role: String,
    pub pid: u32,
    child: Child,
}

/// A running, isolated Herald installation.
pub struct Herald {
    /// Schema, queue prefix and Redis prefix of this installation.
    pub name: String,
    pub admin_token: String,
    pub ingest_addr: SocketAddr,
    /// The other ingests (`--ingests`), each on a port of its own.
    pub more_ingest_addrs: Vec<SocketAddr>,
    pub ledger_addr: SocketAddr,
    /// Where each process's output goes (`<role>.log`).
    pub log_dir: PathBuf,
    settings: Settings,
    env: Vec<(String, String)>,
    procs: Vec<Proc>,
    delays_ms: Vec<u64>,
    stopped: bool,
}

/// A name no other run uses: `bench` and 12 hex digits.
pub fn unique_name() -> String {
    let n: u64 = rand::rng().random();
    format!("bench{:012x}", n & 0xffff_ffff_ffff)
}

/// A free loopback port in 30,000–31,999: below Linux's ephemeral range (32,768 up), so no
/// outgoing connection can take it between this check and the service binding it (a port the
/// kernel picked with `:0` sometimes was, and a service then died on "address in use"), and
/// apart from the tests' 10,000–29,999.
fn free_addr() -> Result<SocketAddr> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id();
    let listener = (0..2_000)
        .map(|_| 30_000 + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % 2_000)
        .find_map(|port| StdListener::bind(("127.0.0.1", port as u16)).ok())
        .context("no free port between 30000 and 31999")?;
    Ok(listener.local_addr()?)
}

fn parse_set(settings: &Settings) -> Result<Vec<(String, String)>> {
    settings
        .set
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("--set {kv:?}: expected KEY=VALUE"))
        })
        .collect()
}

impl Herald {
    /// Starts ingest (migrations, topology), then the ledger and the dispatchers, and returns
    /// once ingest answers and every consumer is attached to its queue.
    pub async fn start(
        settings: &Settings,
        retry_schedule: &str,
        deadline: Instant,
    ) -> Result<Herald> {
        for bin in ["herald-ingest", "herald-ledger", "herald-dispatcher"] {
            let path = settings.bin_dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} is missing: build it with `cargo build --release --bins` (or pass --bin-dir)",
                    path.display()
                );
            }
        }
        let schedule = RetrySchedule::parse(retry_schedule)
            .map_err(|e| anyhow!("retry schedule {retry_schedule:?}: {e}"))?;
        let mut delays_ms: Vec<u64> = schedule
            .delays()
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        delays_ms.extend(DEFAULT_DELAYS_MS);
        delays_ms.sort_unstable();
        delays_ms.dedup();

        let name = unique_name();
        let admin_token = format!("admin-{}", unique_name());
        let ingest_addr = free_addr()?;
        let ledger_addr = free_addr()?;
        let log_dir = std::env::temp_dir().join("herald-bench").join(&name);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;

        let mut env: Vec<(String, String)> = [
            ("HERALD_DATABASE_URL", settings.database_url.as_str()),
            ("HERALD_DATABASE_SCHEMA", name.as_str()),
            ("HERALD_AMQP_URL", settings.amqp_url.as_str()),
            ("HERALD_AMQP_PREFIX", name.as_str()),
            ("HERALD_QUEUE_TYPE", settings.queue_type.as_str()),
            ("HERALD_REDIS_URL", settings.redis_url.as_str()),
            ("HERALD_REDIS_PREFIX", name.as_str()),
            ("HERALD_ADMIN_TOKEN", admin_token.as_str()),
            ("HERALD_ALLOW_NETWORKS", "127.0.0.0/8"),
            ("HERALD_LOG", "warn"),
            ("HERALD_RETRY_SCHEDULE", retry_schedule),
            ("HERALD_SHUTDOWN_GRACE", "2s"),
            // Remembered successes expire on their own even if the cleanup cannot run.
            ("HERALD_DONE_TTL", "1h"),
            // No `endpoint.failing` notifications: they would add deliveries the bench did
            // not publish to every `*` endpoint.
            ("HERALD_FAILING_AFTER_ATTEMPTS", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.push(("HERALD_INGEST_ADDR".into(), ingest_addr.to_string()));
        env.push(("HERALD_LEDGER_ADDR".into(), ledger_addr.to_string()));
        // Applied last, so they win.
        env.extend(parse_set(settings)?);

        let mut herald = Herald {
            name,
            admin_token,
            ingest_addr,
            more_ingest_addrs: Vec::new(),
            ledger_addr,
            log_dir,
            settings: settings.clone(),
            env,
            procs: Vec::new(),
            delays_ms,
            stopped: false,
        };
        if let Err(e) = herald.boot(settings.dispatchers, deadline).await {
            herald.stop().await;
            return Err(e);
        }
        Ok(herald)
    }

    async fn boot(&mut self, dispatchers: usize, deadline: Instant) -> Result<()> {
        self.spawn("ingest", "herald-ingest")?;
        self.wait_ingest(self.ingest_addr, "ingest", deadline)
            .await?;
        for i in 1..self.settings.ingests.max(1) {
            let (addr, role) = (free_addr()?, format!("ingest-{i}"));
            let env = [("HERALD_INGEST_ADDR", addr.to_string())];
            self.spawn_with(&role, "herald-ingest", &env)?;
            self.wait_ingest(addr, &role, deadline).await?;
            self.more_ingest_addrs.push(addr);
        }
        self.spawn("ledger", "herald-ledger")?;
        for i in 0..dispatchers {
            self.spawn(&format!("dispatcher-{i}"), "herald-dispatcher")?;
        }
        self.wait_consumers(dispatchers, deadline).await
    }

    /// Every ingest's address, the first one first.
    pub fn ingest_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.ingest_addr)
            .chain(self.more_ingest_addrs.iter().copied())
            .collect()
    }

    fn spawn(&mut self, role: &str, binary: &str) -> Result<()> {
        self.spawn_with(role, binary, &[])
    }

    /// Starts `herald-console` against this installation on a free port and waits until it
    /// listens; returns its address.
    pub async fn start_console(&mut self, deadline: Instant) -> Result<SocketAddr> {
        let bin = self.settings.bin_dir.join("herald-console");
        if !bin.is_file() {
            bail!(
                "{} is missing: build it with `cargo build --release --bins` (or pass --bin-dir)",
                bin.display()
            );
        }
        let addr = free_addr()?;
        let env = [
            ("HERALD_CONSOLE_ADDR", addr.to_string()),
            ("HERALD_CONSOLE_PUBLIC_URL", format!("http://{addr}")),
            (
                "HERALD_CONSOLE_INGEST_URL",
                format!("http://{}", self.ingest_addr),
            ),
            (
                "HERALD_CONSOLE_LEDGER_URL",
                format!("http://{}", self.ledger_addr),
            ),
            ("HERALD_CONSOLE_SECRET", format!("bench-{}", unique_name())),
        ];
        self.spawn_with("console", "herald-console", &env)?;
        let until = deadline.min(Instant::now() + Duration::from_secs(30));
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            self.check_alive()?;
            if Instant::now() >= until {
                bail!(
                    "herald-console did not listen in time; see {}",
                    self.log_dir.join("console.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(addr)
    }

    fn spawn_with(&mut self, role: &str, binary: &str, extra: &[(&str, String)]) -> Result<()> {
        let bin = self.settings.bin_dir.join(binary);
        let log_path = self.log_dir.join(format!("{role}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        // Each process gets its own metrics port (the defaults are fixed, so two dispatchers
        // would collide); `--set HERALD_METRICS_ADDR=` still wins, being applied after.
        let metrics_addr = free_addr()?.to_string();
        let child = Command::new(&bin)
            .env("HERALD_METRICS_ADDR", &metrics_addr)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("{role} exited at once; see {}", log_path.display()))?;
        self.procs.push(Proc {
            role: role.to_owned(),
            pid,
            child,
        });
        Ok(())
    }

    /// Fails when a process has exited, naming its log.
    fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!(
                    "{} exited early ({status}); see {}",
                    p.role,
                    self.log_dir.join(format!("{}.log", p.role)).display()
                );
            }
        }
        Ok(())
    }

    /// Waits until the ingest `role` answers on `addr`.
    async fn wait_ingest(&mut self, addr: SocketAddr, role: &str, deadline: Instant) -> Result<()> {
        let until = deadline.min(Instant::now() + Duration::from_secs(90));
        let auth = grpc::bearer(&self.admin_token)?;
        loop {
            self.check_alive()?;
            if let Ok(channel) = grpc::connect(addr).await {
                let mut admin = pb::admin_client::AdminClient::new(channel);
                let probe = pb::GetTenantRequest {
                    id: uuid::Uuid::nil().to_string(),
                };
                match admin.get_tenant(grpc::authed(probe, &auth)).await {
                    Ok(_) => return Ok(()),
                    Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
                    Err(_) => {}
                }
            }
            if Instant::now() >= until {
                bail!(
                    "herald-ingest ({role}) did not answer in time; see {}",
                    self.log_dir.join(format!("{role}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every dispatcher consumes the work queue, the ledger consumes its queue and
    /// answers on its port, so the first published event does not wait for a process to start.
    async fn wait_consumers(&mut self, dispatchers: usize, deadline: Instant) -> Result<()> {
        let topology = Topology::new(self.name.as_str(), QueueType::Quorum);
        let mut admin = Admin::connect(&self.settings.amqp_url, "herald-bench-probe").await?;
        let until = deadline.min(Instant::now() + Duration::from_secs(60));
        let names = [topology.work_queue(), topology.ledger_queue()];
        let result = loop {
            if let Err(e) = self.check_alive() {
                break Err(e);
            }
            if !admin.is_connected() {
                admin = Admin::connect(&self.settings.amqp_url, "herald-bench-probe").await?;
            }
            let consumers = |name: &str, queues: &[herald_broker::QueueState]| {
                queues
                    .iter()
                    .find(|q| q.name == name)
                    .map_or(0, |q| q.consumers as usize)
            };
            let queues = admin.queues(&names).await;
            let work = consumers(&names[0], &queues);
            let ledger = consumers(&names[1], &queues);
            let ledger_api = tokio::net::TcpStream::connect(self.ledger_addr)
                .await
                .is_ok();
            if work >= dispatchers && ledger >= 1 && ledger_api {
                break Ok(());
            }
            if Instant::now() >= until {
                break Err(anyhow!(
                    "the dispatchers and the ledger did not start consuming in time; see {}",
                    self.log_dir.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        admin.close().await;
        result
    }

    /// A probe of this installation's queued work.
    pub fn backlog_probe(&self) -> BacklogProbe {
        let topology = Topology::new(self.name.as_str(), QueueType::Quorum);
        let mut queues = topology.work_queues();
        queues.push(topology.ledger_queue());
        BacklogProbe {
            url: self.settings.amqp_url.clone(),
            admin: None,
            queues,
        }
    }

    /// (role, pid) of every process.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs.iter().map(|p| (p.role.clone(), p.pid)).collect()
    }

    /// Pids of the dispatcher processes.
    pub fn dispatcher_pids(&self) -> Vec<u32> {
        self.procs
            .iter()
            .filter(|p| p.role.starts_with("dispatcher"))
            .map(|p| p.pid)
            .collect()
    }

    /// Stops every process (SIGTERM, then SIGKILL after 10 s) and removes the installation's
    /// schema, queues and keys. Safe to call twice.
    pub async fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        for p in self.procs.iter().rev() {
            terminate(p.pid).await;
        }
        let until = Instant::now() + Duration::from_secs(10);
        for p in self.procs.iter_mut().rev() {
            let left = until.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, p.child.wait()).await.is_err() {
                let _ = p.child.kill().await;
            }
        }
        self.cleanup().await;
    }

    async fn cleanup(&self) {
        let limit = Duration::from_secs(30);
        let steps = [
            (
                "postgres",
                tokio::time::timeout(
                    limit,
                    db::drop_schema(&self.settings.database_url, &self.name),
                )
                .await,
            ),
            (
                "rabbitmq",
                tokio::time::timeout(limit, self.delete_queues()).await,
            ),
            (
                "redis",
                tokio::time::timeout(limit * 4, self.delete_redis_keys()).await,
            ),
        ];
        for (what, outcome) in steps {
            let problem = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => "timed out".to_owned(),
            };
            eprintln!(
                "bench: cleanup of {} in {what} incomplete: {problem}",
                self.name
            );
        }
    }

    async fn delete_queues(&self) -> Result<()> {
        let admin = Admin::connect(&self.settings.amqp_url, "herald-bench-cleanup").await?;
        let deleted = admin
            .delete(
                &Topology::new(self.name.as_str(), QueueType::Quorum),
                &self.delays_ms,
            )
            .await;
        admin.close().await;
        Ok(deleted?)
    }

    /// Removes the run's keys with SCAN and UNLINK, a slice at a time: a long run leaves a
    /// done mark per delivery (1.2 M after the 10-minute soak), too many for one `KEYS` reply
    /// within the client's response timeout.
    async fn delete_redis_keys(&self) -> Result<()> {
        let client = redis::Client::open(self.settings.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let pattern = format!("{}:*", self.name);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(5_000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _removed: i64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        // The children die with their handles (kill_on_drop); the data needs `stop`.
        if !self.stopped {
            eprintln!(
                "bench: {} was not cleaned up: drop schema \"{}\", queues {}.* and Redis keys {}:*",
                self.name, self.name, self.name, self.name
            );
        }
    }
}

/// A broker connection of its own that reads how much work waits in an installation's queues
/// (every work shard and the ledger's queue): a scenario that must start clean waits for 0.
pub struct BacklogProbe {
    url: String,
    admin: Option<Admin>,
    queues: Vec<String>,
}

impl BacklogProbe {
    /// Messages ready in the work queues and the ledger's queue; None when the broker cannot
    /// tell (the connection is opened again on the next call).
    pub async fn ready(&mut self) -> Option<u64> {
        if !self.admin.as_ref().is_some_and(Admin::is_connected) {
            self.admin = Admin::connect(&self.url, "herald-bench-backlog").await.ok();
        }
        let queues = self.admin.as_ref()?.queues(&self.queues).await;
        if queues.len() < self.queues.len() {
            return None;
        }
        Some(queues.iter().map(|q| u64::from(q.messages)).sum())
    }

    pub async fn close(self) {
        if let Some(admin) = self.admin {
            admin.close().await;
        }
    }
}

/// Asks a process to shut down gracefully.
async fn terminate(pid: u32) {
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(5), sent).await;
}
