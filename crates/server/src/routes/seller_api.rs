//! `/api/v1/organisation/settings`: the caller's organisation's seller
//! details — the legal disclosure page's content and the issuer of its
//! receipts. Anyone with a token reads them; only an owner changes them.
//! `PATCH` takes any subset of the fields (`kanpa_payments::seller::SellerUpdate`);
//! a wrong field is refused with nothing changed.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kanpa_payments::seller::{self, SellerError, SellerSettings, SellerUpdate};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::routes::api::{Api, ApiError, Body};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/organisation/settings", get(show).patch(change))
}

fn settings_json(s: &SellerSettings) -> Value {
    json!({
        "seller_name": s.seller_name,
        "representative": s.representative,
        "address": s.address,
        "contact_email": s.contact_email,
        "contact_phone": s.contact_phone,
        "registration_number": s.registration_number.as_ref().map(|n| n.as_str()),
        "tax_rounding": s.tax_rounding.as_str(),
        "extra_costs_ja": s.extra_costs.ja,
        "extra_costs_en": s.extra_costs.en,
        "delivery_ja": s.delivery.ja,
        "delivery_en": s.delivery.en,
        "cancellation_ja": s.cancellation.ja,
        "cancellation_en": s.cancellation.en,
        "missing": s.missing(),
    })
}

fn fail(api: &Api, e: &SellerError) -> ApiError {
    let (status, code, field, message) = crate::seller_errors::explain(e, api.tr());
    if status.is_server_error() {
        tracing::error!(error = %e, "seller settings request failed");
    }
    ApiError::with_field(status, code, field, message)
}

async fn show(State(state): State<AppState>, api: Api) -> Result<Json<Value>, ApiError> {
    let settings = seller::settings(&state.db, api.org()).await.map_err(|e| fail(&api, &e))?;
    Ok(Json(json!({ "data": settings_json(&settings) })))
}

async fn change(
    State(state): State<AppState>,
    api: Api,
    Body(update): Body<SellerUpdate>,
) -> Result<Json<Value>, ApiError> {
    api.must_own()?;
    let settings = seller::update(&state.db, api.org(), &update).await.map_err(|e| fail(&api, &e))?;
    Ok(Json(json!({ "data": settings_json(&settings) })))
}
