//! Campaigns, teams and rewards: creating, editing and reading them.
//!
//! Each campaign opens a fund account for its unallocated pool, and each
//! team one for itself, in the same transaction that creates the row.

use kanpa_ledger::store as ledger;
use kanpa_ledger::{AccountId, AccountKind, Currency, Db, Locale, NewAccount, OrgId, Timestamp, Tx, on_db, on_tx};
use serde::Deserialize;
use sqlx::AssertSqlSafe;

use crate::error::CampaignError;
use crate::model::{
    self, Campaign, CampaignStatus, FundingModel, Invalid, Pledge, PledgeStatus, PoolRule, Problem, Reward, Team,
    invalid,
};

/// Largest goal or sub-goal accepted: a trillion minor units.
const MAX_GOAL: i64 = 1_000_000_000_000;

// ---------------------------------------------------------------- rows

pub(crate) const CAMPAIGN_COLUMNS: &str = "id, org_id, slug, title_ja, title_en, story_ja, story_en, currency, goal,
    starts_at, deadline, utc_offset_min, time_zone, funding_model, status, pool_rule, pool_account_id, contact_email,
    pledged, collected, backers, pool_pledged, pool_collected";

#[derive(sqlx::FromRow)]
pub(crate) struct CampaignRow {
    id: i64,
    org_id: i64,
    slug: String,
    title_ja: String,
    title_en: String,
    story_ja: String,
    story_en: String,
    currency: String,
    goal: i64,
    starts_at: Timestamp,
    deadline: Timestamp,
    utc_offset_min: i32,
    time_zone: String,
    funding_model: String,
    status: String,
    pool_rule: String,
    pool_account_id: i64,
    contact_email: String,
    pledged: i64,
    collected: i64,
    backers: i64,
    pool_pledged: i64,
    pool_collected: i64,
}

fn corrupt(what: &str, value: &str) -> CampaignError {
    CampaignError::Ledger(kanpa_ledger::LedgerError::Corrupt(format!("{what} {value:?}")))
}

impl TryFrom<CampaignRow> for Campaign {
    type Error = CampaignError;
    fn try_from(r: CampaignRow) -> Result<Campaign, CampaignError> {
        Ok(Campaign {
            currency: Currency::from_code(&r.currency).map_err(|_| corrupt("currency", &r.currency))?,
            funding_model: FundingModel::parse(&r.funding_model)
                .ok_or_else(|| corrupt("funding model", &r.funding_model))?,
            status: CampaignStatus::parse(&r.status).ok_or_else(|| corrupt("status", &r.status))?,
            pool_rule: PoolRule::parse(&r.pool_rule).ok_or_else(|| corrupt("pool rule", &r.pool_rule))?,
            pool_account: AccountId(r.pool_account_id),
            id: r.id,
            org_id: r.org_id,
            slug: r.slug,
            title_ja: r.title_ja,
            title_en: r.title_en,
            story_ja: r.story_ja,
            story_en: r.story_en,
            goal: r.goal,
            starts_at: r.starts_at,
            deadline: r.deadline,
            utc_offset_min: r.utc_offset_min,
            time_zone: r.time_zone,
            contact_email: r.contact_email,
            pledged: r.pledged,
            collected: r.collected,
            backers: r.backers,
            pool_pledged: r.pool_pledged,
            pool_collected: r.pool_collected,
        })
    }
}

pub(crate) const TEAM_COLUMNS: &str =
    "id, campaign_id, slug, name_ja, name_en, goal, position, pool_weight, account_id, pledged, collected, backers";

#[derive(sqlx::FromRow)]
pub(crate) struct TeamRow {
    id: i64,
    campaign_id: i64,
    slug: String,
    name_ja: String,
    name_en: String,
    goal: i64,
    position: i32,
    pool_weight: i64,
    account_id: i64,
    pledged: i64,
    collected: i64,
    backers: i64,
}

impl From<TeamRow> for Team {
    fn from(r: TeamRow) -> Team {
        Team {
            id: r.id,
            campaign_id: r.campaign_id,
            slug: r.slug,
            name_ja: r.name_ja,
            name_en: r.name_en,
            goal: r.goal,
            position: r.position,
            pool_weight: r.pool_weight,
            account: AccountId(r.account_id),
            pledged: r.pledged,
            collected: r.collected,
            backers: r.backers,
        }
    }
}

pub(crate) const REWARD_COLUMNS: &str = "id, campaign_id, team_id, title_ja, title_en, description_ja, description_en,
    min_amount, quantity, claimed, available_from, available_until, position, retired_at";

#[derive(sqlx::FromRow)]
pub(crate) struct RewardRow {
    id: i64,
    campaign_id: i64,
    team_id: Option<i64>,
    title_ja: String,
    title_en: String,
    description_ja: String,
    description_en: String,
    min_amount: i64,
    quantity: Option<i64>,
    claimed: i64,
    available_from: Option<Timestamp>,
    available_until: Option<Timestamp>,
    position: i32,
    retired_at: Option<Timestamp>,
}

impl From<RewardRow> for Reward {
    fn from(r: RewardRow) -> Reward {
        Reward {
            id: r.id,
            campaign_id: r.campaign_id,
            team_id: r.team_id,
            title_ja: r.title_ja,
            title_en: r.title_en,
            description_ja: r.description_ja,
            description_en: r.description_en,
            min_amount: r.min_amount,
            quantity: r.quantity,
            claimed: r.claimed,
            available_from: r.available_from,
            available_until: r.available_until,
            position: r.position,
            retired_at: r.retired_at,
        }
    }
}

pub(crate) const PLEDGE_COLUMNS: &str = "id, public_id, campaign_id, team_id, reward_id, amount, currency, email,
    display_name, anonymous, message, locale, status, checkout_session_id, customer_id, setup_intent_id,
    payment_method_id, payment_intent_id, charge_id, amount_refunded, failure_code, failed_at, created_at,
    committed_at, collected_at";

#[derive(sqlx::FromRow)]
pub(crate) struct PledgeRow {
    id: i64,
    public_id: String,
    campaign_id: i64,
    team_id: Option<i64>,
    reward_id: Option<i64>,
    amount: i64,
    currency: String,
    email: String,
    display_name: String,
    anonymous: bool,
    message: String,
    locale: String,
    status: String,
    checkout_session_id: Option<String>,
    customer_id: Option<String>,
    setup_intent_id: Option<String>,
    payment_method_id: Option<String>,
    payment_intent_id: Option<String>,
    charge_id: Option<String>,
    amount_refunded: i64,
    failure_code: Option<String>,
    failed_at: Option<Timestamp>,
    created_at: Timestamp,
    committed_at: Option<Timestamp>,
    collected_at: Option<Timestamp>,
}

impl TryFrom<PledgeRow> for Pledge {
    type Error = CampaignError;
    fn try_from(r: PledgeRow) -> Result<Pledge, CampaignError> {
        Ok(Pledge {
            currency: Currency::from_code(&r.currency).map_err(|_| corrupt("currency", &r.currency))?,
            locale: Locale::parse(&r.locale).unwrap_or_default(),
            status: PledgeStatus::parse(&r.status).ok_or_else(|| corrupt("pledge status", &r.status))?,
            id: r.id,
            public_id: r.public_id,
            campaign_id: r.campaign_id,
            team_id: r.team_id,
            reward_id: r.reward_id,
            amount: r.amount,
            email: r.email,
            display_name: r.display_name,
            anonymous: r.anonymous,
            message: r.message,
            checkout_session_id: r.checkout_session_id,
            customer_id: r.customer_id,
            setup_intent_id: r.setup_intent_id,
            payment_method_id: r.payment_method_id,
            payment_intent_id: r.payment_intent_id,
            charge_id: r.charge_id,
            amount_refunded: r.amount_refunded,
            failure_code: r.failure_code,
            failed_at: r.failed_at,
            created_at: r.created_at,
            committed_at: r.committed_at,
            collected_at: r.collected_at,
        })
    }
}

// ---------------------------------------------------------------- inputs

/// A campaign as the API and CLI describe it. Amounts are integers in the
/// currency's minor unit; times are RFC 3339 with an offset.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignInput {
    pub slug: String,
    pub title_ja: String,
    #[serde(default)]
    pub title_en: String,
    #[serde(default)]
    pub story_ja: String,
    #[serde(default)]
    pub story_en: String,
    pub currency: String,
    pub goal: i64,
    pub starts_at: String,
    pub deadline: String,
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    pub funding_model: String,
    #[serde(default = "default_pool_rule")]
    pub pool_rule: String,
    pub contact_email: String,
}

fn default_time_zone() -> String {
    "Asia/Tokyo".into()
}

fn default_pool_rule() -> String {
    "equal".into()
}

/// Changes to a campaign; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignChanges {
    pub title_ja: Option<String>,
    pub title_en: Option<String>,
    pub story_ja: Option<String>,
    pub story_en: Option<String>,
    pub goal: Option<i64>,
    pub starts_at: Option<String>,
    pub deadline: Option<String>,
    pub time_zone: Option<String>,
    pub funding_model: Option<String>,
    pub pool_rule: Option<String>,
    pub contact_email: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamInput {
    pub slug: String,
    pub name_ja: String,
    #[serde(default)]
    pub name_en: String,
    pub goal: i64,
    pub position: Option<i32>,
    /// The team's share of the pool under the `manual` rule.
    #[serde(default)]
    pub pool_weight: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardInput {
    pub title_ja: String,
    #[serde(default)]
    pub title_en: String,
    #[serde(default)]
    pub description_ja: String,
    #[serde(default)]
    pub description_en: String,
    pub min_amount: i64,
    pub quantity: Option<i64>,
    /// The slug of the team the reward belongs to, if any.
    pub team: Option<String>,
    pub available_from: Option<String>,
    pub available_until: Option<String>,
    pub position: Option<i32>,
}

fn choice<T>(field: &'static str, value: &str, parse: fn(&str) -> Option<T>) -> Result<T, Invalid> {
    parse(value.trim()).ok_or_else(|| invalid(field, Problem::Choice))
}

fn goal(field: &'static str, value: i64, currency: Currency) -> Result<i64, Invalid> {
    if value < currency.stripe_minimum().amount() {
        return Err(invalid(field, Problem::BelowMinimum { min: currency.stripe_minimum() }));
    }
    if value > MAX_GOAL {
        return Err(invalid(field, Problem::AboveMaximum { max: kanpa_ledger::Money::new(MAX_GOAL, currency) }));
    }
    Ok(value)
}

fn optional_time(field: &'static str, value: &Option<String>) -> Result<Option<Timestamp>, Invalid> {
    value.as_deref().filter(|v| !v.trim().is_empty()).map(|v| model::date_time(field, v).map(|(t, _)| t)).transpose()
}

// ---------------------------------------------------------------- campaigns

pub async fn create_campaign(db: &Db, org: OrgId, input: &CampaignInput) -> Result<Campaign, CampaignError> {
    let slug = model::slug("slug", &input.slug)?;
    let currency = Currency::from_code(input.currency.trim()).map_err(|_| invalid("currency", Problem::Currency))?;
    let title_ja = model::text("title_ja", &input.title_ja, true, 120)?;
    let title_en = model::text("title_en", &input.title_en, false, 120)?;
    let story_ja = model::text("story_ja", &input.story_ja, false, 20_000)?;
    let story_en = model::text("story_en", &input.story_en, false, 20_000)?;
    let goal = goal("goal", input.goal, currency)?;
    let (starts_at, _) = model::date_time("starts_at", &input.starts_at)?;
    let (deadline, offset) = model::date_time("deadline", &input.deadline)?;
    if deadline <= starts_at {
        return Err(invalid("deadline", Problem::DeadlineBeforeStart).into());
    }
    let time_zone = model::text("time_zone", &input.time_zone, true, 64)?;
    let funding_model = choice("funding_model", &input.funding_model, FundingModel::parse)?;
    let pool_rule = choice("pool_rule", &input.pool_rule, PoolRule::parse)?;
    let contact_email = model::email("contact_email", &input.contact_email)?;

    let mut tx = db.begin().await?;
    let taken: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar("SELECT id FROM campaigns WHERE slug = $1").bind(&slug).fetch_optional(c).await?);
    if taken.is_some() {
        return Err(CampaignError::SlugTaken);
    }
    let pool = open_fund(&mut tx, org, &format!("fund:{slug}:pool"), &format!("{title_ja} — pool"), currency).await?;
    let now = Timestamp::now();
    let sql = "INSERT INTO campaigns (org_id, slug, title_ja, title_en, story_ja, story_en, currency, goal, starts_at,
                   deadline, utc_offset_min, time_zone, funding_model, status, pool_rule, pool_account_id, contact_email,
                   created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'draft', $14, $15, $16, $17, $17)
               RETURNING id";
    let id: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(sql)
        .bind(org.0).bind(&slug).bind(&title_ja).bind(&title_en).bind(&story_ja).bind(&story_en)
        .bind(currency.code()).bind(goal).bind(starts_at).bind(deadline).bind(offset).bind(&time_zone)
        .bind(funding_model.as_str()).bind(pool_rule.as_str()).bind(pool.0).bind(&contact_email).bind(now)
        .fetch_one(c).await?);
    let campaign = campaign_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(campaign)
}

async fn open_fund(
    tx: &mut Tx,
    org: OrgId,
    code: &str,
    name: &str,
    currency: Currency,
) -> Result<AccountId, CampaignError> {
    let new = NewAccount { org, code: code.to_owned(), name: name.to_owned(), kind: AccountKind::Fund, currency };
    Ok(ledger::create_account(tx, &new).await?.id)
}

/// Applies changes by the rules of [`crate::changes`]: the dates and the
/// funding model only while the campaign is a draft, the goal freely in a
/// draft and only upwards once live; texts, the pool rule and the contact
/// until it settles. The currency never changes.
pub async fn update_campaign(db: &Db, id: i64, changes: &CampaignChanges) -> Result<Campaign, CampaignError> {
    let mut tx = db.begin().await?;
    let mut c = campaign_in(&mut tx, id).await?;
    // The goal follows `changes::goal_change` (it may rise once live); the
    // other money-shaping fields are fixed once live.
    let shaping = changes.starts_at.is_some() || changes.deadline.is_some() || changes.funding_model.is_some();
    crate::changes::words_change(c.status)?;
    if shaping && c.status != CampaignStatus::Draft {
        return Err(CampaignError::WrongState { status: c.status });
    }
    if let Some(v) = changes.goal {
        crate::changes::goal_change("goal", c.status, c.money(c.goal), c.money(v))?;
    }
    if let Some(v) = &changes.title_ja {
        c.title_ja = model::text("title_ja", v, true, 120)?;
    }
    if let Some(v) = &changes.title_en {
        c.title_en = model::text("title_en", v, false, 120)?;
    }
    if let Some(v) = &changes.story_ja {
        c.story_ja = model::text("story_ja", v, false, 20_000)?;
    }
    if let Some(v) = &changes.story_en {
        c.story_en = model::text("story_en", v, false, 20_000)?;
    }
    if let Some(v) = changes.goal {
        c.goal = goal("goal", v, c.currency)?;
    }
    if let Some(v) = &changes.starts_at {
        c.starts_at = model::date_time("starts_at", v)?.0;
    }
    if let Some(v) = &changes.deadline {
        (c.deadline, c.utc_offset_min) = model::date_time("deadline", v)?;
    }
    if c.deadline <= c.starts_at {
        return Err(invalid("deadline", Problem::DeadlineBeforeStart).into());
    }
    if let Some(v) = &changes.time_zone {
        c.time_zone = model::text("time_zone", v, true, 64)?;
    }
    if let Some(v) = &changes.funding_model {
        c.funding_model = choice("funding_model", v, FundingModel::parse)?;
    }
    if let Some(v) = &changes.pool_rule {
        c.pool_rule = choice("pool_rule", v, PoolRule::parse)?;
    }
    if let Some(v) = &changes.contact_email {
        c.contact_email = model::email("contact_email", v)?;
    }
    let sql = "UPDATE campaigns SET title_ja = $1, title_en = $2, story_ja = $3, story_en = $4, goal = $5,
                   starts_at = $6, deadline = $7, utc_offset_min = $8, time_zone = $9, funding_model = $10,
                   pool_rule = $11, contact_email = $12, updated_at = $13
               WHERE id = $14";
    on_tx!(&mut tx, conn => sqlx::query(sql)
        .bind(&c.title_ja).bind(&c.title_en).bind(&c.story_ja).bind(&c.story_en).bind(c.goal)
        .bind(c.starts_at).bind(c.deadline).bind(c.utc_offset_min).bind(&c.time_zone)
        .bind(c.funding_model.as_str()).bind(c.pool_rule.as_str()).bind(&c.contact_email).bind(Timestamp::now())
        .bind(id).execute(conn).await?.rows_affected());
    tx.commit().await?;
    Ok(c)
}

/// Opens a draft for pledges and schedules its settlement at the deadline.
pub async fn publish(db: &Db, id: i64) -> Result<Campaign, CampaignError> {
    let mut tx = db.begin().await?;
    let campaign = campaign_in(&mut tx, id).await?;
    if campaign.status != CampaignStatus::Draft {
        return Err(CampaignError::WrongState { status: campaign.status });
    }
    kanpa_payments::seller::require_complete(&mut tx, OrgId(campaign.org_id)).await??;
    set_status(&mut tx, id, CampaignStatus::Draft, CampaignStatus::Live).await?;
    crate::settle::schedule(&mut tx, &campaign).await?;
    tx.commit().await?;
    campaign_by_id(db, id).await
}

/// Moves a campaign from one status to another, refusing if another
/// change got there first.
pub(crate) async fn set_status(
    tx: &mut Tx,
    id: i64,
    from: CampaignStatus,
    to: CampaignStatus,
) -> Result<(), CampaignError> {
    let sql = "UPDATE campaigns SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4";
    let n = on_tx!(tx, c => sqlx::query(sql).bind(to.as_str()).bind(Timestamp::now()).bind(id).bind(from.as_str())
        .execute(c).await?.rows_affected());
    if n == 0 {
        let current = campaign_in(tx, id).await?.status;
        return Err(CampaignError::WrongState { status: current });
    }
    Ok(())
}

/// Holds the campaign's row lock for the rest of the transaction (SQLite's
/// single writer already serialises).
pub(crate) async fn lock_campaign(tx: &mut Tx, id: i64) -> Result<(), CampaignError> {
    let sql = "UPDATE campaigns SET pledged = pledged WHERE id = $1";
    on_tx!(tx, c => sqlx::query(sql).bind(id).execute(c).await?.rows_affected());
    Ok(())
}

pub(crate) async fn campaign_in(tx: &mut Tx, id: i64) -> Result<Campaign, CampaignError> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1");
    let row: Option<CampaignRow> =
        on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(id).fetch_optional(c).await?);
    row.ok_or(CampaignError::NotFound("campaign"))?.try_into()
}

pub async fn campaign_by_id(db: &Db, id: i64) -> Result<Campaign, CampaignError> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1");
    let row: Option<CampaignRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(id).fetch_optional(p).await?);
    row.ok_or(CampaignError::NotFound("campaign"))?.try_into()
}

pub async fn campaign_by_slug(db: &Db, slug: &str) -> Result<Campaign, CampaignError> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE slug = $1");
    let row: Option<CampaignRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(slug).fetch_optional(p).await?);
    row.ok_or(CampaignError::NotFound("campaign"))?.try_into()
}

/// Campaigns the public can see (live or finished), newest deadline first;
/// `live_only` keeps only those taking pledges.
pub async fn public_campaigns(db: &Db, live_only: bool) -> Result<Vec<Campaign>, CampaignError> {
    let filter = if live_only { "status = 'live'" } else { "status NOT IN ('draft', 'cancelled')" };
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE {filter} ORDER BY deadline, id");
    let rows: Vec<CampaignRow> = on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).fetch_all(p).await?);
    rows.into_iter().map(Campaign::try_from).collect()
}

pub async fn campaigns_of(db: &Db, org: OrgId) -> Result<Vec<Campaign>, CampaignError> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE org_id = $1 ORDER BY id");
    let rows: Vec<CampaignRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(org.0).fetch_all(p).await?);
    rows.into_iter().map(Campaign::try_from).collect()
}

// ---------------------------------------------------------------- teams

pub async fn add_team(db: &Db, campaign_id: i64, input: &TeamInput) -> Result<Team, CampaignError> {
    let mut tx = db.begin().await?;
    let campaign = campaign_in(&mut tx, campaign_id).await?;
    if !matches!(campaign.status, CampaignStatus::Draft | CampaignStatus::Live) {
        return Err(CampaignError::WrongState { status: campaign.status });
    }
    let slug = model::slug("slug", &input.slug)?;
    let name_ja = model::text("name_ja", &input.name_ja, true, 80)?;
    let name_en = model::text("name_en", &input.name_en, false, 80)?;
    let goal = goal("goal", input.goal, campaign.currency)?;
    if input.pool_weight < 0 {
        return Err(invalid("pool_weight", Problem::BelowMinimum { min: campaign.money(0) }).into());
    }
    let exists: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
        "SELECT id FROM campaign_teams WHERE campaign_id = $1 AND slug = $2")
        .bind(campaign_id).bind(&slug).fetch_optional(c).await?);
    if exists.is_some() {
        return Err(CampaignError::SlugTaken);
    }
    let position = match input.position {
        Some(p) => p,
        None => on_tx!(&mut tx, c => sqlx::query_scalar::<_, i32>(
            "SELECT CAST(COALESCE(MAX(position), 0) + 1 AS INTEGER) FROM campaign_teams WHERE campaign_id = $1")
            .bind(campaign_id).fetch_one(c).await?),
    };
    let account = open_fund(
        &mut tx,
        OrgId(campaign.org_id),
        &format!("fund:{}:{slug}", campaign.slug),
        &format!("{} — {name_ja}", campaign.title_ja),
        campaign.currency,
    )
    .await?;
    let sql =
        "INSERT INTO campaign_teams (campaign_id, slug, name_ja, name_en, goal, position, pool_weight, account_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
    let id: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(sql)
        .bind(campaign_id).bind(&slug).bind(&name_ja).bind(&name_en).bind(goal).bind(position)
        .bind(input.pool_weight).bind(account.0).fetch_one(c).await?);
    tx.commit().await?;
    team(db, campaign_id, id).await
}

/// Renames a team, changes its sub-goal, order or pool weight.
pub async fn update_team(db: &Db, campaign_id: i64, team_id: i64, input: &TeamInput) -> Result<Team, CampaignError> {
    let campaign = campaign_by_id(db, campaign_id).await?;
    let current = team(db, campaign_id, team_id).await?;
    crate::changes::words_change(campaign.status)?;
    let name_ja = model::text("name_ja", &input.name_ja, true, 80)?;
    let name_en = model::text("name_en", &input.name_en, false, 80)?;
    let goal = goal("goal", input.goal, campaign.currency)?;
    crate::changes::goal_change("goal", campaign.status, campaign.money(current.goal), campaign.money(goal))?;
    let sql = "UPDATE campaign_teams SET name_ja = $1, name_en = $2, goal = $3, position = $4, pool_weight = $5
               WHERE id = $6 AND campaign_id = $7";
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query(sql).bind(&name_ja).bind(&name_en).bind(goal)
        .bind(input.position.unwrap_or(current.position)).bind(input.pool_weight.max(0))
        .bind(team_id).bind(campaign_id).execute(c).await?.rows_affected());
    tx.commit().await?;
    team(db, campaign_id, team_id).await
}

pub async fn teams(db: &Db, campaign_id: i64) -> Result<Vec<Team>, CampaignError> {
    let sql = format!("SELECT {TEAM_COLUMNS} FROM campaign_teams WHERE campaign_id = $1 ORDER BY position, id");
    let rows: Vec<TeamRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(campaign_id).fetch_all(p).await?);
    Ok(rows.into_iter().map(Team::from).collect())
}

pub(crate) async fn teams_in(tx: &mut Tx, campaign_id: i64) -> Result<Vec<Team>, CampaignError> {
    let sql = format!("SELECT {TEAM_COLUMNS} FROM campaign_teams WHERE campaign_id = $1 ORDER BY position, id");
    let rows: Vec<TeamRow> =
        on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(campaign_id).fetch_all(c).await?);
    Ok(rows.into_iter().map(Team::from).collect())
}

/// A team of this campaign; a team of another campaign is not found.
pub async fn team(db: &Db, campaign_id: i64, team_id: i64) -> Result<Team, CampaignError> {
    let sql = format!("SELECT {TEAM_COLUMNS} FROM campaign_teams WHERE id = $1 AND campaign_id = $2");
    let row: Option<TeamRow> = on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(team_id).bind(campaign_id).fetch_optional(p).await?);
    row.map(Team::from).ok_or(CampaignError::NotFound("team"))
}

/// The fund account of a team of one of `org`'s campaigns; a team of
/// another organisation is not found.
pub async fn team_fund(db: &Db, org: OrgId, team_id: i64) -> Result<AccountId, CampaignError> {
    let sql = "SELECT t.account_id FROM campaign_teams t JOIN campaigns c ON c.id = t.campaign_id
               WHERE t.id = $1 AND c.org_id = $2";
    let row: Option<i64> = on_db!(db, p => sqlx::query_scalar(sql).bind(team_id).bind(org.0).fetch_optional(p).await?);
    row.map(AccountId).ok_or(CampaignError::NotFound("team"))
}

// ---------------------------------------------------------------- rewards

pub async fn add_reward(db: &Db, campaign_id: i64, input: &RewardInput) -> Result<Reward, CampaignError> {
    let campaign = campaign_by_id(db, campaign_id).await?;
    if !matches!(campaign.status, CampaignStatus::Draft | CampaignStatus::Live) {
        return Err(CampaignError::WrongState { status: campaign.status });
    }
    let fields = reward_fields(db, &campaign, input).await?;
    let position = match input.position {
        Some(p) => p,
        None => on_db!(db, p => sqlx::query_scalar::<_, i32>(
            "SELECT CAST(COALESCE(MAX(position), 0) + 1 AS INTEGER) FROM campaign_rewards WHERE campaign_id = $1")
            .bind(campaign_id).fetch_one(p).await?),
    };
    let sql = "INSERT INTO campaign_rewards (campaign_id, team_id, title_ja, title_en, description_ja, description_en,
                   min_amount, quantity, available_from, available_until, position)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id";
    let mut tx = db.begin().await?;
    let id: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(sql)
        .bind(campaign_id).bind(fields.team_id).bind(&fields.title_ja).bind(&fields.title_en)
        .bind(&fields.description_ja).bind(&fields.description_en).bind(fields.min_amount).bind(fields.quantity)
        .bind(fields.available_from).bind(fields.available_until).bind(position)
        .fetch_one(c).await?);
    tx.commit().await?;
    reward(db, campaign_id, id).await
}

/// Edits a reward. Its quantity cannot go below what is already claimed.
pub async fn update_reward(
    db: &Db,
    campaign_id: i64,
    reward_id: i64,
    input: &RewardInput,
) -> Result<Reward, CampaignError> {
    let campaign = campaign_by_id(db, campaign_id).await?;
    let current = reward(db, campaign_id, reward_id).await?;
    let fields = reward_fields(db, &campaign, input).await?;
    crate::changes::reward_minimum_change(campaign.status, current.min_amount, fields.min_amount)?;
    if let Some(q) = fields.quantity
        && q < current.claimed
    {
        return Err(invalid("quantity", Problem::Choice).into());
    }
    let sql = "UPDATE campaign_rewards SET team_id = $1, title_ja = $2, title_en = $3, description_ja = $4,
                   description_en = $5, min_amount = $6, quantity = $7, available_from = $8, available_until = $9,
                   position = $10
               WHERE id = $11 AND campaign_id = $12 AND (CAST($7 AS BIGINT) IS NULL OR claimed <= $7)";
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, c => sqlx::query(sql)
        .bind(fields.team_id).bind(&fields.title_ja).bind(&fields.title_en).bind(&fields.description_ja)
        .bind(&fields.description_en).bind(fields.min_amount).bind(fields.quantity).bind(fields.available_from)
        .bind(fields.available_until).bind(input.position.unwrap_or(current.position))
        .bind(reward_id).bind(campaign_id).execute(c).await?.rows_affected());
    tx.commit().await?;
    if n == 0 {
        return Err(invalid("quantity", Problem::Choice).into());
    }
    reward(db, campaign_id, reward_id).await
}

struct RewardFields {
    team_id: Option<i64>,
    title_ja: String,
    title_en: String,
    description_ja: String,
    description_en: String,
    min_amount: i64,
    quantity: Option<i64>,
    available_from: Option<Timestamp>,
    available_until: Option<Timestamp>,
}

async fn reward_fields(db: &Db, campaign: &Campaign, input: &RewardInput) -> Result<RewardFields, CampaignError> {
    let team_id = match input.team.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(slug) => {
            let found: Option<i64> = on_db!(db, p => sqlx::query_scalar(
                "SELECT id FROM campaign_teams WHERE campaign_id = $1 AND slug = $2")
                .bind(campaign.id).bind(slug).fetch_optional(p).await?);
            Some(found.ok_or(CampaignError::NotFound("team"))?)
        }
    };
    let minimum = campaign.currency.stripe_minimum();
    if input.min_amount < minimum.amount() {
        return Err(invalid("min_amount", Problem::BelowMinimum { min: minimum }).into());
    }
    if input.quantity.is_some_and(|q| q < 0) {
        return Err(invalid("quantity", Problem::Choice).into());
    }
    Ok(RewardFields {
        team_id,
        title_ja: model::text("title_ja", &input.title_ja, true, 120)?,
        title_en: model::text("title_en", &input.title_en, false, 120)?,
        description_ja: model::text("description_ja", &input.description_ja, false, 2_000)?,
        description_en: model::text("description_en", &input.description_en, false, 2_000)?,
        min_amount: input.min_amount,
        quantity: input.quantity,
        available_from: optional_time("available_from", &input.available_from)?,
        available_until: optional_time("available_until", &input.available_until)?,
    })
}

/// Retires a reward (no new pledges; those holding it keep it), or offers
/// it again.
pub async fn set_reward_retired(
    db: &Db,
    campaign_id: i64,
    reward_id: i64,
    retired: bool,
) -> Result<Reward, CampaignError> {
    let mut tx = db.begin().await?;
    let campaign = campaign_in(&mut tx, campaign_id).await?;
    crate::changes::reward_retirement(campaign.status)?;
    let sql = "UPDATE campaign_rewards SET retired_at = CASE WHEN $1 THEN COALESCE(retired_at, $2) ELSE NULL END
               WHERE id = $3 AND campaign_id = $4";
    let n = on_tx!(&mut tx, c => sqlx::query(sql).bind(retired).bind(Timestamp::now()).bind(reward_id)
        .bind(campaign_id).execute(c).await?.rows_affected());
    if n == 0 {
        return Err(CampaignError::NotFound("reward"));
    }
    tx.commit().await?;
    reward(db, campaign_id, reward_id).await
}

pub async fn rewards(db: &Db, campaign_id: i64) -> Result<Vec<Reward>, CampaignError> {
    let sql = format!("SELECT {REWARD_COLUMNS} FROM campaign_rewards WHERE campaign_id = $1 ORDER BY position, id");
    let rows: Vec<RewardRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(campaign_id).fetch_all(p).await?);
    Ok(rows.into_iter().map(Reward::from).collect())
}

/// A reward of this campaign; a reward of another campaign is not found.
pub async fn reward(db: &Db, campaign_id: i64, reward_id: i64) -> Result<Reward, CampaignError> {
    let sql = format!("SELECT {REWARD_COLUMNS} FROM campaign_rewards WHERE id = $1 AND campaign_id = $2");
    let row: Option<RewardRow> = on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(reward_id).bind(campaign_id).fetch_optional(p).await?);
    row.map(Reward::from).ok_or(CampaignError::NotFound("reward"))
}

// ---------------------------------------------------------------- pledges

pub async fn pledge_by_public_id(db: &Db, public_id: &str) -> Result<Pledge, CampaignError> {
    let sql = format!("SELECT {PLEDGE_COLUMNS} FROM pledges WHERE public_id = $1");
    let row: Option<PledgeRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(public_id).fetch_optional(p).await?);
    row.ok_or(CampaignError::NotFound("pledge"))?.try_into()
}

pub(crate) async fn pledge_in(tx: &mut Tx, public_id: &str) -> Result<Option<Pledge>, CampaignError> {
    let sql = format!("SELECT {PLEDGE_COLUMNS} FROM pledges WHERE public_id = $1");
    let row: Option<PledgeRow> =
        on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(public_id).fetch_optional(c).await?);
    row.map(Pledge::try_from).transpose()
}

pub(crate) async fn pledge_where(tx: &mut Tx, column: &str, value: &str) -> Result<Option<Pledge>, CampaignError> {
    let sql = format!("SELECT {PLEDGE_COLUMNS} FROM pledges WHERE {column} = $1 ORDER BY id LIMIT 1");
    let row: Option<PledgeRow> =
        on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(value).fetch_optional(c).await?);
    row.map(Pledge::try_from).transpose()
}

/// Every pledge made with an email address, newest first (but not those
/// abandoned at Checkout).
pub async fn pledges_of_email(db: &Db, email: &str) -> Result<Vec<Pledge>, CampaignError> {
    let sql = format!(
        "SELECT {PLEDGE_COLUMNS} FROM pledges WHERE lower(email) = lower($1) AND status NOT IN ('pending', 'expired')
         ORDER BY id DESC"
    );
    let rows: Vec<PledgeRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(email).fetch_all(p).await?);
    rows.into_iter().map(Pledge::try_from).collect()
}

pub async fn pledges_of_campaign(db: &Db, campaign_id: i64) -> Result<Vec<Pledge>, CampaignError> {
    let sql = format!("SELECT {PLEDGE_COLUMNS} FROM pledges WHERE campaign_id = $1 ORDER BY id");
    let rows: Vec<PledgeRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(campaign_id).fetch_all(p).await?);
    rows.into_iter().map(Pledge::try_from).collect()
}

/// One line of the supporters' wall.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct WallEntry {
    pub display_name: String,
    pub anonymous: bool,
    pub message: String,
    pub amount: i64,
    pub team_id: Option<i64>,
    pub committed_at: Timestamp,
}

/// The newest supporters of a campaign (an index range scan, not a scan of
/// all pledges).
pub async fn wall(db: &Db, campaign_id: i64, limit: i64) -> Result<Vec<WallEntry>, CampaignError> {
    let sql = "SELECT display_name, anonymous, message, amount, team_id, committed_at FROM pledges
               WHERE campaign_id = $1 AND committed_at IS NOT NULL
                 AND status IN ('committed', 'collected', 'payment_failed')
               ORDER BY committed_at DESC LIMIT $2";
    Ok(on_db!(db, p => sqlx::query_as(sql).bind(campaign_id).bind(limit).fetch_all(p).await?))
}
