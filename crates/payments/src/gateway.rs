//! The `PaymentGateway` port: the few things kanpa asks of a payment
//! provider. Two adapters implement it: [`crate::stripe_gateway`] (Stripe,
//! through async-stripe) and [`crate::sandbox`] (a local test checkout).
//!
//! The port never writes kanpa's own records. What a payment did is learnt
//! from events (webhooks, or the sandbox's own events through the same
//! inbox) and from the synchronous answer of an off-session charge.

use async_trait::async_trait;
use kanpa_ledger::{Locale, Money, Timestamp};

/// How a Checkout session takes the money.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckoutMode {
    /// Charge now. `konbini` also offers payment at a convenience store
    /// (paid later, confirmed by `checkout.session.async_payment_succeeded`).
    Payment { konbini: bool },
    /// Save a card for a later off-session charge; nothing is charged now.
    Setup,
    /// Start a subscription to a recurring `price` (see
    /// [`PaymentGateway::create_price`]); the first invoice is paid now.
    /// `anchor`: the first renewal, when the cycle does not start today
    /// (the 1st of next month); the days until then are prorated.
    Subscription { price: String, anchor: Option<Timestamp> },
}

/// A Checkout session to open for one payer.
#[derive(Clone, Debug)]
pub struct CheckoutRequest {
    pub mode: CheckoutMode,
    pub amount: Money,
    /// The line shown to the payer ("Nurses team — Drive 2026").
    pub description: String,
    pub email: String,
    pub locale: Locale,
    /// What kanpa calls the payment ("pledge"), stored in the metadata.
    pub kind: &'static str,
    /// kanpa's public id of the thing paid for; comes back in every event.
    pub reference: String,
    pub success_url: String,
    pub cancel_url: String,
    /// One key per Checkout session kanpa means to open.
    pub idempotency_key: String,
}

/// A monthly recurring price to create. The first price of a product
/// creates the product too (named `product_name`); later prices name it.
#[derive(Clone, Debug)]
pub struct NewPrice {
    pub product: Option<String>,
    pub product_name: String,
    /// Per month.
    pub amount: Money,
    /// What kanpa calls the thing priced ("tier"), stored in the metadata.
    pub kind: &'static str,
    pub reference: String,
    pub idempotency_key: String,
}

/// A created price and the product it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceIds {
    pub product: String,
    pub price: String,
}

/// A change a patron makes to their subscription. The new state comes back
/// as `customer.subscription.updated` (and an invoice, for a prorated
/// change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionAction {
    /// End at the end of the paid period (`true`), or take that back.
    CancelAtPeriodEnd(bool),
    /// Stop collecting (invoices are voided) until `until`.
    Pause {
        until: Timestamp,
    },
    Resume,
    /// Move to another price: prorated and invoiced now, or from the next
    /// renewal with no proration.
    ChangePrice {
        price: String,
        prorate_now: bool,
    },
}

/// Where to send the payer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// A card saved by a setup-mode Checkout session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedCard {
    pub customer: String,
    pub payment_method: String,
}

/// A charge of a saved card without the payer present.
#[derive(Clone, Debug)]
pub struct OffSessionCharge {
    pub card: SavedCard,
    pub amount: Money,
    pub description: String,
    pub kind: &'static str,
    pub reference: String,
    /// Stored before the call: a retry after a crash sends the same key and
    /// cannot charge twice.
    pub idempotency_key: String,
}

/// Money that was taken: the gross, the provider's fee, and the ids that tie
/// it to the provider's balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collected {
    pub payment_intent: String,
    pub charge: String,
    pub balance_transaction: Option<String>,
    pub gross: Money,
    pub fee: Money,
    pub created: Timestamp,
}

/// What an off-session charge did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    Succeeded(Collected),
    /// The issuer refused (`card_declined`, `insufficient_funds`,
    /// `expired_card`…): `code` is the most specific code the provider gave.
    Declined {
        code: String,
        payment_intent: Option<String>,
    },
    /// The bank wants the payer present (3-D Secure).
    AuthenticationRequired {
        payment_intent: Option<String>,
    },
}

/// Money to give back from a card payment, in full or in part.
#[derive(Clone, Debug)]
pub struct RefundRequest {
    /// The PaymentIntent whose charge is refunded.
    pub payment_intent: String,
    pub amount: Money,
    /// What kanpa calls the thing paid for ("pledge"), stored in the
    /// metadata like the payment's own.
    pub kind: &'static str,
    pub reference: String,
    /// Made before the call: the same refund asked twice (a button pressed
    /// twice, a retry) reaches the provider as one.
    pub idempotency_key: String,
}

/// A refund the provider accepted. Its effect on kanpa's books arrives as
/// `charge.refunded`, like a refund made in the provider's dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refunded {
    pub id: String,
    pub amount: Money,
}

/// What expiring a Checkout session found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// It can no longer be paid.
    Expired,
    /// The payer finished it first; its events are on their way.
    Complete,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Worth retrying with the same idempotency key: rate limited, a 5xx,
    /// a dropped connection.
    #[error("payment provider temporarily unavailable: {0}")]
    Transient(String),
    /// The provider refused the request as made; retrying will not help.
    #[error("payment provider refused the request: {0}")]
    Rejected(String),
}

impl GatewayError {
    pub fn is_transient(&self) -> bool {
        matches!(self, GatewayError::Transient(_))
    }
}

#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// "stripe" or "sandbox".
    fn name(&self) -> &'static str;

    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<CheckoutSession, GatewayError>;

    /// Creates a monthly price (and, for the first, its product). Prices
    /// are never changed: a new amount is a new price, and subscriptions
    /// on the old one stay there.
    async fn create_price(&self, price: &NewPrice) -> Result<PriceIds, GatewayError>;

    /// Changes a subscription as its subscriber asked.
    async fn change_subscription(
        &self,
        subscription: &str,
        action: &SubscriptionAction,
        idempotency_key: &str,
    ) -> Result<(), GatewayError>;

    /// A session of the provider's billing portal where the customer updates
    /// their card; the URL to send them to.
    async fn billing_portal(&self, customer: &str, return_url: &str) -> Result<String, GatewayError>;

    /// Closes an open Checkout session so it can no longer be paid (or
    /// learns that it was completed first).
    async fn expire_checkout(&self, session: &str) -> Result<SessionState, GatewayError>;

    /// The customer and card a completed setup-mode session saved.
    async fn saved_card(&self, setup_intent: &str) -> Result<SavedCard, GatewayError>;

    async fn charge_off_session(&self, charge: &OffSessionCharge) -> Result<ChargeOutcome, GatewayError>;

    /// The money a succeeded PaymentIntent took, with its fee; `None` while
    /// it has not succeeded.
    async fn collected(&self, payment_intent: &str) -> Result<Option<Collected>, GatewayError>;

    /// Refunds part or all of what a PaymentIntent took. More than is left
    /// to refund is `Rejected`.
    async fn refund(&self, refund: &RefundRequest) -> Result<Refunded, GatewayError>;
}
