//! The Stripe adapter of the [`PaymentGateway`] port, through async-stripe.
//!
//! Requests are form-encoded by async-stripe's own request builder and sent
//! by kanpa's pooled client ([`Client`]); every response is parsed by async-stripe's types (a reply
//! that does not parse is an error) and read from the raw JSON Stripe sent.
//! Rate limits, 5xx answers and dropped connections are retried here with
//! the same idempotency key, so a retry can never charge twice.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use kanpa_ledger::{Currency, Locale, Money, Timestamp};
use serde_json::{Value, json};
use stripe::{IdempotencyKey, RequestStrategy, StripeError};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_shared::PaymentIntentStatus;

use crate::gateway::{
    ChargeOutcome, CheckoutMode, CheckoutRequest, CheckoutSession, Collected, GatewayError, NewPrice, OffSessionCharge,
    PaymentGateway, PriceIds, RefundRequest, Refunded, SavedCard, SessionState, SubscriptionAction,
};
use crate::stripe_api::{Client, KeepRaw};

/// How often a transient failure is retried before it is reported.
const ATTEMPTS: u32 = 6;

pub struct StripeGateway {
    client: Client,
}

impl StripeGateway {
    pub fn new(client: Client) -> StripeGateway {
        StripeGateway { client }
    }

    /// Sends a request, retrying what is transient with the same key, and
    /// returns Stripe's reply as async-stripe's type `T` (a reply that does
    /// not parse is an error) together with its raw JSON.
    async fn exchange<T: miniserde::Deserialize>(
        &self,
        method: StripeMethod,
        path: &str,
        form: Option<&Value>,
        key: Option<&str>,
    ) -> Result<(T, bytes::Bytes), StripeError> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut builder = RequestBuilder::new(method, path);
            if let Some(form) = form {
                builder = match method {
                    StripeMethod::Get => builder.query(form),
                    _ => builder.form(form),
                };
            }
            let mut request = builder.customize::<T>();
            if let Some(key) = key {
                let key = IdempotencyKey::new(key).map_err(|e| StripeError::ClientError(e.to_string()))?;
                request = request.request_strategy(RequestStrategy::Idempotent(key));
            }
            let raw = KeepRaw::new(&self.client);
            match request.send(&raw).await {
                Ok(typed) => return Ok((typed, raw.take())),
                Err(e) if attempt < ATTEMPTS && is_transient(&e) => {
                    metrics::counter!("kanpa_stripe_retries_total").increment(1);
                    tracing::warn!(path, attempt, error = %e, "Stripe request failed, retrying with the same key");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`exchange`](Self::exchange), read as the JSON Stripe sent.
    async fn send<T: miniserde::Deserialize>(
        &self,
        method: StripeMethod,
        path: &str,
        form: Option<&Value>,
        key: Option<&str>,
    ) -> Result<Value, StripeError> {
        let (_, body) = self.exchange::<T>(method, path, form, key).await?;
        serde_json::from_slice(&body).map_err(|e| StripeError::JSONDeserialize(e.to_string()))
    }
}

/// Rate limiting, lock conflicts, server errors and lost connections.
fn is_transient(error: &StripeError) -> bool {
    match error {
        StripeError::Stripe(_, status) => matches!(status, 409 | 429 | 500..=599),
        StripeError::ClientError(_) | StripeError::Timeout => true,
        StripeError::JSONDeserialize(_) | StripeError::ConfigError(_) => false,
    }
}

fn gateway_error(error: StripeError) -> GatewayError {
    let message = match &error {
        StripeError::Stripe(api, status) => {
            format!("{status} {}", api.message.clone().unwrap_or_else(|| format!("{:?}", api.type_)))
        }
        other => other.to_string(),
    };
    if is_transient(&error) { GatewayError::Transient(message) } else { GatewayError::Rejected(message) }
}

fn metadata(kind: &str, reference: &str) -> Value {
    json!({ "kanpa_kind": kind, "kanpa_ref": reference })
}

fn text(value: &Value, key: &str) -> Option<String> {
    value[key].as_str().map(str::to_owned)
}

/// An expandable field: the id whether Stripe sent an id or the object.
fn id_in(value: &Value, key: &str) -> Option<String> {
    match &value[key] {
        Value::String(id) => Some(id.clone()),
        Value::Object(object) => object.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn money(value: &Value, amount_key: &str) -> Result<Money, GatewayError> {
    let amount = value[amount_key].as_i64().ok_or_else(|| GatewayError::Rejected(format!("no {amount_key}")))?;
    let code = value["currency"].as_str().unwrap_or_default().to_ascii_uppercase();
    let currency = Currency::from_code(&code).map_err(|e| GatewayError::Rejected(e.to_string()))?;
    Ok(Money::new(amount, currency))
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<CheckoutSession, GatewayError> {
        let currency = request.amount.currency().stripe_code();
        let meta = metadata(request.kind, &request.reference);
        let mut form = json!({
            "client_reference_id": request.reference,
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "locale": match request.locale { Locale::Ja => "ja", Locale::En => "en" },
            "metadata": meta,
        });
        match &request.mode {
            CheckoutMode::Payment { konbini } => {
                form["mode"] = json!("payment");
                form["customer_email"] = json!(request.email);
                form["line_items"] = json!([{
                    "quantity": 1,
                    "price_data": {
                        "currency": currency,
                        "unit_amount": request.amount.stripe_amount(),
                        "product_data": { "name": request.description },
                    },
                }]);
                form["payment_intent_data"] = json!({ "metadata": meta, "description": request.description });
                form["payment_method_types"] = if *konbini { json!(["card", "konbini"]) } else { json!(["card"]) };
            }
            CheckoutMode::Setup => {
                // A saved card can only be charged later through a customer.
                let customer = self
                    .send::<stripe_shared::Customer>(
                        StripeMethod::Post,
                        "/customers",
                        Some(&json!({ "email": request.email, "metadata": meta })),
                        Some(&format!("{}:customer", request.idempotency_key)),
                    )
                    .await
                    .map_err(gateway_error)?;
                form["mode"] = json!("setup");
                form["currency"] = json!(currency);
                form["customer"] = json!(text(&customer, "id"));
                form["payment_method_types"] = json!(["card"]);
                form["setup_intent_data"] = json!({ "metadata": meta, "description": request.description });
            }
            CheckoutMode::Subscription { price, anchor } => {
                form["mode"] = json!("subscription");
                form["customer_email"] = json!(request.email);
                form["line_items"] = json!([{ "quantity": 1, "price": price }]);
                form["payment_method_types"] = json!(["card"]);
                let mut data = json!({ "metadata": meta, "description": request.description });
                if let Some(anchor) = anchor {
                    data["billing_cycle_anchor"] = json!(anchor.unix_seconds());
                    data["proration_behavior"] = json!("create_prorations");
                }
                form["subscription_data"] = data;
            }
        }
        let session = self
            .send::<stripe_shared::CheckoutSession>(
                StripeMethod::Post,
                "/checkout/sessions",
                Some(&form),
                Some(&request.idempotency_key),
            )
            .await
            .map_err(gateway_error)?;
        match (text(&session, "id"), text(&session, "url")) {
            (Some(id), Some(url)) => Ok(CheckoutSession { id, url }),
            _ => Err(GatewayError::Rejected("Checkout session without id or url".into())),
        }
    }

    async fn create_price(&self, price: &NewPrice) -> Result<PriceIds, GatewayError> {
        let meta = metadata(price.kind, &price.reference);
        let mut form = json!({
            "currency": price.amount.currency().stripe_code(),
            "unit_amount": price.amount.stripe_amount(),
            "recurring": { "interval": "month" },
            "metadata": meta,
        });
        match &price.product {
            Some(product) => form["product"] = json!(product),
            None => form["product_data"] = json!({ "name": price.product_name, "metadata": meta }),
        }
        let created = self
            .send::<stripe_shared::Price>(StripeMethod::Post, "/prices", Some(&form), Some(&price.idempotency_key))
            .await
            .map_err(gateway_error)?;
        match (id_in(&created, "product"), text(&created, "id")) {
            (Some(product), Some(price)) => Ok(PriceIds { product, price }),
            _ => Err(GatewayError::Rejected("price without id or product".into())),
        }
    }

    async fn change_subscription(
        &self,
        subscription: &str,
        action: &SubscriptionAction,
        idempotency_key: &str,
    ) -> Result<(), GatewayError> {
        let path = format!("/subscriptions/{subscription}");
        let form = match action {
            SubscriptionAction::CancelAtPeriodEnd(cancel) => json!({ "cancel_at_period_end": cancel }),
            SubscriptionAction::Pause { until } => {
                json!({ "pause_collection": { "behavior": "void", "resumes_at": until.unix_seconds() } })
            }
            SubscriptionAction::Resume => json!({ "pause_collection": "" }),
            SubscriptionAction::ChangePrice { price, prorate_now } => {
                let current = self
                    .send::<stripe_shared::Subscription>(StripeMethod::Get, &path, None, None)
                    .await
                    .map_err(gateway_error)?;
                let item = text(&current["items"]["data"][0], "id")
                    .ok_or_else(|| GatewayError::Rejected(format!("{subscription} has no item")))?;
                json!({
                    "items": [{ "id": item, "price": price }],
                    "proration_behavior": if *prorate_now { "always_invoice" } else { "none" },
                })
            }
        };
        self.send::<stripe_shared::Subscription>(StripeMethod::Post, &path, Some(&form), Some(idempotency_key))
            .await
            .map_err(gateway_error)?;
        Ok(())
    }

    async fn billing_portal(&self, customer: &str, return_url: &str) -> Result<String, GatewayError> {
        let form = json!({ "customer": customer, "return_url": return_url });
        // async-stripe keeps the portal session type in a crate kanpa does
        // not build; the answer is still parsed as JSON and read for its url.
        let session = self
            .send::<miniserde::json::Value>(StripeMethod::Post, "/billing_portal/sessions", Some(&form), None)
            .await
            .map_err(gateway_error)?;
        text(&session, "url").ok_or_else(|| GatewayError::Rejected("portal session without url".into()))
    }

    async fn expire_checkout(&self, session: &str) -> Result<SessionState, GatewayError> {
        let path = format!("/checkout/sessions/{session}");
        let expired = self
            .send::<stripe_shared::CheckoutSession>(StripeMethod::Post, &format!("{path}/expire"), None, None)
            .await;
        match expired {
            Ok(_) => Ok(SessionState::Expired),
            // Not open any more: find out whether it was paid or had expired.
            Err(StripeError::Stripe(_, 400)) => {
                let current = self
                    .send::<stripe_shared::CheckoutSession>(StripeMethod::Get, &path, None, None)
                    .await
                    .map_err(gateway_error)?;
                Ok(if current["status"] == "complete" { SessionState::Complete } else { SessionState::Expired })
            }
            Err(e) => Err(gateway_error(e)),
        }
    }

    async fn saved_card(&self, setup_intent: &str) -> Result<SavedCard, GatewayError> {
        let path = format!("/setup_intents/{setup_intent}");
        let intent = self
            .send::<stripe_shared::SetupIntent>(StripeMethod::Get, &path, None, None)
            .await
            .map_err(gateway_error)?;
        match (id_in(&intent, "customer"), id_in(&intent, "payment_method")) {
            (Some(customer), Some(payment_method)) => Ok(SavedCard { customer, payment_method }),
            _ => Err(GatewayError::Rejected(format!("setup intent {setup_intent} saved no card"))),
        }
    }

    async fn charge_off_session(&self, charge: &OffSessionCharge) -> Result<ChargeOutcome, GatewayError> {
        let form = json!({
            "amount": charge.amount.stripe_amount(),
            "currency": charge.amount.currency().stripe_code(),
            "customer": charge.card.customer,
            "payment_method": charge.card.payment_method,
            "off_session": true,
            "confirm": true,
            "description": charge.description,
            "metadata": metadata(charge.kind, &charge.reference),
            "expand": [EXPAND_FEE],
        });
        let sent = self
            .exchange::<stripe_shared::PaymentIntent>(
                StripeMethod::Post,
                "/payment_intents",
                Some(&form),
                Some(&charge.idempotency_key),
            )
            .await;
        match sent {
            Ok((intent, _)) => {
                let id = intent.id.to_string();
                let collected = match expanded_collection(&intent)? {
                    Some(collected) => Some(collected),
                    None => self.collected(&id).await?,
                };
                match collected {
                    Some(collected) => Ok(ChargeOutcome::Succeeded(collected)),
                    None if intent.status == PaymentIntentStatus::RequiresAction => {
                        Ok(ChargeOutcome::AuthenticationRequired { payment_intent: Some(id) })
                    }
                    None => Ok(ChargeOutcome::Declined {
                        code: intent.status.as_str().to_owned(),
                        payment_intent: Some(id),
                    }),
                }
            }
            Err(StripeError::Stripe(api, 402)) => {
                let code = api.code.as_ref().map(|c| c.as_str().to_owned());
                let intent = api.payment_intent.as_ref().map(|p| p.id.to_string());
                if code.as_deref() == Some("authentication_required")
                    || api.decline_code.as_deref() == Some("authentication_required")
                {
                    Ok(ChargeOutcome::AuthenticationRequired { payment_intent: intent })
                } else {
                    let code = api.decline_code.clone().or(code).unwrap_or_else(|| "card_declined".into());
                    Ok(ChargeOutcome::Declined { code, payment_intent: intent })
                }
            }
            Err(e) => Err(gateway_error(e)),
        }
    }

    async fn refund(&self, refund: &RefundRequest) -> Result<Refunded, GatewayError> {
        let form = json!({
            "payment_intent": refund.payment_intent,
            "amount": refund.amount.stripe_amount(),
            "metadata": metadata(refund.kind, &refund.reference),
        });
        let created = self
            .send::<stripe_shared::Refund>(StripeMethod::Post, "/refunds", Some(&form), Some(&refund.idempotency_key))
            .await
            .map_err(gateway_error)?;
        let id = text(&created, "id").ok_or_else(|| GatewayError::Rejected("refund without id".into()))?;
        let amount = created["amount"].as_i64().unwrap_or(refund.amount.stripe_amount());
        Ok(Refunded { id, amount: Money::new(amount, refund.amount.currency()) })
    }

    async fn collected(&self, payment_intent: &str) -> Result<Option<Collected>, GatewayError> {
        let path = format!("/payment_intents/{payment_intent}");
        let expand = json!({ "expand": [EXPAND_FEE] });
        let (intent, _) = self
            .exchange::<stripe_shared::PaymentIntent>(StripeMethod::Get, &path, Some(&expand), None)
            .await
            .map_err(gateway_error)?;
        if intent.status != PaymentIntentStatus::Succeeded {
            return Ok(None);
        }
        if let Some(collected) = expanded_collection(&intent)? {
            return Ok(Some(collected));
        }
        // Not expanded (an older API or proxy): read the charge and its
        // balance transaction one by one.
        let charge_id = intent
            .latest_charge
            .as_ref()
            .map(|charge| charge.id().to_string())
            .ok_or_else(|| GatewayError::Rejected(format!("{payment_intent} succeeded without a charge")))?;
        let charge = self
            .send::<stripe_shared::Charge>(StripeMethod::Get, &format!("/charges/{charge_id}"), None, None)
            .await
            .map_err(gateway_error)?;
        let gross = money(&charge, "amount")?;
        let balance_transaction = id_in(&charge, "balance_transaction");
        let fee = match &balance_transaction {
            Some(id) => {
                let path = format!("/balance_transactions/{id}");
                let bt = self
                    .send::<stripe_shared::BalanceTransaction>(StripeMethod::Get, &path, None, None)
                    .await
                    .map_err(gateway_error)?;
                money(&bt, "fee")?
            }
            None => Money::new(0, gross.currency()),
        };
        let created = charge["created"].as_i64().and_then(Timestamp::from_unix_seconds).unwrap_or_else(Timestamp::now);
        Ok(Some(Collected {
            payment_intent: payment_intent.to_owned(),
            charge: charge_id,
            balance_transaction,
            gross,
            fee,
            created,
        }))
    }
}

/// Asks Stripe to embed the charge and its balance transaction (with the
/// fee) in a PaymentIntent, so one request tells what was collected.
const EXPAND_FEE: &str = "latest_charge.balance_transaction";

/// What a succeeded PaymentIntent collected, when its charge and balance
/// transaction came embedded: read from async-stripe's typed reply, which
/// the request parsed anyway.
fn expanded_collection(intent: &stripe_shared::PaymentIntent) -> Result<Option<Collected>, GatewayError> {
    if intent.status != PaymentIntentStatus::Succeeded {
        return Ok(None);
    }
    let Some(charge) = intent.latest_charge.as_ref().and_then(|charge| charge.as_object()) else {
        return Ok(None);
    };
    let Some(bt) = charge.balance_transaction.as_ref().and_then(|bt| bt.as_object()) else {
        return Ok(None);
    };
    let currency = |code: &stripe_types::Currency| {
        Currency::from_code(&code.to_string().to_ascii_uppercase()).map_err(|e| GatewayError::Rejected(e.to_string()))
    };
    Ok(Some(Collected {
        payment_intent: intent.id.to_string(),
        charge: charge.id.to_string(),
        balance_transaction: Some(bt.id.to_string()),
        gross: Money::new(charge.amount, currency(&charge.currency)?),
        fee: Money::new(bt.fee, currency(&bt.currency)?),
        created: Timestamp::from_unix_seconds(charge.created).unwrap_or_else(Timestamp::now),
    }))
}

/// Metadata Stripe echoes back: kanpa's kind and reference of a payment.
pub fn kanpa_reference(object: &Value) -> Option<(String, String)> {
    let meta: HashMap<String, String> = serde_json::from_value(object["metadata"].clone()).ok()?;
    Some((meta.get("kanpa_kind")?.clone(), meta.get("kanpa_ref")?.clone()))
}
