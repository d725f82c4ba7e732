//! The pledges of an organisation's campaigns, with search, each with its
//! refunds; owners and treasurers refund card payments in full or in part.
//! A treasurer limited to one team sees that team's pledges only.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use kanpa_campaigns::{Campaign, CampaignError, Pledge, store};
use kanpa_ledger::{Money, ParseMoneyError};
use serde::Deserialize;

use super::books::local_minute;
use super::{Answer, Nav, Need, Refused, Staff, access, check_form, page, see_other};
use crate::app::AppState;
use crate::error::AppError;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::staff::Access;
use crate::staff::refund::{self, RefundOutcome, RefundProblem};

pub const QUERY_MAX: usize = 100;
const LIST_MAX: usize = 200;

fn failure(e: CampaignError) -> Refused {
    Refused::Error(crate::forms::read_failure(e))
}

/// Every pledge the person may see, newest first, with its campaign.
async fn visible_pledges(state: &AppState, access: &Access) -> Result<Vec<(Campaign, Pledge)>, Refused> {
    let mut all = Vec::new();
    for campaign in store::campaigns_of(&state.db, access.org_id()).await.map_err(failure)? {
        for pledge in store::pledges_of_campaign(&state.db, campaign.id).await.map_err(failure)? {
            if access.team.is_none() || pledge.team_id == access.team {
                all.push((campaign.clone(), pledge));
            }
        }
    }
    all.sort_by_key(|(_, p)| std::cmp::Reverse(p.created_at));
    Ok(all)
}

struct PledgeRow {
    id: String,
    campaign: String,
    name: String,
    email: String,
    amount: String,
    status: String,
}

fn row(tr: Tr, campaign: &Campaign, p: &Pledge) -> PledgeRow {
    PledgeRow {
        id: p.public_id.clone(),
        campaign: campaign.title(tr.0).to_owned(),
        name: p.display_name.clone(),
        email: p.email.clone(),
        amount: p.money().format(tr.0),
        status: tr.t(&format!("status-{}", p.status.as_str())),
    }
}

#[derive(Template)]
#[template(path = "admin_pledges.html")]
struct PledgesPage {
    tr: Tr,
    nav: Nav,
    q: String,
    rows: Vec<PledgeRow>,
    more: bool,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

/// `/admin/o/{org}/pledges?q=`: search by name, email or pledge number.
pub async fn list(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path(org): Path<String>,
    Query(search): Query<Search>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let q = search.q.trim().to_lowercase();
            let nav = Nav::new(&staff, &access, None);
            if q.chars().count() > QUERY_MAX {
                let error = Some(tr.t_with("campaign-error-too-long", &[("max", &QUERY_MAX.to_string())]));
                let page_ = PledgesPage { tr, nav, q: search.q.clone(), rows: Vec::new(), more: false, error };
                return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, page_.render_html()));
            }
            let matching: Vec<PledgeRow> = visible_pledges(&state, &access)
                .await?
                .iter()
                .filter(|(_, p)| {
                    q.is_empty()
                        || p.email.to_lowercase().contains(&q)
                        || p.display_name.to_lowercase().contains(&q)
                        || p.public_id.to_lowercase() == q
                })
                .map(|(c, p)| row(tr, c, p))
                .collect();
            let more = matching.len() > LIST_MAX;
            let rows = matching.into_iter().take(LIST_MAX).collect();
            let page_ = PledgesPage { tr, nav, q: search.q.clone(), rows, more, error: None };
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

/// The pledge with this public id if the person may see it; otherwise
/// not found, like a missing one.
async fn visible(state: &AppState, access: &Access, id: &str) -> Result<(Campaign, Pledge), Refused> {
    if id.len() > 64 {
        return Err(AppError::NotFound.into());
    }
    let pledge = match store::pledge_by_public_id(&state.db, id).await {
        Ok(p) => p,
        Err(CampaignError::NotFound(_)) => return Err(AppError::NotFound.into()),
        Err(e) => return Err(failure(e)),
    };
    let campaign = store::campaign_by_id(&state.db, pledge.campaign_id).await.map_err(failure)?;
    if campaign.org_id != access.org_id().0 || (access.team.is_some() && pledge.team_id != access.team) {
        return Err(AppError::NotFound.into());
    }
    Ok((campaign, pledge))
}

struct RefundLine {
    amount: String,
    by: String,
    status: String,
    at: String,
}

#[derive(Template)]
#[template(path = "admin_pledge.html")]
struct PledgePage {
    tr: Tr,
    nav: Nav,
    row: PledgeRow,
    team: String,
    payment_intent: String,
    charge: String,
    refunded: String,
    refunds: Vec<RefundLine>,
    /// What is left to refund, when a card paid and the person may refund.
    refundable: Option<String>,
    key: String,
    amount: String,
    error: Option<String>,
}

async fn pledge_page(
    state: &AppState,
    tr: Tr,
    staff: &Staff,
    access: &Access,
    id: &str,
    amount: String,
    error: Option<String>,
) -> Result<PledgePage, Refused> {
    let (campaign, pledge) = visible(state, access, id).await?;
    let team = match pledge.team_id {
        Some(team) => store::team(&state.db, campaign.id, team).await.map_err(failure)?.name(tr.0).to_owned(),
        None => tr.t("team-pool"),
    };
    let refunds = refund::of_pledge(&state.db, &pledge)
        .await?
        .into_iter()
        .map(|r| RefundLine {
            amount: r.amount.format(tr.0),
            by: r.requested_by,
            status: tr.t(&format!("admin-refund-{}", r.status)),
            at: local_minute(r.created_at),
        })
        .collect();
    let refundable = refund::refundable(&pledge)
        .filter(|left| left.amount() > 0 && access.role.can_keep_books())
        .map(|left| left.format(tr.0));
    Ok(PledgePage {
        tr,
        nav: Nav::new(staff, access, None),
        row: row(tr, &campaign, &pledge),
        team,
        payment_intent: pledge.payment_intent_id.clone().unwrap_or_default(),
        charge: pledge.charge_id.clone().unwrap_or_default(),
        refunded: Money::new(pledge.amount_refunded, pledge.currency).format(tr.0),
        refunds,
        refundable,
        key: uuid::Uuid::now_v7().to_string(),
        amount,
        error,
    })
}

pub async fn detail(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path((org, id)): Path<(String, String)>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let page_ = pledge_page(&state, tr, &staff, &access, &id, String::new(), None).await?;
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    amount: String,
}

/// A refund amount the form cannot take, as the form shows it beside
/// `field` (a message key).
pub(super) fn amount_refusal(tr: Tr, field: &str, e: ParseMoneyError) -> (String, StatusCode) {
    let words = amount_problem(tr, e);
    let field = tr.t(field);
    (tr.t_with("field-problem", &[("field", &field), ("problem", &words)]), StatusCode::UNPROCESSABLE_ENTITY)
}

/// What the console says of a refund of `payment`: nothing once the
/// processor has it (the page then moves on), else why not and the status.
pub(super) fn refund_refusal(tr: Tr, outcome: RefundOutcome, payment: &str) -> Option<(String, StatusCode)> {
    match outcome {
        RefundOutcome::Requested(_) | RefundOutcome::AlreadyRequested => None,
        RefundOutcome::Refused(problem) => Some((problem_words(tr, problem), StatusCode::UNPROCESSABLE_ENTITY)),
        RefundOutcome::ProviderFailed(e) => {
            tracing::warn!(error = %e, payment = %payment, "the payment provider refused a refund");
            Some((tr.t("admin-error-refund-provider"), StatusCode::BAD_GATEWAY))
        }
    }
}

pub(super) fn amount_problem(tr: Tr, e: ParseMoneyError) -> String {
    match e {
        ParseMoneyError::Empty => tr.t("campaign-error-required"),
        ParseMoneyError::Negative => tr.t("campaign-error-amount-negative"),
        ParseMoneyError::TooManyDecimals { .. } => tr.t("campaign-error-amount-decimal"),
        ParseMoneyError::Overflow => tr.t("campaign-error-amount-huge"),
        ParseMoneyError::WrongCurrency | ParseMoneyError::NotANumber => tr.t("campaign-error-amount"),
    }
}

pub fn problem_words(tr: Tr, problem: RefundProblem) -> String {
    match problem {
        RefundProblem::NotACardPayment => tr.t("admin-error-refund-not-card"),
        RefundProblem::NotPositive => tr.t("admin-error-amount-zero"),
        RefundProblem::TooMuch { left } => tr.t_with("admin-error-refund-too-much", &[("left", &left.format(tr.0))]),
    }
}

/// Refunds part or all of a card payment through the payment provider.
pub async fn refund(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, id)): Path<(String, String)>,
    Form(form): Form<RefundForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Books).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let (_, pledge) = visible(&state, &access, &id).await?;
            let key = form.key.trim();
            if key.is_empty() || key.len() > 64 {
                return Err(AppError::BadRequest("missing_form_key").into());
            }
            let refusal = match Money::parse(&form.amount, pledge.currency) {
                Err(e) => Some(amount_refusal(tr, "field-amount", e)),
                Ok(amount) => {
                    let request_key = format!("pledge:{}:{key}", pledge.public_id);
                    let outcome = refund::refund_pledge(
                        &state.db,
                        state.gateway.as_ref(),
                        access.org_id(),
                        &pledge,
                        amount,
                        &request_key,
                        &staff.email,
                    )
                    .await?;
                    refund_refusal(tr, outcome, &pledge.public_id)
                }
            };
            match refusal {
                None => Ok(see_other(&format!("/admin/o/{}/pledges/{}", access.org.slug, pledge.public_id))),
                Some((message, status)) => {
                    let page_ =
                        pledge_page(&state, tr, &staff, &access, &id, form.amount.clone(), Some(message)).await?;
                    Ok(page(status, page_.render_html()))
                }
            }
        }
        .await,
    )
}
