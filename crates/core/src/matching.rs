//! Event types and subscriptions: which endpoints an event reaches.
//!
//! An event type is `segment(.segment)*` (letters, digits, `_`, `-`), at most 128 characters.
//! An endpoint subscribes with exact names, prefix wildcards (`invoice.*` matches `invoice.paid`
//! and `invoice.line.added`, not `invoice`) or `*`. [`Matcher`] indexes a tenant's endpoints so a
//! lookup costs one hash probe per segment of the event type, whatever the number of endpoints.

use std::collections::HashMap;

use crate::error::{Result, invalid};

/// Longest event type name.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Checks an event type name.
pub fn validate_event_type(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(invalid("event type is empty"));
    }
    if name.len() > MAX_EVENT_TYPE_LEN {
        return Err(invalid(format!(
            "event type is {} characters long; at most {MAX_EVENT_TYPE_LEN} are allowed",
            name.len()
        )));
    }
    for segment in name.split('.') {
        if segment.is_empty() {
            return Err(invalid(format!(
                "event type {name:?} has an empty segment (use e.g. \"invoice.paid\")"
            )));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(invalid(format!(
                "event type {name:?} contains {c:?}; only letters, digits, '_', '-' and '.' are allowed"
            )));
        }
    }
    Ok(())
}

/// A subscription pattern: `*`, `prefix.*` or an exact event type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    All,
    Prefix(String),
    Exact(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self> {
        if text == "*" {
            return Ok(Pattern::All);
        }
        if let Some(prefix) = text.strip_suffix(".*") {
            validate_event_type(prefix)
                .map_err(|e| invalid(format!("subscription {text:?}: {e}")))?;
            return Ok(Pattern::Prefix(prefix.to_owned()));
        }
        validate_event_type(text).map_err(|e| {
            invalid(format!(
                "subscription {text:?}: {e} (wildcards are \"*\" or \"prefix.*\")"
            ))
        })?;
        Ok(Pattern::Exact(text.to_owned()))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Exact(name) => name == event_type,
            Pattern::Prefix(prefix) => event_type
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
        }
    }
}

/// Validates a list of subscription patterns (at least one, at most 256).
pub fn parse_patterns(patterns: &[String]) -> Result<Vec<Pattern>> {
    if patterns.is_empty() {
        return Err(invalid(
            "event_types is empty: subscribe to at least one event type, \"prefix.*\" or \"*\"",
        ));
    }
    if patterns.len() > 256 {
        return Err(invalid("event_types has more than 256 entries"));
    }
    patterns.iter().map(|p| Pattern::parse(p)).collect()
}

/// An index from event type to the subscribers (of type `T`) that want it.
#[derive(Clone, Debug)]
pub struct Matcher<T> {
    items: Vec<T>,
    all: Vec<usize>,
    exact: HashMap<String, Vec<usize>>,
    prefix: HashMap<String, Vec<usize>>,
}

impl<T> Default for Matcher<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            all: Vec::new(),
            exact: HashMap::new(),
            prefix: HashMap::new(),
        }
    }
}

impl<T> Matcher<T> {
    /// Builds the index from subscribers and their patterns.
    pub fn new(entries: impl IntoIterator<Item = (T, Vec<Pattern>)>) -> Self {
        let mut m = Self::default();
        for (item, patterns) in entries {
            let idx = m.items.len();
            m.items.push(item);
            for p in patterns {
                let list = match p {
                    Pattern::All => &mut m.all,
                    Pattern::Exact(name) => m.exact.entry(name).or_default(),
                    Pattern::Prefix(prefix) => m.prefix.entry(prefix).or_default(),
                };
                if list.last() != Some(&idx) {
                    list.push(idx);
                }
            }
        }
        m
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every subscriber that wants `event_type`, each once, in insertion order.
    pub fn matching(&self, event_type: &str) -> Vec<&T> {
        let mut hits: Vec<usize> = self.all.clone();
        if let Some(list) = self.exact.get(event_type) {
            hits.extend_from_slice(list);
        }
        if !self.prefix.is_empty() {
            for (i, c) in event_type.char_indices() {
                if c == '.'
                    && let Some(list) = self.prefix.get(&event_type[..i])
                {
                    hits.extend_from_slice(list);
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        hits.into_iter().map(|i| &self.items[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_syntax() {
        for ok in ["a", "invoice.paid", "response.submitted", "a-b_c.D9"] {
            assert!(validate_event_type(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(validate_event_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_match_as_documented() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("*").matches("anything.at.all"));
        assert!(p("response.*").matches("response.started"));
        assert!(p("response.*").matches("response.a.b"));
        assert!(!p("response.*").matches("response"));
        assert!(!p("response.*").matches("responses.x"));
        assert!(p("call.ended").matches("call.ended"));
        assert!(!p("call.ended").matches("call.ended.late"));
        assert!(Pattern::parse("resp*").is_err());
        assert!(Pattern::parse("*.x").is_err());
    }

    #[test]
    fn matcher_agrees_with_patterns_and_dedupes() {
        let entries = vec![
            ("all", vec![Pattern::All]),
            (
                "resp",
                vec![
                    Pattern::Prefix("response".into()),
                    Pattern::Exact("response.started".into()),
                ],
            ),
            ("deep", vec![Pattern::Prefix("a.b".into())]),
            ("exact", vec![Pattern::Exact("call.ended".into())]),
        ];
        let m = Matcher::new(entries);
        assert_eq!(m.matching("response.started"), vec![&"all", &"resp"]);
        assert_eq!(m.matching("a.b.c"), vec![&"all", &"deep"]);
        assert_eq!(m.matching("a.b"), vec![&"all"]);
        assert_eq!(m.matching("call.ended"), vec![&"all", &"exact"]);
    }
}
