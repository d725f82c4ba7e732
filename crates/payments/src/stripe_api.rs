//! The Stripe API client and the calls kanpa makes with it.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use kanpa_ledger::Timestamp;
use stripe::{CustomizedStripeRequest, StripeError, StripeRequest};
use stripe_client_core::{RequestStrategy, StripeMethod};
use stripe_core::event::ListEvent;
use stripe_types::{RangeBoundsTs, RangeQueryTs};

/// How long one request may take, as Stripe's own libraries allow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(80);

/// How long an unused connection is kept for the next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Unused connections kept at most.
const MAX_IDLE: usize = 64;

/// A Stripe API client whose connections are reused.
///
/// It sends what async-stripe's own client sends (the same headers and API
/// version, requests built by async-stripe's typed calls), but keeps idle
/// connections: async-stripe's hyper client keeps none
/// (`pool_max_idle_per_host(0)`), so every request opened a new TCP
/// connection and TLS session. One attempt per request; retries with the
/// same idempotency key are the caller's (see `StripeGateway`).
#[derive(Clone)]
pub struct Client {
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// With its trailing slash.
    api_base: String,
    secret: HeaderValue,
    user_agent: HeaderValue,
    version: HeaderValue,
}

/// A client for `api_base` (Stripe's, or a fake's in tests).
pub fn client(secret_key: &str, api_base: &str) -> Result<Client, StripeError> {
    let api_base = if api_base.ends_with('/') { api_base.to_owned() } else { format!("{api_base}/") };
    api_base.parse::<hyper::Uri>().map_err(|e| StripeError::ConfigError(format!("the Stripe API base: {e}")))?;
    let mut secret = HeaderValue::try_from(format!("Bearer {secret_key}"))
        .map_err(|_| StripeError::ConfigError("the Stripe secret key is not a valid header".into()))?;
    secret.set_sensitive(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let http = HyperClient::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE)
        .build(connector);
    Ok(Client {
        http,
        api_base,
        secret,
        user_agent: HeaderValue::from_static(concat!("kanpa/", env!("CARGO_PKG_VERSION"))),
        version: HeaderValue::from_static(stripe_shared::version::VERSION.as_str()),
    })
}

impl Client {
    fn request(&self, request: CustomizedStripeRequest) -> Result<hyper::Request<Full<Bytes>>, StripeError> {
        let (request, config) = request.into_pieces();
        let mut uri = format!("{}v1{}", self.api_base, request.path);
        if let Some(query) = &request.query {
            uri.push('?');
            uri.push_str(query);
        }
        let method = match request.method {
            StripeMethod::Get => hyper::Method::GET,
            StripeMethod::Post => hyper::Method::POST,
            StripeMethod::Delete => hyper::Method::DELETE,
        };
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header(AUTHORIZATION, self.secret.clone())
            .header(USER_AGENT, self.user_agent.clone())
            .header(HeaderName::from_static("stripe-version"), self.version.clone());
        if let Some(account) = &config.account_id {
            builder = builder.header(HeaderName::from_static("stripe-account"), account.as_str());
        }
        if let Some(key) = config.request_strategy.unwrap_or(RequestStrategy::Once).get_key() {
            builder = builder.header(HeaderName::from_static("idempotency-key"), key.as_str());
        }
        let body = match request.body {
            Some(body) => {
                builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Bytes::from(body)
            }
            None => Bytes::new(),
        };
        builder.body(Full::new(body)).map_err(|e| StripeError::ClientError(e.to_string()))
    }
}

impl stripe_client_core::StripeClient for Client {
    type Err = StripeError;

    async fn execute(&self, request: CustomizedStripeRequest) -> Result<Bytes, StripeError> {
        let request = self.request(request)?;
        let attempt = async {
            let response = self.http.request(request).await.map_err(|e| StripeError::ClientError(e.to_string()))?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| StripeError::ClientError(e.to_string()))?;
            Ok::<_, StripeError>((status, body.to_bytes()))
        };
        let (status, body) =
            tokio::time::timeout(REQUEST_TIMEOUT, attempt).await.map_err(|_| StripeError::Timeout)??;
        if status.is_success() {
            return Ok(body);
        }
        let error = std::str::from_utf8(&body)
            .ok()
            .and_then(|text| miniserde::json::from_str::<stripe_shared::Error>(text).ok());
        Err(match error {
            Some(error) => StripeError::Stripe(error.error, status.as_u16()),
            None => StripeError::JSONDeserialize(format!("Stripe answered {status} without an error object")),
        })
    }
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
