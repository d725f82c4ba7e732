//! Payments: how kanpa talks to Stripe.
//!
//! This crate owns the Stripe client's construction, the verification of
//! signed webhook payloads, and reading events from Stripe's API for
//! backfills. The `PaymentGateway` port (checkout, charges, refunds) and its
//! sandbox adapter arrive with the funding drives.
//!
//! It writes nothing to the database and knows nothing of campaigns or
//! patrons.

pub mod stripe_api;
pub mod webhook;
