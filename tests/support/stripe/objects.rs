//! The objects the fake makes and the ways Stripe changes them: each starts
//! from Stripe's example ([`template`]), gets its ids, amounts, statuses and
//! links filled in, and is stored in the [`State`].
//!
//! The examples carry odd sample values (a customer with a discount, a
//! PaymentIntent with a `last_payment_error`, a `transfer_data` to another
//! account); those are reset to what a plain account's object shows.

use serde_json::{Map, Value, json};
use time::{Date, Month, OffsetDateTime};

use super::API_VERSION;
use super::fixtures::template;
use super::store::{ApiError, State, random_alphanumeric};

pub(crate) type Metadata = Map<String, Value>;

pub(crate) fn metadata_of(pairs: &[(&str, &str)]) -> Metadata {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), json!(value))).collect()
}

pub(crate) fn id_of(object: &Value) -> String {
    object["id"].as_str().unwrap_or_default().to_owned()
}

fn text_of(object: &Value, key: &str) -> Option<String> {
    object[key].as_str().map(str::to_owned)
}

/// Stripe's card fee in Japan, 3.6 %, rounded half up, no fixed part.
pub(crate) fn card_fee(amount: i64) -> i64 {
    if amount <= 0 { 0 } else { (amount * 36 + 500) / 1000 }
}

// ----- customers and payment methods --------------------------------------

#[derive(Default)]
pub(crate) struct NewCustomer {
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub default_payment_method: Option<String>,
}

pub(crate) fn create_customer(state: &mut State, new: NewCustomer) -> Value {
    let mut customer = template("customer");
    customer["id"] = json!(state.new_id("cus"));
    customer["created"] = json!(state.now());
    customer["email"] = json!(new.email);
    customer["name"] = json!(new.name);
    customer["description"] = json!(new.description);
    customer["metadata"] = Value::Object(new.metadata);
    customer["discount"] = Value::Null;
    customer["currency"] = Value::Null;
    customer["address"] = Value::Null;
    customer["shipping"] = Value::Null;
    customer["invoice_prefix"] = json!(random_alphanumeric(8).to_uppercase());
    customer["invoice_settings"]["default_payment_method"] = json!(new.default_payment_method);
    state.put(customer)
}

/// Field changes of `POST /v1/customers/{id}`.
#[derive(Default)]
pub(crate) struct CustomerChanges {
    pub email: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: Option<MetadataChanges>,
    pub default_payment_method: Option<String>,
}

pub(crate) fn update_customer(state: &mut State, id: &str, changes: CustomerChanges) -> Result<Value, ApiError> {
    let mut customer = state.get_of("customer", id).ok_or_else(|| ApiError::missing("customer", id, "id"))?;
    if let Some(email) = changes.email {
        customer["email"] = json!(email);
    }
    if let Some(name) = changes.name {
        customer["name"] = json!(name);
    }
    if let Some(description) = changes.description {
        customer["description"] = json!(description);
    }
    if let Some(metadata) = changes.metadata {
        metadata.apply(&mut customer["metadata"]);
    }
    if let Some(payment_method) = changes.default_payment_method {
        customer["invoice_settings"]["default_payment_method"] = json!(payment_method);
    }
    Ok(state.put(customer))
}

/// Metadata edits as Stripe takes them: a key set to "" is removed, and
/// `metadata=""` removes every key.
#[derive(Clone, Debug, Default)]
pub(crate) struct MetadataChanges {
    pub clear_all: bool,
    pub set: Vec<(String, String)>,
}

impl MetadataChanges {
    pub fn apply(&self, metadata: &mut Value) {
        if self.clear_all || !metadata.is_object() {
            *metadata = json!({});
        }
        if let Value::Object(map) = metadata {
            for (key, value) in &self.set {
                if value.is_empty() {
                    map.remove(key);
                } else {
                    map.insert(key.clone(), json!(value));
                }
            }
        }
    }
}

/// A card payment method (Visa 4242), stored.
pub(crate) fn create_payment_method(state: &mut State, customer: Option<&str>) -> Value {
    let id = state.new_id("pm");
    let payment_method = card_payment_method(state, &id, customer);
    state.put(payment_method)
}

/// The stored payment method, or a card one with this id (test ids such as
/// `pm_card_visa` are accepted as Stripe accepts them in test mode).
fn payment_method_object(state: &State, id: &str, customer: Option<&str>) -> Value {
    state.get_of("payment_method", id).unwrap_or_else(|| card_payment_method(state, id, customer))
}

fn card_payment_method(state: &State, id: &str, customer: Option<&str>) -> Value {
    let mut payment_method = template("payment_method");
    payment_method["id"] = json!(id);
    payment_method["created"] = json!(state.now());
    payment_method["customer"] = json!(customer);
    payment_method["metadata"] = json!({});
    payment_method["card"]["generated_from"] = Value::Null;
    payment_method["card"]["wallet"] = Value::Null;
    payment_method
}

// ----- balance transactions, charges, refunds, payouts --------------------

pub(crate) struct NewBalanceTransaction<'a> {
    pub amount: i64,
    pub fee: i64,
    pub currency: &'a str,
    pub kind: &'a str,
    pub source: &'a str,
    pub description: Option<&'a str>,
}

pub(crate) fn create_balance_transaction(state: &mut State, new: NewBalanceTransaction<'_>) -> Value {
    let now = state.now();
    let mut transaction = template("balance_transaction");
    transaction["id"] = json!(state.new_id("txn"));
    transaction["amount"] = json!(new.amount);
    transaction["available_on"] = json!(now);
    transaction["created"] = json!(now);
    transaction["currency"] = json!(new.currency);
    transaction["description"] = json!(new.description);
    transaction["fee"] = json!(new.fee);
    transaction["fee_details"] = if new.fee > 0 {
        json!([{
            "amount": new.fee,
            "application": null,
            "currency": new.currency,
            "description": "Stripe processing fees",
            "type": "stripe_fee",
        }])
    } else {
        json!([])
    };
    transaction["net"] = json!(new.amount - new.fee);
    transaction["reporting_category"] = json!(new.kind);
    transaction["source"] = json!(new.source);
    transaction["status"] = json!("available");
    transaction["type"] = json!(new.kind);
    state.put(transaction)
}

/// Why a card payment failed.
#[derive(Clone, Debug)]
pub(crate) struct Decline {
    pub code: String,
    pub decline_code: String,
    pub message: String,
}

impl Decline {
    pub fn for_code(code: &str) -> Decline {
        let (error_code, decline_code, message) = match code {
            "card_declined" | "generic_decline" => ("card_declined", "generic_decline", "Your card was declined."),
            "insufficient_funds" => ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
            "authentication_required" => (
                "authentication_required",
                "authentication_required",
                "Your card was declined. This transaction requires authentication.",
            ),
            "expired_card" => ("expired_card", "expired_card", "Your card has expired."),
            "incorrect_cvc" => ("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
            "processing_error" => (
                "processing_error",
                "processing_error",
                "An error occurred while processing your card. Try again in a little bit.",
            ),
            other => ("card_declined", other, "Your card was declined."),
        };
        Decline { code: error_code.to_owned(), decline_code: decline_code.to_owned(), message: message.to_owned() }
    }

    /// Authentication failures leave the PaymentIntent waiting for the
    /// customer; other declines ask for another payment method.
    fn payment_intent_status(&self) -> &'static str {
        if self.code == "authentication_required" { "requires_action" } else { "requires_payment_method" }
    }

    /// An issuer's decline is recorded as a failed charge; an authentication
    /// demand stops before any charge.
    fn makes_failed_charge(&self) -> bool {
        self.code != "authentication_required"
    }
}

struct NewCharge<'a> {
    amount: i64,
    currency: &'a str,
    customer: Option<String>,
    payment_intent: Option<String>,
    payment_method: Option<String>,
    metadata: Value,
    failure: Option<&'a Decline>,
}

fn create_charge(state: &mut State, new: NewCharge<'_>) -> Value {
    let id = state.new_id("ch");
    let mut charge = template("charge");
    charge["id"] = json!(id);
    charge["amount"] = json!(new.amount);
    charge["amount_refunded"] = json!(0);
    charge["created"] = json!(state.now());
    charge["currency"] = json!(new.currency);
    charge["customer"] = json!(new.customer);
    charge["description"] = Value::Null;
    charge["metadata"] = new.metadata;
    charge["payment_intent"] = json!(new.payment_intent);
    charge["payment_method"] = json!(new.payment_method);
    charge["receipt_url"] = json!(format!("{}/receipts/{id}", state.base_url));
    charge["refunded"] = json!(false);
    charge["refunds"] = json!({
        "object": "list",
        "data": [],
        "has_more": false,
        "url": format!("/v1/charges/{id}/refunds"),
    });
    charge["source"] = Value::Null;
    charge["transfer_data"] = Value::Null;
    charge["shipping"] = Value::Null;
    charge["billing_details"]["name"] = Value::Null;
    match new.failure {
        None => {
            let transaction = create_balance_transaction(
                state,
                NewBalanceTransaction {
                    amount: new.amount,
                    fee: card_fee(new.amount),
                    currency: new.currency,
                    kind: "charge",
                    source: &id,
                    description: None,
                },
            );
            charge["amount_captured"] = json!(new.amount);
            charge["balance_transaction"] = transaction["id"].clone();
            charge["captured"] = json!(true);
            charge["paid"] = json!(true);
            charge["status"] = json!("succeeded");
            charge["failure_code"] = Value::Null;
            charge["failure_message"] = Value::Null;
            charge["outcome"] = json!({
                "advice_code": null,
                "network_advice_code": null,
                "network_decline_code": null,
                "network_status": "approved_by_network",
                "reason": null,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            });
        }
        Some(decline) => {
            charge["amount_captured"] = json!(0);
            charge["balance_transaction"] = Value::Null;
            charge["captured"] = json!(false);
            charge["paid"] = json!(false);
            charge["status"] = json!("failed");
            charge["failure_code"] = json!(decline.code);
            charge["failure_message"] = json!(decline.message);
            charge["outcome"] = json!({
                "advice_code": null,
                "network_advice_code": null,
                "network_decline_code": null,
                "network_status": "declined_by_network",
                "reason": decline.decline_code,
                "risk_level": "normal",
                "seller_message": format!(
                    "The bank returned the decline code `{}`.",
                    decline.decline_code
                ),
                "type": "issuer_declined",
            });
        }
    }
    state.put(charge)
}

#[derive(Default)]
pub(crate) struct NewRefund {
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
    pub amount: Option<i64>,
    pub reason: Option<String>,
    pub metadata: Metadata,
}

pub(crate) fn create_refund(state: &mut State, new: NewRefund) -> Result<Value, ApiError> {
    let charge_id = match (new.charge, &new.payment_intent) {
        (Some(charge), _) => charge,
        (None, Some(payment_intent_id)) => {
            let payment_intent = state
                .get_of("payment_intent", payment_intent_id)
                .ok_or_else(|| ApiError::missing("payment_intent", payment_intent_id, "payment_intent"))?;
            match (payment_intent["status"].as_str(), text_of(&payment_intent, "latest_charge")) {
                (Some("succeeded"), Some(charge)) => charge,
                _ => {
                    return Err(ApiError::invalid(
                        "payment_intent",
                        format!(
                            "This PaymentIntent ({payment_intent_id}) does not have a successful charge to refund."
                        ),
                    ));
                }
            }
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                Some("parameter_missing"),
                "One of the following params should be provided for this request: payment_intent or charge.",
            ));
        }
    };
    let mut charge =
        state.get_of("charge", &charge_id).ok_or_else(|| ApiError::missing("charge", &charge_id, "charge"))?;
    let captured = charge["amount_captured"].as_i64().unwrap_or(0);
    let already_refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
    let refundable = captured - already_refunded;
    if refundable <= 0 {
        return Err(ApiError::bad_request(
            Some("charge_already_refunded"),
            format!("Charge {charge_id} has already been refunded."),
        ));
    }
    let amount = new.amount.unwrap_or(refundable);
    if amount <= 0 {
        return Err(ApiError::invalid("amount", "Invalid positive integer: amount must be greater than 0."));
    }
    if amount > refundable {
        return Err(ApiError::new(
            400,
            "invalid_request_error",
            Some("amount_too_large"),
            format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({refundable})"),
            Some("amount"),
        ));
    }
    let currency = text_of(&charge, "currency").unwrap_or_default();
    let refund_id = state.new_id("re");
    let transaction = create_balance_transaction(
        state,
        NewBalanceTransaction {
            amount: -amount,
            fee: 0,
            currency: &currency,
            kind: "refund",
            source: &refund_id,
            description: Some("REFUND FOR CHARGE"),
        },
    );
    let mut refund = template("refund");
    refund["id"] = json!(refund_id);
    refund["amount"] = json!(amount);
    refund["balance_transaction"] = transaction["id"].clone();
    refund["charge"] = json!(charge_id);
    refund["created"] = json!(state.now());
    refund["currency"] = json!(currency);
    refund["metadata"] = Value::Object(new.metadata);
    refund["payment_intent"] = charge["payment_intent"].clone();
    refund["payment_method"] = charge["payment_method"].clone();
    refund["reason"] = json!(new.reason);
    refund["status"] = json!("succeeded");
    let refund = state.put(refund);

    charge["amount_refunded"] = json!(already_refunded + amount);
    charge["refunded"] = json!(already_refunded + amount >= captured);
    if let Some(refunds) = charge["refunds"]["data"].as_array_mut() {
        refunds.insert(0, refund.clone());
    }
    let charge = state.put(charge);
    emit(state, "charge.refunded", charge);
    Ok(refund)
}

/// The account's balance: per currency, the net of every balance
/// transaction (payouts included), all of it available.
pub(crate) fn balance(state: &State) -> Value {
    let mut totals: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for transaction in state.all_of("balance_transaction") {
        let currency = transaction["currency"].as_str().unwrap_or_default().to_owned();
        *totals.entry(currency).or_default() += transaction["net"].as_i64().unwrap_or(0);
    }
    let mut balance = template("balance");
    balance["available"] = totals
        .iter()
        .map(|(currency, amount)| json!({ "amount": amount, "currency": currency, "source_types": { "card": amount } }))
        .collect();
    balance["pending"] = totals
        .keys()
        .map(|currency| json!({ "amount": 0, "currency": currency, "source_types": { "card": 0 } }))
        .collect();
    balance["connect_reserved"] = totals.keys().map(|currency| json!({ "amount": 0, "currency": currency })).collect();
    balance
}

pub(crate) fn create_payout(state: &mut State, currency: &str) -> Result<Value, ApiError> {
    let unpaid: Vec<(String, i64)> = state
        .all_of("balance_transaction")
        .into_iter()
        .rev()
        .filter(|transaction| {
            transaction["currency"] == currency
                && transaction["type"] != "payout"
                && !state.payout_of.contains_key(transaction["id"].as_str().unwrap_or_default())
        })
        .map(|transaction| (id_of(transaction), transaction["net"].as_i64().unwrap_or(0)))
        .collect();
    let total: i64 = unpaid.iter().map(|(_, net)| net).sum();
    if unpaid.is_empty() || total <= 0 {
        return Err(ApiError::bad_request(
            Some("balance_insufficient"),
            format!(
                "You have insufficient funds in your Stripe account for this transfer ({currency} balance {total})."
            ),
        ));
    }
    let payout_id = state.new_id("po");
    let transaction = create_balance_transaction(
        state,
        NewBalanceTransaction {
            amount: -total,
            fee: 0,
            currency,
            kind: "payout",
            source: &payout_id,
            description: Some("STRIPE PAYOUT"),
        },
    );
    for (id, _) in unpaid {
        state.payout_of.insert(id, payout_id.clone());
    }
    state.payout_of.insert(id_of(&transaction), payout_id.clone());
    let now = state.now();
    let mut payout = template("payout");
    payout["id"] = json!(payout_id);
    payout["amount"] = json!(total);
    payout["arrival_date"] = json!(now);
    payout["balance_transaction"] = transaction["id"].clone();
    payout["created"] = json!(now);
    payout["currency"] = json!(currency);
    payout["destination"] = json!("ba_fakebankaccount0000000");
    payout["status"] = json!("paid");
    payout["trace_id"] = json!({ "status": "unsupported", "value": null });
    Ok(state.put(payout))
}

// ----- PaymentIntents and SetupIntents -------------------------------------

#[derive(Default)]
pub(crate) struct NewPaymentIntent {
    pub amount: i64,
    pub currency: String,
    pub customer: Option<String>,
    pub payment_method: Option<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub payment_method_types: Vec<String>,
    pub setup_future_usage: Option<String>,
    pub receipt_email: Option<String>,
}

pub(crate) fn create_payment_intent(state: &mut State, new: NewPaymentIntent) -> Value {
    let id = state.new_id("pi");
    let mut payment_intent = template("payment_intent");
    payment_intent["id"] = json!(id);
    payment_intent["amount"] = json!(new.amount);
    payment_intent["amount_capturable"] = json!(0);
    payment_intent["amount_received"] = json!(0);
    payment_intent["automatic_payment_methods"] = Value::Null;
    payment_intent["canceled_at"] = Value::Null;
    payment_intent["client_secret"] = json!(format!("{id}_secret_{}", random_alphanumeric(25)));
    payment_intent["created"] = json!(state.now());
    payment_intent["currency"] = json!(new.currency);
    payment_intent["customer"] = json!(new.customer);
    payment_intent["description"] = json!(new.description);
    payment_intent["last_payment_error"] = Value::Null;
    payment_intent["latest_charge"] = Value::Null;
    payment_intent["managed_payments"] = Value::Null;
    payment_intent["metadata"] = Value::Object(new.metadata);
    payment_intent["next_action"] = Value::Null;
    payment_intent["payment_method"] = json!(new.payment_method);
    payment_intent["payment_method_configuration_details"] = Value::Null;
    payment_intent["payment_method_types"] =
        if new.payment_method_types.is_empty() { json!(["card"]) } else { json!(new.payment_method_types) };
    payment_intent["processing"] = Value::Null;
    payment_intent["receipt_email"] = json!(new.receipt_email);
    payment_intent["setup_future_usage"] = json!(new.setup_future_usage);
    payment_intent["shipping"] = Value::Null;
    payment_intent["status"] =
        json!(if new.payment_method.is_some() { "requires_confirmation" } else { "requires_payment_method" });
    payment_intent["transfer_data"] = Value::Null;
    state.put(payment_intent)
}

/// Confirms a PaymentIntent: it succeeds, or fails with the next queued
/// decline as a 402 `card_error` carrying the updated PaymentIntent.
pub(crate) fn confirm_payment_intent(
    state: &mut State,
    id: &str,
    payment_method: Option<String>,
) -> Result<Value, ApiError> {
    let mut payment_intent =
        state.get_of("payment_intent", id).ok_or_else(|| ApiError::missing("payment_intent", id, "intent"))?;
    let status = text_of(&payment_intent, "status").unwrap_or_default();
    if !matches!(status.as_str(), "requires_payment_method" | "requires_confirmation" | "requires_action") {
        return Err(ApiError::bad_request(
            Some("payment_intent_unexpected_state"),
            format!("You cannot confirm this PaymentIntent because it has a status of {status}."),
        )
        .with("payment_intent", payment_intent));
    }
    if let Some(payment_method) = payment_method {
        payment_intent["payment_method"] = json!(payment_method);
    }
    if payment_intent["payment_method"].is_null() {
        return Err(ApiError::bad_request(
            Some("payment_intent_unexpected_state"),
            "You cannot confirm this PaymentIntent because it's missing a payment method. To confirm the PaymentIntent with a payment method, pass one in the `payment_method` parameter.",
        )
        .with("payment_intent", payment_intent));
    }
    let card_decline = text_of(&payment_intent, "payment_method").and_then(|pm| state.take_card_decline(&pm));
    match card_decline.or_else(|| state.declines.pop_front()) {
        Some(code) => {
            let decline = Decline::for_code(&code);
            let (payment_intent, error) = fail_payment_intent(state, payment_intent, &decline);
            Err(ApiError { status: 402, error: error_object_with_intent(error, payment_intent) })
        }
        None => Ok(succeed_payment_intent(state, payment_intent)),
    }
}

fn error_object_with_intent(error: Value, payment_intent: Value) -> Map<String, Value> {
    let mut error = match error {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    error.insert("payment_intent".into(), payment_intent);
    error
}

pub(crate) fn succeed_payment_intent(state: &mut State, mut payment_intent: Value) -> Value {
    let amount = payment_intent["amount"].as_i64().unwrap_or(0);
    let currency = text_of(&payment_intent, "currency").unwrap_or_default();
    let charge = create_charge(
        state,
        NewCharge {
            amount,
            currency: &currency,
            customer: text_of(&payment_intent, "customer"),
            payment_intent: text_of(&payment_intent, "id"),
            payment_method: text_of(&payment_intent, "payment_method"),
            metadata: payment_intent["metadata"].clone(),
            failure: None,
        },
    );
    payment_intent["amount_received"] = json!(amount);
    payment_intent["last_payment_error"] = Value::Null;
    payment_intent["latest_charge"] = charge["id"].clone();
    payment_intent["next_action"] = Value::Null;
    payment_intent["status"] = json!("succeeded");
    state.put(payment_intent)
}

/// Records a declined attempt on the PaymentIntent. Returns the stored
/// PaymentIntent and the error object (without the PaymentIntent in it).
pub(crate) fn fail_payment_intent(state: &mut State, mut payment_intent: Value, decline: &Decline) -> (Value, Value) {
    let payment_method_id = text_of(&payment_intent, "payment_method").unwrap_or_default();
    let customer = text_of(&payment_intent, "customer");
    let charge_id = if decline.makes_failed_charge() {
        let amount = payment_intent["amount"].as_i64().unwrap_or(0);
        let currency = text_of(&payment_intent, "currency").unwrap_or_default();
        let charge = create_charge(
            state,
            NewCharge {
                amount,
                currency: &currency,
                customer: customer.clone(),
                payment_intent: text_of(&payment_intent, "id"),
                payment_method: Some(payment_method_id.clone()),
                metadata: payment_intent["metadata"].clone(),
                failure: Some(decline),
            },
        );
        Some(id_of(&charge))
    } else {
        None
    };
    let mut error = json!({
        "charge": charge_id,
        "code": decline.code,
        "decline_code": decline.decline_code,
        "doc_url": format!("https://stripe.com/docs/error-codes/{}", decline.code.replace('_', "-")),
        "message": decline.message,
        "payment_method": payment_method_object(state, &payment_method_id, customer.as_deref()),
        "type": "card_error",
    });
    if charge_id.is_none()
        && let Value::Object(map) = &mut error
    {
        map.remove("charge");
    }
    let status = decline.payment_intent_status();
    payment_intent["status"] = json!(status);
    payment_intent["last_payment_error"] = error.clone();
    if let Some(charge_id) = &charge_id {
        payment_intent["latest_charge"] = json!(charge_id);
    }
    payment_intent["next_action"] = if status == "requires_action" {
        json!({
            "type": "use_stripe_sdk",
            "use_stripe_sdk": { "type": "three_d_secure_redirect" },
        })
    } else {
        Value::Null
    };
    (state.put(payment_intent), error)
}

/// A PaymentIntent brought to a status as Stripe would have got it there.
pub(crate) fn payment_intent_in_status(
    state: &mut State,
    amount: i64,
    currency: &str,
    status: &str,
    metadata: Metadata,
) -> Result<Value, ApiError> {
    let needs_method = status != "requires_payment_method";
    let payment_method = needs_method.then(|| id_of(&create_payment_method(state, None)));
    let mut payment_intent = create_payment_intent(
        state,
        NewPaymentIntent { amount, currency: currency.to_owned(), payment_method, metadata, ..Default::default() },
    );
    match status {
        "requires_payment_method" | "requires_confirmation" => Ok(payment_intent),
        "succeeded" => Ok(succeed_payment_intent(state, payment_intent)),
        "requires_action" => {
            let decline = Decline::for_code("authentication_required");
            Ok(fail_payment_intent(state, payment_intent, &decline).0)
        }
        "processing" | "requires_capture" => {
            if status == "requires_capture" {
                payment_intent["amount_capturable"] = json!(amount);
            }
            payment_intent["status"] = json!(status);
            Ok(state.put(payment_intent))
        }
        "canceled" => {
            payment_intent["status"] = json!("canceled");
            payment_intent["canceled_at"] = json!(state.now());
            payment_intent["cancellation_reason"] = json!("requested_by_customer");
            Ok(state.put(payment_intent))
        }
        other => Err(ApiError::invalid("status", format!("Unknown PaymentIntent status {other:?}"))),
    }
}

#[derive(Default)]
pub(crate) struct NewSetupIntent {
    pub customer: Option<String>,
    pub payment_method: Option<String>,
    pub metadata: Metadata,
    pub usage: Option<String>,
    pub payment_method_types: Vec<String>,
    pub confirm: bool,
}

pub(crate) fn create_setup_intent(state: &mut State, new: NewSetupIntent) -> Value {
    let id = state.new_id("seti");
    let mut setup_intent = template("setup_intent");
    setup_intent["id"] = json!(id);
    setup_intent["automatic_payment_methods"] = Value::Null;
    setup_intent["client_secret"] = json!(format!("{id}_secret_{}", random_alphanumeric(25)));
    setup_intent["created"] = json!(state.now());
    setup_intent["customer"] = json!(new.customer);
    setup_intent["last_setup_error"] = Value::Null;
    setup_intent["metadata"] = Value::Object(new.metadata);
    setup_intent["next_action"] = Value::Null;
    setup_intent["payment_method"] = json!(new.payment_method);
    setup_intent["payment_method_configuration_details"] = Value::Null;
    setup_intent["payment_method_types"] =
        if new.payment_method_types.is_empty() { json!(["card"]) } else { json!(new.payment_method_types) };
    setup_intent["usage"] = json!(new.usage.unwrap_or_else(|| "off_session".to_owned()));
    setup_intent["status"] = json!(match (&new.payment_method, new.confirm) {
        (Some(_), true) => "succeeded",
        (Some(_), false) => "requires_confirmation",
        (None, _) => "requires_payment_method",
    });
    state.put(setup_intent)
}

pub(crate) fn confirm_setup_intent(
    state: &mut State,
    id: &str,
    payment_method: Option<String>,
) -> Result<Value, ApiError> {
    let mut setup_intent =
        state.get_of("setup_intent", id).ok_or_else(|| ApiError::missing("setup_intent", id, "intent"))?;
    let status = text_of(&setup_intent, "status").unwrap_or_default();
    if !matches!(status.as_str(), "requires_payment_method" | "requires_confirmation" | "requires_action") {
        return Err(ApiError::bad_request(
            Some("setup_intent_unexpected_state"),
            format!("You cannot confirm this SetupIntent because it has a status of {status}."),
        ));
    }
    if let Some(payment_method) = payment_method {
        setup_intent["payment_method"] = json!(payment_method);
    }
    if setup_intent["payment_method"].is_null() {
        return Err(ApiError::parameter_missing("payment_method"));
    }
    setup_intent["status"] = json!("succeeded");
    Ok(state.put(setup_intent))
}

// ----- prices, Checkout Sessions -------------------------------------------

/// What a line item or subscription item costs.
#[derive(Clone, Debug, Default)]
pub(crate) struct PlanItem {
    pub unit_amount: i64,
    pub quantity: i64,
    pub currency: String,
    /// An existing price, when the request named one.
    pub price: Option<String>,
    pub product: Option<String>,
    pub product_name: Option<String>,
    pub recurring: Option<Recurring>,
}

#[derive(Clone, Debug)]
pub(crate) struct Recurring {
    pub interval: String,
    pub interval_count: i64,
}

impl PlanItem {
    pub fn new(unit_amount: i64, currency: &str, interval: Option<&str>) -> PlanItem {
        PlanItem {
            unit_amount,
            quantity: 1,
            currency: currency.to_owned(),
            recurring: interval.map(|interval| Recurring { interval: interval.to_owned(), interval_count: 1 }),
            ..Default::default()
        }
    }

    /// The item as a stored price describes it.
    pub fn from_price(price: &Value, quantity: i64) -> PlanItem {
        PlanItem {
            unit_amount: price["unit_amount"].as_i64().unwrap_or(0),
            quantity,
            currency: text_of(price, "currency").unwrap_or_default(),
            price: text_of(price, "id"),
            product: text_of(price, "product"),
            product_name: None,
            recurring: price["recurring"].is_object().then(|| Recurring {
                interval: text_of(&price["recurring"], "interval").unwrap_or_else(|| "month".to_owned()),
                interval_count: price["recurring"]["interval_count"].as_i64().unwrap_or(1),
            }),
        }
    }

    fn total(&self) -> i64 {
        self.unit_amount * self.quantity
    }
}

/// The stored price of an item, made (as Stripe makes one for
/// `price_data`) if the item named none.
pub(crate) fn price_object(state: &mut State, item: &PlanItem) -> Value {
    if let Some(price) = item.price.as_deref().and_then(|id| state.get_of("price", id)) {
        return price;
    }
    let mut price = template("price");
    price["id"] = json!(item.price.clone().unwrap_or_else(|| state.new_id("price")));
    price["created"] = json!(state.now());
    price["currency"] = json!(item.currency);
    price["custom_unit_amount"] = Value::Null;
    price["nickname"] = json!(item.product_name);
    price["product"] = json!(item.product.clone().unwrap_or_else(|| state.new_id("prod")));
    price["transform_quantity"] = Value::Null;
    price["unit_amount"] = json!(item.unit_amount);
    price["unit_amount_decimal"] = json!(item.unit_amount.to_string());
    match &item.recurring {
        Some(recurring) => {
            price["recurring"] = json!({
                "interval": recurring.interval,
                "interval_count": recurring.interval_count,
                "meter": null,
                "trial_period_days": null,
                "usage_type": "licensed",
            });
            price["type"] = json!("recurring");
        }
        None => {
            price["recurring"] = Value::Null;
            price["type"] = json!("one_time");
        }
    }
    state.put(price)
}

/// What completing a Checkout Session creates, kept aside because Stripe
/// does not show it on the session.
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckoutPlan {
    pub items: Vec<PlanItem>,
    pub payment_intent_metadata: Metadata,
    pub subscription_metadata: Metadata,
    pub setup_intent_metadata: Metadata,
    pub trial_period_days: Option<i64>,
}

#[derive(Default)]
pub(crate) struct NewCheckoutSession {
    pub mode: String,
    pub currency: Option<String>,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
    pub client_reference_id: Option<String>,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    pub metadata: Metadata,
    pub payment_method_types: Vec<String>,
    pub expires_at: Option<i64>,
    pub plan: CheckoutPlan,
}

pub(crate) fn create_checkout_session(state: &mut State, new: NewCheckoutSession) -> Result<Value, ApiError> {
    let mode = new.mode.as_str();
    if !matches!(mode, "payment" | "setup" | "subscription") {
        return Err(ApiError::invalid(
            "mode",
            format!("Invalid mode {mode:?}: must be one of payment, setup, or subscription"),
        ));
    }
    let items = &new.plan.items;
    if mode != "setup" && items.is_empty() {
        return Err(ApiError::parameter_missing("line_items"));
    }
    if mode == "subscription" && items.iter().all(|item| item.recurring.is_none()) {
        return Err(ApiError::invalid(
            "line_items",
            "You must provide at least one recurring price in `subscription` mode when using prices.",
        ));
    }
    if mode == "payment" && items.iter().any(|item| item.recurring.is_some()) {
        return Err(ApiError::invalid(
            "line_items",
            "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode or use only one-time prices.",
        ));
    }
    if let Some(customer) = &new.customer
        && state.get_of("customer", customer).is_none()
    {
        return Err(ApiError::missing("customer", customer, "customer"));
    }
    let currency = new.currency.clone().or_else(|| items.first().map(|item| item.currency.clone()));
    let amount: Option<i64> = (mode != "setup").then(|| items.iter().map(PlanItem::total).sum());
    let now = state.now();
    let id = format!("cs_test_{}", random_alphanumeric(58));
    let mut session = template("checkout.session");
    session["id"] = json!(id);
    session["adaptive_pricing"] = Value::Null;
    session["after_expiration"] = Value::Null;
    session["amount_subtotal"] = json!(amount);
    session["amount_total"] = json!(amount);
    session["automatic_tax"] = json!({
        "enabled": false,
        "liability": null,
        "provider": null,
        "status": null,
    });
    session["cancel_url"] = json!(new.cancel_url);
    session["client_reference_id"] = json!(new.client_reference_id);
    session["collected_information"] = Value::Null;
    session["consent"] = Value::Null;
    session["consent_collection"] = Value::Null;
    session["created"] = json!(now);
    session["currency"] = json!(currency);
    session["currency_conversion"] = Value::Null;
    session["custom_text"] = json!({
        "after_submit": null,
        "shipping_address": null,
        "submit": null,
        "terms_of_service_acceptance": null,
    });
    session["customer"] = json!(new.customer);
    session["customer_creation"] =
        if mode == "payment" && new.customer.is_none() { json!("if_required") } else { Value::Null };
    session["customer_details"] = Value::Null;
    session["customer_email"] = json!(new.customer_email);
    session["expires_at"] = json!(new.expires_at.unwrap_or(now + 24 * 3600));
    session["invoice"] = Value::Null;
    session["invoice_creation"] = if mode == "payment" {
        json!({
            "enabled": false,
            "invoice_data": {
                "account_tax_ids": null,
                "custom_fields": null,
                "description": null,
                "footer": null,
                "issuer": null,
                "metadata": {},
                "rendering_options": null,
            },
        })
    } else {
        Value::Null
    };
    session["managed_payments"] = Value::Null;
    session["metadata"] = Value::Object(new.metadata);
    session["mode"] = json!(mode);
    session["payment_intent"] = Value::Null;
    session["payment_method_collection"] = if mode == "subscription" { json!("always") } else { Value::Null };
    session["payment_method_configuration_details"] = Value::Null;
    session["payment_method_types"] =
        if new.payment_method_types.is_empty() { json!(["card"]) } else { json!(new.payment_method_types) };
    session["payment_status"] = json!(if mode == "setup" { "no_payment_required" } else { "unpaid" });
    session["permissions"] = Value::Null;
    session["saved_payment_method_options"] = Value::Null;
    session["setup_intent"] = Value::Null;
    session["shipping_address_collection"] = Value::Null;
    session["shipping_cost"] = Value::Null;
    session["status"] = json!("open");
    session["subscription"] = Value::Null;
    session["success_url"] = json!(new.success_url);
    session["total_details"] = json!({
        "amount_discount": 0,
        "amount_shipping": 0,
        "amount_tax": 0,
    });
    session["url"] = json!(format!("{}/checkout/{id}", state.base_url));
    session["wallet_options"] = Value::Null;
    state.checkout_plans.insert(id, new.plan);
    Ok(state.put(session))
}

pub(crate) fn complete_checkout_session(state: &mut State, id: &str) -> Result<Value, ApiError> {
    let mut session =
        state.get_of("checkout.session", id).ok_or_else(|| ApiError::missing("checkout.session", id, "session"))?;
    if session["status"] != "open" {
        return Err(ApiError::bad_request(
            Some("checkout_session_not_open"),
            format!(
                "This Checkout Session is {} and can no longer be completed.",
                session["status"].as_str().unwrap_or("closed")
            ),
        ));
    }
    let plan = state.checkout_plans.get(id).cloned().unwrap_or_default();
    let mode = text_of(&session, "mode").unwrap_or_default();
    let known_customer = text_of(&session, "customer");
    let email = text_of(&session, "customer_email")
        .or_else(|| {
            known_customer
                .as_deref()
                .and_then(|customer| state.get(customer))
                .and_then(|customer| text_of(customer, "email"))
        })
        .unwrap_or_else(|| "patron@example.com".to_owned());
    // Payment mode makes no customer unless asked to; the other modes need one.
    let customer = match known_customer {
        Some(customer) => Some(customer),
        None if mode != "payment" => {
            Some(id_of(&create_customer(state, NewCustomer { email: Some(email.clone()), ..Default::default() })))
        }
        None => None,
    };
    let payment_method = id_of(&create_payment_method(state, customer.as_deref()));
    match mode.as_str() {
        "payment" => {
            let payment_intent = create_payment_intent(
                state,
                NewPaymentIntent {
                    amount: session["amount_total"].as_i64().unwrap_or(0),
                    currency: text_of(&session, "currency").unwrap_or_default(),
                    customer: customer.clone(),
                    payment_method: Some(payment_method),
                    metadata: plan.payment_intent_metadata.clone(),
                    ..Default::default()
                },
            );
            let payment_intent = succeed_payment_intent(state, payment_intent);
            session["payment_intent"] = payment_intent["id"].clone();
            session["payment_status"] = json!("paid");
        }
        "setup" => {
            let setup_intent = create_setup_intent(
                state,
                NewSetupIntent {
                    customer: customer.clone(),
                    payment_method: Some(payment_method),
                    metadata: plan.setup_intent_metadata.clone(),
                    confirm: true,
                    ..Default::default()
                },
            );
            session["setup_intent"] = setup_intent["id"].clone();
        }
        _ => {
            let subscription = create_subscription(
                state,
                NewSubscription {
                    customer: customer.clone().unwrap_or_default(),
                    items: plan.items.clone(),
                    metadata: plan.subscription_metadata.clone(),
                    default_payment_method: Some(payment_method),
                    trial_period_days: plan.trial_period_days,
                    ..Default::default()
                },
            )?;
            session["subscription"] = subscription["id"].clone();
            session["invoice"] = subscription["latest_invoice"].clone();
            session["payment_status"] =
                json!(if plan.trial_period_days.is_some() { "no_payment_required" } else { "paid" });
        }
    }
    session["customer"] = json!(customer);
    session["customer_details"] = json!({
        "address": null,
        "business_name": null,
        "email": email,
        "individual_name": null,
        "name": null,
        "phone": null,
        "tax_exempt": "none",
        "tax_ids": [],
    });
    session["status"] = json!("complete");
    session["url"] = Value::Null;
    let session = state.put(session);
    if let Some(subscription) = text_of(&session, "subscription").and_then(|id| state.get(&id).cloned()) {
        emit(state, "customer.subscription.created", subscription.clone());
        if let Some(invoice) = text_of(&subscription, "latest_invoice").and_then(|id| state.get(&id).cloned())
            && invoice["status"] == "paid"
        {
            emit(state, "invoice.paid", invoice);
        }
    }
    emit(state, "checkout.session.completed", session.clone());
    Ok(session)
}

pub(crate) fn expire_checkout_session(state: &mut State, id: &str) -> Result<Value, ApiError> {
    let mut session =
        state.get_of("checkout.session", id).ok_or_else(|| ApiError::missing("checkout.session", id, "session"))?;
    if session["status"] != "open" {
        return Err(ApiError::bad_request(
            Some("checkout_session_not_open"),
            "Only Checkout Sessions with a status of `open` can be expired.",
        ));
    }
    session["status"] = json!("expired");
    session["url"] = Value::Null;
    Ok(state.put(session))
}

// ----- subscriptions and invoices ------------------------------------------

/// A Unix time plus `count` intervals, on the calendar (a month from
/// 31 January is the end of February, as on Stripe).
pub(crate) fn add_interval(start: i64, interval: &str, count: i64) -> i64 {
    const DAY: i64 = 86_400;
    let months = match interval {
        "day" => return start + DAY * count,
        "week" => return start + 7 * DAY * count,
        "year" => 12 * count,
        _ => count,
    };
    let Ok(at) = OffsetDateTime::from_unix_timestamp(start) else {
        return start + 30 * DAY * months;
    };
    let index = i64::from(at.year()) * 12 + i64::from(u8::from(at.month())) - 1 + months;
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(at.year());
    let month =
        u8::try_from(index.rem_euclid(12) + 1).ok().and_then(|month| Month::try_from(month).ok()).unwrap_or(at.month());
    let day = at.day().min(month.length(year));
    match Date::from_calendar_date(year, month, day) {
        Ok(date) => date.with_time(at.time()).assume_utc().unix_timestamp(),
        Err(_) => start + 30 * DAY * months,
    }
}

fn subscription_item(state: &mut State, subscription_id: &str, item: &PlanItem, period: (i64, i64)) -> Value {
    let price = price_object(state, item);
    let mut subscription_item = template("subscription")["items"]["data"][0].clone();
    subscription_item["id"] = json!(state.new_id("si"));
    subscription_item["billing_thresholds"] = Value::Null;
    subscription_item["created"] = json!(state.now());
    subscription_item["current_period_start"] = json!(period.0);
    subscription_item["current_period_end"] = json!(period.1);
    subscription_item["metadata"] = json!({});
    subscription_item["plan"] = json!({
        "active": true,
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": price["created"],
        "currency": price["currency"],
        "id": price["id"],
        "interval": price["recurring"]["interval"],
        "interval_count": price["recurring"]["interval_count"],
        "livemode": false,
        "metadata": {},
        "meter": null,
        "nickname": null,
        "object": "plan",
        "product": price["product"],
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": "licensed",
    });
    subscription_item["price"] = price;
    subscription_item["quantity"] = json!(item.quantity);
    subscription_item["subscription"] = json!(subscription_id);
    subscription_item
}

fn item_period(item: &PlanItem, start: i64) -> (i64, i64) {
    let (interval, count) = item
        .recurring
        .as_ref()
        .map_or(("month", 1), |recurring| (recurring.interval.as_str(), recurring.interval_count));
    (start, add_interval(start, interval, count))
}

#[derive(Default)]
pub(crate) struct NewSubscription {
    pub customer: String,
    pub items: Vec<PlanItem>,
    pub metadata: Metadata,
    pub default_payment_method: Option<String>,
    pub trial_period_days: Option<i64>,
    /// `payment_behavior=default_incomplete`: the first invoice is left
    /// open for the customer to pay.
    pub default_incomplete: bool,
    pub cancel_at_period_end: bool,
    pub description: Option<String>,
}

pub(crate) fn create_subscription(state: &mut State, new: NewSubscription) -> Result<Value, ApiError> {
    if state.get_of("customer", &new.customer).is_none() {
        return Err(ApiError::missing("customer", &new.customer, "customer"));
    }
    if new.items.is_empty() {
        return Err(ApiError::parameter_missing("items"));
    }
    if new.items.iter().any(|item| item.recurring.is_none()) {
        return Err(ApiError::invalid(
            "items",
            "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
        ));
    }
    let now = state.now();
    let id = state.new_id("sub");
    let trial_end = new.trial_period_days.map(|days| now + days * 86_400);
    let items: Vec<Value> = new
        .items
        .iter()
        .map(|item| {
            let period = match trial_end {
                Some(end) => (now, end),
                None => item_period(item, now),
            };
            subscription_item(state, &id, item, period)
        })
        .collect();
    let period_end = items.iter().filter_map(|item| item["current_period_end"].as_i64()).max().unwrap_or(now);
    let status = if trial_end.is_some() {
        "trialing"
    } else if new.default_incomplete {
        "incomplete"
    } else {
        "active"
    };
    let mut subscription = template("subscription");
    subscription["id"] = json!(id);
    subscription["billing_cycle_anchor"] = json!(trial_end.unwrap_or(now));
    subscription["billing_cycle_anchor_config"] = Value::Null;
    subscription["billing_schedules"] = json!([]);
    subscription["billing_thresholds"] = Value::Null;
    subscription["cancel_at"] = if new.cancel_at_period_end { json!(period_end) } else { Value::Null };
    subscription["cancel_at_period_end"] = json!(new.cancel_at_period_end);
    subscription["canceled_at"] = Value::Null;
    subscription["cancellation_details"] = json!({
        "comment": null,
        "feedback": null,
        "reason": null,
    });
    subscription["created"] = json!(now);
    subscription["currency"] = json!(new.items[0].currency);
    subscription["customer"] = json!(new.customer);
    subscription["default_payment_method"] = json!(new.default_payment_method);
    subscription["description"] = json!(new.description);
    subscription["ended_at"] = Value::Null;
    subscription["items"] = json!({
        "object": "list",
        "data": items,
        "has_more": false,
        "url": format!("/v1/subscription_items?subscription={id}"),
    });
    subscription["latest_invoice"] = Value::Null;
    subscription["managed_payments"] = Value::Null;
    subscription["metadata"] = Value::Object(new.metadata);
    subscription["next_pending_invoice_item_invoice"] = Value::Null;
    subscription["pause_collection"] = Value::Null;
    subscription["payment_settings"] = Value::Null;
    subscription["pending_invoice_item_interval"] = Value::Null;
    subscription["pending_update"] = Value::Null;
    subscription["start_date"] = json!(now);
    subscription["status"] = json!(status);
    subscription["transfer_data"] = Value::Null;
    subscription["trial_end"] = json!(trial_end);
    subscription["trial_settings"] = Value::Null;
    subscription["trial_start"] = json!(trial_end.map(|_| now));
    let subscription = state.put(subscription);

    let invoice = create_invoice(
        state,
        NewInvoice {
            customer: Some(new.customer.clone()),
            subscription: Some(subscription.clone()),
            currency: new.items[0].currency.clone(),
            status: if new.default_incomplete { "open" } else { "paid" }.to_owned(),
            billing_reason: "subscription_create".to_owned(),
            payment_method: new.default_payment_method.clone(),
            zero_amount: trial_end.is_some(),
            ..Default::default()
        },
    )?;
    let mut subscription = subscription;
    subscription["latest_invoice"] = invoice["id"].clone();
    Ok(state.put(subscription))
}

/// Changes of `POST /v1/subscriptions/{id}`.
#[derive(Default)]
pub(crate) struct SubscriptionChanges {
    pub metadata: Option<MetadataChanges>,
    /// `Some(None)`: `pause_collection=""` resumes; `Some(Some((behavior,
    /// resumes_at)))` pauses.
    pub pause_collection: Option<Option<(String, Option<i64>)>>,
    pub cancel_at_period_end: Option<bool>,
    pub default_payment_method: Option<String>,
    pub description: Option<String>,
    pub items: Vec<ItemChange>,
    /// `always_invoice`: a change of price is prorated and invoiced (and
    /// paid) at once; anything else changes the price from the next renewal.
    pub proration_behavior: Option<String>,
}

/// One entry of `items[]` in an update: an existing item (`id`) to change
/// or delete, or a new item.
#[derive(Default)]
pub(crate) struct ItemChange {
    pub id: Option<String>,
    pub deleted: bool,
    pub quantity: Option<i64>,
    pub plan: Option<PlanItem>,
}

pub(crate) fn update_subscription(
    state: &mut State,
    id: &str,
    changes: SubscriptionChanges,
) -> Result<Value, ApiError> {
    let mut subscription =
        state.get_of("subscription", id).ok_or_else(|| ApiError::missing("subscription", id, "id"))?;
    let canceled = subscription["status"] == "canceled";
    if canceled
        && (changes.cancel_at_period_end.is_some()
            || changes.default_payment_method.is_some()
            || !changes.items.is_empty())
    {
        return Err(ApiError::bad_request(
            None,
            "A canceled subscription can only update its cancellation_details and metadata.",
        ));
    }
    if let Some(metadata) = &changes.metadata {
        metadata.apply(&mut subscription["metadata"]);
    }
    if let Some(description) = changes.description {
        subscription["description"] = json!(description);
    }
    if let Some(payment_method) = changes.default_payment_method {
        subscription["default_payment_method"] = json!(payment_method);
    }
    let amount_before = subscription_amount(&subscription);
    let prices_change = !changes.items.is_empty();
    for change in changes.items {
        apply_item_change(state, &mut subscription, id, change)?;
    }
    if let Some(pause) = changes.pause_collection {
        subscription["pause_collection"] = match pause {
            Some((behavior, resumes_at)) => json!({ "behavior": behavior, "resumes_at": resumes_at }),
            None => Value::Null,
        };
    }
    if let Some(cancel_at_period_end) = changes.cancel_at_period_end {
        subscription["cancel_at_period_end"] = json!(cancel_at_period_end);
        subscription["cancel_at"] =
            if cancel_at_period_end { json!(current_period_end(&subscription)) } else { Value::Null };
    }
    let subscription = state.put(subscription);
    emit(state, "customer.subscription.updated", subscription.clone());
    let amount_after = subscription_amount(&subscription);
    if prices_change && changes.proration_behavior.as_deref() == Some("always_invoice") && amount_after != amount_before
    {
        let invoice = super::billing::prorate(state, &subscription, amount_before, amount_after)?;
        let mut subscription = subscription;
        subscription["latest_invoice"] = invoice["id"].clone();
        return Ok(state.put(subscription));
    }
    Ok(subscription)
}

/// What one period of a subscription costs, before any credit.
pub(crate) fn subscription_amount(subscription: &Value) -> i64 {
    subscription["items"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| item["price"]["unit_amount"].as_i64().unwrap_or(0) * item["quantity"].as_i64().unwrap_or(1))
        .sum()
}

pub(crate) fn current_period_end(subscription: &Value) -> i64 {
    subscription["items"]["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["current_period_end"].as_i64())
        .max()
        .unwrap_or(0)
}

fn apply_item_change(
    state: &mut State,
    subscription: &mut Value,
    subscription_id: &str,
    change: ItemChange,
) -> Result<(), ApiError> {
    let now = state.now();
    let period = subscription["items"]["data"][0]["current_period_start"]
        .as_i64()
        .zip(subscription["items"]["data"][0]["current_period_end"].as_i64())
        .unwrap_or((now, now));
    let Some(items) = subscription["items"]["data"].as_array_mut() else {
        return Ok(());
    };
    match change.id {
        Some(item_id) => {
            let position = items
                .iter()
                .position(|item| item["id"] == item_id.as_str())
                .ok_or_else(|| ApiError::missing("subscription_item", &item_id, "items"))?;
            if change.deleted {
                items.remove(position);
                return Ok(());
            }
            if let Some(plan) = change.plan {
                let quantity = items[position]["quantity"].as_i64().unwrap_or(1);
                let replacement = subscription_item(
                    state,
                    subscription_id,
                    &PlanItem { quantity: change.quantity.unwrap_or(quantity), ..plan },
                    period,
                );
                items[position]["price"] = replacement["price"].clone();
                items[position]["plan"] = replacement["plan"].clone();
            }
            if let Some(quantity) = change.quantity {
                items[position]["quantity"] = json!(quantity);
            }
        }
        None => {
            let plan = change.plan.ok_or_else(|| ApiError::parameter_missing("items[][price]"))?;
            let plan = PlanItem { quantity: change.quantity.unwrap_or(plan.quantity), ..plan };
            items.push(subscription_item(state, subscription_id, &plan, period));
        }
    }
    Ok(())
}

pub(crate) fn cancel_subscription(state: &mut State, id: &str) -> Result<Value, ApiError> {
    let mut subscription =
        state.get_of("subscription", id).ok_or_else(|| ApiError::missing("subscription", id, "id"))?;
    if subscription["status"] == "canceled" {
        return Err(ApiError::bad_request(None, format!("Subscription {id} has already been canceled.")));
    }
    let now = state.now();
    subscription["status"] = json!("canceled");
    subscription["canceled_at"] = json!(now);
    subscription["ended_at"] = json!(now);
    subscription["cancellation_details"]["reason"] = json!("cancellation_requested");
    let subscription = state.put(subscription);
    emit(state, "customer.subscription.deleted", subscription.clone());
    Ok(subscription)
}

pub(crate) fn renew_subscription(state: &mut State, id: &str) -> Result<Value, ApiError> {
    let mut subscription =
        state.get_of("subscription", id).ok_or_else(|| ApiError::missing("subscription", id, "id"))?;
    let status = text_of(&subscription, "status").unwrap_or_default();
    if !matches!(status.as_str(), "active" | "trialing" | "past_due") {
        return Err(ApiError::bad_request(None, format!("A subscription in status {status} is not billed.")));
    }
    if let Some(items) = subscription["items"]["data"].as_array_mut() {
        for item in items {
            let start = item["current_period_end"].as_i64().unwrap_or(0);
            let plan = PlanItem::from_price(&item["price"], 1);
            let (start, end) = item_period(&plan, start);
            item["current_period_start"] = json!(start);
            item["current_period_end"] = json!(end);
        }
    }
    let subscription = state.put(subscription);
    let decline = state.declines.pop_front().map(|code| Decline::for_code(&code));
    let invoice = create_invoice(
        state,
        NewInvoice {
            customer: text_of(&subscription, "customer"),
            subscription: Some(subscription.clone()),
            currency: text_of(&subscription, "currency").unwrap_or_default(),
            status: if decline.is_some() { "open" } else { "paid" }.to_owned(),
            billing_reason: "subscription_cycle".to_owned(),
            payment_method: text_of(&subscription, "default_payment_method"),
            decline,
            ..Default::default()
        },
    )?;
    let mut subscription = subscription;
    subscription["latest_invoice"] = invoice["id"].clone();
    subscription["status"] = json!(if invoice["status"] == "paid" { "active" } else { "past_due" });
    state.put(subscription);
    Ok(invoice)
}

#[derive(Default)]
pub(crate) struct NewInvoice {
    pub customer: Option<String>,
    /// The subscription billed: its items become the lines.
    pub subscription: Option<Value>,
    /// Lines of a one-off invoice: (amount, description).
    pub one_off_lines: Vec<(i64, String)>,
    /// Proration lines of a subscription's first item, for the rest of its
    /// period: (amount, description); negative for unused time.
    pub proration_lines: Vec<(i64, String)>,
    pub currency: String,
    pub status: String,
    pub billing_reason: String,
    pub payment_method: Option<String>,
    pub metadata: Metadata,
    /// A trial's first invoice: the lines cost nothing.
    pub zero_amount: bool,
    /// The payment attempt fails this way (the invoice stays open).
    pub decline: Option<Decline>,
    /// The customer's credit balance is applied to the invoice (and a
    /// negative total is credited to it), as Stripe does for subscriptions.
    pub apply_customer_balance: bool,
}

fn invoice_line(
    state: &State,
    invoice_id: &str,
    amount: i64,
    currency: &str,
    description: String,
    subscription_item: Option<(&Value, &str)>,
    period: (i64, i64),
) -> Value {
    let mut line = template("invoice")["lines"]["data"][0].clone();
    line["id"] = json!(state.new_id("il"));
    line["amount"] = json!(amount);
    line["currency"] = json!(currency);
    line["description"] = json!(description);
    line["invoice"] = json!(invoice_id);
    line["period"] = json!({ "start": period.0, "end": period.1 });
    line["pretax_credit_amounts"] = json!([]);
    line["subtotal"] = json!(amount);
    line["taxes"] = json!([]);
    line["metadata"] = json!({});
    match subscription_item {
        Some((item, subscription_id)) => {
            line["quantity"] = item["quantity"].clone();
            line["subscription"] = json!(subscription_id);
            line["parent"] = json!({
                "invoice_item_details": null,
                "subscription_item_details": {
                    "invoice_item": null,
                    "proration": false,
                    "proration_details": { "credited_items": null },
                    "subscription": subscription_id,
                    "subscription_item": item["id"],
                },
                "type": "subscription_item_details",
            });
            line["pricing"] = json!({
                "price_details": {
                    "price": item["price"]["id"],
                    "product": item["price"]["product"],
                },
                "type": "price_details",
                "unit_amount_decimal": item["price"]["unit_amount_decimal"],
            });
        }
        None => {
            line["quantity"] = json!(1);
            line["subscription"] = Value::Null;
            line["parent"] = json!({
                "invoice_item_details": {
                    "invoice_item": state.new_id("ii"),
                    "proration": false,
                    "proration_details": { "credited_items": null },
                    "subscription": null,
                },
                "subscription_item_details": null,
                "type": "invoice_item_details",
            });
            line["pricing"] = json!({
                "price_details": null,
                "type": "price_details",
                "unit_amount_decimal": amount.to_string(),
            });
        }
    }
    line
}

pub(crate) fn create_invoice(state: &mut State, new: NewInvoice) -> Result<Value, ApiError> {
    let now = state.now();
    let id = state.new_id("in");
    let subscription_id = new.subscription.as_ref().map(id_of);
    let mut lines = Vec::new();
    let mut period = (now, now);
    if let Some(subscription) = new.subscription.as_ref().filter(|_| !new.proration_lines.is_empty()) {
        let item = &subscription["items"]["data"][0];
        let end = item["current_period_end"].as_i64().unwrap_or(now);
        period = (now, end);
        for (amount, description) in &new.proration_lines {
            let mut line = invoice_line(
                state,
                &id,
                *amount,
                &new.currency,
                description.clone(),
                Some((item, subscription_id.as_deref().unwrap_or_default())),
                period,
            );
            line["parent"]["subscription_item_details"]["proration"] = json!(true);
            lines.push(line);
        }
    } else if let Some(subscription) = &new.subscription {
        for item in subscription["items"]["data"].as_array().into_iter().flatten() {
            let item_period = (
                item["current_period_start"].as_i64().unwrap_or(now),
                item["current_period_end"].as_i64().unwrap_or(now),
            );
            period = item_period;
            let amount = if new.zero_amount {
                0
            } else {
                item["price"]["unit_amount"].as_i64().unwrap_or(0) * item["quantity"].as_i64().unwrap_or(1)
            };
            let description = format!(
                "{} × {} (at {} {} / {})",
                item["quantity"].as_i64().unwrap_or(1),
                item["price"]["nickname"].as_str().unwrap_or("Membership"),
                item["price"]["unit_amount"].as_i64().unwrap_or(0),
                new.currency.to_uppercase(),
                item["price"]["recurring"]["interval"].as_str().unwrap_or("month"),
            );
            lines.push(invoice_line(
                state,
                &id,
                amount,
                &new.currency,
                description,
                Some((item, subscription_id.as_deref().unwrap_or_default())),
                item_period,
            ));
        }
    }
    for (amount, description) in &new.one_off_lines {
        lines.push(invoice_line(state, &id, *amount, &new.currency, description.clone(), None, (now, now)));
    }
    let total: i64 = lines.iter().map(|line| line["amount"].as_i64().unwrap_or(0)).sum();
    let customer = new.customer.clone();
    let mut customer_object = customer.as_deref().and_then(|id| state.get(id)).cloned();
    let starting_balance = match &customer_object {
        Some(customer) if new.apply_customer_balance => customer["balance"].as_i64().unwrap_or(0),
        _ => 0,
    };
    let amount_due = (total + starting_balance).max(0);
    if new.apply_customer_balance
        && let Some(customer) = customer_object.as_mut()
    {
        customer["balance"] = json!((total + starting_balance).min(0));
        state.put(customer.clone());
    }
    let status = new.status.as_str();
    if !matches!(status, "draft" | "open" | "paid" | "void" | "uncollectible") {
        return Err(ApiError::invalid("status", format!("Unknown invoice status {status:?}")));
    }
    let finalized = status != "draft";
    let number = if finalized {
        let prefix = customer_object
            .as_ref()
            .and_then(|customer| text_of(customer, "invoice_prefix"))
            .unwrap_or_else(|| "FAKE".to_owned());
        Some(format!("{prefix}-{:04}", state.next_invoice_number()))
    } else {
        None
    };

    // The payment: made now for a paid invoice, attempted and declined for
    // an open one with a decline.
    let mut payments = Vec::new();
    let mut attempted = false;
    if amount_due > 0 && (status == "paid" || new.decline.is_some()) {
        let payment_method = match &new.payment_method {
            Some(payment_method) => payment_method.clone(),
            None => id_of(&create_payment_method(state, customer.as_deref())),
        };
        let payment_intent = create_payment_intent(
            state,
            NewPaymentIntent {
                amount: amount_due,
                currency: new.currency.clone(),
                customer: customer.clone(),
                payment_method: Some(payment_method),
                description: Some(match &subscription_id {
                    Some(_) => "Subscription update".to_owned(),
                    None => "Invoice payment".to_owned(),
                }),
                ..Default::default()
            },
        );
        let (payment_intent, paid) = match &new.decline {
            Some(decline) => (fail_payment_intent(state, payment_intent, decline).0, false),
            None => (succeed_payment_intent(state, payment_intent), true),
        };
        attempted = true;
        let mut payment = template("invoice_payment");
        payment["id"] = json!(state.new_id("inpay"));
        payment["amount_paid"] = if paid { json!(amount_due) } else { Value::Null };
        payment["amount_requested"] = json!(amount_due);
        payment["created"] = json!(now);
        payment["currency"] = json!(new.currency);
        payment["invoice"] = json!(id);
        payment["livemode"] = json!(false);
        payment["payment"] = json!({
            "payment_intent": payment_intent["id"],
            "type": "payment_intent",
        });
        payment["status"] = json!(if paid { "paid" } else { "open" });
        payment["status_transitions"] = json!({
            "canceled_at": null,
            "paid_at": if paid { json!(now) } else { Value::Null },
        });
        payments.push(payment);
    }
    let paid = status == "paid";
    let mut invoice = template("invoice");
    invoice["id"] = json!(id);
    invoice["account_country"] = json!("JP");
    invoice["amount_due"] = json!(amount_due);
    invoice["amount_overpaid"] = json!(0);
    invoice["amount_paid"] = json!(if paid { amount_due } else { 0 });
    invoice["amount_remaining"] = json!(if paid { 0 } else { amount_due });
    invoice["starting_balance"] = json!(starting_balance);
    invoice["attempt_count"] = json!(u8::from(attempted));
    invoice["attempted"] = json!(attempted || paid);
    invoice["auto_advance"] = json!(status == "draft" || status == "open");
    invoice["automatically_finalizes_at"] = Value::Null;
    invoice["billing_reason"] = json!(new.billing_reason);
    invoice["created"] = json!(now);
    invoice["currency"] = json!(new.currency);
    invoice["customer"] = json!(customer);
    invoice["customer_address"] = Value::Null;
    invoice["customer_email"] = customer_object.as_ref().map_or(Value::Null, |customer| customer["email"].clone());
    invoice["customer_name"] = customer_object.as_ref().map_or(Value::Null, |customer| customer["name"].clone());
    invoice["customer_shipping"] = Value::Null;
    invoice["due_date"] = Value::Null;
    invoice["effective_at"] = if finalized { json!(now) } else { Value::Null };
    invoice["ending_balance"] = if finalized { json!((total + starting_balance).min(0)) } else { Value::Null };
    invoice["from_invoice"] = Value::Null;
    // Stripe hosts every finalized invoice, where the customer can pay it
    // (or confirm a payment their bank wants authenticated).
    invoice["hosted_invoice_url"] =
        if finalized { json!(format!("{}/invoices/{id}", state.base_url)) } else { Value::Null };
    invoice["issuer"] = json!({ "type": "self" });
    invoice["last_finalization_error"] = Value::Null;
    invoice["lines"] = json!({
        "object": "list",
        "data": lines,
        "has_more": false,
        "url": format!("/v1/invoices/{id}/lines"),
    });
    invoice["metadata"] = Value::Object(new.metadata);
    invoice["next_payment_attempt"] = if status == "open" && attempted { json!(now + 3 * 86_400) } else { Value::Null };
    invoice["number"] = json!(number);
    invoice["parent"] = match &new.subscription {
        Some(subscription) => json!({
            "quote_details": null,
            "subscription_details": {
                "metadata": subscription["metadata"],
                "subscription": subscription["id"],
            },
            "type": "subscription_details",
        }),
        None => Value::Null,
    };
    invoice["payment_settings"] = json!({
        "default_mandate": null,
        "payment_method_options": null,
        "payment_method_types": null,
    });
    invoice["payments"] = json!({
        "object": "list",
        "data": payments,
        "has_more": false,
        "url": "/v1/invoice_payments",
    });
    invoice["period_end"] = json!(period.1.max(period.0));
    invoice["period_start"] = json!(period.0);
    invoice["rendering"] = Value::Null;
    invoice["shipping_cost"] = Value::Null;
    invoice["shipping_details"] = Value::Null;
    invoice["status"] = json!(status);
    invoice["status_transitions"] = json!({
        "finalized_at": if finalized { json!(now) } else { Value::Null },
        "marked_uncollectible_at": if status == "uncollectible" { json!(now) } else { Value::Null },
        "paid_at": if paid { json!(now) } else { Value::Null },
        "voided_at": if status == "void" { json!(now) } else { Value::Null },
    });
    invoice["subscription"] = json!(subscription_id);
    invoice["subtotal"] = json!(total);
    invoice["subtotal_excluding_tax"] = json!(total);
    invoice["total"] = json!(total);
    invoice["total_discount_amounts"] = json!([]);
    invoice["total_excluding_tax"] = json!(total);
    invoice["total_pretax_credit_amounts"] = json!([]);
    invoice["total_taxes"] = json!([]);
    invoice["webhooks_delivered_at"] = json!(now);
    Ok(state.put(invoice))
}

pub(crate) fn invoice_for_builder(
    state: &mut State,
    subscription: Option<&str>,
    amount: i64,
    currency: &str,
    status: &str,
    metadata: Metadata,
) -> Result<Value, ApiError> {
    let new = match subscription {
        Some(id) => {
            let subscription = state
                .get_of("subscription", id)
                .ok_or_else(|| ApiError::missing("subscription", id, "subscription"))?;
            // The builder's amount wins over the subscription's price.
            let mut billed = subscription.clone();
            if let Some(items) = billed["items"]["data"].as_array_mut() {
                items.truncate(1);
                if let Some(item) = items.first_mut() {
                    item["quantity"] = json!(1);
                    item["price"]["unit_amount"] = json!(amount);
                    item["price"]["unit_amount_decimal"] = json!(amount.to_string());
                }
            }
            NewInvoice {
                customer: text_of(&subscription, "customer"),
                subscription: Some(billed),
                billing_reason: "subscription_cycle".to_owned(),
                payment_method: text_of(&subscription, "default_payment_method"),
                ..Default::default()
            }
        }
        None => {
            let customer = create_customer(
                state,
                NewCustomer { email: Some("patron@example.com".to_owned()), ..Default::default() },
            );
            NewInvoice {
                customer: Some(id_of(&customer)),
                one_off_lines: vec![(amount, "Pledge".to_owned())],
                billing_reason: "manual".to_owned(),
                ..Default::default()
            }
        }
    };
    create_invoice(state, NewInvoice { currency: currency.to_owned(), status: status.to_owned(), metadata, ..new })
}

pub(crate) fn subscription_for_builder(
    state: &mut State,
    amount: i64,
    currency: &str,
    interval: &str,
    status: &str,
    metadata: Metadata,
) -> Result<Value, ApiError> {
    if !matches!(
        status,
        "active" | "trialing" | "past_due" | "unpaid" | "canceled" | "incomplete" | "incomplete_expired" | "paused"
    ) {
        return Err(ApiError::invalid("status", format!("Unknown subscription status {status:?}")));
    }
    let customer =
        create_customer(state, NewCustomer { email: Some("patron@example.com".to_owned()), ..Default::default() });
    let payment_method = create_payment_method(state, Some(&id_of(&customer)));
    let mut subscription = create_subscription(
        state,
        NewSubscription {
            customer: id_of(&customer),
            items: vec![PlanItem::new(amount, currency, Some(interval))],
            metadata,
            default_payment_method: Some(id_of(&payment_method)),
            trial_period_days: (status == "trialing").then_some(14),
            default_incomplete: matches!(status, "incomplete" | "incomplete_expired"),
            ..Default::default()
        },
    )?;
    let now = state.now();
    subscription["status"] = json!(status);
    if status == "canceled" {
        subscription["canceled_at"] = json!(now);
        subscription["ended_at"] = json!(now);
        subscription["cancellation_details"]["reason"] = json!("cancellation_requested");
    }
    Ok(state.put(subscription))
}

// ----- billing portal, events ----------------------------------------------

pub(crate) fn create_portal_session(
    state: &mut State,
    customer: &str,
    return_url: Option<String>,
) -> Result<Value, ApiError> {
    if state.get_of("customer", customer).is_none() {
        return Err(ApiError::missing("customer", customer, "customer"));
    }
    let id = state.new_id("bps");
    let mut session = template("billing_portal.session");
    session["id"] = json!(id);
    session["configuration"] = json!("bpc_fakeconfiguration000000");
    session["created"] = json!(state.now());
    session["customer"] = json!(customer);
    session["flow"] = Value::Null;
    session["livemode"] = json!(false);
    session["return_url"] = json!(return_url);
    session["url"] = json!(format!("{}/billing_portal/{id}", state.base_url));
    Ok(state.put(session))
}

/// Records the event Stripe would send about `object` now, when the fake
/// was asked to (`FakeStripe::emit_events`); it waits in
/// `State::pending_events` until the test delivers it.
pub(crate) fn emit(state: &mut State, event_type: &str, object: Value) {
    if state.emit_events {
        let created = state.now();
        let event = create_event(state, event_type, object, created);
        state.pending_events.push(event);
    }
}

pub(crate) fn create_event(state: &mut State, event_type: &str, object: Value, created: i64) -> Value {
    let mut event = template("event");
    event["id"] = json!(state.new_id("evt"));
    event["api_version"] = json!(API_VERSION);
    event["created"] = json!(created);
    event["data"] = json!({ "object": object });
    event["livemode"] = json!(false);
    event["pending_webhooks"] = json!(1);
    event["request"] = json!({ "id": null, "idempotency_key": null });
    event["type"] = json!(event_type);
    state.put(event)
}
