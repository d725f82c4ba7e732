//! `/sandbox/checkout/{id}`: the sandbox gateway's Checkout page, so every
//! payment flow can be clicked through with no Stripe account. It is marked
//! as a test on every screen, and exists only while `payments.gateway` is
//! `sandbox` (404 otherwise; production refuses the sandbox altogether).
//!
//! The buttons become Stripe-shaped events in the same inbox real webhooks
//! use (`Sandbox::act`); the workers apply them as they would Stripe's.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use kanpa_payments::sandbox::{Sandbox, SandboxAction, SandboxError, SandboxResult, SandboxSession};
use serde::Deserialize;

use crate::app::AppState;
use crate::config::GatewayKind;
use crate::error::AppError;
use crate::forms;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;

pub fn router() -> Router<AppState> {
    Router::new().route("/sandbox/checkout/{id}", get(checkout).post(act)).route_layer(from_fn(forms::deny_framing))
}

/// Which screen of the fake Checkout to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Choose,
    /// Payment mode: the bank's authentication challenge.
    Authenticate,
    /// The session was completed or expired already.
    Closed,
}

#[derive(Template)]
#[template(path = "sandbox.html")]
struct SandboxPage {
    tr: Tr,
    id: String,
    description: String,
    amount: String,
    email: String,
    setup: bool,
    cancel_url: String,
    step: Step,
    declined: Option<String>,
}

impl SandboxPage {
    fn new(tr: Tr, session: &SandboxSession, step: Step) -> SandboxPage {
        SandboxPage {
            tr,
            id: session.id.clone(),
            description: session.description.clone(),
            amount: session.money().map(|m| m.format(tr.0)).unwrap_or_else(|| session.amount.to_string()),
            email: session.email.clone(),
            setup: session.is_setup(),
            cancel_url: session.cancel_url.clone(),
            step: if session.status == "open" { step } else { Step::Closed },
            declined: None,
        }
    }

    fn respond(self, status: StatusCode) -> Response {
        (status, [(CACHE_CONTROL, "no-store")], Html(self.render_html())).into_response()
    }
}

async fn open_session(state: &AppState, id: &str) -> Result<SandboxSession, AppError> {
    if state.config.payments.gateway != GatewayKind::Sandbox {
        return Err(AppError::NotFound);
    }
    Sandbox::session(&state.db, id).await?.ok_or(AppError::NotFound)
}

async fn checkout(State(state): State<AppState>, lang: Lang, Path(id): Path<String>) -> Result<Response, AppError> {
    let session = open_session(&state, &id).await?;
    Ok(SandboxPage::new(lang.tr(), &session, Step::Choose).respond(StatusCode::OK))
}

#[derive(Debug, Deserialize)]
struct ActForm {
    action: String,
}

async fn act(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    let session = open_session(&state, &id).await?;
    if !forms::same_origin(&headers, &state.site.base_url) {
        return Ok(forms::cross_site(tr));
    }
    let action = match (form.action.as_str(), session.is_setup()) {
        ("succeed", _) => SandboxAction::Succeed,
        ("decline", _) => SandboxAction::Decline,
        // Payment mode asks the bank first; setup mode saves a card that
        // will ask when it is charged later.
        ("authenticate", false) => {
            return Ok(SandboxPage::new(tr, &session, Step::Authenticate).respond(StatusCode::OK));
        }
        ("authenticate", true) | ("authenticate_pass", _) => SandboxAction::Authenticate(true),
        ("authenticate_fail", _) => SandboxAction::Authenticate(false),
        _ => return Err(AppError::BadRequest("unknown_action")),
    };
    let result = Sandbox::act(&state.db, &id, action).await.map_err(|e| match e {
        SandboxError::UnknownSession(_) => AppError::NotFound,
        SandboxError::Database(e) => AppError::from(e),
    })?;
    match result {
        SandboxResult::Completed { redirect } => {
            state.workers.notify();
            Ok((StatusCode::SEE_OTHER, [(LOCATION, redirect)]).into_response())
        }
        SandboxResult::Declined { code } => {
            let mut page = SandboxPage::new(tr, &session, Step::Choose);
            page.declined = Some(match code {
                "authentication_failed" => tr.t("sandbox-declined-authentication"),
                _ => tr.t("sandbox-declined-card"),
            });
            Ok(page.respond(StatusCode::PAYMENT_REQUIRED))
        }
        SandboxResult::Closed => Ok(SandboxPage::new(tr, &session, Step::Closed).respond(StatusCode::CONFLICT)),
    }
}
