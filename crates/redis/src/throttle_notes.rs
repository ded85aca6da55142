//! Throttle notes: what a dispatcher tells the rest of Herald about an endpoint it is holding
//! back.
//!
//! Dispatchers keep each endpoint's in-flight cap in memory (it shrinks on timeouts and errors
//! and grows back on successes). So that a webhooks page can say why deliveries are slow, a
//! dispatcher that throttles an endpoint writes this note to Redis under [`key`], with a TTL,
//! and removes it when the endpoint is back at its full cap. `GetEndpoint` reads it; no note
//! means the endpoint is healthy. With several dispatchers the last one to change its view wins.
//!
//! The dispatcher's gate sends a note whenever an endpoint's throttled state changes; the writer
//! ([`start`]) writes it (with [`NOTE_TTL_SECS`], refreshed on every change) or deletes it on
//! recovery, off the delivery path. Redis being away costs only the note: deliveries never wait
//! for it, and the queue of notes is drained whatever happens, keeping the newest note per
//! endpoint.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long a note outlives the last change a dispatcher made to it: a dispatcher that dies
/// while an endpoint is throttled leaves no stale note behind for longer than this.
pub const NOTE_TTL_SECS: u64 = 300;

/// Why an endpoint's cap was lowered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Attempts ran into the endpoint's timeout (each held a POST slot that long).
    Timeouts,
    /// Attempts failed fast: 5xx, 429, or a connection error.
    Errors,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Timeouts => "timeouts",
            Reason::Errors => "errors",
        }
    }
}

/// One dispatcher's view of a throttled endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub reason: Reason,
    /// POSTs the dispatcher lets the endpoint have at once now.
    pub cap: u32,
    /// Its cap when healthy (the endpoint's `max_in_flight` or the dispatcher's default).
    pub max: u32,
    /// When the endpoint was first throttled in this episode.
    pub since: DateTime<Utc>,
    /// Attempts a second the dispatchers give the endpoint together while it keeps failing
    /// fast (they pace it); `None` when they do not. Absent from notes of older dispatchers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paced: Option<u32>,
}

impl Note {
    /// The state a webhooks page shows, e.g. `throttled: timeouts`.
    pub fn state(&self) -> String {
        format!("throttled: {}", self.reason.as_str())
    }
}

/// The Redis key of an endpoint's note.
pub fn key(redis_prefix: &str, endpoint_id: Uuid) -> String {
    format!("{redis_prefix}:throttle:{endpoint_id}")
}

/// Where a dispatcher sends an endpoint's note (`None`: the endpoint is healthy again): a task
/// writing them to Redis, so the gate never waits on I/O.
pub type NoteSink = mpsc::UnboundedSender<(Uuid, Option<Note>)>;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_reads_back_and_names_its_state() {
        let note = Note {
            reason: Reason::Timeouts,
            cap: 1,
            max: 16,
            since: Utc::now(),
            paced: None,
        };
        let text = serde_json::to_string(&note).unwrap();
        assert!(text.contains("\"reason\":\"timeouts\""), "{text}");
        assert!(!text.contains("paced"), "{text}");
        assert_eq!(serde_json::from_str::<Note>(&text).unwrap(), note);
        let paced = Note {
            reason: Reason::Errors,
            paced: Some(100),
            ..note.clone()
        };
        let text = serde_json::to_string(&paced).unwrap();
        assert_eq!(serde_json::from_str::<Note>(&text).unwrap(), paced);
        assert_eq!(note.state(), "throttled: timeouts");
        let id = Uuid::nil();
        assert_eq!(
            key("herald", id),
            "herald:throttle:00000000-0000-0000-0000-000000000000"
        );
    }
}
