//! Moving a tier's patrons onto its current price. A new price applies to
//! new patrons only; existing ones keep theirs until the organiser moves
//! them. Each subscription still on an older price of the tier changes
//! price at the payment provider from its next renewal (no proration), and
//! the patron is told the new amount and from when.
//!
//! Rerunnable: a membership already on the current price is left alone, and
//! each move's gateway request carries a key made of the membership and the
//! price, so a run that stopped half-way (the provider down, a crash between
//! the provider's answer and our write) is finished by running it again.

use kanpa_ledger::{Db, Money, Timestamp, on_db, on_tx};
use kanpa_messaging::email::EmailTemplate;
use kanpa_payments::{GatewayError, PaymentGateway, SubscriptionAction};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::error::PatronError;
use crate::events::{email_patron, local_date};
use crate::model::{Membership, MembershipStatus, Salon};
use crate::store::{MEMBERSHIP_COLUMNS, MembershipRow};
use crate::{Site, join, store};

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Repriced {
    pub tier: String,
    /// The tier's current price, which the moved patrons now have.
    pub price: String,
    pub amount: Money,
    /// Moved by this run.
    pub moved: usize,
    /// Already on the current price.
    pub already_current: usize,
    /// Left alone because they end at the close of their period.
    pub canceling: usize,
}

/// Whether a membership's subscription is one to move: it still renews.
pub fn renews(status: MembershipStatus) -> bool {
    matches!(status, MembershipStatus::Active | MembershipStatus::PastDue | MembershipStatus::Paused)
}

/// Moves every renewing membership of a tier still on an older price onto
/// the tier's current price, from each one's next renewal.
pub async fn move_to_current_price(
    db: &Db,
    gateway: &dyn PaymentGateway,
    site: &Site,
    salon: &Salon,
    tier_slug: &str,
) -> Result<Repriced, PatronError> {
    let tier = store::tier_by_slug(db, salon.id, tier_slug.trim()).await?;
    let tier = join::sync_tier(db, gateway, salon, &tier).await?;
    let price = tier
        .stripe_price_id
        .clone()
        .ok_or_else(|| GatewayError::Transient("the tier's price changed while it was being created".into()))?;
    let sql = format!(
        "SELECT {MEMBERSHIP_COLUMNS} FROM memberships m JOIN salons s ON s.id = m.salon_id
         WHERE m.tier_id = $1 AND m.stripe_subscription_id IS NOT NULL ORDER BY m.id"
    );
    let rows: Vec<MembershipRow> =
        on_db!(db, p => sqlx::query_as(AssertSqlSafe(sql.clone())).bind(tier.id).fetch_all(p).await?);
    let memberships = rows.into_iter().map(Membership::try_from).collect::<Result<Vec<_>, _>>()?;
    let mut report = Repriced {
        tier: tier.slug.clone(),
        price: price.clone(),
        amount: tier.price(),
        moved: 0,
        already_current: 0,
        canceling: 0,
    };
    for m in memberships {
        if m.status == MembershipStatus::Canceling {
            report.canceling += 1;
            continue;
        }
        if !renews(m.status) {
            continue;
        }
        if m.stripe_price_id.as_deref() == Some(price.as_str()) {
            report.already_current += 1;
            continue;
        }
        let Some(subscription) = m.stripe_subscription_id.as_deref() else { continue };
        let action = SubscriptionAction::ChangePrice { price: price.clone(), prorate_now: false };
        let key = format!("membership:{}:reprice:{price}", m.public_id);
        gateway.change_subscription(subscription, &action, &key).await?;
        let mut tx = db.begin().await?;
        let sql = "UPDATE memberships SET amount = $1, stripe_price_id = $2, updated_at = $3
                   WHERE id = $4 AND tier_id = $5";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(tier.monthly_price).bind(&price).bind(Timestamp::now())
            .bind(m.id).bind(tier.id).execute(c).await?.rows_affected());
        let locale = m.locale;
        let template = EmailTemplate::MembershipPriceChanged {
            salon: salon.name(locale).to_owned(),
            tier: tier.name(locale).to_owned(),
            old_amount: m.money().format(locale),
            new_amount: tier.price().format(locale),
            starts_on: match m.current_period_end {
                Some(end) => local_date(end, locale),
                None => match locale {
                    kanpa_ledger::Locale::Ja => "次回の更新日".to_owned(),
                    kanpa_ledger::Locale::En => "your next renewal".to_owned(),
                },
            },
            manage_link: site.manage_link(),
        };
        // Keyed by the price: a rerun, or the subscription's own event having
        // moved the row first, never tells the patron twice.
        email_patron(&mut tx, site, &m, &format!("price:{price}"), template).await?;
        tx.commit().await?;
        report.moved += 1;
    }
    Ok(report)
}
