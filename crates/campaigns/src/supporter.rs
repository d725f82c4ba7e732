//! Supporters manage their pledges: change the amount, team or reward, or
//! cancel, until the deadline of an all-or-nothing drive; pay one whose
//! deadline charge failed. Signing in (the emailed single-use link and the
//! session) is `kanpa_messaging::signin`, shared with patrons.

use kanpa_ledger::{Db, Locale, Timestamp, on_db, on_tx};
use kanpa_payments::{CheckoutMode, CheckoutRequest, CheckoutSession, PaymentGateway, SessionState};
use serde::Deserialize;

use crate::error::CampaignError;
use crate::model::{FundingModel, Pledge, PledgeStatus};
use crate::pledge::{Choice, add_to_totals, check_choice, claim_reward, release_reward, sub};
use crate::{Site, store};

/// A pledge of this supporter; another's is not found.
pub async fn own_pledge(db: &Db, email: &str, public_id: &str) -> Result<Pledge, CampaignError> {
    let pledge = store::pledge_by_public_id(db, public_id).await?;
    if !pledge.email.eq_ignore_ascii_case(email) {
        return Err(CampaignError::NotFound("pledge"));
    }
    Ok(pledge)
}

/// Whether a supporter may still change or cancel a pledge.
pub async fn is_changeable(db: &Db, pledge: &Pledge) -> Result<bool, CampaignError> {
    let campaign = store::campaign_by_id(db, pledge.campaign_id).await?;
    Ok(pledge.status == PledgeStatus::Committed
        && campaign.funding_model == FundingModel::AllOrNothing
        && campaign.is_open_at(Timestamp::now()))
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    pub amount: String,
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub reward: String,
}

/// Changes a committed all-or-nothing pledge before the deadline. The new
/// reward is claimed before the old one is released, in one transaction.
pub async fn change(
    db: &Db,
    site: &Site,
    email: &str,
    public_id: &str,
    form: &ChangeForm,
) -> Result<Pledge, CampaignError> {
    let pledge = own_pledge(db, email, public_id).await?;
    if !is_changeable(db, &pledge).await? {
        return Err(CampaignError::PledgeLocked);
    }
    let campaign = store::campaign_by_id(db, pledge.campaign_id).await?;
    let choice = Choice { team: &form.team, reward: &form.reward, amount: &form.amount };
    let (team, reward, amount) =
        check_choice(db, &campaign, choice, site.max_pledge, Timestamp::now(), pledge.reward_id).await?;
    let team_id = team.map(|t| t.id);
    let reward_id = reward.map(|r| r.id);
    let mut tx = db.begin().await?;
    if reward_id != pledge.reward_id {
        if let Some(new) = reward_id {
            claim_reward(&mut tx, new).await?;
        }
        if let Some(old) = pledge.reward_id {
            release_reward(&mut tx, old).await?;
        }
    }
    let sql = "UPDATE pledges SET amount = $1, team_id = $2, reward_id = $3, updated_at = $4
               WHERE id = $5 AND status = 'committed'";
    let n = on_tx!(&mut tx, c => sqlx::query(sql).bind(amount.amount()).bind(team_id).bind(reward_id)
        .bind(Timestamp::now()).bind(pledge.id).execute(c).await?.rows_affected());
    if n == 0 {
        return Err(CampaignError::PledgeLocked);
    }
    let old = pledge.status.contribution(pledge.amount, 0);
    add_to_totals(&mut tx, campaign.id, pledge.team_id, sub((0, 0, 0), old)).await?;
    add_to_totals(&mut tx, campaign.id, team_id, pledge.status.contribution(amount.amount(), 0)).await?;
    tx.commit().await?;
    store::pledge_by_public_id(db, public_id).await
}

/// Cancels a committed all-or-nothing pledge before the deadline.
pub async fn cancel(db: &Db, email: &str, public_id: &str) -> Result<(), CampaignError> {
    let pledge = own_pledge(db, email, public_id).await?;
    if !is_changeable(db, &pledge).await? {
        return Err(CampaignError::PledgeLocked);
    }
    let mut tx = db.begin().await?;
    if !crate::pledge::change_status(&mut tx, &pledge, PledgeStatus::Cancelled).await? {
        return Err(CampaignError::PledgeLocked);
    }
    tx.commit().await?;
    Ok(())
}

/// Opens a Checkout session to pay a pledge whose charge failed. Only one
/// is open at a time: the previous one is expired at the gateway first, and
/// if the supporter had completed it meanwhile, no new one is opened.
pub async fn pay_checkout(
    db: &Db,
    gateway: &dyn PaymentGateway,
    site: &Site,
    email: &str,
    public_id: &str,
    locale: Locale,
) -> Result<CheckoutSession, CampaignError> {
    let pledge = own_pledge(db, email, public_id).await?;
    if pledge.status != PledgeStatus::PaymentFailed {
        return Err(CampaignError::PledgeLocked);
    }
    if close_pay_checkout(db, gateway, pledge.id).await? == SessionState::Complete {
        return Err(CampaignError::PledgeLocked);
    }
    let mut tx = db.begin().await?;
    let sql = "UPDATE pledges SET pay_checkouts = pay_checkouts + 1 WHERE id = $1 AND status = 'payment_failed'
               RETURNING pay_checkouts";
    let n: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(pledge.id).fetch_optional(c).await?);
    let n = n.ok_or(CampaignError::PledgeLocked)?;
    tx.commit().await?;
    let campaign = store::campaign_by_id(db, pledge.campaign_id).await?;
    let target = match pledge.team_id {
        Some(team) => store::team(db, campaign.id, team).await?.name(locale).to_owned(),
        None => campaign.title(locale).to_owned(),
    };
    let request = CheckoutRequest {
        mode: CheckoutMode::Payment { konbini: false },
        amount: pledge.money(),
        description: format!("{} — {target}", campaign.title(locale)),
        email: pledge.email.clone(),
        locale,
        kind: "pledge",
        reference: pledge.public_id.clone(),
        success_url: format!("{}/c/{}/thanks/{}", site.base_url, campaign.slug, pledge.public_id),
        cancel_url: format!("{}/me", site.base_url),
        idempotency_key: format!("pledge:{}:pay:{n}", pledge.public_id),
    };
    let session = gateway.create_checkout(&request).await?;
    let mut tx = db.begin().await?;
    let sql = "UPDATE pledges SET pay_session_id = $1 WHERE id = $2";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(&session.id).bind(pledge.id).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(session)
}

/// Expires the pledge's open pay-link Checkout session, if any. `Complete`
/// means the supporter paid through it: its events will record the money.
pub(crate) async fn close_pay_checkout(
    db: &Db,
    gateway: &dyn PaymentGateway,
    pledge_id: i64,
) -> Result<SessionState, CampaignError> {
    let sql = "SELECT pay_session_id FROM pledges WHERE id = $1";
    let open: Option<Option<String>> =
        on_db!(db, p => sqlx::query_scalar(sql).bind(pledge_id).fetch_optional(p).await?);
    let Some(session) = open.flatten() else { return Ok(SessionState::Expired) };
    let state = gateway.expire_checkout(&session).await?;
    if state == SessionState::Expired {
        let mut tx = db.begin().await?;
        let sql = "UPDATE pledges SET pay_session_id = NULL WHERE id = $1 AND pay_session_id = $2";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(pledge_id).bind(&session).execute(c).await?.rows_affected());
        tx.commit().await?;
    }
    Ok(state)
}
