//! Operator sessions: the login form (the operator token, checked with `Admin.ListTenants`),
//! the server-side sessions it opens, and logout.
//!
//! A session is a random 32-byte id in the `herald_console` cookie (HttpOnly,
//! SameSite=Strict, Path=/console, 12 h); the token stays in this process's memory, so a
//! restart logs every operator out, and several consoles need sticky routing for operators.
//! The login form itself is protected against CSRF with a pre-session cookie its token is
//! bound to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use herald_proto::v1 as pb;
use maud::{Markup, html};
use secrecy::{ExposeSecret, SecretString};

use crate::cookies::{self, Area};
use crate::error::{PageError, PageResult};
use crate::form::Fields;
use crate::{Console, csrf, grpc, layout};

/// How long an operator session lasts.
pub const TTL: Duration = Duration::from_secs(12 * 3600);

struct Entry {
    token: SecretString,
    expires: Instant,
}

/// The open operator sessions of this process.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Entry>>>);

impl Sessions {
    /// Opens a session for `token`; returns its id.
    fn open(&self, token: String) -> String {
        let id = csrf::random_token();
        let mut map = self.0.lock().expect("sessions lock");
        let now = Instant::now();
        map.retain(|_, e| e.expires > now);
        map.insert(
            id.clone(),
            Entry {
                token: token.into(),
                expires: now + TTL,
            },
        );
        id
    }

    fn token(&self, id: &str) -> Option<String> {
        let map = self.0.lock().expect("sessions lock");
        map.get(id)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.token.expose_secret().to_owned())
    }

    fn close(&self, id: &str) {
        self.0.lock().expect("sessions lock").remove(id);
    }
}

/// A logged-in operator.
pub struct Operator {
    id: String,
    token: String,
    /// The CSRF token of this session's forms.
    pub csrf: String,
}

impl Operator {
    fn read(state: &Console, headers: &HeaderMap) -> Result<Self, PageError> {
        let id = cookies::get(headers, cookies::CONSOLE).ok_or(PageError::LoggedOut)?;
        let token = state.operators.token(&id).ok_or(PageError::LoggedOut)?;
        Ok(Self {
            csrf: csrf::token(state.key(), &id),
            id,
            token,
        })
    }

    /// `msg` as a call with the operator token.
    pub fn call<T>(&self, msg: T) -> Result<tonic::Request<T>, PageError> {
        Ok(grpc::call(msg, &self.token)?)
    }
}

impl FromRequestParts<Console> for Operator {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &Console) -> Result<Self, PageError> {
        Operator::read(state, &parts.headers)
    }
}

/// Reads a form body and checks its CSRF token against `cookie`.
async fn checked_fields(
    req: Request,
    state: &Console,
    cookie: Option<&str>,
) -> Result<(Parts, Fields), PageError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|_| PageError::BadRequest("the form is larger than 1 MiB".into()))?;
    let fields = Fields::from_body(&bytes);
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    csrf::check(
        state.key(),
        origin,
        &state.config.origin(),
        cookie.unwrap_or_default(),
        fields.get(csrf::FIELD),
    )
    .map_err(PageError::Csrf)?;
    Ok((parts, fields))
}

/// A POSTed form of an operator session, its CSRF token and origin checked.
pub struct OperatorForm {
    pub operator: Operator,
    pub fields: Fields,
}

impl FromRequest<Console> for OperatorForm {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &Console) -> Result<Self, PageError> {
        let operator = Operator::read(state, req.headers())?;
        let (_, fields) = checked_fields(req, state, Some(&operator.id)).await?;
        Ok(Self { operator, fields })
    }
}

fn login_form(csrf_token: &str, error: Option<&str>) -> Markup {
    let body = html! {
        section class="error" {
            h1 { "Herald console" }
            @if let Some(e) = error { p class="notice bad" role="alert" data-testid="login-error" { (e) } }
            form method="post" action="/console/login" data-testid="login-form" {
                (layout::csrf_field(csrf_token))
                label for="token" { "Operator token" }
                input type="password" id="token" name="token" required autocomplete="current-password";
                p { button type="submit" id="login" { "Log in" } }
            }
        }
    };
    layout::bare("Log in", body)
}

/// A response with `cookie` set.
fn with_cookie(mut response: Response, cookie: String) -> Response {
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie.parse().expect("cookie text is ASCII"),
    );
    response
}

/// `GET /console/login`.
pub async fn login_page(State(state): State<Console>, headers: HeaderMap) -> Response {
    let pre = cookies::get(&headers, cookies::CONSOLE_LOGIN).unwrap_or_else(csrf::random_token);
    let page = login_form(&csrf::token(state.key(), &pre), None).into_response();
    with_cookie(
        page,
        cookies::set(
            Area::Console,
            state.config.https(),
            cookies::CONSOLE_LOGIN,
            &pre,
            3600,
        ),
    )
}

/// `POST /console/login` (`token`).
pub async fn login(State(state): State<Console>, req: Request) -> PageResult {
    let pre = cookies::get(req.headers(), cookies::CONSOLE_LOGIN);
    let (_, fields) = checked_fields(req, &state, pre.as_deref()).await?;
    let token = fields.get("token").unwrap_or_default().to_owned();
    let again = |message: &str| {
        let form = login_form(
            &csrf::token(state.key(), pre.as_deref().unwrap_or_default()),
            Some(message),
        );
        Ok((StatusCode::UNAUTHORIZED, form).into_response())
    };
    let probe = pb::ListTenantsRequest {
        page_size: 1,
        cursor: String::new(),
    };
    let req = match grpc::call(probe, &token) {
        Ok(r) if !token.is_empty() => r,
        _ => return again("The operator token was not accepted."),
    };
    match state.clients.admin().list_tenants(req).await {
        Ok(_) => {}
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) =>
        {
            return again("The operator token was not accepted.");
        }
        Err(s) => return Err(s.into()),
    }
    let id = state.operators.open(token);
    tracing::info!("operator logged in");
    let https = state.config.https();
    let response = with_cookie(
        Redirect::to("/console/").into_response(),
        cookies::set(Area::Console, https, cookies::CONSOLE, &id, TTL.as_secs()),
    );
    Ok(with_cookie(
        response,
        cookies::clear(Area::Console, https, cookies::CONSOLE_LOGIN),
    ))
}

/// `POST /console/logout`.
pub async fn logout(State(state): State<Console>, form: OperatorForm) -> Response {
    state.operators.close(&form.operator.id);
    let cookie = cookies::clear(Area::Console, state.config.https(), cookies::CONSOLE);
    with_cookie(Redirect::to("/console/login").into_response(), cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_hold_the_token_until_closed() {
        let s = Sessions::default();
        let id = s.open("op_token".into());
        assert_eq!(id.len(), 43);
        assert_eq!(s.token(&id).as_deref(), Some("op_token"));
        assert_eq!(s.token("other"), None);
        s.close(&id);
        assert_eq!(s.token(&id), None);
    }
}
