//! What a credential may call: the scopes of API keys and portal sessions, one model for both.
//!
//! Scopes are stored as text (`api_keys.scopes`, `portal_links.scopes`), `*` meaning every
//! scope: the keys made before scopes existed have it, and keep working as they did. A
//! [`Principal`] is what a checked credential proves (its tenant, scopes and expiry); every
//! tenant call asks it for the one scope the call needs ([`Principal::require`]).

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One thing a credential may do (the list is the proto's, above `CreateApiKeyRequest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    EventsPublish,
    EndpointsRead,
    EndpointsWrite,
    SecretsRead,
    EventTypesRead,
    EventTypesWrite,
    DeliveriesRead,
    DeliveriesResend,
    PortalCreate,
}

impl Scope {
    /// Every scope, in the documented order.
    pub const ALL: [Scope; 9] = [
        Scope::EventsPublish,
        Scope::EndpointsRead,
        Scope::EndpointsWrite,
        Scope::SecretsRead,
        Scope::EventTypesRead,
        Scope::EventTypesWrite,
        Scope::DeliveriesRead,
        Scope::DeliveriesResend,
        Scope::PortalCreate,
    ];

    /// A portal session's scopes when the caller names none: manage endpoints and read the log,
    /// not publish nor open further sessions.
    pub const PORTAL_DEFAULT: [Scope; 6] = [
        Scope::EndpointsRead,
        Scope::EndpointsWrite,
        Scope::SecretsRead,
        Scope::EventTypesRead,
        Scope::DeliveriesRead,
        Scope::DeliveriesResend,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsPublish => "events:publish",
            Scope::EndpointsRead => "endpoints:read",
            Scope::EndpointsWrite => "endpoints:write",
            Scope::SecretsRead => "secrets:read",
            Scope::EventTypesRead => "event_types:read",
            Scope::EventTypesWrite => "event_types:write",
            Scope::DeliveriesRead => "deliveries:read",
            Scope::DeliveriesResend => "deliveries:resend",
            Scope::PortalCreate => "portal:create",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// Whether the scope only reads (kept by a read-only portal session).
    pub fn is_read(self) -> bool {
        self.as_str().ends_with(":read")
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of scopes, or every scope (`*`, which also covers scopes added later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scopes {
    bits: u16,
    every: bool,
}

impl Scopes {
    /// Every scope (`*`).
    pub const EVERY: Scopes = Scopes {
        bits: 0,
        every: true,
    };

    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Scopes {
            bits: scopes.into_iter().fold(0, |b, s| b | s.bit()),
            every: false,
        }
    }

    /// Reads stored scopes; a name this version does not know grants nothing (written by a
    /// newer version, it is kept in the row, not here).
    pub fn from_stored(stored: &[String]) -> Self {
        if stored.iter().any(|s| s == "*") {
            return Scopes::EVERY;
        }
        Scopes::of(stored.iter().filter_map(|s| Scope::parse(s)))
    }

    /// Parses the scopes a caller asks for: empty or `*` is every scope; an unknown name is
    /// the error (its text).
    pub fn parse_all(names: &[String]) -> Result<Self, String> {
        if names.is_empty() {
            return Ok(Scopes::EVERY);
        }
        let mut scopes = Scopes::of([]);
        for name in names {
            let name = name.trim();
            if name == "*" {
                return Ok(Scopes::EVERY);
            }
            match Scope::parse(name) {
                Some(s) => scopes.bits |= s.bit(),
                None => return Err(name.to_owned()),
            }
        }
        Ok(scopes)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.every || self.bits & scope.bit() != 0
    }

    pub fn is_every(self) -> bool {
        self.every
    }

    pub fn is_empty(self) -> bool {
        !self.every && self.bits == 0
    }

    /// The scopes in both.
    pub fn intersect(self, other: Scopes) -> Scopes {
        match (self.every, other.every) {
            (true, _) => other,
            (_, true) => self,
            _ => Scopes {
                bits: self.bits & other.bits,
                every: false,
            },
        }
    }

    /// The first scope of `self` that `within` lacks.
    pub fn first_outside(self, within: Scopes) -> Option<Scope> {
        if within.every {
            return None;
        }
        if self.every {
            return Scope::ALL.into_iter().find(|s| !within.contains(*s));
        }
        self.iter().find(|s| !within.contains(*s))
    }

    /// Only the reading scopes.
    pub fn read_only(self) -> Scopes {
        Scopes::of(
            Scope::ALL
                .into_iter()
                .filter(|s| s.is_read() && self.contains(*s)),
        )
    }

    /// The scopes named one by one (every scope expanded).
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// As stored and shown: `["*"]` for every scope, else the names in the documented order.
    pub fn names(self) -> Vec<String> {
        if self.every {
            return vec!["*".to_owned()];
        }
        self.iter().map(|s| s.as_str().to_owned()).collect()
    }
}

/// What kind of credential a principal presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// An API key (`hk_…`).
    Key,
    /// A portal session (`hs_…`), made by redeeming a portal link.
    Portal,
}

impl CredentialKind {
    pub fn from_stored(kind: &str) -> Self {
        if kind == "portal" {
            CredentialKind::Portal
        } else {
            CredentialKind::Key
        }
    }
}

/// Who a checked credential speaks for, and what it may do until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant: Uuid,
    /// The credential's id (`api_keys.id`).
    pub key_id: Uuid,
    pub scopes: Scopes,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub kind: CredentialKind,
}

/// A call refused for want of a scope; its text is what the caller is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this credential lacks the scope \"{}\"", .0.as_str())]
pub struct MissingScope(pub Scope);

impl Principal {
    /// The principal when it may call what needs `scope`.
    pub fn require(&self, scope: Scope) -> Result<&Self, MissingScope> {
        if self.scopes.contains(scope) {
            Ok(self)
        } else {
            Err(MissingScope(scope))
        }
    }

    /// Whether the credential has expired by `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_has_one_name() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("endpoints:delete"), None);
    }

    #[test]
    fn stored_star_is_every_scope_and_unknown_names_grant_nothing() {
        assert!(Scopes::from_stored(&["*".into()]).contains(Scope::PortalCreate));
        let s = Scopes::from_stored(&["endpoints:read".into(), "future:thing".into()]);
        assert!(s.contains(Scope::EndpointsRead));
        assert!(!s.contains(Scope::EndpointsWrite));
        assert_eq!(s.names(), vec!["endpoints:read"]);
    }

    #[test]
    fn requested_scopes_are_checked_by_name() {
        assert_eq!(Scopes::parse_all(&[]), Ok(Scopes::EVERY));
        assert_eq!(
            Scopes::parse_all(&["events:publish".into(), "nope".into()]),
            Err("nope".into())
        );
    }

    #[test]
    fn narrowing_keeps_only_what_both_have() {
        let caller = Scopes::of([Scope::EndpointsRead, Scope::DeliveriesRead]);
        let wanted = Scopes::of(Scope::PORTAL_DEFAULT);
        assert_eq!(
            wanted.intersect(caller),
            Scopes::of([Scope::EndpointsRead, Scope::DeliveriesRead])
        );
        assert_eq!(wanted.first_outside(caller), Some(Scope::EndpointsWrite));
        assert_eq!(Scopes::EVERY.intersect(caller), caller);
        assert_eq!(wanted.first_outside(Scopes::EVERY), None);
        assert_eq!(
            wanted.read_only(),
            Scopes::of([
                Scope::EndpointsRead,
                Scope::SecretsRead,
                Scope::EventTypesRead,
                Scope::DeliveriesRead
            ])
        );
    }

    #[test]
    fn a_missing_scope_is_named() {
        let p = Principal {
            tenant: Uuid::nil(),
            key_id: Uuid::nil(),
            scopes: Scopes::of([Scope::EndpointsRead]),
            expires_at: None,
            kind: CredentialKind::Key,
        };
        assert!(p.require(Scope::EndpointsRead).is_ok());
        assert_eq!(
            p.require(Scope::EndpointsWrite).unwrap_err().to_string(),
            "this credential lacks the scope \"endpoints:write\""
        );
    }
}
