//! A tenant's subscription index: which enabled endpoints an event reaches. Built from the
//! stored endpoints (patterns and payload filters parsed once, here) and the tenant's event-type
//! policy. Ingest caches one per tenant; the dispatcher builds one for the rare operational
//! events it publishes itself.

use std::collections::HashSet;

use herald_core::filter::Filter;
use herald_core::matching::{Matcher, parse_patterns};
use uuid::Uuid;

use crate::{Result, Store};

/// What a publish needs to know about one tenant.
pub struct SubscriptionIndex {
    /// Enabled endpoints by subscription pattern, as positions in `endpoints`.
    matcher: Matcher<usize>,
    /// Endpoint id and payload filter.
    endpoints: Vec<(Uuid, Option<Filter>)>,
    /// Refuse event types that are not in `known`.
    pub reject_unknown: bool,
    /// Live (not archived) event types of the tenant (filled only when `reject_unknown`).
    pub known: HashSet<String>,
    /// The tenant's own publish rate limit (`None`: the server default; 0: unlimited).
    pub publish_rate_limit: Option<u32>,
}

impl SubscriptionIndex {
    /// Loads a tenant's index (three queries).
    pub async fn load(store: &Store, tenant: Uuid) -> Result<Self> {
        let tenant_row = store.get_tenant(tenant).await?;
        let rows = store.tenant_subscriptions(tenant).await?;
        let known = if tenant_row.reject_unknown_event_types {
            store
                .list_event_types(tenant, false, None)
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect()
        } else {
            HashSet::new()
        };
        let mut endpoints = Vec::new();
        let mut patterns = Vec::new();
        for e in rows {
            // Stored patterns and filters were validated at write time; one that no longer
            // parses (after a stricter release) matches nothing rather than everything.
            let Ok(p) = parse_patterns(&e.event_types) else {
                continue;
            };
            let filter = match &e.filter {
                None => None,
                Some(doc) => match Filter::parse(doc) {
                    Ok(f) => Some(f),
                    Err(_) => continue,
                },
            };
            patterns.push((endpoints.len(), p));
            endpoints.push((e.id, filter));
        }
        Ok(Self {
            matcher: Matcher::new(patterns),
            endpoints,
            reject_unknown: tenant_row.reject_unknown_event_types,
            known,
            publish_rate_limit: tenant_row.publish_rate_limit.map(|r| r.max(0) as u32),
        })
    }

    /// Endpoints an event reaches: subscribed to its type, and whose filter (if any) accepts
    /// the payload. The payload is parsed only when a matching endpoint has a filter; a payload
    /// that is not JSON matches no filter.
    pub fn targets(&self, event_type: &str, payload: &[u8]) -> Vec<Uuid> {
        let mut parsed: Option<Option<serde_json::Value>> = None;
        self.matcher
            .matching(event_type)
            .into_iter()
            .filter_map(|i| {
                let (id, filter) = &self.endpoints[*i];
                match filter {
                    None => Some(*id),
                    Some(f) => {
                        let doc =
                            parsed.get_or_insert_with(|| serde_json::from_slice(payload).ok());
                        doc.as_ref().is_some_and(|d| f.matches(d)).then_some(*id)
                    }
                }
            })
            .collect()
    }

    /// Whether the tenant accepts events of this type.
    pub fn accepts(&self, event_type: &str) -> bool {
        !self.reject_unknown || self.known.contains(event_type)
    }
}
