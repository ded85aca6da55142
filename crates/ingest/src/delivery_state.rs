//! The delivery state an endpoint card shows: healthy, or throttled by a dispatcher and why.
//!
//! Dispatchers leave a note in Redis while they hold an endpoint below its in-flight cap
//! ([`herald_redis::throttle_notes`]); no note means healthy. The state is advice for a person
//! reading a page, so reading it never fails a call: when Redis cannot answer (or a note cannot
//! be read) the state is "unknown". A page of endpoints costs one `MGET`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_proto::v1 as pb;
use herald_redis::throttle_notes::{self, Note};
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::convert;

/// The longest a card waits for Redis (the client's own response timeout is about as long).
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// An endpoint's delivery state, as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    /// `healthy`, `throttled: <reason>`, `disabled` or `unknown`.
    pub state: String,
    /// The cap a dispatcher applies now; 0 unless throttled.
    pub cap: u32,
    /// When the throttling began; `None` unless throttled.
    pub since: Option<DateTime<Utc>>,
    /// Attempts a second a dispatcher paces the endpoint to; 0 unless paced.
    pub paced: u32,
}

impl State {
    fn plain(state: &str) -> Self {
        Self {
            state: state.to_owned(),
            cap: 0,
            since: None,
            paced: 0,
        }
    }

    /// The state of an endpoint no dispatcher has seen yet (a new one).
    pub fn fresh(enabled: bool) -> Self {
        Self::plain(if enabled { "healthy" } else { "disabled" })
    }

    /// The state of enabled endpoint `id` given what Redis answered for it.
    fn from_lookup(id: Uuid, lookup: Lookup<'_>) -> Self {
        match lookup {
            Lookup::Unavailable => Self::plain("unknown"),
            Lookup::Absent => Self::plain("healthy"),
            Lookup::Note(text) => match serde_json::from_str::<Note>(text) {
                Ok(n) => Self {
                    state: n.state(),
                    cap: n.cap,
                    since: Some(n.since),
                    paced: n.paced.unwrap_or(0),
                },
                // Written by a newer dispatcher, or damaged: say so rather than guess.
                Err(e) => {
                    tracing::warn!(endpoint_id = %id, error = %e, "throttle note unreadable, delivery state shown as unknown");
                    Self::plain("unknown")
                }
            },
        }
    }

    /// Sets the state's fields on an endpoint message.
    pub fn fill(self, e: &mut pb::Endpoint) {
        e.delivery_state = self.state;
        e.in_flight_cap = self.cap;
        e.throttled_since = self.since.map(convert::ts);
        e.paced_attempts_per_second = self.paced;
    }
}

/// What Redis answered for one endpoint's note.
enum Lookup<'a> {
    /// Redis could not answer.
    Unavailable,
    /// No note: no dispatcher is holding the endpoint back.
    Absent,
    Note(&'a str),
}

/// Reads the dispatchers' throttle notes.
#[derive(Clone)]
pub struct DeliveryStates {
    redis: ConnectionManager,
    prefix: String,
}

impl DeliveryStates {
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
        }
    }

    /// The state of each endpoint, in order, with one Redis round trip (none when every
    /// endpoint is disabled).
    pub async fn of(&self, endpoints: &[herald_store::Endpoint]) -> Vec<State> {
        let enabled: Vec<&herald_store::Endpoint> =
            endpoints.iter().filter(|e| e.enabled).collect();
        let notes = self.read(&enabled).await;
        let mut notes = notes.as_ref().map(|n| n.iter());
        endpoints
            .iter()
            .map(|e| {
                if !e.enabled {
                    return State::fresh(false);
                }
                let lookup = match &mut notes {
                    None => Lookup::Unavailable,
                    Some(it) => match it.next() {
                        Some(Some(text)) => Lookup::Note(text),
                        _ => Lookup::Absent,
                    },
                };
                State::from_lookup(e.id, lookup)
            })
            .collect()
    }

    /// The notes of `endpoints`, in order; `None` when Redis did not answer in time.
    async fn read(&self, endpoints: &[&herald_store::Endpoint]) -> Option<Vec<Option<String>>> {
        if endpoints.is_empty() {
            return Some(Vec::new());
        }
        let keys: Vec<String> = endpoints
            .iter()
            .map(|e| throttle_notes::key(&self.prefix, e.id))
            .collect();
        self.mget(keys).await
    }

    /// Which of the enabled endpoints `ids` a dispatcher throttles now, in order (a note that
    /// cannot be read counts as throttled); `None` when Redis did not answer in time. One
    /// `MGET` per 1,000 endpoints.
    pub async fn throttled(&self, ids: &[Uuid]) -> Option<Vec<bool>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let keys = chunk
                .iter()
                .map(|id| throttle_notes::key(&self.prefix, *id))
                .collect();
            out.extend(self.mget(keys).await?.into_iter().map(|n| n.is_some()));
        }
        Some(out)
    }

    /// The values of `keys`, in order; `None` when Redis did not answer in time.
    async fn mget(&self, keys: Vec<String>) -> Option<Vec<Option<String>>> {
        let mut conn = self.redis.clone();
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&keys);
        let mget = cmd.query_async::<Vec<Option<String>>>(&mut conn);
        match tokio::time::timeout(READ_TIMEOUT, mget).await {
            Ok(Ok(notes)) if notes.len() == keys.len() => Some(notes),
            Ok(Ok(notes)) => {
                tracing::warn!(
                    keys = keys.len(),
                    values = notes.len(),
                    "redis answered MGET with a different count, delivery state shown as unknown"
                );
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "delivery state unavailable (redis), shown as unknown");
                None
            }
            Err(_) => {
                tracing::warn!("delivery state unavailable (redis timed out), shown as unknown");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_redis::throttle_notes::Reason;

    use super::*;

    #[test]
    fn a_note_makes_an_endpoint_throttled() {
        let since = Utc::now();
        let note = serde_json::to_string(&Note {
            reason: Reason::Errors,
            cap: 3,
            max: 16,
            since,
            paced: Some(100),
        })
        .unwrap();
        assert_eq!(
            State::from_lookup(Uuid::nil(), Lookup::Note(&note)),
            State {
                state: "throttled: errors".into(),
                cap: 3,
                since: Some(since),
                paced: 100,
            }
        );
    }

    #[test]
    fn no_note_is_healthy_and_no_answer_is_unknown() {
        assert_eq!(
            State::from_lookup(Uuid::nil(), Lookup::Absent),
            State::fresh(true)
        );
        assert_eq!(
            State::from_lookup(Uuid::nil(), Lookup::Unavailable).state,
            "unknown"
        );
        assert_eq!(
            State::from_lookup(Uuid::nil(), Lookup::Note("{\"reason\":\"moon\"}")).state,
            "unknown"
        );
    }
}
