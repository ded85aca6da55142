//! Messages that travel through RabbitMQ, version 1.
//!
//! - A [`DeliveryTask`] is one delivery of one event to one endpoint; it is the only message per
//!   delivery on the hot path. It is framed as one line of JSON metadata, a newline, then the
//!   payload's raw bytes: the bytes the publisher sent are the bytes the receiver gets, with no
//!   escaping or re-encoding on the way.
//! - A [`LedgerBatch`] carries many [`Record`]s for the ledger (and for anyone who binds a queue
//!   to the ledger exchange). Records are facts, each with its own id, so applying one twice or
//!   out of order converges to the same rows.
//!
//! Both are JSON with a `"v"` field; a reader refuses versions it does not know rather than guess.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version written in every message.
pub const VERSION: u32 = 1;

/// What started an attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The first attempt or a retry on the schedule.
    #[default]
    Scheduled,
    /// An operator asked for it (redeliver, replay): one attempt, no retries.
    Manual,
    /// A test send (`SendTest`), made synchronously by ingest.
    Test,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::Manual => "manual",
            Trigger::Test => "test",
        }
    }
}

/// Status of a delivery in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Success,
    Retrying,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Success => "success",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "success" => DeliveryStatus::Success,
            "retrying" => DeliveryStatus::Retrying,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// One delivery of one event to one endpoint, as queued for a dispatcher.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub v: u32,
    /// Stable across retries; receivers dedupe on it.
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    /// Number of the attempt this task performs (1 for the first): it counts requests.
    pub attempt: u32,
    /// Retry tiers used up before this attempt, when a `Retry-After` made it differ from
    /// `attempt - 1` (tiers skipped); see [`DeliveryTask::tiers_used`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<u32>,
    /// When the task is due, if it waits through several delay queues (its delay is not one
    /// queue's: see `herald_broker::DELAY_RUNGS_MS`). Absent: due when read. Informative since
    /// `rest_ms` exists (dispatchers that predate `rest_ms` send the task on until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<DateTime<Utc>>,
    /// The part of the wait still ahead once the queue carrying the task hands it back, in
    /// milliseconds; the dispatcher sends it on by that much. Planned, not recomputed from
    /// `due`: a hop that comes back a little late (they all do) costs no extra hop, and a
    /// dispatcher whose clock is ahead does not deliver early. Absent: due when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest_ms: Option<u64>,
    /// Times the task was parked (set aside while its endpoint or tenant had no room; not
    /// attempts). A parked task may have a twin (a dispatcher killed between parking it and
    /// acking it), so one that was parked is checked against the delivered marks like a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<u32>,
    /// The turn this attempt was given at an endpoint that keeps failing (the dispatcher's
    /// pacing: it was parked until it, or its retry was scheduled for it); back at it, the
    /// task is not paced again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<DateTime<Utc>>,
    pub trigger: Trigger,
    /// When the delivery was created (the event was accepted).
    pub created_at: DateTime<Utc>,
    /// The payload, byte for byte (travels after the metadata line, not inside it).
    #[serde(skip)]
    pub payload: Vec<u8>,
}

/// Many ledger records in one broker message.
#[derive(Debug, Serialize, Deserialize)]
pub struct LedgerBatch {
    pub v: u32,
    pub records: Vec<Record>,
}

/// A fact for the ledger.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Event(EventRecord),
    Attempt(AttemptRecord),
    Abandoned(AbandonedRecord),
}

/// An accepted event and the deliveries it fanned out to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventRecord {
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub accepted_at: DateTime<Utc>,
    pub idempotency_key: Option<String>,
    /// The payload exactly as published.
    pub payload: String,
    pub deliveries: Vec<DeliveryRef>,
    /// A synthetic event made by `SendTest`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

impl EventRecord {
    /// The event `event_id` and one first-attempt delivery task per target endpoint: what
    /// ingest (and the dispatcher, for operational events) hands to the broker.
    ///
    /// Everything derives from `event_id` (a UUIDv7): the acceptance time is its timestamp and
    /// each delivery id is [`delivery_id`] of the event and endpoint, so handing the same event
    /// off again (a publish resumed after an interruption) yields the very same ids.
    pub fn fan_out(
        event_id: Uuid,
        tenant_id: Uuid,
        event_type: &str,
        payload: &[u8],
        occurred_at: DateTime<Utc>,
        idempotency_key: Option<String>,
        targets: &[Uuid],
    ) -> (Self, Vec<DeliveryTask>) {
        let accepted_at = uuid_time(event_id).unwrap_or_else(Utc::now);
        let tasks: Vec<DeliveryTask> = targets
            .iter()
            .map(|endpoint_id| DeliveryTask {
                v: VERSION,
                delivery_id: delivery_id(event_id, *endpoint_id),
                event_id,
                tenant_id,
                endpoint_id: *endpoint_id,
                event_type: event_type.to_owned(),
                attempt: 1,
                tiers: None,
                due: None,
                rest_ms: None,
                parked: None,
                turn: None,
                trigger: Trigger::Scheduled,
                created_at: accepted_at,
                payload: payload.to_vec(),
            })
            .collect();
        let record = EventRecord {
            event_id,
            tenant_id,
            event_type: event_type.to_owned(),
            occurred_at,
            accepted_at,
            idempotency_key,
            payload: String::from_utf8_lossy(payload).into_owned(),
            deliveries: tasks
                .iter()
                .map(|t| DeliveryRef {
                    delivery_id: t.delivery_id,
                    endpoint_id: t.endpoint_id,
                })
                .collect(),
            test: false,
        };
        (record, tasks)
    }
}

/// The time embedded in a UUIDv7.
pub fn uuid_time(id: Uuid) -> Option<DateTime<Utc>> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// The id of the delivery of `event_id` to `endpoint_id`: a UUIDv7 with the event's timestamp
/// (so ids still sort by time) and bits from a hash of both ids (so it is the same every time
/// the event is handed off).
pub fn delivery_id(event_id: Uuid, endpoint_id: Uuid) -> Uuid {
    use sha2::{Digest, Sha256};
    let ms = event_id
        .get_timestamp()
        .map(|t| {
            let (s, n) = t.to_unix();
            s * 1000 + u64::from(n / 1_000_000)
        })
        .unwrap_or(0);
    let digest = Sha256::new()
        .chain_update(event_id.as_bytes())
        .chain_update(endpoint_id.as_bytes())
        .finalize();
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(ms, &bits).into_uuid()
}

/// A delivery created by an event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRef {
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
}

/// Who a delivery belongs to; repeated on attempt records so they stand alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryKey {
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    pub created_at: DateTime<Utc>,
}

impl DeliveryKey {
    pub fn of(task: &DeliveryTask) -> Self {
        Self {
            delivery_id: task.delivery_id,
            event_id: task.event_id,
            tenant_id: task.tenant_id,
            endpoint_id: task.endpoint_id,
            event_type: task.event_type.clone(),
            created_at: task.created_at,
        }
    }
}

/// One HTTP attempt and its outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Unique per execution: a task executed twice after a crash yields two records.
    pub attempt_id: Uuid,
    #[serde(flatten)]
    pub delivery: DeliveryKey,
    pub attempt: u32,
    pub trigger: Trigger,
    pub started_at: DateTime<Utc>,
    pub latency_ms: u32,
    /// HTTP status, absent when no response came back.
    pub response_status: Option<u16>,
    /// First 1,000 characters of the response body.
    pub response_body: String,
    /// Why there was no usable response (timeout, connection refused, blocked address, ...).
    pub error: Option<String>,
    /// `success`, `retrying` (another attempt is scheduled) or `failed` (no more attempts).
    pub outcome: DeliveryStatus,
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// A delivery that ended without an attempt (its endpoint was deleted or disabled).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AbandonedRecord {
    #[serde(flatten)]
    pub delivery: DeliveryKey,
    pub at: DateTime<Utc>,
    pub reason: String,
    /// Attempts made before the abandoned one (its task's attempt − 1): the log's attempt
    /// count becomes at least this, so an earlier attempt's record applied later cannot take
    /// the delivery back to `retrying`. 0 in records written before it was kept.
    #[serde(default)]
    pub attempts_before: u32,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported message version {0}")]
    Version(u32),
    #[error("delivery task has no payload separator")]
    Framing,
}

#[derive(Deserialize)]
struct Versioned {
    v: u32,
}

/// Parses a message of this version in one pass; only when that fails is the version read on
/// its own, so a message from a newer Herald is reported as such rather than as malformed.
fn decode_versioned<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    version: impl Fn(&T) -> u32,
) -> Result<T, DecodeError> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(t) if version(&t) == VERSION => Ok(t),
        Ok(t) => Err(DecodeError::Version(version(&t))),
        Err(e) => {
            check_version(bytes)?;
            Err(e.into())
        }
    }
}

fn check_version(bytes: &[u8]) -> Result<(), DecodeError> {
    let Versioned { v } = serde_json::from_slice(bytes)?;
    if v == VERSION {
        Ok(())
    } else {
        Err(DecodeError::Version(v))
    }
}

impl DeliveryTask {
    /// Retry tiers used up before this attempt: one per earlier attempt, unless a
    /// `Retry-After` skipped some.
    pub fn tiers_used(&self) -> u32 {
        self.tiers.unwrap_or_else(|| self.attempt.saturating_sub(1))
    }

    /// `<metadata JSON>\n<payload bytes>` (compact JSON never contains a raw newline).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("a delivery task always serialises");
        out.reserve(self.payload.len() + 1);
        out.push(b'\n');
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let split = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(DecodeError::Framing)?;
        let (meta, rest) = bytes.split_at(split);
        let mut task: DeliveryTask = decode_versioned(meta, |t: &DeliveryTask| t.v)?;
        task.payload = rest[1..].to_vec();
        Ok(task)
    }
}

impl Record {
    /// Estimated encoded size, for packing records into broker messages.
    pub fn approx_size(&self) -> usize {
        match self {
            Record::Event(e) => e.payload.len() + 200 + e.deliveries.len() * 90,
            Record::Attempt(a) => {
                a.response_body.len() + a.error.as_ref().map_or(0, String::len) + 400
            }
            Record::Abandoned(a) => a.reason.len() + 300,
        }
    }
}

impl LedgerBatch {
    pub fn new(records: Vec<Record>) -> Self {
        Self {
            v: VERSION,
            records,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a ledger batch always serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned(bytes, |b: &LedgerBatch| b.v)
    }
}

/// Truncates a response body to its first `max` characters (not bytes), lossily decoding
/// anything that is not UTF-8.
pub fn body_excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut excerpt = match text.char_indices().nth(max) {
        Some((i, _)) => text[..i].to_owned(),
        None => text.into_owned(),
    };
    storable(&mut excerpt);
    excerpt
}

/// Makes text storable in a Postgres `text` column, which cannot hold NUL: each NUL becomes
/// U+FFFD. A receiver's response body may contain anything.
pub fn storable(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', "\u{FFFD}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handing_an_event_off_again_yields_the_same_ids() {
        let event = Uuid::now_v7();
        let targets = [Uuid::now_v7(), Uuid::now_v7()];
        let fan =
            || EventRecord::fan_out(event, Uuid::nil(), "a.b", b"{}", Utc::now(), None, &targets);
        let ((r1, t1), (r2, t2)) = (fan(), fan());
        let ids = |t: &[DeliveryTask]| t.iter().map(|t| t.delivery_id).collect::<Vec<_>>();
        assert_eq!(ids(&t1), ids(&t2));
        assert_eq!(r1.accepted_at, r2.accepted_at);
        assert_ne!(t1[0].delivery_id, t1[1].delivery_id);
        for t in &t1 {
            assert_eq!(t.delivery_id.get_version_num(), 7);
            assert_eq!(uuid_time(t.delivery_id), uuid_time(event));
        }
        assert_eq!(
            uuid_time(event).map(|t| t.timestamp_millis()),
            Some(r1.accepted_at.timestamp_millis())
        );
    }

    #[test]
    fn response_excerpts_are_storable_and_cut_on_characters() {
        assert_eq!(body_excerpt(b"a\0b", 10), "a\u{FFFD}b");
        assert_eq!(body_excerpt("ééé".as_bytes(), 2), "éé");
        assert_eq!(body_excerpt(&[0xff, b'x'], 10), "\u{FFFD}x");
    }

    #[test]
    fn payload_bytes_survive_a_round_trip() {
        let raw = " { \"b\" :1,\n\"a\":[1, 2.50] ,\"é\":\"\\u00e9\"}\n";
        let task = DeliveryTask {
            v: VERSION,
            delivery_id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            endpoint_id: Uuid::now_v7(),
            event_type: "a.b".into(),
            attempt: 1,
            tiers: None,
            due: None,
            rest_ms: None,
            parked: None,
            turn: None,
            trigger: Trigger::Scheduled,
            created_at: Utc::now(),
            payload: raw.as_bytes().to_vec(),
        };
        let back = DeliveryTask::decode(&task.encode()).unwrap();
        assert_eq!(back.payload, raw.as_bytes());
        assert_eq!(back.delivery_id, task.delivery_id);
    }

    #[test]
    fn wait_fields_travel_only_when_set() {
        let (_, mut tasks) = EventRecord::fan_out(
            Uuid::now_v7(),
            Uuid::now_v7(),
            "a.b",
            b"{}",
            Utc::now(),
            None,
            &[Uuid::now_v7()],
        );
        let mut task = tasks.pop().unwrap();
        let plain = String::from_utf8(task.encode()).unwrap();
        assert!(
            !plain.contains("due") && !plain.contains("rest_ms"),
            "{plain}"
        );
        let due = Utc::now();
        task.due = Some(due);
        task.rest_ms = Some(1_350);
        let back = DeliveryTask::decode(&task.encode()).unwrap();
        assert_eq!((back.due, back.rest_ms), (Some(due), Some(1_350)));
    }

    #[test]
    fn unknown_version_is_refused() {
        assert!(matches!(
            LedgerBatch::decode(br#"{"v":2,"records":[]}"#),
            Err(DecodeError::Version(2))
        ));
        assert!(LedgerBatch::decode(b"garbage").is_err());
        // A newer message of another shape is still reported by its version.
        assert!(matches!(
            LedgerBatch::decode(br#"{"v":3,"entries":{}}"#),
            Err(DecodeError::Version(3))
        ));
        let task = |v: u32, extra: &str| {
            format!(
                r#"{{"v":{v},"delivery_id":"{id}","event_id":"{id}","tenant_id":"{id}","endpoint_id":"{id}","event_type":"a.b","attempt":1,"trigger":"scheduled","created_at":"2026-12-02T10:00:00Z"{extra}}}
{{}}"#,
                id = Uuid::nil()
            )
        };
        assert_eq!(
            DeliveryTask::decode(task(VERSION, "").as_bytes())
                .unwrap()
                .payload,
            b"{}"
        );
        assert!(matches!(
            DeliveryTask::decode(task(7, "").as_bytes()),
            Err(DecodeError::Version(7))
        ));
        assert!(matches!(
            DeliveryTask::decode(task(7, r#","attempt":"x""#).as_bytes()),
            Err(DecodeError::Version(7))
        ));
        assert!(matches!(
            DeliveryTask::decode(task(VERSION, r#","attempt":"x""#).as_bytes()),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn excerpt_counts_characters() {
        assert_eq!(body_excerpt("ééé".as_bytes(), 2), "éé");
        assert_eq!(body_excerpt(b"abc", 1000), "abc");
    }
}
