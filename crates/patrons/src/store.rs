//! Salons, tiers, members' posts and memberships: creating, editing and
//! reading them, and the atomic seat claim of a tier.
//!
//! Each salon opens a fund account in the ledger in the same transaction
//! that creates its row.

use kanpa_ledger::db::TxConn;
use kanpa_ledger::rows::Rows;
use kanpa_ledger::store as ledger;
use kanpa_ledger::{AccountId, AccountKind, Currency, Db, Locale, NewAccount, OrgId, Timestamp, Tx, on_db, on_tx};
use serde::{Deserialize, Deserializer};
use sqlx::AssertSqlSafe;

use crate::error::PatronError;
use crate::model::{
    self, BillingAnchor, Invalid, MemberPost, Membership, MembershipStatus, Problem, Salon, SalonStatus, Tier,
    TierChange, TierStatus, invalid,
};

/// Days of access a past-due patron keeps unless the organiser says otherwise.
pub const DEFAULT_GRACE_DAYS: i64 = 7;
pub const MAX_GRACE_DAYS: i64 = 30;

// ---------------------------------------------------------------- rows

fn corrupt(what: &str, value: &str) -> PatronError {
    PatronError::Ledger(kanpa_ledger::LedgerError::Corrupt(format!("{what} {value:?}")))
}

fn currency(code: &str) -> Result<Currency, PatronError> {
    Currency::from_code(code).map_err(|_| corrupt("currency", code))
}

const SALON_COLUMNS: &str = "id, org_id, slug, name_ja, name_en, description_ja, description_en, currency,
    billing_anchor, tier_change, grace_days, status, fund_account_id, contact_email";

#[derive(sqlx::FromRow)]
struct SalonRow {
    id: i64,
    org_id: i64,
    slug: String,
    name_ja: String,
    name_en: String,
    description_ja: String,
    description_en: String,
    currency: String,
    billing_anchor: String,
    tier_change: String,
    grace_days: i64,
    status: String,
    fund_account_id: i64,
    contact_email: String,
}

impl TryFrom<SalonRow> for Salon {
    type Error = PatronError;
    fn try_from(r: SalonRow) -> Result<Salon, PatronError> {
        Ok(Salon {
            currency: currency(&r.currency)?,
            billing_anchor: BillingAnchor::parse(&r.billing_anchor)
                .ok_or_else(|| corrupt("billing anchor", &r.billing_anchor))?,
            tier_change: TierChange::parse(&r.tier_change).ok_or_else(|| corrupt("tier change", &r.tier_change))?,
            status: SalonStatus::parse(&r.status).ok_or_else(|| corrupt("salon status", &r.status))?,
            fund_account: AccountId(r.fund_account_id),
            id: r.id,
            org_id: r.org_id,
            slug: r.slug,
            name_ja: r.name_ja,
            name_en: r.name_en,
            description_ja: r.description_ja,
            description_en: r.description_en,
            grace_days: r.grace_days,
            contact_email: r.contact_email,
        })
    }
}

const TIER_COLUMNS: &str = "t.id, t.salon_id, t.slug, t.name_ja, t.name_en, t.benefits_ja, t.benefits_en,
    t.monthly_price, s.currency, t.seat_limit, t.seats_taken, t.status, t.position, t.stripe_product_id,
    t.stripe_price_id";

#[derive(sqlx::FromRow)]
struct TierRow {
    id: i64,
    salon_id: i64,
    slug: String,
    name_ja: String,
    name_en: String,
    benefits_ja: String,
    benefits_en: String,
    monthly_price: i64,
    currency: String,
    seat_limit: Option<i64>,
    seats_taken: i64,
    status: String,
    position: i32,
    stripe_product_id: Option<String>,
    stripe_price_id: Option<String>,
}

impl TryFrom<TierRow> for Tier {
    type Error = PatronError;
    fn try_from(r: TierRow) -> Result<Tier, PatronError> {
        Ok(Tier {
            currency: currency(&r.currency)?,
            status: TierStatus::parse(&r.status).ok_or_else(|| corrupt("tier status", &r.status))?,
            id: r.id,
            salon_id: r.salon_id,
            slug: r.slug,
            name_ja: r.name_ja,
            name_en: r.name_en,
            benefits_ja: r.benefits_ja,
            benefits_en: r.benefits_en,
            monthly_price: r.monthly_price,
            seat_limit: r.seat_limit,
            seats_taken: r.seats_taken,
            position: r.position,
            stripe_product_id: r.stripe_product_id,
            stripe_price_id: r.stripe_price_id,
        })
    }
}

pub(crate) const MEMBERSHIP_COLUMNS: &str = "m.id, m.public_id, m.salon_id, m.tier_id, m.next_tier_id, m.email,
    m.locale, m.amount, s.currency, m.stripe_price_id, m.stripe_customer_id, m.stripe_subscription_id, m.status,
    m.current_period_end, m.cancel_at, m.paused_until, m.past_due_since, m.since, m.last_payment_at,
    m.lifetime_paid, m.ended_at";

#[derive(sqlx::FromRow)]
pub(crate) struct MembershipRow {
    id: i64,
    public_id: String,
    salon_id: i64,
    tier_id: i64,
    next_tier_id: Option<i64>,
    email: String,
    locale: String,
    amount: i64,
    currency: String,
    stripe_price_id: Option<String>,
    stripe_customer_id: Option<String>,
    stripe_subscription_id: Option<String>,
    status: String,
    current_period_end: Option<Timestamp>,
    cancel_at: Option<Timestamp>,
    paused_until: Option<Timestamp>,
    past_due_since: Option<Timestamp>,
    since: Option<Timestamp>,
    last_payment_at: Option<Timestamp>,
    lifetime_paid: i64,
    ended_at: Option<Timestamp>,
}

impl TryFrom<MembershipRow> for Membership {
    type Error = PatronError;
    fn try_from(r: MembershipRow) -> Result<Membership, PatronError> {
        Ok(Membership {
            currency: currency(&r.currency)?,
            locale: Locale::parse(&r.locale).ok_or_else(|| corrupt("locale", &r.locale))?,
            status: MembershipStatus::parse(&r.status).ok_or_else(|| corrupt("membership status", &r.status))?,
            id: r.id,
            public_id: r.public_id,
            salon_id: r.salon_id,
            tier_id: r.tier_id,
            next_tier_id: r.next_tier_id,
            email: r.email,
            amount: r.amount,
            stripe_price_id: r.stripe_price_id,
            stripe_customer_id: r.stripe_customer_id,
            stripe_subscription_id: r.stripe_subscription_id,
            current_period_end: r.current_period_end,
            cancel_at: r.cancel_at,
            paused_until: r.paused_until,
            past_due_since: r.past_due_since,
            since: r.since,
            last_payment_at: r.last_payment_at,
            lifetime_paid: r.lifetime_paid,
            ended_at: r.ended_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct PostRow {
    id: i64,
    salon_id: i64,
    title_ja: String,
    title_en: String,
    body_ja: String,
    body_en: String,
    link_url: Option<String>,
    created_at: Timestamp,
}

impl From<PostRow> for MemberPost {
    fn from(r: PostRow) -> MemberPost {
        MemberPost {
            id: r.id,
            salon_id: r.salon_id,
            title_ja: r.title_ja,
            title_en: r.title_en,
            body_ja: r.body_ja,
            body_en: r.body_en,
            link_url: r.link_url,
            created_at: r.created_at,
        }
    }
}

// ---------------------------------------------------------------- inputs

/// A salon as the API and CLI describe it. `Default` gives the same
/// defaults as a JSON body that leaves the optional fields out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalonInput {
    pub slug: String,
    pub name_ja: String,
    #[serde(default)]
    pub name_en: String,
    #[serde(default)]
    pub description_ja: String,
    #[serde(default)]
    pub description_en: String,
    pub currency: String,
    #[serde(default = "default_anchor")]
    pub billing_anchor: String,
    #[serde(default = "default_tier_change")]
    pub tier_change: String,
    #[serde(default = "default_grace_days")]
    pub grace_days: i64,
    pub contact_email: String,
}

impl Default for SalonInput {
    fn default() -> SalonInput {
        SalonInput {
            slug: String::new(),
            name_ja: String::new(),
            name_en: String::new(),
            description_ja: String::new(),
            description_en: String::new(),
            currency: String::new(),
            billing_anchor: default_anchor(),
            tier_change: default_tier_change(),
            grace_days: default_grace_days(),
            contact_email: String::new(),
        }
    }
}

fn default_anchor() -> String {
    BillingAnchor::StartDate.as_str().into()
}

fn default_tier_change() -> String {
    TierChange::NextCycle.as_str().into()
}

fn default_grace_days() -> i64 {
    DEFAULT_GRACE_DAYS
}

/// Changes to a salon; absent fields stay as they are. The currency never
/// changes: prices and the fund are in it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalonChanges {
    pub name_ja: Option<String>,
    pub name_en: Option<String>,
    pub description_ja: Option<String>,
    pub description_en: Option<String>,
    pub billing_anchor: Option<String>,
    pub tier_change: Option<String>,
    pub grace_days: Option<i64>,
    pub contact_email: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierInput {
    pub slug: String,
    pub name_ja: String,
    #[serde(default)]
    pub name_en: String,
    #[serde(default)]
    pub benefits_ja: String,
    #[serde(default)]
    pub benefits_en: String,
    pub monthly_price: i64,
    pub seat_limit: Option<i64>,
    pub position: Option<i32>,
}

/// Changes to a tier. A new `monthly_price` applies to new patrons only.
/// `seat_limit: null` removes the limit; leaving it out keeps it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierChanges {
    pub name_ja: Option<String>,
    pub name_en: Option<String>,
    pub benefits_ja: Option<String>,
    pub benefits_en: Option<String>,
    pub monthly_price: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    pub seat_limit: Option<Option<i64>>,
    pub position: Option<i32>,
    /// "active" or "retired".
    pub status: Option<String>,
}

/// A field that may be given as `null`: `Some(None)`; left out: `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostInput {
    pub title_ja: String,
    #[serde(default)]
    pub title_en: String,
    #[serde(default)]
    pub body_ja: String,
    #[serde(default)]
    pub body_en: String,
    pub link_url: Option<String>,
}

fn choice<T>(field: &'static str, value: &str, parse: fn(&str) -> Option<T>) -> Result<T, Invalid> {
    parse(value.trim()).ok_or_else(|| invalid(field, Problem::Choice))
}

fn seat_limit(value: Option<i64>) -> Result<Option<i64>, Invalid> {
    value.map(|n| model::in_range("seat_limit", n, 0, 1_000_000)).transpose()
}

// ---------------------------------------------------------------- salons

pub async fn create_salon(db: &Db, org: OrgId, input: &SalonInput) -> Result<Salon, PatronError> {
    let slug = model::slug("slug", &input.slug)?;
    let currency = Currency::from_code(input.currency.trim()).map_err(|_| invalid("currency", Problem::Currency))?;
    let name_ja = model::text("name_ja", &input.name_ja, true, 120)?;
    let name_en = model::text("name_en", &input.name_en, false, 120)?;
    let description_ja = model::text("description_ja", &input.description_ja, false, 20_000)?;
    let description_en = model::text("description_en", &input.description_en, false, 20_000)?;
    let anchor = choice("billing_anchor", &input.billing_anchor, BillingAnchor::parse)?;
    let tier_change = choice("tier_change", &input.tier_change, TierChange::parse)?;
    let grace_days = model::in_range("grace_days", input.grace_days, 0, MAX_GRACE_DAYS)?;
    let contact_email = model::email("contact_email", &input.contact_email)?;

    let mut tx = db.begin().await?;
    let taken: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar("SELECT id FROM salons WHERE slug = $1")
        .bind(&slug).fetch_optional(c).await?);
    if taken.is_some() {
        return Err(PatronError::SlugTaken);
    }
    let new = NewAccount {
        org,
        code: format!("fund:salon:{slug}"),
        name: format!("{name_ja} — salon"),
        kind: AccountKind::Fund,
        currency,
    };
    let fund = ledger::create_account(&mut tx, &new).await?.id;
    let now = Timestamp::now();
    let sql = "INSERT INTO salons (org_id, slug, name_ja, name_en, description_ja, description_en, currency,
                   billing_anchor, tier_change, grace_days, status, fund_account_id, contact_email, created_at,
                   updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'draft', $11, $12, $13, $13) RETURNING id";
    let id: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(sql)
        .bind(org.0).bind(&slug).bind(&name_ja).bind(&name_en).bind(&description_ja).bind(&description_en)
        .bind(currency.code()).bind(anchor.as_str()).bind(tier_change.as_str()).bind(grace_days).bind(fund.0)
        .bind(&contact_email).bind(now).fetch_one(c).await?);
    let salon = salon_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(salon)
}

pub async fn update_salon(db: &Db, id: i64, changes: &SalonChanges) -> Result<Salon, PatronError> {
    let mut tx = db.begin().await?;
    let mut s = salon_in(&mut tx, id).await?;
    if let Some(v) = &changes.name_ja {
        s.name_ja = model::text("name_ja", v, true, 120)?;
    }
    if let Some(v) = &changes.name_en {
        s.name_en = model::text("name_en", v, false, 120)?;
    }
    if let Some(v) = &changes.description_ja {
        s.description_ja = model::text("description_ja", v, false, 20_000)?;
    }
    if let Some(v) = &changes.description_en {
        s.description_en = model::text("description_en", v, false, 20_000)?;
    }
    if let Some(v) = &changes.billing_anchor {
        s.billing_anchor = choice("billing_anchor", v, BillingAnchor::parse)?;
    }
    if let Some(v) = &changes.tier_change {
        s.tier_change = choice("tier_change", v, TierChange::parse)?;
    }
    if let Some(v) = changes.grace_days {
        s.grace_days = model::in_range("grace_days", v, 0, MAX_GRACE_DAYS)?;
    }
    if let Some(v) = &changes.contact_email {
        s.contact_email = model::email("contact_email", v)?;
    }
    let sql = "UPDATE salons SET name_ja = $1, name_en = $2, description_ja = $3, description_en = $4,
                   billing_anchor = $5, tier_change = $6, grace_days = $7, contact_email = $8, updated_at = $9
               WHERE id = $10";
    on_tx!(&mut tx, c => sqlx::query(sql)
        .bind(&s.name_ja).bind(&s.name_en).bind(&s.description_ja).bind(&s.description_en)
        .bind(s.billing_anchor.as_str()).bind(s.tier_change.as_str()).bind(s.grace_days).bind(&s.contact_email)
        .bind(Timestamp::now()).bind(id).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(s)
}

/// Opens a salon to new patrons (from draft or closed), or closes it.
pub async fn set_salon_status(db: &Db, id: i64, to: SalonStatus) -> Result<Salon, PatronError> {
    let mut tx = db.begin().await?;
    let salon = salon_in(&mut tx, id).await?;
    let allowed = match to {
        SalonStatus::Open => salon.status != SalonStatus::Open,
        SalonStatus::Closed => salon.status == SalonStatus::Open,
        SalonStatus::Draft => false,
    };
    if !allowed {
        return Err(PatronError::SalonState { status: salon.status });
    }
    if to == SalonStatus::Open {
        kanpa_payments::seller::require_complete(&mut tx, kanpa_ledger::OrgId(salon.org_id)).await??;
    }
    let sql = "UPDATE salons SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(to.as_str()).bind(Timestamp::now()).bind(id)
        .bind(salon.status.as_str()).execute(c).await?.rows_affected());
    let salon = salon_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(salon)
}

pub(crate) async fn salon_in(tx: &mut Tx, id: i64) -> Result<Salon, PatronError> {
    let sql = format!("SELECT {SALON_COLUMNS} FROM salons WHERE id = $1");
    let row: Option<SalonRow> =
        on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(id).fetch_optional(c).await?);
    row.ok_or(PatronError::NotFound("salon"))?.try_into()
}

pub async fn salon_by_id(db: &Db, id: i64) -> Result<Salon, PatronError> {
    let sql = format!("SELECT {SALON_COLUMNS} FROM salons WHERE id = $1");
    let row: Option<SalonRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(id).fetch_optional(p).await?);
    row.ok_or(PatronError::NotFound("salon"))?.try_into()
}

pub async fn salon_by_slug(db: &Db, slug: &str) -> Result<Salon, PatronError> {
    let sql = format!("SELECT {SALON_COLUMNS} FROM salons WHERE slug = $1");
    let row: Option<SalonRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(slug).fetch_optional(p).await?);
    row.ok_or(PatronError::NotFound("salon"))?.try_into()
}

/// Salons the public can see: open ones, by name.
pub async fn public_salons(db: &Db) -> Result<Vec<Salon>, PatronError> {
    let sql = format!("SELECT {SALON_COLUMNS} FROM salons WHERE status = 'open' ORDER BY id");
    let rows: Vec<SalonRow> = on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).fetch_all(p).await?);
    rows.into_iter().map(Salon::try_from).collect()
}

pub async fn salons_of(db: &Db, org: OrgId) -> Result<Vec<Salon>, PatronError> {
    let sql = format!("SELECT {SALON_COLUMNS} FROM salons WHERE org_id = $1 ORDER BY id");
    let rows: Vec<SalonRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(org.0).fetch_all(p).await?);
    rows.into_iter().map(Salon::try_from).collect()
}

// ---------------------------------------------------------------- tiers

pub async fn add_tier(db: &Db, salon_id: i64, input: &TierInput) -> Result<Tier, PatronError> {
    let salon = salon_by_id(db, salon_id).await?;
    let slug = model::slug("slug", &input.slug)?;
    let name_ja = model::text("name_ja", &input.name_ja, true, 120)?;
    let name_en = model::text("name_en", &input.name_en, false, 120)?;
    let benefits_ja = model::text("benefits_ja", &input.benefits_ja, false, 5_000)?;
    let benefits_en = model::text("benefits_en", &input.benefits_en, false, 5_000)?;
    let price = model::monthly_price("monthly_price", input.monthly_price, salon.currency)?;
    let seat_limit = seat_limit(input.seat_limit)?;
    let mut tx = db.begin().await?;
    let taken: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(
        "SELECT id FROM salon_tiers WHERE salon_id = $1 AND slug = $2").bind(salon_id).bind(&slug).fetch_optional(c).await?);
    if taken.is_some() {
        return Err(PatronError::SlugTaken);
    }
    let position = match input.position {
        Some(p) => p,
        None => on_tx!(&mut tx, c => sqlx::query_scalar::<_, i32>(
            "SELECT CAST(COALESCE(MAX(position), 0) + 1 AS INTEGER) FROM salon_tiers WHERE salon_id = $1")
            .bind(salon_id).fetch_one(c).await?),
    };
    let now = Timestamp::now();
    let sql = "INSERT INTO salon_tiers (salon_id, slug, name_ja, name_en, benefits_ja, benefits_en, monthly_price,
                   seat_limit, status, position, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $10) RETURNING id";
    let id: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(sql)
        .bind(salon_id).bind(&slug).bind(&name_ja).bind(&name_en).bind(&benefits_ja).bind(&benefits_en)
        .bind(price).bind(seat_limit).bind(position).bind(now).fetch_one(c).await?);
    let tier = tier_in(&mut tx, salon_id, id).await?;
    tx.commit().await?;
    Ok(tier)
}

/// Edits a tier. A seat limit cannot go below the seats already taken; a
/// new price is for new patrons (the Stripe Price is replaced when the tier
/// is next synced, and existing patrons keep theirs).
pub async fn update_tier(db: &Db, salon_id: i64, tier_id: i64, changes: &TierChanges) -> Result<Tier, PatronError> {
    let salon = salon_by_id(db, salon_id).await?;
    let mut tx = db.begin().await?;
    let mut t = tier_in(&mut tx, salon_id, tier_id).await?;
    if let Some(v) = &changes.name_ja {
        t.name_ja = model::text("name_ja", v, true, 120)?;
    }
    if let Some(v) = &changes.name_en {
        t.name_en = model::text("name_en", v, false, 120)?;
    }
    if let Some(v) = &changes.benefits_ja {
        t.benefits_ja = model::text("benefits_ja", v, false, 5_000)?;
    }
    if let Some(v) = &changes.benefits_en {
        t.benefits_en = model::text("benefits_en", v, false, 5_000)?;
    }
    let price_changed = changes.monthly_price.is_some_and(|p| p != t.monthly_price);
    if let Some(v) = changes.monthly_price {
        t.monthly_price = model::monthly_price("monthly_price", v, salon.currency)?;
    }
    if let Some(v) = changes.seat_limit {
        t.seat_limit = seat_limit(v)?;
    }
    if let Some(v) = changes.position {
        t.position = v;
    }
    if let Some(v) = &changes.status {
        t.status = choice("status", v, TierStatus::parse)?;
    }
    // The seat check is in the statement, so a concurrent join cannot slip
    // between reading the count and lowering the limit.
    let sql = "UPDATE salon_tiers SET name_ja = $1, name_en = $2, benefits_ja = $3, benefits_en = $4,
                   monthly_price = $5, seat_limit = $6, position = $7, status = $8, updated_at = $9,
                   stripe_price_id = CASE WHEN $10 THEN NULL ELSE stripe_price_id END
               WHERE id = $11 AND salon_id = $12 AND ($6 IS NULL OR seats_taken <= $6)";
    let n = on_tx!(&mut tx, c => sqlx::query(sql)
        .bind(&t.name_ja).bind(&t.name_en).bind(&t.benefits_ja).bind(&t.benefits_en).bind(t.monthly_price)
        .bind(t.seat_limit).bind(t.position).bind(t.status.as_str()).bind(Timestamp::now()).bind(price_changed)
        .bind(tier_id).bind(salon_id).execute(c).await?.rows_affected());
    if n == 0 {
        return Err(
            invalid("seat_limit", Problem::BelowMinimum { min: kanpa_ledger::Money::new(0, salon.currency) }).into()
        );
    }
    let tier = tier_in(&mut tx, salon_id, tier_id).await?;
    tx.commit().await?;
    Ok(tier)
}

pub(crate) async fn tier_in(tx: &mut Tx, salon_id: i64, tier_id: i64) -> Result<Tier, PatronError> {
    let sql = format!(
        "SELECT {TIER_COLUMNS} FROM salon_tiers t JOIN salons s ON s.id = t.salon_id
         WHERE t.id = $1 AND t.salon_id = $2"
    );
    let row: Option<TierRow> = on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone()))
        .bind(tier_id).bind(salon_id).fetch_optional(c).await?);
    row.ok_or(PatronError::NotFound("tier"))?.try_into()
}

pub async fn tier(db: &Db, salon_id: i64, tier_id: i64) -> Result<Tier, PatronError> {
    let sql = format!(
        "SELECT {TIER_COLUMNS} FROM salon_tiers t JOIN salons s ON s.id = t.salon_id
         WHERE t.id = $1 AND t.salon_id = $2"
    );
    let row: Option<TierRow> = on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone()))
        .bind(tier_id).bind(salon_id).fetch_optional(p).await?);
    row.ok_or(PatronError::NotFound("tier"))?.try_into()
}

pub async fn tier_by_slug(db: &Db, salon_id: i64, slug: &str) -> Result<Tier, PatronError> {
    let sql = format!(
        "SELECT {TIER_COLUMNS} FROM salon_tiers t JOIN salons s ON s.id = t.salon_id
         WHERE t.slug = $1 AND t.salon_id = $2"
    );
    let row: Option<TierRow> = on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone()))
        .bind(slug).bind(salon_id).fetch_optional(p).await?);
    row.ok_or(PatronError::NotFound("tier"))?.try_into()
}

/// Every tier of a salon, retired ones too, in display order.
pub async fn tiers(db: &Db, salon_id: i64) -> Result<Vec<Tier>, PatronError> {
    let sql = format!(
        "SELECT {TIER_COLUMNS} FROM salon_tiers t JOIN salons s ON s.id = t.salon_id
         WHERE t.salon_id = $1 ORDER BY t.position, t.id"
    );
    let rows: Vec<TierRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(salon_id).fetch_all(p).await?);
    rows.into_iter().map(Tier::try_from).collect()
}

/// Takes one seat of an active tier, in one statement: under any number of
/// concurrent joins, no more seats are taken than the limit.
pub async fn claim_seat(tx: &mut Tx, tier_id: i64) -> Result<(), PatronError> {
    let sql = "UPDATE salon_tiers SET seats_taken = seats_taken + 1
               WHERE id = $1 AND status = 'active' AND (seat_limit IS NULL OR seats_taken < seat_limit)
               RETURNING id";
    let claimed: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(sql).bind(tier_id).fetch_optional(c).await?);
    if claimed.is_some() {
        return Ok(());
    }
    let status: Option<String> = on_tx!(tx, c => sqlx::query_scalar(
        "SELECT status FROM salon_tiers WHERE id = $1").bind(tier_id).fetch_optional(c).await?);
    match status.as_deref() {
        None => Err(PatronError::NotFound("tier")),
        Some("active") => Err(PatronError::TierFull),
        Some(_) => Err(PatronError::TierRetired),
    }
}

/// Gives a seat back (a membership ended or moved to another tier).
pub async fn release_seat(tx: &mut Tx, tier_id: i64) -> Result<(), PatronError> {
    let sql = "UPDATE salon_tiers SET seats_taken = seats_taken - 1 WHERE id = $1 AND seats_taken > 0";
    on_tx!(tx, c => sqlx::query(sql).bind(tier_id).execute(c).await?.rows_affected());
    Ok(())
}

// ---------------------------------------------------------------- members' posts

pub async fn add_post(db: &Db, salon_id: i64, input: &PostInput) -> Result<MemberPost, PatronError> {
    salon_by_id(db, salon_id).await?;
    let title_ja = model::text("title_ja", &input.title_ja, true, 200)?;
    let title_en = model::text("title_en", &input.title_en, false, 200)?;
    let body_ja = model::text("body_ja", &input.body_ja, false, 20_000)?;
    let body_en = model::text("body_en", &input.body_en, false, 20_000)?;
    let link = input.link_url.as_deref().filter(|v| !v.trim().is_empty()).map(|v| model::url("link_url", v));
    let link = link.transpose()?;
    let sql = "INSERT INTO salon_member_posts (salon_id, title_ja, title_en, body_ja, body_en, link_url, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";
    let mut tx = db.begin().await?;
    let id: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(salon_id).bind(&title_ja).bind(&title_en)
        .bind(&body_ja).bind(&body_en).bind(&link).bind(Timestamp::now()).fetch_one(c).await?);
    tx.commit().await?;
    let posts = posts(db, salon_id).await?;
    posts.into_iter().find(|p| p.id == id).ok_or(PatronError::NotFound("post"))
}

/// The members' area, newest first.
pub async fn posts(db: &Db, salon_id: i64) -> Result<Vec<MemberPost>, PatronError> {
    let sql = "SELECT id, salon_id, title_ja, title_en, body_ja, body_en, link_url, created_at
               FROM salon_member_posts WHERE salon_id = $1 ORDER BY created_at DESC, id DESC";
    let rows: Vec<PostRow> = on_db!(db, p => sqlx::query_as(sql).bind(salon_id).fetch_all(p).await?);
    Ok(rows.into_iter().map(MemberPost::from).collect())
}

pub async fn delete_post(db: &Db, salon_id: i64, post_id: i64) -> Result<(), PatronError> {
    let sql = "DELETE FROM salon_member_posts WHERE id = $1 AND salon_id = $2";
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, c => sqlx::query(sql).bind(post_id).bind(salon_id).execute(c).await?.rows_affected());
    if n == 0 {
        return Err(PatronError::NotFound("post"));
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------- memberships

pub(crate) async fn membership_in(tx: &mut Tx, public_id: &str) -> Result<Option<Membership>, PatronError> {
    let sql = format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships m JOIN salons s ON s.id = m.salon_id WHERE m.public_id = $1"
    );
    let row: Option<MembershipRow> =
        on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(public_id).fetch_optional(c).await?);
    row.map(Membership::try_from).transpose()
}

/// The memberships with these public ids, in no particular order; one
/// statement however many.
pub(crate) async fn memberships_in(tx: &mut Tx, public_ids: &[&str]) -> Result<Vec<Membership>, PatronError> {
    memberships_where_in(tx, "public_id", public_ids).await
}

/// The memberships whose `column` (one of ours, never input) is one of
/// `values`, in no particular order; one statement however many.
pub(crate) async fn memberships_where_in(
    tx: &mut Tx,
    column: &str,
    values: &[&str],
) -> Result<Vec<Membership>, PatronError> {
    debug_assert!(matches!(column, "public_id" | "stripe_subscription_id"));
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = Rows::new(values.len()).text("value", values.iter().copied());
    let sql = format!(
        "{} SELECT {MEMBERSHIP_COLUMNS} FROM memberships m JOIN salons s ON s.id = m.salon_id
            WHERE m.{column} IN (SELECT value FROM wanted)",
        wanted.with_clause("wanted", tx.backend(), 0)
    );
    let rows: Vec<MembershipRow> = wanted.fetch_all(tx, &sql, &[]).await?;
    rows.into_iter().map(Membership::try_from).collect()
}

/// The membership holding a Stripe id (`column` is one of ours, never input).
pub(crate) async fn membership_where(
    tx: &mut Tx,
    column: &str,
    value: &str,
) -> Result<Option<Membership>, PatronError> {
    debug_assert!(matches!(column, "checkout_session_id" | "stripe_subscription_id"));
    let sql = format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships m JOIN salons s ON s.id = m.salon_id WHERE m.{column} = $1"
    );
    let row: Option<MembershipRow> =
        on_tx!(tx, c => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(value).fetch_optional(c).await?);
    row.map(Membership::try_from).transpose()
}

/// The membership whose invoice was paid by a charge (by its id, or its
/// PaymentIntent before the charge is recorded).
pub(crate) async fn membership_of_charge(
    tx: &mut Tx,
    charge: Option<String>,
    payment_intent: Option<String>,
) -> Result<Option<Membership>, PatronError> {
    let sql = "SELECT m.public_id FROM membership_invoices i JOIN memberships m ON m.id = i.membership_id
               WHERE i.stripe_charge_id = $1 OR i.stripe_payment_intent_id = $2 LIMIT 1";
    let id: Option<String> =
        on_tx!(tx, c => sqlx::query_scalar(sql).bind(charge).bind(payment_intent).fetch_optional(c).await?);
    match id {
        Some(id) => membership_in(tx, &id).await,
        None => Ok(None),
    }
}

pub async fn membership_by_public_id(db: &Db, public_id: &str) -> Result<Membership, PatronError> {
    let sql = format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships m JOIN salons s ON s.id = m.salon_id WHERE m.public_id = $1"
    );
    let row: Option<MembershipRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(public_id).fetch_optional(p).await?);
    row.ok_or(PatronError::NotFound("membership"))?.try_into()
}

/// Every membership of an address, newest first.
pub async fn memberships_of_email(db: &Db, email: &str) -> Result<Vec<Membership>, PatronError> {
    let sql = format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships m JOIN salons s ON s.id = m.salon_id
         WHERE lower(m.email) = lower($1) ORDER BY m.created_at DESC, m.id DESC"
    );
    let rows: Vec<MembershipRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(email.trim()).fetch_all(p).await?);
    rows.into_iter().map(Membership::try_from).collect()
}

pub async fn memberships_of_salon(db: &Db, salon_id: i64) -> Result<Vec<Membership>, PatronError> {
    let sql = format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships m JOIN salons s ON s.id = m.salon_id
         WHERE m.salon_id = $1 ORDER BY m.id"
    );
    let rows: Vec<MembershipRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(salon_id).fetch_all(p).await?);
    rows.into_iter().map(Membership::try_from).collect()
}

// ---------------------------------------------------------------- payments

/// A paid invoice of a membership, as the patron's payment history shows it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PaidInvoice {
    pub id: i64,
    pub stripe_invoice_id: String,
    pub stripe_charge_id: Option<String>,
    pub amount_paid: i64,
    pub amount_refunded: i64,
    pub paid_at: Timestamp,
}

impl PaidInvoice {
    /// Ours, stable and never reused: the invoice's row, zero-padded.
    pub fn receipt_number(&self) -> String {
        format!("M-{:08}", self.id)
    }
}

/// A membership's paid invoices, newest first.
pub async fn paid_invoices(db: &Db, membership_id: i64) -> Result<Vec<PaidInvoice>, PatronError> {
    let sql = "SELECT id, stripe_invoice_id, stripe_charge_id, amount_paid, amount_refunded, paid_at
               FROM membership_invoices
               WHERE membership_id = $1 AND status = 'paid' AND paid_at IS NOT NULL AND amount_paid > 0
               ORDER BY paid_at DESC, id DESC";
    let rows: Vec<PaidInvoice> = on_db!(db, p => sqlx::query_as(sql).bind(membership_id).fetch_all(p).await?);
    Ok(rows)
}

/// A salon's invoice as a refund needs it: what its charge took and what
/// has been refunded of it so far.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RefundableInvoice {
    pub id: i64,
    pub stripe_invoice_id: String,
    pub membership_public_id: String,
    pub status: String,
    pub stripe_payment_intent_id: Option<String>,
    pub stripe_charge_id: Option<String>,
    pub amount_paid: i64,
    pub amount_refunded: i64,
}

/// The invoice `stripe_invoice_id` of one of the salon's memberships;
/// another salon's is not found.
pub async fn invoice_of_salon(
    db: &Db,
    salon_id: i64,
    stripe_invoice_id: &str,
) -> Result<RefundableInvoice, PatronError> {
    let sql = "SELECT i.id, i.stripe_invoice_id, m.public_id AS membership_public_id, i.status,
                      i.stripe_payment_intent_id, i.stripe_charge_id, i.amount_paid, i.amount_refunded
               FROM membership_invoices i JOIN memberships m ON m.id = i.membership_id
               WHERE m.salon_id = $1 AND i.stripe_invoice_id = $2";
    let row: Option<RefundableInvoice> =
        on_db!(db, p => sqlx::query_as(sql).bind(salon_id).bind(stripe_invoice_id).fetch_optional(p).await?);
    row.ok_or(PatronError::NotFound("invoice"))
}

/// Whether an invoice is recorded as paid.
pub(crate) async fn invoice_is_paid(tx: &mut Tx, stripe_invoice_id: &str) -> Result<bool, PatronError> {
    let sql = "SELECT status FROM membership_invoices WHERE stripe_invoice_id = $1";
    let status: Option<String> =
        on_tx!(tx, c => sqlx::query_scalar(sql).bind(stripe_invoice_id).fetch_optional(c).await?);
    Ok(status.as_deref() == Some("paid"))
}

/// The money a membership's payments left with the salon: each collected
/// invoice's gross less what was refunded and what a lost dispute took back.
/// Recomputed from the invoices, so events in any order give one total.
pub(crate) async fn recompute_lifetime_paid(tx: &mut Tx, membership_id: i64) -> Result<(), PatronError> {
    lifetime_paid_again(tx, &[membership_id]).await
}

/// What a membership has paid and kept, from its invoices: paid, less
/// refunded and disputes lost, per charge.
const LIFETIME_PAID: &str = "(SELECT CAST(COALESCE(SUM(CASE WHEN amount_paid > amount_refunded + amount_disputed_lost
                                                THEN amount_paid - amount_refunded - amount_disputed_lost
                                                ELSE 0 END), 0) AS BIGINT)
                FROM membership_invoices WHERE membership_id = memberships.id AND stripe_charge_id IS NOT NULL)";

/// Sums the memberships' lifetime totals again from their invoices. The
/// rows are locked first, by a statement of their own: on PostgreSQL a
/// statement that waits for a row lock still reads every other table as it
/// was when the statement began, so a sum taken while waiting would miss
/// the invoice of the transaction it waited for (two renewals, or a renewal
/// and a refund, of one membership committing at once). The sum is taken by
/// a statement that begins once the rows are ours. (SQLite runs one writer
/// at a time.)
async fn lifetime_paid_again(tx: &mut Tx, ids: &[i64]) -> Result<(), PatronError> {
    let rows = Rows::new(ids.len()).int("id", ids.iter().copied()).opt_time("paid_at", ids.iter().map(|_| None));
    lock_memberships(tx, ids).await?;
    update_totals(tx, &rows).await
}

/// Takes the row locks of memberships, in id order (see
/// [`lifetime_paid_again`]).
async fn lock_memberships(tx: &mut Tx, ids: &[i64]) -> Result<(), PatronError> {
    if let TxConn::Postgres(c) = &mut tx.conn {
        let lock = "SELECT id FROM memberships WHERE id = ANY($1) ORDER BY id FOR UPDATE";
        sqlx::query(lock).bind(ids).persistent(false).execute(&mut **c).await?;
    }
    Ok(())
}

/// Sums the lifetime totals of the memberships in `rows` (columns `id`,
/// `paid_at`) again, and moves each one's last payment forward to its
/// `paid_at` when that is newer: one statement, one new row version each.
async fn update_totals(tx: &mut Tx, rows: &Rows) -> Result<(), PatronError> {
    let sql = format!(
        "{} UPDATE memberships SET
                last_payment_at = CASE WHEN p.paid_at IS NOT NULL
                                        AND (last_payment_at IS NULL OR last_payment_at < p.paid_at)
                                       THEN p.paid_at ELSE last_payment_at END,
                lifetime_paid = {LIFETIME_PAID}
            FROM p WHERE memberships.id = p.id",
        rows.with_clause("p", tx.backend(), 0)
    );
    rows.execute(tx, &sql, &[]).await?;
    Ok(())
}

/// After payments were recorded: each membership's last payment moves
/// forward to the newest of them, and its lifetime total is summed again,
/// in one statement for all of them once their rows are locked.
pub(crate) async fn payments_recorded(tx: &mut Tx, paid: &[(i64, Timestamp)]) -> Result<(), PatronError> {
    let mut newest: std::collections::BTreeMap<i64, Timestamp> = std::collections::BTreeMap::new();
    for (membership, at) in paid {
        let slot = newest.entry(*membership).or_insert(*at);
        *slot = (*slot).max(*at);
    }
    if newest.is_empty() {
        return Ok(());
    }
    lock_memberships(tx, &newest.keys().copied().collect::<Vec<_>>()).await?;
    let rows = Rows::new(newest.len())
        .int("id", newest.keys().copied())
        .opt_time("paid_at", newest.values().map(|t| Some(*t)));
    update_totals(tx, &rows).await
}

/// The tier of a salon a Stripe price belongs to, and that price's amount.
pub(crate) async fn tier_of_price(
    tx: &mut Tx,
    salon_id: i64,
    stripe_price_id: &str,
) -> Result<Option<(i64, i64)>, PatronError> {
    let sql = "SELECT p.tier_id, p.amount FROM salon_tier_prices p JOIN salon_tiers t ON t.id = p.tier_id
               WHERE p.stripe_price_id = $1 AND t.salon_id = $2";
    Ok(on_tx!(tx, c => sqlx::query_as(sql).bind(stripe_price_id).bind(salon_id).fetch_optional(c).await?))
}

/// Takes a seat whatever the limit: for a membership the payment provider
/// already moved to this tier.
pub(crate) async fn take_seat_unchecked(tx: &mut Tx, tier_id: i64) -> Result<(), PatronError> {
    let sql = "UPDATE salon_tiers SET seats_taken = seats_taken + 1 WHERE id = $1";
    on_tx!(tx, c => sqlx::query(sql).bind(tier_id).execute(c).await?.rows_affected());
    Ok(())
}
