//! The patron salon: organisers set up salons, tiers and the members' area
//! through the API; a tier's seat limit holds under concurrent claims; bad
//! input is refused with nothing stored.

use std::sync::Arc;

use kanpa_ledger::Locale;
use kanpa_messaging::inbox::EventHandlers;
use kanpa_messaging::mailer::SmtpMailer;
use kanpa_patrons::MembershipStatus as M;
use kanpa_patrons::join::{self, JoinForm};
use kanpa_patrons::selfservice;
use kanpa_payments::PaymentGateway;
use kanpa_payments::sandbox::{Sandbox, SandboxAction, SandboxResult};
use kanpa_server::workers::{self, Extras};
use kanpa_testkit::smtp::SmtpSink;
use kanpa_testkit::stripe::FakeStripe;

use kanpa_ledger::{Db, OrgId, on_db, store as ledger};
use kanpa_patrons::store::{self, SalonInput, TierInput};
use kanpa_patrons::{PatronError, Salon, SalonStatus, Site, Tier};
use kanpa_server::api_token::{self, Role};
use serde_json::{Value, json};

use crate::harness::{TestApp, TestBackend, TestDb, eventually, exec_raw, run_kanpa, test_config};
use crate::on_both_backends;

on_both_backends!(
    organisers_set_up_a_salon_with_tiers_and_posts_through_the_api,
    a_price_change_applies_to_new_patrons_and_a_full_tier_cannot_shrink_below_its_seats,
    a_tier_seat_limit_holds_under_concurrent_claims,
    bad_salon_input_is_refused_and_nothing_is_stored,
    an_operator_creates_and_opens_a_salon_from_a_file,
    a_patron_joins_through_subscription_checkout_on_the_tiers_own_price,
    bad_joins_are_refused_and_change_nothing,
    concurrent_joins_never_take_more_seats_than_a_tier_has,
    the_sandbox_completes_a_subscription_checkout_into_stripe_shaped_events,
    a_paid_join_makes_an_active_membership_and_renewals_post_to_the_salon_fund_once,
    a_failed_renewal_makes_the_membership_past_due_and_sends_a_polite_email,
    an_older_subscription_update_cannot_undo_a_newer_cancellation,
    a_patron_cancels_and_undoes_pauses_and_resumes_and_changes_tier,
    self_service_refuses_tampered_ids_and_wrong_states_and_changes_nothing,
    the_roster_shows_every_patron_with_mrr_and_churn_in_json_and_csv,
    the_salon_page_shows_the_terms_and_joins_through_the_sandbox_into_the_members_area,
    an_expired_sign_in_link_is_refused_and_opens_no_session,
    a_refunded_membership_payment_leaves_the_salon_fund_once,
    the_demo_salon_is_seeded_once_with_a_fund_that_matches_its_invoices_and_can_be_joined_in_the_sandbox,
    a_patron_sees_their_payment_history_on_my_page_and_a_receipt_for_each_paid_invoice,
    a_disputed_membership_payment_posts_each_balance_transaction_to_the_salon_fund_once,
    a_membership_payment_is_refunded_through_the_api_once_per_request_and_never_beyond_what_was_paid,
    a_treasurer_refunds_a_patrons_invoice_from_the_console_once_when_the_button_is_pressed_twice,
    an_organiser_posts_to_the_members_area_from_the_console_and_only_members_in_good_standing_see_it,
);

async fn org(db: &Db, slug: &str) -> OrgId {
    let mut tx = db.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, slug, "ドクターサロン").await.unwrap();
    tx.commit().await.unwrap();
    kanpa_payments::seller::update(db, org.id, &kanpa_payments::seller::fictional("ドクターサロン")).await.unwrap();
    org.id
}

async fn token(db: &Db, org: OrgId) -> String {
    api_token::create(db, org, Role::Organiser, "salon tests").await.unwrap()
}

async fn salon(db: &Db, org: OrgId, slug: &str) -> Salon {
    let input = SalonInput {
        slug: slug.into(),
        name_ja: "ドクターのサロン".into(),
        name_en: "The doctor's salon".into(),
        currency: "JPY".into(),
        billing_anchor: "start_date".into(),
        tier_change: "next_cycle".into(),
        grace_days: 7,
        contact_email: "doctor@example.jp".into(),
        ..SalonInput::default()
    };
    store::create_salon(db, org, &input).await.unwrap()
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    on_db!(db, p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap())
}

async fn call(app: &TestApp, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token).header("accept-language", "en");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn organisers_set_up_a_salon_with_tiers_and_posts_through_the_api(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let org = org(&app.db, "clinic").await;
    let token = token(&app.db, org).await;

    let body = json!({
        "slug": "dr-salon", "name_ja": "ドクターのサロン", "name_en": "The doctor's salon",
        "description_ja": "毎月の勉強会", "currency": "JPY", "billing_anchor": "first_of_month",
        "tier_change": "prorate_now", "grace_days": 5, "contact_email": "doctor@example.jp"
    });
    let (status, salon) = call(&app, &token, "POST", "/api/v1/salons", Some(body)).await;
    assert_eq!(status, 201, "{salon}");
    assert_eq!(salon["status"], "draft");
    assert_eq!(salon["billing_anchor"], "first_of_month");
    assert_eq!(salon["tier_change"], "prorate_now");
    assert_eq!(salon["grace_days"], 5);
    // The salon's fund is opened in the ledger, like a campaign team's.
    let fund = ledger::account_by_code(&app.db, org, "fund:salon:dr-salon").await.unwrap().expect("fund account");
    assert_eq!(fund.id.0, salon["fund_account"].as_i64().unwrap());

    for (slug, price, seats) in [("reader", 500, None), ("regular", 1500, None), ("inner", 5000, Some(10))] {
        let body = json!({ "slug": slug, "name_ja": slug, "benefits_ja": "月例ライブ", "monthly_price": price,
                           "seat_limit": seats });
        let (status, tier) = call(&app, &token, "POST", "/api/v1/salons/dr-salon/tiers", Some(body)).await;
        assert_eq!(status, 201, "{tier}");
        assert_eq!(tier["monthly_price"], price);
        assert_eq!(tier["status"], "active");
        // Priced at the gateway (the sandbox here) as soon as it exists.
        assert!(tier["stripe_price_id"].as_str().is_some_and(|p| p.starts_with("price_sandbox_")), "{tier}");
    }
    let (status, listed) = call(&app, &token, "GET", "/api/v1/salons/dr-salon/tiers", None).await;
    assert_eq!(status, 200);
    let slugs: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["reader", "regular", "inner"]);

    let (status, retired) =
        call(&app, &token, "PATCH", "/api/v1/salons/dr-salon/tiers/reader", Some(json!({ "status": "retired" }))).await;
    assert_eq!((status, retired["status"].as_str()), (200, Some("retired")));

    let post = json!({ "title_ja": "4月のライブ", "body_ja": "録画はこちら", "link_url": "https://example.jp/live/4" });
    let (status, post) = call(&app, &token, "POST", "/api/v1/salons/dr-salon/posts", Some(post)).await;
    assert_eq!(status, 201, "{post}");
    let (_, posts) = call(&app, &token, "GET", "/api/v1/salons/dr-salon/posts", None).await;
    assert_eq!(posts["data"].as_array().unwrap().len(), 1);

    let (status, opened) = call(&app, &token, "POST", "/api/v1/salons/dr-salon/open", None).await;
    assert_eq!((status, opened["status"].as_str()), (200, Some("open")));
    let (status, again) = call(&app, &token, "POST", "/api/v1/salons/dr-salon/open", None).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("wrong_state")));

    let (status, updated) =
        call(&app, &token, "PATCH", "/api/v1/salons/dr-salon", Some(json!({ "grace_days": 10 }))).await;
    assert_eq!((status, updated["grace_days"].as_i64()), (200, Some(10)));

    let (status, got) = call(&app, &token, "GET", "/api/v1/salons/dr-salon", None).await;
    assert_eq!(status, 200);
    assert_eq!(got["tiers"].as_array().unwrap().len(), 3);

    // Another organisation's token sees nothing of it.
    let other = org_token(&app, "other-clinic").await;
    let (status, _) = call(&app, &other, "GET", "/api/v1/salons/dr-salon", None).await;
    assert_eq!(status, 404);
    let (_, list) = call(&app, &other, "GET", "/api/v1/salons", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // No token, no salon.
    let response = app.client.get(app.url("/api/v1/salons")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    app.stop().await;
}

async fn org_token(app: &TestApp, slug: &str) -> String {
    let org = org(&app.db, slug).await;
    token(&app.db, org).await
}

async fn a_price_change_applies_to_new_patrons_and_a_full_tier_cannot_shrink_below_its_seats(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let org = org(&app.db, "clinic").await;
    let token = token(&app.db, org).await;
    let salon = salon(&app.db, org, "dr-salon").await;
    let tier = TierInput {
        slug: "inner".into(),
        name_ja: "インナー".into(),
        monthly_price: 5000,
        seat_limit: Some(3),
        ..TierInput::default()
    };
    let tier = store::add_tier(&app.db, salon.id, &tier).await.unwrap();
    for _ in 0..2 {
        let mut tx = app.db.begin().await.unwrap();
        store::claim_seat(&mut tx, tier.id).await.unwrap();
        tx.commit().await.unwrap();
    }
    let (status, body) =
        call(&app, &token, "PATCH", "/api/v1/salons/dr-salon/tiers/inner", Some(json!({ "seat_limit": 1 }))).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("seat_limit")), "{body}");
    assert_eq!(store::tier(&app.db, salon.id, tier.id).await.unwrap().seat_limit, Some(3));

    let (status, body) = call(
        &app,
        &token,
        "PATCH",
        "/api/v1/salons/dr-salon/tiers/inner",
        Some(json!({ "seat_limit": null, "monthly_price": 6000 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["seat_limit"], Value::Null);
    assert_eq!(body["monthly_price"], 6000);
    assert_eq!(body["seats_taken"], 2);
    app.stop().await;
}

async fn a_tier_seat_limit_holds_under_concurrent_claims(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let org = org(&app.db, "clinic").await;
    let salon = salon(&app.db, org, "dr-salon").await;
    let input = TierInput {
        slug: "inner".into(),
        name_ja: "インナー".into(),
        monthly_price: 5000,
        seat_limit: Some(10),
        ..TierInput::default()
    };
    let tier = store::add_tier(&app.db, salon.id, &input).await.unwrap();
    let db = Arc::new(app.db.clone());
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            let claimed = store::claim_seat(&mut tx, tier.id).await;
            tx.commit().await.unwrap();
            claimed
        }));
    }
    let (mut won, mut full) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => won += 1,
            Err(PatronError::TierFull) => full += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((won, full), (10, 50));
    assert_eq!(store::tier(&app.db, salon.id, tier.id).await.unwrap().seats_taken, 10);
    // A released seat can be taken again, once.
    let mut tx = app.db.begin().await.unwrap();
    store::release_seat(&mut tx, tier.id).await.unwrap();
    store::claim_seat(&mut tx, tier.id).await.unwrap();
    assert!(matches!(store::claim_seat(&mut tx, tier.id).await, Err(PatronError::TierFull)));
    tx.commit().await.unwrap();
    // A retired tier gives no seats at all.
    let retire = store::TierChanges { status: Some("retired".into()), ..Default::default() };
    store::update_tier(&app.db, salon.id, tier.id, &retire).await.unwrap();
    let mut tx = app.db.begin().await.unwrap();
    store::release_seat(&mut tx, tier.id).await.unwrap();
    assert!(matches!(store::claim_seat(&mut tx, tier.id).await, Err(PatronError::TierRetired)));
    drop(tx);
    app.stop().await;
}

async fn bad_salon_input_is_refused_and_nothing_is_stored(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let org = org(&app.db, "clinic").await;
    let token = token(&app.db, org).await;
    let good = json!({ "slug": "dr-salon", "name_ja": "サロン", "currency": "JPY", "contact_email": "d@example.jp" });
    let cases: [(&str, Value, &str); 6] = [
        ("slug", json!({ "slug": "Dr Salon" }), "invalid_slug"),
        ("currency", json!({ "currency": "XXX" }), "invalid_currency"),
        ("billing_anchor", json!({ "billing_anchor": "whenever" }), "invalid_choice"),
        ("tier_change", json!({ "tier_change": "sometimes" }), "invalid_choice"),
        ("grace_days", json!({ "grace_days": 31 }), "out_of_range"),
        ("contact_email", json!({ "contact_email": "nobody" }), "invalid_email"),
    ];
    for (field, change, code) in cases {
        let mut body = good.clone();
        body.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        let (status, answer) = call(&app, &token, "POST", "/api/v1/salons", Some(body)).await;
        assert_eq!(status, 422, "{field}: {answer}");
        assert_eq!(answer["error"]["field"], field);
        assert_eq!(answer["error"]["code"], code);
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM salons").await, 0);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM ledger_accounts").await, 0);

    let (status, _) = call(&app, &token, "POST", "/api/v1/salons", Some(good.clone())).await;
    assert_eq!(status, 201);
    let (status, taken) = call(&app, &token, "POST", "/api/v1/salons", Some(good)).await;
    assert_eq!((status, taken["error"]["code"].as_str()), (409, Some("slug_taken")));

    let tiers: [(Value, &str, &str); 4] = [
        (json!({ "slug": "tier-one", "name_ja": "安い", "monthly_price": 10 }), "monthly_price", "below_minimum"),
        (
            json!({ "slug": "tier-one", "name_ja": "高い", "monthly_price": 100_000_000 }),
            "monthly_price",
            "above_maximum",
        ),
        (json!({ "slug": "tier-one", "name_ja": "", "monthly_price": 500 }), "name_ja", "required"),
        (
            json!({ "slug": "tier-one", "name_ja": "席", "monthly_price": 500, "seat_limit": -1 }),
            "seat_limit",
            "out_of_range",
        ),
    ];
    for (body, field, code) in tiers {
        let (status, answer) = call(&app, &token, "POST", "/api/v1/salons/dr-salon/tiers", Some(body)).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str(), answer["error"]["code"].as_str()),
            (422, Some(field), Some(code)),
            "{answer}"
        );
    }
    let post = json!({ "title_ja": "危ない", "link_url": "javascript:alert(1)" });
    let (status, answer) = call(&app, &token, "POST", "/api/v1/salons/dr-salon/posts", Some(post)).await;
    assert_eq!((status, answer["error"]["field"].as_str()), (422, Some("link_url")));
    let (status, answer) = call(&app, &token, "PATCH", "/api/v1/salons/dr-salon/tiers/nope", Some(json!({}))).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (422, Some("not_found")));
    let (status, _) = call(&app, &token, "POST", "/api/v1/salons", Some(json!({ "slug": 3 }))).await;
    assert_eq!(status, 400);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM salon_tiers").await, 0);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM salon_member_posts").await, 0);
    app.stop().await;
}

async fn an_operator_creates_and_opens_a_salon_from_a_file(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else { return };
    org(&t.db, "clinic").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("salon.json");
    let spec = json!({
        "slug": "dr-salon", "name_ja": "ドクターのサロン", "currency": "JPY", "contact_email": "doctor@example.jp",
        "tiers": [
            { "slug": "reader", "name_ja": "読者", "monthly_price": 500 },
            { "slug": "inner", "name_ja": "インナー", "monthly_price": 5000, "seat_limit": 10 }
        ],
        "posts": [{ "title_ja": "ようこそ", "body_ja": "はじめにお読みください" }]
    });
    std::fs::write(&file, spec.to_string()).unwrap();
    let path = file.display().to_string();
    let (code, out, err) = run_kanpa(&t.url, &["salon", "create", "--org", "clinic", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created draft salon dr-salon with 2 tiers and 1 posts"), "{out}");
    let (code, out, _) = run_kanpa(&t.url, &["salon", "tiers", "dr-salon"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("reader\tactive\t¥500/month") && out.contains("inner\tactive\t¥5,000/month\t0/10 seats"),
        "{out}"
    );
    let (code, out, _) = run_kanpa(&t.url, &["salon", "open", "dr-salon"]);
    assert_eq!((code, out.trim()), (0, "dr-salon is open to new patrons"));
    let (code, out, _) = run_kanpa(&t.url, &["salon", "list"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("dr-salon\topen\tJPY\t2 tiers"), "{out}");
    // A bad file names the field and creates nothing.
    std::fs::write(
        &file,
        json!({ "slug": "other", "name_ja": "x", "currency": "JPY", "contact_email": "x" }).to_string(),
    )
    .unwrap();
    let (code, _, err) = run_kanpa(&t.url, &["salon", "create", "--org", "clinic", &path]);
    assert_eq!(code, 1);
    assert!(err.contains("contact_email: That email address does not look right."), "{err}");
    assert_eq!(count(&t.db, "SELECT COUNT(*) FROM salons").await, 1);
}

/// The server on the Stripe gateway against the fake, mail to the sink.
struct Billing {
    app: TestApp,
    stripe: FakeStripe,
    sink: SmtpSink,
    gateway: Arc<dyn PaymentGateway>,
    site: Site,
}

impl Billing {
    async fn start(backend: TestBackend) -> Option<Billing> {
        kanpa_server::install_crypto_provider();
        let stripe = FakeStripe::start().await.expect("fake Stripe starts");
        let sink = SmtpSink::start().expect("SMTP sink starts");
        let mailer = SmtpMailer::from_url(&sink.url()).expect("sink URL");
        let configure = crate::harness::on_fake_stripe(&stripe);
        let extras = Extras { event_handlers: EventHandlers::default(), mailer: Some(Arc::new(mailer)) };
        let app = TestApp::spawn_with(backend, extras, configure.clone()).await?;
        stripe.set_webhook_url(app.url("/webhooks/stripe"));
        let mut config = test_config(&app.database_url);
        configure(&mut config);
        let gateway = workers::gateway(&config, &app.db).expect("gateway");
        Some(Billing { app, stripe, sink, gateway, site: config.salon_site() })
    }

    fn db(&self) -> &Db {
        &self.app.db
    }

    async fn join(&self, salon: &Salon, tier: &str, email: &str) -> Result<join::Joined, PatronError> {
        let form = JoinForm { tier: tier.into(), email: email.into() };
        join::join(self.db(), self.gateway.as_ref(), &self.site, &salon.slug, &form, Locale::Ja).await
    }
}

/// An open salon with a reader tier (¥500, unlimited) and an inner tier
/// (¥5,000, `seats` seats).
async fn open_salon(db: &Db, seats: i64) -> (Salon, Tier, Tier) {
    let org = org(db, "clinic").await;
    let salon = salon(db, org, "dr-salon").await;
    let reader =
        TierInput { slug: "reader".into(), name_ja: "読者".into(), monthly_price: 500, ..TierInput::default() };
    let reader = store::add_tier(db, salon.id, &reader).await.unwrap();
    let inner = TierInput {
        slug: "inner".into(),
        name_ja: "インナー".into(),
        monthly_price: 5000,
        seat_limit: Some(seats),
        ..TierInput::default()
    };
    let inner = store::add_tier(db, salon.id, &inner).await.unwrap();
    let salon = store::set_salon_status(db, salon.id, SalonStatus::Open).await.unwrap();
    (salon, reader, inner)
}

fn session_id(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

async fn a_patron_joins_through_subscription_checkout_on_the_tiers_own_price(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, inner) = open_salon(b.db(), 10).await;
    let joined = b.join(&salon, "inner", "hanako@example.jp").await.expect("joins");
    let membership = store::membership_by_public_id(b.db(), &joined.membership).await.unwrap();
    assert_eq!(membership.status, kanpa_patrons::MembershipStatus::Incomplete);
    assert_eq!(membership.amount, 5000);
    let tier = store::tier(b.db(), salon.id, inner.id).await.unwrap();
    assert_eq!(tier.seats_taken, 1);
    let first_price = tier.stripe_price_id.clone().expect("the tier is priced");
    let product = tier.stripe_product_id.clone().expect("the tier has a product");
    assert_eq!(membership.stripe_price_id.as_deref(), Some(first_price.as_str()));
    let price = b.stripe.object(&first_price).unwrap();
    assert_eq!((price["unit_amount"].as_i64(), price["recurring"]["interval"].as_str()), (Some(5000), Some("month")));
    assert_eq!(price["metadata"]["kanpa_kind"], "tier");

    // Completing Checkout on Stripe starts a subscription on that price,
    // carrying the membership's id.
    let session = b.stripe.complete_checkout_session(&session_id(&joined.checkout_url)).unwrap();
    assert_eq!(session["mode"], "subscription");
    assert_eq!(session["metadata"]["kanpa_kind"], "membership");
    assert_eq!(session["metadata"]["kanpa_ref"], joined.membership.as_str());
    let subscription = b.stripe.object(session["subscription"].as_str().unwrap()).unwrap();
    assert_eq!(subscription["items"]["data"][0]["price"]["id"], first_price.as_str());
    assert_eq!(subscription["metadata"]["kanpa_ref"], joined.membership.as_str());

    // A new amount is a new Stripe price of the same product, for new
    // patrons; the first patron stays on theirs.
    let change = store::TierChanges { monthly_price: Some(6000), ..Default::default() };
    let changed = store::update_tier(b.db(), salon.id, inner.id, &change).await.unwrap();
    assert_eq!(changed.stripe_price_id, None);
    let second = b.join(&salon, "inner", "taro@example.jp").await.expect("joins");
    let tier = store::tier(b.db(), salon.id, inner.id).await.unwrap();
    let new_price = tier.stripe_price_id.clone().unwrap();
    assert_ne!(new_price, first_price);
    assert_eq!(tier.stripe_product_id.as_deref(), Some(product.as_str()));
    assert_eq!(b.stripe.object(&new_price).unwrap()["unit_amount"], 6000);
    let second = store::membership_by_public_id(b.db(), &second.membership).await.unwrap();
    assert_eq!((second.amount, second.stripe_price_id.as_deref()), (6000, Some(new_price.as_str())));
    let first = store::membership_by_public_id(b.db(), &joined.membership).await.unwrap();
    assert_eq!((first.amount, first.stripe_price_id.as_deref()), (5000, Some(first_price.as_str())));
    assert_eq!(count(b.db(), "SELECT COUNT(*) FROM salon_tier_prices").await, 2);
    b.app.stop().await;
}

async fn bad_joins_are_refused_and_change_nothing(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, reader, _) = open_salon(b.db(), 0).await;
    let member = b.join(&salon, "reader", "hanako@example.jp").await.unwrap();
    exec_raw(b.db(), &format!("UPDATE memberships SET status = 'active' WHERE public_id = '{}'", member.membership))
        .await
        .unwrap();
    let retire = store::TierChanges { status: Some("retired".into()), ..Default::default() };
    let other = TierInput { slug: "old".into(), name_ja: "旧".into(), monthly_price: 800, ..TierInput::default() };
    let old = store::add_tier(b.db(), salon.id, &other).await.unwrap();
    store::update_tier(b.db(), salon.id, old.id, &retire).await.unwrap();
    let sessions = b.stripe.objects("checkout.session").len();
    let memberships = count(b.db(), "SELECT COUNT(*) FROM memberships").await;

    type Expected = fn(&PatronError) -> bool;
    let refusals: [(&str, &str, Expected); 6] = [
        ("gold", "a@example.jp", |e| matches!(e, PatronError::NotFound("tier"))),
        ("1; DROP TABLE memberships", "a@example.jp", |e| matches!(e, PatronError::NotFound("tier"))),
        ("old", "a@example.jp", |e| matches!(e, PatronError::TierRetired)),
        ("inner", "a@example.jp", |e| matches!(e, PatronError::TierFull)),
        ("reader", "HANAKO@example.jp", |e| matches!(e, PatronError::AlreadyMember)),
        ("reader", "not-an-address", |e| matches!(e, PatronError::Invalid(i) if i.field == "email")),
    ];
    for (tier, email, expected) in refusals {
        let refused = b.join(&salon, tier, email).await.expect_err(tier);
        assert!(expected(&refused), "{tier} {email}: {refused:?}");
    }
    let closed = store::set_salon_status(b.db(), salon.id, SalonStatus::Closed).await.unwrap();
    assert!(matches!(b.join(&closed, "reader", "b@example.jp").await, Err(PatronError::SalonState { .. })));
    let Err(PatronError::NotFound("salon")) = join::join(
        b.db(),
        b.gateway.as_ref(),
        &b.site,
        "no-such-salon",
        &JoinForm { tier: "reader".into(), email: "b@example.jp".into() },
        Locale::En,
    )
    .await
    else {
        panic!("an unknown salon is not found")
    };

    assert_eq!(count(b.db(), "SELECT COUNT(*) FROM memberships").await, memberships);
    assert_eq!(b.stripe.objects("checkout.session").len(), sessions);
    assert_eq!(store::tier(b.db(), salon.id, reader.id).await.unwrap().seats_taken, 1);
    assert_eq!(count(b.db(), "SELECT CAST(COALESCE(SUM(seats_taken), 0) AS BIGINT) FROM salon_tiers").await, 1);
    b.app.stop().await;
}

async fn concurrent_joins_never_take_more_seats_than_a_tier_has(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, inner) = open_salon(b.db(), 5).await;
    let b = Arc::new(b);
    let mut tasks = Vec::new();
    for n in 0..20 {
        let (b, salon) = (b.clone(), salon.clone());
        tasks.push(tokio::spawn(async move { b.join(&salon, "inner", &format!("patron{n}@example.jp")).await }));
    }
    let (mut joined, mut full) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => joined += 1,
            Err(PatronError::TierFull) => full += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((joined, full), (5, 15));
    assert_eq!(store::tier(b.db(), salon.id, inner.id).await.unwrap().seats_taken, 5);
    assert_eq!(count(b.db(), "SELECT COUNT(*) FROM memberships").await, 5);
    let Ok(b) = Arc::try_unwrap(b) else { panic!("all joins are done") };
    b.app.stop().await;
}

async fn the_sandbox_completes_a_subscription_checkout_into_stripe_shaped_events(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let (salon, reader, _) = open_salon(&app.db, 3).await;
    let sandbox = Sandbox::new(app.db.clone(), app.url(""));
    let site = Site { base_url: app.url(""), mail_domain: "kanpa.test".into() };
    let form = JoinForm { tier: "reader".into(), email: "hanako@example.jp".into() };
    // A first Checkout left unfinished is closed when the patron starts again.
    let abandoned = join::join(&app.db, &sandbox, &site, &salon.slug, &form, Locale::Ja).await.unwrap();
    let joined = join::join(&app.db, &sandbox, &site, &salon.slug, &form, Locale::Ja).await.unwrap();
    let old = store::membership_by_public_id(&app.db, &abandoned.membership).await.unwrap();
    assert_eq!(old.status, kanpa_patrons::MembershipStatus::Ended);
    assert_eq!(store::tier(&app.db, salon.id, reader.id).await.unwrap().seats_taken, 1);
    let closed = Sandbox::act(&app.db, &session_id(&abandoned.checkout_url), SandboxAction::Succeed).await.unwrap();
    assert_eq!(closed, SandboxResult::Closed);

    let id = session_id(&joined.checkout_url);
    let session = Sandbox::session(&app.db, &id).await.unwrap().unwrap();
    assert_eq!((session.mode.as_str(), session.amount), ("subscription", 500));
    let price = store::tier(&app.db, salon.id, reader.id).await.unwrap().stripe_price_id.unwrap();
    assert_eq!(session.price_id.as_deref(), Some(price.as_str()));
    let done = Sandbox::act(&app.db, &id, SandboxAction::Succeed).await.unwrap();
    let SandboxResult::Completed { redirect } = done else { panic!("completed: {done:?}") };
    assert!(redirect.ends_with(&format!("/s/dr-salon/welcome/{}", joined.membership)), "{redirect}");

    let sql = "SELECT event_type, payload FROM stripe_events ORDER BY created, id";
    let events: Vec<(String, String)> = on_db!(&app.db, p => sqlx::query_as(sql).fetch_all(p).await.unwrap());
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types.len(), 3);
    for expected in ["checkout.session.completed", "customer.subscription.created", "invoice.paid"] {
        assert!(types.contains(&expected), "{types:?}");
    }
    let object = |t: &str| -> Value {
        let (_, payload) = events.iter().find(|(et, _)| et == t).unwrap();
        serde_json::from_str::<Value>(payload).unwrap()["data"]["object"].clone()
    };
    let (completed, subscription, invoice) =
        (object("checkout.session.completed"), object("customer.subscription.created"), object("invoice.paid"));
    assert_eq!(completed["mode"], "subscription");
    assert_eq!(completed["metadata"]["kanpa_kind"], "membership");
    assert_eq!(completed["metadata"]["kanpa_ref"], joined.membership.as_str());
    assert_eq!(completed["subscription"], subscription["id"]);
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["metadata"]["kanpa_ref"], joined.membership.as_str());
    assert_eq!(subscription["items"]["data"][0]["price"]["id"], price.as_str());
    assert!(subscription["items"]["data"][0]["current_period_end"].as_i64() > subscription["created"].as_i64());
    assert_eq!(invoice["amount_paid"], 500);
    assert_eq!(invoice["parent"]["subscription_details"]["subscription"], subscription["id"]);
    let pi = invoice["payments"]["data"][0]["payment"]["payment_intent"].as_str().unwrap();
    // The sandbox knows what that payment took, fee included, like Stripe.
    let collected = sandbox.collected(pi).await.unwrap().expect("paid");
    assert_eq!((collected.gross.amount(), collected.fee.amount()), (500, 18));

    // The same handlers apply the sandbox's events: the patron is a member,
    // the payment is in the salon's fund, and self-service works offline.
    let membership = || async { store::membership_by_public_id(&app.db, &joined.membership).await.unwrap() };
    eventually(30, "the sandbox payment is recorded", || async { membership().await.lifetime_paid == 500 }).await;
    assert_eq!(membership().await.status, M::Active);
    assert_eq!(-ledger::balance(&app.db, salon.fund_account).await.unwrap().amount(), 500 - 18);
    selfservice::cancel_at_period_end(&app.db, &sandbox, "hanako@example.jp", &joined.membership).await.unwrap();
    eventually(30, "the cancellation is applied", || async { membership().await.status == M::Canceling }).await;
    let refused =
        selfservice::card_update_link(&app.db, &sandbox, &site, "hanako@example.jp", &joined.membership).await;
    assert!(matches!(refused, Err(PatronError::Gateway(_))), "{refused:?}");
    app.stop().await;
}

impl Billing {
    async fn deliver(&self, event_type: &str, object: Value) {
        let event = self.stripe.event(event_type, object);
        assert_eq!(self.stripe.deliver(&event).await.unwrap(), 200, "{event_type} accepted");
    }

    /// Joins, completes Checkout on the fake and delivers its events:
    /// (membership id, subscription).
    async fn member(&self, salon: &Salon, tier: &str, email: &str) -> (String, Value) {
        let joined = self.join(salon, tier, email).await.expect("joins");
        let session = self.stripe.complete_checkout_session(&session_id(&joined.checkout_url)).unwrap();
        let subscription = self.stripe.object(session["subscription"].as_str().unwrap()).unwrap();
        let invoice = self.stripe.object(subscription["latest_invoice"].as_str().unwrap()).unwrap();
        self.deliver("checkout.session.completed", session).await;
        self.deliver("customer.subscription.created", subscription.clone()).await;
        self.deliver("invoice.paid", invoice).await;
        (joined.membership, subscription)
    }

    async fn membership(&self, id: &str) -> kanpa_patrons::Membership {
        store::membership_by_public_id(self.db(), id).await.unwrap()
    }

    async fn wait(&self, id: &str, what: &str, check: impl Fn(&kanpa_patrons::Membership) -> bool) {
        eventually(30, what, || async { check(&self.membership(id).await) }).await;
    }

    async fn fund(&self, salon: &Salon) -> i64 {
        -ledger::balance(self.db(), salon.fund_account).await.unwrap().amount()
    }

    async fn templates(&self) -> Vec<String> {
        let sql = "SELECT template FROM outbox_emails ORDER BY id";
        on_db!(self.db(), p => sqlx::query_scalar(sql).fetch_all(p).await.unwrap())
    }
}

/// Stripe's Japanese card fee as the fake charges it.
fn fee(amount: i64) -> i64 {
    (amount * 36 + 500) / 1000
}

async fn a_paid_join_makes_an_active_membership_and_renewals_post_to_the_salon_fund_once(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, _) = open_salon(b.db(), 10).await;
    let (id, subscription) = b.member(&salon, "inner", "hanako@example.jp").await;
    b.wait(&id, "the first invoice is recorded", |m| m.lifetime_paid == 5000).await;
    let m = b.membership(&id).await;
    assert_eq!(m.status, kanpa_patrons::MembershipStatus::Active);
    assert_eq!(m.stripe_subscription_id.as_deref(), subscription["id"].as_str());
    assert!(m.stripe_customer_id.is_some() && m.since.is_some() && m.last_payment_at.is_some());
    assert!(m.current_period_end.is_some_and(|end| end > kanpa_ledger::Timestamp::now()));
    assert_eq!(b.fund(&salon).await, 5000 - fee(5000));

    // A month later Stripe renews; the same invoice event delivered twice
    // posts once.
    let invoice = b.stripe.renew_subscription(subscription["id"].as_str().unwrap()).unwrap();
    assert_eq!(invoice["status"], "paid");
    b.deliver("invoice.paid", invoice.clone()).await;
    b.deliver("invoice.paid", invoice).await;
    b.wait(&id, "the renewal is recorded", |m| m.lifetime_paid == 10_000).await;
    eventually(30, "both receipts are queued", || async {
        b.templates().await.iter().filter(|t| *t == "membership_receipt").count() == 2
    })
    .await;
    assert_eq!(b.fund(&salon).await, 2 * (5000 - fee(5000)));
    assert_eq!(count(b.db(), "SELECT COUNT(*) FROM membership_invoices WHERE status = 'paid'").await, 2);
    let sql = "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'stripe:%:gross'";
    assert_eq!(count(b.db(), sql).await, 2);
    assert_eq!(b.templates().await.iter().filter(|t| *t == "membership_receipt").count(), 2);
    let (code, out, err) = run_kanpa(&b.app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    b.app.stop().await;
}

async fn a_failed_renewal_makes_the_membership_past_due_and_sends_a_polite_email(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, _) = open_salon(b.db(), 10).await;
    let (id, subscription) = b.member(&salon, "reader", "taro@example.jp").await;
    b.wait(&id, "the membership is paid", |m| m.lifetime_paid == 500).await;
    let sub = subscription["id"].as_str().unwrap();
    b.stripe.decline_next("card_declined");
    let invoice = b.stripe.renew_subscription(sub).unwrap();
    assert_eq!(invoice["status"], "open");
    b.deliver("invoice.payment_failed", invoice.clone()).await;
    b.deliver("customer.subscription.updated", b.stripe.object(sub).unwrap()).await;
    b.wait(&id, "the membership is past due", |m| m.status == kanpa_patrons::MembershipStatus::PastDue).await;
    eventually(30, "the failure email is queued", || async {
        b.templates().await.contains(&"membership_payment_failed".to_owned())
    })
    .await;
    let m = b.membership(&id).await;
    // Access is kept for the salon's grace period (7 days), not after.
    let now = kanpa_ledger::Timestamp::now();
    assert!(m.in_good_standing(salon.grace_days, now));
    assert!(!m.in_good_standing(salon.grace_days, now.saturating_add(time::Duration::days(8))));
    // Nothing was posted for the failed attempt.
    assert_eq!((m.lifetime_paid, b.fund(&salon).await), (500, 500 - fee(500)));
    let sql = "SELECT COUNT(*) FROM membership_invoices WHERE status = 'failed'";
    assert_eq!(count(b.db(), sql).await, 1);
    let sql = "SELECT data FROM outbox_emails WHERE template = 'membership_payment_failed'";
    let data: String = on_db!(b.db(), p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap());
    assert!(data.contains("/me") && data.contains("¥500"), "{data}");
    b.app.stop().await;
}

async fn an_older_subscription_update_cannot_undo_a_newer_cancellation(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, reader, _) = open_salon(b.db(), 10).await;
    let (id, subscription) = b.member(&salon, "reader", "hanako@example.jp").await;
    b.wait(&id, "the membership is active", |m| m.status == kanpa_patrons::MembershipStatus::Active).await;
    let now = b.stripe.now();
    let mut canceling = subscription.clone();
    canceling["cancel_at_period_end"] = json!(true);
    let newer = b.stripe.event_at("customer.subscription.updated", canceling, now + 20);
    let older = b.stripe.event_at("customer.subscription.updated", subscription.clone(), now + 10);
    assert_eq!(b.stripe.deliver(&newer).await.unwrap(), 200);
    b.wait(&id, "the membership is canceling", |m| m.status == kanpa_patrons::MembershipStatus::Canceling).await;
    assert_eq!(b.stripe.deliver(&older).await.unwrap(), 200);
    eventually(30, "the older event is processed", || async {
        count(b.db(), "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'pending'").await == 0
    })
    .await;
    let m = b.membership(&id).await;
    assert_eq!(m.status, kanpa_patrons::MembershipStatus::Canceling);
    assert!(m.cancel_at.is_some());
    // The end arrives: the seat is given back, and nothing older revives it.
    let mut ended = subscription.clone();
    ended["status"] = json!("canceled");
    let deleted = b.stripe.event_at("customer.subscription.deleted", ended, now + 30);
    assert_eq!(b.stripe.deliver(&deleted).await.unwrap(), 200);
    b.wait(&id, "the membership ended", |m| m.status == kanpa_patrons::MembershipStatus::Ended).await;
    let late = b.stripe.event_at("customer.subscription.updated", subscription, now + 15);
    assert_eq!(b.stripe.deliver(&late).await.unwrap(), 200);
    eventually(30, "the late event is processed", || async {
        count(b.db(), "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'pending'").await == 0
    })
    .await;
    assert_eq!(b.membership(&id).await.status, kanpa_patrons::MembershipStatus::Ended);
    assert_eq!(store::tier(b.db(), salon.id, reader.id).await.unwrap().seats_taken, 0);
    b.app.stop().await;
}

impl Billing {
    /// Stripe tells kanpa what the subscription is now.
    async fn report(&self, subscription: &str) {
        self.deliver("customer.subscription.updated", self.stripe.object(subscription).unwrap()).await;
    }

    fn last_update(&self, subscription: &str) -> Vec<(String, String)> {
        let path = format!("/v1/subscriptions/{subscription}");
        let requests = self.stripe.requests();
        requests.into_iter().rev().find(|r| r.method == "POST" && r.path == path).map(|r| r.params).unwrap_or_default()
    }
}

async fn a_patron_cancels_and_undoes_pauses_and_resumes_and_changes_tier(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, reader, inner) = open_salon(b.db(), 10).await;
    let email = "hanako@example.jp";
    let (id, subscription) = b.member(&salon, "reader", email).await;
    let sub = subscription["id"].as_str().unwrap().to_owned();
    b.wait(&id, "active", |m| m.status == M::Active && m.lifetime_paid == 500).await;
    let (db, gw) = (b.db(), b.gateway.as_ref());

    selfservice::cancel_at_period_end(db, gw, email, &id).await.unwrap();
    assert_eq!(b.stripe.object(&sub).unwrap()["cancel_at_period_end"], true);
    b.report(&sub).await;
    b.wait(&id, "canceling", |m| m.status == M::Canceling && m.cancel_at.is_some()).await;
    selfservice::undo_cancel(db, gw, email, &id).await.unwrap();
    b.report(&sub).await;
    b.wait(&id, "active again", |m| m.status == M::Active && m.cancel_at.is_none()).await;

    let too_long = selfservice::pause(db, gw, email, &id, 4).await.unwrap_err();
    assert!(matches!(too_long, PatronError::Invalid(ref i) if i.field == "months"), "{too_long:?}");
    selfservice::pause(db, gw, email, &id, 2).await.unwrap();
    let paused = b.stripe.object(&sub).unwrap();
    let resumes_at = paused["pause_collection"]["resumes_at"].as_i64().unwrap();
    let expected = selfservice::pause_end(kanpa_ledger::Timestamp::now(), 2).unix_seconds();
    assert!((resumes_at - expected).abs() < 60, "{resumes_at} vs {expected}");
    b.report(&sub).await;
    b.wait(&id, "paused", |m| m.status == M::Paused && m.paused_until.is_some()).await;
    selfservice::resume(db, gw, email, &id).await.unwrap();
    b.report(&sub).await;
    b.wait(&id, "resumed", |m| m.status == M::Active && m.paused_until.is_none()).await;

    // Upgrade under the salon's rule (from the next cycle): no proration.
    let upgraded = selfservice::change_tier(db, gw, email, &id, "inner").await.unwrap();
    assert_eq!((upgraded.tier_id, upgraded.amount), (inner.id, 5000));
    let params = b.last_update(&sub);
    assert!(params.contains(&("proration_behavior".into(), "none".into())), "{params:?}");
    let inner_price = store::tier(db, salon.id, inner.id).await.unwrap().stripe_price_id.unwrap();
    assert_eq!(b.stripe.object(&sub).unwrap()["items"]["data"][0]["price"]["id"], inner_price.as_str());
    assert_eq!(store::tier(db, salon.id, reader.id).await.unwrap().seats_taken, 0);
    assert_eq!(store::tier(db, salon.id, inner.id).await.unwrap().seats_taken, 1);
    b.report(&sub).await;
    b.wait(&id, "still active on the new tier", |m| m.status == M::Active && m.tier_id == inner.id).await;

    // The organiser switches to prorating now; the downgrade is invoiced at once.
    let rule = store::SalonChanges { tier_change: Some("prorate_now".into()), ..Default::default() };
    store::update_salon(db, salon.id, &rule).await.unwrap();
    selfservice::change_tier(db, gw, email, &id, "reader").await.unwrap();
    let params = b.last_update(&sub);
    assert!(params.contains(&("proration_behavior".into(), "always_invoice".into())), "{params:?}");
    assert_eq!(store::tier(db, salon.id, inner.id).await.unwrap().seats_taken, 0);

    let portal = selfservice::card_update_link(db, gw, &b.site, email, &id).await.unwrap();
    assert!(portal.contains("/billing_portal/"), "{portal}");
    b.app.stop().await;
}

async fn self_service_refuses_tampered_ids_and_wrong_states_and_changes_nothing(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, reader, inner) = open_salon(b.db(), 1).await;
    let (id, subscription) = b.member(&salon, "reader", "hanako@example.jp").await;
    let (other, _) = b.member(&salon, "inner", "taro@example.jp").await;
    b.wait(&id, "active", |m| m.status == M::Active).await;
    b.wait(&other, "active", |m| m.status == M::Active).await;
    let sub = subscription["id"].as_str().unwrap();
    let before = b.stripe.object(sub).unwrap();
    let requests = b.stripe.requests().len();
    let (db, gw) = (b.db(), b.gateway.as_ref());

    // Someone else's membership, or one that does not exist, is not found.
    for (email, target) in [("taro@example.jp", id.as_str()), ("hanako@example.jp", "m_000000000000000000000000")] {
        let refused = selfservice::cancel_at_period_end(db, gw, email, target).await.unwrap_err();
        assert!(matches!(refused, PatronError::NotFound("membership")), "{refused:?}");
        let refused = selfservice::change_tier(db, gw, email, target, "inner").await.unwrap_err();
        assert!(matches!(refused, PatronError::NotFound("membership")), "{refused:?}");
    }
    assert!(matches!(
        selfservice::undo_cancel(db, gw, "hanako@example.jp", &id).await,
        Err(PatronError::MembershipState { status: M::Active })
    ));
    assert!(matches!(
        selfservice::resume(db, gw, "hanako@example.jp", &id).await,
        Err(PatronError::MembershipState { status: M::Active })
    ));
    // The inner tier's one seat is taken; a tier of nowhere is not found.
    let full = selfservice::change_tier(db, gw, "hanako@example.jp", &id, "inner").await.unwrap_err();
    assert!(matches!(full, PatronError::TierFull), "{full:?}");
    let unknown = selfservice::change_tier(db, gw, "hanako@example.jp", &id, "platinum").await.unwrap_err();
    assert!(matches!(unknown, PatronError::NotFound("tier")), "{unknown:?}");
    let same = selfservice::change_tier(db, gw, "hanako@example.jp", &id, "reader").await.unwrap_err();
    assert!(matches!(same, PatronError::Invalid(ref i) if i.field == "tier"), "{same:?}");

    assert_eq!(b.stripe.object(sub).unwrap(), before);
    let writes = b.stripe.requests().iter().skip(requests).filter(|r| r.method == "POST").count();
    assert_eq!(writes, 0);
    let m = b.membership(&id).await;
    assert_eq!((m.status, m.tier_id), (M::Active, reader.id));
    assert_eq!(store::tier(db, salon.id, reader.id).await.unwrap().seats_taken, 1);
    assert_eq!(store::tier(db, salon.id, inner.id).await.unwrap().seats_taken, 1);
    b.app.stop().await;
}

async fn the_roster_shows_every_patron_with_mrr_and_churn_in_json_and_csv(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, _) = open_salon(b.db(), 10).await;
    let (hanako, _) = b.member(&salon, "inner", "hanako@example.jp").await;
    let (taro, taro_sub) = b.member(&salon, "reader", "taro@example.jp").await;
    b.wait(&hanako, "paid", |m| m.lifetime_paid == 5000).await;
    b.wait(&taro, "paid", |m| m.lifetime_paid == 500).await;
    let mut ended = taro_sub.clone();
    ended["status"] = json!("canceled");
    b.deliver("customer.subscription.deleted", ended).await;
    b.wait(&taro, "ended", |m| m.status == M::Ended).await;
    // Someone still at Checkout is not on the roster.
    b.join(&salon, "reader", "jiro@example.jp").await.unwrap();

    let token = token(b.db(), OrgId(salon.org_id)).await;
    let (status, roster) = call(&b.app, &token, "GET", "/api/v1/salons/dr-salon/roster", None).await;
    assert_eq!(status, 200, "{roster}");
    let rows = roster["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{roster}");
    let row = rows.iter().find(|r| r["email"] == "hanako@example.jp").unwrap();
    assert_eq!(
        (row["tier"].as_str(), row["status"].as_str(), row["lifetime_paid"].as_i64()),
        (Some("inner"), Some("active"), Some(5000))
    );
    assert!(row["since"].is_string() && row["last_payment_at"].is_string());
    assert_eq!(roster["counts"]["active"], 1);
    assert_eq!(roster["counts"]["ended"], 1);
    assert_eq!(roster["counts"]["incomplete"], 1);
    assert_eq!(roster["mrr"], 5000);
    let months = roster["months"].as_array().unwrap();
    assert_eq!(months.len(), 12);
    let this_month = months.last().unwrap();
    assert_eq!((this_month["joined"].as_i64(), this_month["ended"].as_i64()), (Some(2), Some(1)));
    assert_eq!(this_month["mrr_at_end"], 5000);

    let response =
        b.app.client.get(b.app.url("/api/v1/salons/dr-salon/roster.csv")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "membership,email,tier,status,monthly_amount,since,last_payment,lifetime_paid");
    assert_eq!(lines.len(), 3);
    assert!(
        lines.iter().any(|l| l.contains("\"hanako@example.jp\",\"inner\",\"active\",5000,") && l.ends_with(",5000")),
        "{text}"
    );
    // Another organisation sees none of it.
    let other = org_token(&b.app, "other-clinic").await;
    let (status, _) = call(&b.app, &other, "GET", "/api/v1/salons/dr-salon/roster", None).await;
    assert_eq!(status, 404);
    b.app.stop().await;
}

/// Signs in through the emailed link; returns the cookie.
async fn sign_in(app: &TestApp, email: &str) -> String {
    let res = app
        .client
        .post(app.url("/me/sign-in"))
        .header("origin", app.url(""))
        .form(&[("email", email)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sql = "SELECT data FROM outbox_emails WHERE template = 'sign_in_link' AND to_address = $1 ORDER BY id DESC";
    let data: String = on_db!(&app.db, p => sqlx::query_scalar(sql).bind(email).fetch_one(p).await.unwrap());
    let data: Value = serde_json::from_str(&data).unwrap();
    let link = data["link"].as_str().unwrap();
    let path = &link[link.find("/me/sign-in/").unwrap()..];
    let res = app.get(path).await;
    assert_eq!(res.status(), 303);
    res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
}

async fn page(app: &TestApp, path: &str, lang: &str, cookie: Option<&str>) -> (u16, String) {
    let cookies = match cookie {
        Some(c) => format!("lang={lang}; {c}"),
        None => format!("lang={lang}"),
    };
    let res = app.client.get(app.url(path)).header("cookie", cookies).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn the_salon_page_shows_the_terms_and_joins_through_the_sandbox_into_the_members_area(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let (salon, _, _) = open_salon(&app.db, 0).await;
    let post = store::PostInput {
        title_ja: "4月の勉強会の録画".into(),
        title_en: "April study session".into(),
        link_url: Some("https://example.jp/live/4".into()),
        ..Default::default()
    };
    store::add_post(&app.db, salon.id, &post).await.unwrap();

    let (_, home) = page(&app, "/", "ja", None).await;
    assert!(
        home.contains("/s/dr-salon") && home.contains("ドクターのサロン") && home.contains("月額 ¥500 から"),
        "{home}"
    );
    let (status, ja) = page(&app, "/s/dr-salon", "ja", None).await;
    assert_eq!(status, 200);
    for text in [
        "ドクターのサロン",
        "読者",
        "月額 ¥500",
        "インナー",
        "満席",
        "お支払いの前にご確認ください",
        "毎月同じ日に請求します",
        "退会はいつでも",
        "1〜3か月の一時停止",
    ] {
        assert!(ja.contains(text), "{text} missing from the Japanese page");
    }
    let (_, en) = page(&app, "/s/dr-salon", "en", None).await;
    for text in
        ["The doctor&#39;s salon", "¥500 / month", "Before you pay", "each month on the same day", "cancel at any time"]
    {
        assert!(en.contains(text), "{text} missing from the English page: {en}");
    }

    let join = |fields: Vec<(&'static str, String)>| {
        app.client
            .post(app.url("/s/dr-salon/join"))
            .header("origin", app.url(""))
            .header("cookie", "lang=ja")
            .form(&fields)
            .send()
    };
    for (tier, words) in [("gold", "選んだプランはこのサロンにありません"), ("inner", "このプランは満席です")]
    {
        let res = join(vec![("tier", tier.into()), ("email", "hanako@example.jp".into())]).await.unwrap();
        assert_eq!(res.status(), 422);
        assert!(res.text().await.unwrap().contains(words), "{tier}");
    }
    let res = join(vec![("tier", "reader".into()), ("email", "nope".into())]).await.unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("メールアドレスの形式が正しくありません"));
    let forged = app
        .client
        .post(app.url("/s/dr-salon/join"))
        .header("origin", "https://evil.example")
        .form(&[("tier", "reader"), ("email", "hanako@example.jp")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM memberships").await, 0);

    let res = join(vec![("tier", "reader".into()), ("email", "hanako@example.jp".into())]).await.unwrap();
    assert_eq!(res.status(), 303);
    let checkout = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(checkout.contains("/sandbox/checkout/cs_sandbox_"), "{checkout}");
    let done = Sandbox::act(&app.db, &session_id(&checkout), SandboxAction::Succeed).await.unwrap();
    let SandboxResult::Completed { redirect } = done else { panic!("{done:?}") };
    let welcome = &redirect[redirect.find("/s/dr-salon/welcome/").unwrap()..];
    let id = welcome.rsplit('/').next().unwrap().to_owned();
    eventually(30, "the membership is active", || async {
        store::membership_by_public_id(&app.db, &id).await.unwrap().status == M::Active
    })
    .await;
    let (status, text) = page(&app, welcome, "ja", None).await;
    assert_eq!(status, 200);
    assert!(text.contains("入会が完了しました"));

    // The members' area: only a signed-in member in good standing sees the posts.
    let (_, outside) = page(&app, "/s/dr-salon/members", "ja", None).await;
    assert!(!outside.contains("4月の勉強会の録画") && outside.contains("サインインすると"));
    let member = sign_in(&app, "hanako@example.jp").await;
    let (_, inside) = page(&app, "/s/dr-salon/members", "ja", Some(&member)).await;
    assert!(inside.contains("4月の勉強会の録画") && inside.contains("https://example.jp/live/4"), "{inside}");
    let (_, english) = page(&app, "/s/dr-salon/members", "en", Some(&member)).await;
    assert!(english.contains("April study session"));
    let stranger = sign_in(&app, "taro@example.jp").await;
    let (_, refused) = page(&app, "/s/dr-salon/members", "ja", Some(&stranger)).await;
    assert!(!refused.contains("4月の勉強会の録画") && refused.contains("会員の方向け"));

    // "My page" shows the membership next to any pledges, with what can be done.
    let (_, me) = page(&app, "/me", "ja", Some(&member)).await;
    for text in [
        "入会中のサロン",
        "ドクターのサロン",
        "読者",
        "有効",
        "次回",
        "¥500 を請求します",
        "お支払い済み期間の終わりに退会する",
    ] {
        assert!(me.contains(text), "{text} missing from /me: {me}");
    }
    let post_me = |path: String, fields: Vec<(&'static str, &'static str)>, cookie: String| {
        app.client
            .post(app.url(&path))
            .header("origin", app.url(""))
            .header("cookie", format!("lang=ja; {cookie}"))
            .form(&fields)
            .send()
    };
    let res = post_me(format!("/me/memberships/{id}/cancel"), vec![], member.clone()).await.unwrap();
    assert_eq!((res.status().as_u16(), res.headers()["location"].to_str().unwrap()), (303, "/me?done=membership"));
    eventually(30, "the cancellation is applied", || async {
        store::membership_by_public_id(&app.db, &id).await.unwrap().status == M::Canceling
    })
    .await;
    let (_, me) = page(&app, "/me", "ja", Some(&member)).await;
    assert!(me.contains("退会予定") && me.contains("退会を取り消す") && me.contains("以後の請求はありません"), "{me}");
    // Someone else's membership id, or a pause too long, changes nothing.
    let res = post_me(format!("/me/memberships/{id}/undo-cancel"), vec![], stranger.clone()).await.unwrap();
    assert_eq!(res.status(), 404);
    let res = post_me(format!("/me/memberships/{id}/pause"), vec![("months", "4")], member.clone()).await.unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("1 から 3 までの数を入力してください"));
    assert_eq!(store::membership_by_public_id(&app.db, &id).await.unwrap().status, M::Canceling);

    exec_raw(&app.db, &format!("UPDATE memberships SET status = 'paused' WHERE public_id = '{id}'")).await.unwrap();
    let (_, paused) = page(&app, "/s/dr-salon/members", "ja", Some(&member)).await;
    assert!(!paused.contains("4月の勉強会の録画") && paused.contains("一時停止中"));

    // A draft salon is not public.
    let org = OrgId(salon.org_id);
    let draft = SalonInput {
        slug: "draft-salon".into(),
        name_ja: "準備中".into(),
        currency: "JPY".into(),
        contact_email: "d@example.jp".into(),
        ..SalonInput::default()
    };
    store::create_salon(&app.db, org, &draft).await.unwrap();
    assert_eq!(page(&app, "/s/draft-salon", "ja", None).await.0, 404);
    assert_eq!(page(&app, "/s/no-such-salon", "ja", None).await.0, 404);
    app.stop().await;
}

async fn an_expired_sign_in_link_is_refused_and_opens_no_session(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let res = app
        .client
        .post(app.url("/me/sign-in"))
        .header("origin", app.url(""))
        .form(&[("email", "hanako@example.jp")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sql = "SELECT data FROM outbox_emails WHERE template = 'sign_in_link'";
    let data: String = on_db!(&app.db, p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap());
    let data: Value = serde_json::from_str(&data).unwrap();
    let link = data["link"].as_str().unwrap();
    let path = link[link.find("/me/sign-in/").unwrap()..].to_owned();
    // Thirty minutes pass.
    let past = kanpa_ledger::Timestamp::now().saturating_add(time::Duration::minutes(-1));
    let sql = "UPDATE sign_in_tokens SET expires_at = $1";
    let mut tx = app.db.begin().await.unwrap();
    kanpa_ledger::on_tx!(&mut tx, c => sqlx::query(sql).bind(past).execute(c).await.unwrap().rows_affected());
    tx.commit().await.unwrap();
    let res = app.client.get(app.url(&path)).header("cookie", "lang=en").send().await.unwrap();
    assert_eq!(res.status(), 410);
    assert!(res.headers().get("set-cookie").is_none());
    assert!(res.text().await.unwrap().contains("This sign-in link has expired or was already used"));
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM supporter_sessions").await, 0);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM sign_in_tokens WHERE used_at IS NOT NULL").await, 0);
    app.stop().await;
}

async fn a_refunded_membership_payment_leaves_the_salon_fund_once(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, _) = open_salon(b.db(), 10).await;
    let (id, _) = b.member(&salon, "inner", "hanako@example.jp").await;
    b.wait(&id, "paid", |m| m.lifetime_paid == 5000).await;
    let sql = "SELECT stripe_charge_id FROM membership_invoices WHERE status = 'paid'";
    let charge: String = on_db!(b.db(), p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap());
    // The organiser refunds 2,000 yen in Stripe's dashboard, then the rest.
    for amount in ["2000", "3000"] {
        let res = reqwest::Client::new()
            .post(format!("{}v1/refunds", b.stripe.api_base()))
            .bearer_auth("sk_test_kanpa")
            .form(&[("charge", charge.as_str()), ("amount", amount)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        let refunded = b.stripe.object(&charge).unwrap();
        b.deliver("charge.refunded", refunded.clone()).await;
        b.deliver("charge.refunded", refunded).await;
    }
    b.wait(&id, "the refunds are recorded", |m| m.lifetime_paid == 0).await;
    // Stripe keeps its fee on a refund: the fund is short of exactly that.
    assert_eq!(b.fund(&salon).await, -fee(5000));
    let sql = "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'stripe:%:refunded-to:%'";
    assert_eq!(count(b.db(), sql).await, 2);
    let (code, out, err) = run_kanpa(&b.app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    b.app.stop().await;
}

async fn the_demo_salon_is_seeded_once_with_a_fund_that_matches_its_invoices_and_can_be_joined_in_the_sandbox(
    backend: TestBackend,
) {
    use kanpa_patrons::demo::{self, DEMO_SALON};
    let Some(app) = TestApp::spawn(backend).await else { return };
    let now = kanpa_ledger::Timestamp::now();
    assert!(demo::seed(&app.db, now).await.unwrap());
    assert!(!demo::seed(&app.db, now).await.unwrap(), "a second seeding finds the salon");
    let salon = store::salon_by_slug(&app.db, DEMO_SALON).await.unwrap();
    assert_eq!(salon.status, SalonStatus::Open);
    assert_eq!(store::tiers(&app.db, salon.id).await.unwrap().len(), 3);
    let patrons = store::memberships_of_salon(&app.db, salon.id).await.unwrap();
    assert_eq!(patrons.len(), 65);
    for status in [M::Active, M::Canceling, M::PastDue, M::Paused, M::Ended] {
        assert!(patrons.iter().any(|m| m.status == status), "no {status} patron");
    }
    assert!(patrons.iter().filter(|m| m.status == M::Active).count() > 40);
    let sql =
        "SELECT CAST(COALESCE(SUM(amount_paid - fee), 0) AS BIGINT) FROM membership_invoices WHERE status = 'paid'";
    let net = count(&app.db, sql).await;
    assert!(net > 0);
    assert_eq!(-ledger::balance(&app.db, salon.fund_account).await.unwrap().amount(), net);
    let lifetime: i64 = patrons.iter().map(|m| m.lifetime_paid).sum();
    assert_eq!(
        lifetime,
        count(&app.db, "SELECT CAST(COALESCE(SUM(amount_paid), 0) AS BIGINT) FROM membership_invoices").await
    );
    let (code, out, err) = run_kanpa(&app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");

    let (status, ja) = page(&app, &format!("/s/{DEMO_SALON}"), "ja", None).await;
    assert_eq!(status, 200);
    assert!(ja.contains("インナー") && ja.contains("月額 ¥5,000"), "{ja}");
    let (status, en) = page(&app, &format!("/s/{DEMO_SALON}"), "en", None).await;
    assert_eq!(status, 200);
    assert!(en.contains("Inner circle"), "{en}");

    // A visitor joins the demo salon through the sandbox, and a demo patron
    // cancels through it.
    let res = app
        .client
        .post(app.url(&format!("/s/{DEMO_SALON}/join")))
        .header("origin", app.url(""))
        .form(&[("tier", "regular"), ("email", "visitor@example.jp")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let checkout = res.headers()["location"].to_str().unwrap().to_owned();
    let done = Sandbox::act(&app.db, &session_id(&checkout), SandboxAction::Succeed).await.unwrap();
    let SandboxResult::Completed { redirect } = done else { panic!("{done:?}") };
    let id = redirect.rsplit('/').next().unwrap().to_owned();
    eventually(30, "the visitor's payment is recorded", || async {
        store::membership_by_public_id(&app.db, &id).await.unwrap().lifetime_paid == 1500
    })
    .await;
    let fund = -ledger::balance(&app.db, salon.fund_account).await.unwrap().amount();
    assert_eq!(fund, net + 1500 - fee(1500));

    let sandbox = Sandbox::new(app.db.clone(), app.url(""));
    let patron = patrons.iter().find(|m| m.status == M::Active).unwrap();
    eventually(30, "the demo subscriptions are applied", || async {
        count(&app.db, "SELECT COUNT(*) FROM stripe_event_states WHERE status = 'pending'").await == 0
    })
    .await;
    selfservice::cancel_at_period_end(&app.db, &sandbox, &patron.email, &patron.public_id).await.unwrap();
    eventually(30, "the demo patron's cancellation is applied", || async {
        store::membership_by_public_id(&app.db, &patron.public_id).await.unwrap().status == M::Canceling
    })
    .await;
    app.stop().await;
}

async fn a_patron_sees_their_payment_history_on_my_page_and_a_receipt_for_each_paid_invoice(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    assert!(kanpa_patrons::demo::seed(&app.db, kanpa_ledger::Timestamp::now()).await.unwrap());
    let salon = store::salon_by_slug(&app.db, kanpa_patrons::demo::DEMO_SALON).await.unwrap();
    let patrons = store::memberships_of_salon(&app.db, salon.id).await.unwrap();
    let patron = patrons.iter().filter(|m| m.status == M::Active).max_by_key(|m| m.lifetime_paid).unwrap();
    let paid = store::paid_invoices(&app.db, patron.id).await.unwrap();
    assert!(paid.len() >= 2, "{paid:?}");
    assert!(paid.windows(2).all(|w| w[0].paid_at >= w[1].paid_at), "newest first");

    let cookie = sign_in(&app, &patron.email).await;
    let (status, me) = page(&app, "/me", "ja", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(me.contains("お支払い履歴"), "{me}");
    for invoice in &paid {
        let link = format!("/me/memberships/{}/receipts/{}", patron.public_id, invoice.stripe_invoice_id);
        assert!(me.contains(&link), "{link} missing from /me");
    }
    let newest = &paid[0];
    let path = format!("/me/memberships/{}/receipts/{}", patron.public_id, newest.stripe_invoice_id);
    let amount = kanpa_ledger::Money::new(newest.amount_paid, salon.currency);
    let charge = newest.stripe_charge_id.clone().unwrap();
    let receipt = kanpa_payments::receipt::by_stripe_charge(&app.db, &charge).await.unwrap().expect("issued");
    let number = receipt.display_number();
    // A month of membership is a taxable service: its price includes 10 % tax.
    let tax = kanpa_ledger::Money::new(newest.amount_paid * 10 / 110, salon.currency);
    let (status, ja) = page(&app, &path, "ja", Some(&cookie)).await;
    assert_eq!(status, 200);
    for text in [
        "領収書(適格簡易請求書)".to_owned(),
        "月会費".to_owned(),
        amount.format(Locale::Ja),
        kanpa_patrons::events::local_date(newest.paid_at, Locale::Ja),
        newest.stripe_invoice_id.clone(),
        charge.clone(),
        number.clone(),
        "からだとこころの健康サロン".to_owned(),
        "T7123456789012".to_owned(),
        format!("10%対象 {}(うち消費税 {})", amount.format(Locale::Ja), tax.format(Locale::Ja)),
    ] {
        assert!(ja.contains(&text), "{text} missing from the receipt: {ja}");
    }
    let (status, en) = page(&app, &path, "en", Some(&cookie)).await;
    assert_eq!(status, 200);
    for text in [
        "Receipt number".to_owned(),
        "Invoice ID".to_owned(),
        "monthly fee".to_owned(),
        kanpa_patrons::events::local_date(newest.paid_at, Locale::En),
        number.clone(),
    ] {
        assert!(en.contains(&text), "{text} missing from the English receipt: {en}");
    }
    // The same receipt by the link its email carries.
    let (status, linked) = page(&app, &format!("/me/receipts/{}", receipt.public_id), "ja", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(linked.contains(&number));

    // Another patron's receipt, an unknown invoice and no session are refused alike.
    let other = patrons.iter().find(|m| m.id != patron.id && m.lifetime_paid > 0).unwrap();
    let other_invoice = &store::paid_invoices(&app.db, other.id).await.unwrap()[0];
    let theirs = format!("/me/memberships/{}/receipts/{}", other.public_id, other_invoice.stripe_invoice_id);
    assert_eq!(page(&app, &theirs, "ja", Some(&cookie)).await.0, 404);
    let mixed = format!("/me/memberships/{}/receipts/{}", patron.public_id, other_invoice.stripe_invoice_id);
    assert_eq!(page(&app, &mixed, "ja", Some(&cookie)).await.0, 404);
    let (status, anonymous) = page(&app, &path, "ja", None).await;
    assert!(!anonymous.contains(&charge), "{status}");
    let other_charge = other_invoice.stripe_charge_id.clone().unwrap();
    let theirs = kanpa_payments::receipt::by_stripe_charge(&app.db, &other_charge).await.unwrap().unwrap();
    assert_eq!(page(&app, &format!("/me/receipts/{}", theirs.public_id), "ja", Some(&cookie)).await.0, 404);
    app.stop().await;
}

async fn a_disputed_membership_payment_posts_each_balance_transaction_to_the_salon_fund_once(backend: TestBackend) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, _) = open_salon(b.db(), 10).await;
    let (id, _) = b.member(&salon, "inner", "hanako@example.jp").await;
    b.wait(&id, "paid", |m| m.lifetime_paid == 5000).await;
    let net = 5000 - fee(5000);
    assert_eq!(b.fund(&salon).await, net);
    let sql = "SELECT stripe_charge_id FROM membership_invoices WHERE status = 'paid'";
    let charge: String = on_db!(b.db(), p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap());
    // Stripe's own example dispute and balance transactions, pointed at this charge.
    let dispute = |bts: Value| {
        let mut dispute = kanpa_testkit::stripe::fixture("dispute").unwrap();
        dispute["id"] = json!("dp_kanpa_salon_1");
        dispute["charge"] = json!(charge);
        dispute["amount"] = json!(5000);
        dispute["currency"] = json!("jpy");
        dispute["payment_intent"] = Value::Null;
        dispute["balance_transactions"] = bts;
        dispute
    };
    let bt = |id: &str, amount: i64, fee: i64| {
        let mut bt = kanpa_testkit::stripe::fixture("balance_transaction").unwrap();
        bt["id"] = json!(id);
        bt["amount"] = json!(amount);
        bt["fee"] = json!(fee);
        bt["net"] = json!(amount - fee);
        bt["currency"] = json!("jpy");
        bt
    };
    let withdrawal = json!([bt("txn_salon_dispute_1", -5000, 1500)]);
    b.deliver("charge.dispute.created", dispute(withdrawal.clone())).await;
    b.deliver("charge.dispute.funds_withdrawn", dispute(withdrawal.clone())).await;
    eventually(30, "the dispute withdrawal is posted", || async { b.fund(&salon).await == net - 5000 - 1500 }).await;
    let mut both = withdrawal.as_array().unwrap().clone();
    both.push(bt("txn_salon_dispute_2", 5000, 0));
    b.deliver("charge.dispute.closed", dispute(Value::Array(both))).await;
    eventually(30, "the reinstatement is posted once", || async { b.fund(&salon).await == net - 1500 }).await;
    let sql = "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'stripe:txn_salon_dispute_%'";
    assert_eq!(count(b.db(), sql).await, 3);
    let sql =
        "SELECT COUNT(*) FROM stripe_event_states WHERE event_type LIKE 'charge.dispute.%' AND status = 'applied'";
    eventually(30, "every dispute event is applied", || async { count(b.db(), sql).await == 3 }).await;
    let (code, out, err) = run_kanpa(&b.app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    b.app.stop().await;
}

async fn a_membership_payment_is_refunded_through_the_api_once_per_request_and_never_beyond_what_was_paid(
    backend: TestBackend,
) {
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, _) = open_salon(b.db(), 10).await;
    let (id, _) = b.member(&salon, "inner", "hanako@example.jp").await;
    b.wait(&id, "paid", |m| m.lifetime_paid == 5000).await;
    let sql = "SELECT stripe_invoice_id, stripe_charge_id FROM membership_invoices WHERE status = 'paid'";
    let (invoice, charge): (String, String) = on_db!(b.db(), p => sqlx::query_as(sql).fetch_one(p).await.unwrap());
    let org = OrgId(salon.org_id);
    let treasurer = api_token::create(b.db(), org, Role::Treasurer, "books").await.unwrap();
    let viewer = api_token::create(b.db(), org, Role::Viewer, "look").await.unwrap();
    let path = format!("/api/v1/salons/{}/invoices/{invoice}/refunds", salon.slug);
    let stripe_refunds =
        || b.stripe.requests().iter().filter(|r| r.method == "POST" && r.path == "/v1/refunds").count();
    let requests = || count(b.db(), "SELECT COUNT(*) FROM staff_invoice_refunds");
    let paid = 5000 - fee(5000);
    assert_eq!(b.fund(&salon).await, paid);

    // A viewer may not refund; another organisation sees neither the salon
    // nor the invoice through its own salon.
    let body = |amount: i64, key: &str| Some(json!({ "amount": amount, "idempotency_key": key }));
    let (status, out) = call(&b.app, &viewer, "POST", &path, body(1000, "v")).await;
    assert_eq!((status, out["error"]["code"].as_str()), (403, Some("forbidden")), "{out}");
    let other = org_token(&b.app, "other-clinic").await;
    let other_org = api_token::authenticate(b.db(), &other).await.unwrap().unwrap().org;
    let (status, _) = call(&b.app, &other, "POST", &path, body(1000, "o")).await;
    assert_eq!(status, 403, "an organiser token may not refund");
    let other_treasurer = api_token::create(b.db(), other_org, Role::Treasurer, "books").await.unwrap();
    let (status, out) = call(&b.app, &other_treasurer, "POST", &path, body(1000, "o")).await;
    assert_eq!(status, 404, "{out}");
    let other_salon = self::salon(b.db(), other_org, "other-salon").await;
    let through_own = format!("/api/v1/salons/{}/invoices/{invoice}/refunds", other_salon.slug);
    let (status, out) = call(&b.app, &other_treasurer, "POST", &through_own, body(1000, "o")).await;
    assert_eq!(status, 404, "{out}");

    // More than was paid is refused in both languages, and nothing changes.
    let (status, out) = call(&b.app, &treasurer, "POST", &path, body(5001, "too-much")).await;
    assert_eq!((status, out["error"]["code"].as_str()), (422, Some("refund_refused")), "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("5,000"), "{out}");
    let ja = b
        .app
        .client
        .post(b.app.url(&path))
        .bearer_auth(&treasurer)
        .header("accept-language", "ja")
        .json(&json!({ "amount": 5001, "idempotency_key": "too-much" }))
        .send()
        .await
        .unwrap();
    assert_eq!(ja.status(), 422);
    let ja: Value = ja.json().await.unwrap();
    let ja_message = ja["error"]["message"].as_str().unwrap().to_owned();
    assert!(ja_message.contains("5,000") && ja_message != out["error"]["message"].as_str().unwrap(), "{ja}");
    assert_eq!((stripe_refunds(), requests().await), (0, 0));

    // A partial refund asked twice at once under one key reaches Stripe once.
    let (first, second) = tokio::join!(
        call(&b.app, &treasurer, "POST", &path, body(2000, "first")),
        call(&b.app, &treasurer, "POST", &path, body(2000, "first")),
    );
    assert_eq!((first.0, second.0), (202, 202), "{first:?} {second:?}");
    let answers = [&first.1, &second.1];
    assert_eq!(answers.iter().filter(|a| a["already_requested"] == true).count(), 1, "{answers:?}");
    assert_eq!(stripe_refunds(), 1, "one request reaches Stripe");
    let request = b.stripe.requests().into_iter().find(|r| r.path == "/v1/refunds").unwrap();
    assert!(request.idempotency_key.as_deref().is_some_and(|k| k.starts_with("staff-refund:invoice:")), "{request:?}");
    // Stripe reports it, twice; the books and the patron follow once.
    let refunded = b.stripe.object(&charge).unwrap();
    assert_eq!(refunded["amount_refunded"], 2000);
    b.deliver("charge.refunded", refunded.clone()).await;
    b.deliver("charge.refunded", refunded).await;
    b.wait(&id, "the first refund is recorded", |m| m.lifetime_paid == 3000).await;
    assert_eq!(b.fund(&salon).await, paid - 2000);

    // What is left can be refunded, not more.
    let (status, out) = call(&b.app, &treasurer, "POST", &path, body(3001, "second")).await;
    assert_eq!(status, 422, "{out}");
    assert!(out["error"]["message"].as_str().unwrap().contains("3,000"), "{out}");
    assert_eq!(stripe_refunds(), 1);
    let (status, out) = call(&b.app, &treasurer, "POST", &path, body(3000, "second")).await;
    assert_eq!((status, out["amount"].as_i64()), (202, Some(3000)), "{out}");
    assert_eq!(stripe_refunds(), 2);
    b.deliver("charge.refunded", b.stripe.object(&charge).unwrap()).await;
    b.wait(&id, "the rest is recorded", |m| m.lifetime_paid == 0).await;
    assert_eq!(b.fund(&salon).await, paid - 5000, "the fund falls by exactly the refunds");
    let (status, _) = call(&b.app, &treasurer, "POST", &path, body(1, "third")).await;
    assert_eq!(status, 422);
    assert_eq!(stripe_refunds(), 2);
    let sql = "SELECT COUNT(*) FROM staff_invoice_refunds WHERE status = 'succeeded'";
    assert_eq!(count(b.db(), sql).await, 2);
    let sql = "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'stripe:%:refunded-to:%'";
    assert_eq!(count(b.db(), sql).await, 2);

    // The patron hears of each refund once.
    eventually(30, "the patron is told of both refunds", || async {
        b.templates().await.iter().filter(|t| *t == "membership_refunded").count() == 2
    })
    .await;
    let (code, out, err) = run_kanpa(&b.app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    b.app.stop().await;
}

/// The page's body and status for a signed-in staff member.
async fn console_page(app: &TestApp, path: &str, cookie: &str) -> (u16, String) {
    let res = app.client.get(app.url(path)).header("cookie", cookie).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn a_treasurer_refunds_a_patrons_invoice_from_the_console_once_when_the_button_is_pressed_twice(
    backend: TestBackend,
) {
    use crate::admin::{add_staff, csrf_in, post_as, sign_in_as};
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, _) = open_salon(b.db(), 10).await;
    let (id, _) = b.member(&salon, "inner", "hanako@example.jp").await;
    let (other_id, _) = b.member(&salon, "reader", "taro@example.jp").await;
    b.wait(&id, "paid", |m| m.lifetime_paid == 5000).await;
    b.wait(&other_id, "paid", |m| m.lifetime_paid == 500).await;
    let db = b.db();
    let invoice_of = |membership: String| async move {
        let sql = "SELECT i.stripe_invoice_id, i.stripe_charge_id FROM membership_invoices i
                   JOIN memberships m ON m.id = i.membership_id WHERE m.public_id = $1 AND i.status = 'paid'";
        let row: (String, String) = on_db!(db, p => sqlx::query_as(sql).bind(&membership).fetch_one(p).await.unwrap());
        row
    };
    let (invoice, charge) = invoice_of(id.clone()).await;
    let (other_invoice, _) = invoice_of(other_id.clone()).await;
    let org = OrgId(salon.org_id);
    add_staff(b.db(), "treasurer@example.jp", org, Role::Treasurer, None).await;
    add_staff(b.db(), "viewer@example.jp", org, Role::Viewer, None).await;
    let cookie = sign_in_as(&b.app, "treasurer@example.jp").await;

    // The salon's roster links to the patron; the patron's page lists the
    // paid invoice with what is left to refund.
    let (status, roster) = console_page(&b.app, &format!("/admin/o/clinic/salons/{}", salon.slug), &cookie).await;
    let page_path = format!("/admin/o/clinic/salons/{}/patrons/{id}", salon.slug);
    assert_eq!(status, 200);
    assert!(roster.contains(&format!(r#"href="{page_path}""#)), "{roster}");
    let (status, html) = console_page(&b.app, &page_path, &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains(&invoice) && html.contains("返金できる残り: ¥5,000"), "{html}");
    let (csrf, key) = (csrf_in(&html), hidden_field(&html, "key"));
    let refund_path = format!("{page_path}/refund");
    let stripe_refunds =
        || b.stripe.requests().iter().filter(|r| r.method == "POST" && r.path == "/v1/refunds").count();
    let requests = || count(b.db(), "SELECT COUNT(*) FROM staff_invoice_refunds");
    // Both patrons' payments, less Stripe's fees.
    let paid = 5000 - fee(5000) + 500 - fee(500);
    assert_eq!(b.fund(&salon).await, paid);

    // Not a number, more than was paid: refused in Japanese and English,
    // with nothing asked of Stripe.
    let form = |amount: &'static str, invoice: &str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("key".to_owned(), key.clone()),
            ("invoice".to_owned(), invoice.to_owned()),
            ("amount".to_owned(), amount.to_owned()),
        ]
    };
    let send = |path: String, fields: Vec<(String, String)>| {
        let cookie = cookie.clone();
        let app = &b.app;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let res = post_as(app, &path, &fields, Some(&cookie)).await;
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let (status, body) = send(refund_path.clone(), form("abc", &invoice)).await;
    assert_eq!(status, 422);
    assert!(body.contains("返金額") && body.contains("金額は半角数字で"), "{body}");
    let (status, body) = send(format!("{refund_path}?lang=en"), form("abc", &invoice)).await;
    assert_eq!(status, 422);
    assert!(body.contains("Amount to refund: Enter the amount in whole yen"), "{body}");
    let (status, body) = send(refund_path.clone(), form("5001", &invoice)).await;
    assert_eq!(status, 422);
    assert!(body.contains("未返金の額（¥5,000）を超えています"), "{body}");
    let (status, body) = send(format!("{refund_path}?lang=en"), form("5001", &invoice)).await;
    assert_eq!(status, 422);
    assert!(body.contains("more than was paid and not yet refunded (¥5,000)"), "{body}");
    // Another patron's invoice through this patron's page is not found.
    let (status, body) = send(refund_path.clone(), form("100", &other_invoice)).await;
    assert_eq!(status, 404);
    assert!(!body.contains("taro@example.jp"));
    // A viewer may not refund.
    let viewer = sign_in_as(&b.app, "viewer@example.jp").await;
    let (_, viewer_page) = console_page(&b.app, &page_path, &viewer).await;
    assert!(!viewer_page.contains("/refund\""), "a viewer gets no refund form");
    let viewer_fields = [
        ("csrf", csrf_in(&viewer_page)),
        ("key", "v".to_owned()),
        ("invoice", invoice.clone()),
        ("amount", "1".into()),
    ];
    let viewer_fields: Vec<(&str, &str)> = viewer_fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(post_as(&b.app, &refund_path, &viewer_fields, Some(&viewer)).await.status(), 403);
    assert_eq!((stripe_refunds(), requests().await), (0, 0));

    // A partial refund, the button pressed twice: Stripe is asked once.
    let (first, second) = tokio::join!(
        send(refund_path.clone(), form("2000", &invoice)),
        send(refund_path.clone(), form("2000", &invoice))
    );
    assert_eq!((first.0, second.0), (303, 303));
    assert_eq!((stripe_refunds(), requests().await), (1, 1), "one request reaches Stripe");
    let request = b.stripe.requests().into_iter().find(|r| r.path == "/v1/refunds").unwrap();
    assert!(request.idempotency_key.as_deref().is_some_and(|k| k.starts_with("staff-refund:invoice:")), "{request:?}");

    // Stripe reports it, twice: the fund and the patron follow once.
    let refunded = b.stripe.object(&charge).unwrap();
    assert_eq!(refunded["amount_refunded"], 2000);
    b.deliver("charge.refunded", refunded.clone()).await;
    b.deliver("charge.refunded", refunded).await;
    b.wait(&id, "the refund is recorded", |m| m.lifetime_paid == 3000).await;
    assert_eq!(b.fund(&salon).await, paid - 2000);
    let sql = "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'stripe:%:refunded-to:%'";
    assert_eq!(count(b.db(), sql).await, 1);
    eventually(30, "the patron is told of the refund", || async {
        crate::campaigns::subjects(&b.sink).iter().filter(|s| s.contains("月会費を返金しました")).count() == 1
    })
    .await;

    // The page shows the refund and who asked; what is left can be
    // refunded, not more.
    let (_, html) = console_page(&b.app, &page_path, &cookie).await;
    assert!(
        html.contains("返金できる残り: ¥3,000")
            && html.contains("Stripeが受付済み")
            && html.contains("treasurer@example.jp")
            && html.contains("¥3,000"),
        "{html}"
    );
    let key = hidden_field(&html, "key");
    let fields = [("csrf", csrf.as_str()), ("key", key.as_str()), ("invoice", invoice.as_str()), ("amount", "3001")];
    assert_eq!(post_as(&b.app, &refund_path, &fields, Some(&cookie)).await.status(), 422);
    assert_eq!(stripe_refunds(), 1);
    let (code, out, err) = run_kanpa(&b.app.database_url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    b.app.stop().await;
}

fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    html.split(&marker).nth(1).unwrap_or_else(|| panic!("no {name} in {html}")).split('"').next().unwrap().to_owned()
}

async fn an_organiser_posts_to_the_members_area_from_the_console_and_only_members_in_good_standing_see_it(
    backend: TestBackend,
) {
    use crate::admin::{add_staff, csrf_in, post_as, sign_in_as};
    let Some(b) = Billing::start(backend).await else { return };
    let (salon, _, _) = open_salon(b.db(), 10).await;
    let (id, _) = b.member(&salon, "reader", "hanako@example.jp").await;
    b.wait(&id, "paid", |m| m.status == M::Active).await;
    let org = OrgId(salon.org_id);
    add_staff(b.db(), "organiser@example.jp", org, Role::Organiser, None).await;
    add_staff(b.db(), "treasurer@example.jp", org, Role::Treasurer, None).await;
    let cookie = sign_in_as(&b.app, "organiser@example.jp").await;
    let salon_path = format!("/admin/o/clinic/salons/{}", salon.slug);
    let (status, html) = console_page(&b.app, &salon_path, &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("会費の支払いが確認できている会員"), "the page says who will see it");
    let csrf = csrf_in(&html);
    let posts_path = format!("{salon_path}/posts");
    let send = |path: String, fields: Vec<(&'static str, String)>, cookie: String| {
        let app = &b.app;
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let res = post_as(app, &path, &fields, Some(&cookie)).await;
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let post = |title: &str, link: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("title_ja", title.to_owned()),
            ("title_en", "April <script>recording</script>".to_owned()),
            ("body_ja", "録画はこちら。<img src=x onerror=alert(1)>".to_owned()),
            ("link_url", link.to_owned()),
        ]
    };

    // Bad input is refused in the reader's language and stores nothing.
    let (status, body) = send(posts_path.clone(), post("録画", "javascript:alert(1)"), cookie.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("リンク"), "the field is named: {body}");
    let (status, body) = send(format!("{posts_path}?lang=en"), post("", "https://example.jp/r"), cookie.clone()).await;
    assert_eq!(status, 422);
    assert!(body.contains("Title (Japanese)"), "{body}");
    let posts = || count(b.db(), "SELECT COUNT(*) FROM salon_member_posts");
    assert_eq!(posts().await, 0);
    // A treasurer may read the page but not post.
    let treasurer = sign_in_as(&b.app, "treasurer@example.jp").await;
    let (_, treasurer_page) = console_page(&b.app, &salon_path, &treasurer).await;
    assert!(!treasurer_page.contains("/posts\""), "no form for a treasurer");
    let fields = vec![("csrf", csrf_in(&treasurer_page)), ("title_ja", "x".to_owned())];
    assert_eq!(send(posts_path.clone(), fields, treasurer).await.0, 403);

    let (status, _) =
        send(posts_path.clone(), post("4月の<b>録画</b>", "https://example.jp/recording"), cookie.clone()).await;
    assert_eq!(status, 303);
    assert_eq!(posts().await, 1);

    // The member in good standing sees it, escaped, in either language.
    let member = sign_in(&b.app, "hanako@example.jp").await;
    let members_path = format!("/s/{}/members", salon.slug);
    let (status, html) = page(&b.app, &members_path, "ja", Some(&member)).await;
    assert_eq!(status, 200);
    assert!(html.contains("4月の&lt;b&gt;録画") || html.contains("4月の&#60;b&#62;録画"), "{html}");
    assert!(!html.contains("<b>録画") && !html.contains("<img src=x"), "HTML is escaped: {html}");
    assert!(html.contains(r#"href="https://example.jp/recording""#));
    let (_, html) = page(&b.app, &members_path, "en", Some(&member)).await;
    assert!(html.contains("recording") && !html.contains("<script>recording"), "{html}");
    // Someone signed in without a membership, and a stranger, do not.
    let stranger = sign_in(&b.app, "stranger@example.jp").await;
    let (_, html) = page(&b.app, &members_path, "ja", Some(&stranger)).await;
    assert!(!html.contains("録画"), "{html}");
    let (_, html) = page(&b.app, &members_path, "ja", None).await;
    assert!(!html.contains("録画"));

    // Taken down: confirmed, then gone for members too.
    let post_id = count(b.db(), "SELECT MAX(id) FROM salon_member_posts").await;
    let delete_path = format!("{salon_path}/posts/{post_id}/delete");
    let (status, _) = send(delete_path.clone(), vec![("csrf", csrf.clone())], cookie.clone()).await;
    assert_eq!(status, 422);
    assert_eq!(posts().await, 1);
    let confirmed = vec![("csrf", csrf.clone()), ("confirm", "yes".to_owned())];
    assert_eq!(send(delete_path.clone(), confirmed.clone(), cookie.clone()).await.0, 303);
    assert_eq!(posts().await, 0);
    assert_eq!(send(delete_path, confirmed, cookie).await.0, 404);
    let (_, html) = page(&b.app, &members_path, "ja", Some(&member)).await;
    assert!(!html.contains("録画"));
    b.app.stop().await;
}
