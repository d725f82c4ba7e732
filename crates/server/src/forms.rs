//! What the public pages need to take a form: the same-origin check that
//! stands in for CSRF tokens, and the words a person reads when a campaign
//! operation refuses their input.
//!
//! Cross-site request forgery. Supporters' forms carry no token yet (staff
//! pages will get real tokens). Instead every POST must come from one of our
//! own pages: `Sec-Fetch-Site`, when the browser sends it, must say
//! `same-origin` (or `none`, typed by the user), and `Origin` (or, failing
//! that, `Referer`) must name this server, either as `server.base_url` or as
//! the `Host` the request was sent to. Browsers send `Origin` with every
//! cross-site POST, so a forged form is refused; a request with neither
//! header is not from a browser page and cannot ride on a browser's cookies
//! unnoticed, so it is let through. The supporter's session cookie is also
//! `SameSite=Lax`, which keeps it off cross-site POSTs in the first place.

use axum::extract::Request;
use axum::http::header::{HOST, ORIGIN, REFERER, X_FRAME_OPTIONS};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use kanpa_campaigns::CampaignError;

use crate::campaign_errors;
use crate::error::AppError;
use crate::i18n::Tr;
use crate::pages::{ErrorPage, RenderHtml};

/// The `host[:port]` of an absolute URL, lower-cased.
fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Drop any user-info ("user:pass@host").
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    (!authority.is_empty()).then(|| authority.to_ascii_lowercase())
}

/// Whether a form POST was sent by one of this server's own pages.
pub fn same_origin(headers: &HeaderMap, base_url: &str) -> bool {
    let header = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(site) = header(axum::http::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let claimed = match (header(ORIGIN), header(REFERER)) {
        (Some("null"), _) => return false,
        (Some(origin), _) => authority(origin),
        (None, Some(referer)) => authority(referer),
        (None, None) => return true,
    };
    let Some(claimed) = claimed else {
        return false;
    };
    let ours = authority(base_url);
    let host = header(HOST).map(str::to_ascii_lowercase);
    ours.as_deref() == Some(claimed.as_str()) || host.as_deref() == Some(claimed.as_str())
}

/// The answer to a form sent from another site: 403, nothing done.
pub fn cross_site(tr: Tr) -> Response {
    let page = ErrorPage {
        tr,
        heading: tr.t("error-heading"),
        message: tr.t("error-cross-site"),
        request_id: String::new(),
        status: 403,
    };
    (StatusCode::FORBIDDEN, Html(page.render_html())).into_response()
}

/// Pages that must not be shown inside another site's frame (clickjacking).
pub async fn deny_framing(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A refused input as a person reads it: the status to answer with, the
/// field to highlight, if any, and the sentence to show.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub field: Option<&'static str>,
    pub message: String,
}

pub(crate) fn field_name(tr: Tr, field: &str) -> Option<String> {
    let key = match field {
        "amount" => "field-amount",
        "email" => "field-email",
        "display_name" => "field-display-name",
        "message" => "field-message",
        "team" => "field-team",
        "reward" => "field-reward",
        _ => return None,
    };
    Some(tr.t(key))
}

/// What a supporter is told when a campaign operation refuses: the words
/// of [`crate::campaign_errors`] (shared with the API), with the field's
/// name in front when the message is about one field ("お名前: …"), since
/// the page shows it above the form. Errors that are not the person's to fix
/// (the database, the ledger) and unknown campaigns or pledges come back as
/// the `AppError` they are; a gateway failure is logged and explained.
pub fn refusal(tr: Tr, error: CampaignError) -> Result<Refusal, AppError> {
    let (status, field) = campaign_errors::status_and_field(&error);
    let message = campaign_errors::describe(&error, tr);
    match error {
        CampaignError::Invalid(invalid) => {
            let message = match field_name(tr, invalid.field) {
                Some(name) => tr.t_with("field-problem", &[("field", &name), ("problem", &message)]),
                None => message,
            };
            Ok(Refusal { status, field, message })
        }
        CampaignError::NotFound("team" | "reward") => Ok(Refusal { status, field, message }),
        CampaignError::NotFound(_) => Err(AppError::NotFound),
        CampaignError::Gateway(e) => {
            tracing::warn!(error = %e, "payment provider failed; nothing was charged");
            Ok(Refusal { status, field, message })
        }
        CampaignError::SlugTaken
        | CampaignError::WrongState { .. }
        | CampaignError::MoneyTaken { .. }
        | CampaignError::NotOpen
        | CampaignError::SoldOut
        | CampaignError::RewardUnavailable
        | CampaignError::PledgeLocked
        | CampaignError::SellerIncomplete(_)
        | CampaignError::LinkExpired => Ok(Refusal { status, field, message }),
        CampaignError::Ledger(e) => Err(AppError::Ledger(e)),
        CampaignError::Database(e) => Err(AppError::from(e)),
        CampaignError::Receipt(_) | CampaignError::Seller(_) => Err(AppError::Internal(anyhow::Error::new(error))),
    }
}

/// A campaign error on a page that only reads: unknown things are 404,
/// anything else is ours to fix.
pub fn read_failure(error: CampaignError) -> AppError {
    match error {
        CampaignError::NotFound(_) => AppError::NotFound,
        CampaignError::Ledger(e) => AppError::Ledger(e),
        CampaignError::Database(e) => AppError::from(e),
        CampaignError::Invalid(_)
        | CampaignError::SlugTaken
        | CampaignError::WrongState { .. }
        | CampaignError::MoneyTaken { .. }
        | CampaignError::NotOpen
        | CampaignError::SoldOut
        | CampaignError::RewardUnavailable
        | CampaignError::PledgeLocked
        | CampaignError::LinkExpired
        | CampaignError::SellerIncomplete(_)
        | CampaignError::Receipt(_)
        | CampaignError::Seller(_)
        | CampaignError::Gateway(_) => AppError::Internal(anyhow::Error::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_our_own_pages_may_post() {
        let base = "https://kanpa.example";
        assert!(same_origin(&headers(&[("origin", "https://kanpa.example")]), base));
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:9000"), ("host", "127.0.0.1:9000")]), base));
        assert!(same_origin(&headers(&[("referer", "https://kanpa.example/c/x/pledge")]), base));
        assert!(same_origin(&headers(&[]), base), "not a browser page");
        assert!(!same_origin(&headers(&[("origin", "https://evil.example")]), base));
        assert!(!same_origin(&headers(&[("origin", "https://kanpa.example.evil.example")]), base));
        assert!(!same_origin(&headers(&[("origin", "null")]), base));
        assert!(!same_origin(&headers(&[("referer", "https://evil.example/kanpa.example")]), base));
        assert!(!same_origin(&headers(&[("origin", "https://kanpa.example"), ("sec-fetch-site", "cross-site")]), base));
        assert!(same_origin(&headers(&[("origin", "https://kanpa.example"), ("sec-fetch-site", "same-origin")]), base));
    }
}
