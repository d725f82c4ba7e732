//! Stripe Billing as time passes: what happens to subscriptions when the
//! fake's clock moves on ([`advance_to`]), what a customer does on a hosted
//! invoice page ([`pay_invoice`]), prorated changes of price ([`prorate`]),
//! and disputes opened and closed by the card holder's bank.
//!
//! Every change records the events Stripe would send (see `emit`), so a
//! test can run months of a subscription business and deliver them.

use serde_json::{Value, json};

use super::fixtures::template;
use super::objects::{self, Decline, NewBalanceTransaction, NewInvoice, add_interval, current_period_end, emit, id_of};
use super::store::{ApiError, State};

const DAY: i64 = 86_400;

/// How many times Stripe's smart retries try a failed renewal (the first
/// attempt included) before the subscription is cancelled, and how long
/// they wait between attempts.
pub(crate) const MAX_ATTEMPTS: i64 = 4;
pub(crate) const RETRY_AFTER: i64 = 3 * DAY;

/// Stripe Japan's dispute fee, in yen.
pub(crate) const DISPUTE_FEE_JPY: i64 = 1_500;

/// Something due at a time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// A paused subscription's `resumes_at` has come.
    Resume(String),
    /// A subscription's period ends: renew it, or end it if cancelled at
    /// period end.
    PeriodEnd(String),
    /// A smart retry of an open invoice.
    Retry(String),
}

fn next_due(state: &State, until: i64) -> Option<(i64, Due)> {
    let mut due: Vec<(i64, Due)> = Vec::new();
    for subscription in state.all_of("subscription") {
        let id = id_of(subscription);
        let status = subscription["status"].as_str().unwrap_or_default();
        if !matches!(status, "active" | "trialing" | "past_due") {
            continue;
        }
        if let Some(resumes_at) = subscription["pause_collection"]["resumes_at"].as_i64() {
            due.push((resumes_at, Due::Resume(id.clone())));
        }
        due.push((current_period_end(subscription), Due::PeriodEnd(id)));
    }
    for invoice in state.all_of("invoice") {
        if invoice["status"] == "open"
            && let Some(at) = invoice["next_payment_attempt"].as_i64()
        {
            due.push((at, Due::Retry(id_of(invoice))));
        }
    }
    due.into_iter().filter(|(at, _)| *at <= until).min()
}

/// Moves the clock to `until`, doing on the way, in time order, all that
/// Stripe Billing does: renewals (paid, declined, or waiting for the
/// customer's authentication), smart retries, the end of pauses, and the
/// end of subscriptions cancelled at period end.
pub(crate) fn advance_to(state: &mut State, until: i64) -> Result<(), ApiError> {
    while let Some((at, due)) = next_due(state, until) {
        state.clock = Some(at.max(state.now()));
        match due {
            Due::Resume(id) => resume(state, &id)?,
            Due::PeriodEnd(id) => period_end(state, &id)?,
            Due::Retry(id) => retry(state, &id)?,
        }
    }
    state.clock = Some(until.max(state.now()));
    Ok(())
}

fn subscription(state: &State, id: &str) -> Result<Value, ApiError> {
    state.get_of("subscription", id).ok_or_else(|| ApiError::missing("subscription", id, "id"))
}

fn resume(state: &mut State, id: &str) -> Result<(), ApiError> {
    let mut subscription = subscription(state, id)?;
    subscription["pause_collection"] = Value::Null;
    let subscription = state.put(subscription);
    emit(state, "customer.subscription.updated", subscription);
    Ok(())
}

/// Ends a subscription now, as Stripe does at the end of a period it was
/// cancelled for, or when the retries of a renewal ran out.
fn end(state: &mut State, mut subscription: Value, reason: &str) {
    let now = state.now();
    subscription["status"] = json!("canceled");
    subscription["canceled_at"] = json!(now);
    subscription["ended_at"] = json!(now);
    subscription["cancellation_details"]["reason"] = json!(reason);
    let subscription = state.put(subscription);
    emit(state, "customer.subscription.deleted", subscription);
}

fn period_end(state: &mut State, id: &str) -> Result<(), ApiError> {
    let mut subscription = subscription(state, id)?;
    let end_of_period = current_period_end(&subscription);
    let cancel_at = subscription["cancel_at"].as_i64();
    if subscription["cancel_at_period_end"] == true || cancel_at.is_some_and(|at| at <= end_of_period) {
        end(state, subscription, "cancellation_requested");
        return Ok(());
    }
    if let Some(items) = subscription["items"]["data"].as_array_mut() {
        for item in items {
            let start = item["current_period_end"].as_i64().unwrap_or(end_of_period);
            let interval = item["price"]["recurring"]["interval"].as_str().unwrap_or("month").to_owned();
            let count = item["price"]["recurring"]["interval_count"].as_i64().unwrap_or(1);
            item["current_period_start"] = json!(start);
            item["current_period_end"] = json!(add_interval(start, &interval, count));
        }
    }
    let subscription = state.put(subscription);
    let paused = subscription["pause_collection"].is_object();
    let payment_method = subscription["default_payment_method"].as_str().map(str::to_owned);
    // A paused subscription's invoices are voided at once (behavior "void");
    // otherwise the card on file is charged, and may be declined.
    let decline = if paused {
        None
    } else {
        payment_method
            .as_deref()
            .and_then(|pm| state.take_card_decline(pm))
            .or_else(|| state.declines.pop_front())
            .map(|code| Decline::for_code(&code))
    };
    let status = if paused {
        "void"
    } else if decline.is_some() {
        "open"
    } else {
        "paid"
    };
    let authentication = decline.as_ref().is_some_and(|d| d.code == "authentication_required");
    let mut invoice = objects::create_invoice(
        state,
        NewInvoice {
            customer: subscription["customer"].as_str().map(str::to_owned),
            subscription: Some(subscription.clone()),
            currency: subscription["currency"].as_str().unwrap_or_default().to_owned(),
            status: status.to_owned(),
            billing_reason: "subscription_cycle".to_owned(),
            payment_method,
            decline,
            apply_customer_balance: !paused,
            ..Default::default()
        },
    )?;
    if authentication {
        // Smart retries cannot authenticate: the customer must, on the
        // hosted invoice page.
        invoice["next_payment_attempt"] = Value::Null;
        invoice = state.put(invoice);
    }
    let mut subscription = subscription;
    subscription["latest_invoice"] = invoice["id"].clone();
    if !paused {
        subscription["status"] = json!(if status == "paid" { "active" } else { "past_due" });
    }
    let subscription = state.put(subscription);
    match (status, authentication) {
        ("paid", _) => emit(state, "invoice.paid", invoice),
        ("open", true) => emit(state, "invoice.payment_action_required", invoice),
        ("open", false) => emit(state, "invoice.payment_failed", invoice),
        _ => {}
    }
    emit(state, "customer.subscription.updated", subscription);
    Ok(())
}

fn payment_intent_of(invoice: &Value) -> Option<String> {
    invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().map(str::to_owned)
}

/// An open invoice is paid now: the invoice, its payment and its
/// subscription (active again if this was its latest invoice) say so.
fn mark_paid(state: &mut State, mut invoice: Value) {
    let now = state.now();
    let amount = invoice["amount_due"].as_i64().unwrap_or(0);
    invoice["status"] = json!("paid");
    invoice["amount_paid"] = json!(amount);
    invoice["amount_remaining"] = json!(0);
    invoice["next_payment_attempt"] = Value::Null;
    invoice["status_transitions"]["paid_at"] = json!(now);
    invoice["auto_advance"] = json!(false);
    if let Some(payment) = invoice["payments"]["data"].get_mut(0) {
        payment["status"] = json!("paid");
        payment["amount_paid"] = json!(amount);
        payment["status_transitions"]["paid_at"] = json!(now);
    }
    let invoice = state.put(invoice);
    emit(state, "invoice.paid", invoice.clone());
    let subscription = invoice["parent"]["subscription_details"]["subscription"].as_str().and_then(|id| state.get(id));
    if let Some(mut subscription) = subscription.cloned()
        && subscription["latest_invoice"] == invoice["id"]
        && subscription["status"] == "past_due"
    {
        subscription["status"] = json!("active");
        let subscription = state.put(subscription);
        emit(state, "customer.subscription.updated", subscription);
    }
}

fn retry(state: &mut State, id: &str) -> Result<(), ApiError> {
    let mut invoice = state.get_of("invoice", id).ok_or_else(|| ApiError::missing("invoice", id, "id"))?;
    let Some(payment_intent) = payment_intent_of(&invoice) else {
        invoice["next_payment_attempt"] = Value::Null;
        state.put(invoice);
        return Ok(());
    };
    let attempts = invoice["attempt_count"].as_i64().unwrap_or(0) + 1;
    invoice["attempt_count"] = json!(attempts);
    invoice["attempted"] = json!(true);
    match objects::confirm_payment_intent(state, &payment_intent, None) {
        Ok(_) => mark_paid(state, invoice),
        Err(_) => {
            let gives_up = attempts >= MAX_ATTEMPTS;
            invoice["next_payment_attempt"] = if gives_up { Value::Null } else { json!(state.now() + RETRY_AFTER) };
            let invoice = state.put(invoice);
            emit(state, "invoice.payment_failed", invoice.clone());
            let subscription =
                invoice["parent"]["subscription_details"]["subscription"].as_str().and_then(|id| state.get(id));
            if gives_up
                && let Some(subscription) = subscription.cloned()
                && subscription["status"] != "canceled"
            {
                end(state, subscription, "payment_failed");
            }
        }
    }
    Ok(())
}

/// The customer pays an open invoice on its hosted page: a payment their
/// bank wanted authenticated is confirmed, or a new card is used.
pub(crate) fn pay_invoice(state: &mut State, id: &str) -> Result<Value, ApiError> {
    let mut invoice = state.get_of("invoice", id).ok_or_else(|| ApiError::missing("invoice", id, "id"))?;
    if invoice["status"] != "open" {
        return Err(ApiError::bad_request(Some("invoice_not_open"), format!("Invoice {id} is not open.")));
    }
    let payment_intent = payment_intent_of(&invoice)
        .and_then(|pi| state.get_of("payment_intent", &pi))
        .ok_or_else(|| ApiError::bad_request(None, format!("Invoice {id} has no payment to confirm.")))?;
    objects::succeed_payment_intent(state, payment_intent);
    invoice["attempt_count"] = json!(invoice["attempt_count"].as_i64().unwrap_or(0) + 1);
    mark_paid(state, invoice);
    state.get_of("invoice", id).ok_or_else(|| ApiError::missing("invoice", id, "id"))
}

/// `proration_behavior=always_invoice`: the unused time of the old price is
/// credited and the rest of the period at the new price charged, on one
/// invoice paid at once; a negative total becomes the customer's credit,
/// which later invoices use first.
pub(crate) fn prorate(state: &mut State, subscription: &Value, before: i64, after: i64) -> Result<Value, ApiError> {
    let now = state.now();
    let item = &subscription["items"]["data"][0];
    let start = item["current_period_start"].as_i64().unwrap_or(now);
    let end = item["current_period_end"].as_i64().unwrap_or(now);
    let length = (end - start).max(1);
    let remaining = (end - now).clamp(0, length);
    let share = |amount: i64| (amount * remaining + length / 2) / length;
    let invoice = objects::create_invoice(
        state,
        NewInvoice {
            customer: subscription["customer"].as_str().map(str::to_owned),
            subscription: Some(subscription.clone()),
            currency: subscription["currency"].as_str().unwrap_or_default().to_owned(),
            status: "paid".to_owned(),
            billing_reason: "subscription_update".to_owned(),
            payment_method: subscription["default_payment_method"].as_str().map(str::to_owned),
            proration_lines: vec![
                (-share(before), "Unused time on the previous price".to_owned()),
                (share(after), "Remaining time on the new price".to_owned()),
            ],
            apply_customer_balance: true,
            ..Default::default()
        },
    )?;
    emit(state, "invoice.paid", invoice.clone());
    Ok(invoice)
}

/// The card holder's bank disputes a charge: the disputed amount and the
/// dispute fee leave the balance at once.
pub(crate) fn open_dispute(state: &mut State, charge_id: &str) -> Result<Value, ApiError> {
    let mut charge =
        state.get_of("charge", charge_id).ok_or_else(|| ApiError::missing("charge", charge_id, "charge"))?;
    let amount = charge["amount_captured"].as_i64().unwrap_or(0) - charge["amount_refunded"].as_i64().unwrap_or(0);
    let currency = charge["currency"].as_str().unwrap_or_default().to_owned();
    let id = state.new_id("du");
    let fee = if currency == "jpy" { DISPUTE_FEE_JPY } else { 1_500 };
    let mut withdrawal = objects::create_balance_transaction(
        state,
        NewBalanceTransaction {
            amount: -amount,
            fee,
            currency: &currency,
            kind: "adjustment",
            source: &id,
            description: Some("Chargeback withdrawal"),
        },
    );
    withdrawal["reporting_category"] = json!("dispute");
    withdrawal["fee_details"][0]["description"] = json!("Dispute fee");
    let withdrawal = state.put(withdrawal);
    let mut dispute = template("dispute");
    dispute["id"] = json!(id);
    dispute["amount"] = json!(amount);
    dispute["balance_transactions"] = json!([withdrawal]);
    dispute["charge"] = json!(charge_id);
    dispute["created"] = json!(state.now());
    dispute["currency"] = json!(currency);
    dispute["is_charge_refundable"] = json!(false);
    dispute["metadata"] = json!({});
    dispute["payment_intent"] = charge["payment_intent"].clone();
    dispute["reason"] = json!("fraudulent");
    dispute["status"] = json!("needs_response");
    let dispute = state.put(dispute);
    charge["disputed"] = json!(true);
    state.put(charge);
    emit(state, "charge.dispute.created", dispute.clone());
    emit(state, "charge.dispute.funds_withdrawn", dispute.clone());
    Ok(dispute)
}

/// The bank decides: a won dispute gives the disputed amount back (Stripe
/// keeps its fee); a lost one leaves it with the card holder.
pub(crate) fn close_dispute(state: &mut State, id: &str, won: bool) -> Result<Value, ApiError> {
    let mut dispute = state.get_of("dispute", id).ok_or_else(|| ApiError::missing("dispute", id, "dispute"))?;
    if matches!(dispute["status"].as_str(), Some("won" | "lost")) {
        return Err(ApiError::bad_request(None, format!("Dispute {id} is already closed.")));
    }
    if won {
        let amount = dispute["amount"].as_i64().unwrap_or(0);
        let currency = dispute["currency"].as_str().unwrap_or_default().to_owned();
        let mut reinstatement = objects::create_balance_transaction(
            state,
            NewBalanceTransaction {
                amount,
                fee: 0,
                currency: &currency,
                kind: "adjustment",
                source: id,
                description: Some("Chargeback reversal"),
            },
        );
        reinstatement["reporting_category"] = json!("dispute_reversal");
        let reinstatement = state.put(reinstatement);
        if let Some(transactions) = dispute["balance_transactions"].as_array_mut() {
            transactions.push(reinstatement);
        }
    }
    dispute["status"] = json!(if won { "won" } else { "lost" });
    let dispute = state.put(dispute);
    if won {
        emit(state, "charge.dispute.funds_reinstated", dispute.clone());
    }
    emit(state, "charge.dispute.closed", dispute.clone());
    Ok(dispute)
}
