//! Security headers of every response.
//!
//! The pages carry no script at all, so the Content-Security-Policy allows none; styles come
//! only from the console's own stylesheets (no inline `style`, charts use presentation
//! attributes and classes), forms post only to the console. Who may frame a page is decided
//! per response: a handler (or the portal's session layer) attaches [`FrameAncestors`] with the
//! tenant's allowed origins; without it a page cannot be framed at all. A page that carries
//! neither data nor a control (a refused link, "no session") may be framed by anyone, so that
//! inside a platform's iframe it still tells the person what happened (a framed page without
//! anything to click or read cannot be abused by clickjacking).

use axum::http::{HeaderValue, header};
use axum::response::Response;

/// Who may embed this response in a frame.
#[derive(Clone, Debug, Default)]
pub struct FrameAncestors {
    /// The tenant's `portal_allowed_origins`.
    pub origins: Vec<String>,
    /// Any site (only pages with no data and no controls).
    pub anyone: bool,
}

impl FrameAncestors {
    pub fn origins(origins: Vec<String>) -> Self {
        Self {
            origins,
            anyone: false,
        }
    }

    pub fn anyone() -> Self {
        Self {
            origins: Vec::new(),
            anyone: true,
        }
    }
}

/// An origin as it may appear in a CSP source list: `scheme://host[:port]` and nothing that
/// could end the directive or add another source. Anything else is left out (ingest already
/// validates them; this keeps a bad row from widening the policy).
fn is_plain_origin(origin: &str) -> bool {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    })
}

/// The Content-Security-Policy for a page that `ancestors` may frame.
pub fn policy(ancestors: &FrameAncestors) -> String {
    let allowed: Vec<&str> = ancestors
        .origins
        .iter()
        .map(String::as_str)
        .filter(|o| is_plain_origin(o))
        .collect();
    let frame = if ancestors.anyone {
        "*".to_owned()
    } else if allowed.is_empty() {
        "'none'".to_owned()
    } else {
        allowed.join(" ")
    };
    format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         base-uri 'none'; frame-ancestors {frame}"
    )
}

/// Adds the security headers to `response` (the layer around every route).
pub async fn secure(mut response: Response) -> Response {
    let ancestors = response
        .extensions()
        .get::<FrameAncestors>()
        .cloned()
        .unwrap_or_default();
    let csp = policy(&ancestors);
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` with
    // the portal's own form POSTs, which the Origin check must then refuse (found by the
    // browser tests). Other sites still get no Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if ancestors.origins.is_empty() && !ancestors.anyone {
        // For browsers without frame-ancestors.
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_origins_nothing_may_frame_and_nothing_runs() {
        let p = policy(&FrameAncestors::default());
        assert!(p.contains("default-src 'none'"), "{p}");
        assert!(p.contains("style-src 'self'"), "{p}");
        assert!(p.contains("form-action 'self'"), "{p}");
        assert!(p.contains("base-uri 'none'"), "{p}");
        assert!(p.ends_with("frame-ancestors 'none'"), "{p}");
        assert!(!p.contains("script-src"), "{p}");
        assert!(!p.contains("unsafe"), "{p}");
    }

    #[test]
    fn allowed_origins_are_listed_and_anything_that_could_widen_the_policy_dropped() {
        let p = policy(&FrameAncestors::origins(vec![
            "https://app.acme.example".into(),
            "http://localhost:3000".into(),
            "https://x.example; script-src *".into(),
            "*".into(),
            "data:".into(),
        ]));
        assert!(
            p.ends_with("frame-ancestors https://app.acme.example http://localhost:3000"),
            "{p}"
        );
    }

    #[test]
    fn a_page_without_data_may_be_framed_by_anyone_and_still_runs_nothing() {
        let p = policy(&FrameAncestors::anyone());
        assert!(p.ends_with("frame-ancestors *"), "{p}");
        assert!(p.starts_with("default-src 'none'"), "{p}");
    }

    #[tokio::test]
    async fn every_response_gets_the_security_headers() {
        let r = secure(Response::new(axum::body::Body::empty())).await;
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .ends_with("frame-ancestors 'none'")
        );
        let mut framed = Response::new(axum::body::Body::empty());
        framed
            .extensions_mut()
            .insert(FrameAncestors::origins(vec!["https://app.example".into()]));
        let r = secure(framed).await;
        assert!(r.headers().get("x-frame-options").is_none());
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .ends_with("frame-ancestors https://app.example")
        );
    }
}
