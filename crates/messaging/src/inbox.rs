//! The durable inbox for Stripe events.
//!
//! An event is stored by its Stripe id (a second delivery stores nothing)
//! together with a job to process it, in one transaction, before Stripe gets
//! its 2xx. The job hands the event to the handler registered for its type,
//! in a transaction that also holds whatever the handler writes and marks
//! the event processed. Stripe retries for days and delivers out of order,
//! so the inbox keeps, per Stripe object, the `created` time of the newest
//! event applied ([`newest_applied`]); a handler uses it to refuse to let an
//! older event overwrite newer state.
//!
//! This module verifies nothing: signature checks happen at the HTTP edge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kanpa_ledger::{Db, Timestamp, Tx, on_tx};

use crate::jobs::{self, ClaimedJob, JobFailure, JobHandler, NewJob, RetryPolicy};

pub const JOB_KIND: &str = "stripe.event";

/// Attempts at applying one event (with [`ProcessEvent`]'s backoff, about
/// eight hours) before it is given up as dead for an operator to look at.
pub const MAX_ATTEMPTS: i32 = 20;

/// An event as it arrived, already verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingEvent {
    pub id: String,
    pub event_type: String,
    /// `data.object.id`, when the object has one.
    pub object_id: Option<String>,
    pub created: Timestamp,
    pub livemode: bool,
    /// The raw JSON, exactly as received.
    pub payload: String,
}

impl IncomingEvent {
    /// Reads the envelope fields from an event's JSON.
    pub fn from_json(payload: &str) -> Result<IncomingEvent, EnvelopeError> {
        let value: serde_json::Value = serde_json::from_str(payload).map_err(|_| EnvelopeError::NotJson)?;
        let id = value["id"].as_str().filter(|s| s.starts_with("evt_")).ok_or(EnvelopeError::MissingField("id"))?;
        let event_type = value["type"].as_str().ok_or(EnvelopeError::MissingField("type"))?;
        let created = value["created"]
            .as_i64()
            .and_then(Timestamp::from_unix_seconds)
            .ok_or(EnvelopeError::MissingField("created"))?;
        Ok(IncomingEvent {
            id: id.to_owned(),
            event_type: event_type.to_owned(),
            object_id: value["data"]["object"]["id"].as_str().map(str::to_owned),
            created,
            livemode: value["livemode"].as_bool().unwrap_or(false),
            payload: payload.to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not JSON")]
    NotJson,
    #[error("the event has no valid {0:?}")]
    MissingField(&'static str),
}

/// How the event reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Webhook,
    Backfill,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Webhook => "webhook",
            Via::Backfill => "backfill",
        }
    }
}

/// What storing an event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intake {
    Stored,
    Duplicate,
}

/// Stores the event and its processing job in the caller's transaction.
pub async fn store(tx: &mut Tx, event: &IncomingEvent, via: Via) -> Result<Intake, sqlx::Error> {
    let sql = "INSERT INTO stripe_events
        (id, event_type, object_id, created, livemode, payload, received_at, received_via, status)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')
        ON CONFLICT (id) DO NOTHING RETURNING id";
    let inserted: Option<String> = on_tx!(tx, c => sqlx::query_scalar(sql)
        .bind(&event.id).bind(&event.event_type).bind(event.object_id.as_deref()).bind(event.created)
        .bind(event.livemode).bind(&event.payload).bind(Timestamp::now()).bind(via.as_str())
        .fetch_optional(c).await?);
    if inserted.is_none() {
        return Ok(Intake::Duplicate);
    }
    let job = NewJob {
        kind: JOB_KIND,
        payload: serde_json::json!({ "event_id": event.id }),
        run_at: Timestamp::now(),
        max_attempts: MAX_ATTEMPTS,
    };
    jobs::enqueue(tx, &job).await?;
    Ok(Intake::Stored)
}

/// Stores the event and its job atomically, in a transaction of its own.
/// On PostgreSQL this is one statement (one round trip) — the webhook
/// endpoint's hot path.
pub async fn receive(db: &Db, event: &IncomingEvent, via: Via) -> Result<Intake, sqlx::Error> {
    let Db::Postgres(pool) = db else {
        let mut tx = db.begin().await?;
        let intake = store(&mut tx, event, via).await?;
        tx.commit().await?;
        return Ok(intake);
    };
    let sql = "WITH stored AS (
            INSERT INTO stripe_events
                (id, event_type, object_id, created, livemode, payload, received_at, received_via, status)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')
            ON CONFLICT (id) DO NOTHING RETURNING id)
        INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
        SELECT $9, json_build_object('event_id', stored.id)::text, 'ready', 0, $10, $7, $7, $7 FROM stored
        RETURNING id";
    let now = Timestamp::now();
    let job: Option<i64> = sqlx::query_scalar(sql)
        .bind(&event.id)
        .bind(&event.event_type)
        .bind(event.object_id.as_deref())
        .bind(event.created)
        .bind(event.livemode)
        .bind(&event.payload)
        .bind(now)
        .bind(via.as_str())
        .bind(JOB_KIND)
        .bind(MAX_ATTEMPTS)
        .fetch_optional(pool)
        .await?;
    Ok(if job.is_some() { Intake::Stored } else { Intake::Duplicate })
}

/// An event as stored, handed to handlers.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: String,
    pub event_type: String,
    pub object_id: Option<String>,
    pub created: Timestamp,
    pub livemode: bool,
    pub payload: String,
    pub status: String,
}

impl StoredEvent {
    /// True when an event created later for the same object has already
    /// been applied: applying this one would go back in time.
    pub async fn is_superseded(&self, tx: &mut Tx) -> Result<bool, sqlx::Error> {
        let Some(object) = &self.object_id else { return Ok(false) };
        Ok(newest_applied(tx, object).await?.is_some_and(|(created, _)| created > self.created))
    }
}

/// The `created` time and id of the newest event applied for a Stripe object.
pub async fn newest_applied(tx: &mut Tx, object_id: &str) -> Result<Option<(Timestamp, String)>, sqlx::Error> {
    let sql = "SELECT last_created, last_event_id FROM stripe_object_versions
               WHERE object_id = $1 AND last_event_id <> ''";
    Ok(on_tx!(tx, c => sqlx::query_as(sql).bind(object_id).fetch_optional(c).await?))
}

/// The newest stored event's object for a Stripe object id (by `created`,
/// then arrival), as JSON text: what the sandbox gateway knows of a
/// subscription it reported.
pub async fn newest_object(tx: &mut Tx, object_id: &str) -> Result<Option<String>, sqlx::Error> {
    let sql = "SELECT payload FROM stripe_events WHERE object_id = $1 ORDER BY created DESC, received_at DESC LIMIT 1";
    let payload: Option<String> = on_tx!(tx, c => sqlx::query_scalar(sql).bind(object_id).fetch_optional(c).await?);
    Ok(payload.and_then(|p| {
        let value: serde_json::Value = serde_json::from_str(&p).ok()?;
        Some(value["data"]["object"].to_string())
    }))
}

/// Takes the row lock on an object's version row (creating it empty if
/// needed) for the rest of the transaction, so two workers never apply
/// events of the same object at once: the second waits, then sees what the
/// first applied. (SQLite serialises write transactions anyway.)
async fn lock_object(tx: &mut Tx, object_id: &str) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO stripe_object_versions (object_id, last_created, last_event_id) VALUES ($1, $2, '')
               ON CONFLICT (object_id) DO UPDATE SET last_created = stripe_object_versions.last_created";
    let epoch = Timestamp::from_unix_seconds(0).expect("the epoch is a valid time");
    on_tx!(tx, c => sqlx::query(sql).bind(object_id).bind(epoch).execute(c).await?.rows_affected());
    Ok(())
}

async fn record_applied(tx: &mut Tx, event: &StoredEvent) -> Result<(), sqlx::Error> {
    let Some(object) = &event.object_id else { return Ok(()) };
    let sql = "INSERT INTO stripe_object_versions (object_id, last_created, last_event_id) VALUES ($1, $2, $3)
               ON CONFLICT (object_id) DO UPDATE SET last_created = excluded.last_created,
                   last_event_id = excluded.last_event_id
               WHERE stripe_object_versions.last_created <= excluded.last_created";
    on_tx!(tx, c => sqlx::query(sql).bind(object).bind(event.created).bind(&event.id).execute(c).await?.rows_affected());
    Ok(())
}

/// What a handler did with an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Its change was written.
    Applied,
    /// It was deliberately not applied (superseded by a newer event, or
    /// nothing to do); the reason is logged.
    Skipped(String),
    /// It is about nothing this handler's domain knows (another domain's
    /// payment, or none of ours): the next handler of the type may take it.
    NotOurs,
}

/// Applies one type of Stripe event.
#[async_trait]
pub trait StripeEventHandler: Send + Sync {
    /// Writes the event's effects in `tx`. An error retries the event later.
    async fn handle(&self, tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<Handled>;
}

/// Handlers by event type.
#[derive(Clone, Default)]
pub struct EventHandlers {
    by_type: HashMap<String, Arc<dyn StripeEventHandler>>,
}

impl EventHandlers {
    /// Sets the handler of a type, replacing any other.
    pub fn register(&mut self, event_type: impl Into<String>, handler: Arc<dyn StripeEventHandler>) {
        self.by_type.insert(event_type.into(), handler);
    }

    /// Adds a handler for a type several domains share (pledges and
    /// memberships both complete Checkout sessions and are refunded): each
    /// event goes to the first handler that does not answer
    /// [`Handled::NotOurs`].
    pub fn add(&mut self, event_type: impl Into<String>, handler: Arc<dyn StripeEventHandler>) {
        let event_type = event_type.into();
        let chained: Arc<dyn StripeEventHandler> = match self.by_type.remove(&event_type) {
            None => handler,
            Some(existing) => Arc::new(FirstTaker { handlers: vec![existing, handler] }),
        };
        self.by_type.insert(event_type, chained);
    }

    /// Adds every handler of `other`, replacing those of the same type.
    pub fn extend(&mut self, other: EventHandlers) {
        self.by_type.extend(other.by_type);
    }
}

/// Hands an event to each handler in turn until one takes it. A handler
/// answers `NotOurs` before writing anything, so the next one starts from
/// the same transaction state.
struct FirstTaker {
    handlers: Vec<Arc<dyn StripeEventHandler>>,
}

#[async_trait]
impl StripeEventHandler for FirstTaker {
    async fn handle(&self, tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<Handled> {
        for handler in &self.handlers {
            match handler.handle(tx, event).await? {
                Handled::NotOurs => continue,
                handled => return Ok(handled),
            }
        }
        Ok(Handled::NotOurs)
    }
}

/// The job that processes a stored event.
pub struct ProcessEvent {
    pub handlers: EventHandlers,
}

#[async_trait]
impl JobHandler for ProcessEvent {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(2), cap: Duration::from_secs(30 * 60), max_attempts: MAX_ATTEMPTS }
    }

    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        let event_id =
            job.payload["event_id"].as_str().ok_or_else(|| JobFailure::GiveUp("job has no event_id".into()))?;
        let mut tx = db.begin().await?;
        let sql = "SELECT id, event_type, object_id, created, livemode, payload, status
                   FROM stripe_events WHERE id = $1";
        let event: Option<StoredEvent> =
            on_tx!(&mut tx, c => sqlx::query_as(sql).bind(event_id).fetch_optional(c).await?);
        let Some(event) = event else {
            return Err(JobFailure::GiveUp(format!("event {event_id} is not in the inbox")));
        };
        if event.status != "pending" {
            return Ok(tx);
        }
        let handler = self.handlers.by_type.get(&event.event_type);
        if let (Some(_), Some(object)) = (handler, &event.object_id) {
            lock_object(&mut tx, object).await?;
        }
        let status = match handler {
            None => "ignored",
            Some(handler) => match handler.handle(&mut tx, &event).await {
                Ok(Handled::Applied) => {
                    record_applied(&mut tx, &event).await?;
                    "applied"
                }
                Ok(Handled::NotOurs) => "ignored",
                Ok(Handled::Skipped(reason)) => {
                    tracing::info!(event = %event.id, event_type = %event.event_type, reason = %reason, "event skipped");
                    "stale"
                }
                Err(e) => {
                    drop(tx);
                    let message = format!("{e:#}");
                    note_error(db, &event.id, &message).await?;
                    return Err(JobFailure::Retry(message));
                }
            },
        };
        let mark = "UPDATE stripe_events SET status = $1, processed_at = $2, last_error = NULL WHERE id = $3";
        on_tx!(&mut tx, c => sqlx::query(mark).bind(status).bind(Timestamp::now()).bind(&event.id).execute(c).await?.rows_affected());
        metrics::counter!("kanpa_stripe_events_processed_total", "status" => status).increment(1);
        Ok(tx)
    }
}

async fn note_error(db: &Db, event_id: &str, message: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let sql = "UPDATE stripe_events SET last_error = $1 WHERE id = $2";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(message).bind(event_id).execute(c).await?.rows_affected());
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_envelope_of_an_event() {
        let body = r#"{"id":"evt_1","type":"charge.refunded","created":1700000000,"livemode":false,
                       "data":{"object":{"id":"ch_1","object":"charge"}}}"#;
        let event = IncomingEvent::from_json(body).unwrap();
        assert_eq!(event.id, "evt_1");
        assert_eq!(event.object_id.as_deref(), Some("ch_1"));
        assert_eq!(event.created.unix_seconds(), 1_700_000_000);
        assert_eq!(IncomingEvent::from_json("nope"), Err(EnvelopeError::NotJson));
        assert_eq!(IncomingEvent::from_json(r#"{"id":"x"}"#), Err(EnvelopeError::MissingField("id")));
    }
}
