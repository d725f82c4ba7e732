//! Outgoing webhooks: organisations register HTTPS endpoints for event
//! kinds; each event becomes one signed delivery per endpoint, retried with
//! backoff for more than a day, every attempt logged.
//!
//! Signature: header `Kanpa-Signature: t=<unix seconds>,v1=<hex>` where
//! `<hex>` is HMAC-SHA256 keyed with the endpoint's secret over
//! `"<t>.<raw body>"` — the same construction Stripe uses, so receivers can
//! reuse their verification code.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use kanpa_ledger::{Db, OrgId, Timestamp, Tx, on_db, on_tx};
use rand::Rng;
use sha2::Sha256;

use crate::jobs::{self, ClaimedJob, JobFailure, JobHandler, NewJob, RetryPolicy};

pub const JOB_KIND: &str = "webhook.deliver";

/// The event kinds an endpoint may subscribe to.
pub const EVENT_KINDS: &[&str] = &[
    "pledge.created",
    "pledge.charged",
    "pledge.refunded",
    "campaign.goal_reached",
    "campaign.settled",
    "subscription.started",
    "subscription.renewed",
    "subscription.canceled",
    "payment.failed",
    "webhook.test",
];

/// Retries: 30 s doubling to a 4 h cap, 16 attempts — about 28 hours.
pub const RETRY: RetryPolicy =
    RetryPolicy { base: Duration::from_secs(30), cap: Duration::from_secs(4 * 3600), max_attempts: 16 };

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("the endpoint must be an https:// URL")]
    NotHttps,
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    #[error("subscribe to at least one event kind")]
    NoKinds,
}

/// An endpoint as registered. The secret is shown to the organisation once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub id: i64,
    pub org: OrgId,
    pub url: String,
    pub secret: String,
    pub event_kinds: Vec<String>,
}

/// Checks an endpoint URL: HTTPS only, except plain HTTP to a loopback host
/// when `allow_http_loopback` (development and tests).
pub fn check_url(url: &str, allow_http_loopback: bool) -> Result<(), HookError> {
    if url.starts_with("https://") && url.len() > "https://".len() {
        return Ok(());
    }
    let loopback =
        ["http://127.0.0.1:", "http://127.0.0.1/", "http://localhost:", "http://localhost/", "http://[::1]:"];
    if allow_http_loopback && loopback.iter().any(|p| url.starts_with(p)) {
        return Ok(());
    }
    Err(HookError::NotHttps)
}

pub fn check_kinds(kinds: &[String]) -> Result<(), HookError> {
    if kinds.is_empty() {
        return Err(HookError::NoKinds);
    }
    match kinds.iter().find(|k| !EVENT_KINDS.contains(&k.as_str())) {
        Some(unknown) => Err(HookError::UnknownKind(unknown.clone())),
        None => Ok(()),
    }
}

/// Registers an endpoint with a fresh secret.
pub async fn register(
    tx: &mut Tx,
    org: OrgId,
    url: &str,
    kinds: &[String],
    allow_http_loopback: bool,
) -> Result<Result<Endpoint, HookError>, sqlx::Error> {
    if let Err(e) = check_url(url, allow_http_loopback).and_then(|()| check_kinds(kinds)) {
        return Ok(Err(e));
    }
    let secret = format!("kwhsec_{}", hex::encode(rand::rng().random::<[u8; 24]>()));
    let sql = "INSERT INTO webhook_endpoints (org_id, url, secret, event_kinds, active, created_at)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
    let id: i64 = on_tx!(tx, c => sqlx::query_scalar(sql)
        .bind(org.0).bind(url).bind(&secret).bind(kinds.join(",")).bind(true).bind(Timestamp::now())
        .fetch_one(c).await?);
    Ok(Ok(Endpoint { id, org, url: url.to_owned(), secret, event_kinds: kinds.to_vec() }))
}

/// Queues one delivery of `data` to every active endpoint of `org`
/// subscribed to `kind`, in the caller's transaction. Returns how many.
pub async fn emit(tx: &mut Tx, org: OrgId, kind: &str, data: serde_json::Value) -> Result<usize, sqlx::Error> {
    let endpoints_sql = "SELECT id, event_kinds FROM webhook_endpoints WHERE org_id = $1 AND active = $2";
    let endpoints: Vec<(i64, String)> =
        on_tx!(tx, c => sqlx::query_as(endpoints_sql).bind(org.0).bind(true).fetch_all(c).await?);
    let event_id = format!("kev_{}", uuid::Uuid::now_v7().simple());
    let body = serde_json::json!({
        "id": event_id,
        "kind": kind,
        "created": Timestamp::now().unix_seconds(),
        "data": data,
    })
    .to_string();
    let insert = "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_kind, payload, status, created_at)
                  VALUES ($1, $2, $3, $4, 'pending', $5) RETURNING id";
    let mut queued = 0;
    for (endpoint, kinds) in endpoints {
        if !kinds.split(',').any(|k| k == kind) {
            continue;
        }
        let delivery: i64 = on_tx!(tx, c => sqlx::query_scalar(insert)
            .bind(endpoint).bind(&event_id).bind(kind).bind(&body).bind(Timestamp::now())
            .fetch_one(c).await?);
        let job = NewJob {
            kind: JOB_KIND,
            payload: serde_json::json!({ "delivery_id": delivery }),
            run_at: Timestamp::now(),
            max_attempts: RETRY.max_attempts,
        };
        jobs::enqueue(tx, &job).await?;
        queued += 1;
    }
    Ok(queued)
}

/// The `Kanpa-Signature` header value for `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    format!("t={timestamp},v1={}", hex::encode(signature_mac(secret, timestamp, body).finalize().into_bytes()))
}

/// HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`: the scheme of our
/// outgoing webhooks, which is Stripe's, so the Stripe endpoint checks
/// incoming signatures with it too.
pub fn signature_mac(secret: &str, timestamp: i64, body: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac
}

/// The job that makes one delivery attempt.
pub struct Deliver {
    pub client: reqwest::Client,
}

impl Deliver {
    pub fn new() -> Deliver {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kanpa-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client's settings are static");
        Deliver { client }
    }
}

impl Default for Deliver {
    fn default() -> Self {
        Deliver::new()
    }
}

#[async_trait]
impl JobHandler for Deliver {
    fn retry_policy(&self) -> RetryPolicy {
        RETRY
    }

    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        let id = job.payload["delivery_id"].as_i64().ok_or_else(|| JobFailure::GiveUp("no delivery_id".into()))?;
        let sql = "SELECT d.event_id, d.event_kind, d.payload, d.status, e.url, e.secret, e.active
                   FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = $1";
        let row: Option<(String, String, String, String, String, String, bool)> =
            on_db!(db, p => sqlx::query_as(sql).bind(id).fetch_optional(p).await?);
        let (event_id, kind, body, status, url, secret, active) =
            row.ok_or_else(|| JobFailure::GiveUp(format!("delivery {id} does not exist")))?;
        if status != "pending" {
            return Ok(db.begin().await?);
        }
        if !active {
            return self.record(db, id, None, Some("endpoint disabled"), "failed").await;
        }
        let timestamp = Timestamp::now().unix_seconds();
        let started = Instant::now();
        let response = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .header("kanpa-event-id", &event_id)
            .header("kanpa-event-kind", &kind)
            .header("kanpa-signature", sign(&secret, timestamp, &body))
            .body(body)
            .send()
            .await;
        let elapsed = started.elapsed();
        let (code, error) = match response {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (Some(r.status().as_u16()), Some(format!("answered {}", r.status()))),
            Err(e) => (None, Some(format!("{e}"))),
        };
        self.log_attempt(db, id, code, error.as_deref(), elapsed).await?;
        match error {
            None => self.record(db, id, code, None, "delivered").await,
            Some(e) => Err(JobFailure::Retry(e)),
        }
    }

    async fn on_dead(&self, tx: &mut Tx, job: &ClaimedJob, error: &str) -> Result<(), sqlx::Error> {
        if let Some(id) = job.payload["delivery_id"].as_i64() {
            let sql = "UPDATE webhook_deliveries SET status = 'failed', last_error = $1 WHERE id = $2";
            on_tx!(tx, c => sqlx::query(sql).bind(error).bind(id).execute(c).await?.rows_affected());
        }
        Ok(())
    }
}

impl Deliver {
    async fn log_attempt(
        &self,
        db: &Db,
        id: i64,
        code: Option<u16>,
        error: Option<&str>,
        elapsed: Duration,
    ) -> Result<(), sqlx::Error> {
        let mut tx = db.begin().await?;
        let attempt =
            "INSERT INTO webhook_delivery_attempts (delivery_id, attempted_at, status_code, error, duration_ms)
                       VALUES ($1, $2, $3, $4, $5)";
        let delivery = "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status_code = $1, last_error = $2
                        WHERE id = $3";
        let code = code.map(i32::from);
        on_tx!(&mut tx, c => {
            sqlx::query(attempt).bind(id).bind(Timestamp::now()).bind(code).bind(error)
                .bind(elapsed.as_millis() as i64).execute(&mut *c).await?;
            sqlx::query(delivery).bind(code).bind(error).bind(id).execute(c).await?;
        });
        tx.commit().await
    }

    async fn record(
        &self,
        db: &Db,
        id: i64,
        code: Option<u16>,
        error: Option<&str>,
        status: &str,
    ) -> Result<Tx, JobFailure> {
        let mut tx = db.begin().await?;
        let sql = "UPDATE webhook_deliveries SET status = $1, last_error = COALESCE($2, last_error),
                       delivered_at = CASE WHEN $1 = 'delivered' THEN $3 ELSE delivered_at END,
                       last_status_code = COALESCE($4, last_status_code)
                   WHERE id = $5";
        on_tx!(&mut tx, c => sqlx::query(sql)
            .bind(status).bind(error).bind(Timestamp::now()).bind(code.map(i32::from)).bind(id)
            .execute(c).await?.rows_affected());
        Ok(tx)
    }
}

/// One delivery with its attempts, for the delivery log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryLog {
    pub id: i64,
    pub endpoint_url: String,
    pub event_id: String,
    pub event_kind: String,
    pub status: String,
    pub attempts: Vec<AttemptLog>,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AttemptLog {
    pub attempted_at: Timestamp,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// The newest deliveries of an organisation, newest first, with every attempt.
pub async fn delivery_log(db: &Db, org: OrgId, limit: i64) -> Result<Vec<DeliveryLog>, sqlx::Error> {
    let sql = "SELECT d.id, e.url, d.event_id, d.event_kind, d.status
               FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
               WHERE e.org_id = $1 ORDER BY d.id DESC LIMIT $2";
    let attempts_sql = "SELECT attempted_at, status_code, error, duration_ms FROM webhook_delivery_attempts
                        WHERE delivery_id = $1 ORDER BY id";
    let rows: Vec<(i64, String, String, String, String)> =
        on_db!(db, p => sqlx::query_as(sql).bind(org.0).bind(limit).fetch_all(p).await?);
    let mut log = Vec::with_capacity(rows.len());
    for (id, endpoint_url, event_id, event_kind, status) in rows {
        let attempts: Vec<AttemptLog> = on_db!(db, p => sqlx::query_as(attempts_sql).bind(id).fetch_all(p).await?);
        log.push(DeliveryLog { id, endpoint_url, event_id, event_kind, status, attempts });
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_allowed_loopback() {
        assert_eq!(check_url("https://hooks.example.jp/kanpa", false), Ok(()));
        assert_eq!(check_url("http://hooks.example.jp/kanpa", true), Err(HookError::NotHttps));
        assert_eq!(check_url("http://127.0.0.1:9000/h", false), Err(HookError::NotHttps));
        assert_eq!(check_url("http://127.0.0.1:9000/h", true), Ok(()));
        assert_eq!(check_url("http://127.0.0.1.evil.example/h", true), Err(HookError::NotHttps));
    }

    #[test]
    fn retries_last_more_than_a_day() {
        assert!(RETRY.total_span() >= Duration::from_secs(24 * 3600), "{:?}", RETRY.total_span());
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_and_body() {
        // Reference value computed independently:
        // printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign("secret", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn kinds_are_checked() {
        assert_eq!(check_kinds(&[]), Err(HookError::NoKinds));
        assert_eq!(check_kinds(&["pledge.created".into()]), Ok(()));
        assert_eq!(check_kinds(&["pledge.exploded".into()]), Err(HookError::UnknownKind("pledge.exploded".into())));
    }
}
