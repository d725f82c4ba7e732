//! `/o/{org}/legal`: an organisation's disclosure under Japan's Specified
//! Commercial Transactions Act (特定商取引法に基づく表記), generated from its
//! seller settings, in Japanese or English. Every campaign and salon page
//! and both checkout confirmations link here.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Html;
use axum::routing::get;
use kanpa_ledger::{OrgId, store as ledger};
use kanpa_payments::seller;

use crate::app::AppState;
use crate::error::AppError;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;

pub fn router() -> Router<AppState> {
    Router::new().route("/o/{org}/legal", get(legal_page))
}

/// The disclosure page of an organisation, by its slug.
pub fn legal_path(org_slug: &str) -> String {
    format!("/o/{org_slug}/legal")
}

/// The disclosure page of the organisation behind a campaign or salon.
pub async fn legal_path_of(state: &AppState, org: i64) -> Result<String, AppError> {
    let orgs = ledger::organisations(&state.db).await?;
    let org = orgs.into_iter().find(|o| o.id == OrgId(org)).ok_or(AppError::NotFound)?;
    Ok(legal_path(&org.slug))
}

pub struct Row {
    pub label: String,
    pub value: String,
}

#[derive(Template)]
#[template(path = "legal.html")]
struct LegalPage {
    tr: Tr,
    organisation: String,
    rows: Vec<Row>,
}

async fn legal_page(
    State(state): State<AppState>,
    lang: Lang,
    Path(slug): Path<String>,
) -> Result<Html<String>, AppError> {
    let tr = lang.tr();
    let org = ledger::organisation_by_slug(&state.db, &slug).await?.ok_or(AppError::NotFound)?;
    let settings = seller::settings(&state.db, org.id).await.map_err(|e| AppError::Internal(e.into()))?;
    let given = |value: &str| if value.trim().is_empty() { tr.t("legal-not-set") } else { value.to_owned() };
    let row = |key: &str, value: String| Row { label: tr.t(key), value };
    let mut rows = vec![
        row("seller-field-seller_name", given(&settings.seller_name)),
        row("seller-field-representative", given(&settings.representative)),
        row("seller-field-address", given(&settings.address)),
        row("seller-field-contact_phone", given(&settings.contact_phone)),
        row("seller-field-contact_email", given(&settings.contact_email)),
        row("legal-prices", tr.t("legal-prices-text")),
        row("seller-field-extra_costs_ja", given(settings.extra_costs.get(tr.0))),
        row("legal-payment-methods", tr.t("legal-payment-methods-text")),
        row("legal-payment-timing", tr.t("legal-payment-timing-text")),
        row("seller-field-delivery_ja", given(settings.delivery.get(tr.0))),
        row("seller-field-cancellation_ja", given(settings.cancellation.get(tr.0))),
        row("legal-subscription", tr.t("legal-subscription-text")),
        row("legal-invoice", tr.t("legal-invoice-text")),
    ];
    if let Some(number) = &settings.registration_number {
        rows.push(row("seller-field-registration_number", number.to_string()));
    }
    let page = LegalPage { tr, organisation: org.name, rows };
    Ok(Html(page.render_html()))
}
