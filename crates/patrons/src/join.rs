//! Joining a salon: a tier's Stripe price (created on first use, and anew
//! when its amount changes), the seat claim and the incomplete membership,
//! then Checkout in subscription mode. The membership becomes active when
//! the subscription's events arrive through the inbox.

use kanpa_ledger::{Db, Locale, Timestamp, on_db, on_tx};
use kanpa_payments::{CheckoutMode, CheckoutRequest, GatewayError, NewPrice, PaymentGateway, SessionState};
use rand::Rng;
use serde::Deserialize;

use crate::error::PatronError;
use crate::model::{self, Salon, SalonStatus, Tier, TierStatus};
use crate::{Site, store};

/// Makes sure a tier has a Stripe price for its current amount. The key of
/// each price names the tier and how many prices it had, so a retry after a
/// crash finds the same price, and a later change of amount makes a new one.
pub async fn sync_tier(db: &Db, gateway: &dyn PaymentGateway, salon: &Salon, tier: &Tier) -> Result<Tier, PatronError> {
    if tier.stripe_price_id.is_some() {
        return Ok(tier.clone());
    }
    let sql = "SELECT COUNT(*) FROM salon_tier_prices WHERE tier_id = $1";
    let n: i64 = on_db!(db, p => sqlx::query_scalar(sql).bind(tier.id).fetch_one(p).await?);
    let request = NewPrice {
        product: tier.stripe_product_id.clone(),
        product_name: format!("{} — {}", salon.name_ja, tier.name_ja),
        amount: tier.price(),
        kind: "tier",
        reference: format!("{}:{}", salon.slug, tier.slug),
        idempotency_key: format!("tier:{}:price:{n}:{}", tier.id, tier.monthly_price),
    };
    let ids = gateway.create_price(&request).await?;
    let mut tx = db.begin().await?;
    let sql = "INSERT INTO salon_tier_prices (tier_id, amount, stripe_price_id, created_at) VALUES ($1, $2, $3, $4)
               ON CONFLICT (stripe_price_id) DO NOTHING";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(tier.id).bind(tier.monthly_price).bind(&ids.price)
        .bind(Timestamp::now()).execute(c).await?.rows_affected());
    // Only if the amount is still the one priced: a change meanwhile cleared
    // the price and will be priced on its next use.
    let sql = "UPDATE salon_tiers SET stripe_product_id = $1, stripe_price_id = $2
               WHERE id = $3 AND monthly_price = $4 AND stripe_price_id IS NULL";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(&ids.product).bind(&ids.price).bind(tier.id)
        .bind(tier.monthly_price).execute(c).await?.rows_affected());
    let synced = store::tier_in(&mut tx, tier.salon_id, tier.id).await?;
    tx.commit().await?;
    Ok(synced)
}

/// The join form: a tier of the salon (by slug) and the patron's address.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JoinForm {
    #[serde(default)]
    pub tier: String,
    #[serde(default)]
    pub email: String,
}

/// A membership waiting at Checkout.
#[derive(Clone, Debug)]
pub struct Joined {
    pub membership: String,
    pub checkout_url: String,
}

fn public_id() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    format!("m_{}", hex::encode(bytes))
}

/// The first renewal of a salon billed on the 1st: midnight of the next 1st
/// in Japan (UTC+9); `None` when each patron renews on the day they joined.
pub fn billing_anchor(salon: &Salon, now: Timestamp) -> Option<Timestamp> {
    if salon.billing_anchor == model::BillingAnchor::StartDate {
        return None;
    }
    let jst = time::UtcOffset::from_hms(9, 0, 0).ok()?;
    let local = now.as_offset().to_offset(jst);
    let (year, month) = match local.month() {
        time::Month::December => (local.year() + 1, time::Month::January),
        m => (local.year(), m.next()),
    };
    let first = time::Date::from_calendar_date(year, month, 1).ok()?.midnight().assume_offset(jst);
    Timestamp::from_unix_micros((first.unix_timestamp_nanos() / 1_000) as i64)
}

/// Starts a membership: checks the salon, tier and address, claims a seat,
/// stores the membership `incomplete` and opens Checkout in subscription
/// mode. Refusals change nothing. A patron who left an earlier Checkout
/// unfinished may start again: that session is closed first.
pub async fn join(
    db: &Db,
    gateway: &dyn PaymentGateway,
    site: &Site,
    slug: &str,
    form: &JoinForm,
    locale: Locale,
) -> Result<Joined, PatronError> {
    let salon = store::salon_by_slug(db, slug).await?;
    if salon.status != SalonStatus::Open {
        return Err(PatronError::SalonState { status: salon.status });
    }
    let tier = store::tier_by_slug(db, salon.id, form.tier.trim()).await?;
    if tier.status == TierStatus::Retired {
        return Err(PatronError::TierRetired);
    }
    if tier.seats_left() == Some(0) {
        return Err(PatronError::TierFull);
    }
    let email = model::email("email", &form.email)?;
    close_unfinished(db, gateway, salon.id, &email).await?;
    let tier = sync_tier(db, gateway, &salon, &tier).await?;
    // Unpriced only if the organiser changed the amount while it was priced.
    let price = tier
        .stripe_price_id
        .clone()
        .ok_or_else(|| GatewayError::Transient("the tier's price changed while it was being created".into()))?;

    let id = public_id();
    let now = Timestamp::now();
    let mut tx = db.begin().await?;
    store::claim_seat(&mut tx, tier.id).await?;
    let sql = "INSERT INTO memberships (public_id, salon_id, tier_id, email, locale, amount, stripe_price_id, status,
                   created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 'incomplete', $8, $8)";
    let inserted = on_tx!(&mut tx, c => sqlx::query(sql).bind(&id).bind(salon.id).bind(tier.id).bind(&email)
        .bind(locale.as_str()).bind(tier.monthly_price).bind(&price).bind(now).execute(c).await.map(|r| r.rows_affected()));
    match inserted {
        Ok(_) => {}
        // The one-live-membership index: a concurrent join of the same address.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(PatronError::AlreadyMember),
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;

    let request = CheckoutRequest {
        mode: CheckoutMode::Subscription { price, anchor: billing_anchor(&salon, now) },
        amount: tier.price(),
        description: format!("{} — {}", salon.name(locale), tier.name(locale)),
        email: email.clone(),
        locale,
        kind: "membership",
        reference: id.clone(),
        success_url: format!("{}/s/{}/welcome/{id}", site.base_url, salon.slug),
        cancel_url: format!("{}/s/{}", site.base_url, salon.slug),
        idempotency_key: format!("membership:{id}:checkout"),
    };
    let session = match gateway.create_checkout(&request).await {
        Ok(session) => session,
        Err(e) => {
            end_unfinished(db, &id).await?;
            return Err(e.into());
        }
    };
    let mut tx = db.begin().await?;
    let sql = "UPDATE memberships SET checkout_session_id = $1 WHERE public_id = $2";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(&session.id).bind(&id).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(Joined { membership: id, checkout_url: session.url })
}

/// Refuses an address that already has a membership here, unless all it
/// has is an unfinished Checkout: that one is expired at the gateway and
/// ended (its seat given back). If the patron completed it meanwhile, they
/// are a member.
async fn close_unfinished(
    db: &Db,
    gateway: &dyn PaymentGateway,
    salon_id: i64,
    email: &str,
) -> Result<(), PatronError> {
    let sql = "SELECT public_id, status, checkout_session_id FROM memberships
               WHERE salon_id = $1 AND lower(email) = lower($2) AND status <> 'ended'";
    let live: Option<(String, String, Option<String>)> =
        on_db!(db, p => sqlx::query_as(sql).bind(salon_id).bind(email).fetch_optional(p).await?);
    let Some((id, status, session)) = live else { return Ok(()) };
    if status != "incomplete" {
        return Err(PatronError::AlreadyMember);
    }
    if let Some(session) = session
        && gateway.expire_checkout(&session).await? == SessionState::Complete
    {
        return Err(PatronError::AlreadyMember);
    }
    end_unfinished(db, &id).await
}

/// Ends a membership that never got past Checkout and gives its seat back.
async fn end_unfinished(db: &Db, public_id: &str) -> Result<(), PatronError> {
    let mut tx = db.begin().await?;
    let sql = "UPDATE memberships SET status = 'ended', ended_at = $1, updated_at = $1
               WHERE public_id = $2 AND status = 'incomplete' RETURNING tier_id";
    let tier: Option<i64> =
        on_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(Timestamp::now()).bind(public_id).fetch_optional(c).await?);
    if let Some(tier) = tier {
        store::release_seat(&mut tx, tier).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use kanpa_ledger::{AccountId, Currency};

    use super::*;
    use crate::model::{BillingAnchor, TierChange};

    fn salon(anchor: BillingAnchor) -> Salon {
        Salon {
            id: 1,
            org_id: 1,
            slug: "dr".into(),
            name_ja: "サロン".into(),
            name_en: String::new(),
            description_ja: String::new(),
            description_en: String::new(),
            currency: Currency::Jpy,
            billing_anchor: anchor,
            tier_change: TierChange::NextCycle,
            grace_days: 7,
            status: SalonStatus::Open,
            fund_account: AccountId(1),
            contact_email: "d@example.jp".into(),
        }
    }

    #[test]
    fn the_first_of_next_month_is_midnight_in_japan() {
        let at = |s: &str| {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
            Timestamp::from_unix_seconds(t.unix_timestamp()).unwrap()
        };
        assert_eq!(billing_anchor(&salon(BillingAnchor::StartDate), at("2026-04-15T10:00:00+09:00")), None);
        let first = salon(BillingAnchor::FirstOfMonth);
        assert_eq!(billing_anchor(&first, at("2026-04-15T10:00:00+09:00")), Some(at("2026-05-01T00:00:00+09:00")));
        // 23:30 UTC on 31 December is already 1 January in Japan.
        assert_eq!(billing_anchor(&first, at("2026-12-31T23:30:00Z")), Some(at("2027-02-01T00:00:00+09:00")));
        assert_eq!(billing_anchor(&first, at("2026-12-15T12:00:00+09:00")), Some(at("2027-01-01T00:00:00+09:00")));
    }
}
