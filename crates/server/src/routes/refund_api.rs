//! `POST /api/v1/pledges/{id}/refunds` and
//! `POST /api/v1/salons/{slug}/invoices/{invoice}/refunds`: refund part or
//! all of a card payment, for owner and treasurer tokens (a team-limited
//! token only for its team's pledges, and no salon's invoices). The same
//! `idempotency_key` asks the payment provider once; the books follow from
//! `charge.refunded`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use kanpa_campaigns::{CampaignError, store};
use kanpa_ledger::Money;
use kanpa_patrons::{PatronError, store as salons};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::routes::admin::pledges::problem_words;
use crate::routes::api::{Api, ApiError, Body};
use crate::staff::refund::{self, RefundOutcome, Refundable};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/pledges/{id}/refunds", post(refund_pledge))
        .route("/api/v1/salons/{slug}/invoices/{invoice}/refunds", post(refund_invoice))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundInput {
    /// In the pledge currency's minor unit (yen).
    pub amount: i64,
    /// 1 to 64 characters; the same key refunds once.
    pub idempotency_key: String,
}

async fn refund_pledge(
    State(state): State<AppState>,
    api: Api,
    Path(id): Path<String>,
    Body(input): Body<RefundInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tr = api.tr();
    let caller = api.caller();
    if !caller.role.can_keep_books() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", tr.t("api-error-forbidden")));
    }
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", tr.t("error-not-found"));
    let pledge = match store::pledge_by_public_id(&state.db, &id).await {
        Ok(p) => p,
        Err(CampaignError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(internal(tr, e)),
    };
    let campaign = store::campaign_by_id(&state.db, pledge.campaign_id).await.map_err(|e| internal(tr, e))?;
    if campaign.org_id != caller.org.0 || (caller.team.is_some() && pledge.team_id != caller.team) {
        return Err(not_found());
    }
    let key = checked_key(tr, &input.idempotency_key)?;
    let amount = Money::new(input.amount, pledge.currency);
    let request_key = format!("api:{}:{}:{key}", caller.org.0, pledge.public_id);
    let by = format!("api-token:{}", caller.role.as_str());
    let outcome =
        refund::refund_pledge(&state.db, state.gateway.as_ref(), caller.org, &pledge, amount, &request_key, &by)
            .await
            .map_err(|e| internal(tr, CampaignError::Database(e)))?;
    answer(tr, outcome, "pledge", &pledge.public_id)
}

/// The idempotency key, 1 to 64 characters once trimmed.
fn checked_key(tr: crate::i18n::Tr, key: &str) -> Result<&str, ApiError> {
    let key = key.trim();
    if key.is_empty() || key.len() > 64 {
        let message = tr.t_with("campaign-error-too-long", &[("max", "64")]);
        return Err(ApiError::with_field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            Some("idempotency_key"),
            message,
        ));
    }
    Ok(key)
}

/// The response to a refund request about `what` (`"pledge"`, `"invoice"`).
fn answer(
    tr: crate::i18n::Tr,
    outcome: RefundOutcome,
    what: &str,
    id: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let with = |mut body: Value| {
        body[what] = json!(id);
        (StatusCode::ACCEPTED, Json(body))
    };
    match outcome {
        RefundOutcome::Requested(refunded) => {
            Ok(with(json!({ "refund": refunded.id, "amount": refunded.amount.amount() })))
        }
        RefundOutcome::AlreadyRequested => Ok(with(json!({ "already_requested": true }))),
        RefundOutcome::Refused(problem) => Err(ApiError::with_field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refund_refused",
            Some("amount"),
            problem_words(tr, problem),
        )),
        RefundOutcome::ProviderFailed(e) => {
            tracing::warn!(error = %e, %what, %id, "the payment provider refused a refund");
            Err(ApiError::new(StatusCode::BAD_GATEWAY, "provider_failed", tr.t("admin-error-refund-provider")))
        }
    }
}

/// Refunds part or all of a salon's paid membership invoice (the provider's
/// invoice id); another organisation's salon or invoice is not found.
async fn refund_invoice(
    State(state): State<AppState>,
    api: Api,
    Path((slug, invoice)): Path<(String, String)>,
    Body(input): Body<RefundInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tr = api.tr();
    let caller = api.caller();
    if !caller.role.can_keep_books() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", tr.t("api-error-forbidden")));
    }
    let salon = api.salon(&state, &slug).await?;
    let found = salons::invoice_of_salon(&state.db, salon.id, &invoice).await.map_err(|e| api.fail_salon(e))?;
    let key = checked_key(tr, &input.idempotency_key)?;
    let amount = Money::new(input.amount, salon.currency);
    let request_key = format!("api:{}:{}:{key}", caller.org.0, found.stripe_invoice_id);
    let by = format!("api-token:{}", caller.role.as_str());
    let what = Refundable::invoice(&found, salon.currency);
    let outcome = refund::refund(&state.db, state.gateway.as_ref(), caller.org, &what, amount, &request_key, &by)
        .await
        .map_err(|e| api.fail_salon(PatronError::Database(e)))?;
    answer(tr, outcome, "invoice", &found.stripe_invoice_id)
}

fn internal(tr: crate::i18n::Tr, e: CampaignError) -> ApiError {
    tracing::error!(error = %e, "refund request failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", tr.t("error-internal"))
}
