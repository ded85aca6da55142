//! What a dispatcher tells the rest of Herald about an endpoint it is holding back.
//!
//! Dispatchers keep each endpoint's in-flight cap in memory (it shrinks on timeouts and errors
//! and grows back on successes). So that a webhooks page can say why deliveries are slow, a
//! dispatcher that throttles an endpoint writes this note to Redis under [`key`], with a TTL,
//! and removes it when the endpoint is back at its full cap. `GetEndpoint` reads it; no note
//! means the endpoint is healthy. With several dispatchers the last one to change its view wins.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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
        };
        let text = serde_json::to_string(&note).unwrap();
        assert!(text.contains("\"reason\":\"timeouts\""), "{text}");
        assert_eq!(serde_json::from_str::<Note>(&text).unwrap(), note);
        assert_eq!(note.state(), "throttled: timeouts");
        let id = Uuid::nil();
        assert_eq!(
            key("herald", id),
            "herald:throttle:00000000-0000-0000-0000-000000000000"
        );
    }
}
