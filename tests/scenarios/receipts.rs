//! Receipts and the legal disclosure (issue 7, points 2 and 3): receipt
//! numbers per organisation shared by campaigns and salons, the qualified
//! invoice's fields, the reward/donation split, the legal page generated
//! from the seller settings, and going live refused until they are complete.

use std::collections::HashSet;

use kanpa_campaigns::store::{self as campaigns, CampaignInput, RewardInput, TeamInput};
use kanpa_campaigns::{CampaignStatus, PledgeStatus};
use kanpa_ledger::{Currency, Db, Money, OrgId, Timestamp, on_db, store as ledger};
use kanpa_patrons::store::{self as patrons, SalonInput, TierInput};
use kanpa_patrons::{MembershipStatus, SalonStatus};
use kanpa_payments::receipt::{self, LineKind, NewReceipt, PriceBasis, ReceiptLine, ReceiptSource, TaxRate};
use kanpa_payments::seller;
use kanpa_server::api_token::{self, Role};
use kanpa_testkit::webdriver::Browser;
use reqwest::header::{LOCATION, ORIGIN};
use serde_json::{Value, json};

use crate::harness::{TestApp, TestBackend, TestDb, eventually, exec_raw, run_kanpa};
use crate::on_both_backends;

on_both_backends!(
    receipt_numbers_are_unique_and_gapless_per_organisation_under_concurrency,
    a_salon_and_a_campaign_of_one_organisation_share_its_receipt_numbers_and_split_reward_from_donation,
    going_live_is_refused_until_the_legal_disclosure_is_complete_and_the_legal_page_shows_it,
    a_receipt_prints_on_one_a4_page_and_the_legal_page_fits_a_phone,
);

async fn new_org(db: &Db, slug: &str, name: &str) -> OrgId {
    let mut tx = db.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, slug, name).await.unwrap();
    tx.commit().await.unwrap();
    org.id
}

fn donation(yen: i64) -> ReceiptLine {
    ReceiptLine {
        kind: LineKind::Donation,
        description_ja: "寄付".into(),
        description_en: "Donation".into(),
        amount: Money::yen(yen),
        tax_rate: None,
    }
}

fn new_receipt(org: OrgId, charge: &str, yen: i64) -> NewReceipt {
    NewReceipt {
        org,
        source: ReceiptSource::stripe_charge(charge),
        payer_name: "架空 太郎".into(),
        payer_email: "taro@example.jp".into(),
        paid_at: Timestamp::now(),
        currency: Currency::Jpy,
        basis: PriceBasis::TaxInclusive,
        lines: vec![donation(yen)],
    }
}

async fn receipt_numbers_are_unique_and_gapless_per_organisation_under_concurrency(backend: TestBackend) {
    let Some(test) = TestDb::new(backend).await else { return };
    let db = test.db.clone();
    let drive = new_org(&db, "drive-org", "Drive org").await;
    let club = new_org(&db, "club-org", "Club org").await;
    // 30 payments of one organisation and 10 of another arrive at once; every
    // fifth one's transaction fails after taking its number; six of them are
    // delivered twice.
    let mut tasks = Vec::new();
    for i in 0..46 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let (org, charge) = match i {
                0..30 => (drive, format!("ch_drive_{i}")),
                30..40 => (club, format!("ch_club_{i}")),
                _ => (drive, format!("ch_drive_{}", i - 40)),
            };
            let mut tx = db.begin().await.unwrap();
            let issued = receipt::issue(&mut tx, &new_receipt(org, &charge, 1000 + i)).await.unwrap();
            if i < 30 && i % 5 == 4 {
                drop(tx); // rolled back: the number goes back to the sequence
                return None;
            }
            tx.commit().await.unwrap();
            Some((charge, issued.public_id, issued.number))
        }));
    }
    let mut by_charge: std::collections::HashMap<String, (String, i64)> = Default::default();
    for task in tasks {
        if let Some((charge, public_id, number)) = task.await.unwrap() {
            if let Some(seen) = by_charge.get(&charge) {
                assert_eq!(seen, &(public_id.clone(), number), "a payment delivered twice has one receipt");
            }
            by_charge.insert(charge, (public_id, number));
        }
    }
    // Rolled back payments (4, 9, …) that were not redelivered have no receipt.
    let committed_drive = (0..30).filter(|i| i % 5 != 4 || *i < 6).count();
    assert_eq!(receipt::numbers_of(&db, drive).await.unwrap(), (1..=committed_drive as i64).collect::<Vec<_>>());
    assert_eq!(receipt::numbers_of(&db, club).await.unwrap(), (1..=10).collect::<Vec<_>>());
    assert_eq!(receipt::numbers_of(&db, OrgId(i64::MAX)).await.unwrap(), Vec::<i64>::new());
    let links: HashSet<&String> = by_charge.values().map(|(id, _)| id).collect();
    assert_eq!(links.len(), by_charge.len(), "each receipt has its own link");
    // A treasurer's manual receipt takes the next number; three lines at ¥105
    // before 10 % tax carry ¥31 of tax, computed once for the rate.
    let line = ReceiptLine {
        kind: LineKind::Manual,
        description_ja: "会場参加費".into(),
        description_en: "Venue fee".into(),
        amount: Money::yen(105),
        tax_rate: Some(TaxRate::STANDARD),
    };
    let manual = NewReceipt {
        source: ReceiptSource::manual("manual:cash:2026-11-01:1"),
        basis: PriceBasis::TaxExclusive,
        lines: vec![line.clone(), line.clone(), line],
        ..new_receipt(club, "unused", 0)
    };
    let mut tx = db.begin().await.unwrap();
    let issued = receipt::issue(&mut tx, &manual).await.unwrap();
    tx.commit().await.unwrap();
    let read = receipt::by_public_id(&db, &issued.public_id).await.unwrap().unwrap();
    assert_eq!(read.number, 11);
    let by_rate = read.tax_by_rate().unwrap();
    assert_eq!((by_rate[0].subtotal, by_rate[0].tax), (Money::yen(315), Money::yen(31)));
    assert_eq!(read.total().unwrap(), Money::yen(346));
    // Issued receipts never change.
    assert!(exec_raw(&db, "UPDATE receipts SET payer_name = 'x'").await.is_err(), "receipts are immutable");
    assert!(exec_raw(&db, "DELETE FROM receipt_lines").await.is_err(), "receipt lines are immutable");
}

async fn call(app: &TestApp, token: &str, method: &str, path: &str, lang: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token).header("accept-language", lang);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn page(app: &TestApp, path: &str, lang: &str, cookie: Option<&str>) -> (u16, String) {
    let cookies = match cookie {
        Some(c) => format!("lang={lang}; {c}"),
        None => format!("lang={lang}"),
    };
    let res = app.client.get(app.url(path)).header("cookie", cookies).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn post_form(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    app.client.post(app.url(path)).header(ORIGIN, app.url("")).form(fields).send().await.unwrap()
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/').map(|i| rest[i..].to_owned()).unwrap_or_else(|| "/".into())
}

/// Signs in through the emailed link; returns the session cookie (`name=value`).
pub(crate) async fn sign_in(app: &TestApp, email: &str) -> String {
    let res = post_form(app, "/me/sign-in", &[("email", email)]).await;
    assert_eq!(res.status(), 200);
    let sql = "SELECT data FROM outbox_emails WHERE template = 'sign_in_link' AND to_address = $1 ORDER BY id DESC";
    let data: String = on_db!(&app.db, p => sqlx::query_scalar(sql).bind(email).fetch_one(p).await.unwrap());
    let data: Value = serde_json::from_str(&data).unwrap();
    let link = data["link"].as_str().unwrap();
    let res = app.get(&link[link.find("/me/sign-in/").unwrap()..]).await;
    assert_eq!(res.status(), 303);
    res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
}

fn rfc(t: Timestamp) -> String {
    t.as_offset().format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn campaign_input(slug: &str, model: &str) -> CampaignInput {
    let now = Timestamp::now();
    CampaignInput {
        slug: slug.into(),
        title_ja: "受付テスト".into(),
        title_en: "Receipt drive".into(),
        story_ja: "テスト".into(),
        currency: "JPY".into(),
        goal: 100_000,
        starts_at: rfc(now.saturating_add(time::Duration::days(-1))),
        deadline: rfc(now.saturating_add(time::Duration::days(10))),
        time_zone: "Asia/Tokyo".into(),
        funding_model: model.into(),
        pool_rule: "equal".into(),
        contact_email: "drive@example.jp".into(),
        ..CampaignInput::default()
    }
}

/// Pledges on a keep-it-all drive through the sandbox and waits until the
/// money is taken; returns the pledge's public id.
async fn pay_pledge(app: &TestApp, slug: &str, fields: &[(&str, &str)]) -> String {
    let res = post_form(app, &format!("/c/{slug}/pledge"), fields).await;
    assert_eq!(res.status(), 303);
    let checkout = path_of(res.headers()[LOCATION].to_str().unwrap());
    let res = post_form(app, &checkout, &[("action", "succeed")]).await;
    assert_eq!(res.status(), 303);
    let thanks = path_of(res.headers()[LOCATION].to_str().unwrap());
    let id = thanks.rsplit('/').next().unwrap().to_owned();
    eventually(15, "the pledge's payment is collected", || async {
        campaigns::pledge_by_public_id(&app.db, &id).await.unwrap().status == PledgeStatus::Collected
    })
    .await;
    id
}

async fn a_salon_and_a_campaign_of_one_organisation_share_its_receipt_numbers_and_split_reward_from_donation(
    backend: TestBackend,
) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    // The demo salon's year of membership payments: one receipt each, numbered 1, 2, 3…
    assert!(kanpa_patrons::demo::seed(&app.db, Timestamp::now()).await.unwrap());
    let org = ledger::organisation_by_slug(&app.db, kanpa_patrons::demo::DEMO_SALON_ORG).await.unwrap().unwrap();
    let salon_receipts = receipt::numbers_of(&app.db, org.id).await.unwrap();
    let n = salon_receipts.len() as i64;
    assert!(n > 100, "{n}");
    assert_eq!(salon_receipts, (1..=n).collect::<Vec<_>>());

    // The same organisation runs a keep-it-all drive with a ¥3,000 reward.
    let campaign =
        campaigns::create_campaign(&app.db, org.id, &campaign_input("club-drive", "keep_it_all")).await.unwrap();
    let team = TeamInput {
        slug: "crew".into(),
        name_ja: "運営".into(),
        name_en: "Crew".into(),
        goal: 100_000,
        ..Default::default()
    };
    campaigns::add_team(&app.db, campaign.id, &team).await.unwrap();
    let reward = RewardInput {
        title_ja: "記念タオル".into(),
        title_en: "Souvenir towel".into(),
        min_amount: 3_000,
        ..RewardInput::default()
    };
    let reward = campaigns::add_reward(&app.db, campaign.id, &reward).await.unwrap();
    campaigns::publish(&app.db, campaign.id).await.unwrap();

    let reward_id = reward.id.to_string();
    let fields = [
        ("reward", reward_id.as_str()),
        ("amount", "5000"),
        ("display_name", "架空 太郎"),
        ("email", "taro@example.jp"),
    ];
    let with_reward = pay_pledge(&app, "club-drive", &fields).await;
    let pledge = campaigns::pledge_by_public_id(&app.db, &with_reward).await.unwrap();
    let issued = receipt::by_stripe_charge(&app.db, pledge.charge_id.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(issued.number, n + 1, "the drive continues the salon's numbering");
    assert_eq!(issued.org, org.id);
    assert_eq!(
        issued.lines.iter().map(|l| (l.kind, l.amount, l.tax_rate)).collect::<Vec<_>>(),
        vec![
            (LineKind::Reward, Money::yen(3_000), Some(TaxRate::STANDARD)),
            (LineKind::Donation, Money::yen(2_000), None),
        ]
    );
    assert_eq!(issued.total().unwrap(), Money::yen(5_000));

    // The receipt email links the receipt page.
    let sql = "SELECT data FROM outbox_emails WHERE template = 'payment_receipt' AND to_address = $1";
    let data: String =
        on_db!(&app.db, p => sqlx::query_scalar(sql).bind("taro@example.jp").fetch_one(p).await.unwrap());
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["receipt_number"], issued.display_number());
    assert!(data["receipt_link"].as_str().unwrap().ends_with(&format!("/me/receipts/{}", issued.public_id)));

    // The page: a qualified invoice, the reward taxed once at 10 %, the donation not at all.
    let cookie = sign_in(&app, "taro@example.jp").await;
    let (status, me) = page(&app, "/me", "ja", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(me.contains(&format!("/me/pledges/{with_reward}/receipt")), "{me}");
    let (status, ja) = page(&app, &format!("/me/pledges/{with_reward}/receipt"), "ja", Some(&cookie)).await;
    assert_eq!(status, 200);
    for text in [
        "領収書(適格簡易請求書)",
        "T7123456789012",
        "オンラインサロン(デモ)",
        "架空 太郎",
        &issued.display_number(),
        "リターン「記念タオル」",
        "ご支援(寄付)",
        "不課税",
        "¥5,000",
        "¥2,000",
        // 3,000 × 10 / 110 = 272.7…, floored once for the rate.
        "10%対象 ¥3,000(うち消費税 ¥272)",
        "寄付(対価のない支援)は消費税の課税対象外です",
        &with_reward,
        pledge.charge_id.as_deref().unwrap(),
    ] {
        assert!(ja.contains(text), "{text} missing from the receipt: {ja}");
    }
    let (_, en) = page(&app, &format!("/me/receipts/{}", issued.public_id), "en", Some(&cookie)).await;
    for text in [
        "Receipt (qualified invoice)",
        "Registration number",
        "Reward: Souvenir towel (Receipt drive)",
        "Not taxable",
        "10% items ¥3,000 (of which consumption tax ¥272)",
    ] {
        assert!(en.contains(text), "{text} missing from the English receipt: {en}");
    }

    // Another party's receipt is not found, by either address.
    let other = sign_in(&app, "someone-else@example.jp").await;
    assert_eq!(page(&app, &format!("/me/receipts/{}", issued.public_id), "ja", Some(&other)).await.0, 404);
    assert_eq!(page(&app, &format!("/me/pledges/{with_reward}/receipt"), "ja", Some(&other)).await.0, 404);
    assert_eq!(page(&app, "/me/receipts/rc_unknown", "ja", Some(&cookie)).await.0, 404);

    // Without a registration number: a plain receipt, no tax breakdown.
    let owner = api_token::create(&app.db, org.id, Role::Owner, "receipts test").await.unwrap();
    let (status, body) =
        call(&app, &owner, "PATCH", "/api/v1/organisation/settings", "en", Some(json!({"registration_number": ""})))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["registration_number"], Value::Null);
    let fields = [("amount", "1200"), ("display_name", "架空 太郎"), ("email", "taro@example.jp")];
    let donation_only = pay_pledge(&app, "club-drive", &fields).await;
    let (_, plain) = page(&app, &format!("/me/pledges/{donation_only}/receipt"), "ja", Some(&cookie)).await;
    assert!(plain.contains(&format!("{:08}", n + 2)), "{plain}");
    assert!(plain.contains("<h1 id=\"receipt-title\">領収書</h1>"), "{plain}");
    assert!(plain.contains("適格請求書ではありません") && plain.contains("¥1,200"), "{plain}");
    for absent in ["適格簡易請求書", "T7123456789012", "うち消費税", "登録番号</span>", "税率ごとの内訳"]
    {
        assert!(!plain.contains(absent), "{absent} on a receipt without a registration number");
    }
    // The earlier receipt keeps the issuer's details of its day.
    let (_, again) = page(&app, &format!("/me/pledges/{with_reward}/receipt"), "ja", Some(&cookie)).await;
    assert!(again.contains("T7123456789012"));

    // Printable: the print stylesheet sizes the page to A4 and hides the chrome.
    let css = app.get("/assets/app.css").await.text().await.unwrap();
    assert!(css.contains("@media print") && css.contains("@page { size: A4"), "print stylesheet");
    assert!(ja.contains(r#"<p class="no-print">"#));
    app.stop().await;
}

async fn going_live_is_refused_until_the_legal_disclosure_is_complete_and_the_legal_page_shows_it(
    backend: TestBackend,
) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let org = new_org(&app.db, "bare", "何もない会").await;
    let owner = api_token::create(&app.db, org, Role::Owner, "owner").await.unwrap();
    let organiser = api_token::create(&app.db, org, Role::Organiser, "organiser").await.unwrap();
    let campaign =
        campaigns::create_campaign(&app.db, org, &campaign_input("bare-drive", "keep_it_all")).await.unwrap();
    let salon = SalonInput {
        slug: "bare-salon".into(),
        name_ja: "何もないサロン".into(),
        currency: "JPY".into(),
        contact_email: "salon@example.jp".into(),
        ..SalonInput::default()
    };
    let salon = patrons::create_salon(&app.db, org, &salon).await.unwrap();
    let tier =
        TierInput {
            slug: "basic".into(), name_ja: "ベーシック".into(), monthly_price: 1000, ..Default::default()
        };
    patrons::add_tier(&app.db, salon.id, &tier).await.unwrap();

    // Nothing set: the API, the CLI and the store refuse, naming the fields.
    let (status, body) = call(&app, &organiser, "POST", "/api/v1/campaigns/bare-drive/publish", "ja", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "seller_details_incomplete");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("特定商取引法") && message.contains("販売事業者") && message.contains("所在地"),
        "{message}"
    );
    let (status, body) = call(&app, &organiser, "POST", "/api/v1/salons/bare-salon/open", "en", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "seller_details_incomplete");
    assert!(body["error"]["message"].as_str().unwrap().contains("Address (address)"), "{body}");
    let (code, _, stderr) = run_kanpa(&app.database_url, &["campaign", "publish", "bare-drive"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("legal disclosure lacks") && stderr.contains("contact_phone"), "{stderr}");
    assert_eq!(campaigns::campaign_by_id(&app.db, campaign.id).await.unwrap().status, CampaignStatus::Draft);
    assert_eq!(patrons::salon_by_slug(&app.db, "bare-salon").await.unwrap().status, SalonStatus::Draft);
    let (status, legal) = page(&app, "/o/bare/legal", "ja", None).await;
    assert_eq!(status, 200);
    assert!(legal.contains("特定商取引法に基づく表記") && legal.contains("(未設定)"), "{legal}");

    // Only an owner changes the settings; a wrong field changes nothing.
    let change = json!({"seller_name": "架空商店"});
    let (status, _) = call(&app, &organiser, "PATCH", "/api/v1/organisation/settings", "en", Some(change)).await;
    assert_eq!(status, 403);
    let bad = json!({"seller_name": "架空商店", "registration_number": "T6123456789012"});
    let (status, body) = call(&app, &owner, "PATCH", "/api/v1/organisation/settings", "ja", Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "registration_number");
    assert_eq!(body["error"]["code"], "registration_number_check_digit");
    assert!(body["error"]["message"].as_str().unwrap().contains("検査用数字"), "{body}");
    let (status, body) =
        call(&app, &owner, "PATCH", "/api/v1/organisation/settings", "en", Some(json!({"shoe_size": 1}))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(seller::settings(&app.db, org).await.unwrap(), seller::SellerSettings::default());

    // The CLI sets some; going live still names what is left.
    let (code, stdout, stderr) = run_kanpa(
        &app.database_url,
        &[
            "org",
            "settings",
            "--org",
            "bare",
            "--seller-name",
            "架空商店",
            "--representative",
            "架空 次郎",
            "--address",
            "〒100-0000 東京都架空区1-1",
            "--contact-email",
            "shop@example.jp",
            "--contact-phone",
            "03-0000-0001",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("missing\textra_costs_ja, delivery_ja, cancellation_ja"), "{stdout}");
    let (code, _, stderr) =
        run_kanpa(&app.database_url, &["org", "settings", "--org", "bare", "--contact-email", "nope"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("is not an email address"), "{stderr}");
    let (status, body) = call(&app, &organiser, "POST", "/api/v1/campaigns/bare-drive/publish", "en", None).await;
    assert_eq!(status, 409);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cancellation_ja") && !message.contains("(address)"), "{message}");

    let rest = json!({
        "extra_costs_ja": "送料は無料です。", "delivery_ja": "お支払いから2週間以内に発送します。",
        "delivery_en": "Shipped within two weeks of payment.",
        "cancellation_ja": "お支払い後のキャンセルはできません。", "registration_number": "T8000000000001",
        "tax_rounding": "round"
    });
    let (status, body) = call(&app, &owner, "PATCH", "/api/v1/organisation/settings", "en", Some(rest)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["missing"], json!([]));
    assert_eq!(body["data"]["tax_rounding"], "round");
    let (status, _) = call(&app, &organiser, "POST", "/api/v1/campaigns/bare-drive/publish", "en", None).await;
    assert_eq!(status, 200);
    let (status, _) = call(&app, &organiser, "POST", "/api/v1/salons/bare-salon/open", "en", None).await;
    assert_eq!(status, 200);

    // The legal page, generated from the settings, in both languages.
    let (_, ja) = page(&app, "/o/bare/legal", "ja", None).await;
    for text in [
        "販売事業者",
        "架空商店",
        "架空 次郎",
        "東京都架空区1-1",
        "03-0000-0001",
        "shop@example.jp",
        "送料は無料です。",
        "お支払いから2週間以内に発送します。",
        "お支払い後のキャンセルはできません。",
        "T8000000000001",
        "支払方法",
        "支払時期",
        "定期課金",
        "販売価格",
    ] {
        assert!(ja.contains(text), "{text} missing from the legal page: {ja}");
    }
    assert!(!ja.contains("(未設定)"));
    let (_, en) = page(&app, "/o/bare/legal", "en", None).await;
    for text in
        ["Legal disclosure", "Seller", "Shipped within two weeks of payment.", "送料は無料です。", "Subscription terms"]
    {
        assert!(en.contains(text), "{text} missing from the English legal page: {en}");
    }
    assert_eq!(page(&app, "/o/nobody/legal", "ja", None).await.0, 404);

    // Linked from the campaign page, the pledge form and the salon's join form.
    for path in ["/c/bare-drive", "/c/bare-drive/pledge", "/s/bare-salon"] {
        let (status, html) = page(&app, path, "ja", None).await;
        assert_eq!(status, 200, "{path}");
        assert!(html.contains(r#"href="/o/bare/legal""#), "{path} does not link the legal page");
    }
    app.stop().await;
}

/// `<target dir>/test-artifacts/receipts/<backend>/`.
fn artifacts(backend: TestBackend) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe.ancestors().nth(3).expect("the target directory").to_path_buf();
    let backend = match backend {
        TestBackend::Sqlite => "sqlite",
        TestBackend::Postgres => "postgres",
    };
    target.join("test-artifacts").join("receipts").join(backend)
}

async fn a_receipt_prints_on_one_a4_page_and_the_legal_page_fits_a_phone(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let Some(browser) = Browser::start().await else { return };
    let Some(app) = TestApp::spawn(backend).await else {
        browser.quit().await;
        return;
    };
    assert!(kanpa_patrons::demo::seed(&app.db, Timestamp::now()).await.unwrap());
    let salon = patrons::salon_by_slug(&app.db, kanpa_patrons::demo::DEMO_SALON).await.unwrap();
    let members = patrons::memberships_of_salon(&app.db, salon.id).await.unwrap();
    let patron =
        members.iter().filter(|m| m.status == MembershipStatus::Active).max_by_key(|m| m.lifetime_paid).unwrap();
    let invoice = &patrons::paid_invoices(&app.db, patron.id).await.unwrap()[0];
    let cookie = sign_in(&app, &patron.email).await;
    let (name, value) = cookie.split_once('=').unwrap();
    let dir = artifacts(backend);

    browser.goto(&app.url("/?lang=ja")).await;
    browser.add_cookie(name, value).await;
    browser
        .goto(&app.url(&format!("/me/memberships/{}/receipts/{}", patron.public_id, invoice.stripe_invoice_id)))
        .await;
    let html = browser.source().await;
    assert!(html.contains("領収書(適格簡易請求書)") && html.contains("T7123456789012"), "{html}");
    // As printed: A4 is 210 mm, about 794 CSS pixels, wide.
    browser.emulate_media("print").await;
    assert!(browser.layout_width(794).await <= 794.0, "the printed receipt is no wider than A4");
    browser.screenshot(794, &dir.join("receipt-a4-print.png")).await;
    browser.emulate_media("screen").await;
    assert_eq!(browser.print_to_pdf(&dir.join("receipt.pdf")).await, 1, "the receipt prints on one page");
    browser.screenshot(390, &dir.join("receipt-phone.png")).await;

    browser.goto(&app.url(&format!("/o/{}/legal", kanpa_patrons::demo::DEMO_SALON_ORG))).await;
    let html = browser.source().await;
    assert!(html.contains("特定商取引法に基づく表記") && html.contains("架空 一郎"), "{html}");
    assert!(browser.layout_width(390).await <= 390.0, "the legal page does not scroll sideways on a phone");
    browser.screenshot(390, &dir.join("legal-phone.png")).await;
    println!("screenshots saved in {}", dir.display());
    browser.quit().await;
    app.stop().await;
}
