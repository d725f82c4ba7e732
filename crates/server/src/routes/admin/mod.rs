//! `/admin`: the staff console, server-rendered in Japanese and English.
//!
//! Signing in (`auth`), the books of one organisation (`books`: fund
//! balances, the journal, manual entries and reversals) and its people
//! (`people`: staff, invitations, API tokens). Every page of an
//! organisation lives under `/admin/o/{org}/…`; an organisation the
//! signed-in person has no role in answers exactly like one that does not
//! exist (404), and so does an entry, account or token of another
//! organisation or, for a treasurer limited to one team, of another fund.
//!
//! Every state-changing form passes the same-origin check of
//! [`crate::forms`] and carries the session's CSRF token
//! ([`crate::staff::csrf_token`]); either failing is a 403 with nothing done.

mod auth;
mod books;
mod campaigns;
mod exports;
mod people;
pub(crate) mod pledges;
mod reconciliation;
mod salons;
mod setup;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{CACHE_CONTROL, COOKIE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::from_fn;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::AppState;
use crate::error::AppError;
use crate::forms;
use crate::i18n::{Tr, negotiate};
use crate::pages::{ErrorPage, RenderHtml};
use crate::staff::{self, Access};

pub const SESSION_COOKIE: &str = "kanpa_staff";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(books::home))
        .route("/admin/sign-in", get(auth::sign_in_page).post(auth::sign_in))
        .route("/admin/sign-in/{token}", get(auth::redeem))
        .route("/admin/sign-out", post(auth::sign_out))
        .route("/admin/password", get(auth::password_page).post(auth::change_password))
        .route("/admin/o/{org}", get(books::dashboard))
        .route("/admin/o/{org}/journal", get(books::journal))
        .route("/admin/o/{org}/journal/{entry}", get(books::entry))
        .route("/admin/o/{org}/journal/{entry}/reverse", post(books::reverse))
        .route("/admin/o/{org}/journal/{entry}/receipt", get(books::entry_receipt))
        .route("/admin/o/{org}/entries/new", get(books::new_entry).post(books::record_entry))
        .route("/admin/o/{org}/campaigns/new", get(setup::new_campaign).post(setup::create_campaign))
        .route("/admin/o/{org}/campaigns/{campaign}", get(campaigns::campaign))
        .route("/admin/o/{org}/campaigns/{campaign}/edit", post(setup::edit_campaign))
        .route("/admin/o/{org}/campaigns/{campaign}/teams", post(setup::add_team))
        .route("/admin/o/{org}/campaigns/{campaign}/publish", post(setup::publish))
        .route("/admin/o/{org}/campaigns/{campaign}/rewards", post(setup::add_reward))
        .route("/admin/o/{org}/campaigns/{campaign}/teams/{team}", post(setup::edit_team))
        .route("/admin/o/{org}/campaigns/{campaign}/rewards/{reward}", post(setup::edit_reward))
        .route("/admin/o/{org}/campaigns/{campaign}/rewards/{reward}/retire", post(setup::retire_reward))
        .route("/admin/o/{org}/campaigns/{campaign}/close", post(setup::close_campaign))
        .route("/admin/o/{org}/campaigns/{campaign}/cancel", post(setup::cancel_campaign))
        .route("/admin/o/{org}/salons/new", get(setup::new_salon).post(setup::create_salon))
        .route("/admin/o/{org}/salons/{salon}/edit", post(setup::edit_salon))
        .route("/admin/o/{org}/salons/{salon}/tiers/{tier}", post(setup::edit_tier))
        .route("/admin/o/{org}/salons/{salon}/tiers", post(setup::add_tier))
        .route("/admin/o/{org}/salons/{salon}/status", post(setup::salon_status))
        .route("/admin/o/{org}/salons/{salon}", get(salons::salon))
        .route("/admin/o/{org}/salons/{salon}/patrons/{patron}", get(salons::patron))
        .route("/admin/o/{org}/salons/{salon}/posts", post(salons::add_post))
        .route("/admin/o/{org}/salons/{salon}/posts/{post}/delete", post(salons::delete_post))
        .route("/admin/o/{org}/salons/{salon}/patrons/{patron}/refund", post(salons::refund_invoice))
        .route("/admin/o/{org}/pledges", get(pledges::list))
        .route("/admin/o/{org}/pledges/{pledge}", get(pledges::detail))
        .route("/admin/o/{org}/pledges/{pledge}/refund", post(pledges::refund))
        .route("/admin/o/{org}/staff", get(people::staff).post(people::invite))
        .route("/admin/o/{org}/staff/{user}/remove", post(people::remove))
        .route("/admin/o/{org}/tokens", get(people::tokens).post(people::create_token))
        .route("/admin/o/{org}/tokens/{id}/revoke", post(people::revoke_token))
        .route("/admin/o/{org}/exports", get(exports::exports))
        .route("/admin/o/{org}/exports/download", get(exports::download))
        .route("/admin/o/{org}/reconciliation", get(reconciliation::show))
        .route("/admin/o/{org}/reconciliation/run", post(reconciliation::run))
        .route("/admin/o/{org}/reconciliation/payouts/{payout}/confirm", post(reconciliation::confirm))
        .route("/admin/o/{org}/reconciliation/statement", post(reconciliation::statement))
        .route_layer(from_fn(forms::deny_framing))
}

/// The routes of the console, for the authorisation tests: (method, path
/// pattern, what the role must be able to do).
pub const ROUTES: &[(&str, &str, Need)] = &[
    ("GET", "/admin/o/{org}", Need::Read),
    ("GET", "/admin/o/{org}/journal", Need::Read),
    ("GET", "/admin/o/{org}/journal/{entry}", Need::Read),
    ("POST", "/admin/o/{org}/journal/{entry}/reverse", Need::Books),
    ("GET", "/admin/o/{org}/journal/{entry}/receipt", Need::Read),
    ("GET", "/admin/o/{org}/entries/new", Need::Books),
    ("POST", "/admin/o/{org}/entries/new", Need::Books),
    ("GET", "/admin/o/{org}/campaigns/new", Need::Organise),
    ("POST", "/admin/o/{org}/campaigns/new", Need::Organise),
    ("GET", "/admin/o/{org}/salons/new", Need::Organise),
    ("POST", "/admin/o/{org}/salons/new", Need::Organise),
    ("POST", "/admin/o/{org}/salons/{salon}/edit", Need::Organise),
    ("GET", "/admin/o/{org}/campaigns/{campaign}", Need::Read),
    ("POST", "/admin/o/{org}/campaigns/{campaign}/edit", Need::Organise),
    ("POST", "/admin/o/{org}/campaigns/{campaign}/teams", Need::Organise),
    ("POST", "/admin/o/{org}/campaigns/{campaign}/publish", Need::Organise),
    ("POST", "/admin/o/{org}/campaigns/{campaign}/rewards", Need::Organise),
    ("POST", "/admin/o/{org}/campaigns/{campaign}/teams/{team}", Need::Organise),
    ("POST", "/admin/o/{org}/campaigns/{campaign}/rewards/{reward}", Need::Organise),
    ("POST", "/admin/o/{org}/campaigns/{campaign}/rewards/{reward}/retire", Need::Organise),
    ("POST", "/admin/o/{org}/campaigns/{campaign}/close", Need::Organise),
    ("POST", "/admin/o/{org}/campaigns/{campaign}/cancel", Need::Organise),
    ("POST", "/admin/o/{org}/salons/{salon}/tiers/{tier}", Need::Organise),
    ("POST", "/admin/o/{org}/salons/{salon}/tiers", Need::Organise),
    ("POST", "/admin/o/{org}/salons/{salon}/status", Need::Organise),
    ("GET", "/admin/o/{org}/salons/{salon}", Need::Read),
    ("GET", "/admin/o/{org}/salons/{salon}/patrons/{patron}", Need::Read),
    ("POST", "/admin/o/{org}/salons/{salon}/posts", Need::Organise),
    ("POST", "/admin/o/{org}/salons/{salon}/posts/{post}/delete", Need::Organise),
    ("POST", "/admin/o/{org}/salons/{salon}/patrons/{patron}/refund", Need::Books),
    ("GET", "/admin/o/{org}/pledges", Need::Read),
    ("GET", "/admin/o/{org}/pledges/{pledge}", Need::Read),
    ("POST", "/admin/o/{org}/pledges/{pledge}/refund", Need::Books),
    ("GET", "/admin/o/{org}/staff", Need::Staff),
    ("POST", "/admin/o/{org}/staff", Need::Staff),
    ("POST", "/admin/o/{org}/staff/{user}/remove", Need::Staff),
    ("GET", "/admin/o/{org}/tokens", Need::Staff),
    ("POST", "/admin/o/{org}/tokens", Need::Staff),
    ("POST", "/admin/o/{org}/tokens/{id}/revoke", Need::Staff),
    ("GET", "/admin/o/{org}/exports", Need::Books),
    ("GET", "/admin/o/{org}/exports/download", Need::Books),
    ("GET", "/admin/o/{org}/reconciliation", Need::WholeBooks),
    ("POST", "/admin/o/{org}/reconciliation/run", Need::WholeBooks),
    ("POST", "/admin/o/{org}/reconciliation/payouts/{payout}/confirm", Need::WholeBooks),
    ("POST", "/admin/o/{org}/reconciliation/statement", Need::WholeBooks),
];

/// What a console route needs of the person's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any role in the organisation.
    Read,
    /// Owner or organiser.
    Organise,
    /// Owner or treasurer.
    Books,
    /// Owner or treasurer of the whole organisation: what concerns every
    /// fund at once (reconciliation with the payment processor). A treasurer
    /// limited to one team is refused (403).
    WholeBooks,
    /// Owner.
    Staff,
}

impl Need {
    pub fn granted_to(self, role: staff::Role) -> bool {
        match self {
            Need::Read => true,
            Need::Organise => role.can_organise(),
            Need::Books | Need::WholeBooks => role.can_keep_books(),
            Need::Staff => role.can_manage_staff(),
        }
    }
}

// ---------------------------------------------------------------- the session

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .find(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The session cookie: `HttpOnly`, `SameSite=Lax`, `Secure` unless the
/// server runs on plain-HTTP local development (`server.secure_cookies`),
/// scoped to the console's path.
fn cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.server.secure_cookies { "; Secure" } else { "" };
    let text = format!("{SESSION_COOKIE}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in staff user.
#[derive(Clone, Debug)]
pub struct Staff {
    pub session_id: String,
    pub user_id: i64,
    pub email: String,
}

impl Staff {
    pub fn csrf(&self) -> String {
        staff::csrf_token(&self.session_id)
    }
}

/// Not signed in: to the sign-in page.
pub struct SignInFirst;

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        see_other("/admin/sign-in")
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Staff, Response> {
        let Some(session_id) = session_cookie(&parts.headers) else {
            return Err(SignInFirst.into_response());
        };
        match staff::store::session_user(&state.db, &session_id).await {
            Ok(Some((user_id, email))) => Ok(Staff { session_id, user_id, email }),
            Ok(None) => Err(SignInFirst.into_response()),
            Err(e) => Err(AppError::from(e).into_response()),
        }
    }
}

/// The client's address, for limiting sign-in attempts.
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let addr = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string());
        Ok(ClientAddr(addr.unwrap_or_else(|| "unknown".to_owned())))
    }
}

/// The signed-in person's standing in `org`, if `need` is granted; an
/// organisation they have no role in is not found, and a role that lacks
/// `need` is forbidden.
pub async fn access(state: &AppState, staff: &Staff, org: &str, need: Need) -> Result<Access, Refused> {
    let access = staff::store::access_in(&state.db, staff.user_id, org)
        .await
        .map_err(|e| Refused::Error(e.into()))?
        .ok_or(Refused::Error(AppError::NotFound))?;
    if !need.granted_to(access.role) || (need == Need::WholeBooks && access.team.is_some()) {
        return Err(Refused::Forbidden);
    }
    Ok(access)
}

/// Why a console request was not carried out.
pub enum Refused {
    /// 403: the role does not allow it, or the form is not from our page.
    Forbidden,
    Error(AppError),
}

impl From<AppError> for Refused {
    fn from(e: AppError) -> Refused {
        Refused::Error(e)
    }
}

impl From<sqlx::Error> for Refused {
    fn from(e: sqlx::Error) -> Refused {
        Refused::Error(e.into())
    }
}

impl From<kanpa_ledger::LedgerError> for Refused {
    fn from(e: kanpa_ledger::LedgerError) -> Refused {
        Refused::Error(e.into())
    }
}

/// A console handler's result, rendered in the request's language.
pub struct Answer(pub Tr, pub Result<Response, Refused>);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self.1 {
            Ok(response) => response,
            Err(Refused::Forbidden) => forbidden(self.0),
            Err(Refused::Error(e)) => e.into_response(),
        }
    }
}

pub fn forbidden(tr: Tr) -> Response {
    let page = ErrorPage {
        tr,
        heading: tr.t("error-heading"),
        message: tr.t("admin-forbidden"),
        request_id: String::new(),
        status: 403,
    };
    (StatusCode::FORBIDDEN, [(CACHE_CONTROL, "no-store")], Html(page.render_html())).into_response()
}

/// The checks every state-changing console form passes: sent by one of our
/// pages, and carrying this session's CSRF token.
pub fn check_form(state: &AppState, headers: &HeaderMap, staff: &Staff, csrf: &str) -> Result<(), Refused> {
    if forms::same_origin(headers, &state.site.base_url) && staff::csrf_matches(&staff.session_id, csrf) {
        Ok(())
    } else {
        Err(Refused::Forbidden)
    }
}

pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned()), (CACHE_CONTROL, "no-store".to_owned())]).into_response()
}

pub fn page(status: StatusCode, html: String) -> Response {
    (status, [(CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// What the console's navigation needs to know.
pub struct Nav {
    pub org_slug: String,
    pub org_name: String,
    pub email: String,
    pub csrf: String,
    pub books: bool,
    pub people: bool,
    pub organise: bool,
    /// Whether the signed-in person is limited to one team's fund: the
    /// whole organisation's pages (reconciliation) are not offered.
    pub team_limited: bool,
    /// The team a limited treasurer sees, named (where the page knows it).
    pub team_scope: Option<String>,
}

impl Nav {
    pub fn new(staff: &Staff, access: &Access, team_scope: Option<String>) -> Nav {
        Nav {
            org_slug: access.org.slug.clone(),
            org_name: access.org.name.clone(),
            email: staff.email.clone(),
            csrf: staff.csrf(),
            books: access.role.can_keep_books(),
            people: access.role.can_manage_staff(),
            organise: access.role.can_organise(),
            team_limited: access.team.is_some(),
            team_scope,
        }
    }
}

pub fn lang_of(parts_uri: &axum::http::Uri, headers: &HeaderMap) -> Tr {
    Tr(negotiate(parts_uri, headers))
}
