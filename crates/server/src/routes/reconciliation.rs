//! `/api/v1/reconciliation`, `/api/v1/payouts/{payout}/confirm` and
//! `/api/v1/bank-statements`: the token's organisation reconciled with
//! the payment processor, for owners and treasurers not limited to a team. The same flow as `kanpa
//! reconcile` (`crate::reconcile`), against Stripe or, on a sandbox-configured
//! server, the sandbox processor's own records.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use kanpa_ledger::reconcile::bank::{self, Layout};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::reconcile::ConfirmError;
use crate::routes::api::{Api, ApiError};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reconciliation", post(reconcile))
        .route("/api/v1/payouts/{payout}/confirm", post(confirm))
        .route("/api/v1/bank-statements", post(import_statement))
}

fn query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.and_then(|r| serde_urlencoded::from_str(r).ok()).unwrap_or_default()
}

fn param(raw: &Option<String>, name: &str) -> Option<String> {
    query(raw.as_deref()).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn refuse(
    api: &Api,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
    ja: &str,
    en: String,
) -> ApiError {
    let message = match api.tr().0 {
        kanpa_ledger::Locale::Ja => ja.to_owned(),
        kanpa_ledger::Locale::En => en,
    };
    ApiError::with_field(status, code, field, message)
}

/// Owner and treasurer tokens of the whole organisation: reconciliation
/// concerns every fund at once, so a token limited to one team is refused
/// (as the console refuses a team-limited treasurer).
fn must_reconcile(api: &Api) -> Result<(), ApiError> {
    api.must_keep_books()?;
    if api.team().is_some() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", api.tr().t("api-error-forbidden")));
    }
    Ok(())
}

fn internal(api: &Api, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "reconciliation failed");
    ApiError::with_field(StatusCode::INTERNAL_SERVER_ERROR, "internal", None, api.tr().t("error-internal"))
}

fn date(api: &Api, text: Option<String>, field: &'static str) -> Result<Option<time::Date>, ApiError> {
    text.filter(|t| !t.is_empty())
        .map(|t| {
            kanpa_ledger::export::Period::parse_date(&t).ok_or_else(|| {
                let en = format!("{field} must be a date written YYYY-MM-DD");
                refuse(
                    api,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_date",
                    Some(field),
                    &format!("{field} は YYYY-MM-DD 形式の日付で指定してください"),
                    en,
                )
            })
        })
        .transpose()
}

/// Imports Stripe's balance transactions, posts what they settle, and
/// answers the report for the token's organisation.
async fn reconcile(State(state): State<AppState>, api: Api, RawQuery(raw): RawQuery) -> Result<Json<Value>, ApiError> {
    must_reconcile(&api)?;
    let since = date(&api, param(&raw, "since"), "since")?;
    let since = since.and_then(|d| kanpa_ledger::export::Period { from: Some(d), to: None }.start());
    let source = crate::reconcile::source(&state.config, &state.db).map_err(|e| internal(&api, format!("{e:#}")))?;
    let outcome = crate::reconcile::run(&state.db, source.as_ref(), Some(api.org()), since, &mut |_| {})
        .await
        .map_err(|e| internal(&api, format!("{e:#}")))?;
    let r = outcome.report;
    Ok(Json(json!({
        "lines": r.lines,
        "matched_objects": r.matched_objects,
        "fees_posted": outcome.fees_posted,
        "disputes_posted": outcome.disputes_posted,
        "payouts_posted": outcome.payouts_posted,
        "unmatched_stripe": r.unmatched_provider,
        "unmatched_ledger": r.unmatched_ledger,
        "clean": r.unmatched_provider.is_empty() && r.unmatched_ledger.is_empty(),
        "source": outcome.source,
        "balances": outcome.balances.iter().flatten().map(|(provider, ledger)| json!({
            "currency": provider.currency().code(), "provider": provider.amount(), "ledger": ledger.amount(),
        })).collect::<Vec<_>>(),
    })))
}

/// The payout arrived in the bank (`?on=YYYY-MM-DD`, today without).
async fn confirm(
    State(state): State<AppState>,
    api: Api,
    Path(payout): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    must_reconcile(&api)?;
    let on = date(&api, param(&raw, "on"), "on")?;
    match crate::reconcile::confirm_payout(&state.db, api.org(), &payout, on).await {
        Ok(created) => Ok(Json(json!({ "payout": payout, "banked": true, "already_confirmed": !created }))),
        Err(ConfirmError::NotInTransit(p)) => Err(refuse(
            &api,
            StatusCode::NOT_FOUND,
            "payout_not_in_transit",
            Some("payout"),
            &format!("入金待ちの振込 {p} はありません(先に照合を実行してください)"),
            format!("no payout {p:?} is in transit for this organisation (reconcile first)"),
        )),
        Err(ConfirmError::Other(e)) => Err(internal(&api, format!("{e:#}"))),
    }
}

/// A bank statement as the request body (UTF-8 CSV; `?layout=generic|jp`):
/// each payout in transit whose deposit it shows moves to the bank.
async fn import_statement(
    State(state): State<AppState>,
    api: Api,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    must_reconcile(&api)?;
    let layout_text = param(&raw, "layout").unwrap_or_else(|| "generic".to_owned());
    let Some(layout) = Layout::parse(&layout_text) else {
        return Err(refuse(
            &api,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_layout",
            Some("layout"),
            "layout は generic か jp を指定してください",
            "layout must be generic or jp".to_owned(),
        ));
    };
    let text = bank::decode(&body).ok_or_else(|| {
        refuse(
            &api,
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_text",
            Some("body"),
            "明細は UTF-8 か Shift_JIS の CSV で送ってください",
            "The statement must be a UTF-8 or Shift_JIS CSV file".to_owned(),
        )
    })?;
    let lines = bank::parse(&text, layout).map_err(|e| {
        let ja = match &e {
            bank::BankCsvError::Empty => "明細に見出し行がありません".to_owned(),
            bank::BankCsvError::MissingColumn(c) => format!("見出しに {c} の列がありません"),
            bank::BankCsvError::BadDate { line, value } => format!("{line} 行目: {value:?} は日付ではありません"),
            bank::BankCsvError::BadAmount { line, value } => format!("{line} 行目: {value:?} は金額ではありません"),
        };
        refuse(&api, StatusCode::UNPROCESSABLE_ENTITY, "invalid_statement", Some("body"), &ja, e.to_string())
    })?;
    let outcome = crate::reconcile::import_bank_statement(&state.db, api.org(), lines)
        .await
        .map_err(|e| internal(&api, format!("{e:#}")))?;
    let line = |l: &bank::BankLine| json!({ "line": l.line, "date": l.date.to_string(), "amount": l.amount, "description": l.description });
    Ok(Json(json!({
        "confirmed": outcome.confirmed.iter().map(|(l, p)| { let mut v = line(l); v["payout"] = json!(p); v }).collect::<Vec<_>>(),
        "unexplained": outcome.unexplained.iter().map(line).collect::<Vec<_>>(),
    })))
}
