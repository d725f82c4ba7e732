//! Stripe events that move pledges along, and the job that records money
//! taken. Events are the source of truth: the thank-you page only reads.
//!
//! Every handler runs inside the inbox's transaction and is idempotent: a
//! duplicated event changes nothing, and an event that no longer applies
//! (the pledge has moved on) is skipped. Ledger entries carry keys derived
//! from Stripe ids, so the same money can never be posted twice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kanpa_ledger::chart::Holding;
use kanpa_ledger::store as ledger;
use kanpa_ledger::{Db, EntryHeader, IdempotencyKey, Locale, NewEntry, NewPosting, OrgId, SourceRef, Tx, on_tx};
use kanpa_messaging::email::{EmailTemplate, PledgeTiming};
use kanpa_messaging::inbox::{EventHandlers, Handled, StoredEvent, StripeEventHandler};
use kanpa_messaging::jobs::{self, ClaimedJob, JobFailure, JobHandler, NewJob, RetryPolicy};
use kanpa_payments::receipt::{self, LineKind, NewReceipt, PriceBasis, Receipt, ReceiptLine, ReceiptSource, TaxRate};
use kanpa_payments::stripe_gateway::kanpa_reference;
use kanpa_payments::{Collected, PaymentGateway};
use serde_json::{Value, json};

use crate::error::CampaignError;
use crate::model::{CampaignStatus, Pledge, PledgeStatus};
use crate::pledge::{change_status, confirmation, email_supporter};
use crate::{Site, money_text, pool, store};

/// The event types this module handles.
pub const EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "setup_intent.succeeded",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
];

pub const COLLECT_JOB: &str = "pledge.collect";

/// Registers the pledge handlers for every type in [`EVENT_TYPES`].
pub fn register(handlers: &mut EventHandlers, site: Site) {
    let handler = Arc::new(PledgeEvents { site });
    for event_type in EVENT_TYPES {
        handlers.add(*event_type, handler.clone());
    }
}

pub struct PledgeEvents {
    site: Site,
}

fn text(object: &Value, key: &str) -> Option<String> {
    match &object[key] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The pledge an object is about: by our metadata, the Checkout session's
/// client reference, or a Stripe id stored on the pledge.
async fn pledge_of(tx: &mut Tx, object: &Value) -> Result<Option<Pledge>, CampaignError> {
    if let Some((kind, reference)) = kanpa_reference(object) {
        return if kind == "pledge" { store::pledge_in(tx, &reference).await } else { Ok(None) };
    }
    if object["object"] == "checkout.session"
        && let Some(reference) = text(object, "client_reference_id")
    {
        return store::pledge_in(tx, &reference).await;
    }
    let by_id = match object["object"].as_str() {
        Some("checkout.session") => ("checkout_session_id", text(object, "id")),
        Some("setup_intent") => ("setup_intent_id", text(object, "id")),
        Some("payment_intent") => ("payment_intent_id", text(object, "id")),
        Some("charge") => ("charge_id", text(object, "id")),
        Some("dispute") => ("charge_id", text(object, "charge")),
        _ => return Ok(None),
    };
    match by_id {
        (column, Some(id)) => store::pledge_where(tx, column, &id).await,
        _ => Ok(None),
    }
}

async fn set_column(tx: &mut Tx, pledge: &Pledge, column: &str, value: &str) -> Result<(), CampaignError> {
    let sql = format!("UPDATE pledges SET {column} = $1 WHERE id = $2");
    on_tx!(tx, c => sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(value).bind(pledge.id).execute(c).await?.rows_affected());
    Ok(())
}

/// Queues the job that reads what a PaymentIntent collected and posts it.
pub(crate) async fn queue_collect(tx: &mut Tx, pledge: &Pledge, payment_intent: &str) -> Result<(), CampaignError> {
    let job = NewJob {
        kind: COLLECT_JOB,
        payload: json!({ "pledge": pledge.public_id, "payment_intent": payment_intent }),
        run_at: kanpa_ledger::Timestamp::now(),
        max_attempts: 20,
    };
    jobs::enqueue(tx, &job).await?;
    Ok(())
}

impl PledgeEvents {
    async fn apply(&self, tx: &mut Tx, event: &StoredEvent) -> Result<Handled, CampaignError> {
        let payload: Value = serde_json::from_str(&event.payload)
            .map_err(|e| CampaignError::Database(sqlx::Error::Protocol(e.to_string())))?;
        let object = &payload["data"]["object"];
        let Some(pledge) = pledge_of(tx, object).await? else {
            return Ok(Handled::NotOurs);
        };
        let campaign = store::campaign_in(tx, pledge.campaign_id).await?;
        let status = pledge.status;
        match event.event_type.as_str() {
            "checkout.session.completed" => {
                if let Some(customer) = text(object, "customer") {
                    set_column(tx, &pledge, "customer_id", &customer).await?;
                }
                match object["mode"].as_str() {
                    Some("setup") => {
                        if let Some(intent) = text(object, "setup_intent") {
                            set_column(tx, &pledge, "setup_intent_id", &intent).await?;
                        }
                        self.commit(tx, &campaign, &pledge).await
                    }
                    _ => {
                        let Some(intent) = text(object, "payment_intent") else {
                            return Ok(Handled::Skipped("payment session without a PaymentIntent".into()));
                        };
                        set_column(tx, &pledge, "payment_intent_id", &intent).await?;
                        if object["payment_status"] == "paid" {
                            queue_collect(tx, &pledge, &intent).await?;
                            if status == PledgeStatus::Pending {
                                confirmation(tx, &self.site, &campaign, &pledge, PledgeTiming::Now).await?;
                            }
                            Ok(Handled::Applied)
                        } else if status == PledgeStatus::Pending {
                            change_status(tx, &pledge, PledgeStatus::AwaitingPayment).await?;
                            confirmation(tx, &self.site, &campaign, &pledge, PledgeTiming::Konbini).await?;
                            Ok(Handled::Applied)
                        } else {
                            Ok(Handled::Skipped(format!("pledge is {status}")))
                        }
                    }
                }
            }
            "setup_intent.succeeded" => {
                if let Some(method) = text(object, "payment_method") {
                    set_column(tx, &pledge, "payment_method_id", &method).await?;
                }
                if let Some(customer) = text(object, "customer") {
                    set_column(tx, &pledge, "customer_id", &customer).await?;
                }
                if let Some(id) = text(object, "id") {
                    set_column(tx, &pledge, "setup_intent_id", &id).await?;
                }
                self.commit(tx, &campaign, &pledge).await
            }
            "checkout.session.async_payment_succeeded" | "payment_intent.succeeded" => {
                let intent = match object["object"].as_str() {
                    Some("payment_intent") => text(object, "id"),
                    _ => text(object, "payment_intent"),
                };
                let Some(intent) = intent else {
                    return Ok(Handled::Skipped("no PaymentIntent".into()));
                };
                if status == PledgeStatus::Collected && pledge.payment_intent_id.as_deref() == Some(intent.as_str()) {
                    return Ok(Handled::Skipped("already collected".into()));
                }
                queue_collect(tx, &pledge, &intent).await?;
                Ok(Handled::Applied)
            }
            "checkout.session.async_payment_failed" | "checkout.session.expired" => {
                if matches!(status, PledgeStatus::Pending | PledgeStatus::AwaitingPayment) {
                    change_status(tx, &pledge, PledgeStatus::Expired).await?;
                    Ok(Handled::Applied)
                } else {
                    Ok(Handled::Skipped(format!("pledge is {status}")))
                }
            }
            "payment_intent.payment_failed" => {
                // Off-session failures are handled where the charge is made
                // (settlement); a failed on-session attempt leaves Checkout
                // open for another card.
                Ok(Handled::Skipped("payment failures are handled by settlement".into()))
            }
            "charge.refunded" => self.refunded(tx, &campaign, &pledge, object).await,
            _ if event.event_type.starts_with("charge.dispute.") => self.disputed(tx, &campaign, &pledge, object).await,
            other => Ok(Handled::Skipped(format!("{other} is not handled"))),
        }
    }

    /// A card is saved: the pledge counts toward the drive.
    async fn commit(&self, tx: &mut Tx, campaign: &crate::Campaign, pledge: &Pledge) -> Result<Handled, CampaignError> {
        if pledge.status != PledgeStatus::Pending {
            return Ok(Handled::Skipped(format!("pledge is {}", pledge.status)));
        }
        // A card saved at a Checkout opened before the deadline but finished
        // after it: too late for a missed or cancelled drive; charged at once
        // for one that has already settled successfully.
        match campaign.status {
            CampaignStatus::Failed | CampaignStatus::Cancelled => {
                change_status(tx, pledge, PledgeStatus::Void).await?;
                return Ok(Handled::Applied);
            }
            CampaignStatus::Succeeded => {
                let job = NewJob {
                    kind: crate::settle::CHARGE_JOB,
                    payload: json!({ "pledge": pledge.public_id }),
                    run_at: kanpa_ledger::Timestamp::now(),
                    max_attempts: 10,
                };
                jobs::enqueue(tx, &job).await?;
            }
            CampaignStatus::Draft | CampaignStatus::Live | CampaignStatus::Settling => {}
        }
        change_status(tx, pledge, PledgeStatus::Committed).await?;
        confirmation(tx, &self.site, campaign, pledge, PledgeTiming::AtDeadline).await?;
        Ok(Handled::Applied)
    }

    /// Posts the part of a refund not posted yet (a charge's
    /// `amount_refunded` is cumulative) and tells the supporter.
    async fn refunded(
        &self,
        tx: &mut Tx,
        campaign: &crate::Campaign,
        pledge: &Pledge,
        charge: &Value,
    ) -> Result<Handled, CampaignError> {
        let total = charge["amount_refunded"].as_i64().unwrap_or(0);
        let new = total - pledge.amount_refunded;
        if new <= 0 {
            return Ok(Handled::Skipped("refund already recorded".into()));
        }
        let charge_id = text(charge, "id").unwrap_or_default();
        let fund = fund_of(tx, campaign, pledge).await?;
        let stripe = Holding::StripeBalance.account(tx, OrgId(campaign.org_id), campaign.currency).await?;
        let amount = campaign.money(new);
        // The money leaves the fund and the Stripe balance.
        let entry = NewEntry::transfer(
            header(campaign, pledge, format!("stripe:{charge_id}:refunded-to:{total}"), "Refund to supporter")?,
            fund,
            stripe,
            amount,
        )?;
        ledger::post(tx, &entry).await?;
        let sql = "UPDATE pledges SET amount_refunded = $1 WHERE id = $2";
        on_tx!(tx, c => sqlx::query(sql).bind(total).bind(pledge.id).execute(c).await?.rows_affected());
        // The collected aggregate follows the refund.
        crate::pledge::add_to_totals(tx, campaign.id, pledge.team_id, (0, -new, 0)).await?;
        if total >= pledge.amount {
            let refreshed = Pledge { amount_refunded: total, ..pledge.clone() };
            let sql = "UPDATE pledges SET status = 'refunded' WHERE id = $1 AND status = 'collected'";
            let n = on_tx!(tx, c => sqlx::query(sql).bind(pledge.id).execute(c).await?.rows_affected());
            if n == 1 {
                // Fully refunded: no longer a backer; the unit of a limited
                // reward goes back on sale.
                crate::pledge::add_to_totals(tx, campaign.id, pledge.team_id, (0, 0, -1)).await?;
                if let Some(reward) = refreshed.reward_id {
                    crate::pledge::release_reward(tx, reward).await?;
                }
            }
        }
        let template = EmailTemplate::PledgeRefunded {
            campaign: campaign.title(pledge.locale).to_owned(),
            amount: money_text(amount, pledge.locale),
            manage_link: self.site.manage_link(),
        };
        email_supporter(tx, &self.site, pledge, &format!("refunded:{total}"), template).await?;
        Ok(Handled::Applied)
    }

    /// Posts each of a dispute's balance transactions once: the withdrawal
    /// of the disputed amount and the dispute fee, and any reinstatement.
    async fn disputed(
        &self,
        tx: &mut Tx,
        campaign: &crate::Campaign,
        pledge: &Pledge,
        dispute: &Value,
    ) -> Result<Handled, CampaignError> {
        let transactions = dispute["balance_transactions"].as_array().cloned().unwrap_or_default();
        let fund = fund_of(tx, campaign, pledge).await?;
        let stripe = Holding::StripeBalance.account(tx, OrgId(campaign.org_id), campaign.currency).await?;
        for bt in transactions {
            let Some(id) = text(&bt, "id") else { continue };
            // amount is negative for a withdrawal, positive for a reinstatement;
            // the fee is always what Stripe keeps.
            let amount = bt["amount"].as_i64().unwrap_or(0);
            let fee = bt["fee"].as_i64().unwrap_or(0);
            for (suffix, delta, what) in
                [("amount", amount, "Dispute: disputed amount"), ("fee", -fee, "Dispute: Stripe dispute fee")]
            {
                if delta == 0 {
                    continue;
                }
                let money = campaign.money(delta.abs());
                let h = header(campaign, pledge, format!("stripe:{id}:{suffix}"), what)?;
                let entry = if delta > 0 {
                    NewEntry::transfer(h, stripe, fund, money)?
                } else {
                    NewEntry::transfer(h, fund, stripe, money)?
                };
                ledger::post(tx, &entry).await?;
            }
        }
        Ok(Handled::Applied)
    }
}

#[async_trait]
impl StripeEventHandler for PledgeEvents {
    async fn handle(&self, tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<Handled> {
        Ok(self.apply(tx, event).await?)
    }
}

/// The fund a pledge's money belongs to: its team's, or the pool.
pub(crate) async fn fund_of(
    tx: &mut Tx,
    campaign: &crate::Campaign,
    pledge: &Pledge,
) -> Result<kanpa_ledger::AccountId, CampaignError> {
    match pledge.team_id {
        None => Ok(campaign.pool_account),
        Some(team) => {
            let id: i64 = on_tx!(tx, c => sqlx::query_scalar("SELECT account_id FROM campaign_teams WHERE id = $1")
                .bind(team).fetch_one(c).await?);
            Ok(kanpa_ledger::AccountId(id))
        }
    }
}

fn header(
    campaign: &crate::Campaign,
    pledge: &Pledge,
    key: String,
    description: &str,
) -> Result<EntryHeader, CampaignError> {
    Ok(EntryHeader {
        org: OrgId(campaign.org_id),
        key: IdempotencyKey::parse(key).map_err(|e| CampaignError::Ledger(e.into()))?,
        occurred_at: kanpa_ledger::Timestamp::now(),
        description: format!("{description} — {} ({})", campaign.slug, pledge.public_id),
        source: Some(SourceRef { kind: "pledge".into(), reference: pledge.public_id.clone() }),
        recorded_by: Some("stripe".into()),
    })
}

/// Posts money taken for a pledge: the gross into the Stripe balance and
/// the fund, then Stripe's fee out of the same fund. Keys are the charge's,
/// so a replay posts nothing.
pub(crate) async fn post_collection(
    tx: &mut Tx,
    campaign: &crate::Campaign,
    pledge: &Pledge,
    collected: &Collected,
) -> Result<(), CampaignError> {
    let fund = fund_of(tx, campaign, pledge).await?;
    let stripe = Holding::StripeBalance.account(tx, OrgId(campaign.org_id), campaign.currency).await?;
    let mut gross = header(campaign, pledge, format!("stripe:{}:gross", collected.charge), "Pledge collected")?;
    gross.occurred_at = collected.created;
    ledger::post(tx, &NewEntry::transfer(gross, stripe, fund, collected.gross)?).await?;
    if collected.fee.amount() > 0 {
        let mut fee = header(campaign, pledge, format!("stripe:{}:fee", collected.charge), "Stripe fee")?;
        fee.occurred_at = collected.created;
        let postings = vec![NewPosting::debit(fund, collected.fee), NewPosting::credit(stripe, collected.fee)?];
        ledger::post(tx, &NewEntry::new(fee, postings)?).await?;
    }
    Ok(())
}

/// Records money taken for a pledge, in the caller's transaction: the ledger
/// entries, the pledge's state and ids, the receipt email, and, for pool
/// money arriving after the campaign settled, its share-out to the teams.
pub(crate) async fn record_collection(
    tx: &mut Tx,
    site: &Site,
    pledge: &Pledge,
    collected: &Collected,
) -> Result<bool, CampaignError> {
    // Take the campaign row first: a settlement sharing out the pool either
    // sees this money in the pool or has finished, and then it is shared here.
    store::lock_campaign(tx, pledge.campaign_id).await?;
    let campaign = store::campaign_in(tx, pledge.campaign_id).await?;
    if collected.gross.currency() != campaign.currency {
        return Err(CampaignError::Ledger(kanpa_ledger::LedgerError::CurrencyMismatch {
            account: campaign.pool_account,
            posted: collected.gross.currency(),
        }));
    }
    post_collection(tx, &campaign, pledge, collected).await?;
    let sql = "UPDATE pledges SET payment_intent_id = $1, charge_id = $2, failure_code = NULL WHERE id = $3";
    on_tx!(tx, c => sqlx::query(sql).bind(&collected.payment_intent).bind(&collected.charge).bind(pledge.id)
        .execute(c).await?.rows_affected());
    if matches!(pledge.status, PledgeStatus::Collected | PledgeStatus::Refunded) {
        return Ok(false);
    }
    // The amount actually charged is what counts.
    let mut pledge = pledge.clone();
    if collected.gross.amount() != pledge.amount {
        tracing::warn!(pledge = %pledge.public_id, charged = collected.gross.amount(), pledged = pledge.amount,
                       "charged amount differs from the pledge; recording what was charged");
        let before = pledge.status.contribution(pledge.amount, pledge.amount_refunded);
        let sql = "UPDATE pledges SET amount = $1 WHERE id = $2";
        on_tx!(tx, c => sqlx::query(sql).bind(collected.gross.amount()).bind(pledge.id).execute(c).await?.rows_affected());
        pledge.amount = collected.gross.amount();
        let after = pledge.status.contribution(pledge.amount, pledge.amount_refunded);
        crate::pledge::add_to_totals(tx, campaign.id, pledge.team_id, crate::pledge::sub(after, before)).await?;
    }
    if !pledge.status.holds_reward()
        && let Some(reward) = pledge.reward_id
    {
        // Paid after being dropped or expired: it holds its reward again if one
        // is left, and keeps the money either way.
        if crate::pledge::claim_reward(tx, reward).await.is_err() {
            let sql = "UPDATE pledges SET reward_id = NULL WHERE id = $1";
            on_tx!(tx, c => sqlx::query(sql).bind(pledge.id).execute(c).await?.rows_affected());
            pledge.reward_id = None;
        }
    }
    change_status(tx, &pledge, PledgeStatus::Collected).await?;
    let receipt = issue_receipt(tx, &campaign, &pledge, collected).await?;
    let locale = pledge.locale;
    let template = EmailTemplate::PaymentReceipt {
        campaign: campaign.title(locale).to_owned(),
        amount: money_text(collected.gross, locale),
        team: crate::target_name(tx, &campaign, pledge.team_id, locale).await?,
        paid_on: crate::local_time(&campaign, collected.created, locale),
        manage_link: site.manage_link(),
        receipt_number: receipt.display_number(),
        receipt_link: site.receipt_link(&receipt.public_id),
    };
    email_supporter(tx, site, &pledge, &format!("receipt:{}", collected.charge), template).await?;
    if pledge.team_id.is_none() && campaign.pool_is_shared() {
        pool::share_late_collection(tx, &campaign, collected).await?;
    }
    Ok(true)
}

/// The receipt of a pledge's payment, issued once per charge: a reward's
/// price as a purchase at the standard consumption tax rate, and whatever
/// was paid above it (or all of it, without a reward) as a donation, which
/// carries no consumption tax.
pub(crate) async fn issue_receipt(
    tx: &mut Tx,
    campaign: &crate::Campaign,
    pledge: &Pledge,
    collected: &Collected,
) -> Result<Receipt, CampaignError> {
    let payer = if pledge.display_name.is_empty() { pledge.email.clone() } else { pledge.display_name.clone() };
    let paid = PledgePayment {
        source: ReceiptSource::stripe_charge(&collected.charge),
        payer_name: payer,
        paid: collected.gross,
        paid_at: collected.created,
    };
    issue_pledge_receipt(tx, campaign, pledge, &paid).await
}

/// How a pledge was paid, for its receipt.
#[derive(Clone, Debug)]
pub struct PledgePayment {
    /// The payment, once: a Stripe charge, or a treasurer's manual entry
    /// ([`ReceiptSource::manual`] with the entry's idempotency key).
    pub source: ReceiptSource,
    /// The name the receipt is addressed to.
    pub payer_name: String,
    pub paid: kanpa_ledger::Money,
    pub paid_at: kanpa_ledger::Timestamp,
}

/// Issues (or finds, for the same source) the receipt of a pledge's
/// payment in the paying transaction: the card path and the console's
/// manual receipts of money both build it here, so a reward and a donation
/// split the same way whichever way the money came.
pub async fn issue_pledge_receipt(
    tx: &mut Tx,
    campaign: &crate::Campaign,
    pledge: &Pledge,
    payment: &PledgePayment,
) -> Result<Receipt, CampaignError> {
    let paid = payment.paid;
    let reward: Option<(String, String, i64)> = match pledge.reward_id {
        None => None,
        Some(id) => on_tx!(tx, c => sqlx::query_as(
            "SELECT title_ja, title_en, min_amount FROM campaign_rewards WHERE id = $1").bind(id).fetch_optional(c).await?),
    };
    let target_ja = crate::target_name(tx, campaign, pledge.team_id, Locale::Ja).await?;
    let target_en = crate::target_name(tx, campaign, pledge.team_id, Locale::En).await?;
    let (purchase, donation) = match &reward {
        Some((_, _, price)) => {
            receipt::purchase_and_donation(paid, campaign.money(*price)).map_err(receipt::ReceiptError::from)?
        }
        None => (kanpa_ledger::Money::zero(paid.currency()), paid),
    };
    let mut lines = Vec::new();
    if let Some((title_ja, title_en, _)) = &reward
        && !purchase.is_zero()
    {
        lines.push(ReceiptLine {
            kind: LineKind::Reward,
            description_ja: format!("リターン「{title_ja}」({})", campaign.title(Locale::Ja)),
            description_en: format!("Reward: {title_en} ({})", campaign.title(Locale::En)),
            amount: purchase,
            tax_rate: Some(TaxRate::STANDARD),
        });
    }
    if !donation.is_zero() || lines.is_empty() {
        lines.push(ReceiptLine {
            kind: LineKind::Donation,
            description_ja: format!("ご支援(寄付)— {target_ja}"),
            description_en: format!("Donation — {target_en}"),
            amount: donation,
            tax_rate: None,
        });
    }
    let new = NewReceipt {
        org: OrgId(campaign.org_id),
        source: payment.source.clone(),
        payer_name: payment.payer_name.clone(),
        payer_email: pledge.email.clone(),
        paid_at: payment.paid_at,
        currency: paid.currency(),
        basis: PriceBasis::TaxInclusive,
        lines,
    };
    Ok(receipt::issue(tx, &new).await?)
}

/// The `pledge.collect` job: asks the gateway what a PaymentIntent took
/// (outside any transaction), then records it.
pub struct CollectPayment {
    pub gateway: Arc<dyn PaymentGateway>,
    pub site: Site,
}

#[async_trait]
impl JobHandler for CollectPayment {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(5), cap: Duration::from_secs(3600), max_attempts: 20 }
    }

    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        let (Some(public_id), Some(intent)) = (job.payload["pledge"].as_str(), job.payload["payment_intent"].as_str())
        else {
            return Err(JobFailure::GiveUp("job without pledge or payment_intent".into()));
        };
        let collected = self.gateway.collected(intent).await.map_err(|e| JobFailure::Retry(e.to_string()))?;
        let Some(collected) = collected else {
            return Err(JobFailure::Retry(format!("{intent} has not succeeded yet")));
        };
        let mut tx = db.begin().await?;
        let pledge = store::pledge_in(&mut tx, public_id)
            .await
            .map_err(|e| JobFailure::Retry(e.to_string()))?
            .ok_or_else(|| JobFailure::GiveUp(format!("no pledge {public_id}")))?;
        record_collection(&mut tx, &self.site, &pledge, &collected)
            .await
            .map_err(|e| JobFailure::Retry(e.to_string()))?;
        Ok(tx)
    }
}
