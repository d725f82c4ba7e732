//! Setting up from the console (owners and organisers): a new campaign
//! (a draft), teams added to it, publishing it, and opening or closing a
//! salon. Input is checked by the domain crates' own rules and refused in
//! the words of `campaign_errors` and `salon_errors`, the same as the API.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kanpa_campaigns::store::{self, CampaignChanges, CampaignInput, RewardInput, TeamInput};
use kanpa_campaigns::{Campaign, CampaignError};
use kanpa_ledger::{Currency, Money};
use kanpa_patrons::{PatronError, Salon, SalonStatus};
use serde::Deserialize;

use super::{Answer, Nav, Need, Refused, Staff, access, check_form, page, see_other};
use crate::app::AppState;
use crate::error::AppError;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::staff::Access;

#[derive(Debug, Default, Deserialize, Clone)]
pub struct CampaignForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    title_ja: String,
    #[serde(default)]
    title_en: String,
    #[serde(default)]
    story_ja: String,
    #[serde(default)]
    story_en: String,
    #[serde(default)]
    goal: String,
    /// `datetime-local` values, in Japan time.
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    deadline: String,
    #[serde(default)]
    funding_model: String,
    #[serde(default)]
    pool_rule: String,
    #[serde(default)]
    contact_email: String,
}

#[derive(Template)]
#[template(path = "admin_new_campaign.html")]
struct NewCampaignPage {
    tr: Tr,
    nav: Nav,
    form: CampaignForm,
    error: Option<String>,
}

/// "2026-12-31T23:59" typed in Japan, as RFC 3339; anything else is passed
/// on for the campaign's own check to refuse.
fn in_japan(local: &str) -> String {
    let local = local.trim();
    if local.len() == 16 && local.as_bytes().get(10) == Some(&b'T') {
        format!("{local}:00+09:00")
    } else {
        local.to_owned()
    }
}

/// A salon's refusal in the reader's words; a server error for what is ours
/// to fix.
fn salon_refusal(tr: Tr, e: PatronError) -> Result<(StatusCode, String), Refused> {
    let (status, _) = crate::salon_errors::status_and_field(&e);
    if status.is_server_error() {
        return Err(Refused::Error(AppError::Internal(anyhow::anyhow!(e))));
    }
    Ok((status, crate::salon_errors::describe(&e, tr)))
}

fn campaign_refusal(tr: Tr, e: CampaignError) -> Result<(StatusCode, String), Refused> {
    let refused = crate::forms::refusal(tr, e).map_err(Refused::Error)?;
    Ok((refused.status, refused.message))
}

pub async fn new_campaign(State(state): State<AppState>, lang: Lang, staff: Staff, Path(org): Path<String>) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Organise).await?;
            let form = CampaignForm {
                funding_model: "all_or_nothing".into(),
                pool_rule: "equal".into(),
                ..CampaignForm::default()
            };
            let page_ = NewCampaignPage { tr, nav: Nav::new(&staff, &access, None), form, error: None };
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

pub async fn create_campaign(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path(org): Path<String>,
    Form(form): Form<CampaignForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Organise).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let goal = match Money::parse(&form.goal, Currency::Jpy) {
                Ok(m) => Ok(m.amount()),
                Err(_) => Err((StatusCode::UNPROCESSABLE_ENTITY, tr.t("campaign-error-amount"))),
            };
            let result = match goal {
                Err(refused) => Err(refused),
                Ok(goal) => {
                    let input = CampaignInput {
                        slug: form.slug.trim().to_owned(),
                        title_ja: form.title_ja.clone(),
                        title_en: form.title_en.clone(),
                        story_ja: form.story_ja.clone(),
                        story_en: form.story_en.clone(),
                        currency: "JPY".into(),
                        goal,
                        starts_at: in_japan(&form.starts_at),
                        deadline: in_japan(&form.deadline),
                        time_zone: "Asia/Tokyo".into(),
                        funding_model: form.funding_model.clone(),
                        pool_rule: form.pool_rule.clone(),
                        contact_email: form.contact_email.trim().to_owned(),
                    };
                    match store::create_campaign(&state.db, access.org_id(), &input).await {
                        Ok(campaign) => Ok(campaign),
                        Err(e) => Err(campaign_refusal(tr, e)?),
                    }
                }
            };
            match result {
                Ok(campaign) => Ok(see_other(&format!("/admin/o/{}/campaigns/{}", access.org.slug, campaign.slug))),
                Err((status, message)) => {
                    let page_ =
                        NewCampaignPage { tr, nav: Nav::new(&staff, &access, None), form, error: Some(message) };
                    Ok(page(status, page_.render_html()))
                }
            }
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize, Clone)]
pub struct SalonForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    pub(super) name_ja: String,
    #[serde(default)]
    pub(super) name_en: String,
    #[serde(default)]
    pub(super) description_ja: String,
    #[serde(default)]
    pub(super) description_en: String,
    #[serde(default)]
    billing_anchor: String,
    #[serde(default)]
    tier_change: String,
    #[serde(default)]
    pub(super) grace_days: String,
    #[serde(default)]
    pub(super) contact_email: String,
}

impl SalonForm {
    /// A salon as its edit form shows it.
    pub(super) fn of(salon: &Salon) -> SalonForm {
        SalonForm {
            slug: salon.slug.clone(),
            name_ja: salon.name_ja.clone(),
            name_en: salon.name_en.clone(),
            description_ja: salon.description_ja.clone(),
            description_en: salon.description_en.clone(),
            billing_anchor: salon.billing_anchor.as_str().to_owned(),
            tier_change: salon.tier_change.as_str().to_owned(),
            grace_days: salon.grace_days.to_string(),
            contact_email: salon.contact_email.clone(),
            ..SalonForm::default()
        }
    }
}

/// Edits a salon's words, its grace days and its contact address (its
/// billing rules stay as its patrons joined under them).
pub async fn edit_salon(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<SalonForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, salon) = salon_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let Ok(grace_days) = form.grace_days.trim().parse::<i64>() else {
                return setup.refuse(tr.t("admin-error-grace-days"));
            };
            let changes = kanpa_patrons::store::SalonChanges {
                name_ja: Some(form.name_ja.clone()),
                name_en: Some(form.name_en.clone()),
                description_ja: Some(form.description_ja.clone()),
                description_en: Some(form.description_en.clone()),
                grace_days: Some(grace_days),
                contact_email: Some(form.contact_email.trim().to_owned()),
                ..kanpa_patrons::store::SalonChanges::default()
            };
            setup.salon(kanpa_patrons::store::update_salon(&state.db, salon.id, &changes).await)
        }
        .await,
    )
}

#[derive(Template)]
#[template(path = "admin_new_salon.html")]
struct NewSalonPage {
    tr: Tr,
    nav: Nav,
    form: SalonForm,
    error: Option<String>,
}

pub async fn new_salon(State(state): State<AppState>, lang: Lang, staff: Staff, Path(org): Path<String>) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Organise).await?;
            let defaults = kanpa_patrons::store::SalonInput::default();
            let form = SalonForm {
                billing_anchor: defaults.billing_anchor,
                tier_change: defaults.tier_change,
                grace_days: defaults.grace_days.to_string(),
                ..SalonForm::default()
            };
            let page_ = NewSalonPage { tr, nav: Nav::new(&staff, &access, None), form, error: None };
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

/// Creates a salon (a draft, until its tiers are set and it is opened), by
/// the same rules as the API.
pub async fn create_salon(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path(org): Path<String>,
    Form(form): Form<SalonForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Organise).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let (status, message) = match form.grace_days.trim().parse::<i64>() {
                Err(_) => (StatusCode::UNPROCESSABLE_ENTITY, tr.t("admin-error-grace-days")),
                Ok(grace_days) => {
                    let input = kanpa_patrons::store::SalonInput {
                        slug: form.slug.trim().to_owned(),
                        name_ja: form.name_ja.clone(),
                        name_en: form.name_en.clone(),
                        description_ja: form.description_ja.clone(),
                        description_en: form.description_en.clone(),
                        currency: "JPY".into(),
                        billing_anchor: form.billing_anchor.clone(),
                        tier_change: form.tier_change.clone(),
                        grace_days,
                        contact_email: form.contact_email.trim().to_owned(),
                    };
                    match kanpa_patrons::store::create_salon(&state.db, access.org_id(), &input).await {
                        Ok(salon) => {
                            return Ok(see_other(&format!("/admin/o/{}/salons/{}", access.org.slug, salon.slug)));
                        }
                        Err(e) => salon_refusal(tr, e)?,
                    }
                }
            };
            let page_ = NewSalonPage { tr, nav: Nav::new(&staff, &access, None), form, error: Some(message) };
            Ok(page(status, page_.render_html()))
        }
        .await,
    )
}

/// The organisation's campaign by slug; another's is not found.
async fn own_campaign(state: &AppState, access: &Access, slug: &str) -> Result<Campaign, Refused> {
    match store::campaign_by_slug(&state.db, slug).await {
        Ok(c) if c.org_id == access.org_id().0 => Ok(c),
        Ok(_) | Err(CampaignError::NotFound(_)) => Err(AppError::NotFound.into()),
        Err(e) => Err(Refused::Error(crate::forms::read_failure(e))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct TeamForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name_ja: String,
    #[serde(default)]
    name_en: String,
    #[serde(default)]
    goal: String,
}

/// A message page for a refused setup form, with a link back.
#[derive(Template)]
#[template(path = "admin_refused.html")]
struct RefusedPage {
    tr: Tr,
    nav: Nav,
    message: String,
    back: String,
}

pub(super) fn refused(
    tr: Tr,
    staff: &Staff,
    access: &Access,
    status: StatusCode,
    message: String,
    back: String,
) -> axum::response::Response {
    refused_page(tr, staff, access, status, message, back)
}

fn refused_page(
    tr: Tr,
    staff: &Staff,
    access: &Access,
    status: StatusCode,
    message: String,
    back: String,
) -> axum::response::Response {
    page(status, RefusedPage { tr, nav: Nav::new(staff, access, None), message, back }.render_html())
}

/// A setup form past its checks (an organiser of the organisation, this
/// session's form, a thing of the organisation's): how to answer it.
struct Setup<'a> {
    tr: Tr,
    staff: &'a Staff,
    access: Access,
    /// The page the form is on, where success leads back.
    back: String,
}

impl Setup<'_> {
    /// Input refused before the domain saw it.
    fn refuse(&self, message: String) -> Result<Response, Refused> {
        self.refused(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    fn refused(&self, status: StatusCode, message: String) -> Result<Response, Refused> {
        Ok(refused_page(self.tr, self.staff, &self.access, status, message, self.back.clone()))
    }

    /// A campaign change done: back to the page, or its refusal in the
    /// reader's words (a server error for what is ours to fix).
    fn campaign<T>(&self, outcome: Result<T, CampaignError>) -> Result<Response, Refused> {
        match outcome {
            Ok(_) => Ok(see_other(&self.back)),
            Err(e) => {
                let (status, message) = campaign_refusal(self.tr, e)?;
                self.refused(status, message)
            }
        }
    }

    /// A salon change done, as [`Setup::campaign`].
    fn salon<T>(&self, outcome: Result<T, PatronError>) -> Result<Response, Refused> {
        match outcome {
            Ok(_) => Ok(see_other(&self.back)),
            Err(e) => {
                let (status, message) = salon_refusal(self.tr, e)?;
                self.refused(status, message)
            }
        }
    }
}

/// The checks of a form about one of the organisation's campaigns.
async fn campaign_form<'a>(
    state: &AppState,
    tr: Tr,
    headers: &HeaderMap,
    staff: &'a Staff,
    (org, slug): (&str, &str),
    csrf: &str,
) -> Result<(Setup<'a>, Campaign), Refused> {
    let access = access(state, staff, org, Need::Organise).await?;
    check_form(state, headers, staff, csrf)?;
    let campaign = own_campaign(state, &access, slug).await?;
    let back = format!("/admin/o/{}/campaigns/{}", access.org.slug, campaign.slug);
    Ok((Setup { tr, staff, access, back }, campaign))
}

/// The checks of a form about one of the organisation's salons.
async fn salon_form<'a>(
    state: &AppState,
    tr: Tr,
    headers: &HeaderMap,
    staff: &'a Staff,
    (org, slug): (&str, &str),
    csrf: &str,
) -> Result<(Setup<'a>, Salon), Refused> {
    let access = access(state, staff, org, Need::Organise).await?;
    check_form(state, headers, staff, csrf)?;
    let salon = super::salons::own_salon(state, &access, slug).await?;
    let back = format!("/admin/o/{}/salons/{}", access.org.slug, salon.slug);
    Ok((Setup { tr, staff, access, back }, salon))
}

/// A limit typed in a form (a reward's quantity, a tier's seats): empty
/// for none, else a whole number of zero or more.
fn limit(text: &str) -> Result<Option<i64>, ()> {
    match text.trim() {
        "" => Ok(None),
        text => match text.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(()),
        },
    }
}

pub async fn add_team(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<TeamForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, campaign) = campaign_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let Ok(goal) = Money::parse(&form.goal, campaign.currency) else {
                return setup.refuse(tr.t("campaign-error-amount"));
            };
            let input = TeamInput {
                slug: form.slug.trim().to_owned(),
                name_ja: form.name_ja.clone(),
                name_en: form.name_en.clone(),
                goal: goal.amount(),
                ..TeamInput::default()
            };
            setup.campaign(store::add_team(&state.db, campaign.id, &input).await)
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn publish(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, campaign) = campaign_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            setup.campaign(store::publish(&state.db, campaign.id).await)
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct SalonStatusForm {
    #[serde(default)]
    csrf: String,
    /// "open" or "closed".
    #[serde(default)]
    to: String,
}

/// Opens or closes a salon.
pub async fn salon_status(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<SalonStatusForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, salon) = salon_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let to = match form.to.as_str() {
                "open" => SalonStatus::Open,
                "closed" => SalonStatus::Closed,
                _ => return setup.refuse(tr.t("campaign-error-choice")),
            };
            setup.salon(kanpa_patrons::store::set_salon_status(&state.db, salon.id, to).await)
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct RewardForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title_ja: String,
    #[serde(default)]
    title_en: String,
    #[serde(default)]
    description_ja: String,
    #[serde(default)]
    min_amount: String,
    /// Empty for no limit.
    #[serde(default)]
    quantity: String,
}

/// Adds a reward ("return") to a campaign.
pub async fn add_reward(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<RewardForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, campaign) = campaign_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let Ok(min_amount) = Money::parse(&form.min_amount, campaign.currency) else {
                return setup.refuse(tr.t("campaign-error-amount"));
            };
            let Ok(quantity) = limit(&form.quantity) else {
                return setup.refuse(tr.t("admin-error-quantity"));
            };
            let input = RewardInput {
                title_ja: form.title_ja.clone(),
                title_en: form.title_en.clone(),
                description_ja: form.description_ja.clone(),
                min_amount: min_amount.amount(),
                quantity,
                ..RewardInput::default()
            };
            setup.campaign(store::add_reward(&state.db, campaign.id, &input).await)
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct TierForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name_ja: String,
    #[serde(default)]
    name_en: String,
    #[serde(default)]
    benefits_ja: String,
    #[serde(default)]
    monthly_price: String,
    /// Empty for no limit.
    #[serde(default)]
    seat_limit: String,
}

/// Adds a tier to a salon.
pub async fn add_tier(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<TierForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, salon) = salon_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let Ok(price) = Money::parse(&form.monthly_price, salon.currency) else {
                return setup.refuse(tr.t("campaign-error-amount"));
            };
            let Ok(seat_limit) = limit(&form.seat_limit) else {
                return setup.refuse(tr.t("admin-error-quantity"));
            };
            let input = kanpa_patrons::store::TierInput {
                slug: form.slug.trim().to_owned(),
                name_ja: form.name_ja.clone(),
                name_en: form.name_en.clone(),
                benefits_ja: form.benefits_ja.clone(),
                monthly_price: price.amount(),
                seat_limit,
                ..kanpa_patrons::store::TierInput::default()
            };
            setup.salon(kanpa_patrons::store::add_tier(&state.db, salon.id, &input).await)
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title_ja: String,
    #[serde(default)]
    title_en: String,
    #[serde(default)]
    story_ja: String,
    /// Empty leaves the goal as it is.
    #[serde(default)]
    goal: String,
    /// Empty leaves the deadline as it is.
    #[serde(default)]
    deadline: String,
}

/// Edits a campaign's words, and (by the campaign's own rules for its
/// state) its goal and deadline.
pub async fn edit_campaign(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<EditForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, campaign) = campaign_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let goal = match form.goal.trim() {
                "" => None,
                text => match Money::parse(text, campaign.currency) {
                    Ok(m) => Some(m.amount()),
                    Err(_) => return setup.refuse(tr.t("campaign-error-amount")),
                },
            };
            let changes = CampaignChanges {
                title_ja: Some(form.title_ja.clone()),
                title_en: Some(form.title_en.clone()),
                story_ja: Some(form.story_ja.clone()),
                goal: goal.filter(|g| *g != campaign.goal),
                deadline: Some(form.deadline.trim()).filter(|d| !d.is_empty()).map(in_japan),
                ..CampaignChanges::default()
            };
            setup.campaign(store::update_campaign(&state.db, campaign.id, &changes).await)
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct TeamEditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name_ja: String,
    #[serde(default)]
    name_en: String,
    #[serde(default)]
    goal: String,
}

/// Renames a team or changes its goal (which may only rise once the
/// campaign is live: `kanpa_campaigns::changes`).
pub async fn edit_team(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug, team)): Path<(String, String, String)>,
    Form(form): Form<TeamEditForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, campaign) = campaign_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let teams = store::teams(&state.db, campaign.id)
                .await
                .map_err(|e| Refused::Error(crate::forms::read_failure(e)))?;
            let Some(current) = teams.into_iter().find(|t| t.slug == team) else {
                return Err(AppError::NotFound.into());
            };
            let Ok(goal) = Money::parse(&form.goal, campaign.currency) else {
                return setup.refuse(field_words(tr, "goal", tr.t("campaign-error-amount")));
            };
            let input = TeamInput {
                slug: current.slug.clone(),
                name_ja: form.name_ja.clone(),
                name_en: form.name_en.clone(),
                goal: goal.amount(),
                position: Some(current.position),
                pool_weight: current.pool_weight,
            };
            setup.campaign(store::update_team(&state.db, campaign.id, current.id, &input).await)
        }
        .await,
    )
}

/// "Goal: must be at least …": a problem with the field named.
fn field_words(tr: Tr, field: &str, problem: String) -> String {
    match crate::forms::field_name(tr, field) {
        Some(name) => tr.t_with("field-problem", &[("field", &name), ("problem", &problem)]),
        None => problem,
    }
}

fn rfc3339(t: kanpa_ledger::Timestamp) -> String {
    t.as_offset().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The organisation's campaign's reward by id; another's is not found.
async fn own_reward(state: &AppState, campaign: &Campaign, reward: &str) -> Result<kanpa_campaigns::Reward, Refused> {
    let Ok(id) = reward.parse::<i64>() else {
        return Err(AppError::NotFound.into());
    };
    match store::reward(&state.db, campaign.id, id).await {
        Ok(r) => Ok(r),
        Err(CampaignError::NotFound(_)) => Err(AppError::NotFound.into()),
        Err(e) => Err(Refused::Error(crate::forms::read_failure(e))),
    }
}

/// Edits a reward's words, its quantity (never below what is claimed) and,
/// while the campaign is a draft, its minimum pledge.
pub async fn edit_reward(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug, reward)): Path<(String, String, String)>,
    Form(form): Form<RewardForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, campaign) = campaign_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let current = own_reward(&state, &campaign, &reward).await?;
            let Ok(min_amount) = Money::parse(&form.min_amount, campaign.currency) else {
                return setup.refuse(field_words(tr, "min_amount", tr.t("campaign-error-amount")));
            };
            let Ok(quantity) = limit(&form.quantity) else {
                return setup.refuse(tr.t("admin-error-quantity"));
            };
            let team = match current.team_id {
                Some(id) => Some(
                    store::team(&state.db, campaign.id, id)
                        .await
                        .map_err(|e| Refused::Error(crate::forms::read_failure(e)))?
                        .slug,
                ),
                None => None,
            };
            // What the form does not show stays as it is.
            let input = RewardInput {
                title_ja: form.title_ja.clone(),
                title_en: form.title_en.clone(),
                description_ja: form.description_ja.clone(),
                description_en: current.description_en.clone(),
                min_amount: min_amount.amount(),
                quantity,
                team,
                available_from: current.available_from.map(rfc3339),
                available_until: current.available_until.map(rfc3339),
                position: Some(current.position),
            };
            setup.campaign(store::update_reward(&state.db, campaign.id, current.id, &input).await)
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct RetireForm {
    #[serde(default)]
    csrf: String,
    /// "retired" or "active".
    #[serde(default)]
    to: String,
}

/// Retires a reward (no new pledges; those holding it keep it), or offers
/// it again.
pub async fn retire_reward(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug, reward)): Path<(String, String, String)>,
    Form(form): Form<RetireForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, campaign) = campaign_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let current = own_reward(&state, &campaign, &reward).await?;
            let retired = match form.to.as_str() {
                "retired" => true,
                "active" => false,
                _ => return setup.refuse(tr.t("campaign-error-choice")),
            };
            setup.campaign(store::set_reward_retired(&state.db, campaign.id, current.id, retired).await)
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct EndForm {
    #[serde(default)]
    csrf: String,
    /// The campaign's address typed again: ending a campaign cannot be
    /// undone.
    #[serde(default)]
    confirm: String,
}

/// Closes a live campaign now, or cancels it (`end` is "close" or
/// "cancel"): see `kanpa_campaigns::changes` for what each does.
async fn end_campaign(
    state: AppState,
    tr: Tr,
    headers: HeaderMap,
    staff: Staff,
    (org, slug): (String, String),
    form: EndForm,
    cancel: bool,
) -> Result<axum::response::Response, Refused> {
    let (setup, campaign) = campaign_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
    if form.confirm.trim() != campaign.slug {
        return setup.refuse(tr.t_with("admin-error-confirm-slug", &[("slug", &campaign.slug)]));
    }
    let result = if cancel {
        kanpa_campaigns::settle::cancel(&state.db, &state.site, campaign.id).await.map(|_| ())
    } else {
        kanpa_campaigns::settle::close_early(&state.db, campaign.id).await.map(|_| ())
    };
    if result.is_ok() {
        state.workers.notify();
    }
    setup.campaign(result)
}

pub async fn close_campaign(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<EndForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(tr, end_campaign(state, tr, headers, staff, (org, slug), form, false).await)
}

pub async fn cancel_campaign(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<EndForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(tr, end_campaign(state, tr, headers, staff, (org, slug), form, true).await)
}

#[derive(Debug, Default, Deserialize)]
pub struct TierEditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name_ja: String,
    #[serde(default)]
    name_en: String,
    #[serde(default)]
    benefits_ja: String,
    #[serde(default)]
    monthly_price: String,
    /// Empty for no limit.
    #[serde(default)]
    seat_limit: String,
    /// "active" or "retired"; empty keeps it.
    #[serde(default)]
    status: String,
}

/// Edits a tier (a new price is for new patrons; existing ones keep
/// theirs), or retires it (no new members; existing ones keep it) or
/// offers it again.
pub async fn edit_tier(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug, tier)): Path<(String, String, String)>,
    Form(form): Form<TierEditForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let (setup, salon) = salon_form(&state, tr, &headers, &staff, (&org, &slug), &form.csrf).await?;
            let current = match kanpa_patrons::store::tier_by_slug(&state.db, salon.id, &tier).await {
                Ok(t) => t,
                Err(PatronError::NotFound(_)) => return Err(AppError::NotFound.into()),
                Err(e) => return Err(Refused::Error(AppError::Internal(anyhow::anyhow!(e)))),
            };
            let changes = if form.status.is_empty() {
                let Ok(price) = Money::parse(&form.monthly_price, salon.currency) else {
                    return setup.refuse(tr.t("campaign-error-amount"));
                };
                let Ok(seat_limit) = limit(&form.seat_limit) else {
                    return setup.refuse(tr.t("admin-error-quantity"));
                };
                kanpa_patrons::store::TierChanges {
                    name_ja: Some(form.name_ja.clone()),
                    name_en: Some(form.name_en.clone()),
                    benefits_ja: Some(form.benefits_ja.clone()),
                    monthly_price: Some(price.amount()),
                    seat_limit: Some(seat_limit),
                    ..kanpa_patrons::store::TierChanges::default()
                }
            } else {
                // Retiring or offering again changes nothing else.
                kanpa_patrons::store::TierChanges {
                    status: Some(form.status.clone()),
                    ..kanpa_patrons::store::TierChanges::default()
                }
            };
            setup.salon(kanpa_patrons::store::update_tier(&state.db, salon.id, current.id, &changes).await)
        }
        .await,
    )
}
