//! The sandbox adapter of the [`PaymentGateway`] port: kanpa's default when
//! no Stripe keys are configured, so every flow can be clicked through
//! offline. Its Checkout page (served by the server under `/sandbox/`) is
//! clearly marked as a test and offers success, a decline, and a card that
//! needs authentication. What the payer chooses becomes Stripe-shaped events
//! stored in the same inbox as real webhooks, and is applied by the same
//! handlers. Production configuration refuses it.
//!
//! Saved cards remember how they will behave when charged off-session:
//! a card saved with "needs authentication" answers every off-session
//! charge with `authentication_required`.

use async_trait::async_trait;
use kanpa_ledger::reconcile::StatementLine;
use kanpa_ledger::{Currency, Db, Money, Timestamp, on_db, on_tx};
use kanpa_messaging::inbox::{self, IncomingEvent, Via};
use rand::Rng;
use serde_json::{Value, json};

use crate::gateway::{
    ChargeOutcome, CheckoutMode, CheckoutRequest, CheckoutSession, Collected, GatewayError, NewPrice, OffSessionCharge,
    PaymentGateway, PriceIds, RefundRequest, Refunded, SavedCard, SessionState, SubscriptionAction,
};

pub struct Sandbox {
    db: Db,
    base_url: String,
}

/// A sandbox Checkout session, as its page shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SandboxSession {
    pub id: String,
    pub mode: String,
    /// The recurring price of a subscription-mode session.
    pub price_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub description: String,
    pub email: String,
    pub reference: String,
    pub success_url: String,
    pub cancel_url: String,
    pub status: String,
}

impl SandboxSession {
    pub fn money(&self) -> Option<Money> {
        Currency::from_code(&self.currency).ok().map(|c| Money::new(self.amount, c))
    }

    pub fn is_setup(&self) -> bool {
        self.mode == "setup"
    }
}

/// A button on the sandbox Checkout page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxAction {
    /// Pay now (payment mode) or save a card that will pay (setup mode).
    Succeed,
    /// The card is declined; the session stays open.
    Decline,
    /// Payment mode: the bank asks for authentication, which then passes
    /// (`true`) or fails. Setup mode: save a card that will ask for
    /// authentication when charged later.
    Authenticate(bool),
}

/// What the page should show after a button.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxResult {
    /// Done: go to this URL.
    Completed { redirect: String },
    /// Declined: show the page again with the reason.
    Declined { code: &'static str },
    /// The session was already completed or expired.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("no sandbox session {0}")]
    UnknownSession(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Stripe's Japanese card fee, which the sandbox charges too: 3.6 %,
/// rounded half up to the yen (or cent).
pub fn sandbox_fee(gross: Money) -> Money {
    Money::new((gross.amount() * 36 + 500) / 1000, gross.currency())
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..24).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

impl Sandbox {
    pub fn new(db: Db, base_url: impl Into<String>) -> Sandbox {
        Sandbox { db, base_url: base_url.into().trim_end_matches('/').to_owned() }
    }

    pub async fn session(db: &Db, id: &str) -> Result<Option<SandboxSession>, sqlx::Error> {
        let sql = "SELECT id, mode, price_id, amount, currency, description, email, reference, success_url,
                       cancel_url, status
                   FROM sandbox_sessions WHERE id = $1";
        Ok(on_db!(db, p => sqlx::query_as(sql).bind(id).fetch_optional(p).await?))
    }

    /// Applies a button of the sandbox Checkout page.
    pub async fn act(db: &Db, id: &str, action: SandboxAction) -> Result<SandboxResult, SandboxError> {
        let session = Sandbox::session(db, id).await?.ok_or_else(|| SandboxError::UnknownSession(id.to_owned()))?;
        if session.status != "open" {
            return Ok(SandboxResult::Closed);
        }
        let setup = session.is_setup();
        let behaviour = match (action, setup) {
            (SandboxAction::Decline, _) | (SandboxAction::Authenticate(false), false) => {
                let code = if action == SandboxAction::Decline { "card_declined" } else { "authentication_failed" };
                return Ok(SandboxResult::Declined { code });
            }
            (SandboxAction::Succeed, _) | (SandboxAction::Authenticate(true), false) => "succeeds",
            (SandboxAction::Authenticate(_), true) => "requires_authentication",
        };
        let suffix = random_suffix();
        let now = Timestamp::now();
        let mut tx = db.begin().await?;
        let claimed = on_tx!(&mut tx, c => sqlx::query(
            "UPDATE sandbox_sessions SET status = 'complete' WHERE id = $1 AND status = 'open'")
            .bind(id).execute(c).await?.rows_affected());
        if claimed == 0 {
            return Ok(SandboxResult::Closed);
        }
        let customer = format!("cus_sandbox_{suffix}");
        // Pledges pay or save a card; only memberships subscribe.
        let kind = if session.mode == "subscription" { "membership" } else { "pledge" };
        let meta = json!({ "kanpa_kind": kind, "kanpa_ref": session.reference });
        let mut object = json!({
            "id": session.id, "object": "checkout.session", "mode": session.mode, "status": "complete",
            "client_reference_id": session.reference, "metadata": meta, "customer": customer,
            "customer_details": { "email": session.email }, "currency": session.currency.to_ascii_lowercase(),
            "amount_total": if setup { Value::Null } else { json!(session.amount) },
            "payment_intent": Value::Null, "setup_intent": Value::Null, "livemode": false,
        });
        let mut events = Vec::new();
        let pm = format!("pm_sandbox_{suffix}");
        let insert = "INSERT INTO sandbox_payments
                      (id, idempotency_key, kind, reference, behaviour, amount, currency, status, created_at)
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        on_tx!(&mut tx, c => sqlx::query(insert)
            .bind(&pm).bind(format!("{id}:pm")).bind("payment_method").bind(&session.reference).bind(behaviour)
            .bind(0_i64).bind(&session.currency).bind("saved").bind(now)
            .execute(c).await?.rows_affected());
        if session.mode == "subscription" {
            let pi = format!("pi_sandbox_{suffix}");
            on_tx!(&mut tx, c => sqlx::query(insert)
                .bind(&pi).bind(format!("{id}:pi")).bind("payment_intent").bind(&session.reference)
                .bind("succeeds").bind(session.amount).bind(&session.currency).bind("succeeded").bind(now)
                .execute(c).await?.rows_affected());
            let billed = Subscribed {
                suffix: &suffix,
                customer: &customer,
                price: session.price_id.as_deref().unwrap_or_default(),
                amount: session.amount,
                currency: &session.currency,
                meta: &meta,
                payment_intent: &pi,
                now,
            };
            let (subscription, invoice) = billed.objects();
            object["subscription"] = subscription["id"].clone();
            object["invoice"] = invoice["id"].clone();
            object["payment_status"] = json!("paid");
            events.push(("customer.subscription.created", subscription));
            events.push(("invoice.paid", invoice));
        } else if setup {
            let seti = format!("seti_sandbox_{suffix}");
            object["setup_intent"] = json!(seti);
            object["payment_status"] = json!("no_payment_required");
            let intent = json!({ "id": seti, "object": "setup_intent", "status": "succeeded", "customer": customer,
                                 "payment_method": pm, "metadata": meta, "usage": "off_session" });
            events.push(("setup_intent.succeeded", intent));
        } else {
            let pi = format!("pi_sandbox_{suffix}");
            on_tx!(&mut tx, c => sqlx::query(insert)
                .bind(&pi).bind(format!("{id}:pi")).bind("payment_intent").bind(&session.reference)
                .bind("succeeds").bind(session.amount).bind(&session.currency).bind("succeeded").bind(now)
                .execute(c).await?.rows_affected());
            object["payment_intent"] = json!(pi);
            object["payment_status"] = json!("paid");
            events.push((
                "payment_intent.succeeded",
                payment_intent_json(&pi, &session.amount, &session.currency, &meta),
            ));
        }
        events.insert(0, ("checkout.session.completed", object));
        for (event_type, object) in events {
            store_event(&mut tx, event_type, object).await?;
        }
        tx.commit().await?;
        Ok(SandboxResult::Completed { redirect: session.success_url.replace("{CHECKOUT_SESSION_ID}", id) })
    }
}

/// What completing a subscription-mode session starts: an active
/// subscription and its first invoice, paid, in Stripe's shapes (API
/// 2025-09-30: periods on the items, the subscription and payment intent
/// of an invoice under `parent` and `payments`).
struct Subscribed<'a> {
    suffix: &'a str,
    customer: &'a str,
    price: &'a str,
    amount: i64,
    currency: &'a str,
    meta: &'a Value,
    payment_intent: &'a str,
    now: Timestamp,
}

impl Subscribed<'_> {
    fn objects(&self) -> (Value, Value) {
        let start = self.now.unix_seconds();
        let end = self
            .now
            .as_offset()
            .checked_add(time::Duration::days(i64::from(days_in_month(self.now))))
            .map_or(start + 30 * 86_400, |t| t.unix_timestamp());
        let currency = self.currency.to_ascii_lowercase();
        let (sub, invoice) = (format!("sub_sandbox_{}", self.suffix), format!("in_sandbox_{}", self.suffix));
        let subscription = json!({
            "id": sub, "object": "subscription", "status": "active", "customer": self.customer,
            "metadata": self.meta, "currency": currency, "created": start, "start_date": start,
            "cancel_at_period_end": false, "cancel_at": null, "canceled_at": null, "ended_at": null,
            "pause_collection": null, "latest_invoice": invoice, "livemode": false,
            "items": { "object": "list", "data": [{
                "id": format!("si_sandbox_{}", self.suffix), "object": "subscription_item", "quantity": 1,
                "current_period_start": start, "current_period_end": end,
                "price": { "id": self.price, "object": "price", "unit_amount": self.amount, "currency": currency,
                           "recurring": { "interval": "month", "interval_count": 1 }, "type": "recurring" },
            }] },
        });
        let invoice = json!({
            "id": invoice, "object": "invoice", "status": "paid", "customer": self.customer, "currency": currency,
            "amount_due": self.amount, "amount_paid": self.amount, "amount_remaining": 0,
            "billing_reason": "subscription_create", "created": start, "period_start": start, "period_end": start,
            "hosted_invoice_url": null, "livemode": false, "attempt_count": 1,
            "status_transitions": { "paid_at": start },
            "parent": { "type": "subscription_details",
                        "subscription_details": { "subscription": sub, "metadata": self.meta } },
            "payments": { "object": "list", "data": [{
                "object": "invoice_payment", "status": "paid", "amount_paid": self.amount,
                "payment": { "type": "payment_intent", "payment_intent": self.payment_intent },
            }] },
            "lines": { "object": "list", "data": [{
                "amount": self.amount, "currency": currency, "period": { "start": start, "end": end },
                "pricing": { "type": "price_details", "price_details": { "price": self.price } },
            }] },
        });
        (subscription, invoice)
    }
}

fn days_in_month(at: Timestamp) -> u8 {
    let t = at.as_offset();
    t.month().length(t.year())
}

fn payment_intent_json(id: &str, amount: &i64, currency: &str, meta: &Value) -> Value {
    json!({ "id": id, "object": "payment_intent", "status": "succeeded", "amount": amount,
            "amount_received": amount, "currency": currency.to_ascii_lowercase(), "metadata": meta,
            "latest_charge": id.replace("pi_", "ch_") })
}

async fn store_event(tx: &mut kanpa_ledger::Tx, event_type: &str, object: Value) -> Result<(), sqlx::Error> {
    let event = json!({
        "id": format!("evt_sandbox_{}", random_suffix()), "object": "event", "type": event_type,
        "created": Timestamp::now().unix_seconds(), "livemode": false, "api_version": "2025-09-30.clover",
        "pending_webhooks": 0, "request": { "id": null, "idempotency_key": null },
        "data": { "object": object },
    });
    let incoming = IncomingEvent::from_json(&event.to_string()).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    inbox::store(tx, &incoming, Via::Webhook).await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct PaymentRow {
    id: String,
    amount: i64,
    currency: String,
    status: String,
    created_at: Timestamp,
}

fn gateway_db(e: sqlx::Error) -> GatewayError {
    GatewayError::Transient(format!("sandbox database: {e}"))
}

#[async_trait]
impl PaymentGateway for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<CheckoutSession, GatewayError> {
        let (mode, price) = match &request.mode {
            CheckoutMode::Payment { .. } => ("payment", None),
            CheckoutMode::Setup => ("setup", None),
            CheckoutMode::Subscription { price, .. } => ("subscription", Some(price.as_str())),
        };
        let id = format!("cs_sandbox_{}", random_suffix());
        let sql = "INSERT INTO sandbox_sessions (id, idempotency_key, mode, amount, currency, description, email,
                       reference, success_url, cancel_url, status, created_at, price_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'open', $11, $12)
                   ON CONFLICT (idempotency_key) DO NOTHING";
        let replay = "SELECT id FROM sandbox_sessions WHERE idempotency_key = $1";
        let mut tx = self.db.begin().await.map_err(gateway_db)?;
        let id: String = on_tx!(&mut tx, c => {
            sqlx::query(sql)
                .bind(&id).bind(&request.idempotency_key).bind(mode).bind(request.amount.amount())
                .bind(request.amount.currency().code()).bind(&request.description).bind(&request.email)
                .bind(&request.reference).bind(&request.success_url).bind(&request.cancel_url).bind(Timestamp::now())
                .bind(price).execute(&mut *c).await.map_err(gateway_db)?;
            sqlx::query_scalar(replay).bind(&request.idempotency_key).fetch_one(c).await.map_err(gateway_db)?
        });
        tx.commit().await.map_err(gateway_db)?;
        Ok(CheckoutSession { url: format!("{}/sandbox/checkout/{id}", self.base_url), id })
    }

    async fn create_price(&self, price: &NewPrice) -> Result<PriceIds, GatewayError> {
        let suffix = random_suffix();
        let product = price.product.clone().unwrap_or_else(|| format!("prod_sandbox_{suffix}"));
        let sql = "INSERT INTO sandbox_prices (id, idempotency_key, product, amount, currency, reference, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (idempotency_key) DO NOTHING";
        let replay = "SELECT id, product FROM sandbox_prices WHERE idempotency_key = $1";
        let mut tx = self.db.begin().await.map_err(gateway_db)?;
        let (id, product): (String, String) = on_tx!(&mut tx, c => {
            sqlx::query(sql)
                .bind(format!("price_sandbox_{suffix}")).bind(&price.idempotency_key).bind(&product)
                .bind(price.amount.amount()).bind(price.amount.currency().code()).bind(&price.reference)
                .bind(Timestamp::now()).execute(&mut *c).await.map_err(gateway_db)?;
            sqlx::query_as(replay).bind(&price.idempotency_key).fetch_one(c).await.map_err(gateway_db)?
        });
        tx.commit().await.map_err(gateway_db)?;
        Ok(PriceIds { product, price: id })
    }

    /// Applies the change to the subscription as the sandbox last reported
    /// it and reports it again as `customer.subscription.updated`. Price
    /// changes take effect without a proration invoice in the sandbox.
    async fn change_subscription(
        &self,
        subscription: &str,
        action: &SubscriptionAction,
        _idempotency_key: &str,
    ) -> Result<(), GatewayError> {
        let mut tx = self.db.begin().await.map_err(gateway_db)?;
        let known = inbox::newest_object(&mut tx, subscription).await.map_err(gateway_db)?;
        let mut object: Value = known
            .and_then(|text| serde_json::from_str(&text).ok())
            .filter(|o: &Value| o["object"] == "subscription")
            .ok_or_else(|| GatewayError::Rejected(format!("No such subscription: '{subscription}'")))?;
        if object["status"] == "canceled" {
            return Err(GatewayError::Rejected("A canceled subscription cannot be changed.".into()));
        }
        match action {
            SubscriptionAction::CancelAtPeriodEnd(cancel) => {
                object["cancel_at_period_end"] = json!(cancel);
                object["cancel_at"] =
                    if *cancel { object["items"]["data"][0]["current_period_end"].clone() } else { Value::Null };
            }
            SubscriptionAction::Pause { until } => {
                object["pause_collection"] = json!({ "behavior": "void", "resumes_at": until.unix_seconds() });
            }
            SubscriptionAction::Resume => object["pause_collection"] = Value::Null,
            SubscriptionAction::ChangePrice { price, .. } => {
                let sql = "SELECT amount FROM sandbox_prices WHERE id = $1";
                let amount: Option<i64> = on_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(price)
                    .fetch_optional(c).await.map_err(gateway_db)?);
                let amount = amount.ok_or_else(|| GatewayError::Rejected(format!("No such price: '{price}'")))?;
                object["items"]["data"][0]["price"]["id"] = json!(price);
                object["items"]["data"][0]["price"]["unit_amount"] = json!(amount);
            }
        }
        store_event(&mut tx, "customer.subscription.updated", object).await.map_err(gateway_db)?;
        tx.commit().await.map_err(gateway_db)?;
        Ok(())
    }

    async fn billing_portal(&self, _customer: &str, _return_url: &str) -> Result<String, GatewayError> {
        Err(GatewayError::Rejected("the sandbox has no billing portal: its test cards never need updating".into()))
    }

    async fn expire_checkout(&self, session: &str) -> Result<SessionState, GatewayError> {
        let mut tx = self.db.begin().await.map_err(gateway_db)?;
        let sql = "UPDATE sandbox_sessions SET status = 'expired' WHERE id = $1 AND status = 'open'";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(session).execute(c).await.map_err(gateway_db)?.rows_affected());
        let status: Option<String> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT status FROM sandbox_sessions WHERE id = $1").bind(session).fetch_optional(c).await.map_err(gateway_db)?);
        tx.commit().await.map_err(gateway_db)?;
        Ok(if status.as_deref() == Some("complete") { SessionState::Complete } else { SessionState::Expired })
    }

    async fn saved_card(&self, setup_intent: &str) -> Result<SavedCard, GatewayError> {
        let suffix = setup_intent.strip_prefix("seti_sandbox_").unwrap_or_default();
        let pm = format!("pm_sandbox_{suffix}");
        let sql = "SELECT COUNT(*) FROM sandbox_payments WHERE id = $1 AND kind = 'payment_method'";
        let found: i64 =
            on_db!(&self.db, p => sqlx::query_scalar(sql).bind(&pm).fetch_one(p).await.map_err(gateway_db)?);
        if found == 0 {
            return Err(GatewayError::Rejected(format!("no sandbox setup intent {setup_intent}")));
        }
        Ok(SavedCard { customer: format!("cus_sandbox_{suffix}"), payment_method: pm })
    }

    async fn charge_off_session(&self, charge: &OffSessionCharge) -> Result<ChargeOutcome, GatewayError> {
        let select = "SELECT id, amount, currency, status, created_at
                      FROM sandbox_payments WHERE idempotency_key = $1";
        let mut tx = self.db.begin().await.map_err(gateway_db)?;
        let existing: Option<PaymentRow> = on_tx!(&mut tx, c => sqlx::query_as(select)
            .bind(&charge.idempotency_key).fetch_optional(c).await.map_err(gateway_db)?);
        let row = match existing {
            Some(row) => row,
            None => {
                let card: Option<String> = on_tx!(&mut tx, c => sqlx::query_scalar(
                    "SELECT behaviour FROM sandbox_payments WHERE id = $1 AND kind = 'payment_method'")
                    .bind(&charge.card.payment_method).fetch_optional(c).await.map_err(gateway_db)?);
                let behaviour = card.ok_or_else(|| {
                    GatewayError::Rejected(format!("No such PaymentMethod: '{}'", charge.card.payment_method))
                })?;
                let status = match behaviour.as_str() {
                    "succeeds" => "succeeded",
                    "requires_authentication" => "requires_action",
                    _ => "requires_payment_method",
                };
                let row = PaymentRow {
                    id: format!("pi_sandbox_{}", random_suffix()),
                    amount: charge.amount.amount(),
                    currency: charge.amount.currency().code().to_owned(),
                    status: status.to_owned(),
                    created_at: Timestamp::now(),
                };
                let insert = "INSERT INTO sandbox_payments
                              (id, idempotency_key, kind, reference, behaviour, amount, currency, status, created_at)
                              VALUES ($1, $2, 'payment_intent', $3, $4, $5, $6, $7, $8)";
                on_tx!(&mut tx, c => sqlx::query(insert)
                    .bind(&row.id).bind(&charge.idempotency_key).bind(&charge.reference).bind(&behaviour)
                    .bind(row.amount).bind(&row.currency).bind(&row.status).bind(row.created_at)
                    .execute(c).await.map_err(gateway_db)?.rows_affected());
                if row.status == "succeeded" {
                    let meta = json!({ "kanpa_kind": charge.kind, "kanpa_ref": charge.reference });
                    let object = payment_intent_json(&row.id, &row.amount, &row.currency, &meta);
                    store_event(&mut tx, "payment_intent.succeeded", object).await.map_err(gateway_db)?;
                }
                row
            }
        };
        tx.commit().await.map_err(gateway_db)?;
        let payment_intent = Some(row.id.clone());
        Ok(match row.status.as_str() {
            "succeeded" => ChargeOutcome::Succeeded(collected(&row)?),
            "requires_action" => ChargeOutcome::AuthenticationRequired { payment_intent },
            _ => ChargeOutcome::Declined { code: "card_declined".into(), payment_intent },
        })
    }

    /// Refunds a sandbox payment and reports it as Stripe would, with a
    /// `charge.refunded` event carrying the cumulative amount refunded. The
    /// same idempotency key refunds once.
    async fn refund(&self, refund: &RefundRequest) -> Result<Refunded, GatewayError> {
        let mut tx = self.db.begin().await.map_err(gateway_db)?;
        let key = refund.idempotency_key.clone();
        let done: Option<(String, i64)> = on_tx!(&mut tx, c => sqlx::query_as(
            "SELECT id, amount FROM sandbox_refunds WHERE idempotency_key = $1")
            .bind(&key).fetch_optional(c).await.map_err(gateway_db)?);
        if let Some((id, amount)) = done {
            return Ok(Refunded { id, amount: Money::new(amount, refund.amount.currency()) });
        }
        let sql = "SELECT id, amount, currency, status, created_at
                   FROM sandbox_payments WHERE id = $1 AND kind = 'payment_intent'";
        let payment: Option<PaymentRow> = on_tx!(&mut tx, c => sqlx::query_as(sql)
            .bind(&refund.payment_intent).fetch_optional(c).await.map_err(gateway_db)?);
        let payment = payment
            .filter(|p| p.status == "succeeded")
            .ok_or_else(|| GatewayError::Rejected(format!("No refundable payment {}", refund.payment_intent)))?;
        let sql = "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM sandbox_refunds WHERE payment_intent = $1";
        let refunded: i64 = on_tx!(&mut tx, c => sqlx::query_scalar(sql)
            .bind(&payment.id).fetch_one(c).await.map_err(gateway_db)?);
        let amount = refund.amount.amount();
        if amount <= 0 || refunded + amount > payment.amount {
            return Err(GatewayError::Rejected(format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({})",
                payment.amount - refunded
            )));
        }
        let id = format!("re_sandbox_{}", random_suffix());
        let insert = "INSERT INTO sandbox_refunds (id, idempotency_key, payment_intent, amount, currency, created_at)
                      VALUES ($1, $2, $3, $4, $5, $6)";
        on_tx!(&mut tx, c => sqlx::query(insert)
            .bind(&id).bind(&key).bind(&payment.id).bind(amount).bind(&payment.currency).bind(Timestamp::now())
            .execute(c).await.map_err(gateway_db)?.rows_affected());
        let total = refunded + amount;
        let charge = json!({
            "id": payment.id.replace("pi_", "ch_"), "object": "charge", "amount": payment.amount,
            "amount_captured": payment.amount, "amount_refunded": total, "refunded": total >= payment.amount,
            "currency": payment.currency.to_ascii_lowercase(), "payment_intent": payment.id, "status": "succeeded",
            "metadata": { "kanpa_kind": refund.kind, "kanpa_ref": refund.reference },
        });
        store_event(&mut tx, "charge.refunded", charge).await.map_err(gateway_db)?;
        tx.commit().await.map_err(gateway_db)?;
        Ok(Refunded { id, amount: refund.amount })
    }

    async fn collected(&self, payment_intent: &str) -> Result<Option<Collected>, GatewayError> {
        let sql = "SELECT id, amount, currency, status, created_at
                   FROM sandbox_payments WHERE id = $1 AND kind = 'payment_intent'";
        let row: Option<PaymentRow> = on_db!(&self.db, p => sqlx::query_as(sql).bind(payment_intent).fetch_optional(p).await.map_err(gateway_db)?);
        match row {
            Some(row) if row.status == "succeeded" => Ok(Some(collected(&row)?)),
            _ => Ok(None),
        }
    }
}

fn collected(row: &PaymentRow) -> Result<Collected, GatewayError> {
    let currency = Currency::from_code(&row.currency).map_err(|e| GatewayError::Rejected(e.to_string()))?;
    let gross = Money::new(row.amount, currency);
    Ok(Collected {
        payment_intent: row.id.clone(),
        charge: row.id.replace("pi_", "ch_"),
        balance_transaction: Some(row.id.replace("pi_", "txn_")),
        gross,
        fee: sandbox_fee(gross),
        created: row.created_at,
    })
}

// ---------------------------------------------------------------- the sandbox's balance

/// The sandbox processor's balance history, read from its own records: a
/// line per succeeded payment (its fee [`sandbox_fee`]), per refund (no fee
/// returned, as Stripe in Japan) and per payout. The sandbox has no disputes.
pub struct SandboxBalance {
    pub db: Db,
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    id: String,
    payment_intent: String,
    amount: i64,
    currency: String,
    created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct PayoutRow {
    id: String,
    amount: i64,
    currency: String,
    covers_from: Option<Timestamp>,
    covers_until: Timestamp,
    created_at: Timestamp,
}

fn currency_of(code: &str) -> Result<Currency, crate::balance::BalanceError> {
    Currency::from_code(code).map_err(|e| crate::balance::BalanceError::Corrupt(e.to_string()))
}

fn charge_line(row: &PaymentRow) -> Result<StatementLine, crate::balance::BalanceError> {
    let gross = Money::new(row.amount, currency_of(&row.currency)?);
    Ok(StatementLine {
        id: row.id.replace("pi_", "txn_"),
        kind: "charge".into(),
        source: Some(row.id.replace("pi_", "ch_")),
        charge: None,
        amount: gross,
        fee: sandbox_fee(gross),
        created: row.created_at,
    })
}

fn refund_line(row: &RefundRow) -> Result<StatementLine, crate::balance::BalanceError> {
    let currency = currency_of(&row.currency)?;
    Ok(StatementLine {
        id: format!("txn_{}", row.id),
        kind: "refund".into(),
        source: Some(row.id.clone()),
        charge: Some(row.payment_intent.replace("pi_", "ch_")),
        amount: Money::new(-row.amount, currency),
        fee: Money::zero(currency),
        created: row.created_at,
    })
}

/// The charges and refunds created in `(from, until]` (from the beginning
/// without `from`), oldest first.
async fn movements(
    db: &Db,
    from: Option<Timestamp>,
    until: Option<Timestamp>,
) -> Result<Vec<StatementLine>, crate::balance::BalanceError> {
    // Bounds as values both dialects compare: no bound is the widest one.
    let from = from.unwrap_or(Timestamp::from_unix_seconds(0).unwrap_or_else(Timestamp::now));
    let until = until.unwrap_or(Timestamp::from_unix_seconds(253_402_300_799).unwrap_or_else(Timestamp::now));
    let charges = "SELECT id, amount, currency, status, created_at FROM sandbox_payments
                   WHERE kind = 'payment_intent' AND status = 'succeeded' AND created_at > $1 AND created_at <= $2";
    let refunds = "SELECT id, payment_intent, amount, currency, created_at FROM sandbox_refunds
                   WHERE created_at > $1 AND created_at <= $2";
    let (charges, refunds): (Vec<PaymentRow>, Vec<RefundRow>) = on_db!(db, p => (
        sqlx::query_as(charges).bind(from).bind(until).fetch_all(p).await?,
        sqlx::query_as(refunds).bind(from).bind(until).fetch_all(p).await?,
    ));
    let mut lines = Vec::with_capacity(charges.len() + refunds.len());
    for row in &charges {
        lines.push(charge_line(row)?);
    }
    for row in &refunds {
        lines.push(refund_line(row)?);
    }
    lines.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(lines)
}

fn payout_line(row: &PayoutRow) -> Result<StatementLine, crate::balance::BalanceError> {
    let currency = currency_of(&row.currency)?;
    Ok(StatementLine {
        id: format!("txn_{}", row.id),
        kind: "payout".into(),
        source: Some(row.id.clone()),
        charge: None,
        amount: Money::new(-row.amount, currency),
        fee: Money::zero(currency),
        created: row.created_at,
    })
}

const PAYOUTS: &str = "SELECT id, amount, currency, covers_from, covers_until, created_at FROM sandbox_payouts";

#[async_trait]
impl crate::balance::BalanceSource for SandboxBalance {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn lines(
        &self,
        since: Option<Timestamp>,
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Vec<StatementLine>, crate::balance::BalanceError> {
        // `since` is inclusive: start a microsecond before it.
        let from = since.map(|s| s.saturating_add(-time::Duration::microseconds(1)));
        let mut lines = movements(&self.db, from, None).await?;
        let payouts: Vec<PayoutRow> = on_db!(&self.db, p => sqlx::query_as(PAYOUTS).fetch_all(p).await?);
        for row in payouts.iter().filter(|p| since.is_none_or(|s| p.created_at >= s)) {
            lines.push(payout_line(row)?);
        }
        lines.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        progress(lines.len());
        Ok(lines)
    }

    async fn payout_lines(&self, payout: &str) -> Result<Vec<StatementLine>, crate::balance::BalanceError> {
        let sql = format!("{PAYOUTS} WHERE id = $1");
        let row: Option<PayoutRow> = on_db!(&self.db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(payout).fetch_optional(p).await?);
        let Some(row) = row else { return Ok(Vec::new()) };
        let currency = currency_of(&row.currency)?;
        Ok(movements(&self.db, row.covers_from, Some(row.covers_until))
            .await?
            .into_iter()
            .filter(|l| l.amount.currency() == currency)
            .collect())
    }

    async fn balance(&self) -> Result<Vec<Money>, crate::balance::BalanceError> {
        let mut totals: std::collections::BTreeMap<Currency, i64> = std::collections::BTreeMap::new();
        for line in self.lines(None, &mut |_| {}).await? {
            *totals.entry(line.amount.currency()).or_default() += line.net();
        }
        Ok(totals.into_iter().map(|(c, a)| Money::new(a, c)).collect())
    }
}

/// The sandbox pays out to the bank, as Stripe does on its schedule: the
/// net of the charges and refunds in `currency` created after the previous
/// payout's cut-off and up to `until`, as one payout created at `until`.
/// The same `idempotency_key` pays out once; nothing to pay out is `None`.
pub async fn pay_out(
    db: &Db,
    currency: Currency,
    until: Timestamp,
    idempotency_key: &str,
) -> Result<Option<(String, Money)>, crate::balance::BalanceError> {
    let mut tx = db.begin().await?;
    let done: Option<(String, i64)> = on_tx!(&mut tx, c => sqlx::query_as(
        "SELECT id, amount FROM sandbox_payouts WHERE idempotency_key = $1")
        .bind(idempotency_key).fetch_optional(c).await?);
    if let Some((id, amount)) = done {
        return Ok(Some((id, Money::new(amount, currency))));
    }
    let previous: Option<Timestamp> = on_tx!(&mut tx, c => sqlx::query_scalar(
        "SELECT MAX(covers_until) FROM sandbox_payouts WHERE currency = $1")
        .bind(currency.code()).fetch_one(c).await?);
    if previous.is_some_and(|p| p >= until) {
        return Ok(None);
    }
    let net: i64 = movements(db, previous, Some(until))
        .await?
        .iter()
        .filter(|l| l.amount.currency() == currency)
        .map(StatementLine::net)
        .sum();
    if net <= 0 {
        return Ok(None);
    }
    let id = format!("po_sandbox_{}", random_suffix());
    let insert = "INSERT INTO sandbox_payouts (id, idempotency_key, amount, currency, covers_from, covers_until,
                      created_at) VALUES ($1, $2, $3, $4, $5, $6, $6)";
    on_tx!(&mut tx, c => sqlx::query(insert).bind(&id).bind(idempotency_key).bind(net).bind(currency.code())
        .bind(previous).bind(until).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(Some((id, Money::new(net, currency))))
}

/// A payment the sandbox took outside its Checkout page (the demo's seeded
/// history), recorded as the sandbox records its own, so its balance and
/// refunds know it. Recording the same payment intent again writes nothing.
pub async fn record_payment(
    tx: &mut kanpa_ledger::Tx,
    payment_intent: &str,
    reference: &str,
    gross: Money,
    at: Timestamp,
) -> Result<(), sqlx::Error> {
    let insert = "INSERT INTO sandbox_payments
                  (id, idempotency_key, kind, reference, behaviour, amount, currency, status, created_at)
                  VALUES ($1, $2, 'payment_intent', $3, 'succeeds', $4, $5, 'succeeded', $6)
                  ON CONFLICT (id) DO NOTHING";
    on_tx!(tx, c => sqlx::query(insert).bind(payment_intent).bind(format!("recorded:{payment_intent}"))
        .bind(reference).bind(gross.amount()).bind(gross.currency().code()).bind(at)
        .execute(c).await?.rows_affected());
    Ok(())
}
