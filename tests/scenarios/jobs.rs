//! The job runner on both databases: leases, retries, dead jobs, and
//! several processes sharing one queue.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kanpa_ledger::{Db, Locale, Money, NewEntry, Timestamp, Tx, store};
use kanpa_messaging::email::{EmailAddress, EmailTemplate};
use kanpa_messaging::jobs::{
    self, ClaimedJob, JobFailure, JobHandler, NewJob, Ran, Registry, RetryPolicy, WorkerOptions, Workers,
};
use kanpa_messaging::outbox::{self, NewEmail, Queued};

use crate::harness::{TestBackend, TestDb, eventually, kanpa_bin};
use crate::ledger::{Books, header, open_books};
use crate::on_both_backends;

on_both_backends!(
    a_worker_that_dies_mid_job_leaves_it_to_be_retried_after_its_lease_and_its_effects_apply_once,
    failing_jobs_back_off_then_die_visibly_with_their_last_error,
    two_worker_processes_split_the_queue_without_doubling,
    jobs_claimed_in_a_batch_but_not_started_are_handed_back_uncharged,
);

async fn jobs_claimed_in_a_batch_but_not_started_are_handed_back_uncharged(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else { return };
    for n in 0..5 {
        enqueue(&t.db, "test.post", n, 5).await;
    }
    let claimed = jobs::claim_batch(&t.db, "w", Duration::from_secs(30), 3).await.unwrap();
    assert_eq!(claimed.len(), 3, "a batch takes at most its limit");
    assert!(claimed.iter().all(|j| j.attempt == 1));
    // Another worker gets only what is left.
    let others = jobs::claim_batch(&t.db, "other", Duration::from_secs(30), 10).await.unwrap();
    assert_eq!(others.len(), 2);
    assert!(others.iter().all(|o| claimed.iter().all(|c| c.id != o.id)), "no job claimed twice");

    jobs::release(&t.db, &claimed[1..]).await.unwrap();
    assert_eq!(jobs::counts(&t.db).await.unwrap(), (2, 3, 0));
    let again = jobs::claim_batch(&t.db, "third", Duration::from_secs(30), 10).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|j| j.attempt == 1), "a handed-back job was not charged an attempt");
}

/// Posts one ledger entry per job, keyed by the job's number.
struct PostEntry {
    books: Arc<Books>,
    runs: AtomicUsize,
}

#[async_trait]
impl JobHandler for PostEntry {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_millis(10), cap: Duration::from_millis(100), max_attempts: 5 }
    }

    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let n = job.payload["n"].as_i64().unwrap_or_default();
        let entry = NewEntry::transfer(
            header(self.books.org, &format!("job:{n}")),
            self.books.accounts[0].id,
            self.books.accounts[2].id,
            Money::yen(100),
        )?;
        let mut tx = db.begin().await?;
        store::post(&mut tx, &entry).await?;
        Ok(tx)
    }
}

fn workers(db: &Db, kind: &'static str, handler: Arc<dyn JobHandler>, lease: Duration, backoff_scale: f64) -> Workers {
    let mut registry = Registry::default();
    registry.register(kind, handler);
    let options = WorkerOptions {
        name: "test".into(),
        concurrency: 1,
        lease,
        poll_interval: Duration::from_millis(20),
        backoff_scale,
        batch: 1,
    };
    Workers::new(db.clone(), registry, options)
}

async fn enqueue(db: &Db, kind: &'static str, n: i64, max_attempts: i32) {
    let mut tx = db.begin().await.unwrap();
    let job = NewJob { kind, payload: serde_json::json!({ "n": n }), run_at: Timestamp::now(), max_attempts };
    jobs::enqueue(&mut tx, &job).await.unwrap();
    tx.commit().await.unwrap();
}

async fn entries(db: &Db) -> i64 {
    store::check(db).await.unwrap().entries
}

async fn a_worker_that_dies_mid_job_leaves_it_to_be_retried_after_its_lease_and_its_effects_apply_once(
    backend: TestBackend,
) {
    let Some(t) = TestDb::new(backend).await else { return };
    let books = Arc::new(open_books(&t.db, "jobs", 1).await);
    let handler = Arc::new(PostEntry { books, runs: AtomicUsize::new(0) });
    enqueue(&t.db, "test.post", 1, 5).await;

    // Worker A claims the job with a short lease, then "dies": it never
    // completes in time.
    let claimed_by_a = jobs::claim(&t.db, "worker-a", Duration::from_millis(300)).await.unwrap().expect("a job");
    assert_eq!(claimed_by_a.attempt, 1);

    // While A's lease holds, nobody else may take the job.
    let b = workers(&t.db, "test.post", handler.clone(), Duration::from_secs(30), 1.0);
    assert_eq!(b.run_one("worker-b").await.unwrap(), None);

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.run_one("worker-b").await.unwrap(), Some(Ran::Completed));
    assert_eq!(entries(&t.db).await, 1);

    // A wakes up and finishes its stale attempt: the fence refuses it and its
    // effects are rolled back.
    let mut stale = handler.run(&t.db, &claimed_by_a).await.expect("the handler itself succeeds");
    let fenced = jobs::complete(&mut stale, &claimed_by_a).await;
    assert!(matches!(fenced, Err(jobs::JobError::LeaseLost(_))), "{fenced:?}");
    stale.rollback().await.unwrap();

    assert_eq!(entries(&t.db).await, 1, "the job's effect applied exactly once");
    assert_eq!(jobs::counts(&t.db).await.unwrap(), (0, 0, 0));
    assert!(store::check(&t.db).await.unwrap().is_clean());
}

struct AlwaysFails;

#[async_trait]
impl JobHandler for AlwaysFails {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(1), cap: Duration::from_secs(10), max_attempts: 3 }
    }

    async fn run(&self, _db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        Err(JobFailure::Retry(format!("the remote end is down (attempt {})", job.attempt)))
    }
}

async fn failing_jobs_back_off_then_die_visibly_with_their_last_error(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else { return };
    // 1 s base scaled to 0.2: the first retry waits 150–250 ms.
    let w = workers(&t.db, "test.fail", Arc::new(AlwaysFails), Duration::from_secs(30), 0.2);
    enqueue(&t.db, "test.fail", 1, 3).await;

    assert_eq!(w.run_one("w").await.unwrap(), Some(Ran::Retrying));
    assert_eq!(w.run_one("w").await.unwrap(), None, "not due again before its backoff");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.run_one("w").await.unwrap(), Some(Ran::Retrying));
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(w.run_one("w").await.unwrap(), Some(Ran::Dead));

    let dead = jobs::dead_jobs(&t.db).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].last_error.as_deref(), Some("the remote end is down (attempt 3)"));
    assert_eq!(jobs::counts(&t.db).await.unwrap(), (0, 0, 1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.run_one("w").await.unwrap(), None, "dead jobs are never picked up");

    // An unknown kind dies at once, with a reason.
    enqueue(&t.db, "test.nobody-handles-this", 2, 5).await;
    assert_eq!(w.run_one("w").await.unwrap(), Some(Ran::Dead));
    let dead = jobs::dead_jobs(&t.db).await.unwrap();
    assert!(dead[1].last_error.as_deref().unwrap().contains("no handler"), "{dead:?}");
}

/// Two real `kanpa serve` processes on one database, each writing emails to
/// its own folder: every email is sent once, by one of them.
async fn two_worker_processes_split_the_queue_without_doubling(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else { return };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut children = Vec::new();
    for dir in &dirs {
        let child = Command::new(kanpa_bin())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env("KANPA_ENV", "test")
            .env("KANPA__DATABASE__URL", &t.url)
            .env("KANPA__MAIL__FILE_DIR", dir.path().join("outbox"))
            // Small claims, so that one process cannot take the whole queue
            // in its first round (4 loops x 64 would hold all 200).
            .env("KANPA__JOBS__BATCH", "4")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    // Both are polling once their workers have run a first (empty) claim.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let total = 200;
    let mut tx = t.db.begin().await.unwrap();
    for i in 0..total as u32 {
        let email = NewEmail {
            key: format!("split:{i}"),
            to: EmailAddress::parse(&format!("patron{i}@example.jp")).unwrap(),
            to_name: None,
            locale: if i.is_multiple_of(2) { Locale::Ja } else { Locale::En },
            template: EmailTemplate::TestMessage { sent_from: "split test".into() },
        };
        assert!(matches!(outbox::enqueue(&mut tx, &email, "kanpa.test").await.unwrap(), Queued::New(_)));
    }
    tx.commit().await.unwrap();

    eventually(60, "every email is sent", || async {
        outbox::all(&t.db).await.unwrap().iter().all(|e| e.status == "sent")
    })
    .await;

    let files: Vec<Vec<String>> = dirs
        .iter()
        .map(|d| {
            std::fs::read_dir(d.path().join("outbox"))
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
                .unwrap_or_default()
        })
        .collect();
    let mut all: Vec<&String> = files.iter().flatten().collect();
    let sent_by_both = all.len();
    all.sort();
    all.dedup();
    assert_eq!(sent_by_both, total, "each email written exactly once across both processes");
    assert_eq!(all.len(), total);
    // On PostgreSQL the two claim side by side (`SKIP LOCKED`). A SQLite
    // file has one writer at a time, and a process that keeps winning the
    // lock may fairly send everything: there only exactly-once is asserted.
    if backend == TestBackend::Postgres {
        assert!(
            !files[0].is_empty() && !files[1].is_empty(),
            "both processes took work: {} / {}",
            files[0].len(),
            files[1].len()
        );
    }
    assert!(outbox::all(&t.db).await.unwrap().iter().all(|e| e.attempts == 1), "no email was tried twice");
    assert_eq!(jobs::counts(&t.db).await.unwrap(), (0, 0, 0));

    for mut child in children {
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status:?}");
    }
}
