//! What a signed-in patron can do to their own membership: change tier (by
//! the salon's rule), cancel at the end of the paid period and take that
//! back, pause for one to three months and resume early, and update their
//! card in the payment provider's billing portal.
//!
//! Each asks the gateway; the new state arrives as Stripe events through
//! the inbox, like every other change. Only a tier change is also written
//! here, because the tier (and its seat) is kanpa's, not Stripe's.

use kanpa_ledger::{Db, Timestamp, on_tx};
use kanpa_payments::{PaymentGateway, SubscriptionAction};
use rand::Rng;

use crate::error::PatronError;
use crate::model::{self, Membership, MembershipStatus, Problem, TierChange, TierStatus, invalid};
use crate::{Site, store};

/// A membership of this patron; another's is not found, exactly like one
/// that does not exist.
pub async fn own_membership(db: &Db, email: &str, public_id: &str) -> Result<Membership, PatronError> {
    let membership = store::membership_by_public_id(db, public_id).await?;
    if !membership.email.eq_ignore_ascii_case(email.trim()) {
        return Err(PatronError::NotFound("membership"));
    }
    Ok(membership)
}

fn subscription(m: &Membership) -> Result<&str, PatronError> {
    m.stripe_subscription_id.as_deref().ok_or(PatronError::MembershipState { status: m.status })
}

fn require(m: &Membership, allowed: &[MembershipStatus]) -> Result<(), PatronError> {
    if allowed.contains(&m.status) { Ok(()) } else { Err(PatronError::MembershipState { status: m.status }) }
}

/// One key per request a patron makes; the adapter reuses it for its own
/// retries, so a retried request is applied once.
fn request_key(m: &Membership, what: &str) -> String {
    let nonce: [u8; 8] = rand::rng().random();
    format!("membership:{}:{what}:{}", m.public_id, hex::encode(nonce))
}

/// Ends the membership when the paid period ends; access continues until then.
pub async fn cancel_at_period_end(
    db: &Db,
    gateway: &dyn PaymentGateway,
    email: &str,
    public_id: &str,
) -> Result<Membership, PatronError> {
    let m = own_membership(db, email, public_id).await?;
    require(&m, &[MembershipStatus::Active, MembershipStatus::PastDue])?;
    let action = SubscriptionAction::CancelAtPeriodEnd(true);
    gateway.change_subscription(subscription(&m)?, &action, &request_key(&m, "cancel")).await?;
    Ok(m)
}

/// Takes back a cancellation at period end.
pub async fn undo_cancel(
    db: &Db,
    gateway: &dyn PaymentGateway,
    email: &str,
    public_id: &str,
) -> Result<Membership, PatronError> {
    let m = own_membership(db, email, public_id).await?;
    require(&m, &[MembershipStatus::Canceling])?;
    let action = SubscriptionAction::CancelAtPeriodEnd(false);
    gateway.change_subscription(subscription(&m)?, &action, &request_key(&m, "uncancel")).await?;
    Ok(m)
}

/// When a pause of `months` starting at `now` ends: the same day of the
/// month, `months` later (the month's last day if it is shorter).
pub fn pause_end(now: Timestamp, months: u8) -> Timestamp {
    let t = now.as_offset();
    let mut month = t.month();
    let mut year = t.year();
    for _ in 0..months {
        if month == time::Month::December {
            year += 1;
        }
        month = month.next();
    }
    let day = t.day().min(month.length(year));
    let date = time::Date::from_calendar_date(year, month, day).unwrap_or(t.date());
    let later = t.replace_date(date);
    Timestamp::from_unix_micros((later.unix_timestamp_nanos() / 1_000) as i64).unwrap_or(now)
}

/// Pauses collection for one to three months; nothing is charged meanwhile.
pub async fn pause(
    db: &Db,
    gateway: &dyn PaymentGateway,
    email: &str,
    public_id: &str,
    months: i64,
) -> Result<Membership, PatronError> {
    let months = model::in_range("months", months, 1, 3)?;
    let m = own_membership(db, email, public_id).await?;
    require(&m, &[MembershipStatus::Active])?;
    let until = pause_end(Timestamp::now(), months as u8);
    gateway
        .change_subscription(subscription(&m)?, &SubscriptionAction::Pause { until }, &request_key(&m, "pause"))
        .await?;
    Ok(m)
}

/// Ends a pause early.
pub async fn resume(
    db: &Db,
    gateway: &dyn PaymentGateway,
    email: &str,
    public_id: &str,
) -> Result<Membership, PatronError> {
    let m = own_membership(db, email, public_id).await?;
    require(&m, &[MembershipStatus::Paused])?;
    gateway.change_subscription(subscription(&m)?, &SubscriptionAction::Resume, &request_key(&m, "resume")).await?;
    Ok(m)
}

/// Moves an active membership to another tier of its salon. The new tier's
/// seat is claimed first and the old one given back only once the gateway
/// has agreed; under `prorate_now` the difference is invoiced at once,
/// under `next_cycle` the new price is charged from the next renewal.
pub async fn change_tier(
    db: &Db,
    gateway: &dyn PaymentGateway,
    email: &str,
    public_id: &str,
    tier_slug: &str,
) -> Result<Membership, PatronError> {
    let m = own_membership(db, email, public_id).await?;
    require(&m, &[MembershipStatus::Active])?;
    let salon = store::salon_by_id(db, m.salon_id).await?;
    let tier = store::tier_by_slug(db, salon.id, tier_slug.trim()).await?;
    if tier.id == m.tier_id {
        return Err(invalid("tier", Problem::Choice).into());
    }
    if tier.status == TierStatus::Retired {
        return Err(PatronError::TierRetired);
    }
    let tier = crate::join::sync_tier(db, gateway, &salon, &tier).await?;
    let price = tier.stripe_price_id.clone().ok_or(PatronError::TierRetired)?;
    let sub = subscription(&m)?.to_owned();
    let mut tx = db.begin().await?;
    store::claim_seat(&mut tx, tier.id).await?;
    tx.commit().await?;
    let action = SubscriptionAction::ChangePrice {
        price: price.clone(),
        prorate_now: salon.tier_change == TierChange::ProrateNow,
    };
    if let Err(e) = gateway.change_subscription(&sub, &action, &request_key(&m, "tier")).await {
        let mut tx = db.begin().await?;
        store::release_seat(&mut tx, tier.id).await?;
        tx.commit().await?;
        return Err(e.into());
    }
    let mut tx = db.begin().await?;
    let sql = "UPDATE memberships SET tier_id = $1, amount = $2, stripe_price_id = $3, updated_at = $4
               WHERE id = $5 AND tier_id = $6";
    let n = on_tx!(&mut tx, c => sqlx::query(sql).bind(tier.id).bind(tier.monthly_price).bind(&price)
        .bind(Timestamp::now()).bind(m.id).bind(m.tier_id).execute(c).await?.rows_affected());
    // Whichever way it went, exactly one of the two seats stays held.
    store::release_seat(&mut tx, if n == 1 { m.tier_id } else { tier.id }).await?;
    tx.commit().await?;
    store::membership_by_public_id(db, public_id).await
}

/// A billing portal session where the patron updates their card; returns
/// its URL. They come back to their page.
pub async fn card_update_link(
    db: &Db,
    gateway: &dyn PaymentGateway,
    site: &Site,
    email: &str,
    public_id: &str,
) -> Result<String, PatronError> {
    let m = own_membership(db, email, public_id).await?;
    let customer = m.stripe_customer_id.as_deref().ok_or(PatronError::MembershipState { status: m.status })?;
    Ok(gateway.billing_portal(customer, &site.manage_link()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        Timestamp::from_unix_seconds(t.unix_timestamp()).unwrap()
    }

    #[test]
    fn a_pause_ends_the_same_day_months_later_or_at_the_months_end() {
        assert_eq!(pause_end(at("2026-04-15T10:00:00Z"), 1), at("2026-05-15T10:00:00Z"));
        assert_eq!(pause_end(at("2026-11-30T10:00:00Z"), 3), at("2027-02-28T10:00:00Z"));
        assert_eq!(pause_end(at("2026-01-31T00:00:00Z"), 1), at("2026-02-28T00:00:00Z"));
        assert_eq!(pause_end(at("2026-12-10T00:00:00Z"), 2), at("2027-02-10T00:00:00Z"));
    }
}
