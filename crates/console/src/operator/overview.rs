//! The operator overview: each service's `/readyz`, the queues' depths (work shards, delay
//! rungs, the ledger's and the dead-letter queue) and the tenants with the most failing,
//! throttled or auto-disabled endpoints. Each part fails on its own: a page that is down
//! with the thing it reports on would be useless.

use axum::extract::State;
use axum::response::IntoResponse;
use futures::future::join_all;
use herald_proto::v1 as pb;
use maud::{Markup, html};

use super::session::Operator;
use crate::error::PageResult;
use crate::{Console, format};

/// One service's readiness: up, and what `/readyz` said.
struct Health {
    name: String,
    up: bool,
    text: String,
}

async fn health(state: &Console) -> Vec<Health> {
    join_all(
        state
            .config
            .health_urls
            .iter()
            .map(|(name, url)| async move {
                let (up, text) = match state.http.get(url).send().await {
                    Ok(r) => {
                        let up = r.status().is_success();
                        (up, r.text().await.unwrap_or_default().trim().to_owned())
                    }
                    Err(e) => (false, format!("unreachable: {}", e.without_url())),
                };
                Health {
                    name: name.clone(),
                    up,
                    text,
                }
            }),
    )
    .await
}

fn health_table(list: &[Health]) -> Markup {
    html! {
        table data-testid="health" {
            thead { tr { th { "Service" } th { "Ready" } th { "Detail" } } }
            tbody {
                @for h in list {
                    tr data-testid="health-row" {
                        td { (h.name) }
                        td { span class=(if h.up { "up" } else { "down" }) { @if h.up { "ready" } @else { "not ready" } } }
                        td class="excerpt" { (h.text) }
                    }
                }
            }
        }
    }
}

fn queues_table(r: &pb::GetQueueDepthsResponse) -> Markup {
    html! {
        p class="muted" { "Sampled " (format::time(r.sampled_at.as_ref())) }
        div class="table-wrap" {
            table data-testid="queues" {
                thead { tr { th { "Queue" } th { "Kind" } th { "Messages" } th { "Consumers" } } }
                tbody {
                    @for q in &r.queues {
                        tr data-testid="queue-row" { td { code { (q.name) } } td { (q.kind) } td { (q.messages) } td { (q.consumers) } }
                    }
                }
            }
        }
    }
}

fn troubled_table(list: &[pb::TroubledTenant]) -> Markup {
    html! {
        @if list.is_empty() { p class="muted" data-testid="no-trouble" { "No tenant has failing, throttled or disabled endpoints." } }
        @else {
            div class="table-wrap" {
                table data-testid="troubled" {
                    thead { tr { th { "Tenant" } th { "Failing" } th { "Throttled" } th { "Auto-disabled" } th { "Endpoints" } } }
                    tbody {
                        @for t in list {
                            tr data-testid="troubled-row" {
                                td { a href=(format!("/console/tenants/{}", t.tenant_id)) { (t.tenant_name) } }
                                td { (t.failing_endpoints) } td { (t.throttled_endpoints) } td { (t.auto_disabled_endpoints) } td { (t.total_endpoints) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/`.
pub async fn page(State(state): State<Console>, op: Operator) -> PageResult {
    let mut ops = state.clients.operations();
    let mut admin = state.clients.admin();
    let (health, queues, troubled) = tokio::join!(
        health(&state),
        async {
            ops.get_queue_depths(op.call(pb::GetQueueDepthsRequest {})?)
                .await
                .map_err(Into::into)
        },
        async {
            admin
                .list_troubled_tenants(op.call(pb::ListTroubledTenantsRequest { limit: 20 })?)
                .await
                .map_err(Into::into)
        },
    );
    let failed = |what: &str, e: &crate::error::PageError| html! { p class="notice bad" { (what) " could not be loaded: " (e.to_string()) } };
    let content = html! {
        h1 { "Overview" }
        h2 { "Services" }
        (health_table(&health))
        h2 { "Tenants in trouble" }
        @match &troubled { Ok(r) => (troubled_table(&r.get_ref().tenants)), Err(e) => (failed("The tenants", e)) }
        h2 { "Queues" }
        @match &queues { Ok(r) => (queues_table(r.get_ref())), Err(e) => (failed("The queue depths", e)) }
    };
    Ok(super::page(&op, "/console/", "Overview", content).into_response())
}
