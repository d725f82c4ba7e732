//! One job table and one worker loop for everything asynchronous.
//!
//! A job is enqueued inside the caller's transaction, so it exists exactly
//! when the change that caused it does. A worker claims a job by taking a
//! lease (a token and an expiry) in a short transaction of its own:
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several processes never claim
//! the same row; SQLite serialises writers anyway (`BEGIN IMMEDIATE`).
//!
//! A handler does its work and returns an open transaction holding its
//! effects; the worker completes the job in that same transaction, fenced by
//! the lease token. If the lease was lost (this worker was too slow and
//! another took the job over), the fence matches no row and the effects are
//! rolled back, so a job's effects commit once. A worker that dies leaves its
//! lease to expire; the job is then claimed again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kanpa_ledger::rows::Rows;
use kanpa_ledger::{Db, Timestamp, Tx, on_db, on_tx};
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// How a kind of job is retried.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt; doubled for each later one.
    pub base: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
    /// Attempts before the job is given up as dead.
    pub max_attempts: i32,
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based): exponential, capped,
    /// with ±25 % jitter so that a burst of failures does not retry in step.
    pub fn delay(&self, attempt: i32, scale: f64) -> Duration {
        let exponent = attempt.clamp(1, 30) as u32 - 1;
        let raw = self.base.saturating_mul(2u32.saturating_pow(exponent)).min(self.cap);
        let jitter = rand::rng().random_range(0.75..=1.25);
        raw.mul_f64(jitter * scale)
    }

    /// The least total time the policy keeps retrying (without jitter).
    pub fn total_span(&self) -> Duration {
        (1..self.max_attempts).map(|a| self.base.saturating_mul(2u32.saturating_pow(a as u32 - 1)).min(self.cap)).sum()
    }
}

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub kind: &'static str,
    pub payload: serde_json::Value,
    pub run_at: Timestamp,
    pub max_attempts: i32,
}

/// A job this worker holds the lease on.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    /// This attempt's number, from 1.
    pub attempt: i32,
    pub max_attempts: i32,
    token: String,
}

impl ClaimedJob {
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// The items the job carries, as [`enqueue_in_chunks`] wrote them
    /// (`{ field: [items] }`), or the one item of a job written before items
    /// shared jobs (`{ single: item }`); `None` when it names neither.
    pub fn items(&self, field: &str, single: &str) -> Option<Vec<&serde_json::Value>> {
        match &self.payload[field] {
            serde_json::Value::Array(items) => Some(items.iter().collect()),
            _ => self.payload.get(single).map(|item| vec![item]),
        }
    }
}

/// Why a handler did not finish a job.
#[derive(Debug)]
pub enum JobFailure {
    /// Try again later (after backoff), until attempts run out.
    Retry(String),
    /// Trying again cannot help: the job is dead at once.
    GiveUp(String),
}

impl<E: Into<anyhow::Error>> From<E> for JobFailure {
    fn from(e: E) -> Self {
        JobFailure::Retry(format!("{:#}", e.into()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the lease on job {0} was lost to another worker")]
    LeaseLost(i64),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Does the work of one kind of job.
#[async_trait]
pub trait JobHandler: Send + Sync {
    /// How failures of this kind are retried.
    fn retry_policy(&self) -> RetryPolicy;

    /// Performs the job and returns the open transaction holding its
    /// effects; the worker completes the job in it and commits.
    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure>;

    /// True when [`JobHandler::run_many`] can apply several jobs of this
    /// kind in one transaction.
    fn batches(&self) -> bool {
        false
    }

    /// How many units of work (events, emails) the job carries: a run of
    /// jobs handed to [`JobHandler::run_many`] together carries at most a
    /// worker's batch of units, however many jobs that is.
    fn size(&self, _job: &ClaimedJob) -> usize {
        1
    }

    /// Performs several jobs in one transaction, all or nothing, and returns
    /// it holding the effects of every one; the worker completes them all in
    /// it and commits once. On an error nothing is kept and the worker runs
    /// each job on its own with [`JobHandler::run`], so one failing job is
    /// retried alone and the others still apply.
    async fn run_many(&self, _db: &Db, _jobs: &[ClaimedJob]) -> Result<Tx, JobFailure> {
        Err(JobFailure::Retry("this kind of job does not run in batches".into()))
    }

    /// Called in a transaction of its own when the job has failed for the
    /// last time, so the handler can record the failure where people see it.
    async fn on_dead(&self, _tx: &mut Tx, _job: &ClaimedJob, _error: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// Adds a job inside the caller's transaction; its id.
pub async fn enqueue(tx: &mut Tx, job: &NewJob) -> Result<i64, sqlx::Error> {
    enqueue_many(tx, std::slice::from_ref(job)).await?.pop().ok_or(sqlx::Error::RowNotFound)
}

/// Adds several jobs inside the caller's transaction, in one statement;
/// their ids, in ascending order.
pub async fn enqueue_many(tx: &mut Tx, jobs: &[NewJob]) -> Result<Vec<i64>, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = Rows::new(jobs.len())
        .text("kind", jobs.iter().map(|j| j.kind))
        .text("payload", jobs.iter().map(|j| j.payload.to_string()))
        .int("max_attempts", jobs.iter().map(|j| i64::from(j.max_attempts)))
        .time("run_at", jobs.iter().map(|j| j.run_at));
    let sql = format!(
        "{} INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, created_at, updated_at)
            SELECT kind, payload, 'ready', 0, max_attempts, run_at, $1, $1 FROM j WHERE true ORDER BY n
            RETURNING id",
        rows.with_clause("j", tx.backend(), 1)
    );
    let mut ids: Vec<i64> =
        rows.fetch_all::<(i64,)>(tx, &sql, &[Timestamp::now().into()]).await?.into_iter().map(|(id,)| id).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Adds jobs of `kind` that carry `items` (ids of events, emails, …) in
/// order, `per_job` to a job, each job's payload `{ field: [its items] }`;
/// their ids.
pub async fn enqueue_in_chunks<T: serde::Serialize>(
    tx: &mut Tx,
    kind: &'static str,
    field: &str,
    items: &[T],
    per_job: usize,
    max_attempts: i32,
) -> Result<Vec<i64>, sqlx::Error> {
    let now = Timestamp::now();
    let jobs: Vec<NewJob> = items
        .chunks(per_job.max(1))
        .map(|chunk| NewJob { kind, payload: serde_json::json!({ field: chunk }), run_at: now, max_attempts })
        .collect();
    enqueue_many(tx, &jobs).await
}

const CLAIM_READY_PG: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = $1,
        lease_token = $2, locked_by = $3, updated_at = $4
    WHERE id IN (SELECT id FROM jobs WHERE state = 'ready' AND run_at <= $4
                 ORDER BY run_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
    RETURNING id, kind, payload, attempts, max_attempts";
const CLAIM_EXPIRED_PG: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = $1,
        lease_token = $2, locked_by = $3, updated_at = $4
    WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_until < $4
                 ORDER BY lease_until, id LIMIT $5 FOR UPDATE SKIP LOCKED)
    RETURNING id, kind, payload, attempts, max_attempts";
const CLAIM_READY_SQLITE: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = $1,
        lease_token = $2, locked_by = $3, updated_at = $4
    WHERE id IN (SELECT id FROM jobs WHERE state = 'ready' AND run_at <= $4 ORDER BY run_at, id LIMIT $5)
    RETURNING id, kind, payload, attempts, max_attempts";
const CLAIM_EXPIRED_SQLITE: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = $1,
        lease_token = $2, locked_by = $3, updated_at = $4
    WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_until < $4
                 ORDER BY lease_until, id LIMIT $5)
    RETURNING id, kind, payload, attempts, max_attempts";

/// Takes the lease on the next due job (or one whose lease expired).
pub async fn claim(db: &Db, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>, sqlx::Error> {
    Ok(claim_batch(db, worker, lease, 1).await?.into_iter().next())
}

/// Takes the lease on up to `limit` due jobs in one short transaction, or
/// failing that on jobs whose lease expired. Claiming several at once saves
/// a commit per job when the queue is long.
pub async fn claim_batch(db: &Db, worker: &str, lease: Duration, limit: i64) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    let now = Timestamp::now();
    let until = now.saturating_add(time::Duration::try_from(lease).unwrap_or(time::Duration::MINUTE));
    let token = uuid::Uuid::new_v4().to_string();
    let mut tx = db.begin().await?;
    lease_without_waiting_for_disk(&mut tx).await?;
    let (ready, expired) = match db.backend() {
        kanpa_ledger::Backend::Sqlite => (CLAIM_READY_SQLITE, CLAIM_EXPIRED_SQLITE),
        kanpa_ledger::Backend::Postgres => (CLAIM_READY_PG, CLAIM_EXPIRED_PG),
    };
    let mut rows: Vec<(i64, String, String, i32, i32)> = Vec::new();
    for sql in [ready, expired] {
        rows = on_tx!(&mut tx, c => sqlx::query_as(sql)
            .bind(until).bind(&token).bind(worker).bind(now).bind(limit.max(1))
            .fetch_all(c).await?);
        if !rows.is_empty() {
            break;
        }
    }
    tx.commit().await?;
    rows.sort_by_key(|row| row.0);
    Ok(rows
        .into_iter()
        .map(|(id, kind, payload, attempt, max_attempts)| ClaimedJob {
            id,
            kind,
            payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
            attempt,
            max_attempts,
            token: token.clone(),
        })
        .collect())
}

/// A lease need not wait for the disk (PostgreSQL: asynchronous commit for
/// this transaction only). Should a crash lose it, the job is merely
/// unclaimed again, which nothing relies on; and any later commit that does
/// wait, such as the one holding the job's effects, writes it out first,
/// since the log is written in order.
async fn lease_without_waiting_for_disk(tx: &mut Tx) -> Result<(), sqlx::Error> {
    if let kanpa_ledger::db::TxConn::Postgres(c) = &mut tx.conn {
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut **c).await?;
    }
    Ok(())
}

/// Hands claimed jobs back unrun (a worker that claimed more than it can
/// finish within its lease); the attempt they were charged is returned.
pub async fn release(db: &Db, claimed: &[ClaimedJob]) -> Result<(), sqlx::Error> {
    if claimed.is_empty() {
        return Ok(());
    }
    let sql = "UPDATE jobs SET state = 'ready', attempts = attempts - 1, lease_until = NULL, lease_token = NULL,
                   locked_by = NULL WHERE id = $1 AND lease_token = $2";
    let mut tx = db.begin().await?;
    lease_without_waiting_for_disk(&mut tx).await?;
    for job in claimed {
        on_tx!(&mut tx, c => sqlx::query(sql).bind(job.id).bind(&job.token).execute(c).await?.rows_affected());
    }
    tx.commit().await
}

/// Finishes a job inside the transaction holding its effects. Fails with
/// [`JobError::LeaseLost`] if another worker has taken the job over; the
/// caller must then roll back.
pub async fn complete(tx: &mut Tx, job: &ClaimedJob) -> Result<(), JobError> {
    let sql = "DELETE FROM jobs WHERE id = $1 AND lease_token = $2";
    let affected = on_tx!(tx, c => sqlx::query(sql).bind(job.id).bind(&job.token).execute(c).await?.rows_affected());
    if affected == 1 { Ok(()) } else { Err(JobError::LeaseLost(job.id)) }
}

/// Finishes several jobs claimed together (one lease token) inside the
/// transaction holding their effects; [`JobError::LeaseLost`] if any of them
/// was taken over, and the caller must then roll back.
pub async fn complete_many(tx: &mut Tx, jobs: &[ClaimedJob]) -> Result<(), JobError> {
    let Some(first) = jobs.first() else { return Ok(()) };
    if jobs.iter().any(|job| job.token != first.token) {
        return Err(JobError::LeaseLost(first.id));
    }
    let ids: Vec<i64> = jobs.iter().map(|job| job.id).collect();
    let affected = match &mut tx.conn {
        kanpa_ledger::db::TxConn::Postgres(c) => {
            let sql = "DELETE FROM jobs WHERE lease_token = $1 AND id = ANY($2)";
            // Planned for this batch: see `kanpa_ledger::rows`.
            sqlx::query(sql).bind(&first.token).bind(&ids).persistent(false).execute(&mut **c).await?.rows_affected()
        }
        kanpa_ledger::db::TxConn::Sqlite(c) => {
            let list = (2..ids.len() + 2).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let sql = format!("DELETE FROM jobs WHERE lease_token = $1 AND id IN ({list})");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&first.token);
            for id in &ids {
                q = q.bind(*id);
            }
            q.execute(&mut **c).await?.rows_affected()
        }
    };
    if affected == jobs.len() as u64 { Ok(()) } else { Err(JobError::LeaseLost(first.id)) }
}

/// Records a failed attempt: back to `ready` after `delay`, or `dead` when
/// attempts are used up or `give_up` is set. Returns true if now dead.
pub async fn fail(
    tx: &mut Tx,
    job: &ClaimedJob,
    error: &str,
    delay: Duration,
    give_up: bool,
) -> Result<bool, JobError> {
    let now = Timestamp::now();
    let run_at = now.saturating_add(time::Duration::try_from(delay).unwrap_or(time::Duration::HOUR));
    let dead = give_up || job.is_last_attempt();
    let state = if dead { "dead" } else { "ready" };
    let sql = "UPDATE jobs SET state = $1, run_at = $2, last_error = $3, lease_until = NULL, lease_token = NULL,
                   locked_by = NULL, updated_at = $4
               WHERE id = $5 AND lease_token = $6";
    let error: String = error.chars().take(2000).collect();
    let affected = on_tx!(tx, c => sqlx::query(sql)
        .bind(state).bind(run_at).bind(&error).bind(now).bind(job.id).bind(&job.token)
        .execute(c).await?.rows_affected());
    if affected == 1 { Ok(dead) } else { Err(JobError::LeaseLost(job.id)) }
}

/// A job that gave up, as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadJob {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub async fn dead_jobs(db: &Db) -> Result<Vec<DeadJob>, sqlx::Error> {
    let sql = "SELECT id, kind, payload, attempts, last_error FROM jobs WHERE state = 'dead' ORDER BY id";
    Ok(on_db!(db, p => sqlx::query_as(sql).fetch_all(p).await?))
}

/// Jobs per state: (ready, running, dead).
pub async fn counts(db: &Db) -> Result<(i64, i64, i64), sqlx::Error> {
    let sql = "SELECT
        (SELECT COUNT(*) FROM jobs WHERE state = 'ready'),
        (SELECT COUNT(*) FROM jobs WHERE state = 'running'),
        (SELECT COUNT(*) FROM jobs WHERE state = 'dead')";
    Ok(on_db!(db, p => sqlx::query_as(sql).fetch_one(p).await?))
}

/// How long a loop that found fewer due jobs than its batch waits before
/// claiming again.
const GATHER: Duration = Duration::from_millis(20);

/// How workers behave.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Identifies this process in `jobs.locked_by`.
    pub name: String,
    /// Jobs run at once in this process.
    pub concurrency: usize,
    /// How long a claimed job is ours before another worker may take it.
    pub lease: Duration,
    /// How long an idle worker waits before looking again (enqueues in
    /// this process wake it sooner).
    pub poll_interval: Duration,
    /// Multiplies every retry delay; below 1 in tests.
    pub backoff_scale: f64,
    /// Jobs one loop claims at once.
    pub batch: i64,
}

/// Handlers by job kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
}

impl Registry {
    pub fn register(&mut self, kind: &'static str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind, handler);
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }
}

/// The worker pool of one process.
#[derive(Clone)]
pub struct Workers {
    db: Db,
    registry: Arc<Registry>,
    options: WorkerOptions,
    wake: Arc<Notify>,
}

/// What happened to one claimed job.
#[derive(Debug, PartialEq, Eq)]
pub enum Ran {
    Completed,
    Retrying,
    Dead,
    LeaseLost,
}

impl Workers {
    pub fn new(db: Db, registry: Registry, options: WorkerOptions) -> Workers {
        Workers { db, registry: Arc::new(registry), options, wake: Arc::new(Notify::new()) }
    }

    /// Wakes idle workers, e.g. after a request enqueued a job.
    pub fn notify(&self) {
        self.wake.notify_waiters();
    }

    /// Runs `concurrency` loops until `shutdown` turns true; jobs already
    /// started are finished before this returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut loops = JoinSet::new();
        for n in 0..self.options.concurrency.max(1) {
            let me = self.clone();
            let shutdown = shutdown.clone();
            loops.spawn(async move { me.run_loop(n, shutdown).await });
        }
        let _ = shutdown.wait_for(|stop| *stop).await;
        while loops.join_next().await.is_some() {}
    }

    async fn run_loop(&self, n: usize, mut shutdown: watch::Receiver<bool>) {
        let name = format!("{}#{n}", self.options.name);
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.run_batch(&name).await {
                Ok(0) => {}
                Ok(n) if n as i64 >= self.options.batch => continue,
                // The queue ran dry mid-batch: let it fill for a moment, so
                // that under a steady stream each claim takes many jobs and
                // each commit covers many (an idle queue still gets a new
                // job at once, through the wake-up below).
                Ok(_) => {
                    tokio::select! {
                        _ = shutdown.changed() => {}
                        () = tokio::time::sleep(GATHER) => {}
                    }
                    continue;
                }
                Err(e) => tracing::warn!(error = %e, "job queue unavailable; retrying"),
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
    }

    /// Claims up to a batch of due jobs and runs them: runs of jobs of one
    /// kind whose handler [batches](JobHandler::batches) share one
    /// transaction (up to a batch of [units](JobHandler::size)), the others
    /// run one after the other; jobs not started
    /// before half the lease has passed are handed back. Returns how many ran.
    pub async fn run_batch(&self, worker: &str) -> Result<usize, sqlx::Error> {
        let claimed = claim_batch(&self.db, worker, self.options.lease, self.options.batch).await?;
        let started = std::time::Instant::now();
        let mut ran = 0;
        let mut rest = claimed.as_slice();
        while let Some(job) = rest.first() {
            if started.elapsed() > self.options.lease / 2 {
                release(&self.db, rest).await?;
                break;
            }
            let handler = self.registry.handlers.get(job.kind.as_str()).filter(|h| h.batches()).cloned();
            let together = match &handler {
                Some(handler) => {
                    let mut units = 0;
                    let fits = |j: &&ClaimedJob| {
                        units += handler.size(j);
                        units <= self.options.batch.max(1) as usize
                    };
                    rest.iter().take_while(|j| j.kind == job.kind).take_while(fits).count().max(1)
                }
                None => 1,
            };
            let (group, tail) = rest.split_at(together);
            rest = tail;
            match handler {
                Some(handler) if group.len() > 1 => self.execute_many(&handler, group).await?,
                _ => {
                    self.execute(job.clone()).await?;
                }
            }
            ran += group.len();
        }
        Ok(ran)
    }

    /// Runs jobs of one kind in one transaction; if that fails or a lease
    /// was lost, runs each on its own instead.
    async fn execute_many(&self, handler: &Arc<dyn JobHandler>, jobs: &[ClaimedJob]) -> Result<(), sqlx::Error> {
        let started = std::time::Instant::now();
        let together = match handler.run_many(&self.db, jobs).await {
            Ok(mut tx) => match complete_many(&mut tx, jobs).await {
                Ok(()) => tx.commit().await.map_err(|e| e.to_string()),
                Err(e) => {
                    tx.rollback().await?;
                    Err(e.to_string())
                }
            },
            Err(JobFailure::Retry(m) | JobFailure::GiveUp(m)) => Err(m),
        };
        match together {
            Ok(()) => {
                let kind = jobs[0].kind.clone();
                let per_job = started.elapsed().as_secs_f64() / jobs.len() as f64;
                for _ in jobs {
                    metrics::histogram!("kanpa_job_duration_seconds", "kind" => kind.clone()).record(per_job);
                }
                metrics::counter!("kanpa_jobs_total", "kind" => kind, "outcome" => "completed")
                    .increment(jobs.len() as u64);
            }
            Err(reason) => {
                tracing::debug!(jobs = jobs.len(), kind = %jobs[0].kind, reason = %reason, "batch not applied; running its jobs one by one");
                for job in jobs {
                    self.execute(job.clone()).await?;
                }
            }
        }
        Ok(())
    }

    /// Claims and runs one job, if one is due.
    pub async fn run_one(&self, worker: &str) -> Result<Option<Ran>, sqlx::Error> {
        let Some(job) = claim(&self.db, worker, self.options.lease).await? else {
            return Ok(None);
        };
        Ok(Some(self.execute(job).await?))
    }

    async fn execute(&self, job: ClaimedJob) -> Result<Ran, sqlx::Error> {
        let Some(handler) = self.registry.handlers.get(job.kind.as_str()).cloned() else {
            let mut tx = self.db.begin().await?;
            let message = format!("no handler for job kind {:?}", job.kind);
            let outcome = fail(&mut tx, &job, &message, Duration::ZERO, true).await;
            return self.settle(tx, outcome.map(|_| Ran::Dead)).await;
        };
        let started = std::time::Instant::now();
        let result = handler.run(&self.db, &job).await;
        metrics::histogram!("kanpa_job_duration_seconds", "kind" => job.kind.clone())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(mut tx) => {
                let outcome = complete(&mut tx, &job).await.map(|()| Ran::Completed);
                metrics::counter!("kanpa_jobs_total", "kind" => job.kind.clone(), "outcome" => "completed")
                    .increment(u64::from(outcome.is_ok()));
                self.settle(tx, outcome).await
            }
            Err(failure) => {
                let (message, give_up) = match failure {
                    JobFailure::Retry(m) => (m, false),
                    JobFailure::GiveUp(m) => (m, true),
                };
                let delay = handler.retry_policy().delay(job.attempt, self.options.backoff_scale);
                let mut tx = self.db.begin().await?;
                let outcome = fail(&mut tx, &job, &message, delay, give_up).await;
                let ran = match outcome {
                    Ok(true) => {
                        tracing::error!(job = job.id, kind = %job.kind, attempts = job.attempt, error = %message, "job is dead");
                        handler.on_dead(&mut tx, &job, &message).await?;
                        Ok(Ran::Dead)
                    }
                    Ok(false) => {
                        tracing::warn!(job = job.id, kind = %job.kind, attempt = job.attempt, error = %message, "job failed; will retry");
                        Ok(Ran::Retrying)
                    }
                    Err(e) => Err(e),
                };
                let label = match &ran {
                    Ok(Ran::Dead) => "dead",
                    _ => "retrying",
                };
                metrics::counter!("kanpa_jobs_total", "kind" => job.kind.clone(), "outcome" => label).increment(1);
                self.settle(tx, ran).await
            }
        }
    }

    /// Commits, or rolls back when the lease was lost.
    async fn settle(&self, tx: Tx, outcome: Result<Ran, JobError>) -> Result<Ran, sqlx::Error> {
        match outcome {
            Ok(ran) => {
                tx.commit().await?;
                Ok(ran)
            }
            Err(JobError::LeaseLost(id)) => {
                tracing::warn!(job = id, "lease lost: discarding this attempt's effects");
                tx.rollback().await?;
                Ok(Ran::LeaseLost)
            }
            Err(JobError::Database(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_with_jitter_and_a_cap() {
        let policy = RetryPolicy { base: Duration::from_secs(2), cap: Duration::from_secs(60), max_attempts: 10 };
        for attempt in 1..=10 {
            let expected = (2u64 << (attempt - 1)).min(60) as f64;
            let got = policy.delay(attempt, 1.0).as_secs_f64();
            assert!(got >= expected * 0.75 - 1e-9 && got <= expected * 1.25 + 1e-9, "{attempt}: {got}");
        }
        assert!(policy.delay(3, 0.001) < Duration::from_millis(20));
    }

    #[test]
    fn total_span_adds_the_delays_between_attempts() {
        let policy = RetryPolicy { base: Duration::from_secs(1), cap: Duration::from_secs(4), max_attempts: 5 };
        // 1 + 2 + 4 + 4
        assert_eq!(policy.total_span(), Duration::from_secs(11));
    }
}
