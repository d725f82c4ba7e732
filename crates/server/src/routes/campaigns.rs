//! `/c/{slug}`: a campaign's public page, its progress for other sites
//! (`progress.json`, the framable `embed`), the pledge form and the
//! thank-you page.
//!
//! Totals shown anywhere here are the campaign's and teams' maintained
//! aggregates (`raised()`), never a sum over pledges. Draft and cancelled
//! campaigns do not exist for the public (404).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE, LOCATION, VARY};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use kanpa_campaigns::pledge::{MAX_MESSAGE, MAX_NAME, PledgeForm};
use kanpa_campaigns::{Campaign, CampaignStatus, FundingModel, PledgeStatus, Reward, Team, local_time, store};
use kanpa_ledger::{Currency, Locale, Money, Timestamp};
use serde::Deserialize;

use crate::app::AppState;
use crate::error::AppError;
use crate::forms::{self, read_failure, refusal};
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;

/// Supporters shown on the wall, newest first.
const WALL_SIZE: i64 = 30;

pub fn router() -> Router<AppState> {
    let pages = Router::new()
        .route("/c/{slug}", get(campaign_page))
        .route("/c/{slug}/pledge", get(pledge_form).post(pledge_submit))
        .route("/c/{slug}/thanks/{pledge}", get(thanks))
        .route_layer(from_fn(forms::deny_framing));
    // Meant to be shown on other sites.
    let shared = Router::new().route("/c/{slug}/progress.json", get(progress)).route("/c/{slug}/embed", get(embed));
    pages.merge(shared)
}

/// A campaign the public may see.
pub(crate) async fn public_campaign(state: &AppState, slug: &str) -> Result<Campaign, AppError> {
    let campaign = store::campaign_by_slug(&state.db, slug).await.map_err(read_failure)?;
    match campaign.status {
        CampaignStatus::Draft | CampaignStatus::Cancelled => Err(AppError::NotFound),
        CampaignStatus::Live | CampaignStatus::Settling | CampaignStatus::Succeeded | CampaignStatus::Failed => {
            Ok(campaign)
        }
    }
}

// ---------------------------------------------------------------- shared views

/// A progress bar: raised against a goal, with what a screen reader says.
#[derive(Clone, Debug)]
pub(crate) struct Bar {
    pub raised: String,
    pub goal: String,
    /// May pass 100.
    pub percent: i64,
    /// 0 to 100, for the bar's width and `aria-valuenow`.
    pub width: i64,
    pub label: String,
}

pub(crate) fn bar(tr: Tr, currency: Currency, raised: i64, goal: i64) -> Bar {
    let percent = if goal > 0 { (i128::from(raised.max(0)) * 100 / i128::from(goal)) as i64 } else { 0 };
    let raised = Money::new(raised, currency).format(tr.0);
    let goal = Money::new(goal, currency).format(tr.0);
    let label = tr.t_with("progress-label", &[("raised", &raised), ("goal", &goal), ("percent", &percent.to_string())]);
    Bar { raised, goal, percent, width: percent.clamp(0, 100), label }
}

/// "残り 23日", "5 hours left", "Ended".
pub(crate) fn time_left(tr: Tr, campaign: &Campaign, now: Timestamp) -> String {
    match campaign.status {
        CampaignStatus::Live if now < campaign.starts_at => {
            tr.t_with("time-starts", &[("at", &local_time(campaign, campaign.starts_at, tr.0))])
        }
        CampaignStatus::Live if now < campaign.deadline => {
            let seconds = campaign.deadline.unix_seconds() - now.unix_seconds();
            if seconds >= 86_400 {
                tr.t_count("time-left-days", "n", seconds / 86_400)
            } else if seconds >= 3_600 {
                tr.t_count("time-left-hours", "n", seconds / 3_600)
            } else {
                tr.t_count("time-left-minutes", "n", (seconds / 60).max(1))
            }
        }
        CampaignStatus::Live | CampaignStatus::Settling => tr.t("time-ended"),
        CampaignStatus::Succeeded => tr.t("time-succeeded"),
        CampaignStatus::Failed => match campaign.funding_model {
            FundingModel::AllOrNothing => tr.t("time-failed"),
            FundingModel::KeepItAll => tr.t("time-ended"),
        },
        CampaignStatus::Draft | CampaignStatus::Cancelled => tr.t("time-ended"),
    }
}

/// The funding model in one line.
fn model_line(tr: Tr, campaign: &Campaign) -> String {
    let deadline = local_time(campaign, campaign.deadline, tr.0);
    match campaign.funding_model {
        FundingModel::AllOrNothing => tr.t_with("model-all-or-nothing", &[("deadline", &deadline)]),
        FundingModel::KeepItAll => tr.t("model-keep-it-all"),
    }
}

/// Paragraphs (split at blank lines), each a list of lines.
fn paragraphs(text: &str) -> Vec<Vec<String>> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .map(|p| p.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect::<Vec<_>>())
        .filter(|p| !p.is_empty())
        .collect()
}

/// At most `max` characters, with an ellipsis if cut.
fn excerpt(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn backers_text(tr: Tr, n: i64) -> String {
    tr.t_count("backers-count", "n", n)
}

// ---------------------------------------------------------------- the campaign page

struct TeamCard {
    id: i64,
    name: String,
    bar: Bar,
    backers: String,
}

struct RewardCard {
    title: String,
    description: String,
    minimum: String,
    note: String,
    available: bool,
    link: String,
}

struct WallLine {
    name: String,
    message: String,
    amount: String,
    team: String,
}

#[derive(Template)]
#[template(path = "campaign.html")]
struct CampaignPage {
    tr: Tr,
    slug: String,
    title: String,
    story: Vec<Vec<String>>,
    og_description: String,
    og_url: String,
    og_locale: &'static str,
    total: Bar,
    backers: String,
    time_left: String,
    model_line: String,
    open: bool,
    teams: Vec<TeamCard>,
    rewards: Vec<RewardCard>,
    wall: Vec<WallLine>,
    contact_email: String,
    /// The organiser's legal disclosure page.
    legal_link: String,
}

fn reward_card(tr: Tr, campaign: &Campaign, teams: &[Team], reward: &Reward, now: Timestamp) -> RewardCard {
    let team = reward.team_id.and_then(|id| teams.iter().find(|t| t.id == id));
    let mut notes = Vec::new();
    if let Some(team) = team {
        notes.push(tr.t_with("reward-team-only", &[("team", team.name(tr.0))]));
    }
    match reward.remaining() {
        _ if reward.is_retired() => notes.push(tr.t("reward-retired")),
        Some(0) => notes.push(tr.t("reward-sold-out")),
        Some(n) => notes.push(tr.t_count("reward-remaining", "n", n)),
        None => {}
    }
    let available = reward.is_available_at(now) && campaign.is_open_at(now);
    if reward.remaining() != Some(0) && !reward.is_retired() && !reward.is_available_at(now) {
        notes.push(tr.t("reward-not-now"));
    }
    let mut link = format!("/c/{}/pledge?reward={}", campaign.slug, reward.id);
    if let Some(team) = team {
        link.push_str(&format!("&team={}", team.id));
    }
    RewardCard {
        title: reward.title(tr.0).to_owned(),
        description: reward.description(tr.0).to_owned(),
        minimum: tr.t_with("reward-minimum", &[("amount", &campaign.money(reward.min_amount).format(tr.0))]),
        note: notes.join(" · "),
        available,
        link,
    }
}

/// Renders `/c/{slug}` from the database: four indexed reads (campaign,
/// teams, rewards, the newest supporters).
async fn render_campaign_page(state: &AppState, slug: &str, tr: Tr) -> Result<String, AppError> {
    let campaign = public_campaign(state, slug).await?;
    let (teams, rewards, wall) = tokio::try_join!(
        store::teams(&state.db, campaign.id),
        store::rewards(&state.db, campaign.id),
        store::wall(&state.db, campaign.id, WALL_SIZE),
    )
    .map_err(read_failure)?;
    let now = Timestamp::now();
    let team_names: HashMap<i64, &str> = teams.iter().map(|t| (t.id, t.name(tr.0))).collect();
    let page = CampaignPage {
        tr,
        slug: campaign.slug.clone(),
        title: campaign.title(tr.0).to_owned(),
        story: paragraphs(campaign.story(tr.0)),
        og_description: excerpt(campaign.story(tr.0), 120),
        og_url: format!("{}/c/{}", state.site.base_url, campaign.slug),
        og_locale: match tr.0 {
            Locale::Ja => "ja_JP",
            Locale::En => "en_US",
        },
        total: bar(tr, campaign.currency, campaign.raised(), campaign.goal),
        backers: backers_text(tr, campaign.backers),
        time_left: time_left(tr, &campaign, now),
        model_line: model_line(tr, &campaign),
        open: campaign.is_open_at(now),
        teams: teams
            .iter()
            .map(|t| TeamCard {
                id: t.id,
                name: t.name(tr.0).to_owned(),
                bar: bar(tr, campaign.currency, t.raised(), t.goal),
                backers: backers_text(tr, t.backers),
            })
            .collect(),
        rewards: rewards.iter().map(|r| reward_card(tr, &campaign, &teams, r, now)).collect(),
        wall: wall
            .iter()
            .map(|w| WallLine {
                name: if w.anonymous || w.display_name.trim().is_empty() {
                    tr.t("wall-anonymous")
                } else {
                    w.display_name.clone()
                },
                message: w.message.clone(),
                amount: campaign.money(w.amount).format(tr.0),
                team: match w.team_id {
                    Some(id) => team_names.get(&id).map(|n| (*n).to_owned()).unwrap_or_default(),
                    None => tr.t("team-pool"),
                },
            })
            .collect(),
        contact_email: campaign.contact_email.clone(),
        legal_link: crate::routes::legal::legal_path_of(state, campaign.org_id).await?,
    };
    Ok(page.render_html())
}

/// Served from [`crate::page_cache`]: at most one second old.
async fn campaign_page(
    State(state): State<AppState>,
    lang: Lang,
    Path(slug): Path<String>,
) -> Result<Response, AppError> {
    let html = state.pages.get_or_render(&slug, lang.0, || render_campaign_page(&state, &slug, lang.tr())).await?;
    Ok(([(CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

// ---------------------------------------------------------------- progress.json and the embed

async fn progress(State(state): State<AppState>, Path(slug): Path<String>) -> Result<Response, AppError> {
    let campaign = public_campaign(&state, &slug).await?;
    let teams = store::teams(&state.db, campaign.id).await.map_err(read_failure)?;
    let body = serde_json::json!({
        "slug": campaign.slug,
        "raised": campaign.raised(),
        "pledged": campaign.pledged,
        "collected": campaign.collected,
        "backers": campaign.backers,
        "goal": campaign.goal,
        "currency": campaign.currency.code(),
        "deadline": campaign.deadline,
        "status": campaign.status.as_str(),
        "funding_model": campaign.funding_model.as_str(),
        "teams": teams.iter().map(|t| serde_json::json!({
            "slug": t.slug,
            "name_ja": t.name_ja,
            "name_en": t.name_en,
            "goal": t.goal,
            "raised": t.raised(),
            "backers": t.backers,
        })).collect::<Vec<_>>(),
    });
    Ok(([(CACHE_CONTROL, "public, max-age=30"), (ACCESS_CONTROL_ALLOW_ORIGIN, "*")], Json(body)).into_response())
}

#[derive(Template)]
#[template(path = "embed.html")]
struct EmbedPage {
    tr: Tr,
    title: String,
    url: String,
    total: Bar,
    backers: String,
    time_left: String,
}

async fn embed(State(state): State<AppState>, lang: Lang, Path(slug): Path<String>) -> Result<Response, AppError> {
    let tr = lang.tr();
    let campaign = public_campaign(&state, &slug).await?;
    let page = EmbedPage {
        tr,
        title: campaign.title(tr.0).to_owned(),
        url: format!("{}/c/{}", state.site.base_url, campaign.slug),
        total: bar(tr, campaign.currency, campaign.raised(), campaign.goal),
        backers: backers_text(tr, campaign.backers),
        time_left: time_left(tr, &campaign, Timestamp::now()),
    };
    // Its language follows the visitor's cookie and browser: shared caches
    // must keep one copy per language.
    let headers = [(CACHE_CONTROL, "public, max-age=30"), (VARY, "accept-language, cookie")];
    Ok((headers, Html(page.render_html())).into_response())
}

// ---------------------------------------------------------------- the pledge form

/// An option of a `<select>`.
pub(crate) struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

struct RewardChoice {
    value: String,
    title: String,
    detail: String,
    disabled: bool,
    checked: bool,
}

#[derive(Template)]
#[template(path = "pledge.html")]
struct PledgePage {
    tr: Tr,
    slug: String,
    title: String,
    open: bool,
    teams: Vec<Choice>,
    rewards: Vec<RewardChoice>,
    amount: String,
    display_name: String,
    anonymous: bool,
    message: String,
    email: String,
    max_name: usize,
    max_message: usize,
    amount_hint: String,
    next_step: String,
    /// The organiser's legal disclosure page, linked before the button.
    legal_link: String,
    notice: Option<String>,
    error: Option<String>,
    error_field: &'static str,
}

#[derive(Debug, Default, Deserialize)]
struct Preselect {
    team: Option<String>,
    reward: Option<String>,
    cancelled: Option<String>,
}

/// Builds the form around what the supporter chose or typed.
async fn pledge_page(state: &AppState, tr: Tr, campaign: &Campaign, form: &PledgeForm) -> Result<PledgePage, AppError> {
    let (teams, rewards) =
        tokio::try_join!(store::teams(&state.db, campaign.id), store::rewards(&state.db, campaign.id))
            .map_err(read_failure)?;
    let now = Timestamp::now();
    let mut team_choices =
        vec![Choice { value: String::new(), label: tr.t("pledge-team-pool"), selected: form.team.trim().is_empty() }];
    team_choices.extend(teams.iter().map(|t| Choice {
        value: t.id.to_string(),
        label: t.name(tr.0).to_owned(),
        selected: form.team.trim() == t.id.to_string(),
    }));
    let mut reward_choices = vec![RewardChoice {
        value: String::new(),
        title: tr.t("pledge-no-reward"),
        detail: String::new(),
        disabled: false,
        checked: form.reward.trim().is_empty(),
    }];
    reward_choices.extend(rewards.iter().map(|r| {
        let card = reward_card(tr, campaign, &teams, r, now);
        let detail = [card.minimum, card.note].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" · ");
        RewardChoice {
            value: r.id.to_string(),
            title: card.title,
            detail,
            disabled: !card.available,
            checked: form.reward.trim() == r.id.to_string(),
        }
    }));
    let deadline = local_time(campaign, campaign.deadline, tr.0);
    Ok(PledgePage {
        tr,
        slug: campaign.slug.clone(),
        title: campaign.title(tr.0).to_owned(),
        open: campaign.is_open_at(now),
        teams: team_choices,
        rewards: reward_choices,
        amount: form.amount.clone(),
        display_name: form.display_name.clone(),
        anonymous: form.anonymous.as_deref().is_some_and(|v| !v.is_empty() && v != "false" && v != "0"),
        message: form.message.clone(),
        email: form.email.clone(),
        max_name: MAX_NAME,
        max_message: MAX_MESSAGE,
        amount_hint: tr.t_with("pledge-amount-hint", &[("min", &campaign.currency.stripe_minimum().format(tr.0))]),
        next_step: match campaign.funding_model {
            FundingModel::AllOrNothing => tr.t_with("pledge-next-all-or-nothing", &[("deadline", &deadline)]),
            FundingModel::KeepItAll => tr.t("pledge-next-keep-it-all"),
        },
        legal_link: crate::routes::legal::legal_path_of(state, campaign.org_id).await?,
        notice: None,
        error: None,
        error_field: "",
    })
}

async fn pledge_form(
    State(state): State<AppState>,
    lang: Lang,
    Path(slug): Path<String>,
    Query(preselect): Query<Preselect>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    let campaign = public_campaign(&state, &slug).await?;
    let mut form = PledgeForm {
        team: preselect.team.clone().unwrap_or_default(),
        reward: preselect.reward.clone().unwrap_or_default(),
        ..PledgeForm::default()
    };
    // A chosen reward suggests its minimum as the amount.
    if let Some(id) = preselect.reward.as_deref().and_then(|r| r.trim().parse::<i64>().ok())
        && let Ok(reward) = store::reward(&state.db, campaign.id, id).await
    {
        form.amount = reward.min_amount.to_string();
    }
    let mut page = pledge_page(&state, tr, &campaign, &form).await?;
    if preselect.cancelled.is_some() {
        page.notice = Some(tr.t("pledge-cancelled-notice"));
    }
    Ok(Html(page.render_html()).into_response())
}

async fn pledge_submit(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(slug): Path<String>,
    Form(form): Form<PledgeForm>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    if !forms::same_origin(&headers, &state.site.base_url) {
        return Ok(forms::cross_site(tr));
    }
    let result =
        kanpa_campaigns::pledge::start(&state.db, state.gateway.as_ref(), &state.site, &slug, &form, lang.0).await;
    match result {
        Ok(started) => Ok((StatusCode::SEE_OTHER, [(LOCATION, started.checkout_url)]).into_response()),
        Err(error) => {
            let refused = refusal(tr, error)?;
            let campaign = public_campaign(&state, &slug).await?;
            let mut page = pledge_page(&state, tr, &campaign, &form).await?;
            page.error = Some(refused.message);
            page.error_field = refused.field.unwrap_or("");
            Ok((refused.status, Html(page.render_html())).into_response())
        }
    }
}

// ---------------------------------------------------------------- thank you

#[derive(Template)]
#[template(path = "thanks.html")]
struct ThanksPage {
    tr: Tr,
    slug: String,
    title: String,
    heading: String,
    message: String,
    amount: String,
    target: String,
    /// Reload in a few seconds: the payment is still being confirmed.
    refresh: bool,
    /// Offer to start again: the pledge did not go through.
    retry: bool,
}

async fn thanks(
    State(state): State<AppState>,
    lang: Lang,
    Path((slug, public_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    let campaign = public_campaign(&state, &slug).await?;
    let pledge = store::pledge_by_public_id(&state.db, &public_id).await.map_err(read_failure)?;
    if pledge.campaign_id != campaign.id {
        return Err(AppError::NotFound);
    }
    let target = match pledge.team_id {
        Some(team) => store::team(&state.db, campaign.id, team).await.map_err(read_failure)?.name(tr.0).to_owned(),
        None => tr.t("team-pool"),
    };
    let deadline = local_time(&campaign, campaign.deadline, tr.0);
    let (heading, message, refresh, retry) = match pledge.status {
        PledgeStatus::Pending => (tr.t("thanks-pending-heading"), tr.t("thanks-pending"), true, false),
        PledgeStatus::Committed => {
            (tr.t("thanks-heading"), tr.t_with("thanks-committed", &[("deadline", &deadline)]), false, false)
        }
        PledgeStatus::AwaitingPayment => (tr.t("thanks-heading"), tr.t("thanks-awaiting-payment"), false, false),
        PledgeStatus::Collected => (tr.t("thanks-heading"), tr.t("thanks-collected"), false, false),
        PledgeStatus::PaymentFailed => (tr.t("thanks-failed-heading"), tr.t("thanks-payment-failed"), false, false),
        PledgeStatus::Expired | PledgeStatus::Cancelled | PledgeStatus::Dropped | PledgeStatus::Void => {
            (tr.t("thanks-failed-heading"), tr.t("thanks-not-completed"), false, true)
        }
        PledgeStatus::Refunded => (tr.t("thanks-heading"), tr.t("thanks-refunded"), false, false),
    };
    let page = ThanksPage {
        tr,
        slug: campaign.slug.clone(),
        title: campaign.title(tr.0).to_owned(),
        heading,
        message,
        amount: pledge.money().format(tr.0),
        target,
        refresh,
        retry,
    };
    // The state changes under the page; never serve it from a cache.
    Ok(([(CACHE_CONTROL, "no-store")], Html(page.render_html())).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stories_become_paragraphs_of_lines() {
        let story = "一行目\n二行目\n\n\n次の段落\r\n\r\n  ";
        assert_eq!(
            paragraphs(story),
            vec![vec!["一行目".to_owned(), "二行目".to_owned()], vec!["次の段落".to_owned()]]
        );
        assert_eq!(excerpt("あいう えお", 10), "あいう えお");
        assert_eq!(excerpt("あいうえおかきくけこさ", 5), "あいうえ…");
    }

    #[test]
    fn bars_stop_at_full_but_say_the_real_percentage() {
        let tr = Tr(Locale::Ja);
        let b = bar(tr, Currency::Jpy, 750_000, 500_000);
        assert_eq!((b.percent, b.width), (150, 100));
        assert_eq!(b.raised, "¥750,000");
        assert!(b.label.contains("150"), "{}", b.label);
        assert_eq!(bar(tr, Currency::Jpy, 1, 300).percent, 0, "rounded down");
    }
}
