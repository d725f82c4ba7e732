//! Payments: how kanpa talks to a payment provider.
//!
//! - [`gateway`]: the `PaymentGateway` port (Checkout, saved cards,
//!   off-session charges, what a payment collected) and its two adapters,
//!   [`stripe_gateway`] and [`sandbox`];
//! - [`stripe_api`]: the Stripe client's construction and the events
//!   listing for backfills;
//! - [`balance`]: where reconciliation reads the processor's balance
//!   history (Stripe's API, or the sandbox's own records);
//! - [`webhook`]: verification of signed webhook payloads;
//! - [`seller`]: each organisation's seller details (the legal disclosure,
//!   the receipts' issuer), and [`receipt`]: receipts numbered per
//!   organisation, with consumption tax computed once per rate.
//!
//! It knows nothing of campaigns or patrons: callers pass a kind and a
//! reference, which come back in the provider's metadata and events.

pub mod balance;
pub mod gateway;
pub mod receipt;
pub mod sandbox;
pub mod seller;
pub mod stripe_api;
pub mod stripe_gateway;
pub mod webhook;

pub use gateway::{
    ChargeOutcome, CheckoutMode, CheckoutRequest, CheckoutSession, Collected, GatewayError, NewPrice, OffSessionCharge,
    PaymentGateway, PriceIds, SavedCard, SessionState, SubscriptionAction,
};
