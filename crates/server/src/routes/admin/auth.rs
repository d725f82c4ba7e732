//! Signing in to the console with a password or an emailed single-use link,
//! signing out, and changing one's password.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::header::{REFERRER_POLICY, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use kanpa_messaging::email::{EmailAddress, EmailTemplate};
use kanpa_messaging::outbox::{self, NewEmail};
use serde::Deserialize;

use super::{ClientAddr, Staff, cookie, page, see_other, session_cookie};
use crate::app::AppState;
use crate::error::AppError;
use crate::forms;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::staff::{self, PasswordProblem, store};

#[derive(Template)]
#[template(path = "admin_sign_in.html")]
struct SignInPage {
    tr: Tr,
    email: String,
    error: Option<String>,
    notice: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn sign_in_page(lang: Lang) -> Response {
    let tr = lang.tr();
    page(StatusCode::OK, SignInPage { tr, email: String::new(), error: None, notice: None }.render_html())
}

fn refuse(tr: Tr, status: StatusCode, email: &str, key: &str) -> Response {
    let page_ = SignInPage { tr, email: email.to_owned(), error: Some(tr.t(key)), notice: None };
    page(status, page_.render_html())
}

/// With a password: checks it (argon2id), unless the account or the
/// client's address has failed too often lately. Without one: emails a
/// single-use link, saying the same whether or not the address is staff.
pub async fn sign_in(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    ClientAddr(addr): ClientAddr,
    Form(form): Form<SignInForm>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    if !forms::same_origin(&headers, &state.site.base_url) {
        return Ok(forms::cross_site(tr));
    }
    let email = form.email.trim().to_lowercase();
    if email.is_empty() {
        return Ok(refuse(tr, StatusCode::UNPROCESSABLE_ENTITY, &email, "admin-error-email-required"));
    }
    if email.len() > 254 || EmailAddress::parse(&email).is_err() {
        return Ok(refuse(tr, StatusCode::UNPROCESSABLE_ENTITY, &form.email, "campaign-error-email"));
    }
    if form.password.is_empty() {
        send_link(&state, &email, lang).await?;
        let notice = Some(tr.t("admin-link-sent"));
        return Ok(page(StatusCode::OK, SignInPage { tr, email, error: None, notice }.render_html()));
    }
    let account_scope = format!("account:{email}");
    let address_scope = format!("address:{addr}");
    let (by_account, by_address) = tokio::try_join!(
        store::recent_failures(&state.db, &account_scope),
        store::recent_failures(&state.db, &address_scope)
    )?;
    if !staff::may_attempt(by_account, by_address) {
        tracing::warn!(%addr, "sign-in refused: too many failed attempts");
        let mut response = refuse(tr, StatusCode::TOO_MANY_REQUESTS, &email, "admin-error-throttled");
        let retry = (staff::THROTTLE_MINUTES * 60).to_string();
        response.headers_mut().insert("retry-after", HeaderValue::from_str(&retry).expect("digits"));
        return Ok(response);
    }
    let user = store::user_by_email(&state.db, &email).await?;
    let verified = match &user {
        Some(user) => {
            let stored = user.password_hash.clone();
            let password = form.password.clone();
            // argon2 is deliberately slow: keep it off the async workers.
            tokio::task::spawn_blocking(move || stored.is_some_and(|h| staff::verify_password(&password, &h)))
                .await
                .map_err(|e| AppError::Internal(e.into()))?
        }
        None => {
            // Spend the same time as a real check, so timing does not tell
            // which addresses are staff.
            let password = form.password.clone();
            tokio::task::spawn_blocking(move || staff::verify_password(&password, &DUMMY_HASH))
                .await
                .map_err(|e| AppError::Internal(e.into()))?
        }
    };
    match (user, verified) {
        (Some(user), true) => Ok(signed_in(&state, user.id, &headers).await?),
        _ => {
            store::record_failure(&state.db, &[account_scope, address_scope]).await?;
            Ok(refuse(tr, StatusCode::UNAUTHORIZED, &email, "admin-error-credentials"))
        }
    }
}

/// An argon2id hash of a random string, checked when the address is
/// unknown.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let random: [u8; 16] = rand::random();
    staff::hash_password(&hex::encode(random)).unwrap_or_default()
});

/// Opens a fresh session (ending the one the browser presented, if any)
/// and sends the browser to the console.
async fn signed_in(state: &AppState, user: i64, headers: &HeaderMap) -> Result<Response, AppError> {
    let old = session_cookie(headers);
    let id = store::open_session(&state.db, user, old.as_deref()).await?;
    let mut response = see_other("/admin");
    response.headers_mut().insert(SET_COOKIE, cookie(state, &id, staff::SESSION_HOURS * 3600));
    Ok(response)
}

async fn send_link(state: &AppState, email: &str, lang: Lang) -> Result<(), AppError> {
    let Some(user) = store::user_by_email(&state.db, email).await? else {
        return Ok(());
    };
    let Ok(to) = EmailAddress::parse(&user.email) else {
        return Ok(());
    };
    let mut tx = state.db.begin().await?;
    let token = store::create_link(&mut tx, user.id, staff::LINK_MINUTES).await?;
    let message = NewEmail {
        key: format!("staff-sign-in:{}", &token[..32]),
        to,
        to_name: None,
        locale: lang.0,
        template: EmailTemplate::SignInLink {
            link: format!("{}/admin/sign-in/{token}", state.site.base_url),
            expires_in_minutes: staff::LINK_MINUTES as u32,
        },
    };
    outbox::enqueue(&mut tx, &message, &state.site.mail_domain).await.map_err(|e| AppError::Internal(e.into()))?;
    tx.commit().await?;
    state.workers.notify();
    Ok(())
}

/// A single-use link (emailed, printed by `kanpa user add`, or sent with
/// an invitation) opens a session once.
pub async fn redeem(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let mut response = match store::redeem_link(&state.db, &token).await? {
        Some(user) => signed_in(&state, user, &headers).await?,
        None => refuse(lang.tr(), StatusCode::GONE, "", "campaign-error-link-expired"),
    };
    // The token is in this URL: keep it out of any Referer.
    response.headers_mut().insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, AppError> {
    if super::check_form(&state, &headers, &staff, &form.csrf).is_err() {
        return Ok(super::forbidden(lang.tr()));
    }
    store::end_session(&state.db, &staff.session_id).await?;
    let mut response = see_other("/admin/sign-in");
    response.headers_mut().insert(SET_COOKIE, cookie(&state, "", 0));
    Ok(response)
}

#[derive(Template)]
#[template(path = "admin_password.html")]
struct PasswordPage {
    tr: Tr,
    email: String,
    csrf: String,
    error: Option<String>,
    done: bool,
}

pub async fn password_page(lang: Lang, staff: Staff) -> Response {
    let tr = lang.tr();
    let page_ = PasswordPage { tr, email: staff.email.clone(), csrf: staff.csrf(), error: None, done: false };
    page(StatusCode::OK, page_.render_html())
}

#[derive(Debug, Default, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// Sets a new password; every session of the person ends and this browser
/// gets a new one.
pub async fn change_password(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    if super::check_form(&state, &headers, &staff, &form.csrf).is_err() {
        return Ok(super::forbidden(tr));
    }
    let problem = match staff::check_new_password(&form.password) {
        Err(PasswordProblem::TooShort) => {
            Some(tr.t_with("admin-error-password-short", &[("min", &staff::PASSWORD_MIN.to_string())]))
        }
        Err(PasswordProblem::TooLong) => {
            Some(tr.t_with("campaign-error-too-long", &[("max", &staff::PASSWORD_MAX.to_string())]))
        }
        Ok(()) if form.password != form.confirm => Some(tr.t("admin-error-password-mismatch")),
        Ok(()) => None,
    };
    if let Some(error) = problem {
        let page_ =
            PasswordPage { tr, email: staff.email.clone(), csrf: staff.csrf(), error: Some(error), done: false };
        return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, page_.render_html()));
    }
    let password = form.password;
    let hash = tokio::task::spawn_blocking(move || staff::hash_password(&password))
        .await
        .map_err(|e| AppError::Internal(e.into()))??;
    let id = store::change_password(&state.db, staff.user_id, &hash).await?;
    let page_ = PasswordPage { tr, email: staff.email.clone(), csrf: staff::csrf_token(&id), error: None, done: true };
    let mut response = page(StatusCode::OK, page_.render_html());
    response.headers_mut().insert(SET_COOKIE, cookie(&state, &id, staff::SESSION_HOURS * 3600));
    Ok(response)
}
