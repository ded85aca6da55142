//! The endpoint cards (the portal's front page, with recent activity) and an endpoint's page:
//! details, statistics, 24 h and 7 d charts, and its actions — on/off, test send (result shown
//! inline), delete with a confirmation page, reveal and rotate the secret, replay.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use herald_proto::v1 as pb;
use maud::{Markup, html};

use super::session::PortalForm;
use super::{
    DELIVERIES_READ, DELIVERIES_RESEND, ENDPOINTS_READ, ENDPOINTS_WRITE, SECRETS_READ, Session,
    csrf,
};
use crate::error::{PageError, PageResult};
use crate::form::{Fields, query};
use crate::{Console, charts, format};

/// `GET /portal/`: the endpoint cards and the last 10 deliveries.
pub async fn overview(
    State(state): State<Console>,
    session: Session,
    RawQuery(q): RawQuery,
) -> PageResult {
    let q = Fields::from_query(q.as_deref());
    let list = if session.can(ENDPOINTS_READ) {
        let req = pb::ListEndpointsRequest {
            page_size: 100,
            cursor: q.get("cursor").unwrap_or_default().to_owned(),
        };
        let mut client = state.clients.endpoints();
        client
            .list_endpoints(session.call(req)?)
            .await?
            .into_inner()
    } else {
        pb::ListEndpointsResponse::default()
    };
    let activity = if session.can(DELIVERIES_READ) {
        let req = session.call(pb::ListRecentActivityRequest { limit: 10 })?;
        let items = state.clients.deliveries().list_recent_activity(req).await;
        Some(items.map(|r| r.into_inner().items))
    } else {
        None
    };
    let content = html! {
        @if q.get("deleted").is_some() {
            p class="notice ok" role="status" data-testid="notice" { "The endpoint was deleted." }
        }
        div class="actions" {
            h1 { "Endpoints" }
            @if session.can(ENDPOINTS_WRITE) {
                a class="button" href="/portal/endpoints/new" id="add-endpoint" data-testid="add-endpoint" { "Add endpoint" }
            }
        }
        @if !session.can(ENDPOINTS_READ) {
            p class="muted" { "This session may not see the endpoints." }
        } @else if list.endpoints.is_empty() {
            p class="muted" data-testid="no-endpoints" { "No endpoints yet." }
        }
        div class="cards" {
            @for e in &list.endpoints { (card(&session, e)) }
        }
        @if !list.next_cursor.is_empty() {
            p class="pager" { a href=(format!("/portal/?{}", query(&[("cursor", &list.next_cursor)]))) rel="next" { "More endpoints →" } }
        }
        @if let Some(activity) = activity {
            h2 id="activity" { "Recent activity" }
            @match activity {
                Ok(items) => (super::deliveries::activity_table(&items)),
                Err(s) => p class="notice bad" { "The activity could not be loaded: " (s.message()) },
            }
        }
    };
    Ok(super::page(&session, "/portal/", "Endpoints", content).into_response())
}

/// What dispatchers are doing with `e`, and why.
fn state_line(e: &pb::Endpoint) -> Markup {
    let state = if e.delivery_state.is_empty() {
        if e.enabled { "healthy" } else { "disabled" }
    } else {
        e.delivery_state.as_str()
    };
    let class = state.split(':').next().unwrap_or("unknown");
    html! {
        span class=(format!("state {class}")) data-testid="delivery-state" {
            @if !e.enabled && !e.disabled_reason.is_empty() {
                "auto-disabled: " (e.disabled_reason)
            } @else if !e.enabled {
                "off"
            } @else {
                (state)
                @if e.in_flight_cap > 0 { " (" (e.in_flight_cap) " at once since " (format::time(e.throttled_since.as_ref())) ")" }
                @if e.paced_attempts_per_second > 0 {
                    " · attempts slowed to " (e.paced_attempts_per_second) " a second until it answers"
                }
            }
        }
        @if e.consecutive_failures > 0 {
            span class="muted" { " · " (e.consecutive_failures) " failed in a row" }
        }
    }
}

/// Success rate, p50/p95, last status, totals.
fn stats(e: &pb::Endpoint) -> Markup {
    let s = e.stats.unwrap_or_default();
    html! {
        dl class="stats" {
            div { dt { "Last status" } dd { (format::badge(s.last_status)) } }
            div { dt { "Deliveries" } dd data-testid="total-deliveries" { (s.total_deliveries) } }
            div { dt { "Last delivery" } dd { (format::time(s.last_delivery_at.as_ref())) } }
            div { dt { "Success (" (s.window_hours) " h)" } dd data-testid="success-rate" {
                @if s.window_attempts == 0 { "—" } @else { (format!("{:.1} %", s.success_rate * 100.0)) }
            } }
            div { dt { "p50 / p95" } dd {
                @if s.window_attempts == 0 { "—" } @else { (s.p50_latency_ms) " / " (s.p95_latency_ms) " ms" }
            } }
        }
    }
}

/// The on/off, test and delete controls of an endpoint; `back` is where the toggle returns.
fn controls(session: &Session, e: &pb::Endpoint, back: &str) -> Markup {
    let base = format!("/portal/endpoints/{}", e.id);
    html! {
        div class="actions" {
            @if session.can(ENDPOINTS_WRITE) {
                form method="post" action=(format!("{base}/toggle")) {
                    (csrf(session))
                    input type="hidden" name="enabled" value=(if e.enabled { "false" } else { "true" });
                    input type="hidden" name="back" value=(back);
                    button type="submit" class="secondary" data-testid="toggle" aria-pressed=(e.enabled) {
                        @if e.enabled { "Turn off" } @else { "Turn on" }
                    }
                }
            }
            @if session.can(DELIVERIES_RESEND) {
                form method="post" action=(format!("{base}/test")) {
                    (csrf(session))
                    button type="submit" data-testid="send-test" { "Send test" }
                }
            }
            @if session.can(ENDPOINTS_WRITE) {
                a class="button secondary" href=(format!("{base}/edit")) data-testid="edit" { "Edit" }
                a class="button secondary" href=(format!("{base}/delete")) data-testid="delete" { "Delete…" }
            }
        }
    }
}

/// One endpoint card.
fn card(session: &Session, e: &pb::Endpoint) -> Markup {
    html! {
        article class="card" data-testid="endpoint-card" data-endpoint-id=(e.id) {
            h3 { a class="url" href=(format!("/portal/endpoints/{}", e.id)) data-testid="endpoint-url" { (e.url) } }
            @if !e.description.is_empty() { p class="muted" { (e.description) } }
            ul class="tags" aria-label="Event types" {
                @for t in &e.event_types { li class="tag" { (t) } }
            }
            p { (state_line(e)) }
            (stats(e))
            (controls(session, e, "/portal/"))
        }
    }
}

/// `GET /portal/endpoints/{id}`.
pub async fn page(
    State(state): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> PageResult {
    render(&state, &session, &id, None).await
}

/// An endpoint's page with `result` (of an action just taken) at its top.
async fn render(
    state: &Console,
    session: &Session,
    id: &str,
    result: Option<Markup>,
) -> PageResult {
    let req = session.call(pb::GetEndpointRequest { id: id.to_owned() })?;
    let e = state
        .clients
        .endpoints()
        .get_endpoint(req)
        .await?
        .into_inner();
    let charts = if session.can(DELIVERIES_READ) {
        Some(series_charts(state, session, id).await)
    } else {
        None
    };
    let content = html! {
        p { a href="/portal/" { "← Endpoints" } }
        h1 class="url" data-testid="endpoint-url" { (e.url) }
        @if let Some(result) = result { (result) }
        @if !e.description.is_empty() { p { (e.description) } }
        p { (state_line(&e)) }
        (stats(&e))
        (controls(session, &e, &format!("/portal/endpoints/{}", e.id)))
        @if let Some(charts) = charts { (charts) }
        h2 { "Settings" }
        (settings(&e))
        @if session.can(DELIVERIES_READ) {
            p { a href=(format!("/portal/deliveries?{}", query(&[("endpoint_id", &e.id)]))) data-testid="endpoint-deliveries" { "Deliveries of this endpoint →" } }
        }
        (secret_section(session, &e))
        @if session.can(DELIVERIES_RESEND) { (replay_form(session, &e.id, None)) }
    };
    Ok(super::page(session, "/portal/", "Endpoint", content).into_response())
}

/// The endpoint's settings as a definition list.
fn settings(e: &pb::Endpoint) -> Markup {
    let scheme = match pb::SigningScheme::try_from(e.signing_scheme) {
        Ok(pb::SigningScheme::Timestamped) => "timestamped",
        Ok(pb::SigningScheme::Hex) => "hex",
        _ => "standard",
    };
    let schedule: Vec<String> = e
        .retry_schedule_ms
        .iter()
        .map(|d| format::duration_ms(u64::from(*d)))
        .collect();
    let mut headers: Vec<(&String, &String)> = e.headers.iter().collect();
    headers.sort();
    html! {
        dl class="stats" {
            div { dt { "Event types" } dd { ul class="tags" { @for t in &e.event_types { li class="tag" { (t) } } } } }
            div { dt { "Signing" } dd { (scheme) } }
            div { dt { "Timeout" } dd { (format::duration_ms(u64::from(e.timeout_ms))) } }
            div { dt { "Retries" } dd {
                @if e.no_retries { "none" } @else { (schedule.join(", ")) @if e.retry_schedule_is_default { " (default)" } }
            } }
            div { dt { "Rate limit" } dd { @if e.rate_limit_per_second == 0 { "unlimited" } @else { (e.rate_limit_per_second) " / s" } } }
            div { dt { "Created" } dd { (format::time(e.created_at.as_ref())) } }
        }
        @if !headers.is_empty() {
            h3 { "Headers" }
            ul { @for (k, v) in headers { li { code { (k) ": " (v) } } } }
        }
        @if !e.filter.is_empty() {
            h3 { "Filter" }
            pre { (e.filter) }
        }
    }
}

/// The 24 h and 7 d charts (or why they are missing: the rest of the page still shows).
async fn series_charts(state: &Console, session: &Session, id: &str) -> Markup {
    let fetch = |hours: u32| {
        let req = session.call(pb::GetEndpointStatsSeriesRequest {
            endpoint_id: id.to_owned(),
            hours,
        });
        let mut client = state.clients.deliveries();
        async move {
            client
                .get_endpoint_stats_series(req?)
                .await
                .map(|r| r.into_inner().points)
                .map_err(PageError::from)
        }
    };
    let (day, week) = tokio::join!(fetch(24), fetch(168));
    let block = |label: &str, key: &str, points: Result<Vec<pb::StatsPoint>, PageError>| {
        match points {
            Ok(points) => html! {
                div {
                    h3 { "Success rate, " (label) }
                    (charts::success_rate(&format!("chart-success-{key}"), &format!("Success rate per hour, last {label}"), &points))
                    h3 { "Latency, " (label) }
                    (charts::latency(&format!("chart-latency-{key}"), &format!("p50 and p95 latency per hour, last {label}"), &points))
                    p class="legend" { span class="k50" { "— p50" } " " span class="k95" { "— p95" } }
                }
            },
            Err(e) => {
                html! { p class="notice bad" { "The " (label) " statistics could not be loaded: " (e.to_string()) } }
            }
        }
    };
    html! {
        h2 { "Monitoring" }
        div class="charts" { (block("24 h", "24h", day)) (block("7 days", "7d", week)) }
    }
}

/// The secret: hidden until revealed (a POST), and rotation with a grace period.
fn secret_section(session: &Session, e: &pb::Endpoint) -> Markup {
    let base = format!("/portal/endpoints/{}", e.id);
    html! {
        @if session.can(SECRETS_READ) || session.can(ENDPOINTS_WRITE) {
            h2 { "Signing secret" }
        }
        @if session.can(SECRETS_READ) {
            form method="post" action=(format!("{base}/secret")) {
                (csrf(session))
                p { span class="secret" { "••••••••••••" } " " button type="submit" class="secondary" id="reveal-secret" { "Reveal secret" } }
            }
        }
        @if session.can(ENDPOINTS_WRITE) {
            form method="post" action=(format!("{base}/rotate")) {
                (csrf(session))
                label for="grace_period_hours" { "Grace period (hours)" }
                p class="hint" id="grace-hint" { "How long the old secret keeps signing too (0–168). Hex endpoints: 0." }
                input type="number" id="grace_period_hours" name="grace_period_hours" min="0" max="168" value="24" aria-describedby="grace-hint";
                p { button type="submit" class="secondary" id="rotate-secret" { "Rotate secret" } }
            }
        }
    }
}

/// The replay form (`after` continues a truncated replay).
fn replay_form(session: &Session, id: &str, after: Option<(&str, &Fields)>) -> Markup {
    let (after_id, f) = after.map_or(("", None), |(a, f)| (a, Some(f)));
    let value = |name: &str| f.and_then(|f| f.get(name)).unwrap_or_default().to_owned();
    let status = f
        .and_then(|f| f.get("status"))
        .unwrap_or("failed")
        .to_owned();
    html! {
        h2 { "Replay" }
        form method="post" action=(format!("/portal/endpoints/{id}/replay")) class="filters" {
            (csrf(session))
            @if !after_id.is_empty() { input type="hidden" name="after_delivery_id" value=(after_id); }
            div { label for="replay_since" { "Since (UTC)" } input type="datetime-local" id="replay_since" name="since" required value=(value("since")); }
            div { label for="replay_until" { "Until (UTC)" } input type="datetime-local" id="replay_until" name="until" value=(value("until")); }
            div { label for="replay_status" { "Status" }
                select id="replay_status" name="status" {
                    @for s in ["failed", "success", "retrying", "pending"] {
                        option value=(s) selected[s == status] { (s) }
                    }
                }
            }
            div { button type="submit" id="replay" { @if after_id.is_empty() { "Replay deliveries" } @else { "Continue replay" } } }
        }
    }
}

/// Where a toggle may send the browser back to (only portal pages of this endpoint).
fn back_path(fields: &Fields, id: &str) -> String {
    let own = format!("/portal/endpoints/{id}");
    match fields.get("back") {
        Some(b) if b == own => own,
        _ => "/portal/".into(),
    }
}

/// `POST /portal/endpoints/{id}/toggle` (`enabled` = true|false).
pub async fn toggle(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: PortalForm,
) -> PageResult {
    let enabled = form.fields.get("enabled") == Some("true");
    let req = pb::UpdateEndpointRequest {
        id: id.clone(),
        enabled: Some(enabled),
        ..Default::default()
    };
    state
        .clients
        .endpoints()
        .update_endpoint(form.session.call(req)?)
        .await?;
    Ok(Redirect::to(&back_path(&form.fields, &id)).into_response())
}

/// `POST /portal/endpoints/{id}/test`: sends a test and shows its outcome on the endpoint page.
pub async fn send_test(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: PortalForm,
) -> PageResult {
    let req = pb::SendTestRequest {
        endpoint_id: id.clone(),
        ..Default::default()
    };
    let r = state
        .clients
        .endpoints()
        .send_test(form.session.call(req)?)
        .await?
        .into_inner();
    let result = html! {
        section class=(if r.success { "notice ok" } else { "notice bad" }) role="status" data-testid="test-result"
            data-success=(r.success) {
            h2 { "Test send " @if r.success { "succeeded" } @else { "failed" } }
            dl class="stats" {
                div { dt { "HTTP status" } dd data-testid="test-status" { (format::code(r.response_status)) } }
                div { dt { "Latency" } dd { (r.latency_ms) " ms" } }
                @if !r.error.is_empty() { div { dt { "Error" } dd data-testid="test-error" { (r.error) } } }
            }
            @if !r.response_body.is_empty() {
                h3 { "Response body" }
                pre data-testid="response-body" { (r.response_body) }
            }
            @if !r.delivery_id.is_empty() {
                p { a href=(format!("/portal/deliveries/{}", r.delivery_id)) { "Open the delivery" } }
            }
        }
    };
    render(&state, &form.session, &id, Some(result)).await
}

/// `POST /portal/endpoints/{id}/secret`: the page with the secret shown.
pub async fn reveal_secret(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: PortalForm,
) -> PageResult {
    let req = form
        .session
        .call(pb::GetEndpointSecretRequest { id: id.clone() })?;
    let secret = state
        .clients
        .endpoints()
        .get_endpoint_secret(req)
        .await?
        .into_inner()
        .secret;
    let shown = html! {
        section class="notice" data-testid="secret" {
            h2 { "Signing secret" }
            p class="secret" data-testid="secret-value" { (secret) }
        }
    };
    render(&state, &form.session, &id, Some(shown)).await
}

/// `POST /portal/endpoints/{id}/rotate` (`grace_period_hours`).
pub async fn rotate_secret(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: PortalForm,
) -> PageResult {
    let hours: Option<u32> = form
        .fields
        .number("grace_period_hours", "The grace period")
        .map_err(PageError::BadRequest)?;
    let req = pb::RotateSecretRequest {
        endpoint_id: id.clone(),
        grace_period_seconds: hours.map(|h| h.saturating_mul(3600)),
        secret: None,
    };
    let r = state
        .clients
        .endpoints()
        .rotate_secret(form.session.call(req)?)
        .await?
        .into_inner();
    let shown = html! {
        section class="notice ok" role="status" data-testid="rotated" {
            h2 { "New signing secret" }
            p class="secret" data-testid="secret-value" { (r.secret) }
            p { "The previous secret keeps signing until " (format::time(r.previous_expires_at.as_ref())) "." }
        }
    };
    render(&state, &form.session, &id, Some(shown)).await
}

/// `POST /portal/endpoints/{id}/replay` (`since`, `until`, `status`, `after_delivery_id`).
pub async fn replay(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: PortalForm,
) -> PageResult {
    let f = &form.fields;
    let since = f
        .get("since")
        .map(format::parse_local_time)
        .transpose()
        .map_err(PageError::BadRequest)?;
    let since = since.ok_or_else(|| PageError::BadRequest("Since is required".into()))?;
    let until = f
        .get("until")
        .map(format::parse_local_time)
        .transpose()
        .map_err(PageError::BadRequest)?;
    let status = format::parse_status(f.get("status").unwrap_or("failed"))
        .unwrap_or(pb::DeliveryStatus::Failed);
    let req = pb::ReplayEndpointRequest {
        endpoint_id: id.clone(),
        since: Some(since),
        until,
        status: status as i32,
        limit: 0,
        after_delivery_id: f.get("after_delivery_id").unwrap_or_default().to_owned(),
    };
    let r = state
        .clients
        .deliveries()
        .replay_endpoint(form.session.call(req)?)
        .await?
        .into_inner();
    let shown = html! {
        section class="notice ok" role="status" data-testid="replay-result" {
            h2 { "Replay" }
            p { strong data-testid="replay-queued" { (r.queued) } " queued, "
                strong data-testid="replay-skipped" { (r.skipped) } " skipped (payload no longer kept)." }
            @if r.truncated {
                p { "More deliveries matched: continue from the last one." }
                (replay_form(&form.session, &id, Some((&r.last_delivery_id, f))))
            }
        }
    };
    render(&state, &form.session, &id, Some(shown)).await
}

/// `GET /portal/endpoints/{id}/delete`: asks first.
pub async fn confirm_delete(
    State(state): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> PageResult {
    let req = session.call(pb::GetEndpointRequest { id: id.clone() })?;
    let e = state
        .clients
        .endpoints()
        .get_endpoint(req)
        .await?
        .into_inner();
    let content = html! {
        h1 { "Delete this endpoint?" }
        p class="url" data-testid="endpoint-url" { (e.url) }
        p { "Herald stops delivering to it at once. Its delivery log stays." }
        div class="actions" {
            form method="post" action=(format!("/portal/endpoints/{id}/delete")) {
                (csrf(&session))
                button type="submit" class="danger" id="confirm-delete" data-testid="confirm-delete" { "Delete endpoint" }
            }
            a class="button secondary" href=(format!("/portal/endpoints/{id}")) { "Cancel" }
        }
    };
    Ok(super::page(&session, "/portal/", "Delete endpoint", content).into_response())
}

/// `POST /portal/endpoints/{id}/delete`.
pub async fn delete(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: PortalForm,
) -> PageResult<Response> {
    let req = form.session.call(pb::DeleteEndpointRequest { id })?;
    state.clients.endpoints().delete_endpoint(req).await?;
    Ok(Redirect::to("/portal/?deleted=1").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portal::session::View;
    use crate::theme::Theme;

    fn session(scopes: &[&str]) -> Session {
        Session {
            token: "hs_x".into(),
            csrf: "c".into(),
            view: View {
                tenant_id: "t".into(),
                tenant_name: "T".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                expires_at: i64::MAX,
                theme: Theme::default(),
                origins: Vec::new(),
            },
        }
    }

    fn endpoint() -> pb::Endpoint {
        pb::Endpoint {
            id: "e1".into(),
            url: "https://x.example/<hook>".into(),
            description: "<script>d</script>".into(),
            event_types: vec!["order.*".into()],
            enabled: true,
            delivery_state: "healthy".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_card_shows_the_endpoint_as_text_and_the_controls_the_scopes_allow() {
        let html = card(
            &session(&["endpoints:read", "endpoints:write", "deliveries:resend"]),
            &endpoint(),
        )
        .into_string();
        assert!(
            html.contains("data-testid=\"endpoint-card\" data-endpoint-id=\"e1\""),
            "{html}"
        );
        assert!(html.contains("https://x.example/&lt;hook&gt;"), "{html}");
        assert!(html.contains("&lt;script&gt;d&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        for control in [
            "data-testid=\"toggle\"",
            "data-testid=\"send-test\"",
            "data-testid=\"delete\"",
            "data-testid=\"edit\"",
        ] {
            assert!(html.contains(control), "{control} missing: {html}");
        }
        assert!(html.contains(">Turn off<"), "{html}");

        let read_only = card(
            &session(&["endpoints:read", "deliveries:read"]),
            &endpoint(),
        )
        .into_string();
        for control in ["toggle", "send-test", "delete", "edit", "name=\"csrf\""] {
            assert!(
                !read_only.contains(control),
                "{control} shown read-only: {read_only}"
            );
        }
    }

    #[test]
    fn the_state_says_why_an_endpoint_is_off_or_slow() {
        let mut e = endpoint();
        e.enabled = false;
        e.disabled_reason = "410 Gone".into();
        e.delivery_state = "disabled".into();
        let html = state_line(&e).into_string();
        assert!(html.contains(">auto-disabled: 410 Gone<"), "{html}");

        e.disabled_reason.clear();
        assert!(state_line(&e).into_string().contains(">off<"));

        let mut e = endpoint();
        e.delivery_state = "throttled: timeouts".into();
        e.in_flight_cap = 2;
        e.consecutive_failures = 3;
        let html = state_line(&e).into_string();
        assert!(html.contains("class=\"state throttled\""), "{html}");
        assert!(
            html.contains("throttled: timeouts (2 at once since"),
            "{html}"
        );
        assert!(html.contains("3 failed in a row"), "{html}");
        assert!(!html.contains("slowed"), "{html}");

        e.delivery_state = "throttled: errors".into();
        e.paced_attempts_per_second = 100;
        let html = state_line(&e).into_string();
        assert!(
            html.contains("attempts slowed to 100 a second until it answers"),
            "{html}"
        );
    }
}
