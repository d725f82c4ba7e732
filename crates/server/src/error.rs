//! One error type for every handler, and the one place that decides what a
//! person sees for each outcome.
//!
//! A handler returns `Result<_, AppError>`. `AppError::into_response` picks
//! the status with a `match` that has no catch-all arm, so a new domain error
//! forces a decision here. The body is rendered by [`render_errors`], which
//! knows the request: HTML in the user's language for pages, JSON under
//! `/api` and `/webhooks`. Unexpected failures are logged once, with their
//! cause chain, and reach the client as an opaque 500 with the request id.

use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use kanpa_ledger::{EntryError, LedgerError};

use crate::i18n::{Tr, negotiate};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Internal(e.into())
    }
}

/// What the renderer needs to know about an error: its status, a stable
/// machine-readable code, and the message key to translate.
#[derive(Clone, Debug)]
pub struct ErrorReport {
    pub status: StatusCode,
    pub code: &'static str,
    pub message_key: &'static str,
}

impl ErrorReport {
    fn new(status: StatusCode, code: &'static str, message_key: &'static str) -> ErrorReport {
        ErrorReport { status, code, message_key }
    }
}

fn ledger_report(e: &LedgerError) -> ErrorReport {
    use StatusCode as S;
    match e {
        LedgerError::Entry(entry) => match entry {
            EntryError::TooFewPostings
            | EntryError::ZeroPosting
            | EntryError::Unbalanced { .. }
            | EntryError::Overflow
            | EntryError::BadIdempotencyKey
            | EntryError::EmptyDescription => {
                ErrorReport::new(S::UNPROCESSABLE_ENTITY, "invalid_entry", "error-unprocessable")
            }
        },
        // A foreign account is reported exactly like a missing one: the
        // caller learns nothing about other organisations.
        LedgerError::UnknownAccount(_) | LedgerError::ForeignAccount(_) | LedgerError::EntryNotFound(_) => {
            ErrorReport::new(S::NOT_FOUND, "not_found", "error-not-found")
        }
        LedgerError::CurrencyMismatch { .. } | LedgerError::Overflow => {
            ErrorReport::new(S::UNPROCESSABLE_ENTITY, "invalid_amount", "error-unprocessable")
        }
        LedgerError::IdempotencyConflict(_)
        | LedgerError::AlreadyReversed(_)
        | LedgerError::DuplicateOrganisation(_)
        | LedgerError::DuplicateAccountCode(_) => ErrorReport::new(S::CONFLICT, "conflict", "error-conflict"),
        LedgerError::Corrupt(_) | LedgerError::Database(_) => {
            ErrorReport::new(S::INTERNAL_SERVER_ERROR, "internal", "error-internal")
        }
    }
}

impl AppError {
    pub fn report(&self) -> ErrorReport {
        use StatusCode as S;
        match self {
            AppError::NotFound => ErrorReport::new(S::NOT_FOUND, "not_found", "error-not-found"),
            AppError::BadRequest(code) => ErrorReport::new(S::BAD_REQUEST, code, "error-bad-request"),
            AppError::Ledger(e) => ledger_report(e),
            AppError::Unavailable(_) => ErrorReport::new(S::SERVICE_UNAVAILABLE, "unavailable", "error-unavailable"),
            AppError::Internal(_) => ErrorReport::new(S::INTERNAL_SERVER_ERROR, "internal", "error-internal"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let report = self.report();
        if report.status.is_server_error() {
            // The one place the cause chain is logged; the request span
            // carries the request id.
            tracing::error!(error = format!("{self:#}"), "request failed");
        }
        let mut response = report.status.into_response();
        response.extensions_mut().insert(report);
        response
    }
}

/// Gives error responses a body in the requester's language and format.
pub async fn render_errors(request: Request, next: Next) -> Response {
    let locale = negotiate(request.uri(), request.headers());
    let path = request.uri().path().to_owned();
    let wants_json = path.starts_with("/api/") || path.starts_with("/webhooks/") || accepts_json(request.headers());
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let mut response = next.run(request).await;
    let report = match response.extensions_mut().remove::<ErrorReport>() {
        Some(report) => report,
        // Errors from middleware (timeouts, body limits) arrive without a
        // body of ours.
        None if response.status().is_client_error() || response.status().is_server_error() => {
            if response.headers().contains_key(CONTENT_TYPE) {
                return response;
            }
            fallback_report(response.status())
        }
        None => return response,
    };
    let tr = Tr(locale);
    let message = tr.t(report.message_key);
    let mut rendered = if wants_json {
        let body = serde_json::json!({
            "error": { "code": report.code, "message": message, "request_id": request_id }
        });
        (report.status, axum::Json(body)).into_response()
    } else {
        let page = crate::pages::ErrorPage {
            tr,
            heading: tr.t("error-heading"),
            message,
            request_id: tr.t_with("error-request-id", &[("id", &request_id)]),
            status: report.status.as_u16(),
        };
        (report.status, Html(crate::pages::RenderHtml::render_html(&page))).into_response()
    };
    for (name, value) in response.headers() {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rendered.headers_mut().append(name.clone(), value.clone());
        }
    }
    rendered.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
    rendered
}

fn fallback_report(status: StatusCode) -> ErrorReport {
    let key = match status {
        StatusCode::NOT_FOUND => "error-not-found",
        StatusCode::REQUEST_TIMEOUT => "error-timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "error-payload-too-large",
        StatusCode::CONFLICT => "error-conflict",
        StatusCode::UNPROCESSABLE_ENTITY => "error-unprocessable",
        StatusCode::SERVICE_UNAVAILABLE => "error-unavailable",
        s if s.is_server_error() => "error-internal",
        _ => "error-bad-request",
    };
    ErrorReport::new(status, "http_error", key)
}

fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json") && !v.contains("text/html"))
}

/// The fallback route.
pub async fn not_found() -> AppError {
    AppError::NotFound
}
