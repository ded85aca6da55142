//! Deliveries: the recent-activity table, the delivery log (filters by status, event type,
//! endpoint and time range; keyset pagination through the ledger's cursor), a delivery's page
//! (payload pretty-printed, every attempt) and redeliver. Response bodies are receivers' text:
//! shown in `<pre>` as text, never as markup.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect};
use herald_proto::v1 as pb;
use maud::{Markup, html};

use super::session::PortalForm;
use super::{DELIVERIES_RESEND, Session, csrf};
use crate::error::{PageError, PageResult};
use crate::form::{Fields, query};
use crate::{Console, format};

/// At most `n` characters of `text`, with an ellipsis when cut.
fn excerpt(text: &str, n: usize) -> String {
    let mut out: String = text.chars().take(n).collect();
    if text.chars().nth(n).is_some() {
        out.push('…');
    }
    out
}

/// The recent-activity table of the front page.
pub fn activity_table(items: &[pb::ActivityItem]) -> Markup {
    html! {
        @if items.is_empty() {
            p class="muted" data-testid="no-activity" { "No deliveries yet." }
        } @else {
            div class="table-wrap" {
                table data-testid="activity" {
                    thead { tr { th { "When" } th { "Status" } th { "Event type" } th class="wide" { "Endpoint" } th { "HTTP" } th class="wide" { "Attempts" } } }
                    tbody {
                        @for i in items {
                            tr data-testid="activity-row" data-delivery-id=(i.delivery_id) {
                                td { a href=(format!("/portal/deliveries/{}", i.delivery_id)) { (format::time(i.at.as_ref())) } }
                                td { (format::badge(i.status)) @if i.test { " " span class="muted" { "test" } } }
                                td { code { (i.event_type) } }
                                td class="wide url" { @if i.endpoint_url.is_empty() { span class="muted" { "(deleted)" } } @else { (i.endpoint_url) } }
                                td { (format::code(i.response_status)) }
                                td class="wide" { (i.attempt_count) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The log's filters as typed, and the request they make.
fn filters(q: &Fields) -> Result<pb::ListDeliveriesRequest, PageError> {
    let time = |name: &str| {
        q.get(name)
            .map(format::parse_local_time)
            .transpose()
            .map_err(PageError::BadRequest)
    };
    Ok(pb::ListDeliveriesRequest {
        endpoint_id: q.get("endpoint_id").map(str::to_owned),
        event_id: q.get("event_id").map(str::to_owned),
        status: q
            .get("status")
            .and_then(format::parse_status)
            .map_or(0, |s| s as i32),
        event_type: q.get("event_type").map(str::to_owned),
        page_size: 50,
        cursor: q.get("cursor").unwrap_or_default().to_owned(),
        since: time("since")?,
        until: time("until")?,
    })
}

/// `GET /portal/deliveries`: the log.
pub async fn log(
    State(state): State<Console>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let q = Fields::from_query(raw.as_deref());
    let req = filters(&q)?;
    let list_endpoints = session.call(pb::ListEndpointsRequest {
        page_size: 500,
        cursor: String::new(),
    })?;
    let mut endpoints_client = state.clients.endpoints();
    let mut deliveries_client = state.clients.deliveries();
    let (endpoints, page) = tokio::join!(
        endpoints_client.list_endpoints(list_endpoints),
        deliveries_client.list_deliveries(session.call(req)?)
    );
    let page = page?.into_inner();
    let endpoints = endpoints
        .map(|r| r.into_inner().endpoints)
        .unwrap_or_default();
    let urls: HashMap<&str, &str> = endpoints
        .iter()
        .map(|e| (e.id.as_str(), e.url.as_str()))
        .collect();
    let keep = [
        "status",
        "event_type",
        "endpoint_id",
        "event_id",
        "since",
        "until",
    ];
    let mut next: Vec<(&str, &str)> = keep
        .iter()
        .map(|k| (*k, q.get(k).unwrap_or_default()))
        .collect();
    next.push(("cursor", &page.next_cursor));
    let content = html! {
        h1 { "Delivery log" }
        (filter_form(&q, &endpoints))
        @if page.deliveries.is_empty() {
            p class="muted" data-testid="no-deliveries" { "No deliveries match." }
        } @else {
            div class="table-wrap" {
                table data-testid="delivery-log" {
                    thead { tr { th { "Created" } th { "Status" } th { "Event type" } th class="wide" { "Endpoint" } th { "HTTP" } th class="wide" { "Attempts" } th class="wide" { "Response" } th class="wide" { "Next retry" } } }
                    tbody {
                        @for d in &page.deliveries { (row(d, &urls)) }
                    }
                }
            }
        }
        p class="pager" {
            @if q.get("cursor").is_some() {
                a href=(format!("/portal/deliveries?{}", query(&next[..next.len() - 1]))) data-testid="first-page" { "← Newest" }
            }
            @if !page.next_cursor.is_empty() {
                a href=(format!("/portal/deliveries?{}", query(&next))) rel="next" data-testid="next-page" { "Older →" }
            }
        }
    };
    Ok(super::page(&session, "/portal/deliveries", "Delivery log", content).into_response())
}

/// One delivery of the log.
fn row(d: &pb::Delivery, urls: &HashMap<&str, &str>) -> Markup {
    html! {
        tr data-testid="delivery-row" data-delivery-id=(d.id) {
            td { a href=(format!("/portal/deliveries/{}", d.id)) { (format::time(d.created_at.as_ref())) } }
            td { (format::badge(d.status)) @if d.test { " " span class="muted" { "test" } } }
            td { code { (d.event_type) } }
            td class="wide url" { (urls.get(d.endpoint_id.as_str()).copied().unwrap_or(d.endpoint_id.as_str())) }
            td data-testid="delivery-code" { (format::code(d.response_status)) }
            td class="wide" { (d.attempt_count) }
            td class="wide excerpt" {
                @if !d.last_error.is_empty() { span class="muted" { (excerpt(&d.last_error, 120)) } }
                @else { (excerpt(&d.response_body, 120)) }
            }
            td class="wide" { @if d.next_retry_at.is_some() { (format::time(d.next_retry_at.as_ref())) } }
        }
    }
}

/// The filter form of the log (a GET form: the filters are in the link).
fn filter_form(q: &Fields, endpoints: &[pb::Endpoint]) -> Markup {
    let status = q.get("status").unwrap_or_default();
    let endpoint = q.get("endpoint_id").unwrap_or_default();
    html! {
        form method="get" action="/portal/deliveries" class="filters" data-testid="log-filters" {
            div { label for="status" { "Status" }
                select id="status" name="status" {
                    option value="" { "any" }
                    @for s in ["success", "failed", "retrying", "pending"] { option value=(s) selected[s == status] { (s) } }
                }
            }
            div { label for="event_type" { "Event type" } input type="text" id="event_type" name="event_type" value=(q.get("event_type").unwrap_or_default()); }
            div { label for="endpoint_id" { "Endpoint" }
                select id="endpoint_id" name="endpoint_id" {
                    option value="" { "any" }
                    @for e in endpoints { option value=(e.id) selected[e.id == endpoint] { (excerpt(&e.url, 60)) } }
                }
            }
            div { label for="since" { "Since (UTC)" } input type="datetime-local" id="since" name="since" value=(q.get("since").unwrap_or_default()); }
            div { label for="until" { "Until (UTC)" } input type="datetime-local" id="until" name="until" value=(q.get("until").unwrap_or_default()); }
            div { button type="submit" id="apply-filters" { "Filter" } }
            div { a href="/portal/deliveries" { "Clear" } }
        }
    }
}

/// `GET /portal/deliveries/{id}`: the delivery, its payload and every attempt.
pub async fn page(
    State(state): State<Console>,
    session: Session,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let q = Fields::from_query(raw.as_deref());
    let req = pb::GetDeliveryRequest {
        id: id.clone(),
        attempts_page_size: 100,
        attempts_cursor: q.get("attempts").unwrap_or_default().to_owned(),
    };
    let r = state
        .clients
        .deliveries()
        .get_delivery(session.call(req)?)
        .await?
        .into_inner();
    let d = r.delivery.unwrap_or_default();
    let endpoint_url = endpoint_url(&state, &session, &d.endpoint_id).await;
    let content = html! {
        p { a href="/portal/deliveries" { "← Delivery log" } }
        h1 { "Delivery " code { (d.id) } }
        @if let Some(n) = q.get("redelivered") {
            p class="notice ok" role="status" data-testid="notice" { "Attempt " (n) " was queued." }
        }
        dl class="stats" data-testid="delivery" {
            div { dt { "Status" } dd { (format::badge(d.status)) @if d.test { " test" } } }
            div { dt { "Event type" } dd { code { (d.event_type) } } }
            div { dt { "Endpoint" } dd class="url" {
                @match endpoint_url {
                    Some(url) => a href=(format!("/portal/endpoints/{}", d.endpoint_id)) data-testid="delivery-endpoint" { (url) },
                    None if !session.can(super::ENDPOINTS_READ) => code { (d.endpoint_id) },
                    None => span class="muted" { "(deleted)" },
                }
            } }
            div { dt { "Created" } dd { (format::time(d.created_at.as_ref())) } }
            div { dt { "Last attempt" } dd { (format::time(d.last_attempt_at.as_ref())) } }
            div { dt { "Next retry" } dd { (format::time(d.next_retry_at.as_ref())) } }
            div { dt { "Attempts" } dd { (d.attempt_count) } }
            div { dt { "Event id" } dd { code { (d.event_id) } } }
        }
        @if session.can(DELIVERIES_RESEND) {
            form method="post" action=(format!("/portal/deliveries/{}/redeliver", d.id)) {
                (csrf(&session))
                button type="submit" id="redeliver" data-testid="redeliver" { "Redeliver now" }
            }
        }
        h2 { "Payload" }
        @if r.payload_available {
            pre data-testid="payload" { (format::pretty_json(&r.payload)) }
        } @else {
            p class="muted" data-testid="payload-missing" { "The payload is not available (payloads are kept for a limited time)." }
        }
        h2 { "Attempts" }
        (attempts(&r.attempts))
        @if !r.next_attempts_cursor.is_empty() {
            p class="pager" { a href=(format!("/portal/deliveries/{}?{}", d.id, query(&[("attempts", &r.next_attempts_cursor)]))) rel="next" { "Later attempts →" } }
        }
    };
    Ok(super::page(&session, "/portal/deliveries", "Delivery", content).into_response())
}

/// The URL of the delivery's endpoint; `None` when it was deleted (or may not be read).
async fn endpoint_url(state: &Console, session: &Session, id: &str) -> Option<String> {
    if !session.can(super::ENDPOINTS_READ) {
        return None;
    }
    let req = session
        .call(pb::GetEndpointRequest { id: id.to_owned() })
        .ok()?;
    let e = state.clients.endpoints().get_endpoint(req).await.ok()?;
    Some(e.into_inner().url)
}

/// Every attempt: trigger, time, outcome, code, latency, response excerpt, error.
fn attempts(list: &[pb::Attempt]) -> Markup {
    html! {
        @if list.is_empty() { p class="muted" { "No attempt yet." } }
        @for a in list {
            section class="panel" data-testid="attempt" data-attempt=(a.attempt) {
                h3 { "Attempt " (a.attempt) " · " (a.trigger) " · " (format::time(a.started_at.as_ref())) }
                dl class="stats" {
                    div { dt { "Outcome" } dd { (format::badge(a.status)) } }
                    div { dt { "HTTP status" } dd data-testid="attempt-code" { (format::code(a.response_status)) } }
                    div { dt { "Latency" } dd { (a.latency_ms) " ms" } }
                    @if !a.error.is_empty() { div { dt { "Error" } dd data-testid="attempt-error" { (a.error) } } }
                }
                @if !a.response_body.is_empty() {
                    pre data-testid="response-body" { (a.response_body) }
                }
            }
        }
    }
}

/// `POST /portal/deliveries/{id}/redeliver`.
pub async fn redeliver(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: PortalForm,
) -> PageResult {
    let req = form.session.call(pb::RedeliverRequest {
        delivery_id: id.clone(),
    })?;
    let r = state
        .clients
        .deliveries()
        .redeliver(req)
        .await?
        .into_inner();
    let to = format!(
        "/portal/deliveries/{id}?{}",
        query(&[("redelivered", &r.attempt.to_string())])
    );
    Ok(Redirect::to(&to).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_response_body_is_shown_as_text() {
        let attempt = pb::Attempt {
            attempt: 1,
            trigger: "scheduled".into(),
            response_status: 200,
            response_body: "<script>alert('x')</script>".into(),
            error: "<img src=x onerror=alert(1)>".into(),
            ..Default::default()
        };
        let html = attempts(&[attempt]).into_string();
        assert!(
            html.contains(
                "<pre data-testid=\"response-body\">&lt;script&gt;alert('x')&lt;/script&gt;</pre>"
            ),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
    }

    #[test]
    fn the_log_filters_become_the_ledger_request() {
        let q = Fields::from_query(Some(
            "status=failed&event_type=order.created&endpoint_id=e1&since=2026-12-01T10%3A00&until=&cursor=c1",
        ));
        let r = filters(&q).unwrap();
        assert_eq!(r.status, pb::DeliveryStatus::Failed as i32);
        assert_eq!(r.event_type.as_deref(), Some("order.created"));
        assert_eq!(r.endpoint_id.as_deref(), Some("e1"));
        assert_eq!(r.since.unwrap().seconds, 1_796_119_200);
        assert!(r.until.is_none());
        assert_eq!(r.cursor, "c1");
        assert_eq!(r.page_size, 50);
        let any = filters(&Fields::from_query(Some("status="))).unwrap();
        assert_eq!(any.status, 0);
        assert!(any.endpoint_id.is_none() && any.event_type.is_none());
        // The form shows the filters it was sent with.
        let endpoints = [pb::Endpoint {
            id: "e1".into(),
            url: "https://x.example/h".into(),
            ..Default::default()
        }];
        let form = filter_form(&q, &endpoints).into_string();
        assert!(
            form.contains("<option value=\"failed\" selected>failed</option>"),
            "{form}"
        );
        assert!(
            form.contains("<option value=\"e1\" selected>https://x.example/h</option>"),
            "{form}"
        );
        assert!(
            form.contains("id=\"since\" name=\"since\" value=\"2026-12-01T10:00\""),
            "{form}"
        );
        let bad = filters(&Fields::from_query(Some("since=yesterday"))).unwrap_err();
        assert!(bad.to_string().contains("yesterday"), "{bad}");
    }

    #[test]
    fn log_rows_escape_receiver_text_and_cut_long_bodies() {
        let d = pb::Delivery {
            id: "d1".into(),
            endpoint_id: "e1".into(),
            event_type: "a.b".into(),
            response_body: format!("<b>{}</b>", "x".repeat(300)),
            ..Default::default()
        };
        let urls = HashMap::from([("e1", "https://x.example/?a=<i>")]);
        let html = row(&d, &urls).into_string();
        assert!(
            html.contains("data-testid=\"delivery-row\" data-delivery-id=\"d1\""),
            "{html}"
        );
        assert!(html.contains("https://x.example/?a=&lt;i&gt;"), "{html}");
        assert!(html.contains("&lt;b&gt;xxx"), "{html}");
        assert!(html.contains('…'), "{html}");
        assert!(!html.contains("<b>") && !html.contains("<i>"), "{html}");
    }
}
