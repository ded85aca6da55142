//! Portal sessions: opening a link, the session a request carries, logging out.
//!
//! The session credential (`hs_…`, from `Portal.RedeemPortalLink`) lives in the HttpOnly
//! `herald_portal` cookie and is the bearer of every call a page makes: ingest and the ledger
//! decide what it may see and do. Beside it, `herald_portal_view` holds what pages need to
//! look right without a call (tenant name, scopes, theme, allowed origins, expiry), as JSON
//! signed with the console secret together with the credential (so it cannot be edited or
//! moved to another session). A forged or stale view only changes what the page offers, never
//! what the servers allow.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::html;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::Console;
use crate::cookies::{self, Area};
use crate::csp::FrameAncestors;
use crate::error::PageError;
use crate::form::Fields;
use crate::theme::Theme;
use crate::{csrf, grpc, layout};

/// What the pages of a session show without asking the servers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct View {
    pub tenant_id: String,
    pub tenant_name: String,
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub expires_at: i64,
    pub theme: Theme,
    pub origins: Vec<String>,
}

/// The signed cookie value of `view` for session `token`.
pub fn seal(key: &[u8], token: &str, view: &View) -> String {
    let json = serde_json::to_vec(view).expect("a view serializes");
    let sig = csrf::mac(key, &[b"view", token.as_bytes(), &json]);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&json),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// The view in `cookie` when its signature holds for session `token`.
pub fn open_seal(key: &[u8], token: &str, cookie: &str) -> Option<View> {
    let (json, sig) = cookie.split_once('.')?;
    let json = URL_SAFE_NO_PAD.decode(json).ok()?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    let expected = csrf::mac(key, &[b"view", token.as_bytes(), &json]);
    if !bool::from(expected.ct_eq(&sig)) {
        return None;
    }
    serde_json::from_slice(&json).ok()
}

/// The portal session of a request.
#[derive(Clone, Debug)]
pub struct Session {
    /// The `hs_` credential.
    pub token: String,
    pub view: View,
    /// The CSRF token its forms carry.
    pub csrf: String,
}

impl Session {
    /// The session in `headers`' cookies, if there is a valid, unexpired one.
    pub fn read(state: &Console, headers: &HeaderMap) -> Result<Self, PageError> {
        let token = cookies::get(headers, cookies::PORTAL).ok_or(PageError::NoSession)?;
        let view = cookies::get(headers, cookies::PORTAL_VIEW)
            .and_then(|v| open_seal(state.key(), &token, &v))
            .ok_or(PageError::NoSession)?;
        if view.expires_at <= chrono::Utc::now().timestamp() {
            return Err(tonic::Status::unauthenticated("session expired").into());
        }
        Ok(Self {
            csrf: csrf::token(state.key(), &token),
            token,
            view,
        })
    }

    /// Whether the session has `scope` (the servers check again).
    pub fn can(&self, scope: &str) -> bool {
        self.view.scopes.iter().any(|s| s == scope || s == "*")
    }

    /// `msg` as a call with this session's credential.
    pub fn call<T>(&self, msg: T) -> Result<tonic::Request<T>, PageError> {
        Ok(grpc::call(msg, &self.token)?)
    }
}

impl FromRequestParts<Console> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, PageError> {
        Session::read(state, &parts.headers)
    }
}

/// A POSTed form of a portal session, its CSRF token and origin checked.
pub struct PortalForm {
    pub session: Session,
    pub fields: Fields,
}

impl FromRequest<Console> for PortalForm {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &Console) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .map_err(|_| PageError::BadRequest("the form is larger than 1 MiB".into()))?;
        let fields = Fields::from_body(&bytes);
        csrf::check(
            state.key(),
            origin,
            &state.config.origin(),
            &session.token,
            fields.get(csrf::FIELD),
        )
        .map_err(PageError::Csrf)?;
        Ok(Self { session, fields })
    }
}

/// Lets the tenant's allowed origins frame every portal response of a session (its error
/// pages too, so an expired session says so inside the platform's page).
pub async fn frame(State(state): State<Console>, req: Request, next: Next) -> Response {
    let origins = view_of(&state, req.headers()).map(|v| v.origins);
    let mut response = next.run(req).await;
    if let Some(origins) = origins
        && response.extensions().get::<FrameAncestors>().is_none()
    {
        response
            .extensions_mut()
            .insert(FrameAncestors::origins(origins));
    }
    response
}

/// The signed view of the request's session, expired or not.
fn view_of(state: &Console, headers: &HeaderMap) -> Option<View> {
    let token = cookies::get(headers, cookies::PORTAL)?;
    open_seal(
        state.key(),
        &token,
        &cookies::get(headers, cookies::PORTAL_VIEW)?,
    )
}

/// `GET /portal/open?token=hl_…`: redeems the link once and sets the session cookies.
pub async fn open(
    State(state): State<Console>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, PageError> {
    let fields = Fields::from_query(query.as_deref());
    let token = fields.get("token").unwrap_or_default();
    if !token.starts_with("hl_") {
        return Ok(link_refused());
    }
    let answer = state
        .clients
        .portal()
        .redeem_portal_link(grpc::call(
            herald_proto::v1::RedeemPortalLinkRequest {},
            token,
        )?)
        .await;
    let r = match answer {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::Unauthenticated => return Ok(link_refused()),
        Err(s) => return Err(s.into()),
    };
    let expires_at = r.expires_at.map_or(0, |t| t.seconds);
    let max_age = (expires_at - chrono::Utc::now().timestamp()).max(1) as u64;
    let view = View {
        tenant_id: r.tenant_id,
        tenant_name: r.tenant_name,
        scopes: r.scopes,
        expires_at,
        theme: Theme::from_proto(r.theme.as_ref()),
        origins: r.allowed_origins,
    };
    let https = state.config.https();
    let sealed = seal(state.key(), &r.session_token, &view);
    let mut response = Redirect::to("/portal/").into_response();
    let h = response.headers_mut();
    for cookie in [
        cookies::set(
            Area::Portal,
            https,
            cookies::PORTAL,
            &r.session_token,
            max_age,
        ),
        cookies::set(Area::Portal, https, cookies::PORTAL_VIEW, &sealed, max_age),
    ] {
        h.append(
            header::SET_COOKIE,
            cookie.parse().expect("cookie text is ASCII"),
        );
    }
    response
        .extensions_mut()
        .insert(FrameAncestors::origins(view.origins));
    Ok(response)
}

/// The page of a link that cannot be opened (and no data).
fn link_refused() -> Response {
    let body = html! {
        section class="error" data-testid="error" {
            h1 { "This link cannot be opened" }
            p data-testid="error-message" {
                "The link has expired, was already used, or is not a portal link. "
                "A portal link opens once and for a short time: ask for a new one where you came from."
            }
        }
    };
    (
        axum::http::StatusCode::UNAUTHORIZED,
        layout::bare("Link expired", body),
    )
        .into_response()
}

/// `POST /portal/logout`: ends the session on the server and clears the cookies.
pub async fn logout(State(state): State<Console>, form: PortalForm) -> Result<Response, PageError> {
    let req = form
        .session
        .call(herald_proto::v1::EndPortalSessionRequest {})?;
    match state.clients.portal().end_portal_session(req).await {
        Ok(_) => {}
        // Already ended or expired: the cookies go all the same.
        Err(s) if s.code() == tonic::Code::Unauthenticated => {}
        Err(s) => return Err(s.into()),
    }
    let https = state.config.https();
    let body = html! {
        section class="error" data-testid="logged-out" {
            h1 { "Session ended" }
            p { "You have logged out of the webhooks portal." }
        }
    };
    let mut response = layout::bare("Session ended", body).into_response();
    for name in [cookies::PORTAL, cookies::PORTAL_VIEW] {
        let cookie = cookies::clear(Area::Portal, https, name);
        response.headers_mut().append(
            header::SET_COOKIE,
            cookie.parse().expect("cookie text is ASCII"),
        );
    }
    Ok(response)
}

/// `GET /portal/theme.css`: the session's theme (Herald's without a session).
pub async fn theme_css(State(state): State<Console>, headers: HeaderMap) -> Response {
    let theme = view_of(&state, &headers)
        .map(|v| v.theme)
        .unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        theme.css(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        View {
            tenant_id: "t".into(),
            tenant_name: "Acme".into(),
            scopes: vec!["deliveries:read".into()],
            expires_at: 4_000_000_000,
            theme: Theme::default(),
            origins: vec!["https://app.acme.example".into()],
        }
    }

    #[test]
    fn a_sealed_view_opens_only_for_its_session_and_key() {
        let key = b"0123456789abcdef0123456789abcdef";
        let sealed = seal(key, "hs_a", &view());
        assert_eq!(open_seal(key, "hs_a", &sealed).unwrap().tenant_name, "Acme");
        assert!(open_seal(key, "hs_b", &sealed).is_none());
        assert!(open_seal(b"another key entirely, 32 bytes..", "hs_a", &sealed).is_none());
        // An edited view (more scopes) fails the signature.
        let mut edited = view();
        edited.scopes.push("endpoints:write".into());
        let forged = seal(b"another key entirely, 32 bytes..", "hs_a", &edited);
        let (json, _) = forged.split_once('.').unwrap();
        let (_, sig) = sealed.split_once('.').unwrap();
        assert!(open_seal(key, "hs_a", &format!("{json}.{sig}")).is_none());
    }
}
