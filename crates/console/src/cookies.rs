//! The console's cookies and their attributes.
//!
//! All are HttpOnly (no script could read them anyway: the pages have none) and scoped to
//! their area's path. The portal's cookies must reach the console from inside a platform's
//! cross-site iframe: behind https they are `Secure; SameSite=None; Partitioned` (CHIPS, so
//! browsers that block third-party cookies keep them, partitioned by the embedding site); over
//! plain http browsers refuse `SameSite=None`, so they are `SameSite=Lax` and the portal works
//! only as a page of its own. The operator's cookie is never framed: `SameSite=Strict`.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;

/// The portal session credential (`hs_…`).
pub const PORTAL: &str = "herald_portal";
/// The portal session's signed view (tenant name, scopes, theme, allowed origins).
pub const PORTAL_VIEW: &str = "herald_portal_view";
/// The operator session id.
pub const CONSOLE: &str = "herald_console";
/// The operator login form's pre-session cookie (what its CSRF token is bound to).
pub const CONSOLE_LOGIN: &str = "herald_console_login";

/// Which area a cookie belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    Portal,
    Console,
}

/// A `Set-Cookie` value: `name=value` for `max_age` seconds (0 clears it).
pub fn set(area: Area, https: bool, name: &str, value: &str, max_age: u64) -> String {
    let mut c = match area {
        Area::Portal => format!("{name}={value}; Path=/portal; Max-Age={max_age}; HttpOnly"),
        Area::Console => format!("{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly"),
    };
    c.push_str(match (area, https) {
        (Area::Portal, true) => "; Secure; SameSite=None; Partitioned",
        (Area::Portal, false) => "; SameSite=Lax",
        (Area::Console, true) => "; Secure; SameSite=Strict",
        (Area::Console, false) => "; SameSite=Strict",
    });
    c
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear(area: Area, https: bool, name: &str) -> String {
    set(area, https, name, "", 0)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn portal_cookies_over_https_work_in_a_cross_site_iframe() {
        let c = set(Area::Portal, true, PORTAL, "hs_x", 3600);
        assert_eq!(
            c,
            "herald_portal=hs_x; Path=/portal; Max-Age=3600; HttpOnly; Secure; SameSite=None; \
             Partitioned"
        );
    }

    #[test]
    fn portal_cookies_over_http_are_lax_and_not_secure() {
        let c = set(Area::Portal, false, PORTAL, "hs_x", 60);
        assert_eq!(
            c,
            "herald_portal=hs_x; Path=/portal; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        assert!(!c.contains("Secure"));
    }

    #[test]
    fn operator_cookies_are_strict_and_secure_under_https() {
        let c = set(Area::Console, true, CONSOLE, "id", 43_200);
        assert!(c.starts_with("herald_console=id; Path=/console; Max-Age=43200; HttpOnly"));
        assert!(c.ends_with("; Secure; SameSite=Strict"), "{c}");
        let c = set(Area::Console, false, CONSOLE, "id", 43_200);
        assert!(c.ends_with("; HttpOnly; SameSite=Strict"), "{c}");
        assert!(clear(Area::Console, false, CONSOLE).contains("Max-Age=0"));
    }

    #[test]
    fn reads_a_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; herald_portal=hs_y"));
        h.append(COOKIE, HeaderValue::from_static("herald_console=z"));
        assert_eq!(get(&h, PORTAL).as_deref(), Some("hs_y"));
        assert_eq!(get(&h, CONSOLE).as_deref(), Some("z"));
        assert_eq!(get(&h, "herald"), None);
    }
}
