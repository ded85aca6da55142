//! Creating and editing an endpoint: one form (URL, description, event types picked from the
//! catalogue by group plus free patterns, payload filter with "try it", retry schedule,
//! timeout, headers, rate limit, signing scheme). "Try filter" posts the same form and answers
//! with it re-rendered, the typed values kept and `TestFilter`'s verdict beside the filter;
//! a value the server refuses comes back the same way with its message.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use herald_proto::v1 as pb;
use maud::{Markup, html};

use super::session::PortalForm;
use super::{ENDPOINTS_WRITE, Session, csrf};
use crate::Console;
use crate::error::{PageError, PageResult};
use crate::form::Fields;

/// The form's values as typed.
#[derive(Clone, Debug, Default)]
struct Draft {
    url: String,
    description: String,
    event_types: Vec<String>,
    filter: String,
    sample: String,
    retry_schedule: String,
    timeout_seconds: String,
    headers: String,
    rate_limit: String,
    signing_scheme: String,
    enabled: bool,
}

const SAMPLE: &str = "{\n  \"type\": \"invoice.paid\",\n  \"data\": {\"amount\": 120}\n}";

impl Draft {
    fn from_fields(f: &Fields) -> Self {
        let mut event_types: Vec<String> = f
            .all("event_types")
            .into_iter()
            .map(str::to_owned)
            .collect();
        for extra in f.raw("event_types_extra").split([',', '\n', ' ']) {
            let extra = extra.trim();
            if !extra.is_empty() && !event_types.iter().any(|t| t == extra) {
                event_types.push(extra.to_owned());
            }
        }
        Self {
            url: f.raw("url").trim().to_owned(),
            description: f.raw("description").trim().to_owned(),
            event_types,
            filter: f.raw("filter").trim().to_owned(),
            sample: f.raw("sample_payload").to_owned(),
            retry_schedule: f.raw("retry_schedule").trim().to_owned(),
            timeout_seconds: f.raw("timeout_seconds").trim().to_owned(),
            headers: f.raw("headers").to_owned(),
            rate_limit: f.raw("rate_limit_per_second").trim().to_owned(),
            signing_scheme: f.get("signing_scheme").unwrap_or("standard").to_owned(),
            enabled: f.checked("enabled"),
        }
    }

    fn from_endpoint(e: &pb::Endpoint) -> Self {
        let mut headers: Vec<String> = e.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        headers.sort();
        Self {
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.event_types.clone(),
            filter: e.filter.clone(),
            sample: SAMPLE.into(),
            retry_schedule: if e.no_retries {
                "none".into()
            } else if e.retry_schedule_is_default {
                String::new()
            } else {
                e.retry_schedule_ms
                    .iter()
                    .map(|d| ms_text(*d))
                    .collect::<Vec<_>>()
                    .join(",")
            },
            timeout_seconds: format!("{}", f64::from(e.timeout_ms) / 1000.0),
            headers: headers.join("\n"),
            rate_limit: if e.rate_limit_per_second == 0 {
                String::new()
            } else {
                e.rate_limit_per_second.to_string()
            },
            signing_scheme: match pb::SigningScheme::try_from(e.signing_scheme) {
                Ok(pb::SigningScheme::Timestamped) => "timestamped",
                Ok(pb::SigningScheme::Hex) => "hex",
                _ => "standard",
            }
            .into(),
            enabled: e.enabled,
        }
    }
}

/// A delay as the form shows it (`90s`, `5m`, `2h`, `250ms`).
fn ms_text(ms: u32) -> String {
    match ms {
        m if m % 3_600_000 == 0 && m > 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 && m > 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

/// `1m,5m,1h` as milliseconds; "none" is `None` (no retries); blank is the default (empty).
fn parse_schedule(text: &str) -> Result<Option<Vec<u32>>, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let delay = |part: &str| -> Result<u32, String> {
        let part = part.trim();
        let split = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        let (n, unit) = part.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("retry delay {part:?} is not like 30s, 5m or 1h"))?;
        let factor = match unit.trim() {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(format!("retry delay {part:?} needs a unit: ms, s, m or h")),
        };
        u32::try_from(n * factor).map_err(|_| format!("retry delay {part:?} is too long"))
    };
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(delay)
        .collect::<Result<_, _>>()
        .map(Some)
}

/// `Name: value` lines as a map.
fn parse_headers(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(format!("header line {:?} is not \"Name: value\"", l.trim())),
        })
        .collect()
}

fn scheme(text: &str) -> pb::SigningScheme {
    match text {
        "timestamped" => pb::SigningScheme::Timestamped,
        "hex" => pb::SigningScheme::Hex,
        _ => pb::SigningScheme::Standard,
    }
}

/// The parts of a draft both calls need, checked.
struct Parsed {
    schedule: Option<Vec<u32>>,
    timeout_ms: Option<u32>,
    headers: BTreeMap<String, String>,
    rate_limit: Option<u32>,
}

fn parse(d: &Draft) -> Result<Parsed, String> {
    let timeout_ms = match d.timeout_seconds.as_str() {
        "" => None,
        t => {
            let s: f64 = t
                .parse()
                .map_err(|_| format!("timeout {t:?} is not a number of seconds"))?;
            if !(0.001..=120.0).contains(&s) {
                return Err("timeout must be between 0.001 and 120 seconds".into());
            }
            Some((s * 1000.0).round() as u32)
        }
    };
    let rate_limit = match d.rate_limit.as_str() {
        "" => None,
        r => Some(
            r.parse()
                .map_err(|_| format!("rate limit {r:?} is not a whole number"))?,
        ),
    };
    Ok(Parsed {
        schedule: parse_schedule(&d.retry_schedule)?,
        timeout_ms,
        headers: parse_headers(&d.headers)?,
        rate_limit,
    })
}

/// The tenant's event types (every page), for the picker.
async fn catalogue(state: &Console, session: &Session) -> Vec<pb::EventType> {
    if !session.can(super::EVENT_TYPES_READ) {
        return Vec::new();
    }
    let mut all = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let req = pb::ListEventTypesRequest {
            page_size: 500,
            cursor: cursor.clone(),
            ..Default::default()
        };
        let Ok(req) = session.call(req) else { break };
        let Ok(r) = state.clients.event_types().list_event_types(req).await else {
            break;
        };
        let r = r.into_inner();
        all.extend(r.event_types);
        if r.next_cursor.is_empty() {
            break;
        }
        cursor = r.next_cursor;
    }
    all
}

/// The form; `id` is set when editing; `notice` is a result or an error shown above it.
fn form(
    session: &Session,
    id: Option<&str>,
    d: &Draft,
    types: &[pb::EventType],
    notice: Option<Markup>,
    filter_result: Option<Markup>,
) -> Markup {
    let action = id.map_or("/portal/endpoints".to_owned(), |id| {
        format!("/portal/endpoints/{id}")
    });
    let mut groups: BTreeMap<&str, Vec<&pb::EventType>> = BTreeMap::new();
    for t in types {
        groups
            .entry(if t.group.is_empty() {
                "Other"
            } else {
                &t.group
            })
            .or_default()
            .push(t);
    }
    let known: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
    let extra: Vec<&str> = d
        .event_types
        .iter()
        .map(String::as_str)
        .filter(|t| !known.contains(t))
        .collect();
    html! {
        @if let Some(n) = notice { (n) }
        form method="post" action=(action) data-testid="endpoint-form" {
            (csrf(session))
            label for="url" { "URL" }
            input type="url" id="url" name="url" required value=(d.url) placeholder="https://example.com/webhooks";
            label for="description" { "Description" }
            input type="text" id="description" name="description" value=(d.description);
            fieldset {
                legend { "Event types" }
                @for (group, list) in &groups {
                    h3 { (group) }
                    @for t in list {
                        div {
                            input type="checkbox" id=(format!("et-{}", t.name)) name="event_types" value=(t.name) checked[d.event_types.contains(&t.name)];
                            label class="inline" for=(format!("et-{}", t.name)) { code { (t.name) } }
                            @if !t.description.is_empty() { span class="hint" { " " (t.description) } }
                        }
                    }
                }
                label for="event_types_extra" { "Other event types or patterns" }
                p class="hint" id="extra-hint" { "Comma-separated: exact names, prefix wildcards (invoice.*) or * for all." }
                input type="text" id="event_types_extra" name="event_types_extra" value=(extra.join(", ")) aria-describedby="extra-hint";
            }
            fieldset {
                legend { "Payload filter" }
                label for="filter" { "Filter (JSON)" }
                p class="hint" id="filter-hint" { "Empty: every event of the chosen types. Example: {\"data.amount\": {\"$gt\": 100}}" }
                textarea id="filter" name="filter" aria-describedby="filter-hint" { (d.filter) }
                label for="sample_payload" { "Sample payload to try it on" }
                textarea id="sample_payload" name="sample_payload" { (if d.sample.is_empty() { SAMPLE } else { &d.sample }) }
                @if let Some(r) = filter_result { (r) }
                p { button type="submit" name="action" value="try_filter" class="secondary" id="try-filter" { "Try filter" } }
            }
            fieldset {
                legend { "Delivery" }
                label for="retry_schedule" { "Retry schedule" }
                p class="hint" id="retry-hint" { "Delays before each retry, e.g. 1m,5m,1h; empty: Herald's default; none: no retries." }
                input type="text" id="retry_schedule" name="retry_schedule" value=(d.retry_schedule) aria-describedby="retry-hint";
                label for="timeout_seconds" { "Timeout (seconds)" }
                input type="number" id="timeout_seconds" name="timeout_seconds" min="0.001" max="120" step="0.001" value=(d.timeout_seconds);
                label for="rate_limit_per_second" { "Rate limit (deliveries per second)" }
                input type="number" id="rate_limit_per_second" name="rate_limit_per_second" min="0" value=(d.rate_limit) placeholder="unlimited";
                label for="headers" { "Custom headers" }
                p class="hint" id="headers-hint" { "One per line: Name: value" }
                textarea id="headers" name="headers" aria-describedby="headers-hint" { (d.headers) }
                label for="signing_scheme" { "Signing scheme" }
                select id="signing_scheme" name="signing_scheme" {
                    @for (value, label) in [("standard", "Standard Webhooks"), ("timestamped", "Timestamped (t=…,v1=…)"), ("hex", "Hex (sha256=…)")] {
                        option value=(value) selected[d.signing_scheme == value] { (label) }
                    }
                }
                @if id.is_none() {
                    div { input type="checkbox" id="enabled" name="enabled" value="true" checked[d.enabled]; label class="inline" for="enabled" { "Enabled" } }
                }
            }
            div class="actions" {
                button type="submit" name="action" value="save" id="save" data-testid="save" { @if id.is_some() { "Save changes" } @else { "Create endpoint" } }
                a class="button secondary" href=(id.map_or("/portal/".to_owned(), |id| format!("/portal/endpoints/{id}"))) { "Cancel" }
            }
        }
    }
}

/// The form page answered with `status`.
async fn form_page(
    state: &Console,
    session: &Session,
    id: Option<&str>,
    d: &Draft,
    status: StatusCode,
    notice: Option<Markup>,
    filter_result: Option<Markup>,
) -> PageResult {
    let types = catalogue(state, session).await;
    let title = if id.is_some() {
        "Edit endpoint"
    } else {
        "Add endpoint"
    };
    let content = html! { h1 { (title) } (form(session, id, d, &types, notice, filter_result)) };
    Ok((status, super::page(session, "/portal/", title, content)).into_response())
}

fn error_notice(message: &str) -> Markup {
    html! { p class="notice bad" role="alert" data-testid="form-error" { (message) } }
}

/// `GET /portal/endpoints/new`.
pub async fn new(State(state): State<Console>, session: Session) -> PageResult {
    if !session.can(ENDPOINTS_WRITE) {
        return Err(tonic::Status::permission_denied(
            "this session lacks the scope \"endpoints:write\"",
        )
        .into());
    }
    let d = Draft {
        enabled: true,
        sample: SAMPLE.into(),
        signing_scheme: "standard".into(),
        ..Default::default()
    };
    form_page(&state, &session, None, &d, StatusCode::OK, None, None).await
}

/// `GET /portal/endpoints/{id}/edit`.
pub async fn edit(
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
    form_page(
        &state,
        &session,
        Some(&id),
        &Draft::from_endpoint(&e),
        StatusCode::OK,
        None,
        None,
    )
    .await
}

/// "Try filter": `TestFilter` against the sample, shown beside the filter.
async fn try_filter(state: &Console, session: &Session, id: Option<&str>, d: &Draft) -> PageResult {
    let req = pb::TestFilterRequest {
        filter: d.filter.clone(),
        payload: d.sample.clone().into_bytes(),
    };
    let result = match state
        .clients
        .endpoints()
        .test_filter(session.call(req)?)
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            html! {
                p class=(if r.matches { "notice ok" } else { "notice bad" }) role="status" data-testid="filter-result" data-matches=(r.matches) {
                    @if r.matches { "The sample matches this filter." } @else { "The sample does not match: " (r.explanation) }
                }
            }
        }
        Err(s) if s.code() == tonic::Code::InvalidArgument => html! {
            p class="notice bad" role="status" data-testid="filter-result" data-matches="false" { "The filter is not valid: " (s.message()) }
        },
        Err(s) => return Err(s.into()),
    };
    form_page(state, session, id, d, StatusCode::OK, None, Some(result)).await
}

/// `POST /portal/endpoints`: creates (or tries the filter).
pub async fn create(State(state): State<Console>, form: PortalForm) -> PageResult {
    let (session, d) = (&form.session, Draft::from_fields(&form.fields));
    if form.fields.get("action") == Some("try_filter") {
        return try_filter(&state, session, None, &d).await;
    }
    let p = match parse(&d) {
        Ok(p) => p,
        Err(m) => {
            return form_page(
                &state,
                session,
                None,
                &d,
                StatusCode::BAD_REQUEST,
                Some(error_notice(&m)),
                None,
            )
            .await;
        }
    };
    let req = pb::CreateEndpointRequest {
        url: d.url.clone(),
        description: d.description.clone(),
        event_types: d.event_types.clone(),
        enabled: Some(d.enabled),
        signing_scheme: scheme(&d.signing_scheme) as i32,
        timeout_ms: p.timeout_ms,
        no_retries: p.schedule.is_none(),
        retry_schedule_ms: p.schedule.unwrap_or_default(),
        headers: p.headers.into_iter().collect(),
        filter: (!d.filter.is_empty()).then(|| d.filter.clone()),
        rate_limit_per_second: p.rate_limit,
        ..Default::default()
    };
    match state
        .clients
        .endpoints()
        .create_endpoint(session.call(req)?)
        .await
    {
        Ok(r) => {
            let id = r.into_inner().endpoint.map(|e| e.id).unwrap_or_default();
            Ok(Redirect::to(&format!("/portal/endpoints/{id}")).into_response())
        }
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            form_page(
                &state,
                session,
                None,
                &d,
                StatusCode::BAD_REQUEST,
                Some(error_notice(s.message())),
                None,
            )
            .await
        }
        Err(s) => Err(PageError::from(s)),
    }
}

/// `POST /portal/endpoints/{id}`: saves every field of the form (or tries the filter).
pub async fn update(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: PortalForm,
) -> PageResult {
    let (session, d) = (&form.session, Draft::from_fields(&form.fields));
    if form.fields.get("action") == Some("try_filter") {
        return try_filter(&state, session, Some(&id), &d).await;
    }
    let p = match parse(&d) {
        Ok(p) => p,
        Err(m) => {
            return form_page(
                &state,
                session,
                Some(&id),
                &d,
                StatusCode::BAD_REQUEST,
                Some(error_notice(&m)),
                None,
            )
            .await;
        }
    };
    let req = pb::UpdateEndpointRequest {
        id: id.clone(),
        url: Some(d.url.clone()),
        description: Some(d.description.clone()),
        event_types: Some(pb::StringList {
            values: d.event_types.clone(),
        }),
        signing_scheme: Some(scheme(&d.signing_scheme) as i32),
        timeout_ms: p.timeout_ms,
        retry_schedule: Some(pb::DelayList {
            no_retries: p.schedule.is_none(),
            delays_ms: p.schedule.unwrap_or_default(),
        }),
        headers: Some(pb::HeaderMap {
            headers: p.headers.into_iter().collect(),
        }),
        filter: Some(d.filter.clone()),
        rate_limit_per_second: Some(p.rate_limit.unwrap_or(0)),
        ..Default::default()
    };
    match state
        .clients
        .endpoints()
        .update_endpoint(session.call(req)?)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/portal/endpoints/{id}")).into_response()),
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            form_page(
                &state,
                session,
                Some(&id),
                &d,
                StatusCode::BAD_REQUEST,
                Some(error_notice(s.message())),
                None,
            )
            .await
        }
        Err(s) => Err(PageError::from(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_with_units_and_round_trip() {
        assert_eq!(
            parse_schedule("1m, 5m,1h,250ms,30s"),
            Ok(Some(vec![60_000, 300_000, 3_600_000, 250, 30_000]))
        );
        assert_eq!(parse_schedule(""), Ok(Some(vec![])));
        assert_eq!(parse_schedule("none"), Ok(None));
        assert!(parse_schedule("5").unwrap_err().contains("unit"));
        assert!(parse_schedule("x").is_err());
        let text: Vec<String> = [60_000, 300_000, 3_600_000, 250, 30_000]
            .into_iter()
            .map(ms_text)
            .collect();
        assert_eq!(text.join(","), "1m,5m,1h,250ms,30s");
    }

    #[test]
    fn headers_parse_one_per_line() {
        let h = parse_headers("X-A: 1\n\nAuthorization: Bearer x:y\n").unwrap();
        assert_eq!(h["X-A"], "1");
        assert_eq!(h["Authorization"], "Bearer x:y");
        assert!(parse_headers("no colon").is_err());
    }
}
