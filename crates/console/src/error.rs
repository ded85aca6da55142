//! What a page shows when something fails, mapped once from every cause. A gRPC status
//! becomes the page a person understands: NOT_FOUND → 404 (another tenant's ids look exactly
//! like missing ones), PERMISSION_DENIED → 403, UNAUTHENTICATED → 401 "session expired",
//! INVALID_ARGUMENT / FAILED_PRECONDITION → 400 with the server's message (it says what to
//! fix), RESOURCE_EXHAUSTED → 429, anything else → 502 naming the status. Messages are text
//! in the page, escaped like everything else; an error page never carries tenant data.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::csp::FrameAncestors;
use crate::csrf::Refusal;
use crate::layout;

/// A failure that ends a request with an error page.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("the form was refused")]
    Csrf(Refusal),
    /// No session cookie, or one the console cannot read.
    #[error("no session")]
    NoSession,
    /// The operator is not logged in: back to the login form.
    #[error("not logged in")]
    LoggedOut,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
}

pub type PageResult<T = Response> = Result<T, PageError>;

impl PageError {
    /// HTTP status, heading and explanation of the page.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use tonic::Code;
        match self {
            PageError::Status(s) => match s.code() {
                Code::NotFound => (StatusCode::NOT_FOUND, "Not found", "There is nothing here, or it belongs to someone else.".into()),
                Code::PermissionDenied => (StatusCode::FORBIDDEN, "Not allowed", format!("This session may not do that: {}", s.message())),
                Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "Session expired", "Your session has expired or was ended. Open the page again from where you came.".into()),
                Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => {
                    (StatusCode::BAD_REQUEST, "Not accepted", s.message().to_owned())
                }
                Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "Too many requests", s.message().to_owned()),
                code => (StatusCode::BAD_GATEWAY, "Service unavailable", format!("Herald answered {code:?}: {}", s.message())),
            },
            PageError::Csrf(Refusal::Origin) => (StatusCode::FORBIDDEN, "Form refused", "The form was sent from another site. Nothing was changed.".into()),
            PageError::Csrf(Refusal::Token) => (StatusCode::FORBIDDEN, "Form refused", "The form is stale or was not sent from this page. Reload the page and try again; nothing was changed.".into()),
            PageError::NoSession => (StatusCode::UNAUTHORIZED, "Session expired", "There is no open session. Open the page again from where you came: a portal link works once and for a short time. If this page is shown inside another site, your browser may be blocking its cookies: open the link in a tab of its own.".into()),
            PageError::LoggedOut => (StatusCode::UNAUTHORIZED, "Logged out", "Log in again.".into()),
            PageError::NotFound => (StatusCode::NOT_FOUND, "Not found", "There is nothing here.".into()),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Not accepted", m.clone()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if matches!(self, PageError::LoggedOut) {
            return axum::response::Redirect::to("/console/login").into_response();
        }
        let (status, heading, text) = self.parts();
        if status.is_server_error() {
            tracing::warn!(status = %status, error = %text, "page failed");
        }
        let body = html! {
            section class="error" data-testid="error" {
                h1 { (heading) }
                p data-testid="error-message" { (text) }
            }
        };
        let mut response = (status, layout::bare(heading, body)).into_response();
        if matches!(self, PageError::NoSession) {
            // Nothing to read or click: it may say so inside any frame.
            response.extensions_mut().insert(FrameAncestors::anyone());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn page(e: PageError) -> (StatusCode, String) {
        let r = e.into_response();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn grpc_statuses_become_the_right_pages() {
        let (s, b) = page(tonic::Status::not_found("endpoint 1 not found").into()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(
            !b.contains("endpoint 1"),
            "no detail of the missing thing: {b}"
        );
        let (s, _) =
            page(tonic::Status::permission_denied("lacks \"endpoints:write\"").into()).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, b) = page(tonic::Status::unauthenticated("x").into()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(b.contains("Session expired"), "{b}");
        let (s, b) = page(tonic::Status::internal("<script>alert(1)</script>").into()).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert!(b.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{b}");
        assert!(!b.contains("<script>"), "{b}");
    }
}
