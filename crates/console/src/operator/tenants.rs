//! Tenants and their credentials: the list (newest first) and creation; a tenant's page with
//! its keys (create — the key shown once —, revoke), the origins allowed to embed its portal,
//! and "open portal" (a single-use link from `Portal.CreatePortalSession`).

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect};
use herald_proto::v1 as pb;
use maud::{Markup, html};

use super::csrf;
use super::session::{Operator, OperatorForm};
use crate::error::{PageError, PageResult};
use crate::form::{Fields, query};
use crate::{Console, format};

/// Every scope a key can have (see the proto).
pub const SCOPES: [&str; 9] = [
    "events:publish",
    "endpoints:read",
    "endpoints:write",
    "secrets:read",
    "event_types:read",
    "event_types:write",
    "deliveries:read",
    "deliveries:resend",
    "portal:create",
];

fn lines(text: &str) -> Vec<String> {
    text.split(['\n', ',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `GET /console/tenants`.
pub async fn list(
    State(state): State<Console>,
    op: Operator,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let q = Fields::from_query(raw.as_deref());
    let req = pb::ListTenantsRequest {
        page_size: 50,
        cursor: q.get("cursor").unwrap_or_default().to_owned(),
    };
    let r = state
        .clients
        .admin()
        .list_tenants(op.call(req)?)
        .await?
        .into_inner();
    let content = html! {
        h1 { "Tenants" }
        div class="table-wrap" {
            table data-testid="tenants" {
                thead { tr { th { "Name" } th class="wide" { "Id" } th { "Created" } } }
                tbody {
                    @for t in &r.tenants {
                        tr data-testid="tenant-row" data-tenant-id=(t.id) {
                            td { a href=(format!("/console/tenants/{}", t.id)) { (t.name) } }
                            td class="wide" { code { (t.id) } }
                            td { (format::time(t.created_at.as_ref())) }
                        }
                    }
                }
            }
        }
        @if !r.next_cursor.is_empty() {
            p class="pager" { a href=(format!("/console/tenants?{}", query(&[("cursor", &r.next_cursor)]))) rel="next" { "More →" } }
        }
        h2 { "Create a tenant" }
        form method="post" action="/console/tenants" data-testid="create-tenant" {
            (csrf(&op))
            label for="name" { "Name" }
            input type="text" id="name" name="name" required;
            label for="portal_allowed_origins" { "Origins allowed to embed the portal" }
            p class="hint" id="origins-hint" { "One per line, https://host[:port] (http:// only for localhost). Empty: no embedding." }
            textarea id="portal_allowed_origins" name="portal_allowed_origins" aria-describedby="origins-hint" {}
            p { button type="submit" id="create-tenant" { "Create tenant" } }
        }
    };
    Ok(super::page(&op, "/console/tenants", "Tenants", content).into_response())
}

/// `POST /console/tenants` (`name`, `portal_allowed_origins`).
pub async fn create(State(state): State<Console>, form: OperatorForm) -> PageResult {
    let req = pb::CreateTenantRequest {
        name: form.fields.get("name").unwrap_or_default().to_owned(),
        portal_allowed_origins: lines(form.fields.raw("portal_allowed_origins")),
        ..Default::default()
    };
    let t = state
        .clients
        .admin()
        .create_tenant(form.operator.call(req)?)
        .await?
        .into_inner();
    Ok(Redirect::to(&format!("/console/tenants/{}", t.id)).into_response())
}

/// `GET /console/tenants/{id}`.
pub async fn page(
    State(state): State<Console>,
    op: Operator,
    Path(id): Path<String>,
) -> PageResult {
    render(&state, &op, &id, None).await
}

/// A tenant's page with `result` (a new key or portal link) at its top.
async fn render(state: &Console, op: &Operator, id: &str, result: Option<Markup>) -> PageResult {
    let mut admin = state.clients.admin();
    let t = admin
        .get_tenant(op.call(pb::GetTenantRequest { id: id.to_owned() })?)
        .await?
        .into_inner();
    let keys_req = pb::ListApiKeysRequest {
        tenant_id: id.to_owned(),
        include_revoked: true,
        page_size: 200,
        cursor: String::new(),
    };
    let keys = admin
        .list_api_keys(op.call(keys_req)?)
        .await?
        .into_inner()
        .keys;
    let content = html! {
        p { a href="/console/tenants" { "← Tenants" } }
        h1 data-testid="tenant-name" { (t.name) }
        @if let Some(r) = result { (r) }
        p { "Id " code { (t.id) } " · created " (format::time(t.created_at.as_ref())) }
        h2 { "API keys" }
        (keys_table(op, id, &keys))
        (key_form(op, id))
        h2 { "Portal" }
        (portal_form(op, id))
        (origins_form(op, &t))
    };
    Ok(super::page(op, "/console/tenants", "Tenant", content).into_response())
}

fn keys_table(op: &Operator, tenant: &str, keys: &[pb::ApiKey]) -> Markup {
    html! {
        @if keys.is_empty() { p class="muted" { "No keys." } }
        @else {
            div class="table-wrap" {
                table data-testid="keys" {
                    thead { tr { th { "Name" } th { "Scopes" } th class="wide" { "Created" } th { "Expires" } th { "State" } th {} } }
                    tbody {
                        @for k in keys {
                            tr data-testid="key-row" data-key-id=(k.id) {
                                td { (k.name) }
                                td { ul class="tags" { @for s in &k.scopes { li class="tag" { (s) } } } }
                                td class="wide" { (format::time(k.created_at.as_ref())) }
                                td { @if k.expires_at.is_some() { (format::time(k.expires_at.as_ref())) } @else { "never" } }
                                td { @if k.revoked_at.is_some() { "revoked " (format::time(k.revoked_at.as_ref())) } @else { "active" } }
                                td {
                                    @if k.revoked_at.is_none() {
                                        form method="post" action=(format!("/console/tenants/{tenant}/keys/{}/revoke", k.id)) {
                                            (csrf(op))
                                            button type="submit" class="danger" data-testid="revoke" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn scope_boxes(prefix: &str) -> Markup {
    html! {
        @for s in SCOPES {
            span class="choice" { input type="checkbox" id=(format!("{prefix}-{s}")) name="scopes" value=(s); label class="inline" for=(format!("{prefix}-{s}")) { code { (s) } } }
        }
    }
}

fn key_form(op: &Operator, tenant: &str) -> Markup {
    html! {
        form method="post" action=(format!("/console/tenants/{tenant}/keys")) data-testid="create-key" {
            (csrf(op))
            h3 { "Create a key" }
            label for="key_name" { "Name" }
            input type="text" id="key_name" name="name" required placeholder="billing-service";
            fieldset { legend { "Scopes (none checked: every scope)" } (scope_boxes("key")) }
            label for="ttl_hours" { "Expires after (hours, empty: never)" }
            input type="number" id="ttl_hours" name="ttl_hours" min="1";
            p { button type="submit" id="create-key" { "Create key" } }
        }
    }
}

fn portal_form(op: &Operator, tenant: &str) -> Markup {
    html! {
        form method="post" action=(format!("/console/tenants/{tenant}/portal")) data-testid="open-portal" {
            (csrf(op))
            label for="session_minutes" { "Session length (minutes)" }
            input type="number" id="session_minutes" name="session_minutes" min="1" max="1440" value="60";
            div { input type="checkbox" id="read_only" name="read_only" value="true"; label class="inline" for="read_only" { "Read only" } }
            label for="accent_color" { "Accent colour (#rrggbb)" }
            input type="text" id="accent_color" name="accent_color" pattern="#[0-9a-fA-F]{6}" placeholder="#3355cc";
            label for="theme_name" { "Title" }
            input type="text" id="theme_name" name="theme_name" maxlength="64" placeholder="Webhooks";
            label for="mode" { "Colours" }
            select id="mode" name="mode" { option value="" { "viewer's setting" } option value="light" { "light" } option value="dark" { "dark" } }
            p { button type="submit" id="open-portal" { "Create portal link" } }
        }
    }
}

fn origins_form(op: &Operator, t: &pb::Tenant) -> Markup {
    html! {
        form method="post" action=(format!("/console/tenants/{}/origins", t.id)) data-testid="origins" {
            (csrf(op))
            label for="origins" { "Origins allowed to embed the portal" }
            p class="hint" id="origins-hint" { "One per line, https://host[:port]. Empty: the portal cannot be framed." }
            textarea id="origins" name="portal_allowed_origins" aria-describedby="origins-hint" { (t.portal_allowed_origins.join("\n")) }
            p { button type="submit" class="secondary" id="save-origins" { "Save origins" } }
        }
    }
}

/// `POST /console/tenants/{id}/origins`.
pub async fn origins(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: OperatorForm,
) -> PageResult {
    let req = pb::UpdateTenantRequest {
        id: id.clone(),
        portal_allowed_origins: Some(pb::StringList {
            values: lines(form.fields.raw("portal_allowed_origins")),
        }),
        ..Default::default()
    };
    state
        .clients
        .admin()
        .update_tenant(form.operator.call(req)?)
        .await?;
    Ok(Redirect::to(&format!("/console/tenants/{id}")).into_response())
}

/// `POST /console/tenants/{id}/keys` (`name`, `scopes`…, `ttl_hours`): shows the key once.
pub async fn create_key(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: OperatorForm,
) -> PageResult {
    let f = &form.fields;
    let hours: Option<u32> = f
        .number("ttl_hours", "Expires after")
        .map_err(PageError::BadRequest)?;
    let req = pb::CreateApiKeyRequest {
        tenant_id: id.clone(),
        name: f.get("name").unwrap_or_default().to_owned(),
        scopes: f.all("scopes").into_iter().map(str::to_owned).collect(),
        ttl_seconds: hours.map(|h| h.saturating_mul(3600)),
    };
    let r = state
        .clients
        .admin()
        .create_api_key(form.operator.call(req)?)
        .await?
        .into_inner();
    let shown = html! {
        section class="notice ok" role="status" data-testid="new-key" {
            h2 { "New API key" }
            p { "Copy it now: Herald keeps only its hash and cannot show it again." }
            p class="secret" data-testid="new-key-value" { (r.api_key) }
            p { "Scopes: " (r.scopes.join(", ")) }
        }
    };
    render(&state, &form.operator, &id, Some(shown)).await
}

/// `POST /console/tenants/{id}/keys/{key_id}/revoke`.
pub async fn revoke_key(
    State(state): State<Console>,
    Path((id, key_id)): Path<(String, String)>,
    form: OperatorForm,
) -> PageResult {
    state
        .clients
        .admin()
        .revoke_api_key(form.operator.call(pb::RevokeApiKeyRequest { key_id })?)
        .await?;
    Ok(Redirect::to(&format!("/console/tenants/{id}")).into_response())
}

/// `POST /console/tenants/{id}/portal`: a single-use portal link.
pub async fn portal_link(
    State(state): State<Console>,
    Path(id): Path<String>,
    form: OperatorForm,
) -> PageResult {
    let f = &form.fields;
    let minutes: Option<u32> = f
        .number("session_minutes", "Session length")
        .map_err(PageError::BadRequest)?;
    let mode = match f.get("mode") {
        Some("light") => pb::ThemeMode::Light,
        Some("dark") => pb::ThemeMode::Dark,
        _ => pb::ThemeMode::Unspecified,
    };
    let req = pb::CreatePortalSessionRequest {
        tenant_id: id.clone(),
        ttl_seconds: minutes.map(|m| m.saturating_mul(60)),
        read_only: f.checked("read_only"),
        theme: Some(pb::PortalTheme {
            accent_color: f.get("accent_color").unwrap_or_default().to_owned(),
            name: f.get("theme_name").unwrap_or_default().to_owned(),
            mode: mode as i32,
        }),
        ..Default::default()
    };
    let r = state
        .clients
        .portal()
        .create_portal_session(form.operator.call(req)?)
        .await?
        .into_inner();
    let url = if r.url.is_empty() {
        format!(
            "{}/portal/open?{}",
            state.config.base(),
            query(&[("token", &r.token)])
        )
    } else {
        r.url
    };
    let shown = html! {
        section class="notice ok" role="status" data-testid="portal-link" {
            h2 { "Portal link" }
            p { "Opens once, until " (format::time(r.link_expires_at.as_ref())) "; the session then lasts " (r.ttl_seconds / 60) " minutes with " (r.scopes.join(", ")) "." }
            p class="secret" { a href=(url) target="_blank" rel="noopener noreferrer" data-testid="portal-url" { (url) } }
        }
    };
    render(&state, &form.operator, &id, Some(shown)).await
}
