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
                    Err(e) => (false, format!("unreachable: {}", root_cause(&e))),
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

/// The innermost cause of `e` ("connection refused" rather than "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
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

fn queue_rows(queues: &[&pb::QueueDepth]) -> Markup {
    html! {
        @for q in queues {
            tr data-testid="queue-row" { td { code { (q.name) } } td { (q.kind) } td { (q.messages) } td { (q.consumers) } }
        }
    }
}

/// Work, ledger and dead-letter queues one by one; the delay ladder summed, its rungs behind a
/// disclosure (a plain `<details>`, no script).
fn queues_table(r: &pb::GetQueueDepthsResponse) -> Markup {
    let (delay, other): (Vec<&pb::QueueDepth>, Vec<&pb::QueueDepth>) =
        r.queues.iter().partition(|q| q.kind == "delay");
    let waiting: u64 = delay.iter().map(|q| q.messages).sum();
    let head = html! { thead { tr { th { "Queue" } th { "Kind" } th { "Messages" } th { "Consumers" } } } };
    html! {
        p class="muted" { "Sampled " (format::time(r.sampled_at.as_ref())) }
        div class="table-wrap" {
            table data-testid="queues" {
                (head)
                tbody {
                    (queue_rows(&other))
                    @if !delay.is_empty() {
                        tr data-testid="delay-ladder" { td { "delay ladder (" (delay.len()) " rungs)" } td { "delay" } td { (waiting) } td { "—" } }
                    }
                }
            }
        }
        @if !delay.is_empty() {
            details {
                summary { "Every rung of the delay ladder" }
                div class="table-wrap" { table data-testid="delay-rungs" { (head) tbody { (queue_rows(&delay)) } } }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, kind: &str, messages: u64) -> pb::QueueDepth {
        pb::QueueDepth {
            name: name.into(),
            kind: kind.into(),
            messages,
            consumers: 1,
        }
    }

    #[test]
    fn the_delay_ladder_is_summed_and_its_rungs_listed_apart() {
        let r = pb::GetQueueDepthsResponse {
            queues: vec![
                queue("deliveries.work.0", "work", 7),
                queue("deliveries.wait.100", "delay", 3),
                queue("deliveries.wait.200", "delay", 4),
                queue("dead.letters", "dead_letter", 1),
            ],
            sampled_at: None,
        };
        let html = queues_table(&r).into_string();
        let (main, rungs) = html.split_once("<details>").unwrap();
        assert_eq!(
            main.matches("data-testid=\"queue-row\"").count(),
            2,
            "{main}"
        );
        assert!(
            main.contains("delay ladder (2 rungs)</td><td>delay</td><td>7</td>"),
            "{main}"
        );
        assert!(rungs.contains("deliveries.wait.100") && rungs.contains("deliveries.wait.200"));
        assert!(!main.contains("deliveries.wait.100"), "{main}");
    }
}
