//! Keeping a long-running part of a service alive: a consumer session, a listener.
//!
//! A session that fails (the broker went away, a connection broke) is started again after a
//! wait from [`Backoff`] (0.5 s doubling to 30 s), with one log line per failure naming the part
//! and the wait; a session that ends cleanly, or a shutdown, ends the loop. A session that ran
//! for a while before failing starts the next wait small again, so a blip a day later is not
//! answered with the ceiling of last week's outage.

use std::future::Future;
use std::time::Duration;

use herald_core::backoff::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a session must have run for its failure to count as a new outage.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs `session` until it returns `Ok` or `shutdown` is cancelled, starting it again with
/// back-off whenever it fails.
pub async fn supervise<F, Fut>(what: &str, shutdown: &CancellationToken, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let Err(e) = session().await else {
            break;
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        tracing::warn!(
            error = format!("{e:#}"),
            retry_in_ms = backoff.next_wait().as_millis() as u64,
            "{what} stopped, starting it again"
        );
        if !backoff.wait(shutdown.cancelled()).await {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_session_is_started_again_until_it_ends_cleanly() {
        let runs = AtomicU32::new(0);
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        supervise("probe", &shutdown, || async {
            match runs.fetch_add(1, Ordering::Relaxed) {
                0..=2 => Err(anyhow::anyhow!("broker away")),
                _ => Ok(()),
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::Relaxed), 4);
        // 0.5 + 1 + 2 s of back-off between the four runs.
        assert_eq!(started.elapsed().as_millis(), 3_500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_ends_the_wait_between_runs() {
        let shutdown = CancellationToken::new();
        let runs = AtomicU32::new(0);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });
        supervise("probe", &shutdown, || async {
            runs.fetch_add(1, Ordering::Relaxed);
            Err(anyhow::anyhow!("down"))
        })
        .await;
        // Runs at 0, 0.5, 1.5 and 3.5 s; the wait after the fourth is cut by the shutdown.
        assert_eq!(runs.load(Ordering::Relaxed), 4);
    }
}
