//! The `kanpa` server: HTTP routes and pages, configuration, the worker loop
//! and the command line. Flows that span several domain crates live here,
//! in one place each.
//!
//! Only this crate knows HTTP; nothing depends on it.

pub mod api_token;
pub mod app;
pub mod books_cli;
pub mod campaign_cli;
pub mod campaign_errors;
pub mod charts;
pub mod cli;
pub mod config;
pub mod error;
pub mod exports;
pub mod forms;
pub mod i18n;
pub mod operator;
pub mod page_cache;
pub mod pages;
pub mod receipt_view;
pub mod reconcile;
pub mod routes;
pub mod salon_cli;
pub mod salon_errors;
pub mod seller_cli;
pub mod seller_errors;
pub mod staff;
pub mod telemetry;
pub mod workers;

/// Makes ring the process-wide TLS crypto provider. Test builds enable a
/// second provider (aws-lc-rs, through the SMTP sink) and the Stripe client
/// panics at first use unless one is chosen explicitly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
