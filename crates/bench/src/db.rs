//! PostgreSQL: the ledger's progress during a run (over one connection kept for the run), the
//! final state of chosen endpoints' deliveries (noisy-neighbour's drain), and dropping the
//! run's schema.
//!
//! The poller used to start `psql` five times a second: a process and a fresh server backend
//! per poll, CPU taken from the machine being measured. One connection costs a query per poll.
//!
//! Progress is read from `endpoint_latency.successes`, the per-endpoint counters the ledger
//! updates in the same transaction as the deliveries themselves: a sum over a few rows, so
//! polling five times a second costs the database almost nothing. Completion is then confirmed
//! once with the exact `count(*)` of successful deliveries (a scan, too costly to poll).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::FutureExt;
use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio::process::Command;
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

/// How often the ledger is polled.
const POLL: Duration = Duration::from_millis(200);
/// Give up when the count has not moved for this long after publishing ended.
const STALL: Duration = Duration::from_secs(60);

/// Runs one statement and returns its unaligned, tuples-only output.
pub async fn psql(url: &str, sql: &str) -> Result<String> {
    let run = Command::new("psql")
        .arg(url)
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .context("psql did not answer within 30 s")?
        .context("running psql (is postgresql-client installed?)")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A connection of the poller's, opened (again) when it has none.
pub struct Poller {
    url: String,
    conn: Option<PgConnection>,
}

impl Poller {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            conn: None,
        }
    }

    /// Runs `query` on the connection (opened first if need be) within 30 s; a broken or
    /// silent connection is dropped, so the next call opens a fresh one.
    async fn run<T, F>(&mut self, query: F) -> Result<T>
    where
        F: for<'c> FnOnce(
            &'c mut PgConnection,
        ) -> futures::future::BoxFuture<'c, Result<T, sqlx::Error>>,
    {
        if self.conn.is_none() {
            let connect = PgConnection::connect(&self.url);
            let conn = tokio::time::timeout(Duration::from_secs(10), connect)
                .await
                .context("connecting to PostgreSQL timed out")??;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        match tokio::time::timeout(Duration::from_secs(30), query(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if matches!(e, sqlx::Error::Io(_) | sqlx::Error::Protocol(_)) {
                    self.conn = None;
                }
                Err(e.into())
            }
            Err(_) => {
                self.conn = None;
                bail!("PostgreSQL did not answer within 30 s")
            }
        }
    }

    async fn count(&mut self, sql: String) -> Result<u64> {
        let n = self
            .run(move |conn| {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(conn)
                    .boxed()
            })
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deliveries of `endpoints` grouped by endpoint, status and attempt count.
    pub async fn outcomes(&mut self, schema: &str, endpoints: &[Uuid]) -> Result<Vec<Outcome>> {
        let ids: Vec<String> = endpoints.iter().map(|id| format!("'{id}'")).collect();
        let sql = format!(
            "SELECT endpoint_id, status, attempt_count, count(*)::int8 \
             FROM \"{schema}\".deliveries WHERE endpoint_id IN ({}) GROUP BY 1, 2, 3",
            ids.join(", ")
        );
        let rows = self
            .run(move |conn| {
                sqlx::query_as::<_, (Uuid, String, i32, i64)>(sqlx::AssertSqlSafe(sql))
                    .fetch_all(conn)
                    .boxed()
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(endpoint_id, status, attempts, n)| Outcome {
                endpoint_id,
                status,
                attempts: u32::try_from(attempts).unwrap_or(0),
                deliveries: u64::try_from(n).unwrap_or(0),
            })
            .collect())
    }

    /// Closes the connection, if open.
    pub async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Successful deliveries according to the ledger's incremental statistics.
    async fn successes_fast(&mut self, schema: &str) -> Result<u64> {
        self.count(format!(
            "SELECT coalesce(sum(successes), 0)::int8 FROM \"{schema}\".endpoint_latency"
        ))
        .await
    }

    /// Successful deliveries, counted row by row.
    async fn successes_exact(&mut self, schema: &str) -> Result<u64> {
        self.count(format!(
            "SELECT count(*) FROM \"{schema}\".deliveries WHERE status = 'success'"
        ))
        .await
    }
}

/// Deliveries of one endpoint with one status and one attempt count, from the ledger.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub endpoint_id: Uuid,
    pub status: String,
    pub attempts: u32,
    pub deliveries: u64,
}

/// Drops a run's schema and everything in it.
pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    psql(url, &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).await?;
    Ok(())
}

/// The ledger's progress over a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LedgerPoll {
    /// (seconds since start, successful deliveries), one per poll.
    pub samples: Vec<(f64, u64)>,
    /// When the ledger held every expected delivery, in seconds since start.
    pub complete_at: Option<f64>,
    /// The exact count at the end.
    pub final_count: Option<u64>,
    /// Why polling ended early.
    pub error: Option<String>,
}

/// Polls until the ledger holds `expected` successful deliveries (`u64::MAX` until the load
/// generator knows how many that is), the count stalls, or `deadline`.
pub async fn poll_ledger(
    url: String,
    schema: String,
    start: Instant,
    expected: Arc<AtomicU64>,
    deadline: Instant,
) -> LedgerPoll {
    let mut out = LedgerPoll::default();
    let mut db = Poller::new(&url);
    let mut fast = true;
    let mut errors = 0u32;
    let mut last = (0u64, Instant::now());
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        tick.tick().await;
        let target = expected.load(Ordering::SeqCst);
        let polled = if fast {
            db.successes_fast(&schema).await
        } else {
            db.successes_exact(&schema).await
        };
        let at = start.elapsed().as_secs_f64();
        let n = match polled {
            Ok(n) => {
                errors = 0;
                n
            }
            Err(_) if fast => {
                // Statistics table missing or changed: fall back to the exact count.
                fast = false;
                continue;
            }
            Err(e) => {
                errors += 1;
                if errors >= 25 {
                    out.error = Some(format!("{e:#}"));
                    break;
                }
                continue;
            }
        };
        out.samples.push((at, n));
        if n != last.0 {
            last = (n, Instant::now());
        }
        if target != u64::MAX && n >= target {
            if !fast {
                out.complete_at = Some(at);
                out.final_count = Some(n);
                return out;
            }
            match db.successes_exact(&schema).await {
                Ok(exact) if exact >= target => {
                    out.complete_at = Some(at);
                    out.final_count = Some(exact);
                    return out;
                }
                // The statistics disagree with the rows: trust the rows from now on.
                _ => fast = false,
            }
        }
        if target != u64::MAX && last.1.elapsed() > STALL {
            out.error = Some(format!(
                "ledger stopped at {n} of {target} successful deliveries"
            ));
            break;
        }
    }
    if out.error.is_none() && out.complete_at.is_none() {
        out.error = Some("timed out".into());
    }
    out.final_count = db.successes_exact(&schema).await.ok();
    db.close().await;
    out
}
