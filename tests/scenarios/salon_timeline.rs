//! Thirteen months of two salons (65 patrons) on the Stripe gateway against
//! the fake Stripe, driven by the fake's clock: joins, tier changes under
//! both rules, a card failing then recovering, one that never recovers, a
//! bank asking for authentication, pauses, cancellations at period end, a
//! refund and disputes won and lost. Every event Stripe would send goes
//! through the real webhook endpoint. Afterwards kanpa agrees with Stripe,
//! the funds tie out to the yen, every patron got exactly their emails, and
//! replaying all the events shuffled and duplicated into a fresh database
//! gives the same state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kanpa_ledger::{Db, Locale, Timestamp, on_db, on_tx, store as ledger};
use kanpa_messaging::inbox::{EventHandlers, Handled, IncomingEvent, StoredEvent, StripeEventHandler};
use kanpa_messaging::mailer::SmtpMailer;
use kanpa_patrons::events::MembershipEvents;
use kanpa_patrons::join::{self, JoinForm};
use kanpa_patrons::model::status_of_subscription;
use kanpa_patrons::store::{self, SalonInput, TierInput};
use kanpa_patrons::{Membership, Salon, SalonStatus, Site, selfservice};
use kanpa_payments::PaymentGateway;
use kanpa_server::workers::{self, Extras};
use kanpa_testkit::smtp::SmtpSink;
use kanpa_testkit::stripe::FakeStripe;
use serde_json::Value;

use crate::harness::{TestApp, TestBackend, eventually, on_fake_stripe, run_kanpa, test_config};
use crate::on_both_backends;

on_both_backends!(
    a_salon_of_65_patrons_lives_thirteen_months_in_step_with_stripe_and_a_shuffled_replay_agrees,
    a_lost_dispute_lowers_the_lifetime_total_once_and_a_won_one_leaves_it,
    an_organiser_moves_a_tiers_patrons_onto_its_new_price_from_their_next_renewal,
    a_refund_and_a_dispute_that_arrive_before_their_payment_wait_for_it,
    a_refund_applied_while_its_invoice_paid_commits_is_neither_kept_forever_nor_lost,
    an_invoice_event_never_moves_a_membership_back_past_a_newer_subscription_event,
    a_price_changed_in_stripe_moves_the_membership_to_that_prices_tier_and_seat,
);

const DAY: i64 = 86_400;

/// The server on the Stripe gateway pointed at `stripe`, mail to `sink` (or
/// into files).
async fn spawn(
    backend: TestBackend,
    stripe: &FakeStripe,
    sink: Option<&SmtpSink>,
) -> Option<(TestApp, Arc<dyn PaymentGateway>, Site)> {
    kanpa_server::install_crypto_provider();
    let configure = on_fake_stripe(stripe);
    let mailer = sink.map(|sink| Arc::new(SmtpMailer::from_url(&sink.url()).expect("sink URL")) as _);
    let extras = Extras { event_handlers: EventHandlers::default(), mailer };
    let app = TestApp::spawn_with(backend, extras, configure.clone()).await?;
    stripe.set_webhook_url(app.url("/webhooks/stripe"));
    let mut config = test_config(&app.database_url);
    configure(&mut config);
    let gateway = workers::gateway(&config, &app.db).expect("gateway");
    Some((app, gateway, config.salon_site()))
}

async fn count(db: &Db, sql: &str) -> i64 {
    let sql = sql.to_owned();
    on_db!(db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())).fetch_one(p).await.unwrap())
}

/// Delivers what Stripe recorded, one event at a time, each applied before
/// the next is sent (as a quiet endpoint sees them), and keeps them.
async fn deliver(stripe: &FakeStripe, db: &Db, delivered: &mut Vec<Value>) {
    for event in stripe.take_pending_events() {
        assert_eq!(stripe.deliver(&event).await.unwrap(), 200, "{}", event["type"]);
        let sql = format!(
            "SELECT COUNT(*) FROM stripe_event_states WHERE id = '{}' AND status = 'pending'",
            event["id"].as_str().unwrap()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while count(db, &sql).await > 0 {
            assert!(std::time::Instant::now() < deadline, "timed out applying {event}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        delivered.push(event);
    }
    drained(db).await;
}

/// Until every event and background job but email is done.
async fn drained(db: &Db) {
    eventually(60, "the inbox and the jobs are drained", || async {
        count(db, "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'pending'").await == 0
            && count(db, "SELECT COUNT(*) FROM jobs WHERE kind <> 'email.send' AND state <> 'dead'").await == 0
    })
    .await;
}

#[derive(Clone, Debug)]
struct Patron {
    email: String,
    salon: usize,
    membership: String,
    subscription: String,
    /// The tier the patron joined at, its amount and price (what kanpa knew
    /// before any event), and the tier they are on now.
    joined_tier: String,
    joined_amount: i64,
    joined_price: String,
    checkout_session: String,
    locale: Locale,
    tier: String,
}

#[derive(Clone, Copy, Debug)]
enum Act {
    Join,
    ChangeTier(&'static str),
    Pause(i64),
    Resume,
    Cancel,
    UndoCancel,
    CardFails,
    CardFailsTimes(u32),
    NeedsAuthentication,
    Authenticates,
    Refund(Option<i64>),
    Dispute,
    CloseDispute(bool),
}

/// Two salons: next-cycle tier changes (patrons 0–39) and prorated ones
/// (40–64).
/// A salon of the timeline: slug, tier-change rule, tiers with prices.
type SalonSpec = (&'static str, &'static str, &'static [(&'static str, i64)]);

const SALONS: [SalonSpec; 2] = [
    ("dr-salon", "next_cycle", &[("reader", 500), ("regular", 1500), ("inner", 5000)]),
    ("eng-salon", "prorate_now", &[("basic", 1000), ("pro", 3000)]),
];

fn salon_of(patron: usize) -> usize {
    usize::from(patron >= 40)
}

fn first_tier(patron: usize) -> &'static str {
    let tiers = SALONS[salon_of(patron)].2;
    tiers[patron % tiers.len()].0
}

/// (day, seconds into it, patron, what happens).
fn script() -> Vec<(i64, i64, usize, Act)> {
    let mut script = Vec::new();
    for patron in 0..65 {
        let (day, second) =
            if patron < 50 { (patron as i64 % 25, patron as i64 * 600) } else { (60 + patron as i64 - 50, 0) };
        script.push((day, 3600 + second, patron, Act::Join));
    }
    let acts: &[(i64, usize, Act)] = &[
        // Next cycle: an upgrade and a downgrade, billed from the renewal.
        (95, 0, Act::ChangeTier("inner")),
        (125, 1, Act::ChangeTier("reader")),
        // A card fails twice and recovers for Stripe's third attempt.
        (150, 3, Act::CardFailsTimes(2)),
        // A card that never recovers: four attempts, then the end.
        (150, 4, Act::CardFails),
        // The bank wants the patron to authenticate the renewal.
        (180, 5, Act::NeedsAuthentication),
        (192, 5, Act::Authenticates),
        // A pause resumed early, and one still running at the end.
        (200, 6, Act::Pause(2)),
        (240, 6, Act::Resume),
        (300, 7, Act::Pause(3)),
        // Cancellations at period end, and one taken back.
        (110, 8, Act::Cancel),
        (250, 9, Act::Cancel),
        (103, 10, Act::Cancel),
        (106, 10, Act::UndoCancel),
        // Refunds: in full, and in part.
        (100, 11, Act::Refund(None)),
        (130, 12, Act::Refund(Some(200))),
        // Disputes: lost and won.
        (140, 13, Act::Dispute),
        (170, 13, Act::CloseDispute(false)),
        (140, 14, Act::Dispute),
        (170, 14, Act::CloseDispute(true)),
        // Prorated now: upgrades charge the difference, a downgrade leaves
        // a credit for the next renewal.
        (100, 40, Act::ChangeTier("pro")),
        (130, 41, Act::ChangeTier("basic")),
        (200, 42, Act::ChangeTier("pro")),
        (260, 42, Act::ChangeTier("basic")),
        (300, 43, Act::Cancel),
        (150, 44, Act::Pause(1)),
        (180, 44, Act::Resume),
        (220, 45, Act::CardFailsTimes(2)),
    ];
    script.extend(acts.iter().map(|(day, patron, act)| (*day, 12 * 3600, *patron, *act)));
    script.sort_by_key(|(day, second, patron, _)| (*day, *second, *patron));
    script
}

/// The charge that paid a subscription's latest invoice.
fn latest_charge(stripe: &FakeStripe, subscription: &str) -> String {
    let subscription = stripe.object(subscription).unwrap();
    let invoice = stripe.object(subscription["latest_invoice"].as_str().unwrap()).unwrap();
    let intent = invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().unwrap().to_owned();
    stripe.object(&intent).unwrap()["latest_charge"].as_str().unwrap().to_owned()
}

/// A membership as the comparison sees it: everything but real-time stamps.
fn essence(m: &Membership, tiers: &HashMap<i64, String>) -> String {
    format!(
        "{} {} {} {} {:?} {:?} {:?} {:?} {:?} {:?} {}",
        m.public_id,
        m.status,
        tiers[&m.tier_id],
        m.amount,
        m.stripe_price_id,
        m.stripe_subscription_id,
        m.stripe_customer_id,
        m.current_period_end.map(Timestamp::unix_seconds),
        m.cancel_at.map(Timestamp::unix_seconds),
        m.paused_until.map(Timestamp::unix_seconds),
        m.lifetime_paid,
    )
}

struct State {
    memberships: BTreeMap<String, String>,
    funds: Vec<i64>,
    seats: BTreeMap<String, i64>,
}

async fn state_of(db: &Db, salons: &[Salon]) -> State {
    let mut memberships = BTreeMap::new();
    let mut funds = Vec::new();
    let mut seats = BTreeMap::new();
    for salon in salons {
        let tiers = store::tiers(db, salon.id).await.unwrap();
        for tier in &tiers {
            seats.insert(format!("{}/{}", salon.slug, tier.slug), tier.seats_taken);
        }
        let names: HashMap<i64, String> = tiers.into_iter().map(|t| (t.id, t.slug)).collect();
        for m in store::memberships_of_salon(db, salon.id).await.unwrap() {
            memberships.insert(m.public_id.clone(), essence(&m, &names));
        }
        funds.push(-ledger::balance(db, salon.fund_account).await.unwrap().amount());
    }
    State { memberships, funds, seats }
}

async fn a_salon_of_65_patrons_lives_thirteen_months_in_step_with_stripe_and_a_shuffled_replay_agrees(
    backend: TestBackend,
) {
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.expect("fake Stripe starts");
    let sink = SmtpSink::start().expect("SMTP sink starts");
    let Some((app, gateway, site)) = spawn(backend, &stripe, Some(&sink)).await else { return };
    let (db, gw) = (&app.db, gateway.as_ref());
    // Thirteen months that end before today, so a pause (which kanpa times
    // from the real clock) outlasts them.
    let start = (Timestamp::now().unix_seconds() - 400 * DAY) / DAY * DAY;
    stripe.set_clock(start);
    stripe.emit_events(true);

    let mut tx = db.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, "clinic", "ドクターのクリニック").await.unwrap().id;
    tx.commit().await.unwrap();
    kanpa_payments::seller::update(db, org, &kanpa_payments::seller::fictional("ドクターのクリニック")).await.unwrap();
    let mut salons = Vec::new();
    for (slug, rule, tiers) in SALONS {
        let input = SalonInput {
            slug: slug.into(),
            name_ja: format!("{slug} サロン"),
            name_en: format!("The {slug}"),
            currency: "JPY".into(),
            billing_anchor: "start_date".into(),
            tier_change: rule.into(),
            grace_days: 7,
            contact_email: "doctor@example.jp".into(),
            ..SalonInput::default()
        };
        let salon = store::create_salon(db, org, &input).await.unwrap();
        for (tier, price) in tiers {
            let input = TierInput {
                slug: (*tier).into(),
                name_ja: format!("{tier} プラン"),
                monthly_price: *price,
                seat_limit: Some(40),
                ..TierInput::default()
            };
            store::add_tier(db, salon.id, &input).await.unwrap();
        }
        salons.push(store::set_salon_status(db, salon.id, SalonStatus::Open).await.unwrap());
    }

    let mut patrons: Vec<Option<Patron>> = vec![None; 65];
    let mut delivered: Vec<Value> = Vec::new();
    for (day, second, n, act) in script() {
        stripe.advance_billing_to(start + day * DAY + second).unwrap();
        deliver(&stripe, db, &mut delivered).await;
        let email = format!("patron{n:02}@example.jp");
        if let Act::Join = act {
            let salon = &salons[salon_of(n)];
            let locale = if n % 2 == 0 { Locale::Ja } else { Locale::En };
            let form = JoinForm { tier: first_tier(n).into(), email: email.clone() };
            let joined = join::join(db, gw, &site, &salon.slug, &form, locale).await.expect("joins");
            let m = store::membership_by_public_id(db, &joined.membership).await.unwrap();
            let session_id = joined.checkout_url.rsplit('/').next().unwrap().to_owned();
            let session = stripe.complete_checkout_session(&session_id).unwrap();
            patrons[n] = Some(Patron {
                email,
                salon: salon_of(n),
                membership: joined.membership,
                subscription: session["subscription"].as_str().unwrap().to_owned(),
                joined_tier: first_tier(n).into(),
                joined_amount: m.amount,
                joined_price: m.stripe_price_id.clone().unwrap(),
                checkout_session: session_id,
                locale,
                tier: first_tier(n).into(),
            });
        } else {
            let p = patrons[n].as_mut().expect("joined before acting");
            let (m, sub) = (p.membership.clone(), p.subscription.clone());
            let card = || stripe.object(&sub).unwrap()["default_payment_method"].as_str().unwrap().to_owned();
            match act {
                Act::Join => unreachable!(),
                Act::ChangeTier(tier) => {
                    selfservice::change_tier(db, gw, &email, &m, tier).await.expect("tier changes");
                    p.tier = tier.into();
                }
                Act::Pause(months) => {
                    selfservice::pause(db, gw, &email, &m, months).await.expect("pauses");
                }
                Act::Resume => {
                    selfservice::resume(db, gw, &email, &m).await.expect("resumes");
                }
                Act::Cancel => {
                    selfservice::cancel_at_period_end(db, gw, &email, &m).await.expect("cancels");
                }
                Act::UndoCancel => {
                    selfservice::undo_cancel(db, gw, &email, &m).await.expect("undoes");
                }
                Act::CardFails => stripe.decline_payment_method(&card(), "card_declined"),
                Act::CardFailsTimes(times) => stripe.decline_payment_method_times(&card(), "card_declined", times),
                Act::NeedsAuthentication => stripe.decline_payment_method(&card(), "authentication_required"),
                Act::Authenticates => {
                    stripe.accept_payment_method(&card());
                    let invoice = stripe.object(&sub).unwrap()["latest_invoice"].as_str().unwrap().to_owned();
                    assert_eq!(
                        stripe.object(&invoice).unwrap()["status"],
                        "open",
                        "patron {n} has an invoice to confirm"
                    );
                    stripe.pay_invoice(&invoice).unwrap();
                }
                Act::Refund(amount) => {
                    let charge = latest_charge(&stripe, &sub);
                    let mut form = vec![("charge", charge)];
                    if let Some(amount) = amount {
                        form.push(("amount", amount.to_string()));
                    }
                    let res = reqwest::Client::new()
                        .post(format!("{}v1/refunds", stripe.api_base()))
                        .bearer_auth("sk_test_kanpa")
                        .form(&form)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
                }
                Act::Dispute => {
                    stripe.open_dispute(&latest_charge(&stripe, &sub)).unwrap();
                }
                Act::CloseDispute(won) => {
                    let charge = latest_charge(&stripe, &sub);
                    let dispute = stripe.objects("dispute").into_iter().find(|d| d["charge"] == charge.as_str());
                    let dispute = dispute.map(|d| d["id"].as_str().unwrap().to_owned());
                    let dispute = dispute.unwrap_or_else(|| {
                        let all = stripe.objects("dispute");
                        let mine = all.iter().find(|d| {
                            stripe.object(d["charge"].as_str().unwrap()).unwrap()["customer"]
                                == stripe.object(&sub).unwrap()["customer"]
                        });
                        mine.unwrap()["id"].as_str().unwrap().to_owned()
                    });
                    stripe.close_dispute(&dispute, won).unwrap();
                }
            }
        }
        deliver(&stripe, db, &mut delivered).await;
    }
    // To the end of the thirteenth month.
    let end = start + 396 * DAY;
    for day in (start..=end).step_by(DAY as usize * 7) {
        stripe.advance_billing_to(day).unwrap();
        deliver(&stripe, db, &mut delivered).await;
    }
    stripe.advance_billing_to(end).unwrap();
    deliver(&stripe, db, &mut delivered).await;
    let patrons: Vec<Patron> = patrons.into_iter().map(|p| p.expect("everyone joined")).collect();

    // ---- kanpa agrees with Stripe about every membership.
    let mut tiers_by_price: HashMap<String, String> = HashMap::new();
    for salon in &salons {
        for tier in store::tiers(db, salon.id).await.unwrap() {
            let sql = format!("SELECT stripe_price_id FROM salon_tier_prices WHERE tier_id = {}", tier.id);
            let prices: Vec<String> =
                on_db!(db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())).fetch_all(p).await.unwrap());
            for price in prices {
                tiers_by_price.insert(price, tier.slug.clone());
            }
        }
    }
    for (n, p) in patrons.iter().enumerate() {
        let sub = stripe.object(&p.subscription).unwrap();
        let m = store::membership_by_public_id(db, &p.membership).await.unwrap();
        let expected = status_of_subscription(
            sub["status"].as_str().unwrap(),
            sub["cancel_at_period_end"] == true || !sub["cancel_at"].is_null(),
            sub["pause_collection"].is_object(),
        );
        assert_eq!(m.status, expected, "patron {n}: {sub}");
        let item = &sub["items"]["data"][0];
        let price = item["price"]["id"].as_str().unwrap();
        assert_eq!(m.stripe_price_id.as_deref(), Some(price), "patron {n}");
        assert_eq!(m.amount, item["price"]["unit_amount"].as_i64().unwrap(), "patron {n}");
        assert_eq!(tiers_by_price[price], p.tier, "patron {n}");
        let tier = store::tier(db, m.salon_id, m.tier_id).await.unwrap();
        assert_eq!(tier.slug, p.tier, "patron {n}");
        assert_eq!(
            m.current_period_end.map(Timestamp::unix_seconds),
            item["current_period_end"].as_i64(),
            "patron {n}"
        );
        assert_eq!(
            m.paused_until.map(Timestamp::unix_seconds),
            sub["pause_collection"]["resumes_at"].as_i64(),
            "patron {n}"
        );
        assert_eq!(m.cancel_at.map(Timestamp::unix_seconds), sub["cancel_at"].as_i64(), "patron {n}");
        assert_eq!(m.stripe_customer_id.as_deref(), sub["customer"].as_str(), "patron {n}");
    }
    use kanpa_patrons::MembershipStatus as M;
    let status = |n: usize| stripe.object(&patrons[n].subscription).unwrap()["status"].as_str().unwrap().to_owned();
    // The story happened as told.
    assert_eq!(status(4), "canceled", "a card that never recovers ends the subscription");
    assert_eq!(status(8), "canceled");
    assert_eq!(status(9), "canceled");
    assert_eq!(status(43), "canceled");
    assert_eq!(status(3), "active");
    assert_eq!(status(45), "active");
    assert!(stripe.object(&patrons[7].subscription).unwrap()["pause_collection"].is_object());
    let m = |n: usize| {
        let id = patrons[n].membership.clone();
        async move { store::membership_by_public_id(db, &id).await.unwrap() }
    };
    assert_eq!(m(7).await.status, M::Paused);
    assert_eq!(m(10).await.status, M::Active);

    // ---- The funds tie out with Stripe's objects, to the yen.
    let customers: Vec<String> = patrons
        .iter()
        .map(|p| stripe.object(&p.subscription).unwrap()["customer"].as_str().unwrap().to_owned())
        .collect();
    let mut expected_funds = [0_i64; 2];
    let mut expected_lifetime = vec![0_i64; 65];
    let mut receipts: HashMap<usize, usize> = HashMap::new();
    for invoice in stripe.objects("invoice") {
        let Some(n) = customers.iter().position(|c| invoice["customer"] == c.as_str()) else { continue };
        if invoice["status"] != "paid" || invoice["amount_paid"].as_i64().unwrap() == 0 {
            continue;
        }
        let intent =
            stripe.object(invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().unwrap()).unwrap();
        let charge = stripe.object(intent["latest_charge"].as_str().unwrap()).unwrap();
        let bt = stripe.object(charge["balance_transaction"].as_str().unwrap()).unwrap();
        let refunded = charge["amount_refunded"].as_i64().unwrap();
        assert_eq!(bt["amount"], invoice["amount_paid"]);
        expected_funds[patrons[n].salon] += bt["net"].as_i64().unwrap() - refunded;
        let mut lost = 0;
        for dispute in stripe.objects("dispute").iter().filter(|d| d["charge"] == charge["id"]) {
            for bt in dispute["balance_transactions"].as_array().unwrap() {
                expected_funds[patrons[n].salon] += bt["net"].as_i64().unwrap();
            }
            if dispute["status"] == "lost" {
                lost += dispute["amount"].as_i64().unwrap();
            }
        }
        expected_lifetime[n] += charge["amount"].as_i64().unwrap() - refunded - lost;
        *receipts.entry(n).or_default() += 1;
    }
    let state = state_of(db, &salons).await;
    assert_eq!(
        state.funds,
        expected_funds.to_vec(),
        "each salon's fund is its paid invoices less fees, refunds and disputes"
    );
    for (n, expected) in expected_lifetime.iter().enumerate() {
        assert_eq!(m(n).await.lifetime_paid, *expected, "patron {n}'s lifetime total");
    }
    // Patron 13 (regular, ¥1,500) lost a dispute: that payment no longer
    // counts; 14 (inner, ¥5,000) won, and every payment counts.
    assert_eq!(m(13).await.lifetime_paid, (receipts[&13] as i64 - 1) * 1500);
    assert_eq!(m(14).await.lifetime_paid, receipts[&14] as i64 * 5000);
    // Patron 11's refunded payment (¥5,000) and ¥200 of one of 12's (¥500) are gone.
    assert_eq!(m(11).await.lifetime_paid, (receipts[&11] as i64 - 1) * 5000);
    assert_eq!(m(12).await.lifetime_paid, receipts[&12] as i64 * 500 - 200);
    let (code, out, err) = run_kanpa(&app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");

    // ---- Each patron got exactly the emails the events called for.
    let mut expected_mail: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for event in &delivered {
        let object = &event["data"]["object"];
        let key = match event["type"].as_str().unwrap() {
            "invoice.paid" if object["amount_paid"].as_i64().unwrap() > 0 => {
                let intent = object["payments"]["data"][0]["payment"]["payment_intent"].as_str().unwrap();
                format!("receipt:{}", stripe.object(intent).unwrap()["latest_charge"].as_str().unwrap())
            }
            "invoice.payment_failed" => {
                format!("failed:{}:{}", object["id"].as_str().unwrap(), object["attempt_count"])
            }
            "invoice.payment_action_required" => format!("action:{}", object["id"].as_str().unwrap()),
            // One email per new refunded total of a membership's charge.
            "charge.refunded" => {
                format!("refund:{}:{}", object["id"].as_str().unwrap(), object["amount_refunded"])
            }
            _ => continue,
        };
        let n = customers.iter().position(|c| object["customer"] == c.as_str()).unwrap();
        let key = format!("membership:{}:{key}", patrons[n].membership);
        if seen.insert(key.clone()) {
            let id = kanpa_messaging::email::message_id(&key, &site.mail_domain);
            expected_mail.entry(patrons[n].email.clone()).or_default().push(id);
        }
    }
    let expected_total: usize = expected_mail.values().map(Vec::len).sum();
    eventually(120, "every email is sent", || async {
        count(db, "SELECT COUNT(*) FROM outbox_email_states WHERE status <> 'sent'").await == 0
    })
    .await;
    let messages = sink.wait_for(expected_total, Duration::from_secs(60)).await.unwrap();
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in &messages {
        got.entry(message.to[0].clone()).or_default().push(message.header("Message-ID").unwrap());
    }
    for ids in got.values_mut().chain(expected_mail.values_mut()) {
        ids.sort();
    }
    assert_eq!(got, expected_mail);
    // The stories' emails, by kind.
    let kinds = |n: usize| {
        let sql = format!("SELECT template FROM outbox_emails WHERE to_address = '{}' ORDER BY id", patrons[n].email);
        async move {
            let templates: Vec<String> =
                on_db!(db, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone())).fetch_all(p).await.unwrap());
            templates
        }
    };
    let failed = |t: &Vec<String>| t.iter().filter(|t| *t == "membership_payment_failed").count();
    assert_eq!(failed(&kinds(3).await), 2, "two declines, then the card recovered");
    assert_eq!(failed(&kinds(4).await), 4, "four declines, then the end");
    assert_eq!(failed(&kinds(45).await), 2);
    assert_eq!(kinds(5).await.iter().filter(|t| *t == "membership_action_required").count(), 1);
    assert!(kinds(0).await.iter().all(|t| t == "membership_receipt"));
    assert_eq!(kinds(11).await.iter().filter(|t| *t == "membership_refunded").count(), 1, "a full refund");

    // ---- Replaying every event, shuffled and duplicated, into a fresh
    // database that knows only what kanpa knew before any event: the salons,
    // tiers and prices, and each membership as its Checkout opened.
    let original = state_of(db, &salons).await;
    let prices: Vec<(String, String, i64, String)> = {
        let sql = "SELECT s.slug, t.slug, p.amount, p.stripe_price_id FROM salon_tier_prices p
                   JOIN salon_tiers t ON t.id = p.tier_id JOIN salons s ON s.id = t.salon_id ORDER BY p.id";
        on_db!(db, p => sqlx::query_as(sql).fetch_all(p).await.unwrap())
    };
    app.stop().await;
    let (replay, _, _) = spawn(backend, &stripe, None).await.expect("a second app");
    let rdb = &replay.db;
    let mut tx = rdb.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, "clinic", "ドクターのクリニック").await.unwrap().id;
    tx.commit().await.unwrap();
    kanpa_payments::seller::update(rdb, org, &kanpa_payments::seller::fictional("ドクターのクリニック")).await.unwrap();
    let mut replay_salons = Vec::new();
    for salon in &salons {
        let input = SalonInput {
            slug: salon.slug.clone(),
            name_ja: salon.name_ja.clone(),
            name_en: salon.name_en.clone(),
            currency: "JPY".into(),
            billing_anchor: salon.billing_anchor.as_str().into(),
            tier_change: salon.tier_change.as_str().into(),
            grace_days: salon.grace_days,
            contact_email: salon.contact_email.clone(),
            ..SalonInput::default()
        };
        let copy = store::create_salon(rdb, org, &input).await.unwrap();
        replay_salons.push(store::set_salon_status(rdb, copy.id, SalonStatus::Open).await.unwrap());
    }
    seed_replay(rdb, &replay_salons, &prices, &patrons).await;
    let mut events: Vec<Value> = delivered.iter().chain(delivered.iter()).cloned().collect();
    shuffle(&mut events, 0x5a10_2026);
    let statuses = stripe.deliver_many(&events, 1, false, 4).await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200));
    drained(rdb).await;
    assert_eq!(
        count(rdb, "SELECT COUNT(*) FROM membership_waiting_events").await,
        0,
        "no refund or dispute left waiting"
    );
    assert_eq!(count(rdb, "SELECT COUNT(*) FROM jobs WHERE state = 'dead'").await, 0);
    let replayed = state_of(rdb, &replay_salons).await;
    assert_eq!(replayed.funds, original.funds);
    assert_eq!(replayed.seats, original.seats);
    for (id, essence) in &original.memberships {
        assert_eq!(replayed.memberships.get(id), Some(essence), "membership {id} after the replay");
    }
    assert_eq!(replayed.memberships.len(), original.memberships.len());
    let (code, out, err) = run_kanpa(&replay.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    replay.stop().await;
}

/// A deterministic Fisher–Yates shuffle (xorshift64*), so a failure replays.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed.max(1);
    for i in (1..items.len()).rev() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let j = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// What kanpa knew before any Stripe event: the tiers and their prices, and
/// each membership as its Checkout opened (incomplete, on the tier and
/// price it was joined at, holding its seat).
async fn seed_replay(db: &Db, salons: &[Salon], prices: &[(String, String, i64, String)], patrons: &[Patron]) {
    let mut tier_ids: HashMap<(usize, String), i64> = HashMap::new();
    for (s, (_, _, tiers)) in SALONS.iter().enumerate() {
        for (tier, price) in tiers.iter() {
            let input = TierInput {
                slug: (*tier).into(),
                name_ja: format!("{tier} プラン"),
                monthly_price: *price,
                seat_limit: Some(40),
                ..TierInput::default()
            };
            let tier = store::add_tier(db, salons[s].id, &input).await.unwrap();
            tier_ids.insert((s, tier.slug.clone()), tier.id);
        }
    }
    let now = Timestamp::now();
    let mut tx = db.begin().await.unwrap();
    for (salon, tier, amount, price) in prices {
        let s = salons.iter().position(|x| &x.slug == salon).unwrap();
        let sql =
            "INSERT INTO salon_tier_prices (tier_id, amount, stripe_price_id, created_at) VALUES ($1, $2, $3, $4)";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(tier_ids[&(s, tier.clone())]).bind(amount).bind(price).bind(now)
            .execute(c).await.unwrap().rows_affected());
    }
    for p in patrons {
        let tier = tier_ids[&(p.salon, p.joined_tier.clone())];
        let sql =
            "INSERT INTO memberships (public_id, salon_id, tier_id, email, locale, amount, stripe_price_id, status,
                       checkout_session_id, created_at, updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, 'incomplete', $8, $9, $9)";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(&p.membership).bind(salons[p.salon].id).bind(tier).bind(&p.email)
            .bind(p.locale.as_str()).bind(p.joined_amount).bind(&p.joined_price).bind(&p.checkout_session).bind(now)
            .execute(c).await.unwrap().rows_affected());
        store::claim_seat(&mut tx, tier).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// One salon, two patrons whose first payments are disputed: one dispute is
/// lost, one won, each closing event delivered twice and out of order.
async fn a_lost_dispute_lowers_the_lifetime_total_once_and_a_won_one_leaves_it(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.expect("fake Stripe starts");
    let Some((app, gateway, site)) = spawn(backend, &stripe, None).await else { return };
    let db = &app.db;
    stripe.emit_events(true);
    let mut tx = db.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, "clinic", "クリニック").await.unwrap().id;
    tx.commit().await.unwrap();
    kanpa_payments::seller::update(db, org, &kanpa_payments::seller::fictional("クリニック")).await.unwrap();
    let input = SalonInput {
        slug: "dr-salon".into(),
        name_ja: "サロン".into(),
        currency: "JPY".into(),
        contact_email: "doctor@example.jp".into(),
        ..SalonInput::default()
    };
    let salon = store::create_salon(db, org, &input).await.unwrap();
    let tier =
        TierInput { slug: "inner".into(), name_ja: "インナー".into(), monthly_price: 5000, ..TierInput::default() };
    store::add_tier(db, salon.id, &tier).await.unwrap();
    let salon = store::set_salon_status(db, salon.id, SalonStatus::Open).await.unwrap();
    let mut members = Vec::new();
    let mut delivered = Vec::new();
    for email in ["lost@example.jp", "won@example.jp"] {
        let form = JoinForm { tier: "inner".into(), email: email.into() };
        let joined = join::join(db, gateway.as_ref(), &site, &salon.slug, &form, Locale::Ja).await.unwrap();
        let session = stripe.complete_checkout_session(joined.checkout_url.rsplit('/').next().unwrap()).unwrap();
        members.push((joined.membership, session["subscription"].as_str().unwrap().to_owned()));
    }
    deliver(&stripe, db, &mut delivered).await;
    let lifetime = |i: usize| {
        let id = members[i].0.clone();
        async move { store::membership_by_public_id(db, &id).await.unwrap().lifetime_paid }
    };
    assert_eq!((lifetime(0).await, lifetime(1).await), (5000, 5000));
    let fee = (5000 * 36 + 500) / 1000;
    let fund = || async { -ledger::balance(db, salon.fund_account).await.unwrap().amount() };
    assert_eq!(fund().await, 2 * (5000 - fee));

    let disputes: Vec<String> = members
        .iter()
        .map(|(_, sub)| stripe.open_dispute(&latest_charge(&stripe, sub)).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    deliver(&stripe, db, &mut delivered).await;
    // Both amounts and both dispute fees are out of the fund; nothing is
    // decided yet, so the lifetime totals stand.
    assert_eq!(fund().await, 2 * (5000 - fee) - 2 * (5000 + 1500));
    assert_eq!((lifetime(0).await, lifetime(1).await), (5000, 5000));

    stripe.close_dispute(&disputes[0], false).unwrap();
    stripe.close_dispute(&disputes[1], true).unwrap();
    let mut closing = stripe.take_pending_events();
    closing.extend(closing.clone());
    closing.reverse();
    let statuses = stripe.deliver_many(&closing, 1, false, 2).await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200));
    drained(db).await;
    assert_eq!(lifetime(0).await, 0, "the lost dispute took the payment back, once");
    assert_eq!(lifetime(1).await, 5000, "the won dispute leaves the total");
    // The won amount came back; Stripe kept both dispute fees.
    assert_eq!(fund().await, 2 * (5000 - fee) - 5000 - 2 * 1500);
    // The roster the organiser reads shows the same.
    let roster = kanpa_patrons::roster::roster(db, salon.id, Timestamp::now()).await.unwrap();
    let paid: Vec<(String, i64)> = roster.rows.iter().map(|r| (r.email.clone(), r.lifetime_paid)).collect();
    assert!(
        paid.contains(&("lost@example.jp".into(), 0)) && paid.contains(&("won@example.jp".into(), 5000)),
        "{paid:?}"
    );
    let (code, out, err) = run_kanpa(&app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    app.stop().await;
}

/// The organiser raises a tier's price: new patrons pay it at once, existing
/// ones only when the organiser moves them (API, then CLI), from their next
/// renewal, each told by email; a failed run changes nothing and a rerun
/// finishes.
async fn an_organiser_moves_a_tiers_patrons_onto_its_new_price_from_their_next_renewal(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.expect("fake Stripe starts");
    let Some((app, gateway, site)) = spawn(backend, &stripe, None).await else { return };
    let (db, gw) = (&app.db, gateway.as_ref());
    let start = (Timestamp::now().unix_seconds() - 100 * DAY) / DAY * DAY;
    stripe.set_clock(start);
    stripe.emit_events(true);
    let mut tx = db.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, "clinic", "クリニック").await.unwrap().id;
    tx.commit().await.unwrap();
    kanpa_payments::seller::update(db, org, &kanpa_payments::seller::fictional("クリニック")).await.unwrap();
    let token =
        kanpa_server::api_token::create(db, org, kanpa_server::api_token::Role::Organiser, "reprice").await.unwrap();
    let input = SalonInput {
        slug: "dr-salon".into(),
        name_ja: "サロン".into(),
        currency: "JPY".into(),
        contact_email: "doctor@example.jp".into(),
        ..SalonInput::default()
    };
    let salon = store::create_salon(db, org, &input).await.unwrap();
    let tier =
        TierInput { slug: "inner".into(), name_ja: "インナー".into(), monthly_price: 4000, ..TierInput::default() };
    let inner = store::add_tier(db, salon.id, &tier).await.unwrap();
    let salon = store::set_salon_status(db, salon.id, SalonStatus::Open).await.unwrap();
    let mut delivered = Vec::new();
    let member = |email: &'static str| {
        let (salon, site) = (salon.clone(), site.clone());
        let stripe = &stripe;
        async move {
            let form = JoinForm { tier: "inner".into(), email: email.into() };
            let joined = join::join(db, gw, &site, &salon.slug, &form, Locale::Ja).await.unwrap();
            let session = stripe.complete_checkout_session(joined.checkout_url.rsplit('/').next().unwrap()).unwrap();
            (joined.membership, session["subscription"].as_str().unwrap().to_owned())
        }
    };
    let hanako = member("hanako@example.jp").await;
    let taro = member("taro@example.jp").await;
    let jiro = member("jiro@example.jp").await;
    deliver(&stripe, db, &mut delivered).await;
    selfservice::cancel_at_period_end(db, gw, "taro@example.jp", &taro.0).await.unwrap();
    deliver(&stripe, db, &mut delivered).await;
    let old_price = store::tier(db, salon.id, inner.id).await.unwrap().stripe_price_id.unwrap();

    let call = |method: &'static str, path: String, body: Option<Value>| {
        let (client, url, token) = (app.client.clone(), app.url(&path), token.clone());
        async move {
            let mut request =
                client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url).bearer_auth(token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.header("accept-language", "en").send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, tier) =
        call("PATCH", "/api/v1/salons/dr-salon/tiers/inner".into(), Some(serde_json::json!({ "monthly_price": 5000 })))
            .await;
    assert_eq!(status, 200, "{tier}");
    let new_price = tier["stripe_price_id"].as_str().unwrap().to_owned();
    assert_ne!(new_price, old_price);
    let saburo = member("saburo@example.jp").await;
    deliver(&stripe, db, &mut delivered).await;
    let on_price =
        |sub: &str| stripe.object(sub).unwrap()["items"]["data"][0]["price"]["id"].as_str().unwrap().to_owned();
    assert_eq!(on_price(&saburo.1), new_price, "a new patron pays the new price at once");
    assert_eq!(on_price(&hanako.1), old_price, "existing patrons keep theirs");

    // The provider is down: the run is refused and nothing changes.
    let price_emails = "SELECT COUNT(*) FROM outbox_emails WHERE template = 'membership_price_changed'";
    stripe.fail_next(6, kanpa_testkit::stripe::Fault::ServerError);
    let (status, refused) = call("POST", "/api/v1/salons/dr-salon/tiers/inner/reprice".into(), None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (503, Some("payment_provider_unavailable")), "{refused}");
    assert_eq!(on_price(&hanako.1), old_price);
    assert_eq!(store::membership_by_public_id(db, &hanako.0).await.unwrap().amount, 4000);
    assert_eq!(count(db, price_emails).await, 0);

    // Again: the two renewing patrons on the old price move, from their next
    // renewal; the one cancelling is left alone.
    let requests = stripe.requests().len();
    let (status, done) = call("POST", "/api/v1/salons/dr-salon/tiers/inner/reprice".into(), None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["moved"].as_i64(), done["already_current"].as_i64(), done["canceling"].as_i64()),
        (Some(2), Some(1), Some(1)),
        "{done}"
    );
    assert_eq!((done["amount"].as_i64(), done["currency"].as_str()), (Some(5000), Some("JPY")));
    for (_, sub) in [&hanako, &jiro] {
        assert_eq!(on_price(sub), new_price);
    }
    assert_eq!(on_price(&taro.1), old_price);
    let updates: Vec<_> = stripe.requests().into_iter().skip(requests).filter(|r| r.method == "POST").collect();
    assert_eq!(updates.len(), 2);
    for update in &updates {
        assert!(update.params.contains(&("proration_behavior".into(), "none".into())), "{update:?}");
        assert!(update.idempotency_key.as_deref().is_some_and(|k| k.ends_with(&format!(":reprice:{new_price}"))));
    }
    let m = store::membership_by_public_id(db, &hanako.0).await.unwrap();
    assert_eq!((m.amount, m.stripe_price_id.as_deref(), m.tier_id), (5000, Some(new_price.as_str()), inner.id));
    assert_eq!(count(db, price_emails).await, 2);
    let sql = "SELECT data FROM outbox_emails WHERE template = 'membership_price_changed' AND to_address = 'hanako@example.jp'";
    let data: String = on_db!(db, p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap());
    let renewal = kanpa_patrons::events::local_date(m.current_period_end.unwrap(), Locale::Ja);
    assert!(data.contains("¥4,000") && data.contains("¥5,000") && data.contains(&renewal), "{data}");
    deliver(&stripe, db, &mut delivered).await;
    // Nothing is charged now; the next renewal bills the new price.
    let paid = |id: String| async move { store::membership_by_public_id(db, &id).await.unwrap().lifetime_paid };
    assert_eq!(paid(hanako.0.clone()).await, 4000);
    stripe.advance_billing_to(start + 40 * DAY).unwrap();
    deliver(&stripe, db, &mut delivered).await;
    assert_eq!(paid(hanako.0.clone()).await, 4000 + 5000);
    assert_eq!(paid(saburo.0.clone()).await, 5000 + 5000);
    assert_eq!(
        store::membership_by_public_id(db, &taro.0).await.unwrap().status,
        kanpa_patrons::MembershipStatus::Ended
    );

    // The command line finds nothing left to move and tells no one twice.
    let env = [
        ("KANPA__PAYMENTS__GATEWAY", "stripe".to_owned()),
        ("KANPA__STRIPE__SECRET_KEY", "sk_test_kanpa".to_owned()),
        ("KANPA__STRIPE__API_BASE", stripe.api_base()),
        ("KANPA__STRIPE__WEBHOOK_SECRETS", stripe.webhook_secret()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) =
        crate::harness::run_kanpa_with(&app.database_url, &env, &["salon", "reprice", "dr-salon", "inner"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("dr-salon/inner: 0 moved to ¥5,000/month from their next renewal, 3 already on it"), "{out}");
    assert_eq!(count(db, price_emails).await, 2);
    let (code, _, err) =
        crate::harness::run_kanpa_with(&app.database_url, &env, &["salon", "reprice", "dr-salon", "gold"]);
    assert_eq!(code, 1);
    assert!(!err.is_empty());
    app.stop().await;
}

/// One open salon (reader ¥500, inner ¥5,000) on the fake Stripe recording
/// its events, and a patron who joined the given tier; the join's events are
/// recorded, not delivered. (app, salon, membership, subscription).
async fn one_patron(backend: TestBackend, stripe: &FakeStripe, tier: &str) -> Option<(TestApp, Salon, String, String)> {
    let (app, gateway, site) = spawn(backend, stripe, None).await?;
    let db = &app.db;
    stripe.emit_events(true);
    let mut tx = db.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, "clinic", "クリニック").await.unwrap().id;
    tx.commit().await.unwrap();
    kanpa_payments::seller::update(db, org, &kanpa_payments::seller::fictional("クリニック")).await.unwrap();
    let input = SalonInput {
        slug: "dr-salon".into(),
        name_ja: "サロン".into(),
        currency: "JPY".into(),
        contact_email: "doctor@example.jp".into(),
        ..SalonInput::default()
    };
    let salon = store::create_salon(db, org, &input).await.unwrap();
    for (slug, price) in [("reader", 500), ("inner", 5000)] {
        let tier = TierInput { slug: slug.into(), name_ja: slug.into(), monthly_price: price, ..TierInput::default() };
        let tier = store::add_tier(db, salon.id, &tier).await.unwrap();
        join::sync_tier(db, gateway.as_ref(), &salon, &tier).await.unwrap();
    }
    let salon = store::set_salon_status(db, salon.id, SalonStatus::Open).await.unwrap();
    let form = JoinForm { tier: tier.into(), email: "hanako@example.jp".into() };
    let joined = join::join(db, gateway.as_ref(), &site, &salon.slug, &form, Locale::Ja).await.unwrap();
    let session = stripe.complete_checkout_session(joined.checkout_url.rsplit('/').next().unwrap()).unwrap();
    let subscription = session["subscription"].as_str().unwrap().to_owned();
    Some((app, salon, joined.membership, subscription))
}

/// Refunds part of a charge at Stripe, as the Dashboard would.
async fn refund(stripe: &FakeStripe, charge: &str, amount: i64) {
    let res = reqwest::Client::new()
        .post(format!("{}v1/refunds", stripe.api_base()))
        .bearer_auth("sk_test_kanpa")
        .form(&[("charge", charge), ("amount", &amount.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn deliver_in_order(stripe: &FakeStripe, db: &Db, events: &[Value]) {
    for event in events {
        assert_eq!(stripe.deliver(event).await.unwrap(), 200);
        drained(db).await;
    }
}

/// Stripe does not promise an order: a refund and a dispute of a payment
/// can arrive before the invoice.paid that tells kanpa the payment was a
/// membership's. They wait, and are applied once it arrives.
async fn a_refund_and_a_dispute_that_arrive_before_their_payment_wait_for_it(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.expect("fake Stripe starts");
    let Some((app, salon, membership, subscription)) = one_patron(backend, &stripe, "inner").await else { return };
    let db = &app.db;
    let joining = stripe.take_pending_events();
    let charge = latest_charge(&stripe, &subscription);
    refund(&stripe, &charge, 2000).await;
    let dispute = stripe.open_dispute(&charge).unwrap();
    assert_eq!(dispute["amount"], 3000, "the unrefunded part is disputed");
    stripe.close_dispute(dispute["id"].as_str().unwrap(), false).unwrap();
    let charge_events = stripe.take_pending_events();
    assert_eq!(charge_events.len(), 4, "refunded, dispute created, funds withdrawn, closed");

    deliver_in_order(&stripe, db, &charge_events).await;
    assert_eq!(count(db, "SELECT COUNT(*) FROM membership_waiting_events").await, 4);
    let fund = || async { -ledger::balance(db, salon.fund_account).await.unwrap().amount() };
    assert_eq!(fund().await, 0, "nothing is posted for a charge kanpa does not know yet");

    deliver_in_order(&stripe, db, &joining).await;
    assert_eq!(count(db, "SELECT COUNT(*) FROM membership_waiting_events").await, 0);
    let m = store::membership_by_public_id(db, &membership).await.unwrap();
    assert_eq!(m.status, kanpa_patrons::MembershipStatus::Active);
    assert_eq!(m.lifetime_paid, 0, "5,000 paid, 2,000 refunded, 3,000 lost in the dispute");
    let fee = (5000 * 36 + 500) / 1000;
    assert_eq!(fund().await, 5000 - fee - 2000 - 3000 - 1500);
    let sql = "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'stripe:%'";
    assert_eq!(count(db, sql).await, 5, "gross, fee, refund, disputed amount, dispute fee");
    let (code, out, err) = run_kanpa(&app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    app.stop().await;
}

/// A refund whose payment is unknown is kept for the invoice.paid naming
/// it; but that invoice.paid may be in a transaction of another worker,
/// written and not yet committed, that has already looked for what was kept.
/// The refund then waits for that transaction and is applied to the payment
/// it made known, rather than kept where nothing will look again.
async fn a_refund_applied_while_its_invoice_paid_commits_is_neither_kept_forever_nor_lost(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.expect("fake Stripe starts");
    let Some((app, salon, membership, subscription)) = one_patron(backend, &stripe, "inner").await else { return };
    let db = &app.db;
    let (paid, joining): (Vec<Value>, Vec<Value>) =
        stripe.take_pending_events().into_iter().partition(|e| e["type"] == "invoice.paid");
    deliver_in_order(&stripe, db, &joining).await;
    let charge = latest_charge(&stripe, &subscription);
    refund(&stripe, &charge, 2000).await;
    let refunded: Vec<Value> = stripe.take_pending_events();
    assert!(refunded.iter().any(|e| e["type"] == "charge.refunded"));

    // Another worker applies the invoice.paid and has not committed yet.
    let mut config = test_config(&app.database_url);
    on_fake_stripe(&stripe)(&mut config);
    let gateway = workers::gateway(&config, db).expect("gateway");
    let handler = MembershipEvents::new(config.salon_site(), gateway);
    let incoming = IncomingEvent::from_json(&paid[0].to_string()).unwrap();
    let event = StoredEvent {
        id: incoming.id,
        event_type: incoming.event_type,
        object_id: incoming.object_id,
        created: incoming.created,
        livemode: incoming.livemode,
        payload: incoming.payload,
        status: "pending".into(),
        last_error: None,
    };
    let mut tx = db.begin().await.unwrap();
    assert_eq!(handler.handle(&mut tx, &event).await.unwrap(), Handled::Applied);
    let waiting = "SELECT COUNT(*) FROM membership_waiting_events";
    let (delivered, ()) = tokio::join!(
        async {
            let mut statuses = Vec::new();
            for event in &refunded {
                statuses.push(stripe.deliver(event).await.unwrap());
            }
            statuses
        },
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(count(db, waiting).await, 0, "the refund was kept while its payment was being made known");
            tx.commit().await.unwrap();
        }
    );
    assert!(delivered.iter().all(|s| *s == 200));
    drained(db).await;
    assert_eq!(count(db, waiting).await, 0, "nothing is left waiting");
    let m = store::membership_by_public_id(db, &membership).await.unwrap();
    assert_eq!(m.lifetime_paid, 3000, "5,000 paid, 2,000 refunded");
    let fee = (5000 * 36 + 500) / 1000;
    let fund = -ledger::balance(db, salon.fund_account).await.unwrap().amount();
    assert_eq!(fund, 5000 - fee - 2000);
    let (code, out, err) = run_kanpa(&app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    app.stop().await;
}

/// A late invoice event must not undo what a newer subscription event said:
/// last month's invoice.paid arriving after this month's failed renewal
/// leaves the patron past due, and a failure arriving after the retry was
/// paid leaves them active, with no second email.
async fn an_invoice_event_never_moves_a_membership_back_past_a_newer_subscription_event(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.expect("fake Stripe starts");
    let start = (Timestamp::now().unix_seconds() - 100 * DAY) / DAY * DAY;
    stripe.set_clock(start);
    let Some((app, _salon, membership, subscription)) = one_patron(backend, &stripe, "reader").await else { return };
    let db = &app.db;
    let joining = stripe.take_pending_events();
    let paid_at_join: Vec<Value> = joining.iter().filter(|e| e["type"] == "invoice.paid").cloned().collect();
    let others: Vec<Value> = joining.iter().filter(|e| e["type"] != "invoice.paid").cloned().collect();
    let card = stripe.object(&subscription).unwrap()["default_payment_method"].as_str().unwrap().to_owned();
    stripe.decline_payment_method(&card, "card_declined");
    stripe.advance_billing_to(start + 32 * DAY).unwrap();
    let failing = stripe.take_pending_events();
    let types: Vec<&str> = failing.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["invoice.payment_failed", "customer.subscription.updated"]);

    // The join's invoice.paid comes last, after the renewal failed.
    deliver_in_order(&stripe, db, &others).await;
    deliver_in_order(&stripe, db, &failing).await;
    deliver_in_order(&stripe, db, &paid_at_join).await;
    let m = || async { store::membership_by_public_id(db, &membership).await.unwrap() };
    assert_eq!(m().await.status, kanpa_patrons::MembershipStatus::PastDue);
    assert_eq!(m().await.lifetime_paid, 500, "the first payment still counts");

    // The retry is paid; the active subscription arrives first, then the
    // paid invoice, then a late copy of the failure.
    stripe.accept_payment_method(&card);
    stripe.advance_billing_to(start + 36 * DAY).unwrap();
    let recovered = stripe.take_pending_events();
    let types: Vec<&str> = recovered.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["invoice.paid", "customer.subscription.updated"]);
    let failed_invoice = failing[0]["data"]["object"].clone();
    let late = stripe.event_at("invoice.payment_failed", failed_invoice, stripe.now() - 60);
    deliver_in_order(&stripe, db, &[recovered[1].clone(), recovered[0].clone(), late]).await;
    assert_eq!(m().await.status, kanpa_patrons::MembershipStatus::Active);
    assert_eq!(m().await.lifetime_paid, 1000);
    let sql = "SELECT COUNT(*) FROM outbox_emails WHERE template = 'membership_payment_failed'";
    assert_eq!(count(db, sql).await, 1, "one failed attempt, one email");
    app.stop().await;
}

/// A price changed in Stripe itself (the dashboard, the billing portal)
/// reaches kanpa as a subscription update: the membership moves to the tier
/// of that price, with its amount and seat.
async fn a_price_changed_in_stripe_moves_the_membership_to_that_prices_tier_and_seat(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.expect("fake Stripe starts");
    let Some((app, salon, membership, subscription)) = one_patron(backend, &stripe, "reader").await else { return };
    let db = &app.db;
    let joining = stripe.take_pending_events();
    deliver_in_order(&stripe, db, &joining).await;
    let reader = store::tier_by_slug(db, salon.id, "reader").await.unwrap();
    let inner = store::tier_by_slug(db, salon.id, "inner").await.unwrap();
    assert_eq!((reader.seats_taken, inner.seats_taken), (1, 0));
    stripe.advance_billing_to(stripe.now() + 60).unwrap();
    let item = stripe.object(&subscription).unwrap()["items"]["data"][0]["id"].as_str().unwrap().to_owned();
    let res = reqwest::Client::new()
        .post(format!("{}v1/subscriptions/{subscription}", stripe.api_base()))
        .bearer_auth("sk_test_kanpa")
        .form(&[
            ("items[0][id]", item.as_str()),
            ("items[0][price]", inner.stripe_price_id.as_deref().unwrap()),
            ("proration_behavior", "none"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    deliver_in_order(&stripe, db, &stripe.take_pending_events()).await;
    let m = store::membership_by_public_id(db, &membership).await.unwrap();
    assert_eq!((m.tier_id, m.amount, m.stripe_price_id.as_deref()), (inner.id, 5000, inner.stripe_price_id.as_deref()));
    let reader = store::tier_by_slug(db, salon.id, "reader").await.unwrap();
    let inner = store::tier_by_slug(db, salon.id, "inner").await.unwrap();
    assert_eq!((reader.seats_taken, inner.seats_taken), (0, 1));
    app.stop().await;
}
