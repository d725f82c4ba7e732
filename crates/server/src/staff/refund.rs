//! Refunding a card payment from the console or the API: decide whether the
//! amount may be refunded (plain function), record the request under its
//! key before the payment provider is called (a button pressed twice asks
//! once), then ask the provider with an idempotency key derived from the
//! request. The books, the pledge and the supporter's email follow from
//! `charge.refunded` through the existing event handlers, exactly as for a
//! refund made in the provider's dashboard.

use kanpa_campaigns::{Pledge, PledgeStatus};
use kanpa_ledger::{Currency, Db, Money, OrgId, Timestamp, on_db, on_tx};
use kanpa_patrons::store::RefundableInvoice;
use kanpa_payments::gateway::{GatewayError, PaymentGateway, RefundRequest, Refunded};
use sqlx::AssertSqlSafe;

/// Why a refund cannot be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundProblem {
    /// Not paid by card through the provider (cash, bank transfer, unpaid).
    NotACardPayment,
    NotPositive,
    /// More than what is left to refund.
    TooMuch {
        left: Money,
    },
}

/// What is left to refund of a pledge, if it was paid by card.
pub fn refundable(pledge: &Pledge) -> Option<Money> {
    let paid = matches!(pledge.status, PledgeStatus::Collected | PledgeStatus::Refunded);
    (paid && pledge.payment_intent_id.is_some())
        .then(|| Money::new(pledge.amount - pledge.amount_refunded, pledge.currency))
}

/// Whether `amount` may be refunded of `pledge`.
pub fn check(pledge: &Pledge, amount: Money) -> Result<(), RefundProblem> {
    check_left(refundable(pledge), amount)
}

/// Whether `amount` may be refunded of a card payment with `left` still
/// refundable (`None`: not a card payment).
pub fn check_left(left: Option<Money>, amount: Money) -> Result<(), RefundProblem> {
    let left = left.ok_or(RefundProblem::NotACardPayment)?;
    if amount.amount() <= 0 {
        return Err(RefundProblem::NotPositive);
    }
    if amount.currency() != left.currency() || amount.amount() > left.amount() {
        return Err(RefundProblem::TooMuch { left });
    }
    Ok(())
}

/// What is left to refund of a membership invoice, if a card paid it.
pub fn invoice_refundable(invoice: &RefundableInvoice, currency: Currency) -> Option<Money> {
    let paid = invoice.status == "paid" && invoice.stripe_charge_id.is_some() && invoice.amount_paid > 0;
    (paid && invoice.stripe_payment_intent_id.is_some())
        .then(|| Money::new((invoice.amount_paid - invoice.amount_refunded).max(0), currency))
}

/// What a refund is of: each has its own request rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundOf {
    /// A pledge's row id (`staff_refunds`).
    Pledge(i64),
    /// A membership invoice's row id (`staff_invoice_refunds`).
    Invoice(i64),
}

/// A card payment to refund part of: what it is, the PaymentIntent that
/// paid it and what is left.
#[derive(Clone, Debug)]
pub struct Refundable {
    pub of: RefundOf,
    pub payment_intent: Option<String>,
    pub left: Option<Money>,
    /// Kanpa's name for what was paid for ("pledge", "membership").
    pub kind: &'static str,
    pub reference: String,
}

impl Refundable {
    pub fn pledge(pledge: &Pledge) -> Refundable {
        Refundable {
            of: RefundOf::Pledge(pledge.id),
            payment_intent: pledge.payment_intent_id.clone(),
            left: refundable(pledge),
            kind: "pledge",
            reference: pledge.public_id.clone(),
        }
    }

    pub fn invoice(invoice: &RefundableInvoice, currency: Currency) -> Refundable {
        Refundable {
            of: RefundOf::Invoice(invoice.id),
            payment_intent: invoice.stripe_payment_intent_id.clone(),
            left: invoice_refundable(invoice, currency),
            kind: "membership",
            reference: invoice.membership_public_id.clone(),
        }
    }
}

#[derive(Debug)]
pub enum RefundOutcome {
    /// The provider accepted it; the books follow from its event.
    Requested(Refunded),
    /// A request with this key was made already: nothing was sent again.
    AlreadyRequested,
    Refused(RefundProblem),
    /// The provider refused (or could not be reached); the request is
    /// marked failed and a new one may be made.
    ProviderFailed(GatewayError),
}

/// Refunds `amount` of `pledge` (of organisation `org`), requested by `by`
/// under `request_key`.
pub async fn refund_pledge(
    db: &Db,
    gateway: &dyn PaymentGateway,
    org: OrgId,
    pledge: &Pledge,
    amount: Money,
    request_key: &str,
    by: &str,
) -> Result<RefundOutcome, sqlx::Error> {
    refund(db, gateway, org, &Refundable::pledge(pledge), amount, request_key, by).await
}

/// Refunds `amount` of a card payment (of organisation `org`), requested by
/// `by` under `request_key`: checked against what is left, the request row
/// committed under its key, then at most one call to the provider.
pub async fn refund(
    db: &Db,
    gateway: &dyn PaymentGateway,
    org: OrgId,
    what: &Refundable,
    amount: Money,
    request_key: &str,
    by: &str,
) -> Result<RefundOutcome, sqlx::Error> {
    if let Err(problem) = check_left(what.left, amount) {
        return Ok(RefundOutcome::Refused(problem));
    }
    let Some(payment_intent) = what.payment_intent.clone() else {
        return Ok(RefundOutcome::Refused(RefundProblem::NotACardPayment));
    };
    // The two tables' keys never meet: an invoice's carry their own prefix.
    let (table, column, id, request_key) = match what.of {
        RefundOf::Pledge(id) => ("staff_refunds", "pledge_id", id, request_key.to_owned()),
        RefundOf::Invoice(id) => ("staff_invoice_refunds", "invoice_id", id, format!("invoice:{request_key}")),
    };
    let insert = format!(
        "INSERT INTO {table}
         (request_key, org_id, {column}, amount, currency, requested_by, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'requested', $7) ON CONFLICT (request_key) DO NOTHING"
    );
    let mut tx = db.begin().await?;
    let inserted = on_tx!(&mut tx, c => sqlx::query(AssertSqlSafe(insert.clone())).bind(&request_key).bind(org.0)
        .bind(id).bind(amount.amount()).bind(amount.currency().code()).bind(by).bind(Timestamp::now())
        .execute(c).await?.rows_affected());
    tx.commit().await?;
    if inserted == 0 {
        return Ok(RefundOutcome::AlreadyRequested);
    }
    let request = RefundRequest {
        payment_intent,
        amount,
        kind: what.kind,
        reference: what.reference.clone(),
        idempotency_key: format!("staff-refund:{request_key}"),
    };
    let result = gateway.refund(&request).await;
    let (status, refund_id, failure) = match &result {
        Ok(refunded) => ("succeeded", Some(refunded.id.clone()), None),
        Err(e) => ("failed", None, Some(e.to_string())),
    };
    let update = format!("UPDATE {table} SET status = $1, refund_id = $2, failure = $3 WHERE request_key = $4");
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query(AssertSqlSafe(update.clone())).bind(status).bind(refund_id).bind(failure)
        .bind(&request_key).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(match result {
        Ok(refunded) => RefundOutcome::Requested(refunded),
        Err(e) => RefundOutcome::ProviderFailed(e),
    })
}

/// A refund request as the console lists it.
#[derive(Clone, Debug)]
pub struct RefundRecord {
    pub amount: Money,
    pub requested_by: String,
    pub status: String,
    pub created_at: Timestamp,
}

/// The refunds asked for a pledge, oldest first.
pub async fn of_pledge(db: &Db, pledge: &Pledge) -> Result<Vec<RefundRecord>, sqlx::Error> {
    let sql = "SELECT amount, requested_by, status, created_at FROM staff_refunds
               WHERE pledge_id = $1 ORDER BY created_at";
    let rows: Vec<(i64, String, String, Timestamp)> =
        on_db!(db, p => sqlx::query_as(sql).bind(pledge.id).fetch_all(p).await?);
    Ok(rows
        .into_iter()
        .map(|(amount, requested_by, status, created_at)| RefundRecord {
            amount: Money::new(amount, pledge.currency),
            requested_by,
            status,
            created_at,
        })
        .collect())
}

/// The refunds asked for a membership invoice (its row id), oldest first.
pub async fn of_invoice(db: &Db, invoice_id: i64, currency: Currency) -> Result<Vec<RefundRecord>, sqlx::Error> {
    let sql = "SELECT amount, requested_by, status, created_at FROM staff_invoice_refunds
               WHERE invoice_id = $1 ORDER BY created_at";
    let rows: Vec<(i64, String, String, Timestamp)> =
        on_db!(db, p => sqlx::query_as(sql).bind(invoice_id).fetch_all(p).await?);
    Ok(rows
        .into_iter()
        .map(|(amount, requested_by, status, created_at)| RefundRecord {
            amount: Money::new(amount, currency),
            requested_by,
            status,
            created_at,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use kanpa_ledger::Locale;

    use super::*;

    fn pledge(status: PledgeStatus, amount: i64, refunded: i64, intent: Option<&str>) -> Pledge {
        Pledge {
            id: 1,
            public_id: "p".into(),
            campaign_id: 1,
            team_id: None,
            reward_id: None,
            amount,
            currency: Currency::Jpy,
            email: "a@example.jp".into(),
            display_name: String::new(),
            anonymous: false,
            message: String::new(),
            locale: Locale::Ja,
            status,
            checkout_session_id: None,
            customer_id: None,
            setup_intent_id: None,
            payment_method_id: None,
            payment_intent_id: intent.map(str::to_owned),
            charge_id: None,
            amount_refunded: refunded,
            failure_code: None,
            failed_at: None,
            created_at: Timestamp::now(),
            committed_at: None,
            collected_at: None,
        }
    }

    #[test]
    fn only_what_a_card_paid_and_is_not_refunded_yet_can_be_refunded() {
        let paid = pledge(PledgeStatus::Collected, 5000, 1000, Some("pi_1"));
        assert_eq!(check(&paid, Money::yen(4000)), Ok(()));
        assert_eq!(check(&paid, Money::yen(4001)), Err(RefundProblem::TooMuch { left: Money::yen(4000) }));
        assert_eq!(check(&paid, Money::yen(0)), Err(RefundProblem::NotPositive));
        let usd = Money::new(100, Currency::Usd);
        assert!(matches!(check(&paid, usd), Err(RefundProblem::TooMuch { .. })));
        let cash = pledge(PledgeStatus::Collected, 5000, 0, None);
        assert_eq!(check(&cash, Money::yen(1)), Err(RefundProblem::NotACardPayment));
        let committed = pledge(PledgeStatus::Committed, 5000, 0, Some("pi_1"));
        assert_eq!(check(&committed, Money::yen(1)), Err(RefundProblem::NotACardPayment));
        let all = pledge(PledgeStatus::Refunded, 5000, 5000, Some("pi_1"));
        assert_eq!(check(&all, Money::yen(1)), Err(RefundProblem::TooMuch { left: Money::yen(0) }));
    }
}
