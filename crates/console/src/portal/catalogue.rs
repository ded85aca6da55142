//! The event catalogue: the tenant's event types by group, with their descriptions.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use herald_proto::v1 as pb;
use maud::html;

use super::Session;
use crate::Console;
use crate::error::PageResult;
use crate::form::{Fields, query};

/// `GET /portal/event-types`.
pub async fn page(
    State(state): State<Console>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let q = Fields::from_query(raw.as_deref());
    let req = pb::ListEventTypesRequest {
        page_size: 500,
        cursor: q.get("cursor").unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let r = state
        .clients
        .event_types()
        .list_event_types(session.call(req)?)
        .await?
        .into_inner();
    let mut groups: BTreeMap<&str, Vec<&pb::EventType>> = BTreeMap::new();
    for t in &r.event_types {
        groups
            .entry(if t.group.is_empty() {
                "Other"
            } else {
                &t.group
            })
            .or_default()
            .push(t);
    }
    let content = html! {
        h1 { "Event types" }
        @if groups.is_empty() { p class="muted" { "No event types are described yet." } }
        @for (group, types) in &groups {
            section data-testid="event-group" {
                h2 { (group) }
                dl {
                    @for t in types {
                        dt data-testid="event-type" { code { (t.name) } }
                        dd { @if t.description.is_empty() { span class="muted" { "No description." } } @else { (t.description) } }
                    }
                }
            }
        }
        @if !r.next_cursor.is_empty() {
            p class="pager" { a href=(format!("/portal/event-types?{}", query(&[("cursor", &r.next_cursor)]))) rel="next" { "More →" } }
        }
    };
    Ok(super::page(&session, "/portal/event-types", "Event types", content).into_response())
}
