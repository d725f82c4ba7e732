//! Stripe's own example objects, used as templates for every object the fake
//! returns, so that each reply carries every field the API version has and
//! async-stripe's strict (miniserde) parser accepts it.
//!
//! `stripe_fixtures.json` is taken unchanged from stripe/openapi
//! `fixtures3.json` (MIT licence, Copyright Stripe, Inc.), keeping only the
//! resources the fake serves and those tests build events from (disputes).

use std::sync::LazyLock;

use anyhow::Context;
use serde_json::{Map, Value};

const FIXTURES_JSON: &str = include_str!("../stripe_fixtures.json");

static FIXTURES: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    // The file is part of this crate and checked by its tests, so a failure
    // here is a broken build, not a runtime condition.
    let mut document: Value = serde_json::from_str(FIXTURES_JSON).expect("stripe_fixtures.json is valid JSON");
    match document.get_mut("resources").map(Value::take) {
        Some(Value::Object(resources)) => resources,
        _ => panic!("stripe_fixtures.json has no \"resources\" object"),
    }
});

/// Stripe's example object for a resource, by its `object` name
/// (`"payment_intent"`, `"checkout.session"`, …), unchanged.
pub fn fixture(name: &str) -> anyhow::Result<Value> {
    FIXTURES.get(name).cloned().with_context(|| {
        let known: Vec<&str> = FIXTURES.keys().map(String::as_str).collect();
        format!("no Stripe fixture named {name:?}; known: {}", known.join(", "))
    })
}

/// The template for an object the fake builds itself. Only called with the
/// names in [`TEMPLATE_NAMES`], which a test checks are all present.
pub(crate) fn template(name: &str) -> Value {
    FIXTURES.get(name).cloned().unwrap_or_else(|| panic!("stripe_fixtures.json lacks the {name:?} template"))
}

/// Every template the fake uses.
#[cfg(test)]
pub(crate) const TEMPLATE_NAMES: &[&str] = &[
    "balance",
    "balance_transaction",
    "billing_portal.session",
    "charge",
    "checkout.session",
    "customer",
    "dispute",
    "event",
    "invoice",
    "invoice_payment",
    "payment_intent",
    "payment_method",
    "payout",
    "price",
    "refund",
    "setup_intent",
    "subscription",
];
