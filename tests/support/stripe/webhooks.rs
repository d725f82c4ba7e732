//! Webhook deliveries as Stripe makes them: a JSON POST with a
//! `Stripe-Signature: t=…,v1=…` header.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hmac::{Hmac, Mac};
use rand::seq::SliceRandom;
use serde_json::Value;
use sha2::Sha256;

/// `t={timestamp},v1={hex HMAC-SHA256 of "{timestamp}.{body}"}`.
pub fn signature_header(secret: &str, body: &str, timestamp: i64) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC-SHA256 accepts any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let digest = hex::encode(mac.finalize().into_bytes());
    format!("t={timestamp},v1={digest}")
}

/// The real Unix time: signatures are checked against the receiver's clock,
/// not the fake's.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    body: String,
    signature: Option<String>,
) -> anyhow::Result<(u16, String)> {
    let mut request = http
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = request.send().await.with_context(|| format!("deliver a webhook to {url}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok((status, text))
}

pub(crate) async fn deliver_many(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    events: &[Value],
    copies: usize,
    shuffle: bool,
    concurrency: usize,
) -> anyhow::Result<Vec<u16>> {
    let mut bodies = Vec::with_capacity(events.len() * copies);
    for event in events {
        let body = serde_json::to_string(event)?;
        bodies.extend(std::iter::repeat_n(body, copies));
    }
    if shuffle {
        bodies.shuffle(&mut rand::rng());
    }
    let count = bodies.len();
    let queue: Arc<Mutex<VecDeque<(usize, String)>>> = Arc::new(Mutex::new(bodies.into_iter().enumerate().collect()));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let queue = Arc::clone(&queue);
        let http = http.clone();
        let url = url.to_owned();
        let secret = secret.to_owned();
        senders.spawn(async move {
            let mut statuses = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
                let Some((index, body)) = next else {
                    break;
                };
                let signature = signature_header(&secret, &body, unix_now());
                let (status, _) = post(&http, &url, body, Some(signature)).await?;
                statuses.push((index, status));
            }
            anyhow::Ok(statuses)
        });
    }
    let mut statuses = vec![0_u16; count];
    while let Some(joined) = senders.join_next().await {
        for (index, status) in joined.context("a webhook sender panicked")?? {
            statuses[index] = status;
        }
    }
    Ok(statuses)
}
