//! HTTP routes. Each module holds the handlers for one URL prefix and
//! returns its own `Router`.

pub mod admin;
pub mod api;
pub mod assets;
pub mod campaigns;
pub mod exports;
pub mod health;
pub mod home;
pub mod legal;
pub mod me;
pub mod reconciliation;
pub mod refund_api;
pub mod salon_api;
pub mod salons;
pub mod sandbox;
pub mod seller_api;
pub mod webhooks;
