//! A tenant's subscription index: which enabled endpoints an event reaches. Built from the
//! stored endpoints (patterns and payload filters parsed once, here) and the tenant's event-type
//! policy. Ingest caches one per tenant; the dispatcher builds one for the rare operational
//! events it publishes itself.
//!
//! Filters are the tenant's, and evaluating one costs up to its step budget, so the filters an
//! event reaches share one budget ([`SubscriptionIndex::targets_within`]): an event costs at
//! most that many steps whatever the number of endpoints, each filter is guaranteed an equal
//! share, and one that runs out of its share is not delivered to (and reported) while the
//! others still are.

use std::collections::HashSet;

use herald_core::filter::{Budget, DEFAULT_STEP_BUDGET, Filter};
use herald_core::matching::{Matcher, parse_patterns};
use uuid::Uuid;

use crate::{Result, Store};

/// Where one event goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Endpoints to deliver to, in subscription order.
    pub endpoints: Vec<Uuid>,
    /// Endpoints whose filter ran out of its share of the budget on this payload, with that
    /// share in steps: not delivered to.
    pub exhausted: Vec<(Uuid, u64)>,
}

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

    /// Endpoints an event reaches, its filters sharing [`DEFAULT_STEP_BUDGET`] steps (see
    /// [`SubscriptionIndex::targets_within`]).
    pub fn targets(&self, event_type: &str, payload: &[u8]) -> Vec<Uuid> {
        self.targets_within(event_type, payload, DEFAULT_STEP_BUDGET)
            .endpoints
    }

    /// Endpoints an event reaches: subscribed to its type, and whose filter (if any) accepts
    /// the payload. The payload is parsed only when a matching endpoint has a filter; a payload
    /// that is not JSON matches no filter.
    ///
    /// The filters take at most `steps` steps together. Each, in subscription order, may use
    /// an equal share of what the ones before it left, so every filter gets at least
    /// `steps / filters` whatever the others do, and what a cheap filter leaves goes to the
    /// next. A filter that runs out is not matched and is listed in [`Targets::exhausted`].
    pub fn targets_within(&self, event_type: &str, payload: &[u8], steps: u64) -> Targets {
        let candidates = self.matcher.matching(event_type);
        let mut filters_left = candidates
            .iter()
            .filter(|&&&i| self.endpoints[i].1.is_some())
            .count() as u64;
        let mut steps_left = steps;
        let mut parsed: Option<Option<serde_json::Value>> = None;
        let mut targets = Targets::default();
        for i in candidates {
            let (id, filter) = &self.endpoints[*i];
            let Some(filter) = filter else {
                targets.endpoints.push(*id);
                continue;
            };
            let share = steps_left / filters_left;
            filters_left -= 1;
            let doc = parsed.get_or_insert_with(|| serde_json::from_slice(payload).ok());
            let Some(doc) = doc.as_ref() else {
                continue;
            };
            let mut budget = Budget::new(share);
            match filter.evaluate(doc, &mut budget) {
                Ok(true) => targets.endpoints.push(*id),
                Ok(false) => {}
                Err(_) => targets.exhausted.push((*id, share)),
            }
            steps_left -= budget.used();
        }
        targets
    }

    /// A cheap, generous estimate of the work of [`SubscriptionIndex::targets_within`] for an
    /// event of this type with a payload of `payload_bytes`, before parsing anything: 0 when no
    /// endpoint with a filter wants the type, else the payload's bytes (parsing it) plus the
    /// filters' [`Filter::cost_hint`]s, at most `steps`.
    pub fn filter_work(&self, event_type: &str, payload_bytes: usize, steps: u64) -> u64 {
        let mut filters = self
            .matcher
            .matching(event_type)
            .into_iter()
            .filter_map(|i| self.endpoints[*i].1.as_ref())
            .peekable();
        if filters.peek().is_none() {
            return 0;
        }
        let evaluation = filters
            .map(|f| f.cost_hint(payload_bytes))
            .fold(0u64, u64::saturating_add);
        (payload_bytes as u64).saturating_add(evaluation.min(steps))
    }

    /// Endpoints an event of this type reaches whatever its payload (no filter), and those
    /// with a filter that may not take it.
    pub fn reach(&self, event_type: &str) -> (usize, usize) {
        let matching = self.matcher.matching(event_type);
        let filtered = matching
            .iter()
            .filter(|i| self.endpoints[***i].1.is_some())
            .count();
        (matching.len() - filtered, filtered)
    }

    /// Whether the tenant accepts events of this type.
    pub fn accepts(&self, event_type: &str) -> bool {
        !self.reject_unknown || self.known.contains(event_type)
    }
}

#[cfg(test)]
mod tests {
    use herald_core::matching::Pattern;
    use serde_json::json;

    use super::*;

    /// An index of endpoints subscribed to everything, with these filters.
    fn index_of(filters: Vec<Option<serde_json::Value>>) -> (SubscriptionIndex, Vec<Uuid>) {
        let endpoints: Vec<(Uuid, Option<Filter>)> = filters
            .into_iter()
            .map(|doc| (Uuid::now_v7(), doc.map(|d| Filter::parse(&d).unwrap())))
            .collect();
        let ids = endpoints.iter().map(|(id, _)| *id).collect();
        let index = SubscriptionIndex {
            matcher: Matcher::new((0..endpoints.len()).map(|i| (i, vec![Pattern::All]))),
            endpoints,
            reject_unknown: false,
            known: HashSet::new(),
            publish_rate_limit: None,
        };
        (index, ids)
    }

    /// Compares each of 256 values with every element of `a`: 256 × (len + 1) + 1 steps.
    fn costly() -> serde_json::Value {
        json!({ "a": { "$nin": vec![0; 256] } })
    }

    #[test]
    fn a_filter_out_of_budget_misses_only_its_own_endpoint() {
        let (index, ids) = index_of(vec![Some(costly()), None, Some(json!({ "b": 2 }))]);
        let payload = serde_json::to_vec(&json!({ "a": vec![1; 1_000], "b": 2 })).unwrap();

        // Enough for all: every endpoint.
        let all = index.targets_within("x", &payload, 1_000_000);
        assert_eq!(all.endpoints, ids);
        assert!(all.exhausted.is_empty());

        // The costly filter needs 256,257 steps; with 200,000 it gets half and runs out, the
        // cheap one still matches on the other half.
        let some = index.targets_within("x", &payload, 200_000);
        assert_eq!(some.endpoints, vec![ids[1], ids[2]]);
        assert_eq!(some.exhausted, vec![(ids[0], 100_000)]);
    }

    #[test]
    fn filters_share_the_budget_and_pass_on_what_they_leave() {
        // Cheap first: it leaves nearly everything to the costly one, which then fits.
        let (index, ids) = index_of(vec![Some(json!({ "b": 2 })), Some(costly())]);
        let payload = serde_json::to_vec(&json!({ "a": vec![1; 1_000], "b": 2 })).unwrap();
        let t = index.targets_within("x", &payload, 256_260);
        assert_eq!(t.endpoints, ids);
        // Every filter gets at least an equal share, however the others fare.
        let (index, ids) = index_of(vec![
            Some(costly()),
            Some(costly()),
            Some(json!({ "b": 2 })),
        ]);
        let t = index.targets_within("x", &payload, 4);
        assert_eq!(t.endpoints, vec![ids[2]]);
        assert_eq!(t.exhausted, vec![(ids[0], 1), (ids[1], 1)]);
    }

    #[test]
    fn filter_work_is_zero_without_filters_and_capped_by_the_budget() {
        let (plain, _) = index_of(vec![None, None]);
        assert_eq!(plain.filter_work("x", 1_000, 10), 0);
        let (filtered, _) = index_of(vec![None, Some(json!({ "b": 2 }))]);
        assert_eq!(filtered.filter_work("x", 1_000, 1_000_000), 1_000 + 1_000);
        let (expensive, _) = index_of(vec![Some(costly())]);
        assert_eq!(expensive.filter_work("x", 1_000_000, 5), 1_000_005);
    }
}
