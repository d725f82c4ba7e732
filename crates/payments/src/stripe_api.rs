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
