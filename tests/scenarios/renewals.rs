//! Month-end renewals: a batch of paid invoices asks Stripe about every
//! payment at once, before its transaction, and posts each once with one
//! receipt together with its event; a payment that is not through yet is
//! left to a collection job, which retries alone while the others go ahead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kanpa_ledger::{Db, Locale, on_db, store as ledger};
use kanpa_messaging::inbox::{self, EventHandlers, IncomingEvent, Via};
use kanpa_messaging::jobs::Workers;
use kanpa_messaging::mailer::FileMailer;
use kanpa_patrons::join::{self, JoinForm};
use kanpa_patrons::store::{self, SalonInput, TierInput};
use kanpa_patrons::{Salon, SalonStatus};
use kanpa_server::config::GatewayKind;
use kanpa_server::workers::{self, Extras};
use kanpa_testkit::stripe::FakeStripe;
use serde_json::Value;

use crate::harness::{TestBackend, TestDb, test_config};
use crate::on_both_backends;

on_both_backends!(a_batch_of_renewals_is_posted_with_its_events_and_a_payment_not_through_yet_retries_alone);

const MONTHLY: i64 = 1000;
/// Stripe's Japanese card fee as the fake charges it.
const FEE: i64 = (MONTHLY * 36 + 500) / 1000;

async fn count(db: &Db, sql: &'static str) -> i64 {
    on_db!(db, p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap())
}

/// Stores events in the inbox as the webhook endpoint does.
async fn receive(db: &Db, stripe: &FakeStripe, events: Vec<(&str, Value)>) {
    let incoming: Vec<IncomingEvent> = events
        .into_iter()
        .map(|(event_type, object)| IncomingEvent::from_json(&stripe.event(event_type, object).to_string()).unwrap())
        .collect();
    let batch: Vec<(&IncomingEvent, Via)> = incoming.iter().map(|e| (e, Via::Webhook)).collect();
    let intake = inbox::receive_many(db, &batch).await.unwrap();
    assert!(intake.iter().all(|i| *i == inbox::Intake::Stored), "{intake:?}");
}

async fn open_salon(db: &Db) -> Salon {
    let mut tx = db.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, "clinic", "架空クリニック").await.unwrap();
    tx.commit().await.unwrap();
    kanpa_payments::seller::update(db, org.id, &kanpa_payments::seller::fictional("架空クリニック")).await.unwrap();
    let input = SalonInput {
        slug: "night-shift".into(),
        name_ja: "夜勤の会".into(),
        name_en: "Night shift circle".into(),
        currency: "JPY".into(),
        contact_email: "organiser@example.jp".into(),
        ..SalonInput::default()
    };
    let salon = store::create_salon(db, org.id, &input).await.unwrap();
    let tier =
        TierInput { slug: "member".into(), name_ja: "会員".into(), monthly_price: MONTHLY, ..TierInput::default() };
    store::add_tier(db, salon.id, &tier).await.unwrap();
    store::set_salon_status(db, salon.id, SalonStatus::Open).await.unwrap()
}

/// Gross entries posted, and (receipts, distinct numbers, highest number).
async fn posted(db: &Db) -> (i64, (i64, i64, i64)) {
    let gross = count(db, "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'stripe:%:gross'").await;
    let sql = "SELECT COUNT(*), COUNT(DISTINCT number), COALESCE(MAX(number), 0) FROM receipts";
    let receipts = on_db!(db, p => sqlx::query_as(sql).fetch_one(p).await.unwrap());
    (gross, receipts)
}

const COLLECTIONS: &str = "SELECT COUNT(*) FROM jobs WHERE kind = 'membership.collect'";

fn payment_intent_lookups(stripe: &FakeStripe) -> usize {
    stripe.requests().iter().filter(|r| r.method == "GET" && r.path.starts_with("/v1/payment_intents/")).count()
}

async fn run_until_idle(workers: &Workers) {
    while workers.run_batch("test").await.unwrap() > 0 {}
}

async fn a_batch_of_renewals_is_posted_with_its_events_and_a_payment_not_through_yet_retries_alone(
    backend: TestBackend,
) {
    let Some(t) = TestDb::new(backend).await else { return };
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.unwrap();
    let mut config = test_config(&t.url);
    config.payments.gateway = GatewayKind::Stripe;
    config.stripe.api_base = stripe.api_base();
    config.jobs.batch = 16;
    config.jobs.backoff_scale = 0.0;
    let gateway = workers::gateway(&config, &t.db).unwrap();
    let site = config.salon_site();
    let outbox = tempfile::tempdir().unwrap();
    let mailer = Arc::new(FileMailer::new(outbox.path()));
    let extras = Extras { event_handlers: EventHandlers::default(), mailer: Some(mailer) };
    // The real registry, run by hand so each claim is seen.
    let workers = workers::build(&config, t.db.clone(), extras).unwrap();
    let salon = open_salon(&t.db).await;

    // Four patrons join through Checkout; their events arrive together.
    let mut subscriptions = Vec::new();
    let mut events = Vec::new();
    for n in 0..4 {
        let form = JoinForm { tier: "member".into(), email: format!("patron{n}@example.jp") };
        let joined = join::join(&t.db, gateway.as_ref(), &site, &salon.slug, &form, Locale::Ja).await.unwrap();
        let session_id = joined.checkout_url.rsplit('/').next().unwrap();
        let session = stripe.complete_checkout_session(session_id).unwrap();
        let subscription = stripe.object(session["subscription"].as_str().unwrap()).unwrap();
        let invoice = stripe.object(subscription["latest_invoice"].as_str().unwrap()).unwrap();
        subscriptions.push(subscription["id"].as_str().unwrap().to_owned());
        events.extend([
            ("checkout.session.completed", session),
            ("customer.subscription.created", subscription),
            ("invoice.paid", invoice),
        ]);
    }
    receive(&t.db, &stripe, events).await;

    // The events are one claim: before its transaction, the gateway is asked
    // about the four payments at once (four answers 400 ms late take well
    // under 4 × 400 ms), and the transaction that applies the events posts
    // the payments too. No collection job is needed.
    stripe.set_latency(Duration::from_millis(400));
    let started = Instant::now();
    assert_eq!(workers.run_batch("test").await.unwrap(), 1, "the twelve events, stored together: one job");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1200), "four lookups one after another: {took:?}");
    stripe.set_latency(Duration::ZERO);
    assert_eq!(payment_intent_lookups(&stripe), 4, "one lookup per payment");
    assert_eq!(posted(&t.db).await, (4, (4, 4, 4)));
    assert_eq!(count(&t.db, COLLECTIONS).await, 0);
    run_until_idle(&workers).await;

    // A month later all four renew, but one payment is not through yet.
    let mut renewals = Vec::new();
    let mut processing = None;
    for (n, subscription) in subscriptions.iter().enumerate() {
        let invoice = stripe.renew_subscription(subscription).unwrap();
        assert_eq!(invoice["status"], "paid");
        if n == 2 {
            let intent = invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().unwrap();
            let mut pending = stripe.object(intent).unwrap();
            pending["status"] = "processing".into();
            stripe.insert_object(pending.clone()).unwrap();
            processing = Some(pending);
        }
        renewals.push(("invoice.paid", invoice));
    }
    // The invoice events are applied as one run: the renewals together, and
    // beside them, as each alone would be, the recovery of a patron whose
    // card had failed (past due, active again) and an invoice of a
    // subscription kanpa does not know (ignored).
    let recovering = &subscriptions[3];
    let sql = "UPDATE memberships SET status = 'past_due' WHERE stripe_subscription_id = $1";
    let mut tx = t.db.begin().await.unwrap();
    kanpa_ledger::on_tx!(&mut tx, c => sqlx::query(sql).bind(recovering).execute(c).await.unwrap().rows_affected());
    tx.commit().await.unwrap();
    // One of them first needed the patron to authenticate: its invoice is
    // known, unpaid, before the batch pays it.
    receive(&t.db, &stripe, vec![("invoice.payment_action_required", renewals[1].1.clone())]).await;
    run_until_idle(&workers).await;
    let authenticated = renewals[1].1["id"].as_str().unwrap().to_owned();
    let invoice_sql = "SELECT status, stripe_charge_id FROM membership_invoices WHERE stripe_invoice_id = $1";
    let invoice_row = |id: String| {
        let db = t.db.clone();
        async move {
            on_db!(&db, p => sqlx::query_as::<_, (String, Option<String>)>(invoice_sql).bind(&id).fetch_one(p).await.unwrap())
        }
    };
    assert_eq!(invoice_row(authenticated.clone()).await, ("action_required".to_owned(), None));
    let mut stranger = renewals[0].1.clone();
    stranger["id"] = "in_stranger".into();
    stranger["metadata"] = serde_json::json!({});
    stranger["parent"]["subscription_details"]["metadata"] = serde_json::json!({});
    stranger["parent"]["subscription_details"]["subscription"] = "sub_stranger".into();
    renewals.push(("invoice.paid", stranger));
    let renewals_paid: Vec<Value> = renewals.iter().map(|(_, invoice)| invoice.clone()).collect();
    receive(&t.db, &stripe, renewals).await;
    let before = payment_intent_lookups(&stripe);
    assert_eq!(workers.run_batch("test").await.unwrap(), 1, "the five invoice events: one job");
    // Every payment named was asked about once (the stranger's invoice,
    // copied from the first renewal, names the same one), the two renewals
    // and the recovery were posted with their events, and the payment not
    // through yet waits for a collection job.
    assert_eq!(payment_intent_lookups(&stripe) - before, 4);
    assert_eq!(posted(&t.db).await, (7, (7, 7, 7)));
    assert_eq!(count(&t.db, COLLECTIONS).await, 1);
    let status = "SELECT status FROM memberships WHERE stripe_subscription_id = $1";
    let now: String = on_db!(&t.db, p => sqlx::query_scalar(status).bind(recovering).fetch_one(p).await.unwrap());
    assert_eq!(now, "active", "a paid invoice brings a past-due membership back");
    let (status, charge) = invoice_row(authenticated.clone()).await;
    assert_eq!(status, "paid", "the invoice written before is paid by the batch");
    assert!(charge.is_some_and(|c| c.starts_with("ch_")));
    let statuses = "SELECT COUNT(*) FROM stripe_event_states WHERE event_type = 'invoice.paid' AND status = 'applied'";
    assert_eq!(count(&t.db, statuses).await, 8);
    let ignored = "SELECT COUNT(*) FROM stripe_event_states WHERE event_type = 'invoice.paid' AND status = 'ignored'";
    assert_eq!(count(&t.db, ignored).await, 1, "the stranger's invoice is not ours");
    // Alongside the three receipts' emails (two jobs: the renewals' emails
    // queued together, the recovery's on its own), the collection asks
    // again, finds the payment still processing, and waits for its retry.
    let before = payment_intent_lookups(&stripe);
    assert_eq!(workers.run_batch("test").await.unwrap(), 3, "the collection and two email jobs");
    let sent = "SELECT COUNT(*) FROM outbox_email_states WHERE status = 'sent' AND idempotency_key LIKE '%receipt:%'";
    assert_eq!(count(&t.db, sent).await, 7, "every receipt so far sent");
    assert_eq!(payment_intent_lookups(&stripe) - before, 1);
    assert_eq!(posted(&t.db).await, (7, (7, 7, 7)));
    let sql = "SELECT COUNT(*) FROM jobs WHERE kind = 'membership.collect' AND state = 'ready'
                   AND attempts = 1 AND last_error LIKE '%has not succeeded yet%'";
    assert_eq!(count(&t.db, sql).await, 1, "the one not through waits for its retry");

    // The payment goes through: the retry posts it, once.
    let mut succeeded = processing.unwrap();
    succeeded["status"] = "succeeded".into();
    stripe.insert_object(succeeded).unwrap();
    run_until_idle(&workers).await;
    assert_eq!(posted(&t.db).await, (8, (8, 8, 8)));
    assert_eq!(-ledger::balance(&t.db, salon.fund_account).await.unwrap().amount(), 8 * (MONTHLY - FEE));
    let report = ledger::check(&t.db).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    let receipts = "SELECT COUNT(DISTINCT idempotency_key) FROM outbox_emails WHERE template = 'membership_receipt'";
    assert_eq!(count(&t.db, receipts).await, 8);
    assert_eq!(kanpa_messaging::jobs::counts(&t.db).await.unwrap(), (0, 0, 0));

    // Every request went over a connection kept open: the joins, one after
    // the other, on one; the workers' ten lookups, at most four at a time,
    // on four.
    let requests = stripe.requests();
    let connections = |lookups: bool| {
        let mut used: Vec<u64> = requests
            .iter()
            .filter(|r| r.path.starts_with("/v1/payment_intents/") == lookups)
            .map(|r| r.connection)
            .collect();
        used.sort_unstable();
        used.dedup();
        used.len()
    };
    assert_eq!(payment_intent_lookups(&stripe), 10);
    assert_eq!(connections(false), 1, "the joins");
    assert_eq!(connections(true), 4, "the lookups");

    // The paid invoices delivered again, under new event ids (as a replay of
    // the whole history would): the batch finds them paid and changes
    // nothing — no entry, receipt, email or lifetime total twice.
    let lifetime = "SELECT CAST(SUM(lifetime_paid) AS BIGINT) FROM memberships";
    let paid_before = count(&t.db, lifetime).await;
    let replayed: Vec<(&str, Value)> = [0, 1].iter().map(|n| ("invoice.paid", renewals_paid[*n].clone())).collect();
    receive(&t.db, &stripe, replayed).await;
    let before = payment_intent_lookups(&stripe);
    assert_eq!(workers.run_batch("test").await.unwrap(), 1, "the two events, stored together: one job");
    assert_eq!(payment_intent_lookups(&stripe) - before, 2, "each payment asked about once");
    let left = kanpa_messaging::jobs::counts(&t.db).await.unwrap();
    assert_eq!(left, (0, 0, 0), "applied together: no job split for its events to retry alone, no email");
    run_until_idle(&workers).await;
    assert_eq!(posted(&t.db).await, (8, (8, 8, 8)));
    assert_eq!(count(&t.db, lifetime).await, paid_before);
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM receipts").await, 8);
    let receipts = "SELECT COUNT(*) FROM outbox_emails WHERE template = 'membership_receipt'";
    assert_eq!(count(&t.db, receipts).await, 8);
    let replays = "SELECT COUNT(*) FROM stripe_event_states WHERE event_type = 'invoice.paid' AND status = 'applied'";
    assert_eq!(count(&t.db, replays).await, 10);
    assert!(ledger::check(&t.db).await.unwrap().is_clean());
}
