//! The calls behind a "Webhooks" page: test sends, secret rotation, filter checks, event type
//! upkeep, recent activity, redeliver and replay.

use herald_proto::v1 as pb;
use serde_json::json;
use tonic::transport::Channel;

use crate::commands::authed;
use crate::output::{self, print};

type Endpoints = pb::endpoints_client::EndpointsClient<Channel>;
type Deliveries = pb::deliveries_client::DeliveriesClient<Channel>;
type EventTypes = pb::event_types_client::EventTypesClient<Channel>;

/// An RFC 3339 time as a protobuf timestamp.
pub fn parse_time(s: &str) -> anyhow::Result<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
        anyhow::anyhow!("{s:?} is not an RFC 3339 time (e.g. 2026-11-23T08:00:00Z): {e}")
    })?;
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

pub async fn send_test(
    c: &mut Endpoints,
    key: &Option<String>,
    j: bool,
    id: String,
    event_type: Option<String>,
    payload: Option<Vec<u8>>,
) -> anyhow::Result<()> {
    let r = c
        .send_test(authed(
            pb::SendTestRequest {
                endpoint_id: id,
                event_type,
                payload,
            },
            key,
            "api key",
        )?)
        .await?
        .into_inner();
    print(
        j,
        &[json!({
            "delivery_id": r.delivery_id, "success": r.success, "response_status": r.response_status,
            "latency_ms": r.latency_ms, "response_body": r.response_body, "error": r.error,
        })],
        &[
            "delivery_id",
            "success",
            "response_status",
            "latency_ms",
            "error",
            "response_body",
        ],
    );
    if !r.success {
        std::process::exit(1);
    }
    Ok(())
}

pub async fn rotate_secret(
    c: &mut Endpoints,
    key: &Option<String>,
    j: bool,
    id: String,
    grace: Option<&str>,
    secret: Option<String>,
) -> anyhow::Result<()> {
    let grace = grace
        .map(herald_core::schedule::parse_duration)
        .transpose()?
        .map(|g| g.as_secs().min(u64::from(u32::MAX)) as u32);
    let r = c
        .rotate_secret(authed(
            pb::RotateSecretRequest {
                endpoint_id: id.clone(),
                grace_period_seconds: grace,
                secret,
            },
            key,
            "api key",
        )?)
        .await?
        .into_inner();
    print(
        j,
        &[
            json!({"id": id, "secret": r.secret, "previous_expires_at": output::time(&r.previous_expires_at)}),
        ],
        &["id", "secret", "previous_expires_at"],
    );
    Ok(())
}

pub async fn test_filter(
    c: &mut Endpoints,
    key: &Option<String>,
    j: bool,
    filter: String,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    let r = c
        .test_filter(authed(
            pb::TestFilterRequest { filter, payload },
            key,
            "api key",
        )?)
        .await?
        .into_inner();
    print(
        j,
        &[json!({"matches": r.matches, "explanation": r.explanation})],
        &["matches", "explanation"],
    );
    Ok(())
}

pub async fn update_event_type(
    c: &mut EventTypes,
    key: &Option<String>,
    name: String,
    description: Option<String>,
    group: Option<String>,
    archived: Option<bool>,
) -> anyhow::Result<pb::EventType> {
    Ok(c.update_event_type(authed(
        pb::UpdateEventTypeRequest {
            name,
            description,
            group,
            archived,
        },
        key,
        "api key",
    )?)
    .await?
    .into_inner())
}

/// Every event type of the tenant (archived ones when `include_archived`), page after page:
/// a tenant holds at most `HERALD_MAX_EVENT_TYPES_PER_TENANT` of them.
pub async fn list_event_types(
    c: &mut EventTypes,
    key: &Option<String>,
    include_archived: bool,
    group: Option<String>,
) -> anyhow::Result<Vec<pb::EventType>> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = c
            .list_event_types(authed(
                pb::ListEventTypesRequest {
                    include_archived,
                    group: group.clone(),
                    page_size: 500,
                    cursor,
                },
                key,
                "api key",
            )?)
            .await?
            .into_inner();
        all.extend(page.event_types);
        if page.next_cursor.is_empty() {
            return Ok(all);
        }
        cursor = page.next_cursor;
    }
}

pub async fn activity(
    c: &mut Deliveries,
    key: &Option<String>,
    j: bool,
    limit: u32,
) -> anyhow::Result<()> {
    let r = c
        .list_recent_activity(authed(
            pb::ListRecentActivityRequest { limit },
            key,
            "api key",
        )?)
        .await?
        .into_inner();
    let rows: Vec<_> = r
        .items
        .iter()
        .map(|i| {
            json!({
                "delivery_id": i.delivery_id, "event_id": i.event_id, "event_type": i.event_type,
                "endpoint_id": i.endpoint_id, "endpoint_url": i.endpoint_url,
                "status": output::status(i.status), "response_status": i.response_status,
                "attempt_count": i.attempt_count, "at": output::time(&i.at), "test": i.test,
            })
        })
        .collect();
    print(
        j,
        &rows,
        &[
            "at",
            "event_type",
            "endpoint_url",
            "status",
            "response_status",
            "delivery_id",
        ],
    );
    Ok(())
}

pub async fn redeliver(
    c: &mut Deliveries,
    key: &Option<String>,
    j: bool,
    id: String,
) -> anyhow::Result<()> {
    let r = c
        .redeliver(authed(
            pb::RedeliverRequest { delivery_id: id },
            key,
            "api key",
        )?)
        .await?
        .into_inner();
    print(
        j,
        &[json!({"delivery_id": r.delivery_id, "attempt": r.attempt, "queued": true})],
        &["delivery_id", "attempt", "queued"],
    );
    Ok(())
}

pub async fn replay(
    c: &mut Deliveries,
    key: &Option<String>,
    j: bool,
    req: pb::ReplayEndpointRequest,
) -> anyhow::Result<()> {
    let r = c
        .replay_endpoint(authed(req, key, "api key")?)
        .await?
        .into_inner();
    print(
        j,
        &[
            json!({"queued": r.queued, "skipped": r.skipped, "truncated": r.truncated,
                "last_delivery_id": r.last_delivery_id, "last_created_at": output::time(&r.last_created_at)}),
        ],
        &[
            "queued",
            "skipped",
            "truncated",
            "last_delivery_id",
            "last_created_at",
        ],
    );
    Ok(())
}
