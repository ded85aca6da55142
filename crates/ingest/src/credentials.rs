//! What may be asked of a new credential (an API key or a portal session) and of a tenant's
//! portal embedding: scopes, lifetimes, the portal's theme and the origins allowed to frame it.
//!
//! Every bound here is the API's (proto comments, README "Hostile input and limits"); a value
//! past one is refused with `INVALID_ARGUMENT` naming the field and the bound, never clamped.
//! Allowed origins end up in a Content-Security-Policy header, so they are held to a strict
//! grammar (no spaces, quotes, semicolons or paths can get through).

use herald_proto::v1 as pb;
use herald_store::{Principal, Scope, Scopes};

use crate::error::{Error, Result};

/// Most origins a tenant may allow to embed its portal.
pub const MAX_ALLOWED_ORIGINS: usize = 16;
/// A portal session's lifetime: default and bounds, in seconds.
pub const SESSION_TTL: (u32, u32, u32) = (3_600, 60, 86_400);
/// A portal link's lifetime: default and bounds, in seconds.
pub const LINK_TTL: (u32, u32, u32) = (600, 10, 3_600);
/// Longest theme name, in characters.
pub const MAX_THEME_NAME: usize = 64;

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// Scopes named in a request (empty: every scope); an unknown one is refused.
pub fn scopes(field: &str, names: &[String]) -> Result<Scopes> {
    Scopes::parse_all(names).map_err(|name| {
        let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        invalid(format!(
            "{field}: unknown scope {name:?} (known: {}, or * for every scope)",
            known.join(", ")
        ))
    })
}

/// A seconds field with a default and bounds.
pub fn seconds(
    field: &str,
    value: Option<u32>,
    (default, min, max): (u32, u32, u32),
) -> Result<u32> {
    match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(v) => Err(invalid(format!(
            "{field} {v} is out of range: {min} to {max} seconds"
        ))),
    }
}

/// The scopes of a portal session: the requested ones (or the portal's defaults), read-only
/// when asked, within the caller's. A named scope the caller lacks is refused (`PERMISSION_
/// DENIED`); the defaults are narrowed to the caller's silently.
pub fn session_scopes(
    requested: &[String],
    read_only: bool,
    caller: Option<&Principal>,
) -> Result<Scopes> {
    let within = caller.map_or(Scopes::EVERY, |p| p.scopes);
    let mut wanted = if requested.is_empty() {
        Scopes::of(Scope::PORTAL_DEFAULT).intersect(within)
    } else {
        let wanted = scopes("scopes", requested)?;
        if wanted.is_every() {
            return Err(invalid(
                "scopes: name a portal session's scopes one by one (* is for API keys)".into(),
            ));
        }
        if let Some(missing) = wanted.first_outside(within) {
            return Err(herald_store::MissingScope(missing).into());
        }
        wanted
    };
    if read_only {
        wanted = wanted.read_only();
    }
    if wanted.is_empty() {
        return Err(invalid(
            "scopes: the session would have no scope left (the caller's scopes and read_only leave none)"
                .into(),
        ));
    }
    Ok(wanted)
}

/// A portal theme as stored (`{accent_color, name, mode}`), checked.
pub fn theme(t: Option<&pb::PortalTheme>) -> Result<serde_json::Value> {
    let Some(t) = t else {
        return Ok(serde_json::json!({}));
    };
    let accent = t.accent_color.trim();
    let hex = accent.len() == 7
        && accent.starts_with('#')
        && accent[1..].chars().all(|c| c.is_ascii_hexdigit());
    if !accent.is_empty() && !hex {
        return Err(invalid(format!(
            "theme.accent_color {accent:?} must be #rrggbb (six hex digits)"
        )));
    }
    let name = t.name.trim();
    if name.chars().count() > MAX_THEME_NAME {
        return Err(invalid(format!(
            "theme.name is longer than {MAX_THEME_NAME} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            "theme.name must not contain control characters".into(),
        ));
    }
    let mode = match pb::ThemeMode::try_from(t.mode) {
        Ok(pb::ThemeMode::Unspecified) => "",
        Ok(pb::ThemeMode::Light) => "light",
        Ok(pb::ThemeMode::Dark) => "dark",
        Err(_) => return Err(invalid(format!("theme.mode {} is unknown", t.mode))),
    };
    Ok(serde_json::json!({
        "accent_color": accent.to_ascii_lowercase(),
        "name": name,
        "mode": mode,
    }))
}

/// A stored theme back to the API's.
pub fn theme_to_pb(v: &serde_json::Value) -> pb::PortalTheme {
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
    pb::PortalTheme {
        accent_color: text("accent_color").to_owned(),
        name: text("name").to_owned(),
        mode: match text("mode") {
            "light" => pb::ThemeMode::Light,
            "dark" => pb::ThemeMode::Dark,
            _ => pb::ThemeMode::Unspecified,
        } as i32,
    }
}

/// The origins allowed to embed a tenant's portal, checked and normalised (lowercase, no
/// duplicates).
pub fn allowed_origins(origins: &[String]) -> Result<Vec<String>> {
    if origins.len() > MAX_ALLOWED_ORIGINS {
        return Err(invalid(format!(
            "portal_allowed_origins has {} origins: at most {MAX_ALLOWED_ORIGINS}",
            origins.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(origins.len());
    for o in origins {
        let o = origin(o)?;
        if !out.contains(&o) {
            out.push(o);
        }
    }
    Ok(out)
}

/// One origin: `https://host[:port]`, or `http://` to localhost or 127.0.0.1.
fn origin(raw: &str) -> Result<String> {
    let bad = |why: &str| {
        invalid(format!(
            "portal_allowed_origins: {raw:?} {why} (an origin is https://host[:port], or http://localhost[:port] / http://127.0.0.1[:port])"
        ))
    };
    let o = raw.trim().to_ascii_lowercase();
    let (scheme, rest) = o.split_once("://").ok_or_else(|| bad("has no scheme"))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    if let Some(p) = port
        && !(p.len() <= 5 && p.parse::<u16>().is_ok_and(|n| n > 0))
    {
        return Err(bad("has a path or a bad port"));
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !host.starts_with(['-', '.'])
        && !host.ends_with(['-', '.']);
    if !host_ok {
        return Err(bad("has a path or a bad host name"));
    }
    match scheme {
        "https" => Ok(o),
        "http" if matches!(host, "localhost" | "127.0.0.1") => Ok(o),
        "http" => Err(bad("is http:// to a host other than localhost")),
        _ => Err(bad("has a scheme other than https")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_held_to_their_grammar() {
        assert_eq!(
            allowed_origins(&[
                "https://App.Example.com".into(),
                "https://app.example.com".into()
            ])
            .unwrap(),
            vec!["https://app.example.com"]
        );
        assert!(allowed_origins(&["https://a.example:8443".into()]).is_ok());
        assert!(allowed_origins(&["http://localhost:3000".into()]).is_ok());
        assert!(allowed_origins(&["http://127.0.0.1".into()]).is_ok());
        for bad in [
            "http://example.com",
            "https://example.com/path",
            "https://example.com:0",
            "https://example.com:99999",
            "example.com",
            "https://exa mple.com",
            "https://a.com; script-src *",
            "https://'self'",
            "javascript://x",
            "https://",
        ] {
            assert!(allowed_origins(&[bad.into()]).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("https://h{i}.example")).collect();
        assert!(allowed_origins(&many).is_err());
    }

    #[test]
    fn themes_are_checked() {
        let t = |accent: &str, name: &str| pb::PortalTheme {
            accent_color: accent.into(),
            name: name.into(),
            mode: 2,
        };
        let v = theme(Some(&t("#A1B2C3", "Acme"))).unwrap();
        assert_eq!(v["accent_color"], "#a1b2c3");
        assert_eq!(theme_to_pb(&v).mode, pb::ThemeMode::Dark as i32);
        assert!(theme(Some(&t("red", ""))).is_err());
        assert!(theme(Some(&t("#12345g", ""))).is_err());
        assert!(theme(Some(&t("", &"x".repeat(65)))).is_err());
        assert!(theme(Some(&t("", "a\u{7}"))).is_err());
    }

    #[test]
    fn lifetimes_have_bounds() {
        assert_eq!(seconds("ttl_seconds", None, SESSION_TTL).unwrap(), 3_600);
        assert!(seconds("ttl_seconds", Some(59), SESSION_TTL).is_err());
        assert!(seconds("ttl_seconds", Some(86_401), SESSION_TTL).is_err());
        assert_eq!(seconds("link_ttl_seconds", Some(10), LINK_TTL).unwrap(), 10);
    }
}
