//! PostgreSQL through `psql`: the ledger's progress during a run, and dropping the run's schema.
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
use serde::Serialize;
use tokio::process::Command;
use tokio::time::MissedTickBehavior;

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

async fn count(url: &str, sql: &str) -> Result<u64> {
    let text = psql(url, sql).await?;
    text.parse::<u64>()
        .with_context(|| format!("unexpected psql output {text:?}"))
}

/// Successful deliveries according to the ledger's incremental statistics.
async fn successes_fast(url: &str, schema: &str) -> Result<u64> {
    let sql = format!("SELECT coalesce(sum(successes), 0) FROM \"{schema}\".endpoint_latency");
    count(url, &sql).await
}

/// Successful deliveries, counted row by row.
pub async fn successes_exact(url: &str, schema: &str) -> Result<u64> {
    let sql = format!("SELECT count(*) FROM \"{schema}\".deliveries WHERE status = 'success'");
    count(url, &sql).await
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
    let mut fast = true;
    let mut errors = 0u32;
    let mut last = (0u64, Instant::now());
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        tick.tick().await;
        let target = expected.load(Ordering::SeqCst);
        let polled = if fast {
            successes_fast(&url, &schema).await
        } else {
            successes_exact(&url, &schema).await
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
            match successes_exact(&url, &schema).await {
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
    out.final_count = successes_exact(&url, &schema).await.ok();
    out
}
