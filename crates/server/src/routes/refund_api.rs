//! `POST /api/v1/pledges/{id}/refunds`: refund part or all of a card
//! payment, for owner and treasurer tokens (a team-limited token only for
//! its team's pledges). The same `idempotency_key` asks the payment
//! provider once; the books follow from `charge.refunded`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use kanpa_campaigns::{CampaignError, store};
use kanpa_ledger::Money;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::routes::admin::pledges::problem_words;
use crate::routes::api::{Api, ApiError, Body};
use crate::staff::refund::{self, RefundOutcome};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/pledges/{id}/refunds", post(refund_pledge))
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
    let key = input.idempotency_key.trim();
    if key.is_empty() || key.len() > 64 {
        let message = tr.t_with("campaign-error-too-long", &[("max", "64")]);
        return Err(ApiError::with_field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            Some("idempotency_key"),
            message,
        ));
    }
    let amount = Money::new(input.amount, pledge.currency);
    let request_key = format!("api:{}:{}:{key}", caller.org.0, pledge.public_id);
    let by = format!("api-token:{}", caller.role.as_str());
    let outcome =
        refund::refund_pledge(&state.db, state.gateway.as_ref(), caller.org, &pledge, amount, &request_key, &by)
            .await
            .map_err(|e| internal(tr, CampaignError::Database(e)))?;
    match outcome {
        RefundOutcome::Requested(refunded) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "refund": refunded.id, "amount": refunded.amount.amount(), "pledge": pledge.public_id })),
        )),
        RefundOutcome::AlreadyRequested => {
            Ok((StatusCode::ACCEPTED, Json(json!({ "already_requested": true, "pledge": pledge.public_id }))))
        }
        RefundOutcome::Refused(problem) => Err(ApiError::with_field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refund_refused",
            Some("amount"),
            problem_words(tr, problem),
        )),
        RefundOutcome::ProviderFailed(e) => {
            tracing::warn!(error = %e, pledge = %pledge.public_id, "the payment provider refused a refund");
            Err(ApiError::new(StatusCode::BAD_GATEWAY, "provider_failed", tr.t("admin-error-refund-provider")))
        }
    }
}

fn internal(tr: crate::i18n::Tr, e: CampaignError) -> ApiError {
    tracing::error!(error = %e, "refund request failed");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", tr.t("error-internal"))
}
