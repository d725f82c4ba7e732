//! Making a pledge, and the one function that moves a pledge between
//! states while keeping the campaign's and team's aggregates and the
//! reward's claimed count right.

use kanpa_ledger::{Db, Locale, Money, Timestamp, Tx, on_tx};
use kanpa_messaging::email::{EmailAddress, EmailTemplate, PledgeTiming};
use kanpa_messaging::jobs::{self, NewJob};
use kanpa_messaging::outbox::{self, NewEmail};
use kanpa_payments::{CheckoutMode, CheckoutRequest, PaymentGateway};
use rand::Rng;
use serde::Deserialize;

use crate::error::CampaignError;
use crate::model::{self, Campaign, FundingModel, Pledge, PledgeStatus, Problem, invalid};
use crate::store;
use crate::{Site, money_text};

/// The pledge form as submitted. Every field is text, as a browser sends it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PledgeForm {
    /// A team id, or empty for the unallocated pool.
    #[serde(default)]
    pub team: String,
    /// A reward id, or empty for none.
    #[serde(default)]
    pub reward: String,
    #[serde(default)]
    pub amount: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub anonymous: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub email: String,
}

/// Where to go next: the gateway's Checkout page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub pledge: String,
    pub checkout_url: String,
}

pub const MAX_NAME: usize = 50;

/// The job that closes a Checkout session still unfinished after
/// [`PENDING_FOR`] (Stripe's own sessions expire after 24 hours).
pub const EXPIRE_JOB: &str = "pledge.expire_pending";
pub const PENDING_FOR: time::Duration = time::Duration::hours(25);
pub const MAX_MESSAGE: usize = 500;

fn new_public_id() -> String {
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..20).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// An id field from a form: empty is none; anything else must be a number.
fn id_field(field: &'static str, value: &str) -> Result<Option<i64>, CampaignError> {
    let value = value.trim();
    if value.is_empty() || value == "pool" || value == "none" {
        return Ok(None);
    }
    value.parse::<i64>().map(Some).map_err(|_| CampaignError::NotFound(field))
}

/// A checked pledge form: what will be stored.
pub(crate) struct Checked {
    pub team: Option<crate::model::Team>,
    pub reward: Option<crate::model::Reward>,
    pub amount: Money,
    pub display_name: String,
    pub anonymous: bool,
    pub message: String,
}

/// What a supporter chose, as typed: team id, reward id, amount.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Choice<'a> {
    pub team: &'a str,
    pub reward: &'a str,
    pub amount: &'a str,
}

/// Checks the team, reward and amount of a pledge against the campaign.
pub(crate) async fn check_choice(
    db: &Db,
    campaign: &Campaign,
    choice: Choice<'_>,
    max_amount: i64,
    now: Timestamp,
    held_reward: Option<i64>,
) -> Result<(Option<crate::model::Team>, Option<crate::model::Reward>, Money), CampaignError> {
    let Choice { team, reward, amount } = choice;
    let amount = model::amount("amount", amount, campaign.currency)?;
    let minimum = campaign.currency.stripe_minimum();
    if amount.amount() < minimum.amount() {
        return Err(invalid("amount", Problem::BelowMinimum { min: minimum }).into());
    }
    if amount.amount() > max_amount {
        return Err(invalid("amount", Problem::AboveMaximum { max: campaign.money(max_amount) }).into());
    }
    let team = match id_field("team", team)? {
        Some(id) => Some(store::team(db, campaign.id, id).await?),
        None => None,
    };
    let reward = match id_field("reward", reward)? {
        Some(id) => Some(store::reward(db, campaign.id, id).await?),
        None => None,
    };
    if let Some(reward) = &reward {
        if reward.team_id.is_some() && reward.team_id != team.as_ref().map(|t| t.id) {
            return Err(CampaignError::RewardUnavailable);
        }
        // A pledge keeping the reward it holds does not need another unit.
        let keeps = held_reward == Some(reward.id);
        if reward.remaining() == Some(0) && !keeps {
            return Err(CampaignError::SoldOut);
        }
        let in_window = reward.available_from.is_none_or(|from| now >= from)
            && reward.available_until.is_none_or(|until| now < until);
        // A retired reward is kept by the pledges that hold it, never taken anew.
        if (!in_window || reward.is_retired()) && !keeps {
            return Err(CampaignError::RewardUnavailable);
        }
        if amount.amount() < reward.min_amount {
            return Err(invalid("amount", Problem::BelowMinimum { min: campaign.money(reward.min_amount) }).into());
        }
    }
    Ok((team, reward, amount))
}

pub(crate) async fn check(
    db: &Db,
    campaign: &Campaign,
    form: &PledgeForm,
    max_amount: i64,
    now: Timestamp,
) -> Result<(String, Checked), CampaignError> {
    let email = model::email("email", &form.email)?;
    let anonymous = form.anonymous.as_deref().is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    let display_name = model::text("display_name", &form.display_name, !anonymous, MAX_NAME)?;
    let message = model::text("message", &form.message, false, MAX_MESSAGE)?;
    let (team, reward, amount) = check_choice(
        db,
        campaign,
        Choice { team: &form.team, reward: &form.reward, amount: &form.amount },
        max_amount,
        now,
        None,
    )
    .await?;
    Ok((email, Checked { team, reward, amount, display_name, anonymous, message }))
}

/// Takes one unit of a reward, or refuses if none is left. One statement,
/// so concurrent pledges can never oversell.
pub(crate) async fn claim_reward(tx: &mut Tx, reward_id: i64) -> Result<(), CampaignError> {
    let sql = "UPDATE campaign_rewards SET claimed = claimed + 1
               WHERE id = $1 AND (quantity IS NULL OR claimed < quantity) AND retired_at IS NULL";
    let n = on_tx!(tx, c => sqlx::query(sql).bind(reward_id).execute(c).await?.rows_affected());
    if n == 0 { Err(CampaignError::SoldOut) } else { Ok(()) }
}

pub(crate) async fn release_reward(tx: &mut Tx, reward_id: i64) -> Result<(), CampaignError> {
    let sql = "UPDATE campaign_rewards SET claimed = claimed - 1 WHERE id = $1 AND claimed > 0";
    on_tx!(tx, c => sqlx::query(sql).bind(reward_id).execute(c).await?.rows_affected());
    Ok(())
}

/// Starts a pledge: checks the form, claims the reward, stores the pledge
/// as `pending`, and opens a Checkout session for it. If the gateway fails
/// the pledge is expired and its reward released: nothing is left held.
pub async fn start(
    db: &Db,
    gateway: &dyn PaymentGateway,
    site: &Site,
    slug: &str,
    form: &PledgeForm,
    locale: Locale,
) -> Result<Started, CampaignError> {
    let campaign = store::campaign_by_slug(db, slug).await?;
    let now = Timestamp::now();
    if !campaign.is_open_at(now) {
        return Err(CampaignError::NotOpen);
    }
    let (email, checked) = check(db, &campaign, form, site.max_pledge, now).await?;
    let public_id = new_public_id();

    let mut tx = db.begin().await?;
    if let Some(reward) = &checked.reward {
        claim_reward(&mut tx, reward.id).await?;
    }
    let sql = "INSERT INTO pledges (public_id, campaign_id, team_id, reward_id, amount, currency, email, display_name,
                   anonymous, message, locale, status, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $12)";
    on_tx!(&mut tx, c => sqlx::query(sql)
        .bind(&public_id).bind(campaign.id).bind(checked.team.as_ref().map(|t| t.id))
        .bind(checked.reward.as_ref().map(|r| r.id)).bind(checked.amount.amount()).bind(campaign.currency.code())
        .bind(&email).bind(&checked.display_name).bind(checked.anonymous).bind(&checked.message)
        .bind(locale.as_str()).bind(now)
        .execute(c).await?.rows_affected());
    // A Checkout session left unfinished is closed after a day, giving back
    // the reward unit it holds.
    let expiry = NewJob {
        kind: EXPIRE_JOB,
        payload: serde_json::json!({ "pledge": public_id }),
        run_at: now.saturating_add(PENDING_FOR),
        max_attempts: 20,
    };
    jobs::enqueue(&mut tx, &expiry).await?;
    tx.commit().await?;

    let target = match &checked.team {
        Some(team) => team.name(locale).to_owned(),
        None => campaign.title(locale).to_owned(),
    };
    let request = CheckoutRequest {
        mode: match campaign.funding_model {
            FundingModel::AllOrNothing => CheckoutMode::Setup,
            FundingModel::KeepItAll => CheckoutMode::Payment { konbini: true },
        },
        amount: checked.amount,
        description: format!("{} — {target}", campaign.title(locale)),
        email: email.clone(),
        locale,
        kind: "pledge",
        reference: public_id.clone(),
        success_url: format!("{}/c/{}/thanks/{public_id}", site.base_url, campaign.slug),
        cancel_url: format!("{}/c/{}/pledge?cancelled={public_id}", site.base_url, campaign.slug),
        idempotency_key: format!("pledge:{public_id}:checkout"),
    };
    match gateway.create_checkout(&request).await {
        Ok(session) => {
            let sql = "UPDATE pledges SET checkout_session_id = $1, updated_at = $2 WHERE public_id = $3";
            let mut tx = db.begin().await?;
            on_tx!(&mut tx, c => sqlx::query(sql).bind(&session.id).bind(Timestamp::now()).bind(&public_id)
                .execute(c).await?.rows_affected());
            tx.commit().await?;
            Ok(Started { pledge: public_id, checkout_url: session.url })
        }
        Err(e) => {
            tracing::warn!(pledge = %public_id, error = %e, "could not open Checkout; pledge expired");
            let mut tx = db.begin().await?;
            if let Some(pledge) = store::pledge_in(&mut tx, &public_id).await? {
                change_status(&mut tx, &pledge, PledgeStatus::Expired).await?;
            }
            tx.commit().await?;
            Err(CampaignError::Gateway(e))
        }
    }
}

/// Moves a pledge to `to` if it is still in the state it was read in, and
/// keeps everything derived from it right in the same transaction: the
/// campaign's and team's totals and backer counts, and the reward's claimed
/// count. Returns false (and changes nothing) if another change won.
pub async fn change_status(tx: &mut Tx, pledge: &Pledge, to: PledgeStatus) -> Result<bool, CampaignError> {
    let from = pledge.status;
    if from == to {
        return Ok(false);
    }
    let now = Timestamp::now();
    let sql = "UPDATE pledges SET status = $1, updated_at = $2,
                   committed_at = CASE WHEN committed_at IS NULL AND $1 IN ('committed', 'collected')
                                       THEN $2 ELSE committed_at END,
                   collected_at = CASE WHEN $1 = 'collected' AND collected_at IS NULL THEN $2 ELSE collected_at END
               WHERE id = $3 AND status = $4";
    let n = on_tx!(tx, c => sqlx::query(sql).bind(to.as_str()).bind(now).bind(pledge.id).bind(from.as_str())
        .execute(c).await?.rows_affected());
    if n == 0 {
        return Ok(false);
    }
    let before = from.contribution(pledge.amount, pledge.amount_refunded);
    let after = to.contribution(pledge.amount, pledge.amount_refunded);
    add_to_totals(tx, pledge.campaign_id, pledge.team_id, sub(after, before)).await?;
    if let Some(reward) = pledge.reward_id
        && from.holds_reward()
        && !to.holds_reward()
    {
        release_reward(tx, reward).await?;
    }
    Ok(true)
}

pub(crate) fn sub(a: (i64, i64, i64), b: (i64, i64, i64)) -> (i64, i64, i64) {
    (a.0 - b.0, a.1 - b.1, a.2 - b.2)
}

/// Adds (pledged, collected, backers) deltas to a campaign's aggregates and
/// to its team's, or its pool's when the pledge has no team.
pub(crate) async fn add_to_totals(
    tx: &mut Tx,
    campaign_id: i64,
    team_id: Option<i64>,
    (pledged, collected, backers): (i64, i64, i64),
) -> Result<(), CampaignError> {
    if (pledged, collected, backers) == (0, 0, 0) {
        return Ok(());
    }
    let pool = i64::from(team_id.is_none());
    let sql = "UPDATE campaigns SET pledged = pledged + $1, collected = collected + $2, backers = backers + $3,
                   pool_pledged = pool_pledged + $4, pool_collected = pool_collected + $5
               WHERE id = $6";
    on_tx!(tx, c => sqlx::query(sql).bind(pledged).bind(collected).bind(backers).bind(pledged * pool)
        .bind(collected * pool).bind(campaign_id).execute(c).await?.rows_affected());
    if let Some(team) = team_id {
        let sql = "UPDATE campaign_teams SET pledged = pledged + $1, collected = collected + $2,
                       backers = backers + $3 WHERE id = $4";
        on_tx!(tx, c => sqlx::query(sql).bind(pledged).bind(collected).bind(backers).bind(team)
            .execute(c).await?.rows_affected());
    }
    Ok(())
}

/// Queues an email to a pledge's supporter, once per `key`.
pub(crate) async fn email_supporter(
    tx: &mut Tx,
    site: &Site,
    pledge: &Pledge,
    key: &str,
    template: EmailTemplate,
) -> Result<(), CampaignError> {
    let Ok(to) = EmailAddress::parse(&pledge.email) else {
        tracing::warn!(pledge = %pledge.public_id, "pledge has an unusable email address; no email sent");
        return Ok(());
    };
    let name = (!pledge.anonymous && !pledge.display_name.is_empty()).then(|| pledge.display_name.clone());
    let email = NewEmail {
        key: format!("pledge:{}:{key}", pledge.public_id),
        to,
        to_name: name.filter(|n| kanpa_messaging::email::header_safe(n).is_ok()),
        locale: pledge.locale,
        template,
    };
    outbox::enqueue(tx, &email, &site.mail_domain).await.map_err(|e| match e {
        outbox::OutboxError::Database(e) => CampaignError::Database(e),
        outbox::OutboxError::Email(e) => CampaignError::Database(sqlx::Error::Protocol(e.to_string())),
    })?;
    Ok(())
}

/// What the supporter is told when their pledge is committed.
pub(crate) async fn confirmation(
    tx: &mut Tx,
    site: &Site,
    campaign: &Campaign,
    pledge: &Pledge,
    timing: PledgeTiming,
) -> Result<(), CampaignError> {
    let locale = pledge.locale;
    let team = crate::target_name(tx, campaign, pledge.team_id, locale).await?;
    let reward = match pledge.reward_id {
        Some(id) => {
            let title: Option<(String, String)> = on_tx!(tx, c => sqlx::query_as(
                "SELECT title_ja, title_en FROM campaign_rewards WHERE id = $1").bind(id).fetch_optional(c).await?);
            title.map(|(ja, en)| model::pick(locale, &ja, &en).to_owned())
        }
        None => None,
    };
    let template = EmailTemplate::PledgeConfirmed {
        campaign: campaign.title(locale).to_owned(),
        amount: money_text(pledge.money(), locale),
        team,
        reward,
        timing,
        deadline: crate::local_time(campaign, campaign.deadline, locale),
        manage_link: site.manage_link(),
    };
    email_supporter(tx, site, pledge, "confirmed", template).await
}

/// Closes a pledge's Checkout session still unfinished after a day and
/// expires the pledge, releasing its reward. A session the supporter
/// completed meanwhile is left to its events.
pub struct ExpirePending {
    pub gateway: std::sync::Arc<dyn PaymentGateway>,
}

#[async_trait::async_trait]
impl kanpa_messaging::jobs::JobHandler for ExpirePending {
    fn retry_policy(&self) -> kanpa_messaging::jobs::RetryPolicy {
        kanpa_messaging::jobs::RetryPolicy {
            base: std::time::Duration::from_secs(60),
            cap: std::time::Duration::from_secs(3600),
            max_attempts: 20,
        }
    }

    async fn run(
        &self,
        db: &Db,
        job: &kanpa_messaging::jobs::ClaimedJob,
    ) -> Result<Tx, kanpa_messaging::jobs::JobFailure> {
        use kanpa_messaging::jobs::JobFailure;
        let public_id = job.payload["pledge"].as_str().ok_or_else(|| JobFailure::GiveUp("no pledge".into()))?;
        let pledge = store::pledge_by_public_id(db, public_id).await.map_err(|e| JobFailure::Retry(e.to_string()))?;
        if pledge.status != PledgeStatus::Pending {
            return Ok(db.begin().await?);
        }
        if let Some(session) = &pledge.checkout_session_id {
            let state = self.gateway.expire_checkout(session).await.map_err(|e| JobFailure::Retry(e.to_string()))?;
            if state == kanpa_payments::SessionState::Complete {
                return Ok(db.begin().await?);
            }
        }
        let mut tx = db.begin().await?;
        change_status(&mut tx, &pledge, PledgeStatus::Expired).await.map_err(|e| JobFailure::Retry(e.to_string()))?;
        Ok(tx)
    }
}
