//! "Already delivered" marks: succeeded deliveries remembered in Redis, written in shared
//! pipelines.
//!
//! Every success is marked before its task is acked, so a redelivered task (a dispatcher died
//! before its ack, or a parked copy came back) is not sent again. One `SET` round trip per
//! delivery cost the dispatcher a socket write, a read and two task wake-ups each; here one task
//! writes whatever marks are waiting as one pipeline, and marks that arrive while a pipeline is
//! out go in the next. No timer: an idle dispatcher writes a mark at once, a busy one in
//! batches. A caller still returns only after its mark was written (or failed: without Redis a
//! redelivered success may be sent again, which at-least-once allows and receivers dedupe by
//! delivery id).
//!
//! Redis key: `<prefix>:done:<delivery id>`, value `1`, for the configured TTL.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most marks in one pipeline.
const MAX_PIPELINE: usize = 512;

struct Mark {
    key: String,
    written: oneshot::Sender<()>,
}

/// Reads and writes done marks; cheap to clone.
#[derive(Clone)]
pub struct DoneMarks {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    tx: mpsc::UnboundedSender<Mark>,
}

impl DoneMarks {
    /// Starts the writer: marks live `ttl` (at least a second).
    pub fn start(redis: redis::aio::ConnectionManager, prefix: &str, ttl: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_marks(redis.clone(), rx, ttl.as_secs().max(1)));
        Self {
            redis,
            prefix: prefix.to_owned(),
            tx,
        }
    }

    /// Marks `delivery_id` delivered; returns once the pipeline holding the mark was answered.
    pub async fn mark(&self, delivery_id: Uuid) {
        let (written, answered) = oneshot::channel();
        let mark = Mark {
            key: key(&self.prefix, delivery_id),
            written,
        };
        if self.tx.send(mark).is_ok() {
            let _ = answered.await;
        }
    }

    /// Whether `delivery_id` was delivered. Without Redis we cannot tell: false, so the
    /// delivery goes again (at-least-once allows a duplicate).
    pub async fn is_done(&self, delivery_id: Uuid) -> bool {
        let mut conn = self.redis.clone();
        let r: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(key(&self.prefix, delivery_id))
            .query_async(&mut conn)
            .await;
        r.unwrap_or(false)
    }
}

/// The Redis key of a delivery's mark.
fn key(prefix: &str, delivery_id: Uuid) -> String {
    format!("{prefix}:done:{delivery_id}")
}

async fn write_marks(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_keep_their_key() {
        assert_eq!(
            key("herald", Uuid::nil()),
            "herald:done:00000000-0000-0000-0000-000000000000"
        );
    }
}
