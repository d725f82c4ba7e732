//! `/api/v1`: the organisers' JSON API for campaigns, teams and rewards,
//! and the settlement report (salons are in [`super::salon_api`]). Described in OpenAPI at `/api/v1/openapi.json`.
//!
//! Every request carries `Authorization: Bearer <token>` (see
//! `kanpa token create`). A campaign of another organisation is answered
//! exactly like a missing one. Errors are
//! `{"error": {"code", "message", "field"?}}` with the message in the
//! caller's language (`Accept-Language`).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use kanpa_campaigns::store::{self, CampaignChanges, CampaignInput, RewardInput, TeamInput};
use kanpa_campaigns::{Campaign, CampaignError, settle};
use serde_json::{Value, json};

use crate::api_token::{self, Caller};
use crate::app::AppState;
use crate::i18n::{Tr, negotiate};

const OPENAPI: &str = include_str!("../../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/campaigns", get(list_campaigns).post(create_campaign))
        .route("/api/v1/campaigns/{slug}", get(get_campaign).patch(update_campaign))
        .route("/api/v1/campaigns/{slug}/publish", post(publish))
        .route("/api/v1/campaigns/{slug}/teams", get(list_teams).post(add_team))
        .route("/api/v1/campaigns/{slug}/teams/{team}", patch(update_team))
        .route("/api/v1/campaigns/{slug}/rewards", get(list_rewards).post(add_reward))
        .route("/api/v1/campaigns/{slug}/rewards/{reward}", patch(update_reward))
        .route("/api/v1/campaigns/{slug}/settlement", get(settlement).post(start_settlement))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// An API failure, rendered as JSON in the caller's language.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl ApiError {
    pub(crate) fn with_field(
        status: StatusCode,
        code: &'static str,
        field: Option<&'static str>,
        message: String,
    ) -> ApiError {
        ApiError { status, code, field, message }
    }

    pub(crate) fn new(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError { status, code, field: None, message }
    }

    fn from_campaign(e: CampaignError, tr: Tr) -> ApiError {
        let (status, field) = crate::campaign_errors::status_and_field(&e);
        if status.is_server_error() {
            tracing::error!(error = %e, "API request failed");
        }
        ApiError { status, code: e.code(), field, message: crate::campaign_errors::describe(&e, tr) }
    }
}

/// The authenticated caller and the language to answer in.
pub struct Api {
    caller: Caller,
    tr: Tr,
}

impl FromRequestParts<AppState> for Api {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Api, ApiError> {
        let tr = Tr(negotiate(&parts.uri, &parts.headers));
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", tr.t("api-error-unauthorized")))?;
        let caller = api_token::authenticate(&state.db, token)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "token lookup failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", tr.t("error-internal"))
            })?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", tr.t("api-error-unauthorized")))?;
        Ok(Api { caller, tr })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty())
}

impl Api {
    pub(crate) fn org(&self) -> kanpa_ledger::OrgId {
        self.caller.org
    }

    pub(crate) fn tr(&self) -> Tr {
        self.tr
    }

    pub(crate) fn caller(&self) -> Caller {
        self.caller
    }

    /// The one campaign team the caller is limited to, if any.
    pub(crate) fn team(&self) -> Option<i64> {
        self.caller.team
    }

    /// Whether a team-limited caller's team is part of `campaign` (always
    /// true for a caller of the whole organisation).
    async fn sees(&self, state: &AppState, campaign: &Campaign) -> Result<bool, ApiError> {
        let Some(team) = self.caller.team else {
            return Ok(true);
        };
        match store::team(&state.db, campaign.id, team).await {
            Ok(_) => Ok(true),
            Err(CampaignError::NotFound(_)) => Ok(false),
            Err(e) => Err(self.fail(e)),
        }
    }

    pub(crate) fn fail(&self, e: CampaignError) -> ApiError {
        ApiError::from_campaign(e, self.tr)
    }

    pub(crate) fn must_organise(&self) -> Result<(), ApiError> {
        if self.caller.role.can_organise() {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", self.tr.t("api-error-forbidden")))
        }
    }

    /// Only an owner changes the organisation's own settings.
    pub(crate) fn must_own(&self) -> Result<(), ApiError> {
        if self.caller.role == api_token::Role::Owner {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", self.tr.t("api-error-owner-only")))
        }
    }

    /// Owners and treasurers keep the books: exports, reconciliation.
    pub(crate) fn must_keep_books(&self) -> Result<(), ApiError> {
        if self.caller.role.can_keep_books() {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", self.tr.t("api-error-forbidden")))
        }
    }

    /// The caller's campaign by slug; another organisation's is not found.
    async fn campaign(&self, state: &AppState, slug: &str) -> Result<Campaign, ApiError> {
        match store::campaign_by_slug(&state.db, slug).await {
            Ok(c) if c.org_id == self.caller.org.0 && self.sees(state, &c).await? => Ok(c),
            Ok(_) => Err(self.fail(CampaignError::NotFound("campaign"))),
            Err(e) => Err(self.fail(e)),
        }
    }
}

/// A JSON body, or a 400 naming what is wrong with it.
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Body<T>, ApiError> {
        let tr = Tr(negotiate(req.uri(), req.headers()));
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("{} ({})", tr.t("api-error-invalid-json"), rejection.body_text()),
            )),
        }
    }
}

fn campaign_json(c: &Campaign) -> Value {
    let mut value = serde_json::to_value(c).unwrap_or_default();
    value["raised"] = json!(c.raised());
    value
}

async fn list_campaigns(State(state): State<AppState>, api: Api) -> Result<Json<Value>, ApiError> {
    let campaigns = store::campaigns_of(&state.db, api.caller.org).await.map_err(|e| api.fail(e))?;
    let mut visible = Vec::with_capacity(campaigns.len());
    for campaign in campaigns {
        if api.sees(&state, &campaign).await? {
            visible.push(campaign_json(&campaign));
        }
    }
    Ok(Json(json!({ "data": visible })))
}

async fn create_campaign(
    State(state): State<AppState>,
    api: Api,
    Body(input): Body<CampaignInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.must_organise()?;
    let campaign = store::create_campaign(&state.db, api.caller.org, &input).await.map_err(|e| api.fail(e))?;
    Ok((StatusCode::CREATED, Json(campaign_json(&campaign))))
}

async fn get_campaign(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let campaign = api.campaign(&state, &slug).await?;
    let teams = store::teams(&state.db, campaign.id).await.map_err(|e| api.fail(e))?;
    let rewards = store::rewards(&state.db, campaign.id).await.map_err(|e| api.fail(e))?;
    let mut value = campaign_json(&campaign);
    value["teams"] = json!(teams);
    value["rewards"] = json!(rewards);
    Ok(Json(value))
}

async fn update_campaign(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
    Body(changes): Body<CampaignChanges>,
) -> Result<Json<Value>, ApiError> {
    api.must_organise()?;
    let campaign = api.campaign(&state, &slug).await?;
    let updated = store::update_campaign(&state.db, campaign.id, &changes).await.map_err(|e| api.fail(e))?;
    Ok(Json(campaign_json(&updated)))
}

async fn publish(State(state): State<AppState>, api: Api, Path(slug): Path<String>) -> Result<Json<Value>, ApiError> {
    api.must_organise()?;
    let campaign = api.campaign(&state, &slug).await?;
    let published = store::publish(&state.db, campaign.id).await.map_err(|e| api.fail(e))?;
    Ok(Json(campaign_json(&published)))
}

async fn list_teams(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let campaign = api.campaign(&state, &slug).await?;
    let teams = store::teams(&state.db, campaign.id).await.map_err(|e| api.fail(e))?;
    Ok(Json(json!({ "data": teams })))
}

async fn add_team(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
    Body(input): Body<TeamInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.must_organise()?;
    let campaign = api.campaign(&state, &slug).await?;
    let team = store::add_team(&state.db, campaign.id, &input).await.map_err(|e| api.fail(e))?;
    Ok((StatusCode::CREATED, Json(json!(team))))
}

async fn update_team(
    State(state): State<AppState>,
    api: Api,
    Path((slug, team_slug)): Path<(String, String)>,
    Body(input): Body<TeamInput>,
) -> Result<Json<Value>, ApiError> {
    api.must_organise()?;
    let campaign = api.campaign(&state, &slug).await?;
    let teams = store::teams(&state.db, campaign.id).await.map_err(|e| api.fail(e))?;
    let team =
        teams.into_iter().find(|t| t.slug == team_slug).ok_or_else(|| api.fail(CampaignError::NotFound("team")))?;
    let team = store::update_team(&state.db, campaign.id, team.id, &input).await.map_err(|e| api.fail(e))?;
    Ok(Json(json!(team)))
}

async fn list_rewards(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let campaign = api.campaign(&state, &slug).await?;
    let rewards = store::rewards(&state.db, campaign.id).await.map_err(|e| api.fail(e))?;
    Ok(Json(json!({ "data": rewards })))
}

async fn add_reward(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
    Body(input): Body<RewardInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.must_organise()?;
    let campaign = api.campaign(&state, &slug).await?;
    let reward = store::add_reward(&state.db, campaign.id, &input).await.map_err(|e| api.fail(e))?;
    Ok((StatusCode::CREATED, Json(json!(reward))))
}

async fn update_reward(
    State(state): State<AppState>,
    api: Api,
    Path((slug, reward)): Path<(String, i64)>,
    Body(input): Body<RewardInput>,
) -> Result<Json<Value>, ApiError> {
    api.must_organise()?;
    let campaign = api.campaign(&state, &slug).await?;
    let reward = store::update_reward(&state.db, campaign.id, reward, &input).await.map_err(|e| api.fail(e))?;
    Ok(Json(json!(reward)))
}

async fn settlement(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let campaign = api.campaign(&state, &slug).await?;
    let report = settle::report(&state.db, campaign.id).await.map_err(|e| api.fail(e))?;
    Ok(Json(json!(report)))
}

/// Settles now, before the deadline if need be (an organiser's decision):
/// queues the settlement job and answers 202.
async fn start_settlement(
    State(state): State<AppState>,
    api: Api,
    Path(slug): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.must_organise()?;
    let campaign = api.campaign(&state, &slug).await?;
    // Closing early is an explicit act: the deadline becomes now, then the
    // settlement job runs as it would have at the deadline.
    settle::close_early(&state.db, campaign.id).await.map_err(|e| api.fail(e))?;
    state.workers.notify();
    let report = settle::report(&state.db, campaign.id).await.map_err(|e| api.fail(e))?;
    Ok((StatusCode::ACCEPTED, Json(json!(report))))
}
