//! Dead letters: the list (by tenant, replayed ones optionally), one letter's headers and body,
//! and replay of the ones picked (`Operations.ReplayDeadLetters`, the code behind
//! `herald-ledger dead-letters replay`).

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect};
use herald_proto::v1 as pb;
use maud::html;

use super::csrf;
use super::session::{Operator, OperatorForm};
use crate::error::{PageError, PageResult};
use crate::form::{Fields, query};
use crate::{Console, format};

/// `GET /console/dead-letters` (`tenant_id`, `include_replayed`, `cursor`).
pub async fn list(
    State(state): State<Console>,
    op: Operator,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let q = Fields::from_query(raw.as_deref());
    let req = pb::ListDeadLettersRequest {
        tenant_id: q.get("tenant_id").map(str::to_owned),
        include_replayed: q.checked("include_replayed"),
        page_size: 50,
        cursor: q.get("cursor").unwrap_or_default().to_owned(),
    };
    let r = state
        .clients
        .operations()
        .list_dead_letters(op.call(req)?)
        .await?
        .into_inner();
    let next = query(&[
        ("tenant_id", q.get("tenant_id").unwrap_or_default()),
        (
            "include_replayed",
            if q.checked("include_replayed") {
                "true"
            } else {
                ""
            },
        ),
        ("cursor", &r.next_cursor),
    ]);
    let content = html! {
        h1 { "Dead letters" }
        @if let Some(n) = q.get("replayed") {
            p class="notice ok" role="status" data-testid="notice" { (n) " replayed, " (q.get("skipped").unwrap_or("0")) " skipped." }
        }
        form method="get" action="/console/dead-letters" class="filters" {
            div { label for="tenant_id" { "Tenant id" } input type="text" id="tenant_id" name="tenant_id" value=(q.get("tenant_id").unwrap_or_default()); }
            div { input type="checkbox" id="include_replayed" name="include_replayed" value="true" checked[q.checked("include_replayed")]; label class="inline" for="include_replayed" { "Replayed too" } }
            div { button type="submit" id="apply-filters" { "Filter" } }
        }
        @if r.dead_letters.is_empty() { p class="muted" data-testid="no-dead-letters" { "No dead letters." } }
        @else {
            form method="post" action="/console/dead-letters/replay" {
                (csrf(&op))
                div class="table-wrap" {
                    table data-testid="dead-letters" {
                        thead { tr { th { span class="muted" { "Pick" } } th { "When" } th { "Queue" } th { "Reason" } th class="wide" { "Tenant" } th class="wide" { "Error" } th { "Replayed" } } }
                        tbody {
                            @for d in &r.dead_letters {
                                tr data-testid="dead-letter-row" data-dead-letter-id=(d.id) {
                                    td { input type="checkbox" name="ids" value=(d.id) id=(format!("dl-{}", d.id)) aria-label=(format!("Pick dead letter {}", d.id)); }
                                    td { a href=(format!("/console/dead-letters/{}", d.id)) { (format::time(d.dead_lettered_at.as_ref())) } }
                                    td { code { (d.queue) } }
                                    td { (d.reason) }
                                    td class="wide" { code { (d.tenant_id) } }
                                    td class="wide excerpt" { (d.error) }
                                    td { @if d.replayed_at.is_some() { (format::time(d.replayed_at.as_ref())) } @else { "no" } }
                                }
                            }
                        }
                    }
                }
                p { button type="submit" id="replay-selected" { "Replay selected" } }
            }
        }
        @if !r.next_cursor.is_empty() {
            p class="pager" { a href=(format!("/console/dead-letters?{next}")) rel="next" { "Older →" } }
        }
    };
    Ok(super::page(&op, "/console/dead-letters", "Dead letters", content).into_response())
}

/// `GET /console/dead-letters/{id}`.
pub async fn page(
    State(state): State<Console>,
    op: Operator,
    Path(id): Path<String>,
) -> PageResult {
    let d = state
        .clients
        .operations()
        .get_dead_letter(op.call(pb::GetDeadLetterRequest { id })?)
        .await?
        .into_inner();
    let mut headers: Vec<(&String, &String)> = d.headers.iter().collect();
    headers.sort();
    let content = html! {
        p { a href="/console/dead-letters" { "← Dead letters" } }
        h1 { "Dead letter " code { (d.id) } }
        dl class="stats" data-testid="dead-letter" {
            div { dt { "Queue" } dd { code { (d.queue) } } }
            div { dt { "Reason" } dd { (d.reason) } }
            div { dt { "Dead since" } dd { (format::time(d.dead_lettered_at.as_ref())) } }
            div { dt { "Replayed" } dd { (format::time(d.replayed_at.as_ref())) } }
            div { dt { "Tenant" } dd { code { (d.tenant_id) } } }
            div { dt { "Delivery" } dd { code { (d.delivery_id) } } }
            div { dt { "Endpoint" } dd { code { (d.endpoint_id) } } }
            div { dt { "Event" } dd { code { (d.event_id) } } }
        }
        @if !d.error.is_empty() { h2 { "Error" } pre { (d.error) } }
        @if d.replayed_at.is_none() {
            form method="post" action="/console/dead-letters/replay" {
                (csrf(&op))
                input type="hidden" name="ids" value=(d.id);
                button type="submit" id="replay" { "Replay" }
            }
        }
        h2 { "Headers" }
        ul { @for (k, v) in headers { li { code { (k) ": " (v) } } } }
        h2 { "Body (" (d.body_bytes) " bytes)" }
        pre data-testid="dead-letter-body" { (format::pretty_json(&d.body)) }
    };
    Ok(super::page(&op, "/console/dead-letters", "Dead letter", content).into_response())
}

/// `POST /console/dead-letters/replay` (`ids`…).
pub async fn replay(State(state): State<Console>, form: OperatorForm) -> PageResult {
    let ids: Vec<String> = form
        .fields
        .all("ids")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Err(PageError::BadRequest(
            "Pick at least one dead letter to replay.".into(),
        ));
    }
    let req = form.operator.call(pb::ReplayDeadLettersRequest { ids })?;
    let r = state
        .clients
        .operations()
        .replay_dead_letters(req)
        .await?
        .into_inner();
    let to = format!(
        "/console/dead-letters?{}",
        query(&[
            ("replayed", &r.replayed.to_string()),
            ("skipped", &r.skipped.to_string())
        ])
    );
    Ok(Redirect::to(&to).into_response())
}
