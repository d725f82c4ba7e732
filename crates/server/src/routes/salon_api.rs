//! `/api/v1/salons`: the organisers' JSON API for salons, their tiers and
//! the members' area. Same bearer tokens, error shape and language rules as
//! the campaigns API in [`super::api`]; a salon of another organisation is
//! answered exactly like a missing one.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use kanpa_patrons::store::{self, PostInput, SalonChanges, SalonInput, TierChanges, TierInput};
use kanpa_patrons::{PatronError, Salon, SalonStatus, Tier, join, repricing};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::routes::api::{Api, ApiError, Body};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/salons", get(list_salons).post(create_salon))
        .route("/api/v1/salons/{slug}", get(get_salon).patch(update_salon))
        .route("/api/v1/salons/{slug}/open", post(open_salon))
        .route("/api/v1/salons/{slug}/close", post(close_salon))
        .route("/api/v1/salons/{slug}/tiers", get(list_tiers).post(add_tier))
        .route("/api/v1/salons/{slug}/tiers/{tier}", patch(update_tier))
        .route("/api/v1/salons/{slug}/tiers/{tier}/reprice", post(reprice_tier))
        .route("/api/v1/salons/{slug}/posts", get(list_posts).post(add_post))
        .route("/api/v1/salons/{slug}/posts/{post}", delete(delete_post))
        .route("/api/v1/salons/{slug}/roster", get(roster))
        .route("/api/v1/salons/{slug}/roster.csv", get(roster_csv))
}

impl Api {
    pub(crate) fn fail_salon(&self, e: PatronError) -> ApiError {
        let (status, field) = crate::salon_errors::status_and_field(&e);
        if status.is_server_error() {
            tracing::error!(error = %e, "API request failed");
        }
        ApiError::with_field(status, e.code(), field, crate::salon_errors::describe(&e, self.tr()))
    }

    /// The caller's salon by slug; another organisation's is not found.
    pub(crate) async fn salon(&self, state: &AppState, slug: &str) -> Result<Salon, ApiError> {
        match store::salon_by_slug(&state.db, slug).await {
            // A caller limited to one campaign team sees no salon.
            Ok(s) if s.org_id == self.org().0 && self.team().is_none() => Ok(s),
            Ok(_) => Err(self.fail_salon(PatronError::NotFound("salon"))),
            Err(e) => Err(self.fail_salon(e)),
        }
    }
}

async fn list_salons(State(state): State<AppState>, api: Api) -> Result<Json<Value>, ApiError> {
    let mut salons = store::salons_of(&state.db, api.org()).await.map_err(|e| api.fail_salon(e))?;
    if api.team().is_some() {
        salons.clear();
    }
    Ok(Json(json!({ "data": salons })))
}

async fn create_salon(
    State(state): State<AppState>,
    api: Api,
    Body(input): Body<SalonInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.must_organise()?;
    let salon = store::create_salon(&state.db, api.org(), &input).await.map_err(|e| api.fail_salon(e))?;
    Ok((StatusCode::CREATED, Json(json!(salon))))
}

async fn get_salon(State(state): State<AppState>, api: Api, Path(slug): Path<String>) -> Result<Json<Value>, ApiError> {
    let salon = api.salon(&state, &slug).await?;
    let tiers = store::tiers(&state.db, salon.id).await.map_err(|e| api.fail_salon(e))?;
    let mut value = json!(salon);
    value["tiers"] = json!(tiers);
    Ok(Json(value))
}

async fn update_salon(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
    Body(changes): Body<SalonChanges>,
) -> Result<Json<Value>, ApiError> {
    api.must_organise()?;
    let salon = api.salon(&state, &slug).await?;
    let updated = store::update_salon(&state.db, salon.id, &changes).await.map_err(|e| api.fail_salon(e))?;
    Ok(Json(json!(updated)))
}

async fn open_salon(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_status(state, api, slug, SalonStatus::Open).await
}

async fn close_salon(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_status(state, api, slug, SalonStatus::Closed).await
}

async fn set_status(state: AppState, api: Api, slug: String, to: SalonStatus) -> Result<Json<Value>, ApiError> {
    api.must_organise()?;
    let salon = api.salon(&state, &slug).await?;
    let salon = store::set_salon_status(&state.db, salon.id, to).await.map_err(|e| api.fail_salon(e))?;
    Ok(Json(json!(salon)))
}

async fn list_tiers(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let salon = api.salon(&state, &slug).await?;
    let tiers = store::tiers(&state.db, salon.id).await.map_err(|e| api.fail_salon(e))?;
    Ok(Json(json!({ "data": tiers })))
}

async fn add_tier(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
    Body(input): Body<TierInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.must_organise()?;
    let salon = api.salon(&state, &slug).await?;
    let tier = store::add_tier(&state.db, salon.id, &input).await.map_err(|e| api.fail_salon(e))?;
    let tier = priced(&state, &salon, tier).await;
    Ok((StatusCode::CREATED, Json(json!(tier))))
}

async fn update_tier(
    State(state): State<AppState>,
    api: Api,
    Path((slug, tier_slug)): Path<(String, String)>,
    Body(changes): Body<TierChanges>,
) -> Result<Json<Value>, ApiError> {
    api.must_organise()?;
    let salon = api.salon(&state, &slug).await?;
    let tier = store::tier_by_slug(&state.db, salon.id, &tier_slug).await.map_err(|e| api.fail_salon(e))?;
    let tier = store::update_tier(&state.db, salon.id, tier.id, &changes).await.map_err(|e| api.fail_salon(e))?;
    let tier = priced(&state, &salon, tier).await;
    Ok(Json(json!(tier)))
}

/// Moves the tier's renewing patrons onto its current price from their next
/// renewal; answers how many moved. Call again to finish after a 503.
async fn reprice_tier(
    State(state): State<AppState>,
    api: Api,
    Path((slug, tier_slug)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    api.must_organise()?;
    let salon = api.salon(&state, &slug).await?;
    let site = state.config.salon_site();
    let done = repricing::move_to_current_price(&state.db, state.gateway.as_ref(), &site, &salon, &tier_slug)
        .await
        .map_err(|e| api.fail_salon(e))?;
    Ok(Json(repriced_json(&done)))
}

pub(crate) fn repriced_json(done: &repricing::Repriced) -> Value {
    json!({
        "tier": done.tier,
        "price": done.price,
        "amount": done.amount.amount(),
        "currency": done.amount.currency().code(),
        "moved": done.moved,
        "already_current": done.already_current,
        "canceling": done.canceling,
    })
}

/// The tier with a Stripe price for its amount. If the payment provider
/// cannot be reached the tier is saved unpriced and priced on its first join.
async fn priced(state: &AppState, salon: &Salon, tier: Tier) -> Tier {
    match join::sync_tier(&state.db, state.gateway.as_ref(), salon, &tier).await {
        Ok(synced) => synced,
        Err(e) => {
            tracing::warn!(tier = %tier.slug, error = %e, "tier not priced yet");
            tier
        }
    }
}

/// Patrons, counts by status, MRR and churn for the last twelve months.
/// Personal data: any role of the organisation may read it, nobody else.
async fn roster(State(state): State<AppState>, api: Api, Path(slug): Path<String>) -> Result<Json<Value>, ApiError> {
    let salon = api.salon(&state, &slug).await?;
    let roster = kanpa_patrons::roster::roster(&state.db, salon.id, kanpa_ledger::Timestamp::now())
        .await
        .map_err(|e| api.fail_salon(e))?;
    Ok(Json(json!({
        "data": roster.rows, "counts": roster.counts, "mrr": roster.mrr, "currency": salon.currency,
        "months": roster.months,
    })))
}

async fn roster_csv(State(state): State<AppState>, api: Api, Path(slug): Path<String>) -> Result<Response, ApiError> {
    let salon = api.salon(&state, &slug).await?;
    let roster = kanpa_patrons::roster::roster(&state.db, salon.id, kanpa_ledger::Timestamp::now())
        .await
        .map_err(|e| api.fail_salon(e))?;
    let disposition = format!("attachment; filename=\"{}-roster.csv\"", salon.slug);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        kanpa_patrons::roster::csv(&roster),
    )
        .into_response())
}

async fn list_posts(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let salon = api.salon(&state, &slug).await?;
    let posts = store::posts(&state.db, salon.id).await.map_err(|e| api.fail_salon(e))?;
    Ok(Json(json!({ "data": posts })))
}

async fn add_post(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
    Body(input): Body<PostInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.must_organise()?;
    let salon = api.salon(&state, &slug).await?;
    let post = store::add_post(&state.db, salon.id, &input).await.map_err(|e| api.fail_salon(e))?;
    Ok((StatusCode::CREATED, Json(json!(post))))
}

async fn delete_post(
    State(state): State<AppState>,
    api: Api,
    Path((slug, post)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    api.must_organise()?;
    let salon = api.salon(&state, &slug).await?;
    store::delete_post(&state.db, salon.id, post).await.map_err(|e| api.fail_salon(e))?;
    Ok(StatusCode::NO_CONTENT)
}
