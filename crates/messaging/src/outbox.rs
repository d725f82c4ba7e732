//! The email outbox: a message is a row written in the same transaction as
//! the change that causes it, sent later by a job.
//!
//! Each row has an idempotency key (queueing the same key twice queues one
//! email) and one Message-ID derived from that key. Sending is at least
//! once: a crash after the SMTP server accepted a message but before the row
//! was marked sent resends it with the same Message-ID, which mail systems
//! and people can recognise as the same message.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kanpa_ledger::rows::Rows;
use kanpa_ledger::{Db, Locale, Timestamp, Tx, on_db, on_tx};
use lettre::message::Mailbox;

use crate::email::{self, EmailAddress, EmailError, EmailTemplate};
use crate::jobs::{self, ClaimedJob, JobFailure, JobHandler, RetryPolicy};
use crate::mailer::{Mailer, SendError};

pub const JOB_KIND: &str = "email.send";

/// How many times an email is tried; with [`SendEmail::retry_policy`] that
/// spans more than three hours of a mail server being down.
pub const MAX_ATTEMPTS: i32 = 25;

/// An email to queue.
#[derive(Clone, Debug)]
pub struct NewEmail {
    /// Unique per message: "sign-in:42", "pledge:17:receipt".
    pub key: String,
    pub to: EmailAddress,
    pub to_name: Option<String>,
    pub locale: Locale,
    pub template: EmailTemplate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    New(i64),
    AlreadyQueued,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Email(#[from] EmailError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Queues an email in the caller's transaction.
pub async fn enqueue(tx: &mut Tx, email: &NewEmail, message_domain: &str) -> Result<Queued, OutboxError> {
    let queued = enqueue_many(tx, std::slice::from_ref(email), message_domain).await?;
    Ok(queued.into_iter().next().unwrap_or(Queued::AlreadyQueued))
}

/// Queues several emails and their sending jobs in the caller's
/// transaction: what [`enqueue`] does for each, in two statements however
/// many there are, with one job per [`EMAILS_PER_JOB`] emails. A key
/// already queued, or given twice, queues once.
pub async fn enqueue_many(tx: &mut Tx, emails: &[NewEmail], message_domain: &str) -> Result<Vec<Queued>, OutboxError> {
    for name in emails.iter().filter_map(|e| e.to_name.as_deref()) {
        email::header_safe(name)?;
    }
    let mut keys = std::collections::HashSet::new();
    let unique: Vec<&NewEmail> = emails.iter().filter(|e| keys.insert(e.key.as_str())).collect();
    if unique.is_empty() {
        return Ok(Vec::new());
    }
    let templates: Vec<(String, String)> = unique.iter().map(|e| split_template(&e.template)).collect();
    let rows = Rows::new(unique.len())
        .text("idempotency_key", unique.iter().map(|e| e.key.as_str()))
        .text("to_address", unique.iter().map(|e| e.to.as_str()))
        .opt_text("to_name", unique.iter().map(|e| e.to_name.as_deref()))
        .text("locale", unique.iter().map(|e| e.locale.as_str()))
        .text("template", templates.iter().map(|t| t.0.as_str()))
        .text("data", templates.iter().map(|t| t.1.as_str()))
        .text("message_id", unique.iter().map(|e| email::message_id(&e.key, message_domain)));
    let sql = format!(
        "{} INSERT INTO outbox_emails
            (idempotency_key, to_address, to_name, locale, template, data, message_id, created_at)
            SELECT idempotency_key, to_address, to_name, locale, template, data, message_id, $1
            FROM e WHERE true ORDER BY n
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key, id",
        rows.with_clause("e", tx.backend(), 1)
    );
    let now = Timestamp::now();
    let stored: std::collections::HashMap<String, i64> =
        rows.fetch_all(tx, &sql, &[now.into()]).await?.into_iter().collect();
    let mut answered = std::collections::HashSet::new();
    let queued: Vec<Queued> = emails
        .iter()
        .map(|e| match stored.get(&e.key) {
            Some(id) if answered.insert(*id) => Queued::New(*id),
            _ => Queued::AlreadyQueued,
        })
        .collect();
    let new: Vec<i64> = queued
        .iter()
        .filter_map(|q| match q {
            Queued::New(id) => Some(*id),
            Queued::AlreadyQueued => None,
        })
        .collect();
    jobs::enqueue_in_chunks(tx, JOB_KIND, "email_ids", &new, EMAILS_PER_JOB, MAX_ATTEMPTS).await?;
    Ok(queued)
}

/// Emails one sending job carries at most. Emails queued together (a batch
/// of receipts) share a job, so a month-end writes, claims and deletes one
/// job row per few dozen emails rather than one per email.
const EMAILS_PER_JOB: usize = 64;

fn split_template(template: &EmailTemplate) -> (String, String) {
    let value = serde_json::to_value(template).unwrap_or_default();
    (value["template"].as_str().unwrap_or_default().to_owned(), value["data"].to_string())
}

/// An outbox row as stored, with its outcome.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxEmail {
    pub id: i64,
    pub idempotency_key: String,
    pub to_address: String,
    pub to_name: Option<String>,
    pub locale: String,
    pub template: String,
    pub data: String,
    pub message_id: String,
    /// `pending` until it has an outcome: `sent`, or `failed` for good.
    pub status: String,
    /// Attempts at sending it so far.
    pub attempts: i32,
    /// Why the last attempt failed; none once it is sent.
    pub last_error: Option<String>,
}

/// An email and its outcome. A pending email's attempts and last error are
/// on its own row (a deferral rewrites them); once it has an outcome, they
/// are the outcome's.
const SELECT: &str = "SELECT e.id, e.idempotency_key, e.to_address, e.to_name, e.locale, e.template, e.data,
    e.message_id, COALESCE(o.status, 'pending') AS status, COALESCE(o.attempts, e.attempts) AS attempts,
    CASE WHEN o.email_id IS NULL THEN e.last_error ELSE o.error END AS last_error
    FROM outbox_emails e LEFT JOIN outbox_email_outcomes o ON o.email_id = e.id";

pub async fn get(db: &Db, id: i64) -> Result<Option<OutboxEmail>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("{SELECT} WHERE e.id = $1"));
    Ok(on_db!(db, p => sqlx::query_as(sql).bind(id).fetch_optional(p).await?))
}

pub async fn all(db: &Db) -> Result<Vec<OutboxEmail>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY e.id"));
    Ok(on_db!(db, p => sqlx::query_as(sql).fetch_all(p).await?))
}

/// Settings the sender needs.
#[derive(Clone, Debug)]
pub struct SenderSettings {
    pub from: Mailbox,
    pub site_name: String,
}

/// The job that renders and sends the outbox rows it names.
pub struct SendEmail {
    pub mailer: Arc<dyn Mailer>,
    pub settings: SenderSettings,
}

#[async_trait]
impl JobHandler for SendEmail {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(5), cap: Duration::from_secs(10 * 60), max_attempts: MAX_ATTEMPTS }
    }

    /// Sends the job's emails still pending (a retry skips those already
    /// sent or refused); see [`SendEmail::run_many`].
    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        self.run_many(db, std::slice::from_ref(job)).await
    }

    fn size(&self, job: &ClaimedJob) -> usize {
        email_ids(job).map_or(1, |ids| ids.len().max(1))
    }

    fn batches(&self) -> bool {
        true
    }

    /// Sends a run of emails (a month-end of receipts), a few at a time,
    /// and records them all in one statement. If the mail server defers
    /// any, every outcome is recorded and committed at once (so nothing sent
    /// is sent again) and the batch fails: each job then runs alone, its
    /// emails already sent or refused skipped, and a job still holding a
    /// deferred email tries again with its backoff.
    async fn run_many(&self, db: &Db, jobs: &[ClaimedJob]) -> Result<Tx, JobFailure> {
        let mut ids = Vec::new();
        for job in jobs {
            ids.extend(email_ids(job)?);
        }
        // Read outside any transaction: sending takes a while and holds no
        // row of ours.
        let wanted = Rows::new(ids.len()).int("id", ids.iter().copied());
        let sql =
            format!("{} {SELECT} WHERE e.id IN (SELECT id FROM wanted)", wanted.with_clause("wanted", db.backend(), 0));
        let rows: Vec<OutboxEmail> = wanted.read_all(db, &sql, &[]).await?;
        let pending: Vec<&OutboxEmail> = rows.iter().filter(|row| row.status == "pending").collect();
        let sent = self.send_all(&pending).await;
        let outcomes: Vec<(&OutboxEmail, Delivery)> = pending.iter().copied().zip(sent).collect();
        let deferred = outcomes.iter().find_map(|(_, sent)| match sent {
            Delivery::Deferred(reason) => Some(reason.clone()),
            _ => None,
        });
        let mut tx = db.begin().await?;
        record(&mut tx, &outcomes).await?;
        match deferred {
            None => Ok(tx),
            Some(reason) => {
                tx.commit().await?;
                Err(JobFailure::Retry(reason))
            }
        }
    }

    async fn on_dead(&self, tx: &mut Tx, job: &ClaimedJob, error: &str) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO outbox_email_outcomes (email_id, status, attempts, error, decided_at)
            SELECT id, 'failed', attempts, $1, $2 FROM outbox_emails WHERE id = $3
            ON CONFLICT (email_id) DO NOTHING";
        let now = Timestamp::now();
        for id in email_ids(job).unwrap_or_default() {
            on_tx!(tx, c => sqlx::query(sql).bind(error).bind(now).bind(id).execute(c).await?.rows_affected());
        }
        Ok(())
    }
}

impl SendEmail {
    fn build(&self, row: &OutboxEmail) -> Result<lettre::Message, EmailError> {
        let template: EmailTemplate = serde_json::from_value(serde_json::json!({
            "template": row.template,
            "data": serde_json::from_str::<serde_json::Value>(&row.data).unwrap_or_default(),
        }))
        .map_err(|e| EmailError::Render("stored", e.to_string()))?;
        let locale = Locale::parse(&row.locale).unwrap_or_default();
        let rendered = email::render(&template, locale, &self.settings.site_name)?;
        let to = EmailAddress::parse(&row.to_address)?;
        email::build_message(&self.settings.from, &to, row.to_name.as_deref(), &row.message_id, &rendered)
    }

    /// Renders the stored emails and hands those that render to the mailer
    /// together; what became of each, in order.
    async fn send_all(&self, rows: &[&OutboxEmail]) -> Vec<Delivery> {
        let mut messages = Vec::with_capacity(rows.len());
        let mut unrenderable = Vec::with_capacity(rows.len());
        for row in rows {
            match self.build(row) {
                Ok(message) => {
                    messages.push(message);
                    unrenderable.push(None);
                }
                Err(e) => unrenderable.push(Some(e.to_string())),
            }
        }
        let mut sent = self.mailer.send_many(&messages).await.into_iter();
        rows.iter()
            .zip(unrenderable)
            .map(|(row, unrenderable)| match unrenderable {
                Some(reason) => Delivery::Refused(reason),
                None => delivery(row, sent.next().unwrap_or_else(|| Err(SendError::Transient("not sent".into())))),
            })
            .collect()
    }
}

/// What a mailer's answer means for a stored email, counted.
fn delivery(row: &OutboxEmail, sent: Result<(), SendError>) -> Delivery {
    match sent {
        Ok(()) => {
            metrics::counter!("kanpa_emails_total", "outcome" => "sent").increment(1);
            Delivery::Sent
        }
        Err(SendError::Permanent(reason)) => {
            metrics::counter!("kanpa_emails_total", "outcome" => "failed").increment(1);
            tracing::warn!(email = row.id, reason = %reason, "email refused permanently");
            Delivery::Refused(reason)
        }
        Err(SendError::Transient(reason)) => {
            metrics::counter!("kanpa_emails_total", "outcome" => "deferred").increment(1);
            Delivery::Deferred(reason)
        }
    }
}

/// What became of sending one email.
enum Delivery {
    Sent,
    /// It cannot be sent, now or later (it cannot be rendered, or the
    /// server refused it for good).
    Refused(String),
    /// The server could not take it now.
    Deferred(String),
}

/// The outbox rows a job sends: `email_ids`, or the `email_id` of a job
/// queued one email at a time (before emails shared jobs).
fn email_ids(job: &ClaimedJob) -> Result<Vec<i64>, JobFailure> {
    job.items("email_ids", "email_id")
        .and_then(|ids| ids.into_iter().map(serde_json::Value::as_i64).collect())
        .ok_or_else(|| JobFailure::GiveUp("job names no email".into()))
}

/// Records what each send did: an outcome for each email sent or refused
/// for good (one statement; an email another run already recorded keeps
/// that outcome, since it was sent either way), and for each deferred one,
/// still pending, the attempt and its error on its own row.
async fn record(tx: &mut Tx, done: &[(&OutboxEmail, Delivery)]) -> Result<(), sqlx::Error> {
    let (deferred, decided): (Vec<_>, Vec<_>) =
        done.iter().partition(|(_, delivery)| matches!(delivery, Delivery::Deferred(_)));
    let error = |delivery: &Delivery| match delivery {
        Delivery::Sent => None,
        Delivery::Refused(reason) | Delivery::Deferred(reason) => Some(reason.clone()),
    };
    let now = Timestamp::now();
    if !decided.is_empty() {
        let rows = Rows::new(decided.len())
            .int("email_id", decided.iter().map(|(row, _)| row.id))
            .text("status", decided.iter().map(|(_, d)| if matches!(d, Delivery::Sent) { "sent" } else { "failed" }))
            .int("attempts", decided.iter().map(|(row, _)| i64::from(row.attempts) + 1))
            .opt_text("error", decided.iter().map(|(_, delivery)| error(delivery)));
        let sql = format!(
            "{} INSERT INTO outbox_email_outcomes (email_id, status, attempts, error, decided_at)
                SELECT email_id, status, attempts, error, $1 FROM o WHERE true ORDER BY n
                ON CONFLICT (email_id) DO NOTHING",
            rows.with_clause("o", tx.backend(), 1)
        );
        rows.execute(tx, &sql, &[now.into()]).await?;
    }
    if !deferred.is_empty() {
        let rows = Rows::new(deferred.len())
            .int("id", deferred.iter().map(|(row, _)| row.id))
            .opt_text("error", deferred.iter().map(|(_, delivery)| error(delivery)));
        let sql = format!(
            "{} UPDATE outbox_emails SET attempts = attempts + 1, last_error = d.error FROM d WHERE outbox_emails.id = d.id",
            rows.with_clause("d", tx.backend(), 0)
        );
        rows.execute(tx, &sql, &[]).await?;
    }
    Ok(())
}
