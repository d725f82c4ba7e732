//! The Stripe API client and the calls kanpa makes with it.

use std::sync::Mutex;

use bytes::Bytes;
use kanpa_ledger::Timestamp;
use stripe::{Client, ClientBuilder, CustomizedStripeRequest, StripeError, StripeRequest};
use stripe_core::event::ListEvent;
use stripe_types::{RangeBoundsTs, RangeQueryTs};

/// A client for `api_base` (Stripe's, or a fake's in tests; trailing slash
/// required by async-stripe).
pub fn client(secret_key: &str, api_base: &str) -> Result<Client, StripeError> {
    let base = if api_base.ends_with('/') { api_base.to_owned() } else { format!("{api_base}/") };
    ClientBuilder::new(secret_key).url(base).build()
}

/// Delegates to the real client and keeps the raw response body, so callers
/// get both async-stripe's typed check and the exact JSON Stripe sent.
pub(crate) struct KeepRaw<'a> {
    client: &'a Client,
    body: Mutex<Option<Bytes>>,
}

impl<'a> KeepRaw<'a> {
    pub(crate) fn new(client: &'a Client) -> KeepRaw<'a> {
        KeepRaw { client, body: Mutex::new(None) }
    }

    /// The body of the last response, once.
    pub(crate) fn take(&self) -> Bytes {
        self.body.lock().ok().and_then(|mut b| b.take()).unwrap_or_default()
    }
}

impl stripe_client_core::StripeClient for KeepRaw<'_> {
    type Err = StripeError;

    async fn execute(&self, request: CustomizedStripeRequest) -> Result<Bytes, StripeError> {
        let bytes = self.client.execute(request).await?;
        if let Ok(mut slot) = self.body.lock() {
            *slot = Some(bytes.clone());
        }
        Ok(bytes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error("Stripe's event list was not valid JSON: {0}")]
    Json(String),
}

/// Every event created at or after `since`, oldest first, as raw JSON.
pub async fn events_since(client: &Client, since: Timestamp) -> Result<Vec<String>, ListError> {
    let mut events = Vec::new();
    let mut starting_after: Option<String> = None;
    loop {
        let bounds = RangeBoundsTs { gte: Some(since.unix_seconds()), ..RangeBoundsTs::default() };
        let mut request = ListEvent::new().created(RangeQueryTs::Bounds(bounds)).limit(100);
        if let Some(after) = &starting_after {
            request = request.starting_after(after.clone());
        }
        let raw = KeepRaw::new(client);
        let page = request.customize().send(&raw).await?;
        let body = raw.take();
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| ListError::Json(e.to_string()))?;
        let data = value["data"].as_array().cloned().unwrap_or_default();
        starting_after = page.data.last().map(|e| e.id.to_string());
        events.extend(data.into_iter().map(|e| e.to_string()));
        if !page.has_more || starting_after.is_none() {
            break;
        }
    }
    // Stripe lists newest first.
    events.reverse();
    Ok(events)
}

/// A balance transaction as a statement line, from Stripe's JSON.
fn statement_line(value: &serde_json::Value) -> Result<kanpa_ledger::reconcile::StatementLine, ListError> {
    let text = |key: &str| value[key].as_str().map(str::to_owned);
    let bad = |what: &str| ListError::Json(format!("balance transaction {}: {what}", value["id"]));
    let currency = kanpa_ledger::Currency::from_code(&value["currency"].as_str().unwrap_or_default().to_uppercase())
        .map_err(|_| bad("unknown currency"))?;
    let source = match &value["source"] {
        serde_json::Value::String(id) => Some(id.clone()),
        serde_json::Value::Object(object) => object.get("id").and_then(|id| id.as_str()).map(str::to_owned),
        _ => None,
    };
    Ok(kanpa_ledger::reconcile::StatementLine {
        id: text("id").ok_or_else(|| bad("no id"))?,
        kind: text("type").unwrap_or_default(),
        source,
        charge: None,
        amount: kanpa_ledger::Money::new(value["amount"].as_i64().ok_or_else(|| bad("no amount"))?, currency),
        fee: kanpa_ledger::Money::new(value["fee"].as_i64().unwrap_or(0), currency),
        created: Timestamp::from_unix_seconds(value["created"].as_i64().unwrap_or(0)).ok_or_else(|| bad("bad time"))?,
    })
}

/// Lists balance transactions page by page (Stripe's order: newest first),
/// calling `progress` with the count so far after each page.
async fn list_lines(
    client: &Client,
    since: Option<Timestamp>,
    payout: Option<&str>,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<kanpa_ledger::reconcile::StatementLine>, ListError> {
    use stripe_core::balance_transaction::ListBalanceTransaction;
    let mut lines = Vec::new();
    let mut starting_after: Option<String> = None;
    loop {
        let mut request = ListBalanceTransaction::new().limit(100);
        if let Some(since) = since {
            let bounds = RangeBoundsTs { gte: Some(since.unix_seconds()), ..RangeBoundsTs::default() };
            request = request.created(RangeQueryTs::Bounds(bounds));
        }
        if let Some(payout) = payout {
            request = request.payout(payout.to_owned());
        }
        if let Some(after) = &starting_after {
            request = request.starting_after(after.clone());
        }
        let raw = KeepRaw::new(client);
        let page = request.customize().send(&raw).await?;
        let body: serde_json::Value =
            serde_json::from_slice(&raw.take()).map_err(|e| ListError::Json(e.to_string()))?;
        for value in body["data"].as_array().map(Vec::as_slice).unwrap_or_default() {
            lines.push(statement_line(value)?);
        }
        progress(lines.len());
        starting_after = page.data.last().map(|t| t.id.to_string());
        if !page.has_more || starting_after.is_none() {
            break;
        }
    }
    lines.reverse();
    Ok(lines)
}

/// Every balance transaction created at or after `since` (all of them
/// without), oldest first; a refund's line names the charge refunded.
pub async fn balance_lines(
    client: &Client,
    since: Option<Timestamp>,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<kanpa_ledger::reconcile::StatementLine>, ListError> {
    let mut lines = list_lines(client, since, None, progress).await?;
    name_refunded_charges(client, &mut lines).await?;
    Ok(lines)
}

/// The charge a JSON field names (an id or an expanded object).
fn charge_of(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(id) => Some(id.clone()),
        serde_json::Value::Object(o) => o.get("id").and_then(|id| id.as_str()).map(str::to_owned),
        _ => None,
    }
}

/// Names, on each refund's and dispute's line, the charge concerned (ledger
/// entries of refunds are keyed by the charge; a dispute's money belongs to
/// its charge's fund).
async fn name_refunded_charges(
    client: &Client,
    lines: &mut [kanpa_ledger::reconcile::StatementLine],
) -> Result<(), ListError> {
    use stripe_core::dispute::RetrieveDispute;
    use stripe_core::refund::RetrieveRefund;
    for line in lines.iter_mut() {
        if let Some(dispute) = line.source.clone().filter(|s| s.starts_with("dp_")) {
            let raw = KeepRaw::new(client);
            RetrieveDispute::new(dispute.as_str()).customize().send(&raw).await?;
            let body: serde_json::Value =
                serde_json::from_slice(&raw.take()).map_err(|e| ListError::Json(e.to_string()))?;
            line.charge = charge_of(&body["charge"]);
            continue;
        }
        if matches!(line.kind.as_str(), "refund" | "payment_refund")
            && let Some(refund) = line.source.clone().filter(|s| s.starts_with("re_"))
        {
            let raw = KeepRaw::new(client);
            RetrieveRefund::new(refund.as_str()).customize().send(&raw).await?;
            let body: serde_json::Value =
                serde_json::from_slice(&raw.take()).map_err(|e| ListError::Json(e.to_string()))?;
            line.charge = match &body["charge"] {
                serde_json::Value::String(id) => Some(id.clone()),
                serde_json::Value::Object(o) => o.get("id").and_then(|id| id.as_str()).map(str::to_owned),
                _ => None,
            };
        }
    }
    Ok(())
}

/// The balance transactions a payout paid out (not the payout's own line).
pub async fn payout_lines(
    client: &Client,
    payout: &str,
) -> Result<Vec<kanpa_ledger::reconcile::StatementLine>, ListError> {
    let mut lines: Vec<_> =
        list_lines(client, None, Some(payout), &mut |_| {}).await?.into_iter().filter(|l| !l.is_payout()).collect();
    name_refunded_charges(client, &mut lines).await?;
    Ok(lines)
}

/// Stripe's balance per currency: available plus pending.
pub async fn balance(client: &Client) -> Result<Vec<kanpa_ledger::Money>, ListError> {
    use stripe_core::balance::RetrieveForMyAccountBalance;
    let raw = KeepRaw::new(client);
    RetrieveForMyAccountBalance::new().customize().send(&raw).await?;
    let body: serde_json::Value = serde_json::from_slice(&raw.take()).map_err(|e| ListError::Json(e.to_string()))?;
    let mut totals: std::collections::BTreeMap<kanpa_ledger::Currency, i64> = std::collections::BTreeMap::new();
    for part in ["available", "pending"] {
        for amount in body[part].as_array().map(Vec::as_slice).unwrap_or_default() {
            let code = amount["currency"].as_str().unwrap_or_default().to_uppercase();
            let currency = kanpa_ledger::Currency::from_code(&code)
                .map_err(|_| ListError::Json(format!("balance in unknown currency {code:?}")))?;
            *totals.entry(currency).or_default() += amount["amount"].as_i64().unwrap_or(0);
        }
    }
    Ok(totals.into_iter().map(|(c, a)| kanpa_ledger::Money::new(a, c)).collect())
}
