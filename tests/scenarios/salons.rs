//! The patron salon: organisers set up salons, tiers and the members' area
//! through the API; a tier's seat limit holds under concurrent claims; bad
//! input is refused with nothing stored.

use std::sync::Arc;

use kanpa_ledger::{Db, OrgId, on_db, store as ledger};
use kanpa_patrons::store::{self, SalonInput, TierInput};
use kanpa_patrons::{PatronError, Salon};
use kanpa_server::api_token::{self, Role};
use serde_json::{Value, json};

use crate::harness::{TestApp, TestBackend, TestDb, run_kanpa};
use crate::on_both_backends;

on_both_backends!(
    organisers_set_up_a_salon_with_tiers_and_posts_through_the_api,
    a_price_change_applies_to_new_patrons_and_a_full_tier_cannot_shrink_below_its_seats,
    a_tier_seat_limit_holds_under_concurrent_claims,
    bad_salon_input_is_refused_and_nothing_is_stored,
    an_operator_creates_and_opens_a_salon_from_a_file,
);

async fn org(db: &Db, slug: &str) -> OrgId {
    let mut tx = db.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, slug, "ドクターサロン").await.unwrap();
    tx.commit().await.unwrap();
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
