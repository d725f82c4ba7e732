//! `/me`: "my pledges", reached through an emailed single-use sign-in
//! link (no password). A supporter sees every pledge made with their
//! address, changes or cancels those still open, pays one whose deadline
//! charge failed, and prints a receipt for money taken.
//!
//! The session lives in the `kanpa_supporter` cookie (HttpOnly,
//! SameSite=Lax, Secure behind HTTPS); only its SHA-256 is stored. Every
//! POST passes the same-origin check of [`crate::forms`]. A pledge of
//! another address is not found, exactly like one that does not exist.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, COOKIE, LOCATION, REFERRER_POLICY, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::from_fn;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use kanpa_campaigns::supporter::{self, ChangeForm};
use kanpa_campaigns::{Campaign, CampaignError, Pledge, PledgeStatus, Reward, Team, store};
use kanpa_ledger::Timestamp;
use kanpa_messaging::signin::{self, LinkSite};
use serde::Deserialize;

use crate::app::AppState;
use crate::error::AppError;
use crate::forms::{self, read_failure, refusal};
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::receipt_view::Reference;
use crate::routes::campaigns::Choice;

pub const SESSION_COOKIE: &str = "kanpa_supporter";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me", get(my_pledges))
        .route("/me/sign-in", post(sign_in))
        .route("/me/sign-in/{token}", get(redeem))
        .route("/me/sign-out", post(sign_out))
        .route("/me/pledges/{id}", post(change))
        .route("/me/pledges/{id}/cancel", post(cancel))
        .route("/me/pledges/{id}/pay", get(pay))
        .route("/me/pledges/{id}/receipt", get(receipt))
        .route("/me/receipts/{id}", get(receipt_by_link))
        .route("/me/memberships/{id}/card", get(membership_card))
        .route("/me/memberships/{id}/receipts/{invoice}", get(membership_receipt))
        .route("/me/memberships/{id}/{action}", post(membership_action))
        .route_layer(from_fn(forms::deny_framing))
}

// ---------------------------------------------------------------- the session

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .find(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The signed-in supporter: (session id, email).
pub(crate) async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Option<(String, String)>, AppError> {
    let Some(id) = session_cookie(headers) else {
        return Ok(None);
    };
    let email = signin::session_email(&state.db, &id).await.map_err(|e| read_failure(e.into()))?;
    Ok(email.map(|email| (id, email)))
}

fn cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.server.secure_cookies { "; Secure" } else { "" };
    let text = format!("{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

fn page(status: StatusCode, html: String) -> Response {
    // Personal pages: never kept by a shared cache.
    (status, [(CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

// ---------------------------------------------------------------- signing in

#[derive(Template)]
#[template(path = "me_sign_in.html")]
struct SignInPage {
    tr: Tr,
    email: String,
    sent: bool,
    expired: bool,
    error: Option<String>,
}

impl SignInPage {
    fn new(tr: Tr) -> SignInPage {
        SignInPage { tr, email: String::new(), sent: false, expired: false, error: None }
    }
}

#[derive(Debug, Default, Deserialize)]
struct SignInForm {
    #[serde(default)]
    email: String,
}

async fn sign_in(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    if !forms::same_origin(&headers, &state.site.base_url) {
        return Ok(forms::cross_site(tr));
    }
    let site = LinkSite { base_url: &state.site.base_url, mail_domain: &state.site.mail_domain };
    match signin::request_link(&state.db, site, &form.email, lang.0).await.map_err(CampaignError::from) {
        Ok(()) => {
            state.workers.notify();
            // The same answer whether or not the address has pledges.
            let page_ = SignInPage { sent: true, email: form.email.trim().to_owned(), ..SignInPage::new(tr) };
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        Err(error) => {
            let refused = refusal(tr, error)?;
            let page_ = SignInPage { email: form.email, error: Some(refused.message), ..SignInPage::new(tr) };
            Ok(page(refused.status, page_.render_html()))
        }
    }
}

async fn redeem(State(state): State<AppState>, lang: Lang, Path(token): Path<String>) -> Result<Response, AppError> {
    match signin::redeem(&state.db, &token).await.map_err(CampaignError::from) {
        Ok(session) => {
            let max_age = signin::SESSION_DAYS * 86_400;
            let mut response = see_other("/me");
            response.headers_mut().insert(SET_COOKIE, cookie(&state, &session.id, max_age));
            // The token is in this URL: keep it out of any Referer.
            response.headers_mut().insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            Ok(response)
        }
        Err(CampaignError::LinkExpired) => {
            let page_ = SignInPage { expired: true, ..SignInPage::new(lang.tr()) };
            let mut response = page(StatusCode::GONE, page_.render_html());
            response.headers_mut().insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            Ok(response)
        }
        Err(error) => Err(read_failure(error)),
    }
}

async fn sign_out(State(state): State<AppState>, lang: Lang, headers: HeaderMap) -> Result<Response, AppError> {
    if !forms::same_origin(&headers, &state.site.base_url) {
        return Ok(forms::cross_site(lang.tr()));
    }
    if let Some(id) = session_cookie(&headers) {
        signin::sign_out(&state.db, &id).await.map_err(|e| read_failure(e.into()))?;
    }
    let mut response = see_other("/me?done=signed_out");
    response.headers_mut().insert(SET_COOKIE, cookie(&state, "", 0));
    Ok(response)
}

// ---------------------------------------------------------------- my pledges

struct MyPledge {
    id: String,
    campaign_title: String,
    campaign_slug: String,
    target: String,
    reward: Option<String>,
    amount: String,
    /// The amount as typed in the change form.
    amount_value: String,
    status: String,
    status_class: &'static str,
    changeable: bool,
    can_pay: bool,
    has_receipt: bool,
    teams: Vec<Choice>,
    rewards: Vec<Choice>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "me.html")]
struct MePage {
    tr: Tr,
    email: String,
    pledges: Vec<MyPledge>,
    memberships: Vec<MyMembership>,
    notice: Option<String>,
}

fn status_words(tr: Tr, status: PledgeStatus) -> String {
    tr.t(&format!("status-{}", status.as_str()))
}

fn status_class(status: PledgeStatus) -> &'static str {
    match status {
        PledgeStatus::Committed | PledgeStatus::Collected => "ok",
        PledgeStatus::Pending | PledgeStatus::AwaitingPayment => "wait",
        PledgeStatus::PaymentFailed => "bad",
        PledgeStatus::Dropped
        | PledgeStatus::Cancelled
        | PledgeStatus::Expired
        | PledgeStatus::Void
        | PledgeStatus::Refunded => "off",
    }
}

struct CampaignParts {
    campaign: Campaign,
    teams: Vec<Team>,
    rewards: Vec<Reward>,
}

async fn parts(state: &AppState, campaign_id: i64) -> Result<CampaignParts, AppError> {
    let campaign = store::campaign_by_id(&state.db, campaign_id).await.map_err(read_failure)?;
    let (teams, rewards) =
        tokio::try_join!(store::teams(&state.db, campaign_id), store::rewards(&state.db, campaign_id))
            .map_err(read_failure)?;
    Ok(CampaignParts { campaign, teams, rewards })
}

fn my_pledge(tr: Tr, parts: &CampaignParts, pledge: &Pledge, changeable: bool) -> MyPledge {
    let campaign = &parts.campaign;
    let now = Timestamp::now();
    let target = match pledge.team_id.and_then(|id| parts.teams.iter().find(|t| t.id == id)) {
        Some(team) => team.name(tr.0).to_owned(),
        None => tr.t("team-pool"),
    };
    let mut teams =
        vec![Choice { value: String::new(), label: tr.t("pledge-team-pool"), selected: pledge.team_id.is_none() }];
    teams.extend(parts.teams.iter().map(|t| Choice {
        value: t.id.to_string(),
        label: t.name(tr.0).to_owned(),
        selected: pledge.team_id == Some(t.id),
    }));
    let mut rewards =
        vec![Choice { value: String::new(), label: tr.t("pledge-no-reward"), selected: pledge.reward_id.is_none() }];
    rewards.extend(
        parts
            .rewards
            .iter()
            // Offered: those available now, and the one this pledge holds.
            .filter(|r| pledge.reward_id == Some(r.id) || r.is_available_at(now))
            .map(|r| Choice {
                value: r.id.to_string(),
                label: format!(
                    "{} ({})",
                    r.title(tr.0),
                    tr.t_with("reward-minimum", &[("amount", &campaign.money(r.min_amount).format(tr.0))])
                ),
                selected: pledge.reward_id == Some(r.id),
            }),
    );
    MyPledge {
        id: pledge.public_id.clone(),
        campaign_title: campaign.title(tr.0).to_owned(),
        campaign_slug: campaign.slug.clone(),
        target,
        reward: pledge
            .reward_id
            .and_then(|id| parts.rewards.iter().find(|r| r.id == id))
            .map(|r| r.title(tr.0).to_owned()),
        amount: pledge.money().format(tr.0),
        amount_value: pledge.amount.to_string(),
        status: status_words(tr, pledge.status),
        status_class: status_class(pledge.status),
        changeable,
        can_pay: pledge.status == PledgeStatus::PaymentFailed,
        has_receipt: matches!(pledge.status, PledgeStatus::Collected | PledgeStatus::Refunded)
            && pledge.collected_at.is_some(),
        teams,
        rewards,
        error: None,
    }
}

async fn me_page(state: &AppState, tr: Tr, email: &str) -> Result<MePage, AppError> {
    let pledges = store::pledges_of_email(&state.db, email).await.map_err(read_failure)?;
    let mut campaigns: HashMap<i64, CampaignParts> = HashMap::new();
    let mut mine = Vec::with_capacity(pledges.len());
    for pledge in &pledges {
        if let std::collections::hash_map::Entry::Vacant(entry) = campaigns.entry(pledge.campaign_id) {
            entry.insert(parts(state, pledge.campaign_id).await?);
        }
        let changeable = supporter::is_changeable(&state.db, pledge).await.map_err(read_failure)?;
        mine.push(my_pledge(tr, &campaigns[&pledge.campaign_id], pledge, changeable));
    }
    let memberships = my_memberships(state, tr, email).await?;
    Ok(MePage { tr, email: email.to_owned(), pledges: mine, memberships, notice: None })
}

// ---------------------------------------------------------------- my memberships

struct MyMembership {
    id: String,
    salon_name: String,
    salon_slug: String,
    tier: String,
    status: String,
    status_class: &'static str,
    amount: String,
    /// "Next charge: ¥5,000 on 1 May 2026", "Ends on …", "Paused until …".
    schedule: Option<String>,
    lifetime_paid: String,
    can_cancel: bool,
    can_undo: bool,
    can_pause: bool,
    can_resume: bool,
    can_update_card: bool,
    tiers: Vec<Choice>,
    payments: Vec<MyPayment>,
}

struct MyPayment {
    invoice: String,
    paid_on: String,
    amount: String,
}

async fn my_memberships(state: &AppState, tr: Tr, email: &str) -> Result<Vec<MyMembership>, AppError> {
    use kanpa_patrons::MembershipStatus as S;
    let failure = |e: kanpa_patrons::PatronError| AppError::Internal(anyhow::anyhow!(e));
    let memberships = kanpa_patrons::store::memberships_of_email(&state.db, email).await.map_err(failure)?;
    let mut mine = Vec::new();
    // An unfinished Checkout is not a membership yet.
    for m in memberships.iter().filter(|m| m.status != S::Incomplete || m.since.is_some()) {
        let salon = kanpa_patrons::store::salon_by_id(&state.db, m.salon_id).await.map_err(failure)?;
        let tiers = kanpa_patrons::store::tiers(&state.db, salon.id).await.map_err(failure)?;
        let tier = tiers.iter().find(|t| t.id == m.tier_id).map(|t| t.name(tr.0).to_owned()).unwrap_or_default();
        let date = |t| kanpa_patrons::events::local_date(t, tr.0);
        let schedule = match (m.status, m.current_period_end, m.cancel_at, m.paused_until) {
            (S::Active | S::PastDue, Some(end), _, _) => Some(
                tr.t_with("me-membership-next-charge", &[("amount", &m.money().format(tr.0)), ("date", &date(end))]),
            ),
            (S::Canceling, _, Some(at), _) | (S::Canceling, Some(at), None, _) => {
                Some(tr.t_with("me-membership-ends", &[("date", &date(at))]))
            }
            (S::Paused, _, _, Some(until)) => Some(tr.t_with("me-membership-paused-until", &[("date", &date(until))])),
            _ => None,
        };
        let choices = if m.status == S::Active {
            tiers
                .iter()
                .filter(|t| t.id != m.tier_id && t.is_joinable())
                .map(|t| Choice {
                    value: t.slug.clone(),
                    label: format!("{} ({})", t.name(tr.0), t.price().format(tr.0)),
                    selected: false,
                })
                .collect()
        } else {
            Vec::new()
        };
        mine.push(MyMembership {
            id: m.public_id.clone(),
            salon_name: salon.name(tr.0).to_owned(),
            salon_slug: salon.slug.clone(),
            tier,
            status: tr.t(&format!("membership-status-{}", m.status.as_str())),
            status_class: match m.status {
                S::Active | S::Canceling => "ok",
                S::Incomplete | S::Paused => "wait",
                S::PastDue => "bad",
                S::Ended => "off",
            },
            amount: tr.t_with("salon-per-month", &[("price", &m.money().format(tr.0))]),
            schedule,
            lifetime_paid: m.lifetime_paid().format(tr.0),
            can_cancel: matches!(m.status, S::Active | S::PastDue),
            can_undo: m.status == S::Canceling,
            can_pause: m.status == S::Active,
            can_resume: m.status == S::Paused,
            can_update_card: m.stripe_customer_id.is_some() && m.status != S::Ended,
            tiers: choices,
            payments: kanpa_patrons::store::paid_invoices(&state.db, m.id)
                .await
                .map_err(failure)?
                .into_iter()
                .map(|p| MyPayment {
                    paid_on: date(p.paid_at),
                    amount: kanpa_ledger::Money::new(p.amount_paid, m.currency).format(tr.0),
                    invoice: p.stripe_invoice_id,
                })
                .collect(),
        });
    }
    Ok(mine)
}

#[derive(Debug, Default, Deserialize)]
struct MembershipForm {
    #[serde(default)]
    months: String,
    #[serde(default)]
    tier: String,
}

/// A patron's change to their membership; the new state arrives from Stripe
/// in a moment, so the page says the request was sent.
async fn membership_action(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<MembershipForm>,
) -> Result<Response, AppError> {
    use kanpa_patrons::selfservice;
    let tr = lang.tr();
    if !forms::same_origin(&headers, &state.site.base_url) {
        return Ok(forms::cross_site(tr));
    }
    let Some((_, email)) = signed_in(&state, &headers).await? else {
        return Ok(see_other("/me"));
    };
    let (db, gateway) = (&state.db, state.gateway.as_ref());
    let result = match action.as_str() {
        "cancel" => selfservice::cancel_at_period_end(db, gateway, &email, &id).await.map(|_| ()),
        "undo-cancel" => selfservice::undo_cancel(db, gateway, &email, &id).await.map(|_| ()),
        "pause" => {
            let months = form.months.trim().parse::<i64>().unwrap_or(0);
            selfservice::pause(db, gateway, &email, &id, months).await.map(|_| ())
        }
        "resume" => selfservice::resume(db, gateway, &email, &id).await.map(|_| ()),
        "tier" => selfservice::change_tier(db, gateway, &email, &id, &form.tier).await.map(|_| ()),
        _ => return Err(AppError::NotFound),
    };
    state.workers.notify();
    match result {
        Ok(()) => Ok(see_other("/me?done=membership")),
        Err(e) => {
            let (status, _) = crate::salon_errors::status_and_field(&e);
            if status.is_server_error() && !matches!(e, kanpa_patrons::PatronError::Gateway(_)) {
                return Err(AppError::Internal(anyhow::anyhow!(e)));
            }
            let mut page_ = me_page(&state, tr, &email).await?;
            page_.notice = Some(crate::salon_errors::describe(&e, tr));
            Ok(page(status, page_.render_html()))
        }
    }
}

/// Sends the patron to the payment provider's billing portal to update their card.
async fn membership_card(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    let Some((_, email)) = signed_in(&state, &headers).await? else {
        return Ok(see_other("/me"));
    };
    let site = state.config.salon_site();
    match kanpa_patrons::selfservice::card_update_link(&state.db, state.gateway.as_ref(), &site, &email, &id).await {
        Ok(url) => Ok(see_other(&url)),
        Err(e) => {
            let (status, _) = crate::salon_errors::status_and_field(&e);
            let mut page_ = me_page(&state, tr, &email).await?;
            page_.notice = Some(crate::salon_errors::describe(&e, tr));
            Ok(page(status, page_.render_html()))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct Done {
    done: Option<String>,
}

async fn my_pledges(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    let Some((_, email)) = signed_in(&state, &headers).await? else {
        let mut page_ = SignInPage::new(tr);
        if done.done.as_deref() == Some("signed_out") {
            page_.error = Some(tr.t("me-signed-out"));
        }
        return Ok(page(StatusCode::OK, page_.render_html()));
    };
    let mut page_ = me_page(&state, tr, &email).await?;
    page_.notice = match done.done.as_deref() {
        Some("changed") => Some(tr.t("me-changed")),
        Some("cancelled") => Some(tr.t("me-cancelled")),
        Some("membership") => Some(tr.t("me-membership-requested")),
        _ => None,
    };
    Ok(page(StatusCode::OK, page_.render_html()))
}

/// The list again, with a refusal shown at the pledge it concerns.
async fn refused_at(
    state: &AppState,
    tr: Tr,
    email: &str,
    id: &str,
    error: CampaignError,
) -> Result<Response, AppError> {
    let refused = refusal(tr, error)?;
    let mut page_ = me_page(state, tr, email).await?;
    if let Some(pledge) = page_.pledges.iter_mut().find(|p| p.id == id) {
        pledge.error = Some(refused.message);
    } else {
        page_.notice = Some(refused.message);
    }
    Ok(page(refused.status, page_.render_html()))
}

async fn change(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    if !forms::same_origin(&headers, &state.site.base_url) {
        return Ok(forms::cross_site(tr));
    }
    let Some((_, email)) = signed_in(&state, &headers).await? else {
        return Ok(see_other("/me"));
    };
    match supporter::change(&state.db, &state.site, &email, &id, &form).await {
        Ok(_) => Ok(see_other("/me?done=changed")),
        Err(error) => refused_at(&state, tr, &email, &id, error).await,
    }
}

async fn cancel(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    if !forms::same_origin(&headers, &state.site.base_url) {
        return Ok(forms::cross_site(tr));
    }
    let Some((_, email)) = signed_in(&state, &headers).await? else {
        return Ok(see_other("/me"));
    };
    match supporter::cancel(&state.db, &email, &id).await {
        Ok(()) => Ok(see_other("/me?done=cancelled")),
        Err(error) => refused_at(&state, tr, &email, &id, error).await,
    }
}

/// Opens a Checkout session in payment mode for a pledge whose deadline
/// charge failed (`supporter::pay_checkout`): each visit closes the previous
/// session at the gateway and opens a new one under its own key
/// (`pledge:{id}:pay:{n}`, `n` counted on the pledge), so only one can be
/// paid.
async fn pay(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    let Some((_, email)) = signed_in(&state, &headers).await? else {
        return Ok(see_other("/me"));
    };
    let pledge = supporter::own_pledge(&state.db, &email, &id).await.map_err(read_failure)?;
    if pledge.status != PledgeStatus::PaymentFailed {
        return Ok(see_other("/me"));
    }
    match supporter::pay_checkout(&state.db, state.gateway.as_ref(), &state.site, &email, &id, tr.0).await {
        Ok(session) => Ok(see_other(&session.url)),
        Err(e) => refused_at(&state, tr, &email, &id, e).await,
    }
}

// ---------------------------------------------------------------- receipts

/// Renders a receipt of the signed-in payer; another address's receipt is
/// not found, like a missing one.
async fn show_receipt(
    state: &AppState,
    tr: Tr,
    email: &str,
    receipt: Option<kanpa_payments::receipt::Receipt>,
    mut references: Vec<Reference>,
) -> Result<Response, AppError> {
    let Some(receipt) = receipt.filter(|r| r.payer_email.eq_ignore_ascii_case(email)) else {
        return Err(AppError::NotFound);
    };
    if receipt.source_kind == "stripe-charge" {
        references.push(Reference { label: "receipt-charge", value: receipt.source_ref.clone() });
    }
    let legal = crate::routes::legal::legal_path_of(state, receipt.org.0).await.ok();
    let html = crate::receipt_view::render(tr, &receipt, references, legal)?;
    Ok(page(StatusCode::OK, html))
}

fn receipt_failure(e: kanpa_payments::receipt::ReceiptError) -> AppError {
    AppError::Internal(anyhow::Error::new(e))
}

/// `/me/receipts/{id}`: any receipt by its link (the receipt emails use it).
async fn receipt_by_link(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let Some((_, email)) = signed_in(&state, &headers).await? else {
        return Ok(see_other("/me"));
    };
    let receipt = kanpa_payments::receipt::by_public_id(&state.db, &id).await.map_err(receipt_failure)?;
    show_receipt(&state, lang.tr(), &email, receipt, Vec::new()).await
}

/// The receipt of a pledge whose money was taken.
async fn receipt(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let Some((_, email)) = signed_in(&state, &headers).await? else {
        return Ok(see_other("/me"));
    };
    let pledge = supporter::own_pledge(&state.db, &email, &id).await.map_err(read_failure)?;
    if !matches!(pledge.status, PledgeStatus::Collected | PledgeStatus::Refunded) {
        return Err(AppError::NotFound);
    }
    // Paid by card: the charge's receipt; paid in cash or by bank transfer
    // (recorded by a treasurer): the manual entry's.
    let receipt = match pledge.charge_id.as_deref() {
        Some(charge) => kanpa_payments::receipt::by_stripe_charge(&state.db, charge).await,
        None => kanpa_payments::receipt::manual_of_pledge(&state.db, &pledge.public_id).await,
    }
    .map_err(receipt_failure)?;
    let references = vec![Reference { label: "receipt-pledge", value: pledge.public_id.clone() }];
    show_receipt(&state, lang.tr(), &email, receipt, references).await
}

/// The receipt of one paid invoice of the signed-in patron's membership;
/// another address's membership or invoice is not found, like a missing one.
async fn membership_receipt(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path((id, invoice)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let Some((_, email)) = signed_in(&state, &headers).await? else {
        return Ok(see_other("/me"));
    };
    let failure = |e: kanpa_patrons::PatronError| AppError::Internal(anyhow::anyhow!(e));
    let membership = match kanpa_patrons::store::membership_by_public_id(&state.db, &id).await {
        Ok(m) if m.email.eq_ignore_ascii_case(&email) => m,
        Ok(_) | Err(kanpa_patrons::PatronError::NotFound(_)) => return Err(AppError::NotFound),
        Err(e) => return Err(failure(e)),
    };
    let paid = kanpa_patrons::store::paid_invoices(&state.db, membership.id).await.map_err(failure)?;
    let Some(charge) = paid.into_iter().find(|p| p.stripe_invoice_id == invoice).and_then(|p| p.stripe_charge_id)
    else {
        return Err(AppError::NotFound);
    };
    let receipt = kanpa_payments::receipt::by_stripe_charge(&state.db, &charge).await.map_err(receipt_failure)?;
    let references = vec![Reference { label: "receipt-invoice", value: invoice }];
    show_receipt(&state, lang.tr(), &email, receipt, references).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kanpa_ledger::Locale;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("lang=en; kanpa_supporter=abc123; x=y"));
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc123"));
        headers.insert(COOKIE, HeaderValue::from_static("kanpa_supporterx=1; kanpa_supporter="));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn every_status_has_words_in_both_languages() {
        for locale in [Locale::Ja, Locale::En] {
            for status in PledgeStatus::ALL {
                let words = status_words(Tr(locale), *status);
                assert!(!words.is_empty() && !words.contains("status-"), "{locale:?} {status}: {words}");
            }
        }
    }
}
