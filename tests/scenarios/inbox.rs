//! Stripe's events through the real endpoint, signed by the fake Stripe:
//! duplicates, disorder, forgeries, backfill; and email through a real SMTP
//! sink that goes down and refuses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use kanpa_ledger::{Db, Locale, Money, NewEntry, Tx, on_db, on_tx, store};
use kanpa_messaging::email::{EmailAddress, EmailTemplate};
use kanpa_messaging::inbox::{EventHandlers, Handled, StoredEvent, StripeEventHandler};
use kanpa_messaging::mailer::SmtpMailer;
use kanpa_messaging::outbox::{self, NewEmail};
use kanpa_server::workers::Extras;
use kanpa_testkit::smtp::SmtpSink;
use kanpa_testkit::stripe::FakeStripe;
use serde_json::Value;

use crate::harness::{TestApp, TestBackend, TestDb, eventually, run_kanpa_with};
use crate::ledger::{Books, header, open_books};
use crate::on_both_backends;

on_both_backends!(
    duplicated_and_shuffled_deliveries_of_1000_events_store_each_once_and_apply_each_once,
    forged_stale_missing_and_oversized_webhooks_change_nothing,
    either_of_two_rotated_secrets_verifies,
    a_failing_handler_is_retried_until_its_event_applies,
    backfill_feeds_missed_events_through_the_same_path,
    smtp_down_for_the_first_attempts_then_up_delivers_every_message_once,
    a_permanent_refusal_fails_one_message_and_leaves_the_others,
    a_batch_of_events_applies_in_one_go_and_a_failing_event_retries_alone,
    two_workers_apply_events_of_one_object_one_after_the_other,
    a_message_deferred_in_a_batch_retries_alone_and_nothing_sent_is_sent_again,
    migration_0022_moves_each_outcome_to_a_row_of_its_own,
);

/// Books a charge's amount per `charge.succeeded` event, unless a newer
/// event about the same charge was already applied. Fails the first
/// `fail_first` calls, to exercise retries.
struct BookCharge {
    books: Arc<tokio::sync::OnceCell<Books>>,
    calls: AtomicUsize,
    fail_first: usize,
}

impl BookCharge {
    fn new(fail_first: usize) -> Arc<BookCharge> {
        Arc::new(BookCharge { books: Arc::new(tokio::sync::OnceCell::new()), calls: AtomicUsize::new(0), fail_first })
    }
}

#[async_trait]
impl StripeEventHandler for BookCharge {
    async fn handle(&self, tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<Handled> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail_first {
            anyhow::bail!("the ledger is having a bad day");
        }
        if event.is_superseded(tx).await? {
            return Ok(Handled::Skipped("a newer event about this charge was applied".into()));
        }
        let books = self.books.get().expect("books are opened before events arrive");
        let payload: Value = serde_json::from_str(&event.payload)?;
        let amount = payload["data"]["object"]["amount"].as_i64().unwrap_or_default();
        let entry = NewEntry::transfer(
            header(books.org, &format!("evt:{}", event.id)),
            books.accounts[0].id,
            books.accounts[2].id,
            Money::yen(amount),
        )?;
        store::post(tx, &entry).await?;
        Ok(Handled::Applied)
    }
}

struct Setup {
    app: TestApp,
    stripe: FakeStripe,
    handler: Arc<BookCharge>,
}

async fn setup(backend: TestBackend, fail_first: usize, extra_secret: Option<&str>) -> Option<Setup> {
    // The fake's HTTP client needs the process's TLS provider chosen first.
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.expect("fake Stripe starts");
    let handler = BookCharge::new(fail_first);
    let mut handlers = EventHandlers::default();
    handlers.register("charge.succeeded", handler.clone());
    let secret = match extra_secret {
        Some(old) => format!("{old},{}", stripe.webhook_secret()),
        None => stripe.webhook_secret(),
    };
    let api_base = stripe.api_base();
    let app = TestApp::spawn_with(backend, Extras { event_handlers: handlers, mailer: None }, |c| {
        c.stripe.webhook_secrets = kanpa_server::config::Secret::new(secret);
        c.stripe.api_base = api_base;
    })
    .await?;
    handler.books.set(open_books(&app.db, "drive", 1).await).ok().expect("set once");
    stripe.set_webhook_url(app.url("/webhooks/stripe"));
    Some(Setup { app, stripe, handler })
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    on_db!(db, p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap())
}

async fn all_processed(db: &Db) -> bool {
    count(db, "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'pending'").await == 0
}

async fn duplicated_and_shuffled_deliveries_of_1000_events_store_each_once_and_apply_each_once(backend: TestBackend) {
    let Some(s) = setup(backend, 0, None).await else { return };
    // 250 charges with 4 events each, one second apart; plus nothing else.
    let mut events = Vec::new();
    let mut newest = Vec::new();
    let base = s.stripe.now() - 3600;
    for i in 0..250 {
        let charge = s.stripe.charge(1000 + i, "jpy", 0, &[]).unwrap();
        for k in 0..4 {
            let event = s.stripe.event_at("charge.succeeded", charge.clone(), base + i * 10 + k);
            if k == 3 {
                newest.push((charge["id"].as_str().unwrap().to_owned(), event["id"].as_str().unwrap().to_owned()));
            }
            events.push(event);
        }
    }
    let statuses = s.stripe.deliver_many(&events, 3, true, 16).await.unwrap();
    assert_eq!(statuses.len(), 3000);
    assert!(statuses.iter().all(|s| *s == 200), "every delivery, duplicate or not, is answered 200");

    eventually(120, "every event is processed", || all_processed(&s.app.db)).await;
    assert_eq!(count(&s.app.db, "SELECT COUNT(*) FROM stripe_events").await, 1000, "each event stored once");
    let applied = count(&s.app.db, "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'applied'").await;
    let stale = count(&s.app.db, "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'stale'").await;
    assert_eq!(applied + stale, 1000);
    assert!(applied >= 250, "at least the newest event of every charge applies");
    // Each applied event booked exactly one entry; nothing else did.
    let report = store::check(&s.app.db).await.unwrap();
    assert!(report.is_clean());
    assert_eq!(report.entries, applied);
    assert_eq!(s.handler.calls.load(Ordering::SeqCst) as i64, 1000, "the handler ran once per event");
    // Whatever the order, every charge ends at its newest event.
    for (charge, event) in newest {
        let mut tx = s.app.db.begin().await.unwrap();
        let (_, last) = kanpa_messaging::inbox::newest_applied(&mut tx, &charge).await.unwrap().unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(last, event, "{charge}");
    }
    assert_eq!(kanpa_messaging::jobs::counts(&s.app.db).await.unwrap(), (0, 0, 0));
    s.app.stop().await;
}

async fn forged_stale_missing_and_oversized_webhooks_change_nothing(backend: TestBackend) {
    let Some(s) = setup(backend, 0, None).await else { return };
    let charge = s.stripe.charge(3000, "jpy", 0, &[]).unwrap();
    let event = s.stripe.event("charge.succeeded", charge);
    let body = serde_json::to_string(&event).unwrap();
    let now = s.stripe.now();

    let forged = kanpa_testkit::stripe::signature_header("whsec_somebody_else", &body, now);
    let stale = s.stripe.sign(&body, now - 301);
    let tampered_body = body.replace("3000", "300000");
    let oversized = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let not_json = "hello";
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("bad_signature", body.clone(), Some(forged)),
        ("stale", body.clone(), Some(stale)),
        ("missing_signature", body.clone(), None),
        ("bad_signature", tampered_body, Some(s.stripe.sign(&body, now))),
        ("too_large", oversized.clone(), Some(s.stripe.sign(&oversized, now))),
        ("unparsable", not_json.to_owned(), Some(s.stripe.sign(not_json, now))),
    ];
    for (reason, body, signature) in &cases {
        let (status, answer) = s.stripe.deliver_raw(body, signature.as_deref()).await.unwrap();
        assert_eq!(status, 400, "{reason}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"]["code"], *reason);
    }
    assert_eq!(count(&s.app.db, "SELECT COUNT(*) FROM stripe_events").await, 0);
    assert_eq!(count(&s.app.db, "SELECT COUNT(*) FROM jobs").await, 0);
    let metrics = s.app.get("/metrics").await.text().await.unwrap();
    for reason in ["bad_signature", "stale", "missing_signature", "too_large", "unparsable"] {
        let label = format!(r#"kanpa_stripe_webhooks_total{{outcome="rejected",reason="{reason}"}}"#);
        assert!(metrics.contains(&label), "{label} in {metrics}");
    }
    // The genuine delivery still goes through afterwards.
    assert_eq!(s.stripe.deliver(&event).await.unwrap(), 200);
    s.app.stop().await;
}

async fn either_of_two_rotated_secrets_verifies(backend: TestBackend) {
    let old = "whsec_old_secret_being_rotated_out";
    let Some(s) = setup(backend, 0, Some(old)).await else { return };
    let first = s.stripe.event("charge.succeeded", s.stripe.charge(500, "jpy", 0, &[]).unwrap());
    let second = s.stripe.event("charge.succeeded", s.stripe.charge(700, "jpy", 0, &[]).unwrap());
    assert_eq!(s.stripe.deliver(&first).await.unwrap(), 200, "signed with the new secret");
    let body = serde_json::to_string(&second).unwrap();
    let signed_with_old = kanpa_testkit::stripe::signature_header(old, &body, s.stripe.now());
    let (status, _) = s.stripe.deliver_raw(&body, Some(&signed_with_old)).await.unwrap();
    assert_eq!(status, 200, "signed with the old secret");
    eventually(30, "both are processed", || all_processed(&s.app.db)).await;
    assert_eq!(store::check(&s.app.db).await.unwrap().entries, 2);
    s.app.stop().await;
}

async fn a_failing_handler_is_retried_until_its_event_applies(backend: TestBackend) {
    let Some(s) = setup(backend, 2, None).await else { return };
    let event = s.stripe.event("charge.succeeded", s.stripe.charge(4200, "jpy", 0, &[]).unwrap());
    assert_eq!(s.stripe.deliver(&event).await.unwrap(), 200);
    eventually(30, "the event applies after two failures", || async {
        count(&s.app.db, "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'applied'").await == 1
    })
    .await;
    assert_eq!(s.handler.calls.load(Ordering::SeqCst), 3);
    assert_eq!(store::check(&s.app.db).await.unwrap().entries, 1, "the failed attempts left nothing behind");
    assert_eq!(count(&s.app.db, "SELECT COUNT(*) FROM stripe_events WHERE last_error IS NOT NULL").await, 0);
    s.app.stop().await;
}

async fn backfill_feeds_missed_events_through_the_same_path(backend: TestBackend) {
    let Some(s) = setup(backend, 0, None).await else { return };
    let events: Vec<Value> = (0..5)
        .map(|i| s.stripe.event("charge.succeeded", s.stripe.charge(100 * (i + 1), "jpy", 0, &[]).unwrap()))
        .collect();
    // Two arrive by webhook; three were missed.
    for event in &events[..2] {
        assert_eq!(s.stripe.deliver(event).await.unwrap(), 200);
    }
    let (code, out, err) = run_kanpa_with(
        &s.app.database_url,
        &[("KANPA__STRIPE__API_BASE", &s.stripe.api_base())],
        &["stripe", "backfill", "--since", "3d"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 events listed, 3 new"), "{out}{err}");

    eventually(30, "all five are processed", || all_processed(&s.app.db)).await;
    assert_eq!(count(&s.app.db, "SELECT COUNT(*) FROM stripe_events").await, 5);
    assert_eq!(count(&s.app.db, "SELECT COUNT(*) FROM stripe_events WHERE received_via = 'backfill'").await, 3);
    assert_eq!(store::check(&s.app.db).await.unwrap().entries, 5);

    // Running it again finds nothing new.
    let (code, out, _) = run_kanpa_with(
        &s.app.database_url,
        &[("KANPA__STRIPE__API_BASE", &s.stripe.api_base())],
        &["stripe", "backfill", "--since", "3d"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("5 events listed, 0 new") && out.contains("5 already in the inbox"), "{out}");
    s.app.stop().await;
}

fn email(i: usize, to: &str) -> NewEmail {
    NewEmail {
        key: format!("smtp-test:{i}"),
        to: EmailAddress::parse(to).unwrap(),
        to_name: Some(format!("支援者 {i}")),
        locale: if i.is_multiple_of(2) { Locale::Ja } else { Locale::En },
        template: EmailTemplate::SignInLink { link: format!("http://127.0.0.1/s/{i}"), expires_in_minutes: 15 },
    }
}

async fn spawn_with_sink(backend: TestBackend, sink: &SmtpSink) -> Option<TestApp> {
    let mailer = SmtpMailer::from_url(&sink.url()).expect("the sink's URL is valid");
    TestApp::spawn_with(
        backend,
        Extras { event_handlers: EventHandlers::default(), mailer: Some(Arc::new(mailer)) },
        |_| {},
    )
    .await
}

async fn queue(db: &Db, emails: &[NewEmail]) {
    let mut tx = db.begin().await.unwrap();
    for e in emails {
        outbox::enqueue(&mut tx, e, "kanpa.test").await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn smtp_down_for_the_first_attempts_then_up_delivers_every_message_once(backend: TestBackend) {
    let sink = SmtpSink::start().unwrap();
    let Some(app) = spawn_with_sink(backend, &sink).await else { return };
    sink.go_down().await;
    let emails: Vec<NewEmail> = (0..20).map(|i| email(i, &format!("patron{i}@example.jp"))).collect();
    queue(&app.db, &emails).await;

    eventually(30, "every email has failed at least twice", || async {
        outbox::all(&app.db).await.unwrap().iter().all(|e| e.attempts >= 2 && e.status == "pending")
    })
    .await;
    assert!(sink.messages().is_empty());
    sink.come_up().unwrap();

    eventually(60, "every email is sent", || async {
        outbox::all(&app.db).await.unwrap().iter().all(|e| e.status == "sent")
    })
    .await;
    let received = sink.messages();
    assert_eq!(received.len(), 20, "each delivered once");
    let rows = outbox::all(&app.db).await.unwrap();
    for row in &rows {
        let copies = received.iter().filter(|m| m.data.contains(&format!("Message-ID: {}", row.message_id))).count();
        assert_eq!(copies, 1, "{}", row.message_id);
    }
    app.stop().await;
}

/// Twelve emails queued together are sent as one batch; the mail server
/// defers one (451). What was sent is recorded at once, so only the
/// deferred message is tried again: each arrives exactly once.
async fn a_message_deferred_in_a_batch_retries_alone_and_nothing_sent_is_sent_again(backend: TestBackend) {
    let sink = SmtpSink::start().unwrap();
    sink.refuse_next(1, 451);
    let Some(app) = spawn_with_sink(backend, &sink).await else { return };
    let emails: Vec<NewEmail> = (0..12).map(|i| email(i, &format!("patron{i}@example.jp"))).collect();
    queue(&app.db, &emails).await;
    eventually(60, "every email is sent", || async {
        outbox::all(&app.db).await.unwrap().iter().all(|e| e.status == "sent")
    })
    .await;
    let rows = outbox::all(&app.db).await.unwrap();
    let received = sink.messages();
    assert_eq!(received.len(), 12, "each delivered once");
    for row in &rows {
        let copies = received.iter().filter(|m| m.data.contains(&format!("Message-ID: {}", row.message_id))).count();
        assert_eq!(copies, 1, "{}", row.message_id);
    }
    let mut attempts: Vec<i32> = rows.iter().map(|r| r.attempts).collect();
    attempts.sort_unstable();
    assert_eq!(attempts, [vec![1; 11], vec![2]].concat(), "only the deferred message was tried twice");
    app.stop().await;
}

async fn a_permanent_refusal_fails_one_message_and_leaves_the_others(backend: TestBackend) {
    let sink = SmtpSink::start().unwrap();
    sink.reject_recipient("bounce@example.jp", 550);
    let Some(app) = spawn_with_sink(backend, &sink).await else { return };
    let emails = vec![email(1, "hanako@example.jp"), email(2, "bounce@example.jp"), email(3, "taro@example.jp")];
    queue(&app.db, &emails).await;
    eventually(30, "no email is pending", || async {
        outbox::all(&app.db).await.unwrap().iter().all(|e| e.status != "pending")
    })
    .await;
    let rows = outbox::all(&app.db).await.unwrap();
    let by_to = |to: &str| rows.iter().find(|r| r.to_address == to).unwrap().clone();
    assert_eq!(by_to("hanako@example.jp").status, "sent");
    assert_eq!(by_to("taro@example.jp").status, "sent");
    let bounced = by_to("bounce@example.jp");
    assert_eq!(bounced.status, "failed");
    assert_eq!(bounced.attempts, 1, "a permanent refusal is not retried");
    assert!(bounced.last_error.as_deref().unwrap_or("").contains("550"), "{bounced:?}");
    assert_eq!(sink.messages().len(), 2);
    app.stop().await;
}

/// Books `charge.succeeded` events; refuses the charge of `refused_amount`
/// while `refusals` last.
struct RefuseOne {
    books: Books,
    refused_amount: i64,
    refusals: AtomicUsize,
    calls: AtomicUsize,
}

#[async_trait]
impl StripeEventHandler for RefuseOne {
    async fn handle(&self, tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<Handled> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let payload: Value = serde_json::from_str(&event.payload)?;
        let amount = payload["data"]["object"]["amount"].as_i64().unwrap_or_default();
        let entry = NewEntry::transfer(
            header(self.books.org, &format!("evt:{}", event.id)),
            self.books.accounts[0].id,
            self.books.accounts[2].id,
            Money::yen(amount),
        )?;
        store::post(tx, &entry).await?;
        if amount == self.refused_amount
            && self.refusals.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            anyhow::bail!("refusing the charge of {amount}");
        }
        Ok(Handled::Applied)
    }
}

async fn a_batch_of_events_applies_in_one_go_and_a_failing_event_retries_alone(backend: TestBackend) {
    use kanpa_messaging::inbox::{self, IncomingEvent, Via};

    let Some(t) = TestDb::new(backend).await else { return };
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.unwrap();
    let handler = Arc::new(RefuseOne {
        books: open_books(&t.db, "batch", 1).await,
        refused_amount: 1003,
        refusals: AtomicUsize::new(0),
        calls: AtomicUsize::new(0),
    });
    let workers = charge_workers(&t.db, handler.clone(), 8);
    let receive = |amounts: std::ops::Range<i64>| {
        let events: Vec<IncomingEvent> = amounts
            .map(|amount| {
                let event = stripe.event("charge.succeeded", stripe.charge(amount, "jpy", 0, &[]).unwrap());
                IncomingEvent::from_json(&event.to_string()).unwrap()
            })
            .collect();
        let db = t.db.clone();
        async move {
            let batch: Vec<(&IncomingEvent, Via)> = events.iter().map(|e| (e, Via::Webhook)).collect();
            let intake = inbox::receive_many(&db, &batch).await.unwrap();
            assert!(intake.iter().all(|i| *i == inbox::Intake::Stored));
            // A second delivery of the same events stores nothing.
            let again = inbox::receive_many(&db, &batch).await.unwrap();
            assert!(again.iter().all(|i| *i == inbox::Intake::Duplicate));
        }
    };
    let applied = || async { count(&t.db, "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'applied'").await };

    // Six events stored together: one job, each event handled once, all
    // applied together.
    receive(1000..1006).await;
    assert_eq!(kanpa_messaging::jobs::counts(&t.db).await.unwrap(), (1, 0, 0));
    assert_eq!(workers.run_batch("w").await.unwrap(), 1);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 6, "one pass over the batch");
    assert_eq!(applied().await, 6);
    assert_eq!(store::check(&t.db).await.unwrap().entries, 6);

    // Six more, one failing three times. Their job fails at the fourth
    // event, is discarded and split into one job per event.
    handler.refusals.store(3, Ordering::SeqCst);
    handler.calls.store(0, Ordering::SeqCst);
    receive(1000..1006).await;
    assert_eq!(workers.run_batch("w").await.unwrap(), 1);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 4, "the six together, up to the failing event");
    assert_eq!(applied().await, 6);
    assert_eq!(kanpa_messaging::jobs::counts(&t.db).await.unwrap(), (6, 0, 0), "one job per event");
    // Those six jobs are one claim: the batch is discarded again, the
    // others apply one by one, the failing one waits for its retry with its
    // error noted and none of its effects kept.
    assert_eq!(workers.run_batch("w").await.unwrap(), 6);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 4 + 4 + 6, "the batch up to the failing event, then each alone");
    assert_eq!(applied().await, 11);
    assert_eq!(store::check(&t.db).await.unwrap().entries, 11);
    let sql = "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'pending' AND last_error LIKE '%refusing%'";
    assert_eq!(count(&t.db, sql).await, 1);
    assert_eq!(kanpa_messaging::jobs::counts(&t.db).await.unwrap(), (1, 0, 0), "its job waits to retry");

    assert_eq!(workers.run_batch("w").await.unwrap(), 1);
    assert_eq!(applied().await, 12);
    let report = store::check(&t.db).await.unwrap();
    assert!(report.is_clean() && report.entries == 12, "{report:?}");
    assert_eq!(kanpa_messaging::jobs::counts(&t.db).await.unwrap(), (0, 0, 0));
}

/// Workers run by hand, applying `charge.succeeded` with `handler` and
/// claiming `batch` jobs at once, retrying at once.
fn charge_workers(db: &Db, handler: Arc<dyn StripeEventHandler>, batch: i64) -> kanpa_messaging::jobs::Workers {
    use kanpa_messaging::inbox::{self, ProcessEvent};
    use kanpa_messaging::jobs::{Registry, WorkerOptions, Workers};

    let mut handlers = EventHandlers::default();
    handlers.register("charge.succeeded", handler);
    let mut registry = Registry::default();
    registry.register(inbox::JOB_KIND, Arc::new(ProcessEvent { handlers }));
    let options = WorkerOptions {
        name: "test".into(),
        concurrency: 1,
        lease: std::time::Duration::from_secs(30),
        poll_interval: std::time::Duration::from_millis(20),
        backoff_scale: 0.0,
        batch,
    };
    Workers::new(db.clone(), registry, options)
}

/// Applies `charge.succeeded` unless a newer event of the charge has been
/// applied, taking its time about it.
struct Slow {
    applied: AtomicUsize,
}

#[async_trait]
impl StripeEventHandler for Slow {
    async fn handle(&self, tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<Handled> {
        if event.is_superseded(tx).await? {
            return Ok(Handled::Skipped("a newer event of the charge was applied".into()));
        }
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(Handled::Applied)
    }
}

/// Two workers, each holding an event of the same charge: the one that
/// comes second waits for the first to commit, then sees the newer event
/// applied and leaves its older one stale. Without the object's lock both
/// would apply, the older last.
async fn two_workers_apply_events_of_one_object_one_after_the_other(backend: TestBackend) {
    use kanpa_messaging::inbox::{self, IncomingEvent, Via};
    use kanpa_messaging::jobs::Ran;

    let Some(t) = TestDb::new(backend).await else { return };
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.unwrap();
    let handler = Arc::new(Slow { applied: AtomicUsize::new(0) });
    let workers = charge_workers(&t.db, handler.clone(), 1);
    let charge = stripe.charge(1200, "jpy", 0, &[]).unwrap();
    let mut newer = stripe.event("charge.succeeded", charge.clone());
    let mut older = stripe.event("charge.succeeded", charge);
    newer["created"] = 1_800_000_100.into();
    older["created"] = 1_800_000_000.into();
    // The newer arrives first; each is delivered alone, so each has a job.
    for event in [&newer, &older] {
        let event = IncomingEvent::from_json(&event.to_string()).unwrap();
        assert_eq!(inbox::receive(&t.db, &event, Via::Webhook).await.unwrap(), inbox::Intake::Stored);
    }
    let first = workers.run_one("first");
    let second = async {
        // Once the first worker holds the newer event's job and its lock.
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        workers.run_one("second").await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.unwrap(), Some(Ran::Completed));
    assert_eq!(second.unwrap(), Some(Ran::Completed));
    assert_eq!(handler.applied.load(Ordering::SeqCst), 1, "only the newer event applied");
    let status = |id: Value| {
        let db = t.db.clone();
        async move {
            let sql = "SELECT status FROM stripe_event_states WHERE id = $1";
            let id = id.as_str().unwrap().to_owned();
            on_db!(&db, p => sqlx::query_scalar::<_, String>(sql).bind(id).fetch_one(p).await.unwrap())
        }
    };
    assert_eq!(status(newer["id"].clone()).await, "applied");
    assert_eq!(status(older["id"].clone()).await, "stale");
}

/// Events and emails stored before migration 0022 carried their outcome in
/// their own row; after it, each outcome is a row of its own, and what the
/// inbox, the outbox and the state views read is what was there before.
async fn migration_0022_moves_each_outcome_to_a_row_of_its_own(backend: TestBackend) {
    let Some(t) = TestDb::at_migration(backend, 21).await else { return };
    let received = kanpa_ledger::Timestamp::from_unix_seconds(1_700_000_000).unwrap();
    let processed = kanpa_ledger::Timestamp::from_unix_seconds(1_700_000_060).unwrap();
    let events = [
        ("evt_pending", "pending", None, Some("refusing for now")),
        ("evt_applied", "applied", Some(processed), None),
        ("evt_stale", "stale", None, None),
    ];
    let mut tx = t.db.begin().await.unwrap();
    for (id, status, processed_at, last_error) in events {
        let sql = "INSERT INTO stripe_events (id, event_type, object_id, created, livemode, payload, received_at,
                       received_via, status, processed_at, last_error)
                   VALUES ($1, 'charge.succeeded', 'ch_1', $2, false, '{}', $2, 'webhook', $3, $4, $5)";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(id).bind(received).bind(status).bind(processed_at).bind(last_error)
            .execute(c).await.map(|r| r.rows_affected()).unwrap());
    }
    let emails = [
        (1_i64, "pending", 2, Some("421 try later"), None),
        (2, "sent", 1, None, Some(processed)),
        (3, "failed", 3, Some("550 no such user"), None),
    ];
    for (id, status, attempts, last_error, sent_at) in emails {
        let sql = "INSERT INTO outbox_emails (id, idempotency_key, to_address, locale, template, data, message_id,
                       status, attempts, last_error, created_at, sent_at)
                   VALUES ($1, 'key:' || $1, 'patron@example.jp', 'ja', 'test_message', '{}', 'm' || $1 || '@kanpa',
                       $2, $3, $4, $5, $6)";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(id).bind(status).bind(attempts).bind(last_error).bind(received)
            .bind(sent_at).execute(c).await.map(|r| r.rows_affected()).unwrap());
    }
    tx.commit().await.unwrap();

    t.db.migrate().await.unwrap();

    let sql = "SELECT id, status, processed_at, last_error FROM stripe_event_states ORDER BY id";
    type EventState = (String, String, Option<kanpa_ledger::Timestamp>, Option<String>);
    let states: Vec<EventState> = on_db!(&t.db, p => sqlx::query_as(sql).fetch_all(p).await.unwrap());
    assert_eq!(
        states,
        vec![
            ("evt_applied".into(), "applied".into(), Some(processed), None),
            ("evt_pending".into(), "pending".into(), None, Some("refusing for now".into())),
            // An outcome recorded without its time takes the time received.
            ("evt_stale".into(), "stale".into(), Some(received), None),
        ]
    );
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM stripe_event_outcomes").await, 2);
    let got: Vec<(i64, String, i32, Option<String>)> =
        outbox::all(&t.db).await.unwrap().into_iter().map(|e| (e.id, e.status, e.attempts, e.last_error)).collect();
    assert_eq!(
        got,
        vec![
            (1, "pending".into(), 2, Some("421 try later".into())),
            (2, "sent".into(), 1, None),
            (3, "failed".into(), 3, Some("550 no such user".into())),
        ]
    );
    let sql = "SELECT sent_at FROM outbox_email_states WHERE id = 2";
    let sent_at: Option<kanpa_ledger::Timestamp> =
        on_db!(&t.db, p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap());
    assert_eq!(sent_at, Some(processed));

    // An event has one outcome: a second is refused, whoever records it.
    // And an outcome is of an event the inbox holds.
    let sql = "INSERT INTO stripe_event_outcomes (event_id, status, processed_at) VALUES ($1, 'applied', $2)";
    for event in ["evt_applied", "evt_unknown"] {
        let mut tx = t.db.begin().await.unwrap();
        let inserted = on_tx!(&mut tx, c => sqlx::query(sql).bind(event).bind(processed).execute(c).await.map(|r| r.rows_affected()));
        assert!(inserted.is_err(), "an outcome for {event} was accepted");
    }
    // An event or an email with an outcome stays.
    for delete in ["DELETE FROM stripe_events WHERE id = 'evt_applied'", "DELETE FROM outbox_emails WHERE id = 2"] {
        let mut tx = t.db.begin().await.unwrap();
        let deleted = on_tx!(&mut tx, c => sqlx::query(delete).execute(c).await.map(|r| r.rows_affected()));
        assert!(deleted.is_err(), "{delete} was accepted");
    }
    let mut tx = t.db.begin().await.unwrap();
    on_tx!(&mut tx, c => sqlx::query(sql).bind("evt_pending").bind(processed).execute(c).await.map(|r| r.rows_affected()))
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'pending'").await, 0);
}
