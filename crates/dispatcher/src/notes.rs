//! Writes the gates' throttle notes to Redis, off the delivery path.
//!
//! The gate sends a note whenever an endpoint's throttled state changes; this task writes it
//! (with [`NOTE_TTL_SECS`], refreshed on every change) or deletes it on recovery. Redis being
//! away costs only the note: deliveries never wait for it, and the queue of notes is drained
//! whatever happens, keeping the newest note per endpoint.

use std::collections::HashMap;

use herald_core::throttle::{NOTE_TTL_SECS, Note, key};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::gate::NoteSink;

/// Starts the writer; the returned sink feeds it.
pub fn start(redis: redis::aio::ConnectionManager, prefix: &str) -> NoteSink {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_notes(redis, prefix.to_owned(), rx));
    tx
}

async fn write_notes(
    mut redis: redis::aio::ConnectionManager,
    prefix: String,
    mut rx: mpsc::UnboundedReceiver<(Uuid, Option<Note>)>,
) {
    let mut batch: HashMap<Uuid, Option<Note>> = HashMap::new();
    while let Some((id, note)) = rx.recv().await {
        batch.insert(id, note);
        while let Ok((id, note)) = rx.try_recv() {
            batch.insert(id, note);
        }
        let mut pipe = redis::pipe();
        for (id, note) in batch.drain() {
            let k = key(&prefix, id);
            match note {
                Some(n) => {
                    let text = serde_json::to_string(&n).expect("a note always serialises");
                    pipe.set_ex(k, text, NOTE_TTL_SECS).ignore();
                }
                None => {
                    pipe.del(k).ignore();
                }
            }
        }
        if let Err(e) = pipe.query_async::<()>(&mut redis).await {
            tracing::debug!(error = %e, "could not write throttle notes");
        }
    }
}
