//! Succeeded deliveries remembered in Redis, written in shared pipelines.
//!
//! Every success is marked before its task is acked (so a redelivered task is not sent again).
//! One `SET` round trip per delivery cost the dispatcher a socket write, a read and two task
//! wake-ups each; here one task writes whatever marks are waiting as one pipeline, and marks
//! that arrive while a pipeline is out go in the next. No timer: an idle dispatcher writes a
//! mark at once, a busy one in batches. A caller still returns only after its mark was written
//! (or failed: without Redis a redelivered success may be sent again, which at-least-once
//! allows and receivers dedupe by delivery id).

use tokio::sync::{mpsc, oneshot};

/// Most marks in one pipeline.
const MAX_PIPELINE: usize = 512;

struct Mark {
    key: String,
    written: oneshot::Sender<()>,
}

/// Writes done marks; cheap to clone.
#[derive(Clone)]
pub(crate) struct DoneMarks {
    tx: mpsc::UnboundedSender<Mark>,
}

impl DoneMarks {
    /// Starts the writer: marks live `ttl_secs` seconds.
    pub fn start(redis: redis::aio::ConnectionManager, ttl_secs: u64) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(redis, rx, ttl_secs.max(1)));
        Self { tx }
    }

    /// Sets `key`; returns once the pipeline holding it was answered.
    pub async fn mark(&self, key: String) {
        let (written, answered) = oneshot::channel();
        if self.tx.send(Mark { key, written }).is_ok() {
            let _ = answered.await;
        }
    }
}

async fn run(
    mut redis: redis::aio::ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Mark>,
    ttl_secs: u64,
) {
    while let Some(first) = rx.recv().await {
        let mut marks = vec![first];
        while marks.len() < MAX_PIPELINE {
            let Ok(m) = rx.try_recv() else { break };
            marks.push(m);
        }
        let mut pipe = redis::pipe();
        for m in &marks {
            pipe.cmd("SET")
                .arg(&m.key)
                .arg(1)
                .arg("EX")
                .arg(ttl_secs)
                .ignore();
        }
        let r: redis::RedisResult<()> = pipe.query_async(&mut redis).await;
        if let Err(e) = r {
            tracing::debug!(marks = marks.len(), error = %e, "could not mark deliveries done in redis");
        }
        for m in marks {
            let _ = m.written.send(());
        }
    }
}
