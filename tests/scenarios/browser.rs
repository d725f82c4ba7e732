//! The pledge flow clicked through in headless Chromium with the sandbox
//! gateway, as a supporter on a phone would, with full-page screenshots
//! saved as test artifacts under `<cargo target dir>/test-artifacts/browser/`.
//!
//! Skipped, with a notice, when Chromium or chromedriver is not installed
//! (CI installs them and sets `KANPA_REQUIRE_BROWSER=1`).

use std::path::PathBuf;

use kanpa_campaigns::demo::{self, DEMO_CAMPAIGN};
use kanpa_campaigns::{PledgeStatus, store};
use kanpa_ledger::Timestamp;
use kanpa_testkit::webdriver::Browser;

use crate::harness::{TestApp, TestBackend, eventually};
use crate::on_both_backends;

on_both_backends!(
    a_supporter_pledges_on_a_phone_through_the_sandbox_checkout,
    a_treasurer_signs_in_on_a_phone_records_cash_and_reads_the_ledger,
    a_treasurer_exports_and_reconciles_the_demo_books,
    an_owner_sets_up_the_salon_and_the_campaign_and_refunds_a_patron_on_a_phone,
    the_first_owner_invites_a_team_treasurer_who_records_cash_and_refunds_a_pledge,
);

const PHONE: u32 = 390;
const DESKTOP: u32 = 1280;

/// `<target dir>/test-artifacts/browser/<backend>/`: the test binary lives
/// in `<target dir>/<profile>/deps/`.
fn artifacts(backend: TestBackend) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe.ancestors().nth(3).expect("the target directory").to_path_buf();
    let backend = match backend {
        TestBackend::Sqlite => "sqlite",
        TestBackend::Postgres => "postgres",
    };
    target.join("test-artifacts").join("browser").join(backend)
}

async fn screenshots(browser: &Browser, dir: &std::path::Path, name: &str) {
    browser.screenshot(PHONE, &dir.join(format!("{name}-phone.png"))).await;
    browser.screenshot(DESKTOP, &dir.join(format!("{name}-desktop.png"))).await;
}

async fn a_supporter_pledges_on_a_phone_through_the_sandbox_checkout(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let Some(browser) = Browser::start().await else { return };
    // The browser follows absolute redirects, so server.base_url must be
    // where the server really listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mail = tempfile::tempdir().unwrap();
    let mail_dir = mail.path().display().to_string();
    let Some(app) = TestApp::spawn_with(backend, Default::default(), |config| {
        config.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
        config.server.base_url = format!("http://127.0.0.1:{port}");
        config.mail.file_dir = mail_dir;
    })
    .await
    else {
        browser.quit().await;
        return;
    };
    demo::seed(&app.db, Timestamp::now()).await.unwrap();
    let drive = store::campaign_by_slug(&app.db, DEMO_CAMPAIGN).await.unwrap();
    let nurses = store::teams(&app.db, drive.id).await.unwrap().into_iter().find(|t| t.slug == "nurses").unwrap();
    let reward = store::rewards(&app.db, drive.id).await.unwrap().into_iter().find(|r| r.min_amount == 3000).unwrap();
    let dir = artifacts(backend);

    // The campaign page.
    browser.goto(&app.url(&format!("/c/{DEMO_CAMPAIGN}"))).await;
    let page = browser.source().await;
    assert!(page.contains("7職種 免許更新応援キャンペーン 2026") && page.contains("看護師"), "{page}");
    screenshots(&browser, &dir, "1-campaign").await;

    // "Support this team" opens the form with the team chosen.
    browser.click(&format!(r#"a[href="/c/{DEMO_CAMPAIGN}/pledge?team={}"]"#, nurses.id)).await;
    browser.wait_for_url("/pledge?team=").await;
    assert!(browser.is_selected(&format!(r#"select[name="team"] option[value="{}"]"#, nurses.id)).await);
    browser.click(&format!(r#"input[name="reward"][value="{}"]"#, reward.id)).await;
    browser.fill("#amount", "5000").await;
    browser.fill("#display_name", "ブラウザ花子").await;
    browser.fill("#message", "スマホから応援しています").await;
    browser.fill("#email", "browser@example.jp").await;
    screenshots(&browser, &dir, "2-pledge-form").await;
    browser.click(r#"form.pledge button[type="submit"]"#).await;

    // The sandbox checkout: a test, saving a card for the all-or-nothing drive.
    browser.wait_for_url("/sandbox/checkout/cs_sandbox_").await;
    let page = browser.source().await;
    assert!(page.contains("テスト用の決済画面 — 実際の請求は発生しません") && page.contains("¥5,000"));
    screenshots(&browser, &dir, "3-sandbox-checkout").await;
    browser.click("#succeed").await;

    // The thank-you page: confirming, then committed once the inbox job ran.
    let thanks = browser.wait_for_url(&format!("/c/{DEMO_CAMPAIGN}/thanks/")).await;
    let public_id = thanks.rsplit('/').next().unwrap().to_owned();
    eventually(10, "the pledge is committed", || async {
        store::pledge_by_public_id(&app.db, &public_id).await.unwrap().status == PledgeStatus::Committed
    })
    .await;
    // The page refreshes itself while the payment is being confirmed.
    browser.wait_for_text("カード情報を登録しました").await;
    screenshots(&browser, &dir, "4-thank-you").await;

    let pledge = store::pledge_by_public_id(&app.db, &public_id).await.unwrap();
    assert_eq!((pledge.amount, pledge.team_id, pledge.reward_id), (5000, Some(nurses.id), Some(reward.id)));
    assert_eq!(pledge.display_name, "ブラウザ花子");
    let after = store::campaign_by_slug(&app.db, DEMO_CAMPAIGN).await.unwrap();
    assert_eq!(after.raised(), drive.raised() + 5000);

    // The wall shows the new supporter.
    // (The page may be served from the one-second page cache: reload.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        browser.goto(&app.url(&format!("/c/{DEMO_CAMPAIGN}"))).await;
        if browser.source().await.contains("スマホから応援しています") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new supporter never appeared on the wall");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    println!("screenshots saved in {}", dir.display());
    browser.quit().await;
    app.stop().await;
}

async fn a_treasurer_signs_in_on_a_phone_records_cash_and_reads_the_ledger(backend: TestBackend) {
    use kanpa_server::staff::{self, Role};
    kanpa_server::install_crypto_provider();
    let Some(browser) = Browser::start().await else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(app) = TestApp::spawn_with(backend, Default::default(), |config| {
        config.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
        config.server.base_url = format!("http://127.0.0.1:{port}");
    })
    .await
    else {
        browser.quit().await;
        return;
    };
    demo::seed(&app.db, Timestamp::now()).await.unwrap();
    let org = kanpa_ledger::store::organisation_by_slug(&app.db, demo::DEMO_ORG).await.unwrap().unwrap();
    let drive = store::campaign_by_slug(&app.db, DEMO_CAMPAIGN).await.unwrap();
    let nurses = store::teams(&app.db, drive.id).await.unwrap().into_iter().find(|t| t.slug == "nurses").unwrap();
    let mut tx = app.db.begin().await.unwrap();
    let user = staff::store::ensure_user(&mut tx, "kaikei@example.jp").await.unwrap();
    staff::store::set_role(&mut tx, user, org.id, Role::Treasurer, None, None).await.unwrap();
    tx.commit().await.unwrap();
    let hash = staff::hash_password("会計係のながいパスワード").unwrap();
    staff::store::change_password(&app.db, user, &hash).await.unwrap();
    let dir = artifacts(backend);

    browser.goto(&app.url("/admin")).await;
    browser.wait_for_url("/admin/sign-in").await;
    browser.fill("#email", "kaikei@example.jp").await;
    browser.fill("#password", "会計係のながいパスワード").await;
    browser.screenshot(PHONE, &dir.join("admin-1-sign-in-phone.png")).await;
    browser.click(r#"form[action="/admin/sign-in"] button[type="submit"]"#).await;
    browser.wait_for_url(&format!("/admin/o/{}", demo::DEMO_ORG)).await;
    let page = browser.source().await;
    assert!(page.contains("基金") && page.contains("看護師") && page.contains("現金"), "{page}");
    browser.screenshot(PHONE, &dir.join("admin-2-dashboard-phone.png")).await;

    // Cash collected at the meet-up, into the nurses' fund.
    browser.click(&format!(r#"a[href="/admin/o/{}/entries/new"]"#, demo::DEMO_ORG)).await;
    browser.wait_for_url("/entries/new").await;
    browser.execute(&format!("document.querySelector('#fund').value = '{}'", nurses.account.0)).await;
    browser.fill("#amount", "12000").await;
    browser.fill("#party", "1月の勉強会 参加費").await;
    browser.screenshot(PHONE, &dir.join("admin-3-record-cash-phone.png")).await;
    browser.click(r#"form button.primary"#).await;
    browser.wait_for_url("/journal/").await;
    browser.wait_for_text("1月の勉強会 参加費").await;
    browser.screenshot(PHONE, &dir.join("admin-4-entry-phone.png")).await;
    assert_eq!(kanpa_ledger::store::balance(&app.db, nurses.account).await.unwrap().amount(), -12_000);

    browser.goto(&app.url(&format!("/admin/o/{}/journal", demo::DEMO_ORG))).await;
    let page = browser.source().await;
    assert!(page.contains("¥12,000") && page.contains("kaikei@example.jp"), "{page}");
    browser.screenshot(PHONE, &dir.join("admin-5-journal-phone.png")).await;
    browser.screenshot(DESKTOP, &dir.join("admin-5-journal-desktop.png")).await;

    // The campaign with its chart of money raised per day, by team.
    browser.goto(&app.url(&format!("/admin/o/{}/campaigns/{DEMO_CAMPAIGN}", demo::DEMO_ORG))).await;
    let page = browser.source().await;
    assert!(page.contains("<svg") && page.contains("看護師"), "{page}");
    browser.screenshot(PHONE, &dir.join("admin-6-campaign-chart-phone.png")).await;

    // The pledges, searched by a supporter's name.
    browser.goto(&app.url(&format!("/admin/o/{}/pledges?q=さくら", demo::DEMO_ORG))).await;
    let page = browser.source().await;
    assert!(page.contains("さくら"), "{page}");
    browser.screenshot(PHONE, &dir.join("admin-7-pledges-phone.png")).await;
    println!("screenshots saved in {}", dir.display());
    browser.quit().await;
    app.stop().await;
}

async fn a_treasurer_exports_and_reconciles_the_demo_books(backend: TestBackend) {
    use kanpa_server::staff::{self, Role};
    kanpa_server::install_crypto_provider();
    let Some(browser) = Browser::start().await else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(app) = TestApp::spawn_with(backend, Default::default(), |config| {
        config.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
        config.server.base_url = format!("http://127.0.0.1:{port}");
    })
    .await
    else {
        browser.quit().await;
        return;
    };
    demo::seed(&app.db, Timestamp::now()).await.unwrap();
    kanpa_patrons::demo::seed(&app.db, Timestamp::now()).await.unwrap();
    let slug = kanpa_patrons::demo::DEMO_SALON_ORG;
    let org = kanpa_ledger::store::organisation_by_slug(&app.db, slug).await.unwrap().unwrap();
    let mut tx = app.db.begin().await.unwrap();
    let user = staff::store::ensure_user(&mut tx, "salon-kaikei@example.jp").await.unwrap();
    staff::store::set_role(&mut tx, user, org.id, Role::Treasurer, None, None).await.unwrap();
    tx.commit().await.unwrap();
    let hash = staff::hash_password("会計係のながいパスワード").unwrap();
    staff::store::change_password(&app.db, user, &hash).await.unwrap();
    let dir = artifacts(backend);

    browser.goto(&app.url("/admin/sign-in")).await;
    browser.fill("#email", "salon-kaikei@example.jp").await;
    browser.fill("#password", "会計係のながいパスワード").await;
    browser.click(r#"form[action="/admin/sign-in"] button[type="submit"]"#).await;
    browser.wait_for_url(&format!("/admin/o/{slug}")).await;

    // The exports form, from the menu; a reversed period is explained.
    browser.click(&format!(r#"a[href="/admin/o/{slug}/exports"]"#)).await;
    browser.wait_for_url("/exports").await;
    let page = browser.source().await;
    assert!(page.contains("弥生会計 仕訳インポート") && page.contains("ダウンロード"), "{page}");
    screenshots(&browser, &dir, "admin-8-exports").await;
    browser
        .execute(
            "document.querySelector('#from').value = '2026-11-30'; document.querySelector('#to').value = '2026-11-01'",
        )
        .await;
    browser.click(r#"form button.primary"#).await;
    browser.wait_for_text("期間の終わりが始まりより前です").await;
    browser.screenshot(PHONE, &dir.join("admin-9-exports-error-phone.png")).await;

    // Reconciliation against the sandbox: run now, nothing unmatched, the
    // demo's payouts in transit with their forms.
    browser.click(&format!(r#"a[href="/admin/o/{slug}/reconciliation"]"#)).await;
    browser.wait_for_url("/reconciliation").await;
    browser.click(&format!(r#"form[action="/admin/o/{slug}/reconciliation/run"] button"#)).await;
    browser.wait_for_text("照合しました").await;
    let page = browser.source().await;
    assert!(page.contains("不一致はありません") && page.contains("1円単位で一致しています"), "{page}");
    assert!(page.contains("po_sandbox_"), "the demo's payouts are in transit: {page}");
    screenshots(&browser, &dir, "admin-10-reconciliation").await;

    // A planted difference is shown with its amounts.
    let stripe =
        kanpa_ledger::store::accounts_with_code(&app.db, Some(org.id), "stripe-balance:JPY").await.unwrap()[0].id;
    let salon = kanpa_patrons::store::salons_of(&app.db, org.id).await.unwrap().remove(0);
    let header = kanpa_ledger::EntryHeader {
        org: org.id,
        key: kanpa_ledger::IdempotencyKey::parse("stripe:ch_sandbox_nowhere0000000000000:gross").unwrap(),
        occurred_at: Timestamp::now(),
        description: "planted".into(),
        source: None,
        recorded_by: None,
    };
    let entry =
        kanpa_ledger::NewEntry::transfer(header, stripe, salon.fund_account, kanpa_ledger::Money::yen(1_200)).unwrap();
    kanpa_ledger::store::post_entry(&app.db, &entry).await.unwrap();
    browser.click(&format!(r#"form[action="/admin/o/{slug}/reconciliation/run"] button"#)).await;
    browser.wait_for_text("ch_sandbox_nowhere").await;
    browser.screenshot(PHONE, &dir.join("admin-11-reconciliation-unmatched-phone.png")).await;
    println!("screenshots saved in {}", dir.display());
    browser.quit().await;
    app.stop().await;
}

/// The console pages added for setting up and correcting: a campaign's
/// teams and rewards (edit, retire, end), a salon's tiers and members'
/// posts, a patron's invoices with the refund form, and the invitation
/// form; each must fit a phone without scrolling sideways.
async fn an_owner_sets_up_the_salon_and_the_campaign_and_refunds_a_patron_on_a_phone(backend: TestBackend) {
    use kanpa_patrons::demo::{DEMO_SALON, DEMO_SALON_ORG};
    use kanpa_server::staff::{self, Role};
    kanpa_server::install_crypto_provider();
    let Some(browser) = Browser::start().await else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(app) = TestApp::spawn_with(backend, Default::default(), |config| {
        config.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
        config.server.base_url = format!("http://127.0.0.1:{port}");
    })
    .await
    else {
        browser.quit().await;
        return;
    };
    demo::seed(&app.db, Timestamp::now()).await.unwrap();
    kanpa_patrons::demo::seed(&app.db, Timestamp::now()).await.unwrap();
    let drive_org = kanpa_ledger::store::organisation_by_slug(&app.db, demo::DEMO_ORG).await.unwrap().unwrap();
    let salon_org = kanpa_ledger::store::organisation_by_slug(&app.db, DEMO_SALON_ORG).await.unwrap().unwrap();
    let mut tx = app.db.begin().await.unwrap();
    let user = staff::store::ensure_user(&mut tx, "daihyo@example.jp").await.unwrap();
    staff::store::set_role(&mut tx, user, drive_org.id, Role::Owner, None, None).await.unwrap();
    staff::store::set_role(&mut tx, user, salon_org.id, Role::Owner, None, None).await.unwrap();
    tx.commit().await.unwrap();
    let hash = staff::hash_password("代表者のながいパスワード").unwrap();
    staff::store::change_password(&app.db, user, &hash).await.unwrap();
    let dir = artifacts(backend);
    let fits =
        |width: f64, what: &str| assert!(width <= f64::from(PHONE), "{what} scrolls sideways on a phone: {width}");

    browser.goto(&app.url("/admin/sign-in")).await;
    browser.fill("#email", "daihyo@example.jp").await;
    browser.fill("#password", "代表者のながいパスワード").await;
    browser.click(r#"form[action="/admin/sign-in"] button[type="submit"]"#).await;
    // Two organisations: the console lists both.
    browser.wait_for_text(DEMO_SALON_ORG).await;

    // The campaign: teams and rewards with their edit forms opened, and
    // the forms that end it.
    browser.goto(&app.url(&format!("/admin/o/{}/campaigns/{DEMO_CAMPAIGN}", demo::DEMO_ORG))).await;
    browser.execute("document.querySelectorAll('details').forEach(d => d.open = true)").await;
    let page = browser.source().await;
    assert!(page.contains("引き上げのみ") && page.contains("キャンペーンを中止する"), "{page}");
    fits(browser.layout_width(PHONE).await, "the campaign page");
    browser.screenshot(PHONE, &dir.join("admin-12-campaign-setup-phone.png")).await;

    // The salon: tiers, then a post to the members' area.
    let salon_path = format!("/admin/o/{DEMO_SALON_ORG}/salons/{DEMO_SALON}");
    browser.goto(&app.url(&salon_path)).await;
    browser.fill("#post-title-ja", "12月の勉強会のご案内").await;
    browser.fill("#post-body-ja", "オンラインで開催します。").await;
    browser.fill("#post-link", "https://example.jp/salon/december").await;
    browser.click(&format!(r#"form[action="{salon_path}/posts"] button[type="submit"]"#)).await;
    browser.wait_for_text("12月の勉強会のご案内").await;
    browser.execute("document.querySelectorAll('details').forEach(d => d.open = true)").await;
    fits(browser.layout_width(PHONE).await, "the salon page");
    browser.screenshot(PHONE, &dir.join("admin-13-salon-tiers-posts-phone.png")).await;

    // A patron's paid invoices, a partial refund typed in.
    browser.click(&format!(r#"a[href^="{salon_path}/patrons/"]"#)).await;
    browser.wait_for_url("/patrons/").await;
    let page = browser.source().await;
    assert!(page.contains("支払い済みの請求") && page.contains("返金できる残り"), "{page}");
    browser.fill("#amount-1", "100").await;
    fits(browser.layout_width(PHONE).await, "the patron page");
    browser.screenshot(PHONE, &dir.join("admin-14-patron-refund-phone.png")).await;

    // Inviting a treasurer.
    browser.goto(&app.url(&format!("/admin/o/{}/staff", demo::DEMO_ORG))).await;
    browser.fill("#email", "kaikei@example.jp").await;
    let page = browser.source().await;
    assert!(page.contains("招待メールの言語"), "{page}");
    fits(browser.layout_width(PHONE).await, "the staff page");
    browser.screenshot(PHONE, &dir.join("admin-15-invite-phone.png")).await;
    println!("screenshots saved in {}", dir.display());
    browser.quit().await;
    app.stop().await;
}

/// Issue 6's "done when", in one browser: the first owner, made with
/// `kanpa user add`, signs in through the printed link and invites a
/// treasurer limited to one team; the treasurer, through the invitation
/// email, sees only that team's fund, records cash collected at a meet-up
/// and refunds a supporter's card pledge in full.
async fn the_first_owner_invites_a_team_treasurer_who_records_cash_and_refunds_a_pledge(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let Some(browser) = Browser::start().await else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base_url = format!("http://127.0.0.1:{port}");
    let Some(app) = TestApp::spawn_with(backend, Default::default(), |config| {
        config.server.bind = format!("127.0.0.1:{port}").parse().unwrap();
        config.server.base_url = base_url.clone();
    })
    .await
    else {
        browser.quit().await;
        return;
    };
    demo::seed(&app.db, Timestamp::now()).await.unwrap();
    let org = kanpa_ledger::store::organisation_by_slug(&app.db, demo::DEMO_ORG).await.unwrap().unwrap();
    // A keep-it-all meet-up of the same organisation, with one team, so a
    // card payment is taken at once.
    let now = Timestamp::now();
    let rfc = |t: Timestamp| t.as_offset().format(&time::format_description::well_known::Rfc3339).unwrap();
    let input = store::CampaignInput {
        slug: "spring-meetup".into(),
        title_ja: "春の勉強会".into(),
        title_en: "Spring meet-up".into(),
        story_ja: "会場費を集めます。".into(),
        currency: "JPY".into(),
        goal: 100_000,
        starts_at: rfc(now.saturating_add(time::Duration::days(-1))),
        deadline: rfc(now.saturating_add(time::Duration::days(10))),
        time_zone: "Asia/Tokyo".into(),
        funding_model: "keep_it_all".into(),
        pool_rule: "equal".into(),
        contact_email: "spring@example.jp".into(),
        ..store::CampaignInput::default()
    };
    let meetup = store::create_campaign(&app.db, org.id, &input).await.unwrap();
    let team_input = store::TeamInput {
        slug: "nurses-spring".into(),
        name_ja: "看護師・春の会".into(),
        name_en: "Nurses, spring".into(),
        goal: 50_000,
        position: Some(1),
        pool_weight: 1,
    };
    let team = store::add_team(&app.db, meetup.id, &team_input).await.unwrap();
    store::publish(&app.db, meetup.id).await.unwrap();
    // A supporter pays ¥5,000 by card for that team.
    let res = crate::admin::post_as(
        &app,
        "/c/spring-meetup/pledge",
        &[
            ("amount", "5000"),
            ("team", &team.id.to_string()),
            ("display_name", "春の支援者"),
            ("email", "haru@example.jp"),
        ],
        None,
    )
    .await;
    assert_eq!(res.status(), 303);
    let checkout = res.headers()["location"].to_str().unwrap().to_owned();
    let checkout = checkout.split_once(&base_url).map(|(_, p)| p.to_owned()).unwrap_or(checkout);
    assert_eq!(crate::admin::post_as(&app, &checkout, &[("action", "succeed")], None).await.status(), 303);
    let paid = || async {
        store::pledges_of_campaign(&app.db, meetup.id).await.unwrap().into_iter().find(|p| p.email == "haru@example.jp")
    };
    eventually(30, "the card payment is collected", || async {
        paid().await.is_some_and(|p| p.status == PledgeStatus::Collected)
    })
    .await;
    let pledge = paid().await.unwrap();
    let dir = artifacts(backend);

    // The first owner, from the command line.
    let (code, out, err) = crate::harness::run_kanpa_with(
        &app.database_url,
        &[("KANPA__SERVER__BASE_URL", &base_url)],
        &["user", "add", "--org", demo::DEMO_ORG, "--email", "hajime@example.jp", "--role", "owner"],
    );
    assert_eq!(code, 0, "{err}");
    let link = out.lines().find(|l| l.contains("/admin/sign-in/")).expect("a one-time link is printed").trim();
    assert!(link.starts_with(&format!("{base_url}/admin/sign-in/")), "{link}");
    browser.goto(link).await;
    browser.wait_for_url(&format!("/admin/o/{}", demo::DEMO_ORG)).await;

    // The owner invites a treasurer limited to the meet-up's team.
    browser.goto(&app.url(&format!("/admin/o/{}/staff", demo::DEMO_ORG))).await;
    browser.fill("#email", "haru-kaikei@example.jp").await;
    browser.execute("document.querySelector('#role').value = 'treasurer'").await;
    browser.execute(&format!("document.querySelector('#team').value = '{}'", team.id)).await;
    browser.click(&format!(r#"form[action="/admin/o/{}/staff"] button[type="submit"]"#, demo::DEMO_ORG)).await;
    browser.wait_for_text("haru-kaikei@example.jp").await;
    browser.screenshot(PHONE, &dir.join("done-1-owner-invites-phone.png")).await;
    browser.click(r#"form[action="/admin/sign-out"] button"#).await;
    browser.wait_for_url("/admin/sign-in").await;

    // The treasurer follows the invitation and sees one fund only.
    let invitation = crate::admin::emailed_link(&app.db, "haru-kaikei@example.jp").await.expect("an invitation");
    browser.goto(&invitation).await;
    browser.wait_for_url(&format!("/admin/o/{}", demo::DEMO_ORG)).await;
    let page = browser.source().await;
    assert!(page.contains("看護師・春の会"), "{page}");
    for other in ["薬剤師", "理学療法士", "Stripe残高"] {
        assert!(!page.contains(other), "{other} is not this treasurer's: {page}");
    }
    browser.screenshot(PHONE, &dir.join("done-2-team-dashboard-phone.png")).await;

    // Cash collected at the meet-up.
    browser.goto(&app.url(&format!("/admin/o/{}/entries/new", demo::DEMO_ORG))).await;
    let page = browser.source().await;
    assert!(!page.contains("薬剤師"), "only their fund can be chosen");
    browser.execute(&format!("document.querySelector('#fund').value = '{}'", team.account.0)).await;
    browser.fill("#amount", "3000").await;
    browser.fill("#party", "春の勉強会 会場での現金").await;
    browser.click("form button.primary").await;
    browser.wait_for_url("/journal/").await;
    browser.wait_for_text("春の勉強会 会場での現金").await;
    let fund = kanpa_ledger::store::balance(&app.db, team.account).await.unwrap().amount();

    // The card pledge, refunded in full.
    browser.goto(&app.url(&format!("/admin/o/{}/pledges", demo::DEMO_ORG))).await;
    let page = browser.source().await;
    assert!(page.contains("春の支援者"), "{page}");
    browser.goto(&app.url(&format!("/admin/o/{}/pledges/{}", demo::DEMO_ORG, pledge.public_id))).await;
    browser.fill("#amount", "5000").await;
    browser.screenshot(PHONE, &dir.join("done-3-refund-phone.png")).await;
    browser.click(&format!(r#"form[action$="/pledges/{}/refund"] button"#, pledge.public_id)).await;
    eventually(30, "the refund is applied", || async {
        store::pledge_by_public_id(&app.db, &pledge.public_id).await.unwrap().status == PledgeStatus::Refunded
    })
    .await;
    let page = browser.source().await;
    assert!(!page.contains("/reconciliation"), "the whole books are not offered to one team's treasurer: {page}");
    let refunded = store::pledge_by_public_id(&app.db, &pledge.public_id).await.unwrap();
    assert_eq!(refunded.amount_refunded, 5000);
    let after = kanpa_ledger::store::balance(&app.db, team.account).await.unwrap().amount();
    assert!(after > fund, "the refund leaves the team's fund: {fund} then {after}");
    let refunds = crate::admin::count(&app.db, "SELECT COUNT(*) FROM sandbox_refunds").await;
    assert_eq!(refunds, 1, "one refund reached the processor");
    assert!(kanpa_ledger::store::check(&app.db).await.unwrap().is_clean());
    browser.goto(&app.url(&format!("/admin/o/{}/pledges/{}", demo::DEMO_ORG, pledge.public_id))).await;
    browser.screenshot(PHONE, &dir.join("done-4-refunded-phone.png")).await;
    println!("screenshots saved in {}", dir.display());
    browser.quit().await;
    app.stop().await;
}
