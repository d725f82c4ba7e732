//! `POST /webhooks/stripe`: Stripe's events enter the inbox here.
//!
//! The handler verifies the signature on the raw body, stores the event by
//! its id with the job that will process it, and answers 2xx before any
//! business logic runs. Everything it refuses is answered 400 with a short
//! reason, stores nothing, and is counted in
//! `kanpa_stripe_webhooks_total{outcome="rejected",reason=…}`.

use axum::Json;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kanpa_messaging::inbox::{IncomingEvent, Intake, Via};
use kanpa_payments::webhook::{self, Rejection};

use crate::app::AppState;
use crate::error::AppError;

/// Stripe's payloads are far smaller; anything larger is not Stripe.
pub const MAX_BODY: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/stripe", post(stripe).layer(DefaultBodyLimit::disable()))
}

async fn stripe(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, AppError> {
    let event = match accept(&state, &headers, body).await {
        Ok(event) => event,
        Err(rejection) => {
            metrics::counter!("kanpa_stripe_webhooks_total", "outcome" => "rejected", "reason" => rejection.label())
                .increment(1);
            tracing::warn!(reason = rejection.label(), "stripe webhook refused");
            let body = serde_json::json!({ "error": { "code": rejection.label(), "message": rejection.to_string() } });
            return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
        }
    };
    let intake = state.intake.receive(event, Via::Webhook).await.map_err(anyhow::Error::from)?;
    let outcome = match intake {
        Intake::Stored => {
            state.workers.notify();
            "stored"
        }
        Intake::Duplicate => "duplicate",
    };
    metrics::counter!("kanpa_stripe_webhooks_total", "outcome" => outcome, "reason" => "").increment(1);
    let body = serde_json::json!({ "received": true, "duplicate": intake == Intake::Duplicate });
    Ok((StatusCode::OK, Json(body)).into_response())
}

async fn accept(state: &AppState, headers: &HeaderMap, body: Body) -> Result<IncomingEvent, Rejection> {
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| Rejection::TooLarge)?;
    let payload = std::str::from_utf8(&bytes).map_err(|_| Rejection::NotUtf8)?;
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    webhook::verify(payload, signature, &state.stripe_webhook_secrets)?;
    IncomingEvent::from_json(payload).map_err(|_| Rejection::Unparsable)
}
