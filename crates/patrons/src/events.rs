//! Stripe Billing events that move memberships along, and the job that
//! records a paid invoice in the ledger when the gateway could not say what
//! it took before the event was applied.
//!
//! Every handler runs inside the inbox's transaction and is idempotent. An
//! event about something that is not a membership answers `NotOurs`, so a
//! type shared with pledges reaches the pledge handlers. Subscription events
//! never go back in time: one older than the newest applied for the same
//! subscription is skipped (`StoredEvent::is_superseded`).

use futures::StreamExt;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kanpa_ledger::chart::Holding;
use kanpa_ledger::rows::Rows;
use kanpa_ledger::store as ledger;
use kanpa_ledger::{
    Db, EntryHeader, IdempotencyKey, Locale, NewEntry, NewPosting, OrgId, SourceRef, Timestamp, Tx, on_tx,
};
use kanpa_messaging::email::{EmailAddress, EmailTemplate};
use kanpa_messaging::inbox::{self, EventHandlers, Handled, Prepared, StoredEvent, StripeEventHandler};
use kanpa_messaging::jobs::{self, ClaimedJob, JobFailure, JobHandler, NewJob, Registry, RetryPolicy};
use kanpa_messaging::outbox::{self, NewEmail};
use kanpa_payments::receipt::{self, LineKind, NewReceipt, PriceBasis, Receipt, ReceiptLine, ReceiptSource, TaxRate};
use kanpa_payments::stripe_gateway::kanpa_reference;
use kanpa_payments::{Collected, PaymentGateway};
use serde_json::{Value, json};

use crate::error::PatronError;
use crate::model::{Membership, MembershipStatus, Salon, status_of_subscription};
use crate::{Site, store};

/// The event types this module handles (shared types reach it only when the
/// pledge handlers answer `NotOurs`).
pub const EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
];

pub const COLLECT_JOB: &str = "membership.collect";

/// Attempts of a collection job: with its retry policy, over ten hours.
const COLLECT_ATTEMPTS: i32 = 20;

/// Payments a batch of `invoice.paid` events asks the gateway about at once:
/// enough to hide the network's latency, few enough that the connections
/// stay reused and Stripe's rate limit is not hit in one burst.
const LOOKUPS_AT_ONCE: usize = 16;

/// Registers the membership handlers beside any others of the same types,
/// and the job that records paid invoices.
pub fn register(handlers: &mut EventHandlers, registry: &mut Registry, site: Site, gateway: Arc<dyn PaymentGateway>) {
    let handler = Arc::new(MembershipEvents::new(site.clone(), gateway.clone()));
    for event_type in EVENT_TYPES {
        handlers.add(*event_type, handler.clone());
    }
    registry.register(COLLECT_JOB, Arc::new(CollectInvoice { gateway, site }));
}

pub struct MembershipEvents {
    site: Site,
    gateway: Arc<dyn PaymentGateway>,
}

impl MembershipEvents {
    /// The handler [`register`] registers for every membership event type.
    pub fn new(site: Site, gateway: Arc<dyn PaymentGateway>) -> MembershipEvents {
        MembershipEvents { site, gateway }
    }
}

/// What a batch's `invoice.paid` events are, read before its transaction:
/// each event's invoice as a renewal reads it ([`renewal_view`]), by event
/// id, and by PaymentIntent what the gateway says each payment took (only
/// those that have gone through).
struct PaidInvoices {
    invoices: HashMap<String, Value>,
    collected: HashMap<String, Collected>,
}

impl PaidInvoices {
    fn collected<'p>(prepared: Option<&'p PaidInvoices>, payment_intent: &str) -> Option<&'p Collected> {
        prepared.and_then(|p| p.collected.get(payment_intent))
    }
}

/// The fields of an `invoice.paid` event's invoice that a renewal reads —
/// id, amounts, hosted page, period, metadata, subscription and payments —
/// as JSON of the invoice's shape. The rest (its lines' prices, addresses,
/// tax details) is skipped while parsing rather than built into a tree: a
/// month-end reads a hundred thousand of them. An event applied on its own
/// reads its whole payload.
fn renewal_view(payload: &str) -> Result<Value, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Event {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        object: Invoice,
    }
    #[derive(serde::Deserialize, serde::Serialize, Default)]
    #[serde(default)]
    struct Invoice {
        id: Value,
        amount_paid: Value,
        amount_due: Value,
        hosted_invoice_url: Value,
        metadata: Value,
        subscription: Value,
        payment_intent: Value,
        parent: Option<Parent>,
        payments: Option<List<InvoicePayment>>,
        lines: Option<List<Line>>,
    }
    #[derive(serde::Deserialize, serde::Serialize, Default)]
    #[serde(default)]
    struct Parent {
        subscription_details: Option<SubscriptionDetails>,
    }
    #[derive(serde::Deserialize, serde::Serialize, Default)]
    #[serde(default)]
    struct SubscriptionDetails {
        metadata: Value,
        subscription: Value,
    }
    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(default)]
    struct List<T> {
        data: Vec<T>,
    }
    impl<T> Default for List<T> {
        fn default() -> Self {
            List { data: Vec::new() }
        }
    }
    #[derive(serde::Deserialize, serde::Serialize, Default)]
    #[serde(default)]
    struct InvoicePayment {
        status: Value,
        payment: Option<Payment>,
    }
    #[derive(serde::Deserialize, serde::Serialize, Default)]
    #[serde(default)]
    struct Payment {
        payment_intent: Value,
    }
    #[derive(serde::Deserialize, serde::Serialize, Default)]
    #[serde(default)]
    struct Line {
        period: Value,
    }
    let event: Event = serde_json::from_str(payload)?;
    serde_json::to_value(event.data.object)
}

/// A field naming a Stripe object: its id, or the id of the object it was
/// expanded to.
fn text(object: &Value, key: &str) -> Option<String> {
    text_ref(object, key).map(str::to_owned)
}

/// [`text`], borrowed.
fn text_ref<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    match &object[key] {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Object(o) => o.get("id").and_then(Value::as_str),
        _ => None,
    }
}

fn db_error(e: impl std::fmt::Display) -> PatronError {
    PatronError::Database(sqlx::Error::Protocol(e.to_string()))
}

/// The subscription an invoice bills (API 2025-09-30 keeps it under
/// `parent`; older versions had it at the top).
fn invoice_subscription(invoice: &Value) -> Option<String> {
    text(&invoice["parent"]["subscription_details"], "subscription").or_else(|| text(invoice, "subscription"))
}

/// The PaymentIntent that paid an invoice.
fn invoice_payment_intent(invoice: &Value) -> Option<String> {
    let payments = invoice["payments"]["data"].as_array();
    payments
        .and_then(|p| p.iter().find(|p| p["status"] == "paid").or(p.first()))
        .and_then(|p| text(&p["payment"], "payment_intent"))
        .or_else(|| text(invoice, "payment_intent"))
}

fn subscription_period_end(subscription: &Value) -> Option<Timestamp> {
    let item = &subscription["items"]["data"][0];
    item["current_period_end"]
        .as_i64()
        .or_else(|| subscription["current_period_end"].as_i64())
        .and_then(Timestamp::from_unix_seconds)
}

/// The membership an object is about: by our metadata, or a Stripe id we
/// stored; `None` for anything else.
async fn membership_of(tx: &mut Tx, object: &Value) -> Result<Option<Membership>, PatronError> {
    let reference = kanpa_reference(object).or_else(|| kanpa_reference(&object["parent"]["subscription_details"]));
    if let Some((kind, reference)) = reference {
        return if kind == "membership" { store::membership_in(tx, &reference).await } else { Ok(None) };
    }
    let by_id = match object["object"].as_str() {
        Some("checkout.session") => ("checkout_session_id", text(object, "id")),
        Some("subscription") => ("stripe_subscription_id", text(object, "id")),
        Some("invoice") => ("stripe_subscription_id", invoice_subscription(object)),
        Some("charge") => {
            return store::membership_of_charge(tx, text(object, "id"), text(object, "payment_intent")).await;
        }
        Some("dispute") => {
            return store::membership_of_charge(tx, text(object, "charge"), text(object, "payment_intent")).await;
        }
        _ => return Ok(None),
    };
    match by_id {
        (column, Some(id)) => store::membership_where(tx, column, &id).await,
        _ => Ok(None),
    }
}

/// The date a patron reads, in Japan's time zone: "2026年5月1日", "1 May 2026".
pub fn local_date(at: Timestamp, locale: Locale) -> String {
    let offset = time::UtcOffset::from_hms(9, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let t = at.as_offset().to_offset(offset);
    match locale {
        Locale::Ja => format!("{}年{}月{}日", t.year(), u8::from(t.month()), t.day()),
        Locale::En => format!("{} {} {}", t.day(), t.month(), t.year()),
    }
}

pub(crate) async fn email_patron(
    tx: &mut Tx,
    site: &Site,
    membership: &Membership,
    key: &str,
    template: EmailTemplate,
) -> Result<(), PatronError> {
    let Some(email) = patron_email(membership, key, template) else { return Ok(()) };
    outbox::enqueue(tx, &email, &site.mail_domain).await.map_err(outbox_error)?;
    Ok(())
}

/// The email to a patron, keyed by the membership; none (and a warning)
/// when the address cannot be used.
fn patron_email(membership: &Membership, key: &str, template: EmailTemplate) -> Option<NewEmail> {
    let Ok(to) = EmailAddress::parse(&membership.email) else {
        tracing::warn!(membership = %membership.public_id, "membership has an unusable email address; no email sent");
        return None;
    };
    Some(NewEmail {
        key: format!("membership:{}:{key}", membership.public_id),
        to,
        to_name: None,
        locale: membership.locale,
        template,
    })
}

fn outbox_error(e: outbox::OutboxError) -> PatronError {
    match e {
        outbox::OutboxError::Database(e) => PatronError::Database(e),
        outbox::OutboxError::Email(e) => db_error(e),
    }
}

/// Moves a membership to `to`, keeping its tier's seat count right: an
/// ended membership gives its seat back. Refuses to revive an ended one.
async fn set_status(tx: &mut Tx, membership: &Membership, to: MembershipStatus) -> Result<bool, PatronError> {
    if membership.status == to {
        return Ok(false);
    }
    if membership.status == MembershipStatus::Ended {
        return Ok(false);
    }
    let now = Timestamp::now();
    let sql = "UPDATE memberships SET status = $1, updated_at = $2,
                   since = CASE WHEN $1 = 'active' THEN COALESCE(since, $2) ELSE since END,
                   past_due_since = CASE WHEN $1 = 'past_due' THEN COALESCE(past_due_since, $2) ELSE NULL END,
                   ended_at = CASE WHEN $1 = 'ended' THEN $2 ELSE ended_at END
               WHERE id = $3 AND status = $4";
    let n = on_tx!(tx, c => sqlx::query(sql).bind(to.as_str()).bind(now).bind(membership.id)
        .bind(membership.status.as_str()).execute(c).await?.rows_affected());
    if n == 1 && to == MembershipStatus::Ended {
        store::release_seat(tx, membership.tier_id).await?;
    }
    Ok(n == 1)
}

impl MembershipEvents {
    async fn apply(
        &self,
        tx: &mut Tx,
        event: &StoredEvent,
        prepared: Option<&PaidInvoices>,
    ) -> Result<Handled, PatronError> {
        let payload: Value = serde_json::from_str(&event.payload).map_err(db_error)?;
        let object = &payload["data"]["object"];
        // A charge carrying another domain's reference (a pledge's) is not
        // waited for; one without any may be a membership's invoice payment.
        let parkable = is_charge_event(&event.event_type) && kanpa_reference(object).is_none();
        let mut membership = membership_of(tx, object).await?;
        if membership.is_none() && parkable {
            // The invoice.paid naming this payment may be committing now:
            // its taking of what waits for the payment holds this lock, so
            // after it the payment is known, or this event is kept before
            // the invoice looks. Never parked after the look, and so never
            // left waiting.
            let (charge, intent) = payment_of(object);
            inbox::lock_objects(tx, &charge.into_iter().chain(intent).collect::<Vec<_>>()).await?;
            membership = membership_of(tx, object).await?;
        }
        let Some(membership) = membership else {
            if parkable {
                // Perhaps the refund or dispute of a membership payment whose
                // invoice.paid has not arrived yet: kept until it does.
                park(tx, event, object).await?;
                return Ok(Handled::Skipped("no invoice paid by this charge is known yet; kept for it".into()));
            }
            return Ok(Handled::NotOurs);
        };
        match event.event_type.as_str() {
            "checkout.session.completed" => self.checkout_completed(tx, &membership, object).await,
            "checkout.session.expired" => {
                if membership.status == MembershipStatus::Incomplete && membership.stripe_subscription_id.is_none() {
                    set_status(tx, &membership, MembershipStatus::Ended).await?;
                    Ok(Handled::Applied)
                } else {
                    Ok(Handled::Skipped(format!("membership is {}", membership.status)))
                }
            }
            t if t.starts_with("customer.subscription.") => {
                if event.is_superseded(tx).await? {
                    return Ok(Handled::Skipped("a newer event about this subscription was applied".into()));
                }
                self.subscription_changed(tx, &membership, object).await
            }
            "invoice.paid" => self.invoice_paid(tx, &membership, object, event, prepared).await,
            "invoice.payment_failed" => self.invoice_failed(tx, &membership, object, event).await,
            "invoice.payment_action_required" => self.action_required(tx, &membership, object).await,
            "charge.refunded" => {
                let (handled, new) = refunded(tx, &membership, object).await?;
                if let Some(new) = new {
                    self.tell_of_refund(tx, &membership, object, new).await?;
                }
                Ok(handled)
            }
            t if t.starts_with("charge.dispute.") => disputed(tx, &membership, object).await,
            other => Ok(Handled::Skipped(format!("{other} is not handled"))),
        }
    }

    async fn checkout_completed(
        &self,
        tx: &mut Tx,
        membership: &Membership,
        session: &Value,
    ) -> Result<Handled, PatronError> {
        if session["mode"] != "subscription" {
            return Ok(Handled::Skipped("a membership session not in subscription mode".into()));
        }
        let sql = "UPDATE memberships SET stripe_customer_id = COALESCE($1, stripe_customer_id),
                       stripe_subscription_id = COALESCE(stripe_subscription_id, $2), updated_at = $3
                   WHERE id = $4";
        on_tx!(tx, c => sqlx::query(sql).bind(text(session, "customer")).bind(text(session, "subscription"))
            .bind(Timestamp::now()).bind(membership.id).execute(c).await?.rows_affected());
        if session["payment_status"] == "paid" && membership.status == MembershipStatus::Incomplete {
            set_status(tx, membership, MembershipStatus::Active).await?;
        }
        Ok(Handled::Applied)
    }

    async fn subscription_changed(
        &self,
        tx: &mut Tx,
        membership: &Membership,
        subscription: &Value,
    ) -> Result<Handled, PatronError> {
        if membership.status == MembershipStatus::Ended {
            return Ok(Handled::Skipped("the membership has ended".into()));
        }
        let status = status_of_subscription(
            subscription["status"].as_str().unwrap_or_default(),
            subscription["cancel_at_period_end"].as_bool().unwrap_or(false) || !subscription["cancel_at"].is_null(),
            subscription["pause_collection"].is_object(),
        );
        let period_end = subscription_period_end(subscription);
        let cancel_at = subscription["cancel_at"]
            .as_i64()
            .and_then(Timestamp::from_unix_seconds)
            .or(if status == MembershipStatus::Canceling { period_end } else { None });
        let paused_until =
            subscription["pause_collection"]["resumes_at"].as_i64().and_then(Timestamp::from_unix_seconds);
        let sql = "UPDATE memberships SET stripe_subscription_id = COALESCE(stripe_subscription_id, $1),
                       stripe_customer_id = COALESCE($2, stripe_customer_id),
                       current_period_end = COALESCE($3, current_period_end), cancel_at = $4, paused_until = $5,
                       updated_at = $6
                   WHERE id = $7";
        on_tx!(tx, c => sqlx::query(sql).bind(text(subscription, "id")).bind(text(subscription, "customer"))
            .bind(period_end).bind(cancel_at).bind(paused_until).bind(Timestamp::now()).bind(membership.id)
            .execute(c).await?.rows_affected());
        if let Some(price) = text(&subscription["items"]["data"][0], "price") {
            follow_price(tx, membership, &price).await?;
        }
        set_status(tx, membership, status).await?;
        Ok(Handled::Applied)
    }

    async fn record_invoice(
        &self,
        tx: &mut Tx,
        membership: &Membership,
        invoice: &Value,
        status: &str,
        payment_intent: Option<&str>,
    ) -> Result<String, PatronError> {
        let id = text(invoice, "id").ok_or_else(|| db_error("invoice without id"))?;
        record_invoices(tx, &[(membership, invoice, payment_intent)], status).await?;
        Ok(id)
    }

    /// Records the invoice, and its payment: at once when the gateway has
    /// said what it took, else by a `membership.collect` job that asks.
    async fn invoice_paid(
        &self,
        tx: &mut Tx,
        membership: &Membership,
        invoice: &Value,
        event: &StoredEvent,
        prepared: Option<&PaidInvoices>,
    ) -> Result<Handled, PatronError> {
        let paid_something = invoice["amount_paid"].as_i64().unwrap_or(0) > 0;
        let intent = if paid_something { invoice_payment_intent(invoice) } else { None };
        let id = self.record_invoice(tx, membership, invoice, "paid", intent.as_deref()).await?;
        if matches!(membership.status, MembershipStatus::Incomplete | MembershipStatus::PastDue)
            && !subscription_moved_on(tx, invoice, event).await?
        {
            set_status(tx, membership, MembershipStatus::Active).await?;
        }
        if !paid_something {
            return Ok(Handled::Applied);
        }
        let Some(intent) = intent else {
            return Ok(Handled::Skipped("a paid invoice without a PaymentIntent".into()));
        };
        apply_waiting(tx, membership, "payment_intent_id", &intent).await?;
        if let Some(collected) = PaidInvoices::collected(prepared, &intent) {
            record_payment(tx, &self.site, membership, &id, collected).await?;
            return Ok(Handled::Applied);
        }
        jobs::enqueue(tx, &collect_job(membership, Some(&id), &intent)).await?;
        Ok(Handled::Applied)
    }
}

/// The `membership.collect` job that asks the gateway what an invoice's
/// payment took and records it (read back by `CollectRequest::of`).
fn collect_job(membership: &Membership, invoice: Option<&str>, payment_intent: &str) -> NewJob {
    NewJob {
        kind: COLLECT_JOB,
        payload: json!({ "membership": membership.public_id, "invoice": invoice, "payment_intent": payment_intent }),
        run_at: Timestamp::now(),
        max_attempts: COLLECT_ATTEMPTS,
    }
}

/// Writes invoices as their events show them, all in one `status`, in one
/// statement; a paid invoice stays paid, whatever arrives after. Every
/// invoice must have an id.
async fn record_invoices(
    tx: &mut Tx,
    invoices: &[(&Membership, &Value, Option<&str>)],
    status: &str,
) -> Result<(), PatronError> {
    if invoices.is_empty() {
        return Ok(());
    }
    let rows = invoice_rows(invoices);
    let sql = format!(
        "{} INSERT INTO membership_invoices (membership_id, stripe_invoice_id, status, amount_due, period_start,
                period_end, hosted_invoice_url, stripe_payment_intent_id, created_at, updated_at)
            SELECT membership_id, stripe_invoice_id, $1, amount_due, period_start, period_end, hosted_invoice_url,
                   payment_intent, $2, $2
            FROM i WHERE true ORDER BY n
            ON CONFLICT (stripe_invoice_id) DO UPDATE SET
                status = CASE WHEN membership_invoices.status = 'paid' THEN 'paid' ELSE excluded.status END,
                hosted_invoice_url = COALESCE(excluded.hosted_invoice_url, membership_invoices.hosted_invoice_url),
                stripe_payment_intent_id =
                    COALESCE(excluded.stripe_payment_intent_id, membership_invoices.stripe_payment_intent_id),
                updated_at = excluded.updated_at",
        rows.with_clause("i", tx.backend(), 2)
    );
    rows.execute(tx, &sql, &[status.into(), Timestamp::now().into()]).await?;
    Ok(())
}

/// The columns of invoice rows as their events show them: membership,
/// Stripe invoice, amount due, period, hosted page and PaymentIntent.
fn invoice_rows(invoices: &[(&Membership, &Value, Option<&str>)]) -> Rows {
    let at = |invoice: &Value, end: &str| {
        invoice["lines"]["data"][0]["period"][end].as_i64().and_then(Timestamp::from_unix_seconds)
    };
    Rows::new(invoices.len())
        .int("membership_id", invoices.iter().map(|(m, _, _)| m.id))
        .opt_text("stripe_invoice_id", invoices.iter().map(|(_, i, _)| text(i, "id")))
        .int("amount_due", invoices.iter().map(|(_, i, _)| i["amount_due"].as_i64().unwrap_or(0).max(0)))
        .opt_time("period_start", invoices.iter().map(|(_, i, _)| at(i, "start")))
        .opt_time("period_end", invoices.iter().map(|(_, i, _)| at(i, "end")))
        .opt_text("hosted_invoice_url", invoices.iter().map(|(_, i, _)| text(i, "hosted_invoice_url")))
        .opt_text("payment_intent", invoices.iter().map(|(_, _, pi)| *pi))
}

/// Posts the part of a refund not posted yet (`amount_refunded` is
/// cumulative): out of the salon's fund and the Stripe balance, keyed by
/// the charge and the new total; the patron's lifetime total follows.
/// Returns the part newly posted, if any.
async fn refunded(
    tx: &mut Tx,
    membership: &Membership,
    charge: &Value,
) -> Result<(Handled, Option<kanpa_ledger::Money>), PatronError> {
    let charge_id = text(charge, "id").ok_or_else(|| db_error("charge without id"))?;
    let intent = text(charge, "payment_intent");
    let sql = "SELECT id, amount_refunded FROM membership_invoices
                   WHERE membership_id = $1 AND (stripe_charge_id = $2 OR stripe_payment_intent_id = $3)";
    let row: Option<(i64, i64)> = on_tx!(tx, c => sqlx::query_as(sql).bind(membership.id).bind(&charge_id)
            .bind(&intent).fetch_optional(c).await?);
    let Some((invoice, recorded)) = row else {
        return Ok((Handled::Skipped("no invoice of this membership was paid by this charge".into()), None));
    };
    let total = charge["amount_refunded"].as_i64().unwrap_or(0);
    let new = total - recorded;
    if new <= 0 {
        return Ok((Handled::Skipped("refund already recorded".into()), None));
    }
    let salon = store::salon_in(tx, membership.salon_id).await?;
    let stripe = Holding::StripeBalance.account(tx, OrgId(salon.org_id), salon.currency).await?;
    let key = format!("stripe:{charge_id}:refunded-to:{total}");
    let h = header(&salon, membership, key, "Refund to patron", Timestamp::now())?;
    let amount = kanpa_ledger::Money::new(new, salon.currency);
    ledger::post(tx, &NewEntry::transfer(h, salon.fund_account, stripe, amount)?).await?;
    let sql = "UPDATE membership_invoices SET amount_refunded = $1, updated_at = $2 WHERE id = $3";
    on_tx!(tx, c => sqlx::query(sql).bind(total).bind(Timestamp::now()).bind(invoice).execute(c).await?.rows_affected());
    store::recompute_lifetime_paid(tx, membership.id).await?;
    Ok((Handled::Applied, Some(amount)))
}

/// Posts each of a dispute's balance transactions once, keyed by its id:
/// the disputed amount and Stripe's dispute fee leave the salon's fund, a
/// reinstatement comes back. Every `charge.dispute.*` event carries all of
/// them so far, so any one of them catches up. A lost dispute also takes the
/// amount out of the patron's lifetime total, once; a won one leaves it.
async fn disputed(tx: &mut Tx, membership: &Membership, dispute: &Value) -> Result<Handled, PatronError> {
    let salon = store::salon_in(tx, membership.salon_id).await?;
    let fund = salon.fund_account;
    let stripe = Holding::StripeBalance.account(tx, OrgId(salon.org_id), salon.currency).await?;
    let transactions = dispute["balance_transactions"].as_array().cloned().unwrap_or_default();
    for bt in transactions {
        let Some(id) = text(&bt, "id") else { continue };
        let at = bt["created"].as_i64().and_then(Timestamp::from_unix_seconds).unwrap_or_else(Timestamp::now);
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
            let money = kanpa_ledger::Money::new(delta.abs(), salon.currency);
            let h = header(&salon, membership, format!("stripe:{id}:{suffix}"), what, at)?;
            let entry = if delta > 0 {
                NewEntry::transfer(h, stripe, fund, money)?
            } else {
                NewEntry::transfer(h, fund, stripe, money)?
            };
            ledger::post(tx, &entry).await?;
        }
    }
    if dispute["status"] == "lost" {
        let lost = dispute["amount"].as_i64().unwrap_or(0);
        let sql = "UPDATE membership_invoices SET amount_disputed_lost = $1, updated_at = $2
                       WHERE membership_id = $3 AND (stripe_charge_id = $4 OR stripe_payment_intent_id = $5)
                         AND amount_disputed_lost = 0";
        let n = on_tx!(tx, c => sqlx::query(sql).bind(lost).bind(Timestamp::now()).bind(membership.id)
                .bind(text(dispute, "charge")).bind(text(dispute, "payment_intent")).execute(c).await?.rows_affected());
        if n > 0 {
            store::recompute_lifetime_paid(tx, membership.id).await?;
        }
    }
    Ok(Handled::Applied)
}

fn is_charge_event(event_type: &str) -> bool {
    event_type == "charge.refunded" || event_type.starts_with("charge.dispute.")
}

/// Keeps a refund or dispute event whose charge is not known yet.
async fn park(tx: &mut Tx, event: &StoredEvent, object: &Value) -> Result<(), PatronError> {
    let (charge, intent) = payment_of(object);
    let sql = "INSERT INTO membership_waiting_events (event_id, event_type, charge_id, payment_intent_id, payload,
                   created_at)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING";
    on_tx!(tx, c => sqlx::query(sql).bind(&event.id).bind(&event.event_type).bind(charge).bind(intent)
        .bind(&event.payload).bind(Timestamp::now()).execute(c).await?.rows_affected());
    Ok(())
}

/// The charge and PaymentIntent a charge or dispute object is about.
fn payment_of(object: &Value) -> (Option<&str>, Option<&str>) {
    let charge = match object["object"].as_str() {
        Some("dispute") => object["charge"].as_str(),
        _ => object["id"].as_str(),
    };
    (charge, object["payment_intent"].as_str())
}

/// Applies, in the order they were created, the kept refund and dispute
/// events of a charge (or PaymentIntent) that is now known to be this
/// membership's, and forgets them.
async fn apply_waiting(tx: &mut Tx, membership: &Membership, column: &str, id: &str) -> Result<(), PatronError> {
    let kept = take_waiting(tx, column, &[id]).await?;
    apply_kept(tx, membership, kept.into_iter().map(|(_, kept)| kept).collect()).await
}

/// An event kept for a payment not known yet: its type and payload.
type Kept = (String, Value);

/// Takes (deletes) the events kept for these charges or PaymentIntents, by
/// the id they were kept for; one statement however many ids.
async fn take_waiting(tx: &mut Tx, column: &str, ids: &[&str]) -> Result<Vec<(String, Kept)>, PatronError> {
    debug_assert!(matches!(column, "charge_id" | "payment_intent_id"));
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // A refund or dispute of one of these payments, finding it unknown,
    // takes the same lock before it is kept (see `apply`): taken here, in a
    // statement before the one that looks, it is either kept and seen, or
    // finds the payment once this transaction commits.
    inbox::lock_objects(tx, ids).await?;
    let wanted = Rows::new(ids.len()).text("id", ids.iter().copied());
    let sql = format!(
        "{} DELETE FROM membership_waiting_events WHERE {column} IN (SELECT id FROM wanted)
            RETURNING {column}, event_type, payload",
        wanted.with_clause("wanted", tx.backend(), 0)
    );
    let rows: Vec<(String, String, String)> = wanted.fetch_all(tx, &sql, &[]).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, event_type, payload)| Some((id, (event_type, serde_json::from_str(&payload).ok()?))))
        .collect())
}

/// Applies events taken by [`take_waiting`], those kept for each id
/// together and in the order they were created, to the membership `owner`
/// names for that id.
async fn apply_kept_to<'m>(
    tx: &mut Tx,
    kept: Vec<(String, Kept)>,
    owner: impl Fn(&str) -> Option<&'m Membership>,
) -> Result<(), PatronError> {
    let mut by_id: std::collections::BTreeMap<String, Vec<Kept>> = std::collections::BTreeMap::new();
    for (id, event) in kept {
        by_id.entry(id).or_default().push(event);
    }
    for (id, events) in by_id {
        if let Some(membership) = owner(&id) {
            apply_kept(tx, membership, events).await?;
        }
    }
    Ok(())
}

/// Applies kept events to the membership they turned out to be about, in
/// the order they were created.
async fn apply_kept(tx: &mut Tx, membership: &Membership, mut kept: Vec<Kept>) -> Result<(), PatronError> {
    kept.sort_by_key(|(_, payload)| payload["created"].as_i64().unwrap_or(0));
    for (event_type, payload) in kept {
        let object = &payload["data"]["object"];
        if event_type == "charge.refunded" {
            refunded(tx, membership, object).await?;
        } else {
            disputed(tx, membership, object).await?;
        }
    }
    Ok(())
}

/// Whether an event about the invoice's subscription newer than this invoice
/// event was already applied: then the subscription's own state wins, and
/// the invoice must not move the membership back (a late invoice.paid of an
/// earlier month after a newer renewal failed, or the reverse).
async fn subscription_moved_on(tx: &mut Tx, invoice: &Value, event: &StoredEvent) -> Result<bool, PatronError> {
    let Some(subscription) = invoice_subscription(invoice) else { return Ok(false) };
    let newest = inbox::newest_applied(tx, &subscription).await?;
    Ok(newest.is_some_and(|(created, _)| created > event.created))
}

/// Keeps a membership on the tier whose price its subscription bills now:
/// a tier change, a move to a tier's newer price, or a change made in
/// Stripe's own dashboard or portal. The seat moves with it.
async fn follow_price(tx: &mut Tx, membership: &Membership, price: &str) -> Result<(), PatronError> {
    if membership.stripe_price_id.as_deref() == Some(price) {
        return Ok(());
    }
    let Some((tier_id, amount)) = store::tier_of_price(tx, membership.salon_id, price).await? else {
        tracing::warn!(membership = %membership.public_id, price, "subscription bills a price of no tier of this salon");
        return Ok(());
    };
    let sql = "UPDATE memberships SET tier_id = $1, amount = $2, stripe_price_id = $3, updated_at = $4
               WHERE id = $5 AND tier_id = $6";
    let n = on_tx!(tx, c => sqlx::query(sql).bind(tier_id).bind(amount).bind(price).bind(Timestamp::now())
        .bind(membership.id).bind(membership.tier_id).execute(c).await?.rows_affected());
    if n == 1 && tier_id != membership.tier_id && membership.status.holds_seat() {
        // Stripe already bills the new tier: its seat is taken even if the
        // limit was lowered meanwhile.
        store::take_seat_unchecked(tx, tier_id).await?;
        store::release_seat(tx, membership.tier_id).await?;
    }
    Ok(())
}

impl MembershipEvents {
    async fn invoice_failed(
        &self,
        tx: &mut Tx,
        membership: &Membership,
        invoice: &Value,
        event: &StoredEvent,
    ) -> Result<Handled, PatronError> {
        let id = self.record_invoice(tx, membership, invoice, "failed", None).await?;
        if !matches!(
            membership.status,
            MembershipStatus::Active | MembershipStatus::Canceling | MembershipStatus::PastDue
        ) {
            return Ok(Handled::Skipped(format!("membership is {}", membership.status)));
        }
        if store::invoice_is_paid(tx, &id).await? {
            return Ok(Handled::Skipped("the invoice was paid since".into()));
        }
        if !subscription_moved_on(tx, invoice, event).await? {
            set_status(tx, membership, MembershipStatus::PastDue).await?;
        }
        let salon = store::salon_in(tx, membership.salon_id).await?;
        let since = store::membership_in(tx, &membership.public_id)
            .await?
            .and_then(|m| m.past_due_since)
            .unwrap_or_else(Timestamp::now);
        let locale = membership.locale;
        let template = EmailTemplate::MembershipPaymentFailed {
            salon: salon.name(locale).to_owned(),
            amount: amount_text(invoice, &salon, membership, locale),
            access_until: local_date(since.saturating_add(time::Duration::days(salon.grace_days)), locale),
            manage_link: self.site.manage_link(),
        };
        // One email per attempt: Stripe retries, and each failure is news.
        let attempt = invoice["attempt_count"].as_i64().unwrap_or(1);
        email_patron(tx, &self.site, membership, &format!("failed:{id}:{attempt}"), template).await?;
        Ok(Handled::Applied)
    }

    /// Tells the patron of the part of a refund just posted: one email per
    /// new cumulative total of the charge.
    async fn tell_of_refund(
        &self,
        tx: &mut Tx,
        membership: &Membership,
        charge: &Value,
        new: kanpa_ledger::Money,
    ) -> Result<(), PatronError> {
        let salon = store::salon_in(tx, membership.salon_id).await?;
        let locale = membership.locale;
        let template = EmailTemplate::MembershipRefunded {
            salon: salon.name(locale).to_owned(),
            amount: new.format(locale),
            manage_link: self.site.manage_link(),
        };
        let charge_id = text(charge, "id").unwrap_or_default();
        let total = charge["amount_refunded"].as_i64().unwrap_or(0);
        email_patron(tx, &self.site, membership, &format!("refund:{charge_id}:{total}"), template).await
    }

    async fn action_required(
        &self,
        tx: &mut Tx,
        membership: &Membership,
        invoice: &Value,
    ) -> Result<Handled, PatronError> {
        let id = self.record_invoice(tx, membership, invoice, "action_required", None).await?;
        let Some(link) = text(invoice, "hosted_invoice_url") else {
            return Ok(Handled::Skipped("no hosted invoice page to send".into()));
        };
        let salon = store::salon_in(tx, membership.salon_id).await?;
        let locale = membership.locale;
        let template = EmailTemplate::MembershipActionRequired {
            salon: salon.name(locale).to_owned(),
            amount: amount_text(invoice, &salon, membership, locale),
            pay_link: link,
            manage_link: self.site.manage_link(),
        };
        email_patron(tx, &self.site, membership, &format!("action:{id}"), template).await?;
        Ok(Handled::Applied)
    }
}

/// What an invoice asks for, as the patron reads it.
fn amount_text(invoice: &Value, salon: &Salon, membership: &Membership, locale: Locale) -> String {
    let amount = invoice["amount_due"].as_i64().filter(|a| *a > 0).unwrap_or(membership.amount);
    kanpa_ledger::Money::new(amount, salon.currency).format(locale)
}

#[async_trait]
impl StripeEventHandler for MembershipEvents {
    /// For `invoice.paid`, asks the gateway what each payment took, all at
    /// once: the payments that have gone through are then recorded with
    /// their events, in one transaction, instead of by a job of their own.
    /// A payment the gateway cannot answer for is left to that job.
    async fn prepare(&self, events: &[&StoredEvent]) -> Prepared {
        let invoices: HashMap<String, Value> = events
            .iter()
            .filter(|e| e.event_type == "invoice.paid")
            .filter_map(|e| Some((e.id.clone(), renewal_view(&e.payload).ok()?)))
            .collect();
        if invoices.is_empty() {
            return Prepared::default();
        }
        let mut intents: Vec<String> = invoices
            .values()
            .filter(|invoice| invoice["amount_paid"].as_i64().unwrap_or(0) > 0)
            .filter_map(invoice_payment_intent)
            .collect();
        intents.sort_unstable();
        intents.dedup();
        let lookups: Vec<_> = intents.iter().map(|intent| self.gateway.collected(intent)).collect();
        let answers: Vec<_> = futures::stream::iter(lookups).buffered(LOOKUPS_AT_ONCE).collect().await;
        let mut collected = HashMap::new();
        for (intent, answer) in intents.into_iter().zip(answers) {
            match answer {
                Ok(Some(answer)) => {
                    collected.insert(intent, answer);
                }
                Ok(None) => {}
                Err(e) => tracing::info!(payment_intent = %intent, error = %e, "left to a collection job"),
            }
        }
        Prepared::of(PaidInvoices { invoices, collected })
    }

    async fn handle(&self, tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<Handled> {
        Ok(self.apply(tx, event, None).await?)
    }

    async fn handle_many(
        &self,
        tx: &mut Tx,
        events: &[&StoredEvent],
        prepared: &Prepared,
    ) -> anyhow::Result<Vec<Handled>> {
        let prepared = prepared.get::<PaidInvoices>();
        if events.len() > 1 && events.iter().all(|e| e.event_type == "invoice.paid") {
            return Ok(self.invoices_paid(tx, events, prepared).await?);
        }
        let mut handled = Vec::with_capacity(events.len());
        for event in events {
            handled.push(self.apply(tx, event, prepared).await?);
        }
        Ok(handled)
    }
}

impl MembershipEvents {
    /// `invoice.paid` of many invoices at once, each about a different
    /// invoice (a month-end of renewals): the renewals of memberships in
    /// good standing, each membership's only one in the run, are written
    /// together — the memberships read in one statement, the invoices in
    /// one, the payments the gateway has answered for in a handful
    /// ([`record_payments`]), collection jobs for the others in one — and
    /// any other event is applied on its own, as [`MembershipEvents::apply`]
    /// would. The two sets touch different memberships, so the order between
    /// them does not matter.
    async fn invoices_paid(
        &self,
        tx: &mut Tx,
        events: &[&StoredEvent],
        prepared: Option<&PaidInvoices>,
    ) -> Result<Vec<Handled>, PatronError> {
        // As prepared, or read now. An invoice that cannot be read so is left
        // to `apply`, which reads the whole event and says what is wrong.
        let read: Vec<Cow<'_, Value>> = events
            .iter()
            .map(|event| match prepared.and_then(|p| p.invoices.get(&event.id)) {
                Some(invoice) => Cow::Borrowed(invoice),
                None => Cow::Owned(renewal_view(&event.payload).unwrap_or(Value::Null)),
            })
            .collect();
        let invoices: Vec<&Value> = read.iter().map(|invoice| invoice.as_ref()).collect();
        // Whom each invoice is about, as `membership_of` finds it: our
        // reference, else the subscription it bills.
        let keys: Vec<Option<(bool, String)>> = invoices
            .iter()
            .map(|invoice| {
                match kanpa_reference(invoice).or_else(|| kanpa_reference(&invoice["parent"]["subscription_details"])) {
                    Some((kind, reference)) => (kind == "membership").then_some((true, reference)),
                    None => invoice_subscription(invoice).map(|s| (false, s)),
                }
            })
            .collect();
        let wanted = |by_reference: bool| -> Vec<&str> {
            keys.iter().flatten().filter(|(r, _)| *r == by_reference).map(|(_, k)| k.as_str()).collect()
        };
        let referenced = store::memberships_in(tx, &wanted(true)).await?;
        let subscribed = store::memberships_where_in(tx, "stripe_subscription_id", &wanted(false)).await?;
        let by_reference: HashMap<&str, &Membership> = referenced.iter().map(|m| (m.public_id.as_str(), m)).collect();
        let by_subscription: HashMap<&str, &Membership> =
            subscribed.iter().filter_map(|m| Some((m.stripe_subscription_id.as_deref()?, m))).collect();
        let found: Vec<Option<&Membership>> = keys
            .iter()
            .map(|key| match key {
                Some((true, reference)) => by_reference.get(reference.as_str()).copied(),
                Some((false, subscription)) => by_subscription.get(subscription.as_str()).copied(),
                None => None,
            })
            .collect();
        let mut times_found: HashMap<i64, usize> = HashMap::new();
        for membership in found.iter().flatten() {
            *times_found.entry(membership.id).or_default() += 1;
        }
        let renewal = |i: usize| -> Option<(&Membership, String)> {
            let membership = found[i]?;
            let once = times_found.get(&membership.id) == Some(&1);
            let in_good_standing =
                !matches!(membership.status, MembershipStatus::Incomplete | MembershipStatus::PastDue);
            let paid = invoices[i]["amount_paid"].as_i64().unwrap_or(0) > 0 && text(invoices[i], "id").is_some();
            let intent = invoice_payment_intent(invoices[i])?;
            (once && in_good_standing && paid).then_some((membership, intent))
        };
        let renewals: Vec<(usize, &Membership, String)> =
            (0..events.len()).filter_map(|i| renewal(i).map(|(m, intent)| (i, m, intent))).collect();
        let (answered, unanswered): (Vec<_>, Vec<_>) =
            renewals.iter().partition(|(_, _, intent)| PaidInvoices::collected(prepared, intent).is_some());
        let waiting: Vec<(&Membership, &Value, Option<&str>)> =
            unanswered.iter().map(|(i, m, intent)| (*m, invoices[*i], Some(intent.as_str()))).collect();
        record_invoices(tx, &waiting, "paid").await?;
        let books = PaymentBooks::of_each(tx, answered.iter().map(|(_, m, _)| *m)).await?;
        // Every renewal has an invoice id, and its books were just read.
        let payments: Vec<Payment<'_>> = answered
            .iter()
            .map(|(i, membership, intent)| {
                Some(Payment {
                    books: PaymentBooks::kept_for(&books, membership)?,
                    membership,
                    invoice: text_ref(invoices[*i], "id")?,
                    collected: PaidInvoices::collected(prepared, intent)?,
                    unwritten: Some(invoices[*i]),
                })
            })
            .collect::<Option<_>>()
            .ok_or_else(|| db_error("a renewal without its invoice id or books"))?;
        record_payments(tx, &self.site, &payments).await?;
        // Refunds and disputes kept for these payments apply once every
        // invoice is written (those answered for, already paid).
        let intents: Vec<&str> = renewals.iter().map(|(_, _, intent)| intent.as_str()).collect();
        let kept = take_waiting(tx, "payment_intent_id", &intents).await?;
        let renewing: HashMap<&str, &Membership> =
            renewals.iter().map(|(_, m, intent)| (intent.as_str(), *m)).collect();
        apply_kept_to(tx, kept, |intent| renewing.get(intent).copied()).await?;
        let collections: Vec<NewJob> = unanswered
            .iter()
            .map(|(i, membership, intent)| collect_job(membership, text_ref(invoices[*i], "id"), intent))
            .collect();
        jobs::enqueue_many(tx, &collections).await?;
        let renewed: HashSet<usize> = renewals.iter().map(|(i, _, _)| *i).collect();
        let mut handled = vec![Handled::Applied; events.len()];
        for (i, event) in events.iter().enumerate() {
            if !renewed.contains(&i) {
                handled[i] = self.apply(tx, event, prepared).await?;
            }
        }
        Ok(handled)
    }
}

fn header(
    salon: &Salon,
    membership: &Membership,
    key: String,
    what: &str,
    at: Timestamp,
) -> Result<EntryHeader, PatronError> {
    Ok(EntryHeader {
        org: OrgId(salon.org_id),
        key: IdempotencyKey::parse(key).map_err(|e| PatronError::Ledger(e.into()))?,
        occurred_at: at,
        description: format!("{what} — {} ({})", salon.slug, membership.public_id),
        source: Some(SourceRef { kind: "membership".into(), reference: membership.public_id.clone() }),
        recorded_by: Some("stripe".into()),
    })
}

/// What recording a payment reads besides the payment itself: the
/// membership's salon and tier and the organisation's Stripe balance
/// account. A batch of collections reads it once per tier.
pub(crate) struct PaymentBooks {
    salon: Salon,
    tier: crate::model::Tier,
    stripe: kanpa_ledger::AccountId,
}

impl PaymentBooks {
    /// True when these are the books of `membership`'s payments.
    fn keeps(&self, membership: &Membership) -> bool {
        (self.salon.id, self.tier.id) == (membership.salon_id, membership.tier_id)
    }

    /// The books of every one of these memberships, read once per tier.
    async fn of_each<'m>(
        tx: &mut Tx,
        memberships: impl Iterator<Item = &'m Membership> + Send,
    ) -> Result<Vec<PaymentBooks>, PatronError> {
        let mut books: Vec<PaymentBooks> = Vec::new();
        for membership in memberships {
            if Self::kept_for(&books, membership).is_none() {
                books.push(PaymentBooks::of(tx, membership).await?);
            }
        }
        Ok(books)
    }

    /// Among books read, those of `membership`'s payments.
    fn kept_for<'b>(books: &'b [PaymentBooks], membership: &Membership) -> Option<&'b PaymentBooks> {
        books.iter().find(|b| b.keeps(membership))
    }

    pub(crate) async fn of(tx: &mut Tx, membership: &Membership) -> Result<PaymentBooks, PatronError> {
        let salon = store::salon_in(tx, membership.salon_id).await?;
        let stripe = Holding::StripeBalance.account(tx, OrgId(salon.org_id), salon.currency).await?;
        let tier = store::tier_in(tx, salon.id, membership.tier_id).await?;
        Ok(PaymentBooks { salon, tier, stripe })
    }
}

/// Records a paid invoice's money and sends the receipt, once: see
/// [`post_payment`].
async fn record_payment(
    tx: &mut Tx,
    site: &Site,
    membership: &Membership,
    invoice: &str,
    collected: &Collected,
) -> Result<(), PatronError> {
    let books = PaymentBooks::of(tx, membership).await?;
    record_payments(tx, site, &[Payment { books: &books, membership, invoice, collected, unwritten: None }]).await
}

/// The email that sends the patron the receipt of a payment.
fn receipt_email(
    site: &Site,
    books: &PaymentBooks,
    membership: &Membership,
    collected: &Collected,
    receipt: &Receipt,
) -> Option<NewEmail> {
    let (salon, tier) = (&books.salon, &books.tier);
    let locale = membership.locale;
    let template = EmailTemplate::MembershipReceipt {
        salon: salon.name(locale).to_owned(),
        tier: tier.name(locale).to_owned(),
        amount: collected.gross.format(locale),
        paid_on: local_date(collected.created, locale),
        manage_link: site.manage_link(),
        receipt_number: receipt.display_number(),
        receipt_link: site.receipt_link(&receipt.public_id),
    };
    patron_email(membership, &format!("receipt:{}", collected.charge), template)
}

/// Posts a paid invoice's money: gross into the Stripe balance and the
/// salon's fund, Stripe's fee out of the fund, keyed by the charge so a
/// replay posts nothing; then the invoice and the membership's totals,
/// once. True the first time. Sends nothing (the demo's history uses it
/// without mailing a year of receipts); the receipt page of each payment is
/// issued all the same.
pub async fn post_payment(
    tx: &mut Tx,
    membership: &Membership,
    invoice_id: &str,
    collected: &Collected,
) -> Result<bool, PatronError> {
    let books = PaymentBooks::of(tx, membership).await?;
    Ok(post_payment_with_receipt(tx, &books, membership, invoice_id, collected).await?.is_some())
}

/// [`post_payment`], returning the receipt the first time.
async fn post_payment_with_receipt(
    tx: &mut Tx,
    books: &PaymentBooks,
    membership: &Membership,
    invoice_id: &str,
    collected: &Collected,
) -> Result<Option<Receipt>, PatronError> {
    if !post_money(tx, books, membership, invoice_id, collected).await? {
        return Ok(None);
    }
    Ok(Some(receipt::issue(tx, &receipt_of(books, membership, collected)).await?))
}

/// The money of [`post_payment`], without the receipt: true the first time.
async fn post_money(
    tx: &mut Tx,
    books: &PaymentBooks,
    membership: &Membership,
    invoice_id: &str,
    collected: &Collected,
) -> Result<bool, PatronError> {
    let payment = Payment { books, membership, invoice: invoice_id, collected, unwritten: None };
    let first = post_money_many(tx, &[payment]).await?;
    Ok(first.first().copied().unwrap_or(false))
}

/// A paid invoice to record.
#[derive(Clone, Copy)]
struct Payment<'a> {
    books: &'a PaymentBooks,
    membership: &'a Membership,
    invoice: &'a str,
    collected: &'a Collected,
    /// The invoice as its event shows it, when its row is not written yet:
    /// it is then written once, already paid.
    unwritten: Option<&'a Value>,
}

/// The money of several payments, each as [`post_money`] posts one, in a
/// handful of statements however many there are: the entries, the
/// invoices, the memberships' totals, the events kept for the charges.
/// True for each payment recorded for the first time.
async fn post_money_many(tx: &mut Tx, payments: &[Payment<'_>]) -> Result<Vec<bool>, PatronError> {
    let mut entries = Vec::with_capacity(payments.len() * 2);
    for Payment { books, membership, collected, .. } in payments {
        let salon = &books.salon;
        if collected.gross.currency() != salon.currency {
            return Err(PatronError::Ledger(kanpa_ledger::LedgerError::CurrencyMismatch {
                account: salon.fund_account,
                posted: collected.gross.currency(),
            }));
        }
        let (fund, stripe, charge) = (salon.fund_account, books.stripe, &collected.charge);
        let gross = header(salon, membership, format!("stripe:{charge}:gross"), "Membership paid", collected.created)?;
        entries.push(NewEntry::transfer(gross, stripe, fund, collected.gross)?);
        if collected.fee.amount() > 0 {
            let fee = header(salon, membership, format!("stripe:{charge}:fee"), "Stripe fee", collected.created)?;
            let postings = vec![NewPosting::debit(fund, collected.fee), NewPosting::credit(stripe, collected.fee)?];
            entries.push(NewEntry::new(fee, postings)?);
        }
    }
    ledger::post_many(tx, &entries).await?;
    let first = mark_invoices_paid(tx, payments).await?;
    let first: Vec<bool> = payments.iter().map(|p| first.contains(p.invoice)).collect();
    let recorded: Vec<&Payment<'_>> = payments.iter().zip(&first).filter(|(_, f)| **f).map(|(p, _)| p).collect();
    store::payments_recorded(tx, &recorded.iter().map(|p| (p.membership.id, p.collected.created)).collect::<Vec<_>>())
        .await?;
    let charges: Vec<&str> = recorded.iter().map(|p| p.collected.charge.as_str()).collect();
    let kept = take_waiting(tx, "charge_id", &charges).await?;
    apply_kept_to(tx, kept, |charge| recorded.iter().find(|p| p.collected.charge == charge).map(|p| p.membership))
        .await?;
    Ok(first)
}

/// Records on each payment's invoice what it collected, in a statement or
/// two: an invoice already written is marked paid, one not written yet
/// (`unwritten`) is written paid. The invoices paid for the first time: a
/// replay, or a payment another transaction recorded first, finds its
/// invoice's charge already set and changes nothing.
async fn mark_invoices_paid(tx: &mut Tx, payments: &[Payment<'_>]) -> Result<HashSet<String>, PatronError> {
    let paid = |rows: Rows, payments: &[&Payment<'_>]| {
        rows.text("charge", payments.iter().map(|p| p.collected.charge.as_str()))
            .int("gross", payments.iter().map(|p| p.collected.gross.amount()))
            .int("fee", payments.iter().map(|p| p.collected.fee.amount()))
            .time("paid_at", payments.iter().map(|p| p.collected.created))
    };
    let (unwritten, written): (Vec<&Payment<'_>>, Vec<&Payment<'_>>) =
        payments.iter().partition(|p| p.unwritten.is_some());
    let mut first = HashSet::new();
    if !written.is_empty() {
        let rows = Rows::new(written.len())
            .text("invoice", written.iter().map(|p| p.invoice))
            .int("membership_id", written.iter().map(|p| p.membership.id));
        let rows = paid(rows, &written);
        let sql = format!(
            "{} UPDATE membership_invoices SET stripe_charge_id = p.charge, amount_paid = p.gross, fee = p.fee,
                    paid_at = p.paid_at, status = 'paid', updated_at = $1
                FROM p
                WHERE membership_invoices.stripe_invoice_id = p.invoice
                  AND membership_invoices.membership_id = p.membership_id
                  AND membership_invoices.stripe_charge_id IS NULL
                RETURNING stripe_invoice_id",
            rows.with_clause("p", tx.backend(), 1)
        );
        first.extend(rows.fetch_all::<(String,)>(tx, &sql, &[Timestamp::now().into()]).await?.into_iter().map(|r| r.0));
    }
    if !unwritten.is_empty() {
        let shown: Vec<(&Membership, &Value, Option<&str>)> = unwritten
            .iter()
            .filter_map(|p| {
                p.unwritten.map(|invoice| (p.membership, invoice, Some(p.collected.payment_intent.as_str())))
            })
            .collect();
        let rows = paid(invoice_rows(&shown), &unwritten);
        // An invoice another event wrote first is paid here unless its
        // charge is set already, as the UPDATE above would.
        let sql = format!(
            "{} INSERT INTO membership_invoices (membership_id, stripe_invoice_id, status, amount_due, period_start,
                    period_end, hosted_invoice_url, stripe_payment_intent_id, stripe_charge_id, amount_paid, fee,
                    paid_at, created_at, updated_at)
                SELECT membership_id, stripe_invoice_id, 'paid', amount_due, period_start, period_end,
                       hosted_invoice_url, payment_intent, charge, gross, fee, paid_at, $1, $1
                FROM i WHERE true ORDER BY n
                ON CONFLICT (stripe_invoice_id) DO UPDATE SET status = 'paid',
                    hosted_invoice_url = COALESCE(excluded.hosted_invoice_url, membership_invoices.hosted_invoice_url),
                    stripe_payment_intent_id =
                        COALESCE(excluded.stripe_payment_intent_id, membership_invoices.stripe_payment_intent_id),
                    stripe_charge_id = excluded.stripe_charge_id, amount_paid = excluded.amount_paid,
                    fee = excluded.fee, paid_at = excluded.paid_at, updated_at = excluded.updated_at
                WHERE membership_invoices.stripe_charge_id IS NULL
                  AND membership_invoices.membership_id = excluded.membership_id
                RETURNING stripe_invoice_id",
            rows.with_clause("i", tx.backend(), 1)
        );
        first.extend(rows.fetch_all::<(String,)>(tx, &sql, &[Timestamp::now().into()]).await?.into_iter().map(|r| r.0));
    }
    Ok(first)
}

/// The receipt of a membership payment.
fn receipt_of(books: &PaymentBooks, membership: &Membership, collected: &Collected) -> NewReceipt {
    let (salon, charge) = (&books.salon, &collected.charge);
    // A month of membership is a taxable service; its price includes the tax.
    let tier = &books.tier;
    let line = ReceiptLine {
        kind: LineKind::Membership,
        description_ja: format!("{} 月会費({})", salon.name(Locale::Ja), tier.name(Locale::Ja)),
        description_en: format!("{} monthly fee ({})", salon.name(Locale::En), tier.name(Locale::En)),
        amount: collected.gross,
        tax_rate: Some(TaxRate::STANDARD),
    };
    NewReceipt {
        org: OrgId(salon.org_id),
        source: ReceiptSource::stripe_charge(charge),
        payer_name: membership.email.clone(),
        payer_email: membership.email.clone(),
        paid_at: collected.created,
        currency: collected.gross.currency(),
        basis: PriceBasis::TaxInclusive,
        lines: vec![line],
    }
}

/// The `membership.collect` job: asks the gateway what an invoice's
/// PaymentIntent took (outside any transaction), then records it.
pub struct CollectInvoice {
    pub gateway: Arc<dyn PaymentGateway>,
    pub site: Site,
}

/// What a `membership.collect` job names.
struct CollectRequest<'a> {
    membership: &'a str,
    invoice: &'a str,
    payment_intent: &'a str,
}

impl CollectRequest<'_> {
    fn of(job: &ClaimedJob) -> Result<CollectRequest<'_>, JobFailure> {
        let p = &job.payload;
        match (p["membership"].as_str(), p["invoice"].as_str(), p["payment_intent"].as_str()) {
            (Some(membership), Some(invoice), Some(payment_intent)) => {
                Ok(CollectRequest { membership, invoice, payment_intent })
            }
            _ => Err(JobFailure::GiveUp("job without membership, invoice or payment_intent".into())),
        }
    }
}

impl CollectInvoice {
    /// What the gateway says the PaymentIntent took; a payment not
    /// succeeded yet is retried later.
    async fn collected(&self, payment_intent: &str) -> Result<Collected, JobFailure> {
        let collected = self.gateway.collected(payment_intent).await.map_err(|e| JobFailure::Retry(e.to_string()))?;
        collected.ok_or_else(|| JobFailure::Retry(format!("{payment_intent} has not succeeded yet")))
    }
}

fn retry(e: PatronError) -> JobFailure {
    JobFailure::Retry(e.to_string())
}

#[async_trait]
impl JobHandler for CollectInvoice {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(5), cap: Duration::from_secs(3600), max_attempts: COLLECT_ATTEMPTS }
    }

    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        let request = CollectRequest::of(job)?;
        let collected = self.collected(request.payment_intent).await?;
        let mut tx = db.begin().await?;
        let membership = store::membership_in(&mut tx, request.membership)
            .await
            .map_err(retry)?
            .ok_or_else(|| JobFailure::GiveUp(format!("no membership {}", request.membership)))?;
        record_payment(&mut tx, &self.site, &membership, request.invoice, &collected).await.map_err(retry)?;
        Ok(tx)
    }

    fn batches(&self) -> bool {
        true
    }

    /// A month-end's worth of paid invoices at once: the gateway is asked
    /// about every PaymentIntent concurrently, outside any transaction, then
    /// one transaction records every payment (each still keyed by its
    /// charge, so a replay posts nothing). Anything amiss — a lookup
    /// failing, a payment not succeeded yet, a membership missing — discards
    /// the batch, and the worker runs each job alone: the others apply and
    /// the failing one retries by itself.
    async fn run_many(&self, db: &Db, jobs: &[ClaimedJob]) -> Result<Tx, JobFailure> {
        let requests = jobs.iter().map(CollectRequest::of).collect::<Result<Vec<_>, _>>()?;
        let answers =
            futures::future::join_all(requests.iter().map(|request| self.collected(request.payment_intent))).await;
        let mut tx = db.begin().await?;
        let mut payments = Vec::with_capacity(requests.len());
        let public_ids: Vec<&str> = requests.iter().map(|r| r.membership).collect();
        let mut memberships: HashMap<String, Membership> = store::memberships_in(&mut tx, &public_ids)
            .await
            .map_err(retry)?
            .into_iter()
            .map(|m| (m.public_id.clone(), m))
            .collect();
        for (request, answer) in requests.iter().zip(answers) {
            let collected = answer?;
            let membership = memberships
                .remove(request.membership)
                .ok_or_else(|| JobFailure::Retry(format!("no membership {} (or named twice)", request.membership)))?;
            payments.push((membership, request.invoice, collected));
        }
        let books = PaymentBooks::of_each(&mut tx, payments.iter().map(|(m, _, _)| m)).await.map_err(retry)?;
        let mut batch = Vec::with_capacity(payments.len());
        for (membership, invoice, collected) in &payments {
            let books = PaymentBooks::kept_for(&books, membership).ok_or_else(|| retry(db_error("books not read")))?;
            batch.push(Payment { books, membership, invoice, collected, unwritten: None });
        }
        record_payments(&mut tx, &self.site, &batch).await.map_err(retry)?;
        Ok(tx)
    }
}

/// Records payments the gateway has said went through, each as
/// [`record_payment`] records one, in a handful of statements however many
/// there are: the money of every payment first, then, as late as possible,
/// the receipts (the organisation's numbering lock is held from there to
/// the commit) and their emails. A payment recorded before is skipped.
async fn record_payments(tx: &mut Tx, site: &Site, payments: &[Payment<'_>]) -> Result<(), PatronError> {
    if payments.is_empty() {
        return Ok(());
    }
    // In organisation and membership order: every transaction then takes
    // the organisations' receipt sequences, balance rows and memberships in
    // one order, so two never wait on each other in a cycle.
    let mut batch = payments.to_vec();
    batch.sort_by_key(|p| (p.books.salon.org_id, p.membership.id));
    let first = post_money_many(tx, &batch).await?;
    let first_time: Vec<&Payment<'_>> = batch.iter().zip(first).filter(|(_, f)| *f).map(|(p, _)| p).collect();
    let news: Vec<NewReceipt> = first_time.iter().map(|p| receipt_of(p.books, p.membership, p.collected)).collect();
    let receipts = receipt::issue_many(tx, &news).await?;
    let emails: Vec<NewEmail> = first_time
        .iter()
        .zip(&receipts)
        .filter_map(|(p, receipt)| receipt_email(site, p.books, p.membership, p.collected, receipt))
        .collect();
    outbox::enqueue_many(tx, &emails, &site.mail_domain).await.map_err(outbox_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a renewal reads of an invoice, by the same helpers.
    fn read(invoice: &Value) -> Vec<Value> {
        let period = |end: &str| invoice["lines"]["data"][0]["period"][end].clone();
        vec![
            json!(text(invoice, "id")),
            invoice["amount_paid"].clone(),
            invoice["amount_due"].clone(),
            json!(text(invoice, "hosted_invoice_url")),
            period("start"),
            period("end"),
            json!(kanpa_reference(invoice)),
            json!(kanpa_reference(&invoice["parent"]["subscription_details"])),
            json!(invoice_subscription(invoice)),
            json!(invoice_payment_intent(invoice)),
        ]
    }

    fn event_of(invoice: Value) -> String {
        json!({ "id": "evt_1", "object": "event", "type": "invoice.paid", "data": { "object": invoice } }).to_string()
    }

    #[test]
    fn a_renewal_reads_of_its_view_what_it_reads_of_the_whole_invoice() {
        let fixtures: Value =
            serde_json::from_str(include_str!("../../../tests/support/stripe_fixtures.json")).unwrap();
        let stripes_own = fixtures["resources"]["invoice"].clone();
        let mut ours = stripes_own.clone();
        ours["id"] = json!("in_renewal");
        ours["amount_paid"] = json!(3000);
        ours["parent"]["subscription_details"] =
            json!({ "subscription": "sub_1", "metadata": { "kanpa_kind": "membership", "kanpa_ref": "mb_1" } });
        ours["payments"] = json!({ "object": "list", "data": [
            { "status": "canceled", "payment": { "type": "payment_intent", "payment_intent": "pi_failed" } },
            { "status": "paid", "payment": { "type": "payment_intent", "payment_intent": { "id": "pi_paid" } } },
        ] });
        let mut bare = stripes_own.clone();
        bare["parent"] = Value::Null;
        for invoice in [stripes_own, ours, bare] {
            let view = renewal_view(&event_of(invoice.clone())).unwrap();
            assert_eq!(read(&view), read(&invoice), "{view}");
        }
        let view = renewal_view(&event_of(json!({ "id": "in_2", "parent": null, "payments": null }))).unwrap();
        assert_eq!(invoice_payment_intent(&view), None);
        assert!(renewal_view(&event_of(json!({ "lines": "not a list" }))).is_err());
    }
}
