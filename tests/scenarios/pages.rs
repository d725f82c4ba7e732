//! The public pages as a supporter meets them over HTTP: the campaign page
//! and its widgets, the pledge form refusing what it must, the sandbox
//! checkout end to end, and "my pledges".

use kanpa_campaigns::demo::{self, DEMO_CAMPAIGN};
use kanpa_campaigns::store::{self, CampaignInput, TeamInput};
use kanpa_campaigns::{Campaign, PledgeStatus};
use kanpa_ledger::{Db, Timestamp};
use reqwest::header::{LOCATION, ORIGIN};

use crate::harness::{TestApp, TestBackend, eventually, exec_raw};
use crate::on_both_backends;

on_both_backends!(
    the_campaign_page_shows_totals_teams_and_share_tags_in_both_languages,
    progress_json_and_the_embed_show_the_maintained_totals,
    the_home_page_lists_live_campaigns,
    the_pledge_form_refuses_bad_input_says_why_and_stores_nothing,
    a_form_sent_from_another_site_is_refused,
    a_pledge_goes_through_the_sandbox_and_is_counted_once_the_events_apply,
    script_in_a_name_or_message_is_shown_as_text_on_the_wall,
    the_sandbox_declines_authenticates_and_closes_like_a_real_checkout,
    sandbox_pages_do_not_exist_with_the_stripe_gateway,
    a_supporter_signs_in_by_email_and_changes_then_cancels_a_pledge,
    a_failed_pledge_is_paid_from_my_pledges_and_gets_a_receipt,
);

/// The test application with the demo drive seeded and emails written to a
/// temporary directory.
struct Site {
    app: TestApp,
    _mail: tempfile::TempDir,
}

impl std::ops::Deref for Site {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

async fn site(backend: TestBackend) -> Option<Site> {
    site_with(backend, |_| {}).await
}

async fn site_with(backend: TestBackend, configure: impl FnOnce(&mut kanpa_server::config::Config)) -> Option<Site> {
    let mail = tempfile::tempdir().unwrap();
    let dir = mail.path().display().to_string();
    let app = TestApp::spawn_with(backend, Default::default(), |config| {
        config.mail.file_dir = dir;
        configure(config);
    })
    .await?;
    assert!(demo::seed(&app.db, Timestamp::now()).await.unwrap());
    Some(Site { app, _mail: mail })
}

impl Site {
    async fn drive(&self) -> Campaign {
        store::campaign_by_slug(&self.db, DEMO_CAMPAIGN).await.unwrap()
    }

    /// GET with the language chosen, as the `?lang=` switch does.
    async fn page(&self, path: &str, lang: &str) -> (u16, String) {
        let res = self.client.get(self.url(path)).header("cookie", format!("lang={lang}")).send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// A form POST from one of our own pages.
    async fn post_form(&self, path: &str, fields: &[(&str, &str)], cookie: Option<&str>) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).header(ORIGIN, self.url("")).form(fields);
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.send().await.unwrap()
    }

    async fn pledge_count(&self) -> usize {
        let drive = self.drive().await;
        store::pledges_of_campaign(&self.db, drive.id).await.unwrap().len()
    }

    /// Signs in as `email` through the emailed link; returns the cookie.
    async fn sign_in(&self, email: &str) -> String {
        let res = self.post_form("/me/sign-in", &[("email", email)], None).await;
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains("メールをご確認ください"));
        let data = text_of(
            &self.db,
            "SELECT data FROM outbox_emails WHERE template = 'sign_in_link' AND to_address = $1 ORDER BY id DESC",
            email,
        )
        .await
        .expect("a sign-in email is queued");
        let link: serde_json::Value = serde_json::from_str(&data).unwrap();
        let link = find_link(&link).expect("the email carries the link");
        let res = self.get(&path_of(&link)).await;
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()[LOCATION], "/me");
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(!cookie.contains("Secure"), "no Secure over plain HTTP: {cookie}");
        // The link works once.
        let again = self.get(&path_of(&link)).await;
        assert_eq!(again.status(), 410);
        assert!(again.text().await.unwrap().contains("有効期限切れか、すでに使われています"));
        cookie.split(';').next().unwrap().to_owned()
    }
}

fn find_link(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains("/me/sign-in/") => Some(s.clone()),
        serde_json::Value::Object(map) => map.values().find_map(find_link),
        serde_json::Value::Array(items) => items.iter().find_map(find_link),
        _ => None,
    }
}

/// The path and query of an absolute URL (the test server listens on its
/// own port, not `server.base_url`'s).
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/').map(|i| rest[i..].to_owned()).unwrap_or_else(|| "/".into())
}

async fn text_of(db: &Db, sql: &str, bind: &str) -> Option<String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        Db::Sqlite { write, .. } => sqlx::query_scalar(sql).bind(bind).fetch_optional(write).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).bind(bind).fetch_optional(pool).await.unwrap(),
    }
}

/// A second, small live campaign of another organisation.
async fn other_campaign(db: &Db, slug: &str, funding_model: &str) -> (Campaign, i64) {
    let mut tx = db.begin().await.unwrap();
    let org = kanpa_ledger::store::create_organisation(&mut tx, &format!("org-{slug}"), "Other org").await.unwrap();
    tx.commit().await.unwrap();
    kanpa_payments::seller::update(db, org.id, &kanpa_payments::seller::fictional("Other org")).await.unwrap();
    let now = Timestamp::now();
    let rfc = |t: Timestamp| t.as_offset().format(&time::format_description::well_known::Rfc3339).unwrap();
    let input = CampaignInput {
        slug: slug.into(),
        title_ja: "別のキャンペーン".into(),
        title_en: "Another drive".into(),
        story_ja: "別の話。".into(),
        currency: "JPY".into(),
        goal: 100_000,
        starts_at: rfc(now.saturating_add(time::Duration::days(-1))),
        deadline: rfc(now.saturating_add(time::Duration::days(10))),
        time_zone: "Asia/Tokyo".into(),
        funding_model: funding_model.into(),
        pool_rule: "equal".into(),
        contact_email: "other@example.jp".into(),
        ..CampaignInput::default()
    };
    let campaign = store::create_campaign(db, org.id, &input).await.unwrap();
    let team = TeamInput { slug: "crew".into(), name_ja: "クルー".into(), goal: 100_000, ..TeamInput::default() };
    let team = store::add_team(db, campaign.id, &team).await.unwrap();
    let campaign = store::publish(db, campaign.id).await.unwrap();
    (campaign, team.id)
}

fn yen(n: i64) -> String {
    kanpa_ledger::Money::yen(n).format(kanpa_ledger::Locale::Ja)
}

async fn the_campaign_page_shows_totals_teams_and_share_tags_in_both_languages(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    let drive = site.drive().await;
    let teams = store::teams(&site.db, drive.id).await.unwrap();

    let res = site.get(&format!("/c/{DEMO_CAMPAIGN}")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    let ja = res.text().await.unwrap();
    assert!(ja.contains(r#"<html lang="ja">"#));
    assert!(ja.contains("<h1>7職種 免許更新応援キャンペーン 2026</h1>"), "{ja}");
    assert!(ja.contains(&yen(drive.raised())), "total raised {}", yen(drive.raised()));
    assert!(ja.contains(&yen(drive.goal)));
    assert!(ja.contains(&format!("{}人", drive.backers)));
    assert!(ja.contains("残り 29日") || ja.contains("残り 30日"), "days left");
    assert!(ja.contains("目標額に届いた場合だけ"), "the funding model in one line");
    for team in &teams {
        assert!(ja.contains(&format!("<h3>{}</h3>", team.name_ja)), "{}", team.name_ja);
        assert!(ja.contains(&format!("<strong>{}</strong> / {}", yen(team.raised()), yen(team.goal))));
        assert!(ja.contains(&format!("/c/{DEMO_CAMPAIGN}/pledge?team={}", team.id)));
    }
    assert_eq!(ja.matches(r#"role="progressbar""#).count(), 1 + teams.len());
    assert!(ja.contains("残り 50個"), "limited rewards say how many remain");
    assert!(ja.contains("匿名"), "anonymous supporters");
    assert!(ja.contains("夜勤明けの皆さんを応援しています!"), "messages on the wall");
    let base = "http://127.0.0.1:8080"; // server.base_url in the test configuration
    for tag in [
        r#"<meta property="og:title" content="7職種 免許更新応援キャンペーン 2026">"#.to_owned(),
        format!(r#"<meta property="og:url" content="{base}/c/{DEMO_CAMPAIGN}">"#),
        r#"<meta property="og:type" content="website">"#.to_owned(),
        r#"<meta name="twitter:card" content="summary">"#.to_owned(),
    ] {
        assert!(ja.contains(&tag), "{tag}");
    }
    assert!(ja.contains(r#"<meta property="og:description" content="医療を支える7つの職種が"#));

    let (status, en) = site.page(&format!("/c/{DEMO_CAMPAIGN}"), "en").await;
    assert_eq!(status, 200);
    assert!(en.contains(r#"<html lang="en">"#));
    assert!(en.contains("<h1>Seven professions, one licence drive 2026</h1>"));
    assert!(en.contains(&format!("{} backers", drive.backers)));
    assert!(en.contains("Anonymous") && en.contains("Nurses") && en.contains("50 left"));
    assert!(en.contains(r#"<meta property="og:title" content="Seven professions, one licence drive 2026">"#));
    assert!(en.contains("charged after the deadline only if the goal is reached"));

    // Drafts and unknown campaigns do not exist for the public.
    let mut tx = site.db.begin().await.unwrap();
    let org = kanpa_ledger::store::create_organisation(&mut tx, "drafts", "Drafts").await.unwrap();
    tx.commit().await.unwrap();
    let draft = CampaignInput {
        slug: "secret-draft".into(),
        title_ja: "下書き".into(),
        currency: "JPY".into(),
        goal: 10_000,
        starts_at: "2026-01-01T00:00:00+09:00".into(),
        deadline: "2036-01-01T00:00:00+09:00".into(),
        time_zone: "Asia/Tokyo".into(),
        funding_model: "keep_it_all".into(),
        pool_rule: "equal".into(),
        contact_email: "d@example.jp".into(),
        ..CampaignInput::default()
    };
    store::create_campaign(&site.db, org.id, &draft).await.unwrap();
    for path in ["/c/secret-draft", "/c/secret-draft/pledge", "/c/secret-draft/progress.json", "/c/nothing-here"] {
        assert_eq!(site.get(path).await.status(), 404, "{path}");
    }
    site.app.stop().await;
}

async fn progress_json_and_the_embed_show_the_maintained_totals(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    let drive = site.drive().await;
    let teams = store::teams(&site.db, drive.id).await.unwrap();
    let res = site.get(&format!("/c/{DEMO_CAMPAIGN}/progress.json")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=30");
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["raised"], drive.raised());
    assert_eq!(json["pledged"], drive.pledged);
    assert_eq!(json["collected"], drive.collected);
    assert_eq!(json["backers"], drive.backers);
    assert_eq!(json["goal"], 3_500_000);
    assert_eq!(json["currency"], "JPY");
    assert_eq!(json["status"], "live");
    assert!(json["deadline"].as_str().unwrap().starts_with(&drive.deadline.as_offset().year().to_string()));
    let listed = json["teams"].as_array().unwrap();
    assert_eq!(listed.len(), 7);
    for (shown, team) in listed.iter().zip(&teams) {
        assert_eq!(shown["slug"], team.slug.as_str());
        assert_eq!(shown["name_ja"], team.name_ja.as_str());
        assert_eq!(shown["name_en"], team.name_en.as_str());
        assert_eq!(shown["goal"], team.goal);
        assert_eq!(shown["raised"], team.raised());
        assert_eq!(shown["backers"], team.backers);
    }
    let team_sum: i64 = teams.iter().map(|t| t.raised()).sum();
    assert_eq!(team_sum + drive.pool_pledged + drive.pool_collected, drive.raised());

    let embed = site.get(&format!("/c/{DEMO_CAMPAIGN}/embed")).await;
    assert_eq!(embed.status(), 200);
    assert!(embed.headers().get("x-frame-options").is_none(), "the widget can be framed");
    assert_eq!(embed.headers()["vary"], "accept-language, cookie", "cached once per language");
    let html = embed.text().await.unwrap();
    assert!(html.contains(&format!(r#"href="http://127.0.0.1:8080/c/{DEMO_CAMPAIGN}" target="_top""#)));
    assert!(html.contains(&yen(drive.raised())) && html.contains(r#"role="progressbar""#));
    assert!(!html.contains("<header"), "a bare widget, not the site's page");
    site.app.stop().await;
}

async fn the_home_page_lists_live_campaigns(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    let drive = site.drive().await;
    let (status, html) = site.page("/", "ja").await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!(r#"<a href="/c/{DEMO_CAMPAIGN}">7職種 免許更新応援キャンペーン 2026</a>"#)));
    assert!(html.contains(&yen(drive.raised())));
    assert!(!html.contains("現在募集中のキャンペーンはありません"));
    site.app.stop().await;
}

async fn the_pledge_form_refuses_bad_input_says_why_and_stores_nothing(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    let drive = site.drive().await;
    let teams = store::teams(&site.db, drive.id).await.unwrap();
    let rewards = store::rewards(&site.db, drive.id).await.unwrap();
    let nurses = teams.iter().find(|t| t.slug == "nurses").unwrap().id.to_string();
    let report = rewards.iter().find(|r| r.quantity == Some(50)).unwrap();
    let patch = rewards.iter().find(|r| r.team_id.is_some()).unwrap();
    let (_, foreign_team) = other_campaign(&site.db, "other-drive", "all_or_nothing").await;
    let before = site.pledge_count().await;

    let form = site.get(&format!("/c/{DEMO_CAMPAIGN}/pledge?team={nurses}&reward={}", report.id)).await;
    assert_eq!(form.status(), 200);
    let form = form.text().await.unwrap();
    assert!(form.contains(&format!(r#"<option value="{nurses}" selected>看護師</option>"#)), "team preselected");
    assert!(form.contains(&format!(r#"value="{}" checked"#, report.id)), "reward preselected");
    assert!(form.contains(r#"value="10000""#), "the reward's minimum suggested");
    assert!(form.contains("キャンペーン全体を応援する") && form.contains("リターンなしで支援する"));
    assert!(form.contains("請求されません"), "what happens next, before the button");

    let long_name = "あ".repeat(51);
    let long_message = "x".repeat(501);
    let fortnight_team = "999999".to_owned();
    let foreign = foreign_team.to_string();
    let report_id = report.id.to_string();
    let patch_id = patch.id.to_string();
    // (amount, team, reward, name, message, email, what the page must say)
    let cases: Vec<(&str, &str, &str, &str, &str, &str, &str)> = vec![
        ("-100", "", "", "花子", "", "h@example.jp", "金額にマイナスは使えません"),
        ("0", "", "", "花子", "", "h@example.jp", "支援金額:¥50 以上で入力してください"),
        ("12.5", "", "", "花子", "", "h@example.jp", "円未満(小数)は入力できません"),
        ("３０００", "", "", "花子", "", "h@example.jp", "金額は半角数字で入力してください"),
        ("99999999999999999999999", "", "", "花子", "", "h@example.jp", "金額が大きすぎます"),
        ("5000000", "", "", "花子", "", "h@example.jp", "¥1,000,000 以下で入力してください"),
        ("abc", "", "", "花子", "", "h@example.jp", "金額は半角数字で、円単位で入力してください"),
        ("3000; DROP TABLE pledges", "", "", "花子", "", "h@example.jp", "金額は半角数字で、円単位で"),
        ("", "", "", "花子", "", "h@example.jp", "支援金額:金額は半角数字で"),
        ("20", "", "", "花子", "", "h@example.jp", "支援金額:¥50 以上"),
        ("5000", "", &report_id, "花子", "", "h@example.jp", "支援金額:¥10,000 以上"),
        ("5000", &fortnight_team, "", "花子", "", "h@example.jp", "選んだチームはこのキャンペーンにありません"),
        ("5000", &foreign, "", "花子", "", "h@example.jp", "選んだチームはこのキャンペーンにありません"),
        ("5000", "nurses", "", "花子", "", "h@example.jp", "選んだチームはこのキャンペーンにありません"),
        ("5000", "", "424242", "花子", "", "h@example.jp", "選んだリターンはこのキャンペーンにありません"),
        ("5000", "", &patch_id, "花子", "", "h@example.jp", "このリターンは現在選べません"),
        ("5000", "", "", &long_name, "", "h@example.jp", "お名前:50 文字以内で入力してください"),
        ("5000", "", "", "花子", &long_message, "h@example.jp", "応援メッセージ:500 文字以内"),
        ("5000", "", "", "", "", "h@example.jp", "お名前:入力してください"),
        ("5000", "", "", "花子", "", "not-an-email", "メールアドレスの形式が正しくありません"),
        ("5000", "", "", "花子", "", "", "メールアドレス:入力してください"),
    ];
    for (amount, team, reward, name, message, email, says) in cases {
        let fields = [
            ("amount", amount),
            ("team", team),
            ("reward", reward),
            ("display_name", name),
            ("message", message),
            ("email", email),
        ];
        let res = site.post_form(&format!("/c/{DEMO_CAMPAIGN}/pledge"), &fields, None).await;
        assert_eq!(res.status(), 422, "{amount:?} {team:?} {reward:?}");
        let html = res.text().await.unwrap();
        assert!(html.contains(says), "{amount:?} {team:?} {reward:?} {name:?} {email:?}: expected {says:?}");
        assert!(html.contains(r#"role="alert""#));
        assert!(html.contains(r#"<form class="card pledge""#), "the form is shown again");
        if !amount.is_empty() && amount.is_ascii() {
            assert!(html.contains(&format!(r#"value="{amount}""#)), "what was typed is kept: {amount}");
        }
    }
    // In English too.
    let res = site
        .client
        .post(site.url(&format!("/c/{DEMO_CAMPAIGN}/pledge?lang=en")))
        .header(ORIGIN, site.url(""))
        .form(&[("amount", "abc"), ("display_name", "Hana"), ("email", "h@example.jp")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("Amount: Enter the amount in whole yen using digits"));

    // A sold-out reward is shown disabled and refused.
    exec_raw(&site.db, &format!("UPDATE campaign_rewards SET claimed = quantity WHERE id = {}", report.id))
        .await
        .unwrap();
    let form = site.get(&format!("/c/{DEMO_CAMPAIGN}/pledge")).await.text().await.unwrap();
    assert!(form.contains(&format!(r#"value="{}" disabled"#, report.id)), "sold out is greyed out");
    let fields =
        [("amount", "20000"), ("reward", report_id.as_str()), ("display_name", "花子"), ("email", "h@example.jp")];
    let res = site.post_form(&format!("/c/{DEMO_CAMPAIGN}/pledge"), &fields, None).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("品切れです"));

    // A campaign past its deadline takes nothing.
    let past = match &site.db {
        Db::Sqlite { .. } => "starts_at = 1577836800000000, deadline = 1577923200000000",
        Db::Postgres(_) => "starts_at = '2020-01-01T00:00:00Z', deadline = '2020-01-02T00:00:00Z'",
    };
    exec_raw(&site.db, &format!("UPDATE campaigns SET {past} WHERE slug = 'other-drive'")).await.unwrap();
    let fields = [("amount", "5000"), ("display_name", "花子"), ("email", "h@example.jp")];
    let res = site.post_form("/c/other-drive/pledge", &fields, None).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("現在支援を受け付けていません"));
    let res = site.post_form("/c/no-such-drive/pledge", &fields, None).await;
    assert_eq!(res.status(), 404);

    assert_eq!(site.pledge_count().await, before, "nothing stored");
    let after = store::reward(&site.db, drive.id, rewards[0].id).await.unwrap();
    assert_eq!(after.claimed, rewards[0].claimed, "no reward unit held");
    let drive_after = site.drive().await;
    assert_eq!((drive_after.raised(), drive_after.backers), (drive.raised(), drive.backers));
    site.app.stop().await;
}

async fn a_form_sent_from_another_site_is_refused(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    let before = site.pledge_count().await;
    let fields = [("amount", "5000"), ("display_name", "花子"), ("email", "h@example.jp")];
    for (header, value) in
        [("origin", "https://evil.example"), ("origin", "null"), ("referer", "https://evil.example/page")]
    {
        let res = site
            .client
            .post(site.url(&format!("/c/{DEMO_CAMPAIGN}/pledge")))
            .header(header, value)
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{header}: {value}");
        assert!(res.text().await.unwrap().contains("他のサイトから送信された"));
    }
    let res = site.client.post(site.url("/me/sign-in")).header("origin", "https://evil.example");
    assert_eq!(res.form(&[("email", "h@example.jp")]).send().await.unwrap().status(), 403);
    assert_eq!(site.pledge_count().await, before);
    site.app.stop().await;
}

/// Posts a pledge, follows it through the sandbox's "succeed" button, and
/// returns its public id.
async fn pledge_through_sandbox(site: &Site, fields: &[(&str, &str)]) -> String {
    let res = site.post_form(&format!("/c/{DEMO_CAMPAIGN}/pledge"), fields, None).await;
    assert_eq!(res.status(), 303);
    let checkout = path_of(res.headers()[LOCATION].to_str().unwrap());
    assert!(checkout.starts_with("/sandbox/checkout/cs_sandbox_"), "{checkout}");
    let res = site.post_form(&checkout, &[("action", "succeed")], None).await;
    assert_eq!(res.status(), 303);
    let thanks = path_of(res.headers()[LOCATION].to_str().unwrap());
    assert!(thanks.starts_with(&format!("/c/{DEMO_CAMPAIGN}/thanks/")), "{thanks}");
    thanks.rsplit('/').next().unwrap().to_owned()
}

async fn committed(db: &Db, public_id: &str) -> bool {
    store::pledge_by_public_id(db, public_id).await.unwrap().status == PledgeStatus::Committed
}

async fn a_pledge_goes_through_the_sandbox_and_is_counted_once_the_events_apply(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    let before = site.drive().await;
    let teams = store::teams(&site.db, before.id).await.unwrap();
    let nurses = teams.iter().find(|t| t.slug == "nurses").unwrap();
    let reward = store::rewards(&site.db, before.id).await.unwrap().into_iter().find(|r| r.min_amount == 3000).unwrap();
    let nurses_id = nurses.id.to_string();
    let reward_id = reward.id.to_string();
    let fields = [
        ("team", nurses_id.as_str()),
        ("reward", reward_id.as_str()),
        ("amount", "5,000"),
        ("display_name", "テスト花子"),
        ("message", "がんばってください"),
        ("email", "hanako@example.jp"),
    ];
    // The page is rendered now, and kept for a second.
    let (_, page) = site.page(&format!("/c/{DEMO_CAMPAIGN}"), "ja").await;
    assert!(page.contains(&yen(before.raised())));
    let res = site.post_form(&format!("/c/{DEMO_CAMPAIGN}/pledge"), &fields, None).await;
    assert_eq!(res.status(), 303);
    let checkout = path_of(res.headers()[LOCATION].to_str().unwrap());

    // The sandbox page: a test, in setup mode for an all-or-nothing drive.
    let page = site.get(&checkout).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("テスト用の決済画面 — 実際の請求は発生しません"));
    assert!(html.contains("カードを登録") && !html.contains(">支払う<"));
    assert!(html.contains("¥5,000") && html.contains("hanako@example.jp") && html.contains("看護師"));
    let pending = store::pledges_of_campaign(&site.db, before.id).await.unwrap();
    let pledge = pending.iter().find(|p| p.email == "hanako@example.jp").unwrap();
    assert_eq!(pledge.status, PledgeStatus::Pending);
    assert_eq!(site.drive().await.raised(), before.raised(), "pending pledges do not count yet");

    let res = site.post_form(&checkout, &[("action", "succeed")], None).await;
    assert_eq!(res.status(), 303);
    let thanks = path_of(res.headers()[LOCATION].to_str().unwrap());
    assert_eq!(thanks, format!("/c/{DEMO_CAMPAIGN}/thanks/{}", pledge.public_id));
    let first = site.get(&thanks).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "no-store");

    eventually(10, "the inbox job commits the pledge", || committed(&site.db, &pledge.public_id)).await;
    let after = site.drive().await;
    assert_eq!(after.raised(), before.raised() + 5000);
    assert_eq!(after.backers, before.backers + 1);
    let nurses_after = store::team(&site.db, before.id, nurses.id).await.unwrap();
    assert_eq!(nurses_after.raised(), nurses.raised() + 5000);
    assert_eq!(nurses_after.backers, nurses.backers + 1);

    let (_, html) = site.page(&thanks, "ja").await;
    assert!(html.contains("カード情報を登録しました") && html.contains("目標額に届いた場合のみ請求"), "{html}");
    assert!(!html.contains(r#"http-equiv="refresh""#));
    // At most a second later, the page shows the new totals and supporter.
    let committed_at = std::time::Instant::now();
    eventually(5, "the campaign page shows the new total", || async {
        site.page(&format!("/c/{DEMO_CAMPAIGN}"), "ja").await.1.contains(&yen(after.raised()))
    })
    .await;
    assert!(committed_at.elapsed() < std::time::Duration::from_millis(1500), "never more than a second stale");
    let (_, page) = site.page(&format!("/c/{DEMO_CAMPAIGN}"), "ja").await;
    assert!(page.contains("テスト花子") && page.contains("がんばってください"));
    let json: serde_json::Value = site.get(&format!("/c/{DEMO_CAMPAIGN}/progress.json")).await.json().await.unwrap();
    assert_eq!(json["raised"], after.raised());

    // A thank-you page of another campaign's address is not found.
    let (_, other_team) = other_campaign(&site.db, "other-drive", "keep_it_all").await;
    let _ = other_team;
    assert_eq!(site.get(&format!("/c/other-drive/thanks/{}", pledge.public_id)).await.status(), 404);
    assert_eq!(site.get(&format!("/c/{DEMO_CAMPAIGN}/thanks/nope")).await.status(), 404);
    site.app.stop().await;
}

async fn script_in_a_name_or_message_is_shown_as_text_on_the_wall(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    let name = "<script>alert('name')</script>";
    let message = "<img src=x onerror=alert(1)>\"'&";
    let fields = [("amount", "3000"), ("display_name", name), ("message", message), ("email", "x@example.jp")];
    let id = pledge_through_sandbox(&site, &fields).await;
    eventually(10, "the pledge is committed", || committed(&site.db, &id)).await;
    let (_, html) = site.page(&format!("/c/{DEMO_CAMPAIGN}"), "ja").await;
    assert!(!html.contains("<script>alert"), "never executable");
    assert!(!html.contains("<img src=x"), "never markup");
    assert!(html.contains("&#60;script&#62;alert(&#39;name&#39;)&#60;/script&#62;") || html.contains("&lt;script&gt;"));
    assert!(html.contains("&#60;img src=x onerror=alert(1)&#62;") || html.contains("&lt;img src=x"));

    // Refused forms show what was typed, escaped too.
    let fields = [("amount", "abc"), ("display_name", name), ("message", message), ("email", "x@example.jp")];
    let html = site.post_form(&format!("/c/{DEMO_CAMPAIGN}/pledge"), &fields, None).await.text().await.unwrap();
    assert!(!html.contains("<script>alert") && !html.contains("<img src=x"));
    site.app.stop().await;
}

async fn the_sandbox_declines_authenticates_and_closes_like_a_real_checkout(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    // Keep-it-all: payment mode, charged now.
    let (shop, _) = other_campaign(&site.db, "shop-drive", "keep_it_all").await;
    let fields = [("amount", "4000"), ("display_name", "太郎"), ("email", "taro@example.jp")];
    let res = site.post_form("/c/shop-drive/pledge", &fields, None).await;
    assert_eq!(res.status(), 303);
    let checkout = path_of(res.headers()[LOCATION].to_str().unwrap());
    let html = site.get(&checkout).await.text().await.unwrap();
    assert!(html.contains(">支払う<") && html.contains("テスト用の決済画面"));
    assert!(html.contains("/c/shop-drive/pledge?cancelled="), "a way back");

    let declined = site.post_form(&checkout, &[("action", "decline")], None).await;
    assert_eq!(declined.status(), 402);
    assert!(declined.text().await.unwrap().contains("カードが拒否されました"));

    let challenge = site.post_form(&checkout, &[("action", "authenticate")], None).await;
    assert_eq!(challenge.status(), 200);
    let html = challenge.text().await.unwrap();
    assert!(
        html.contains("本人認証(3Dセキュア)")
            && html.contains("authenticate_pass")
            && html.contains("authenticate_fail")
    );
    let failed = site.post_form(&checkout, &[("action", "authenticate_fail")], None).await;
    assert_eq!(failed.status(), 402);
    assert!(failed.text().await.unwrap().contains("本人認証に失敗しました"));
    let pledges = store::pledges_of_campaign(&site.db, shop.id).await.unwrap();
    assert_eq!(pledges.len(), 1);
    assert_eq!(pledges[0].status, PledgeStatus::Pending, "declines leave the checkout open");

    let passed = site.post_form(&checkout, &[("action", "authenticate_pass")], None).await;
    assert_eq!(passed.status(), 303);
    let id = pledges[0].public_id.clone();
    eventually(10, "the payment is collected", || async {
        store::pledge_by_public_id(&site.db, &id).await.unwrap().status == PledgeStatus::Collected
    })
    .await;
    let shop_after = store::campaign_by_slug(&site.db, "shop-drive").await.unwrap();
    assert_eq!((shop_after.collected, shop_after.backers), (4000, 1));
    let (_, thanks) = site.page(&format!("/c/shop-drive/thanks/{id}"), "en").await;
    assert!(thanks.contains("Paid."), "{thanks}");

    // Finished: every button now says so, and nothing more happens.
    let again = site.post_form(&checkout, &[("action", "succeed")], None).await;
    assert_eq!(again.status(), 409);
    assert!(again.text().await.unwrap().contains("すでに完了しているか"));
    let html = site.get(&checkout).await.text().await.unwrap();
    assert!(html.contains("すでに完了しているか") && !html.contains(r#"value="succeed""#));
    assert_eq!(site.post_form(&checkout, &[("action", "explode")], None).await.status(), 400);
    assert_eq!(site.get("/sandbox/checkout/cs_sandbox_nope").await.status(), 404);

    // Setup mode with "needs authentication" saves a card that will ask later.
    let fields = [("amount", "3000"), ("display_name", "次郎"), ("email", "jiro@example.jp")];
    let res = site.post_form(&format!("/c/{DEMO_CAMPAIGN}/pledge"), &fields, None).await;
    let checkout = path_of(res.headers()[LOCATION].to_str().unwrap());
    let res = site.post_form(&checkout, &[("action", "authenticate")], None).await;
    assert_eq!(res.status(), 303, "setup mode saves the card at once");
    site.app.stop().await;
}

async fn sandbox_pages_do_not_exist_with_the_stripe_gateway(backend: TestBackend) {
    let Some(site) = site_with(backend, |config| {
        config.payments.gateway = kanpa_server::config::GatewayKind::Stripe;
    })
    .await
    else {
        return;
    };
    assert_eq!(site.get("/sandbox/checkout/cs_sandbox_x").await.status(), 404);
    assert_eq!(site.post_form("/sandbox/checkout/cs_sandbox_x", &[("action", "succeed")], None).await.status(), 404);
    site.app.stop().await;
}

async fn a_supporter_signs_in_by_email_and_changes_then_cancels_a_pledge(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    let fields = [("amount", "3000"), ("display_name", "花子"), ("email", "Hanako@Example.jp")];
    let id = pledge_through_sandbox(&site, &fields).await;
    eventually(10, "the pledge is committed", || committed(&site.db, &id)).await;
    let before = site.drive().await;

    // Signed out: the page asks for an email.
    let (status, html) = site.page("/me", "ja").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"action="/me/sign-in""#));
    // The answer is the same for an address without pledges.
    let res = site.post_form("/me/sign-in", &[("email", "nobody@example.jp")], None).await;
    assert!(res.text().await.unwrap().contains("メールをご確認ください"));
    let res = site.post_form("/me/sign-in", &[("email", "nonsense")], None).await;
    assert_eq!(res.status(), 422);

    let cookie = site.sign_in("hanako@example.jp").await;
    let me = site.client.get(site.url("/me")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(me.headers()["cache-control"], "no-store");
    let html = me.text().await.unwrap();
    assert!(html.contains("7職種 免許更新応援キャンペーン 2026") && html.contains("¥3,000"));
    assert!(html.contains("カード登録済み(締切後に請求予定)"));
    assert!(html.contains(&format!(r#"action="/me/pledges/{id}""#)), "changeable before the deadline");

    // A refused change is shown at the pledge; nothing changes.
    let res = site.post_form(&format!("/me/pledges/{id}"), &[("amount", "12.5"), ("team", "")], Some(&cookie)).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("円未満(小数)は入力できません"));
    assert_eq!(site.drive().await.raised(), before.raised());

    let teams = store::teams(&site.db, before.id).await.unwrap();
    let pharmacists = teams.iter().find(|t| t.slug == "pharmacists").unwrap();
    let team = pharmacists.id.to_string();
    let res = site.post_form(&format!("/me/pledges/{id}"), &[("amount", "8000"), ("team", &team)], Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[LOCATION], "/me?done=changed");
    let changed = store::pledge_by_public_id(&site.db, &id).await.unwrap();
    assert_eq!((changed.amount, changed.team_id), (8000, Some(pharmacists.id)));
    assert_eq!(site.drive().await.raised(), before.raised() + 5000);
    assert_eq!(store::team(&site.db, before.id, pharmacists.id).await.unwrap().raised(), pharmacists.raised() + 8000);

    // Another supporter's pledge is not found; a foreign site cannot post.
    let theirs = "demo0000000000000000";
    let res = site.post_form(&format!("/me/pledges/{theirs}/cancel"), &[], Some(&cookie)).await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        site.client
            .get(site.url(&format!("/me/pledges/{theirs}/receipt")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let forged = site
        .client
        .post(site.url(&format!("/me/pledges/{id}/cancel")))
        .header("origin", "https://evil.example")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // No receipt before money is taken.
    let res = site.client.get(site.url(&format!("/me/pledges/{id}/receipt"))).header("cookie", &cookie).send().await;
    assert_eq!(res.unwrap().status(), 404);

    let res = site.post_form(&format!("/me/pledges/{id}/cancel"), &[], Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(store::pledge_by_public_id(&site.db, &id).await.unwrap().status, PledgeStatus::Cancelled);
    let after = site.drive().await;
    assert_eq!((after.raised(), after.backers), (before.raised() - 3000, before.backers - 1));
    let html = site.client.get(site.url("/me?done=cancelled")).header("cookie", &cookie).send().await.unwrap();
    let html = html.text().await.unwrap();
    assert!(html.contains("支援を取り消しました") && html.contains("取り消し済み"));
    assert!(!html.contains(&format!(r#"action="/me/pledges/{id}/cancel""#)), "no second cancel");

    // Signing out ends the session.
    let res = site.post_form("/me/sign-out", &[], Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let html = site.client.get(site.url("/me")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains(r#"action="/me/sign-in""#), "signed out");
    site.app.stop().await;
}

async fn a_failed_pledge_is_paid_from_my_pledges_and_gets_a_receipt(backend: TestBackend) {
    let Some(site) = site(backend).await else { return };
    let fields = [("amount", "6000"), ("display_name", "三郎"), ("email", "saburo@example.jp")];
    let id = pledge_through_sandbox(&site, &fields).await;
    eventually(10, "the pledge is committed", || committed(&site.db, &id)).await;
    // As the deadline charge would leave it (a failed pledge still counts).
    exec_raw(&site.db, &format!("UPDATE pledges SET status = 'payment_failed' WHERE public_id = '{id}'"))
        .await
        .unwrap();
    let cookie = site.sign_in("saburo@example.jp").await;
    let html = site.client.get(site.url("/me")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("決済に失敗しました") && html.contains(&format!("/me/pledges/{id}/pay")));
    assert!(!html.contains(&format!(r#"action="/me/pledges/{id}""#)), "not changeable");

    let pay = |cookie: String| {
        let site = &site;
        let id = id.clone();
        async move {
            let res = site.client.get(site.url(&format!("/me/pledges/{id}/pay"))).header("cookie", cookie);
            let res = res.send().await.unwrap();
            assert_eq!(res.status(), 303);
            path_of(res.headers()[LOCATION].to_str().unwrap())
        }
    };
    let first = pay(cookie.clone()).await;
    assert!(first.starts_with("/sandbox/checkout/"), "{first}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = pay(cookie.clone()).await;
    assert_ne!(first, second, "a later visit opens a new checkout");
    let html = site.get(&second).await.text().await.unwrap();
    assert!(html.contains(">支払う<") && html.contains("¥6,000"), "payment mode for the pledge's amount");
    let res = site.post_form(&second, &[("action", "succeed")], None).await;
    assert_eq!(res.status(), 303);
    eventually(10, "the payment is collected", || async {
        store::pledge_by_public_id(&site.db, &id).await.unwrap().status == PledgeStatus::Collected
    })
    .await;
    // Paid: no more pay link; the receipt is there.
    let res = site.client.get(site.url(&format!("/me/pledges/{id}/pay"))).header("cookie", &cookie).send().await;
    assert_eq!(res.unwrap().headers()[LOCATION], "/me");
    let receipt = site.client.get(site.url(&format!("/me/pledges/{id}/receipt"))).header("cookie", &cookie);
    let receipt = receipt.send().await.unwrap();
    assert_eq!(receipt.status(), 200);
    let html = receipt.text().await.unwrap();
    let pledge = store::pledge_by_public_id(&site.db, &id).await.unwrap();
    for expected in ["領収書", "医療職連合(デモ)", "¥6,000", id.as_str(), pledge.charge_id.as_deref().unwrap(), "三郎"]
    {
        assert!(html.contains(expected), "{expected}");
    }
    // Signed out, the receipt is not shown.
    let res = site.get(&format!("/me/pledges/{id}/receipt")).await;
    assert_eq!(res.status(), 303);
    site.app.stop().await;
}
