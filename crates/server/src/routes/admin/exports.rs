//! `/admin/o/{org}/exports`: the books as a file, from the console.
//!
//! The form asks what the API's query string asks (report, format, fund,
//! period, BOM); the download is `GET …/exports/download` and goes through
//! the very path of `/api/v1/exports/{report}`: the same request check
//! ([`crate::exports::ExportRequest::parse`]) and the same streamed writer
//! ([`crate::routes::exports::download`]), which narrows a treasurer
//! limited to one team to that team's fund. Exporting changes nothing, so
//! the form is a `GET` and needs no CSRF token. A refusal re-renders the
//! form (422) with the reason in the reader's language.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use kanpa_ledger::store as ledger;
use serde::Deserialize;

use super::books::{Fund, funds};
use super::{Answer, Nav, Need, Refused, Staff, access, page};
use crate::app::AppState;
use crate::exports::ExportRequest;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::staff::Access;

/// The reports the form offers, by their export names.
const REPORTS: [&str; 5] = ["journal", "trial-balance", "fund", "pledges", "patrons"];
/// The formats, by their export names.
const FORMATS: [&str; 6] = ["csv", "freee", "mf", "yayoi", "hledger", "beancount"];

#[derive(Debug, Default, Deserialize)]
pub struct ExportForm {
    #[serde(default)]
    report: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    fund: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    bom: String,
}

#[derive(Template)]
#[template(path = "admin_exports.html")]
struct ExportsPage {
    tr: Tr,
    nav: Nav,
    reports: Vec<(&'static str, String, bool)>,
    formats: Vec<(&'static str, String, bool)>,
    /// Fund account code, label, selected.
    funds: Vec<(String, String, bool)>,
    from: String,
    to: String,
    bom: bool,
    error: Option<String>,
}

/// The funds the person may export, by account code.
async fn fund_codes(state: &AppState, tr: Tr, access: &Access) -> Result<(Vec<Fund>, Vec<(String, String)>), Refused> {
    let (funds, _) = funds(state, tr, access).await?;
    let accounts = ledger::balances(&state.db, access.org_id()).await?;
    let codes = funds
        .iter()
        .filter_map(|f| {
            accounts.iter().find(|a| a.account.id == f.account).map(|a| (a.account.code.clone(), f.label.clone()))
        })
        .collect();
    Ok((funds, codes))
}

async fn form_page(
    state: &AppState,
    tr: Tr,
    staff: &Staff,
    access: &Access,
    form: &ExportForm,
    error: Option<String>,
) -> Result<Response, Refused> {
    let (funds, codes) = fund_codes(state, tr, access).await?;
    let team_scope = access
        .team
        .map(|team| funds.iter().find(|f| f.team == Some(team)).map(|f| f.label.clone()).unwrap_or_default());
    let report = if form.report.is_empty() { "journal" } else { form.report.as_str() };
    let format = if form.format.is_empty() { "csv" } else { form.format.as_str() };
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let html = ExportsPage {
        tr,
        nav: Nav::new(staff, access, team_scope),
        reports: REPORTS.iter().map(|r| (*r, tr.t(&format!("admin-report-{r}")), *r == report)).collect(),
        formats: FORMATS.iter().map(|f| (*f, tr.t(&format!("admin-format-{f}")), *f == format)).collect(),
        funds: codes.into_iter().map(|(code, label)| (code.clone(), label, code == form.fund)).collect(),
        from: form.from.clone(),
        to: form.to.clone(),
        bom: form.bom == "yes",
        error,
    }
    .render_html();
    Ok(page(status, html))
}

/// `GET /admin/o/{org}/exports`: the form.
pub async fn exports(State(state): State<AppState>, lang: Lang, staff: Staff, Path(org): Path<String>) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Books).await?;
            form_page(&state, tr, &staff, &access, &ExportForm::default(), None).await
        }
        .await,
    )
}

/// `GET /admin/o/{org}/exports/download`: the file, streamed, or the form
/// again with what is wrong.
pub async fn download(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path(org): Path<String>,
    Query(form): Query<ExportForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Books).await?;
            let funds: Vec<String> = Some(form.fund.trim().to_owned()).filter(|f| !f.is_empty()).into_iter().collect();
            let report = if form.report.is_empty() { "journal" } else { form.report.as_str() };
            let format = if form.format.is_empty() { "csv" } else { form.format.as_str() };
            let parsed = ExportRequest::parse(
                &state.db,
                Some(access.org_id()),
                report,
                format,
                Some(form.from.as_str()),
                Some(form.to.as_str()),
                &funds,
            )
            .await;
            match parsed {
                Ok(request) => {
                    crate::routes::exports::download(&state, access.org_id(), access.team, request, form.bom == "yes")
                        .await
                        .map_err(|e| Refused::Error(crate::forms::read_failure(e)))
                }
                Err(crate::exports::ExportRefusal::Ledger(e)) => Err(e.into()),
                Err(refusal) => {
                    // Named by the form's label, then in the API's words.
                    let label = match refusal.field() {
                        Some("report") => Some("admin-export-report"),
                        Some("format") => Some("admin-export-format"),
                        Some("from") => Some("admin-from"),
                        Some("to") => Some("admin-until"),
                        Some("fund") => Some("admin-fund"),
                        _ => None,
                    };
                    let message = match label {
                        Some(key) => format!("{}: {}", tr.t(key), refusal.describe(tr.0)),
                        None => refusal.describe(tr.0),
                    };
                    form_page(&state, tr, &staff, &access, &form, Some(message)).await
                }
            }
        }
        .await,
    )
}
