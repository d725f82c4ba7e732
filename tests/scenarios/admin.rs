//! The staff console as staff meet it over HTTP: signing in (cookies,
//! session rotation, sign-out, password change, limits on guessing), CSRF
//! tokens, roles and organisations on every console route, manual entries
//! and reversals, a treasurer limited to one team, and `kanpa user add`.

use kanpa_campaigns::demo::{self, DEMO_CAMPAIGN, DEMO_ORG};
use kanpa_campaigns::store as campaigns;
use kanpa_campaigns::{PledgeStatus, Team};
use kanpa_ledger::{Db, OrgId, Timestamp};
use kanpa_server::routes::admin::{Need, ROUTES};
use kanpa_server::staff::{self, Role};
use reqwest::header::{LOCATION, ORIGIN};

use crate::harness::{TestApp, TestBackend, run_kanpa};
use crate::on_both_backends;

on_both_backends!(
    staff_sign_in_sets_safe_cookies_rotates_the_session_and_ends_it,
    a_password_change_ends_every_other_session,
    an_emailed_link_signs_in_once,
    sign_in_attempts_are_limited_per_account_and_per_address,
    console_forms_without_this_sessions_csrf_token_change_nothing,
    every_console_route_refuses_other_roles_and_other_organisations,
    a_treasurer_records_cash_against_a_pledge_and_the_campaign_total_moves,
    a_team_treasurer_sees_and_moves_only_that_teams_fund,
    a_disbursement_cannot_exceed_the_fund_unless_explicitly_allowed,
    bad_manual_entries_are_refused_in_the_readers_language_and_record_nothing,
    an_owner_invites_staff_and_creates_a_team_scoped_api_token_shown_once,
    kanpa_user_add_prints_a_one_time_sign_in_link_on_the_base_url,
    a_refund_from_the_console_reaches_stripe_once_and_the_books_follow,
    a_sandbox_payment_is_refunded_through_the_api_and_the_console,
    the_salon_page_charts_patrons_by_status_and_revenue_and_finds_patrons,
    an_organiser_sets_up_a_campaign_with_teams_and_publishes_it,
    cash_against_a_pledge_gets_the_next_receipt_number_once_and_only_its_organisation_sees_it,
    money_received_without_a_pledge_gets_an_untaxed_donation_receipt,
    an_organiser_edits_teams_and_rewards_within_what_may_change_once_live_and_retires_a_reward_and_a_tier,
    an_organiser_closes_one_campaign_early_and_cancels_another_with_nobody_charged,
    an_invitation_email_says_who_invited_whom_to_what_with_a_one_time_link_in_the_chosen_language,
    an_organiser_creates_a_salon_as_a_draft_and_bad_input_creates_nothing,
);

pub const PASSWORD: &str = "correct horse battery staple";

/// The test application with the demo drive seeded (organisation
/// `iryo-rengo`, seven teams, committed pledges) and a second organisation.
pub struct Console {
    pub app: TestApp,
    pub org: OrgId,
    pub other_org: OrgId,
}

impl std::ops::Deref for Console {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

pub const OTHER_ORG: &str = "tohoku-chapter";
pub const OTHER_ORG_NAME: &str = "東北支部ひみつ会計";

impl Console {
    pub async fn spawn(backend: TestBackend) -> Option<Console> {
        Console::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(
        backend: TestBackend,
        configure: impl FnOnce(&mut kanpa_server::config::Config),
    ) -> Option<Console> {
        let app = TestApp::spawn_with(backend, Default::default(), configure).await?;
        assert!(demo::seed(&app.db, Timestamp::now()).await.unwrap());
        let org = kanpa_ledger::store::organisation_by_slug(&app.db, DEMO_ORG).await.unwrap().unwrap().id;
        let mut tx = app.db.begin().await.unwrap();
        let other = kanpa_ledger::store::create_organisation(&mut tx, OTHER_ORG, OTHER_ORG_NAME).await.unwrap();
        tx.commit().await.unwrap();
        kanpa_payments::seller::update(&app.db, other.id, &kanpa_payments::seller::fictional(OTHER_ORG_NAME))
            .await
            .unwrap();
        Some(Console { app, org, other_org: other.id })
    }

    /// A staff user with a password and a role in `org`.
    pub async fn staff(&self, email: &str, org: OrgId, role: Role, team: Option<i64>) -> i64 {
        add_staff(&self.db, email, org, role, team).await
    }

    /// Signs in with the password; returns the `kanpa_staff=…` cookie pair.
    pub async fn sign_in(&self, email: &str) -> String {
        sign_in_as(&self.app, email).await
    }

    /// A form POST from one of our own pages.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)], cookie: Option<&str>) -> reqwest::Response {
        post_as(&self.app, path, fields, cookie).await
    }

    pub async fn get_as(&self, path: &str, cookie: &str) -> (u16, String) {
        let res = self.client.get(self.url(path)).header("cookie", cookie).send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// The CSRF token on a console page.
    pub async fn csrf(&self, cookie: &str) -> String {
        let (status, html) = self.get_as("/admin/password", cookie).await;
        assert_eq!(status, 200);
        csrf_in(&html)
    }

    pub async fn drive_teams(&self) -> (kanpa_campaigns::Campaign, Vec<Team>) {
        let drive = campaigns::campaign_by_slug(&self.db, DEMO_CAMPAIGN).await.unwrap();
        let teams = campaigns::teams(&self.db, drive.id).await.unwrap();
        (drive, teams)
    }

    pub async fn entries(&self) -> i64 {
        count(&self.db, "SELECT COUNT(*) FROM ledger_entries").await
    }
}

/// A staff user with a password and a role in `org`.
pub async fn add_staff(db: &Db, email: &str, org: OrgId, role: Role, team: Option<i64>) -> i64 {
    let mut tx = db.begin().await.unwrap();
    let user = staff::store::ensure_user(&mut tx, email).await.unwrap();
    staff::store::set_role(&mut tx, user, org, role, team, None).await.unwrap();
    tx.commit().await.unwrap();
    let hash = staff::hash_password(PASSWORD).unwrap();
    staff::store::change_password(db, user, &hash).await.unwrap();
    user
}

/// Signs in with the password; returns the `kanpa_staff=…` cookie pair.
pub async fn sign_in_as(app: &TestApp, email: &str) -> String {
    let res = post_as(app, "/admin/sign-in", &[("email", email), ("password", PASSWORD)], None).await;
    assert_eq!(res.status(), 303, "signing in as {email}");
    session_of(&res)
}

/// A form POST from one of our own pages.
pub async fn post_as(app: &TestApp, path: &str, fields: &[(&str, &str)], cookie: Option<&str>) -> reqwest::Response {
    let mut req = app.client.post(app.url(path)).header(ORIGIN, app.url("")).form(fields);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

pub fn session_of(res: &reqwest::Response) -> String {
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("kanpa_staff="))
        .expect("a session cookie is set")
        .to_owned();
    cookie.split(';').next().unwrap().to_owned()
}

pub fn csrf_in(html: &str) -> String {
    let start =
        html.find(r#"name="csrf" value=""#).expect("the page has a CSRF field") + r#"name="csrf" value=""#.len();
    html[start..].split('"').next().unwrap().to_owned()
}

pub async fn count(db: &Db, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        Db::Sqlite { write, .. } => sqlx::query_scalar(sql).fetch_one(write).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn signed_in(console: &Console, cookie: &str) -> bool {
    let (status, _) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), cookie).await;
    status == 200
}

async fn staff_sign_in_sets_safe_cookies_rotates_the_session_and_ends_it(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("owner@example.jp", console.org, Role::Owner, None).await;
    let res = console.post("/admin/sign-in", &[("email", "Owner@Example.jp "), ("password", PASSWORD)], None).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[LOCATION], "/admin");
    let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/admin"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain-HTTP local development: {set}");
    let first = session_of(&res);
    assert!(signed_in(&console, &first).await);
    // One organisation: /admin goes straight to its dashboard.
    let res = console.client.get(console.url("/admin")).header("cookie", &first).send().await.unwrap();
    assert_eq!(res.headers()[LOCATION], format!("/admin/o/{DEMO_ORG}"));

    // Signing in again with the old session presented: a new id, and the old
    // one is worthless.
    let res =
        console.post("/admin/sign-in", &[("email", "owner@example.jp"), ("password", PASSWORD)], Some(&first)).await;
    assert_eq!(res.status(), 303);
    let second = session_of(&res);
    assert_ne!(first, second);
    assert!(!signed_in(&console, &first).await, "a session id from before sign-in no longer works");
    assert!(signed_in(&console, &second).await);
    // Without a session, the console sends to the sign-in page.
    let res = console.get(&format!("/admin/o/{DEMO_ORG}")).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[LOCATION], "/admin/sign-in");

    // Signing out ends the session in the database, not only in the browser.
    let csrf = console.csrf(&second).await;
    let res = console.post("/admin/sign-out", &[("csrf", &csrf)], Some(&second)).await;
    assert_eq!(res.status(), 303);
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert!(!signed_in(&console, &second).await);
    console.app.stop().await;

    // Behind HTTPS the cookie is Secure.
    let Some(console) = Console::spawn_with(backend, |c| c.server.secure_cookies = true).await else { return };
    console.staff("owner@example.jp", console.org, Role::Owner, None).await;
    let res = console.post("/admin/sign-in", &[("email", "owner@example.jp"), ("password", PASSWORD)], None).await;
    let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("; Secure") && set.contains("HttpOnly") && set.contains("SameSite=Lax"), "{set}");
    console.app.stop().await;
}

async fn a_password_change_ends_every_other_session(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("treasurer@example.jp", console.org, Role::Treasurer, None).await;
    let phone = console.sign_in("treasurer@example.jp").await;
    let laptop = console.sign_in("treasurer@example.jp").await;
    let csrf = console.csrf(&laptop).await;
    // Too short, and two that differ: refused, nothing changed.
    let res = console
        .post("/admin/password", &[("csrf", &csrf), ("password", "short"), ("confirm", "short")], Some(&laptop))
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("10文字以上にしてください"));
    let res = console
        .post(
            "/admin/password",
            &[("csrf", &csrf), ("password", "a new long passphrase"), ("confirm", "another long one")],
            Some(&laptop),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(signed_in(&console, &phone).await, "a refused change ends nothing");

    let res = console
        .post(
            "/admin/password",
            &[("csrf", &csrf), ("password", "a new long passphrase"), ("confirm", "a new long passphrase")],
            Some(&laptop),
        )
        .await;
    assert_eq!(res.status(), 200);
    let fresh = session_of(&res);
    assert!(!signed_in(&console, &phone).await, "the other device is signed out");
    assert!(!signed_in(&console, &laptop).await, "the old id of this browser too");
    assert!(signed_in(&console, &fresh).await, "this browser got a new session");
    // The old password no longer works; the new one does.
    let res = console.post("/admin/sign-in", &[("email", "treasurer@example.jp"), ("password", PASSWORD)], None).await;
    assert_eq!(res.status(), 401);
    let res = console
        .post("/admin/sign-in", &[("email", "treasurer@example.jp"), ("password", "a new long passphrase")], None)
        .await;
    assert_eq!(res.status(), 303);
    console.app.stop().await;
}

fn find_link(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains("/admin/sign-in/") => Some(s.clone()),
        serde_json::Value::Object(map) => map.values().find_map(find_link),
        serde_json::Value::Array(items) => items.iter().find_map(find_link),
        _ => None,
    }
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/').map(|i| rest[i..].to_owned()).unwrap_or_else(|| "/".into())
}

pub(crate) async fn emailed_link(db: &Db, to: &str) -> Option<String> {
    let sql =
        "SELECT data FROM outbox_emails WHERE template IN ('sign_in_link', 'staff_invitation') AND to_address = $1
               ORDER BY id DESC";
    let data: Option<String> = match db {
        Db::Sqlite { write, .. } => sqlx::query_scalar(sql).bind(to).fetch_optional(write).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).bind(to).fetch_optional(pool).await.unwrap(),
    };
    find_link(&serde_json::from_str(&data?).unwrap())
}

async fn an_emailed_link_signs_in_once(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("viewer@example.jp", console.org, Role::Viewer, None).await;
    // The same answer for staff and for strangers; only staff get an email.
    for email in ["viewer@example.jp", "stranger@example.jp"] {
        let res = console.post("/admin/sign-in", &[("email", email), ("password", "")], None).await;
        assert_eq!(res.status(), 200);
        assert!(res.text().await.unwrap().contains("サインイン用リンクをお送りしました"));
    }
    assert!(emailed_link(&console.db, "stranger@example.jp").await.is_none());
    let link = emailed_link(&console.db, "viewer@example.jp").await.expect("a link is emailed to staff");
    let res = console.get(&path_of(&link)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let cookie = session_of(&res);
    assert!(signed_in(&console, &cookie).await);
    let again = console.get(&path_of(&link)).await;
    assert_eq!(again.status(), 410, "the link works once");
    assert_eq!(console.get("/admin/sign-in/not-a-token").await.status(), 410);
    // A malformed address is refused in the reader's language.
    let res = console
        .client
        .post(console.url("/admin/sign-in?lang=en"))
        .header(ORIGIN, console.url(""))
        .form(&[("email", "not-an-address")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("That email address does not look right."));
    console.app.stop().await;
}

async fn sign_in_attempts_are_limited_per_account_and_per_address(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("owner@example.jp", console.org, Role::Owner, None).await;
    console.staff("other@example.jp", console.org, Role::Viewer, None).await;
    for _ in 0..staff::ACCOUNT_FAILURES {
        let res =
            console.post("/admin/sign-in", &[("email", "owner@example.jp"), ("password", "wrong guess!")], None).await;
        assert_eq!(res.status(), 401);
        assert!(res.text().await.unwrap().contains("メールアドレスまたはパスワードが違います"));
    }
    // Now even the right password is not checked for this account…
    let res = console.post("/admin/sign-in", &[("email", "owner@example.jp"), ("password", PASSWORD)], None).await;
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], (staff::THROTTLE_MINUTES * 60).to_string());
    assert!(res.headers().get("set-cookie").is_none());
    assert!(res.text().await.unwrap().contains("15分待つか"));
    // …but another account from the same address still signs in.
    console.sign_in("other@example.jp").await;
    // Guessing across many accounts from one address stops too.
    for i in staff::ACCOUNT_FAILURES..staff::ADDRESS_FAILURES {
        let email = format!("guess{i}@example.jp");
        let res = console.post("/admin/sign-in", &[("email", &email), ("password", "wrong guess!")], None).await;
        assert_eq!(res.status(), 401);
    }
    let res = console
        .client
        .post(console.url("/admin/sign-in?lang=en"))
        .header(ORIGIN, console.url(""))
        .form(&[("email", "other@example.jp"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.text().await.unwrap().contains("Too many failed sign-ins"));
    console.app.stop().await;
}

async fn console_forms_without_this_sessions_csrf_token_change_nothing(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("owner@example.jp", console.org, Role::Owner, None).await;
    console.staff("treasurer@example.jp", console.org, Role::Treasurer, None).await;
    let owner = console.sign_in("owner@example.jp").await;
    let treasurer = console.sign_in("treasurer@example.jp").await;
    let (_, teams) = console.drive_teams().await;
    let fund = teams[0].account.0.to_string();
    let (_, form) = console.get_as(&format!("/admin/o/{DEMO_ORG}/entries/new"), &owner).await;
    let key = form.split(r#"name="key" value=""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
    let foreign = console.csrf(&treasurer).await;
    let before = console.entries().await;
    let path = format!("/admin/o/{DEMO_ORG}/entries/new");
    for csrf in ["", foreign.as_str(), "0000"] {
        let res = console
            .post(
                &path,
                &[
                    ("csrf", csrf),
                    ("key", &key),
                    ("kind", "receipt"),
                    ("fund", &fund),
                    ("holding", "cash"),
                    ("amount", "3000"),
                    ("date", "2026-01-10"),
                    ("party", "会場での現金"),
                ],
                Some(&owner),
            )
            .await;
        assert_eq!(res.status(), 403, "token {csrf:?}");
        assert!(res.text().await.unwrap().contains("何も変更していません"));
    }
    // Staff tokens and sign-out need it too.
    let res =
        console.post(&format!("/admin/o/{DEMO_ORG}/tokens"), &[("label", "x"), ("role", "viewer")], Some(&owner)).await;
    assert_eq!(res.status(), 403);
    let res = console.post("/admin/sign-out", &[("csrf", &foreign)], Some(&owner)).await;
    assert_eq!(res.status(), 403);
    assert!(signed_in(&console, &owner).await);
    assert_eq!(console.entries().await, before, "nothing was recorded");
    assert_eq!(count(&console.db, "SELECT COUNT(*) FROM api_tokens").await, 0);
    // A form from another site is refused even with the right token.
    let csrf = console.csrf(&owner).await;
    let res = console
        .client
        .post(console.url("/admin/sign-out"))
        .header(ORIGIN, "https://evil.example")
        .header("cookie", &owner)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(signed_in(&console, &owner).await);
    console.app.stop().await;
}

/// A manual entry posted straight to the ledger: `amount` received in cash
/// into `fund`, with its receipt issued in the same transaction as the
/// console does.
async fn cash_into(db: &Db, org: OrgId, fund: kanpa_ledger::AccountId, amount: i64, key: &str) -> i64 {
    use kanpa_ledger::chart::Holding;
    use kanpa_ledger::{Currency, EntryHeader, IdempotencyKey, Money, NewEntry, SourceRef};
    use kanpa_payments::receipt::{self, LineKind, NewReceipt, PriceBasis, ReceiptLine, ReceiptSource};
    let mut tx = db.begin().await.unwrap();
    let cash = Holding::Cash.account(&mut tx, org, Currency::Jpy).await.unwrap();
    let header = EntryHeader {
        org,
        key: IdempotencyKey::parse(key).unwrap(),
        occurred_at: Timestamp::now(),
        description: format!("test receipt {key}"),
        source: Some(SourceRef { kind: "manual".into(), reference: key.into() }),
        recorded_by: Some("test".into()),
    };
    let entry = NewEntry::transfer(header, cash, fund, Money::yen(amount)).unwrap();
    let id = kanpa_ledger::store::post(&mut tx, &entry).await.unwrap().entry_id();
    let new = NewReceipt {
        org,
        source: ReceiptSource::manual(key),
        payer_name: format!("payer of {key}"),
        payer_email: String::new(),
        paid_at: Timestamp::now(),
        currency: Currency::Jpy,
        basis: PriceBasis::TaxInclusive,
        lines: vec![ReceiptLine {
            kind: LineKind::Donation,
            description_ja: "寄付".into(),
            description_en: "Donation".into(),
            amount: Money::yen(amount),
            tax_rate: None,
        }],
    };
    receipt::issue(&mut tx, &new).await.unwrap();
    tx.commit().await.unwrap();
    id.0
}

const OWN_SALON: &str = "own-salon";
const FOREIGN_SALON: &str = "tohoku-salon";

async fn salon_of(console: &Console, org: OrgId, slug: &str, name: &str) {
    let input = kanpa_patrons::store::SalonInput {
        slug: slug.into(),
        name_ja: name.into(),
        currency: "JPY".into(),
        contact_email: "salon@example.jp".into(),
        ..kanpa_patrons::store::SalonInput::default()
    };
    kanpa_patrons::store::create_salon(&console.db, org, &input).await.unwrap();
}

/// A tier and a patron in the salon, as the console's tier and patron
/// pages need them.
async fn tier_and_patron_in(console: &Console, slug: &str) -> i64 {
    let salon = kanpa_patrons::store::salon_by_slug(&console.db, slug).await.unwrap();
    let tier = kanpa_patrons::store::TierInput {
        slug: SALON_TIER.into(),
        name_ja: "基本".into(),
        monthly_price: 1000,
        ..kanpa_patrons::store::TierInput::default()
    };
    let tier = kanpa_patrons::store::add_tier(&console.db, salon.id, &tier).await.unwrap();
    let sql = "INSERT INTO memberships (public_id, salon_id, tier_id, email, locale, amount, status, created_at,
                   updated_at)
               VALUES ($1, $2, $3, $4, 'ja', 1000, 'active', $5, $5)";
    let (patron, email) = (patron_of(slug), format!("{slug}-patron@example.jp"));
    let mut tx = console.db.begin().await.unwrap();
    kanpa_ledger::on_tx!(&mut tx, c => sqlx::query(sql).bind(&patron).bind(salon.id).bind(tier.id).bind(&email)
        .bind(Timestamp::now()).execute(c).await.unwrap().rows_affected());
    tx.commit().await.unwrap();
    let post = kanpa_patrons::store::PostInput { title_ja: format!("{slug}の会員向け"), ..Default::default() };
    kanpa_patrons::store::add_post(&console.db, salon.id, &post).await.unwrap().id
}

const SALON_TIER: &str = "basic";

/// The public id of the patron `salon_of` adds to a salon.
fn patron_of(salon: &str) -> String {
    format!("patron-of-{salon}")
}

/// A pledge (pending) to a live campaign of the other organisation.
async fn other_orgs_pledge(console: &Console) -> String {
    let now = Timestamp::now();
    let rfc = |t: Timestamp| t.as_offset().format(&time::format_description::well_known::Rfc3339).unwrap();
    let input = campaigns::CampaignInput {
        slug: "tohoku-secret".into(),
        title_ja: "東北の秘密の勉強会".into(),
        title_en: "Tohoku secret meet-up".into(),
        story_ja: "秘密。".into(),
        currency: "JPY".into(),
        goal: 100_000,
        starts_at: rfc(now.saturating_add(time::Duration::days(-1))),
        deadline: rfc(now.saturating_add(time::Duration::days(10))),
        time_zone: "Asia/Tokyo".into(),
        funding_model: "keep_it_all".into(),
        pool_rule: "equal".into(),
        contact_email: "tohoku@example.jp".into(),
        ..campaigns::CampaignInput::default()
    };
    let campaign = campaigns::create_campaign(&console.db, console.other_org, &input).await.unwrap();
    campaigns::publish(&console.db, campaign.id).await.unwrap();
    let fields = [("amount", "2000"), ("display_name", "秘密の人"), ("email", "himitsu@example.jp")];
    assert_eq!(console.post("/c/tohoku-secret/pledge", &fields, None).await.status(), 303);
    let pledges = campaigns::pledges_of_campaign(&console.db, campaign.id).await.unwrap();
    pledges[0].public_id.clone()
}

/// The other organisation's secret fund, with one entry in it.
async fn other_orgs_entry(console: &Console) -> (kanpa_ledger::AccountId, i64) {
    let mut tx = console.db.begin().await.unwrap();
    let fund = kanpa_ledger::store::create_account(
        &mut tx,
        &kanpa_ledger::NewAccount {
            org: console.other_org,
            code: "fund:secret".into(),
            name: "ひみつ基金".into(),
            kind: kanpa_ledger::AccountKind::Fund,
            currency: kanpa_ledger::Currency::Jpy,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let entry = cash_into(&console.db, console.other_org, fund.id, 77_777, "other-org-cash").await;
    (fund.id, entry)
}

fn team<'a>(teams: &'a [Team], slug: &str) -> &'a Team {
    teams.iter().find(|t| t.slug == slug).unwrap()
}

async fn every_console_route_refuses_other_roles_and_other_organisations(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    let (_, teams) = console.drive_teams().await;
    let nurses = team(&teams, "nurses");
    let pharmacists = team(&teams, "pharmacists");
    let own_entry = cash_into(&console.db, console.org, nurses.account, 5_000, "own-nurses").await;
    let pharmacists_entry = cash_into(&console.db, console.org, pharmacists.account, 6_000, "own-pharmacists").await;
    let (_, foreign_entry) = other_orgs_entry(&console).await;
    let foreign_pledge = other_orgs_pledge(&console).await;
    salon_of(&console, console.org, OWN_SALON, "健康サロン").await;
    salon_of(&console, console.other_org, FOREIGN_SALON, "東北の秘密サロン").await;
    let own_post = tier_and_patron_in(&console, OWN_SALON).await;
    tier_and_patron_in(&console, FOREIGN_SALON).await;
    let (drive, _) = console.drive_teams().await;
    let own_reward = campaigns::rewards(&console.db, drive.id).await.unwrap()[0].id;
    let pledges = campaigns::pledges_of_campaign(&console.db, drive.id).await.unwrap();
    let nurses_pledge = pledges.iter().find(|p| p.team_id == Some(nurses.id)).unwrap().public_id.clone();
    let pharmacists_pledge = pledges.iter().find(|p| p.team_id == Some(pharmacists.id)).unwrap().public_id.clone();
    console.staff("boss@example.jp", console.other_org, Role::Owner, None).await;
    let extra = console.staff("extra@example.jp", console.org, Role::Viewer, None).await;
    let token_id: i64 = {
        kanpa_server::api_token::create(&console.db, console.org, Role::Viewer, "matrix").await.unwrap();
        count(&console.db, "SELECT MAX(id) FROM api_tokens").await
    };
    let people = [
        ("viewer@example.jp", Role::Viewer, None),
        ("organiser@example.jp", Role::Organiser, None),
        ("nurses-treasurer@example.jp", Role::Treasurer, Some(nurses.id)),
        ("treasurer@example.jp", Role::Treasurer, None),
        ("owner@example.jp", Role::Owner, None),
    ];
    let secrets = [
        OTHER_ORG_NAME,
        "ひみつ基金",
        "77,777",
        "boss@example.jp",
        "himitsu@example.jp",
        "東北の秘密の勉強会",
        "東北の秘密サロン",
        "tohoku-salon-patron@example.jp",
        "tohoku-salonの会員向け",
    ];
    let mut checked = 0;
    for (email, role, scope) in people {
        console.staff(email, console.org, role, scope).await;
        let cookie = console.sign_in(email).await;
        let csrf = console.csrf(&cookie).await;
        for (method, pattern, need) in ROUTES {
            let names_team_thing = pattern.contains("{entry}") || pattern.contains("{pledge}");
            // Salons are no team's fund: a team treasurer sees none.
            let names_salon = pattern.contains("{salon}");
            let names_a_thing = names_team_thing || names_salon || pattern.contains("{campaign}");
            for (org, entry, pledge, campaign, salon, expect_hidden) in [
                (DEMO_ORG, own_entry, nurses_pledge.as_str(), DEMO_CAMPAIGN, OWN_SALON, scope.is_some() && names_salon),
                (OTHER_ORG, foreign_entry, foreign_pledge.as_str(), "tohoku-secret", FOREIGN_SALON, true),
                // Another organisation's thing under one's own organisation.
                (DEMO_ORG, foreign_entry, foreign_pledge.as_str(), "tohoku-secret", FOREIGN_SALON, names_a_thing),
                // Another team's, for a treasurer limited to one team.
                (
                    DEMO_ORG,
                    pharmacists_entry,
                    pharmacists_pledge.as_str(),
                    DEMO_CAMPAIGN,
                    OWN_SALON,
                    scope.is_some() && (names_team_thing || names_salon),
                ),
            ]
            .into_iter()
            .enumerate()
            // The last two differ from the first only in the entry or pledge.
            .filter(|(i, _)| *i < 2 || names_a_thing)
            .map(|(_, combination)| combination)
            {
                let path = pattern
                    .replace("{org}", org)
                    .replace("{entry}", &entry.to_string())
                    .replace("{pledge}", pledge)
                    .replace("{campaign}", campaign)
                    .replace("{salon}", salon)
                    .replace("{patron}", &patron_of(salon))
                    .replace("{team}", "nurses")
                    .replace("{reward}", &own_reward.to_string())
                    .replace("{tier}", SALON_TIER)
                    .replace("{post}", &own_post.to_string())
                    .replace("{user}", &extra.to_string())
                    .replace("{id}", &token_id.to_string());
                let res = if *method == "GET" {
                    console.client.get(console.url(&path)).header("cookie", &cookie).send().await.unwrap()
                } else {
                    console.post(&path, &[("csrf", &csrf)], Some(&cookie)).await
                };
                let status = res.status().as_u16();
                let body = res.text().await.unwrap();
                let what = format!("{email} {method} {path}");
                for secret in secrets {
                    assert!(!body.contains(secret), "{what} shows {secret}");
                }
                // Another organisation is not found whatever the role; within
                // one's own, a role that may not act is refused before any id
                // is looked at (so the refusal tells nothing about the id).
                if expect_hidden && (org == OTHER_ORG || need.granted_to(role)) {
                    assert_eq!(status, 404, "{what}: foreign things are not found");
                    assert!(body.contains("お探しのページは見つかりませんでした"), "{what}: the same page as missing");
                } else if !need.granted_to(role) || (scope.is_some() && *need == Need::WholeBooks) {
                    // Reconciliation concerns every fund: not for a treasurer limited to one team.
                    assert_eq!(status, 403, "{what}: the role does not allow it");
                } else {
                    assert!(![401, 403, 404].contains(&status) && status < 500, "{what}: allowed, got {status}");
                }
                checked += 1;
            }
        }
    }
    let with_entry = ROUTES
        .iter()
        .filter(|(_, p, _)| ["{entry}", "{pledge}", "{campaign}", "{salon}"].iter().any(|t| p.contains(t)))
        .count();
    assert_eq!(checked, 5 * (2 * ROUTES.len() + 2 * with_entry));
    // The other organisation's owner sees nothing of this one.
    let boss = console.sign_in("boss@example.jp").await;
    let (status, body) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &boss).await;
    assert_eq!(status, 404);
    assert!(!body.contains("医療職連合"));
    let (status, body) = console.get_as(&format!("/admin/o/{OTHER_ORG}/journal/{own_entry}"), &boss).await;
    assert_eq!(status, 404);
    assert!(!body.contains("test receipt own-nurses"));
    // And through the API: another organisation's campaign is not found.
    let token = kanpa_server::api_token::create(&console.db, console.other_org, Role::Owner, "boss").await.unwrap();
    let res = console
        .client
        .get(console.url(&format!("/api/v1/campaigns/{DEMO_CAMPAIGN}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(!res.text().await.unwrap().contains("看護師"));
    console.app.stop().await;
}

/// The entry form's idempotency key.
async fn form_key(console: &Console, cookie: &str) -> String {
    let (status, form) = console.get_as(&format!("/admin/o/{DEMO_ORG}/entries/new"), cookie).await;
    assert_eq!(status, 200);
    form.split(r#"name="key" value=""#).nth(1).unwrap().split('"').next().unwrap().to_owned()
}

async fn a_treasurer_records_cash_against_a_pledge_and_the_campaign_total_moves(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("treasurer@example.jp", console.org, Role::Treasurer, None).await;
    let cookie = console.sign_in("treasurer@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let (before, teams) = console.drive_teams().await;
    let nurses = team(&teams, "nurses");
    // A supporter starts a pledge on the page but pays in cash at the meet-up.
    let nurses_id = nurses.id.to_string();
    let res = console
        .post(
            &format!("/c/{DEMO_CAMPAIGN}/pledge"),
            &[("team", &nurses_id), ("amount", "4000"), ("display_name", "現金の花子"), ("email", "cash@example.jp")],
            None,
        )
        .await;
    assert_eq!(res.status(), 303);
    let pledges = campaigns::pledges_of_campaign(&console.db, before.id).await.unwrap();
    let pledge = pledges.into_iter().find(|p| p.email == "cash@example.jp").unwrap();
    assert_eq!(pledge.status, PledgeStatus::Pending);
    let key = form_key(&console, &cookie).await;
    let fields = [
        ("csrf", csrf.as_str()),
        ("key", key.as_str()),
        ("kind", "receipt"),
        ("fund", ""),
        ("holding", "cash"),
        ("amount", "¥4,000"),
        ("date", "2026-01-10"),
        ("party", "現金の花子"),
        ("note", "1月の会で受領"),
        ("pledge", pledge.public_id.as_str()),
    ];
    let path = format!("/admin/o/{DEMO_ORG}/entries/new");
    let res = console.post(&path, &fields, Some(&cookie)).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let entry_page = res.headers()[LOCATION].to_str().unwrap().to_owned();
    // The button pressed twice records it once.
    let res = console.post(&path, &fields, Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[LOCATION].to_str().unwrap(), entry_page);

    let pledge = campaigns::pledge_by_public_id(&console.db, &pledge.public_id).await.unwrap();
    assert_eq!(pledge.status, PledgeStatus::Collected);
    let (after, teams_after) = console.drive_teams().await;
    assert_eq!(after.collected, before.collected + 4000);
    assert_eq!(after.raised(), before.raised() + 4000);
    assert_eq!(after.backers, before.backers + 1);
    assert_eq!(team(&teams_after, "nurses").collected, nurses.collected + 4000);
    let fund = kanpa_ledger::store::balance(&console.db, nurses.account).await.unwrap();
    assert_eq!(fund.amount(), -4000, "the fund carries the money as a credit");
    // The campaign page shows it (its cache is at most a second old).
    let total = kanpa_ledger::Money::yen(after.raised()).format(kanpa_ledger::Locale::Ja);
    crate::harness::eventually(5, "the campaign page shows the cash payment", || async {
        console.get(&format!("/c/{DEMO_CAMPAIGN}")).await.text().await.unwrap().contains(&total)
    })
    .await;
    // The console's campaign page shows the totals and the chart, stacked
    // by team with the goal line.
    let (status, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}/campaigns/{DEMO_CAMPAIGN}"), &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("<svg") && html.contains("日ごとの支援額の累計"), "{html}");
    assert!(html.contains(&format!("目標 {}", kanpa_ledger::Money::yen(after.goal).format(kanpa_ledger::Locale::Ja))));
    assert!(html.contains("看護師: ") && html.contains(&total), "a nurses segment and the total");
    // The entry says what it pays and who recorded it.
    let (status, html) = console.get_as(&entry_page, &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains(&pledge.public_id) && html.contains("treasurer@example.jp") && html.contains("現金の花子"));
    assert!(html.contains("¥4,000"));
    // Paying it again (a new form) is refused and records nothing.
    let entries = console.entries().await;
    let key2 = form_key(&console, &cookie).await;
    let mut again = fields;
    again[1] = ("key", key2.as_str());
    let res = console.post(&path, &again, Some(&cookie)).await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("その支援はもう支払えません"));
    assert_eq!(console.entries().await, entries);

    // Reversing it needs a reason, then leaves the fund as before.
    let reverse = format!("{entry_page}/reverse");
    let res = console.post(&reverse, &[("csrf", &csrf), ("reason", "  ")], Some(&cookie)).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("取り消す理由を入力してください"));
    let res = console.post(&reverse, &[("csrf", &csrf), ("reason", "二重に記録した")], Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(kanpa_ledger::store::balance(&console.db, nurses.account).await.unwrap().amount(), 0);
    let res = console.post(&reverse, &[("csrf", &csrf), ("reason", "もう一度")], Some(&cookie)).await;
    assert_eq!(res.status(), 409, "an entry is reversed once");
    let (_, html) = console.get_as(&entry_page, &cookie).await;
    assert!(html.contains("取消仕訳"));
    let report = kanpa_ledger::store::check(&console.db).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    console.app.stop().await;
}

async fn a_team_treasurer_sees_and_moves_only_that_teams_fund(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    let (drive, teams) = console.drive_teams().await;
    let nurses = team(&teams, "nurses");
    let pharmacists = team(&teams, "pharmacists");
    cash_into(&console.db, console.org, nurses.account, 12_345, "nurses-cash").await;
    let pharmacists_entry = cash_into(&console.db, console.org, pharmacists.account, 54_321, "pharmacists-cash").await;
    console.staff("nurse-treasurer@example.jp", console.org, Role::Treasurer, Some(nurses.id)).await;
    let cookie = console.sign_in("nurse-treasurer@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    // One failed card payment in each of the two teams: the nurses'
    // treasurer is told of theirs only.
    for team in [nurses.id, pharmacists.id] {
        let sql = format!(
            "UPDATE pledges SET status = 'payment_failed' WHERE id = (SELECT MIN(id) FROM pledges WHERE team_id = {team} AND status = 'committed')"
        );
        assert_eq!(crate::harness::exec_raw(&console.db, &sql).await.unwrap(), 1);
    }
    let (status, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("支援者の支払いを待っている支援が 1 件"), "{html}");
    assert!(html.contains(nurses.name_ja.as_str()) && html.contains("¥12,345"));
    assert!(!html.contains(pharmacists.name_ja.as_str()) && !html.contains("¥54,321"), "another team's fund");
    assert!(!html.contains("Stripe残高"), "where the whole organisation's money is, is not theirs");
    let (status, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}/journal"), &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("nurses-cash") || html.contains("¥12,345"));
    assert!(!html.contains("¥54,321"));
    let pharmacists_fund = pharmacists.account.0.to_string();
    let (status, _) = console.get_as(&format!("/admin/o/{DEMO_ORG}/journal?fund={pharmacists_fund}"), &cookie).await;
    assert_eq!(status, 404);
    let (status, _) = console.get_as(&format!("/admin/o/{DEMO_ORG}/journal/{pharmacists_entry}"), &cookie).await;
    assert_eq!(status, 404);
    let res = console
        .post(
            &format!("/admin/o/{DEMO_ORG}/journal/{pharmacists_entry}/reverse"),
            &[("csrf", &csrf), ("reason", "x")],
            Some(&cookie),
        )
        .await;
    assert_eq!(res.status(), 404);
    // Recording into another team's fund, or for its pledge: not found.
    let before = console.entries().await;
    let key = form_key(&console, &cookie).await;
    let path = format!("/admin/o/{DEMO_ORG}/entries/new");
    let base = [
        ("csrf", csrf.as_str()),
        ("key", key.as_str()),
        ("kind", "receipt"),
        ("holding", "bank"),
        ("amount", "1000"),
        ("date", "2026-01-10"),
        ("party", "振込"),
    ];
    let mut into_pharmacists = base.to_vec();
    into_pharmacists.push(("fund", &pharmacists_fund));
    assert_eq!(console.post(&path, &into_pharmacists, Some(&cookie)).await.status(), 404);
    let pledges = campaigns::pledges_of_campaign(&console.db, drive.id).await.unwrap();
    let pharmacists_pledge = pledges.iter().find(|p| p.team_id == Some(pharmacists.id)).unwrap();
    let mut for_pharmacists = base.to_vec();
    for_pharmacists.push(("pledge", &pharmacists_pledge.public_id));
    assert_eq!(console.post(&path, &for_pharmacists, Some(&cookie)).await.status(), 404);
    assert_eq!(console.entries().await, before);
    // Their own fund: recorded.
    let nurses_fund = nurses.account.0.to_string();
    let mut into_nurses = base.to_vec();
    into_nurses.push(("fund", &nurses_fund));
    assert_eq!(console.post(&path, &into_nurses, Some(&cookie)).await.status(), 303);
    assert_eq!(kanpa_ledger::store::balance(&console.db, nurses.account).await.unwrap().amount(), -13_345);
    console.app.stop().await;
}

async fn a_disbursement_cannot_exceed_the_fund_unless_explicitly_allowed(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    let (_, teams) = console.drive_teams().await;
    let nurses = team(&teams, "nurses");
    cash_into(&console.db, console.org, nurses.account, 500_000, "nurses-raised").await;
    console.staff("treasurer@example.jp", console.org, Role::Treasurer, None).await;
    let cookie = console.sign_in("treasurer@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let fund = nurses.account.0.to_string();
    let path = format!("/admin/o/{DEMO_ORG}/entries/new");
    let key = form_key(&console, &cookie).await;
    let licence = |amount: &'static str, overdraw: &'static str, key: String| {
        vec![
            ("csrf", csrf.clone()),
            ("key", key),
            ("kind", "disbursement".into()),
            ("fund", fund.clone()),
            ("holding", "bank".into()),
            ("amount", amount.into()),
            ("date", "2026-02-01".into()),
            ("party", "ブランド使用料".into()),
            ("overdraw", overdraw.into()),
        ]
    };
    let before = console.entries().await;
    let form = licence("500,001", "", key.clone());
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = console.post(&path, &fields, Some(&cookie)).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("この基金の残高は¥500,000です"));
    assert_eq!(console.entries().await, before);
    // Exactly what is there: allowed.
    let form = licence("500,000", "", key);
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(console.post(&path, &fields, Some(&cookie)).await.status(), 303);
    assert_eq!(kanpa_ledger::store::balance(&console.db, nurses.account).await.unwrap().amount(), 0);
    // Below zero only when explicitly allowed.
    let form = licence("1", "yes", form_key(&console, &cookie).await);
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(console.post(&path, &fields, Some(&cookie)).await.status(), 303);
    assert_eq!(kanpa_ledger::store::balance(&console.db, nurses.account).await.unwrap().amount(), 1);
    let (_, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &cookie).await;
    assert!(html.contains("-¥1"), "a fund below zero shows it");
    console.app.stop().await;
}

async fn bad_manual_entries_are_refused_in_the_readers_language_and_record_nothing(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    let (_, teams) = console.drive_teams().await;
    let nurses = team(&teams, "nurses");
    let (foreign_fund, _) = other_orgs_entry(&console).await;
    console.staff("treasurer@example.jp", console.org, Role::Treasurer, None).await;
    let cookie = console.sign_in("treasurer@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let key = form_key(&console, &cookie).await;
    let fund = nurses.account.0.to_string();
    let before = console.entries().await;
    let long = "あ".repeat(201);
    let cases: [(&str, &str, &str, &str, u16, &str); 9] = [
        // (amount, date, party, fund, status, English words)
        ("", "2026-01-10", "x", &fund, 422, "Amount: Please fill this in."),
        ("abc", "2026-01-10", "x", &fund, 422, "Amount: Enter the amount in whole yen"),
        ("-500", "2026-01-10", "x", &fund, 422, "The amount cannot be negative."),
        ("10.5", "2026-01-10", "x", &fund, 422, "Amounts in yen have no decimals."),
        ("0", "2026-01-10", "x", &fund, 422, "The amount must be more than zero."),
        ("1000", "2099-01-01", "x", &fund, 422, "The date cannot be in the future."),
        ("1000", "10/01/2026", "x", &fund, 422, "Give the date like 2026-04-01."),
        ("1000", "2026-01-10", "", &fund, 422, "Paid by / paid to: Please fill this in."),
        ("1000", "2026-01-10", &long, &fund, 422, "Use at most 200 characters."),
    ];
    let path = format!("/admin/o/{DEMO_ORG}/entries/new?lang=en");
    for (amount, date, party, fund, status, words) in cases {
        let fields = [
            ("csrf", csrf.as_str()),
            ("key", key.as_str()),
            ("kind", "receipt"),
            ("fund", fund),
            ("holding", "cash"),
            ("amount", amount),
            ("date", date),
            ("party", party),
        ];
        let res = console.post(&path, &fields, Some(&cookie)).await;
        assert_eq!(res.status().as_u16(), status, "{amount:?} {date:?} {party:?}");
        let html = res.text().await.unwrap();
        assert!(html.contains(words), "{words} in {html}");
    }
    // A fund or kind that is not a choice; an unknown or foreign fund.
    let foreign = foreign_fund.0.to_string();
    for (kind, fund, status) in [
        ("gift", fund.as_str(), 422),
        ("receipt", "999999", 404),
        ("receipt", foreign.as_str(), 404),
        ("receipt", "nan", 404),
    ] {
        let fields = [
            ("csrf", csrf.as_str()),
            ("key", key.as_str()),
            ("kind", kind),
            ("fund", fund),
            ("holding", "cash"),
            ("amount", "1000"),
            ("date", "2026-01-10"),
            ("party", "x"),
        ];
        let res = console.post(&path, &fields, Some(&cookie)).await;
        assert_eq!(res.status().as_u16(), status, "{kind} {fund}");
        assert!(!res.text().await.unwrap().contains("ひみつ基金"));
    }
    assert_eq!(console.entries().await, before, "nothing was recorded");
    // HTML typed into a text field is shown as text.
    let fields = [
        ("csrf", csrf.as_str()),
        ("key", key.as_str()),
        ("kind", "receipt"),
        ("fund", fund.as_str()),
        ("holding", "cash"),
        ("amount", "1000"),
        ("date", "2026-01-10"),
        ("party", "<script>alert(1)</script>"),
    ];
    assert_eq!(console.post(&path, &fields, Some(&cookie)).await.status(), 303);
    let (_, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}/journal"), &cookie).await;
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") || html.contains("&#60;script&#62;"), "escaped");
    assert!(!html.contains("<script>alert(1)</script>"));
    // Journal filters: a bad date is explained, a bad kind too.
    let (status, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}/journal?from=yesterday&lang=en"), &cookie).await;
    assert_eq!(status, 422);
    assert!(html.contains("Give the date like 2026-04-01."));
    let (status, _) = console
        .get_as(&format!("/admin/o/{DEMO_ORG}/journal?kind=stripe&from=2026-01-10&until=2026-01-10"), &cookie)
        .await;
    assert_eq!(status, 200);
    let (status, html) = console
        .get_as(&format!("/admin/o/{DEMO_ORG}/journal?kind=manual&from=2026-01-10&until=2026-01-10"), &cookie)
        .await;
    assert_eq!(status, 200);
    assert!(html.contains("¥1,000"));
    let (_, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}/journal?kind=manual&from=2026-01-11"), &cookie).await;
    assert!(!html.contains("¥1,000"), "the date filter leaves it out");
    console.app.stop().await;
}

async fn an_owner_invites_staff_and_creates_a_team_scoped_api_token_shown_once(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    let (_, teams) = console.drive_teams().await;
    let nurses = team(&teams, "nurses");
    console.staff("owner@example.jp", console.org, Role::Owner, None).await;
    let cookie = console.sign_in("owner@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let staff_path = format!("/admin/o/{DEMO_ORG}/staff");
    let nurses_id = nurses.id.to_string();
    // A team for a viewer is refused; a team of nobody's is not found.
    let res = console
        .post(
            &staff_path,
            &[("csrf", &csrf), ("email", "v@example.jp"), ("role", "viewer"), ("team", &nurses_id)],
            Some(&cookie),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("チームに限定できるのは会計担当だけです"));
    let res = console
        .post(
            &staff_path,
            &[("csrf", &csrf), ("email", "v@example.jp"), ("role", "treasurer"), ("team", "999999")],
            Some(&cookie),
        )
        .await;
    assert_eq!(res.status(), 404);
    let res = console.post(&staff_path, &[("csrf", &csrf), ("email", "nope"), ("role", "root")], Some(&cookie)).await;
    assert_eq!(res.status(), 422);
    assert_eq!(count(&console.db, "SELECT COUNT(*) FROM staff_roles").await, 1, "nothing was stored");

    let res = console
        .post(
            &staff_path,
            &[("csrf", &csrf), ("email", "Nurse.Treasurer@example.jp"), ("role", "treasurer"), ("team", &nurses_id)],
            Some(&cookie),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("nurse.treasurer@example.jp"));
    let link = emailed_link(&console.db, "nurse.treasurer@example.jp").await.expect("an invitation is emailed");
    let res = console.get(&path_of(&link)).await;
    assert_eq!(res.status(), 303);
    let invitee = session_of(&res);
    let (status, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &invitee).await;
    assert_eq!(status, 200);
    assert!(html.contains(nurses.name_ja.as_str()) && html.contains("担当チーム"));

    // API tokens: created, shown once, stored hashed, limited to the team.
    let tokens_path = format!("/admin/o/{DEMO_ORG}/tokens");
    let res = console
        .post(
            &tokens_path,
            &[("csrf", &csrf), ("label", "会計ソフト連携"), ("role", "treasurer"), ("team", &nurses_id)],
            Some(&cookie),
        )
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let token =
        html.split("kanpa_").nth(1).map(|t| format!("kanpa_{}", t.split('<').next().unwrap())).expect("token shown");
    let caller = kanpa_server::api_token::authenticate(&console.db, &token).await.unwrap().unwrap();
    assert_eq!((caller.org, caller.role, caller.team), (console.org, Role::Treasurer, Some(nurses.id)));
    // Through the API the token sees its team's campaign and nothing else.
    let other = second_campaign(&console).await;
    let api = |path: String| console.client.get(console.url(&path)).bearer_auth(&token).send();
    let listed: serde_json::Value = api("/api/v1/campaigns".into()).await.unwrap().json().await.unwrap();
    let slugs: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|c| c["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, [DEMO_CAMPAIGN]);
    assert_eq!(api(format!("/api/v1/campaigns/{DEMO_CAMPAIGN}")).await.unwrap().status(), 200);
    assert_eq!(api(format!("/api/v1/campaigns/{other}")).await.unwrap().status(), 404);
    let salons: serde_json::Value = api("/api/v1/salons".into()).await.unwrap().json().await.unwrap();
    assert_eq!(salons["data"], serde_json::json!([]));
    let (_, list) = console.get_as(&tokens_path, &cookie).await;
    assert!(list.contains("会計ソフト連携") && !list.contains(&token), "shown once");
    assert_eq!(count(&console.db, "SELECT COUNT(*) FROM api_tokens WHERE token_hash LIKE 'kanpa_%'").await, 0);
    let id = count(&console.db, "SELECT MAX(id) FROM api_tokens").await;
    let res = console.post(&format!("{tokens_path}/{id}/revoke"), &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    assert!(kanpa_server::api_token::authenticate(&console.db, &token).await.unwrap().is_none());
    let res = console.post(&format!("{tokens_path}/{id}/revoke"), &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(res.status(), 404, "already revoked");

    // The last owner cannot be removed; the invitee can.
    let me = count(&console.db, "SELECT user_id FROM staff_roles WHERE role = 'owner'").await;
    let res = console.post(&format!("{staff_path}/{me}/remove"), &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(res.status(), 409);
    let invited = count(&console.db, "SELECT user_id FROM staff_roles WHERE role = 'treasurer'").await;
    let res = console.post(&format!("{staff_path}/{invited}/remove"), &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    let (status, _) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &invitee).await;
    assert_eq!(status, 404, "no role, no organisation");
    console.app.stop().await;
}

/// A second campaign of the demo organisation, without the nurses.
async fn second_campaign(console: &Console) -> String {
    let now = Timestamp::now();
    let rfc = |t: Timestamp| t.as_offset().format(&time::format_description::well_known::Rfc3339).unwrap();
    let input = campaigns::CampaignInput {
        slug: "spring-meetup".into(),
        title_ja: "春の勉強会".into(),
        title_en: "Spring meet-up".into(),
        story_ja: "会場費。".into(),
        currency: "JPY".into(),
        goal: 100_000,
        starts_at: rfc(now.saturating_add(time::Duration::days(-1))),
        deadline: rfc(now.saturating_add(time::Duration::days(10))),
        time_zone: "Asia/Tokyo".into(),
        funding_model: "keep_it_all".into(),
        pool_rule: "equal".into(),
        contact_email: "spring@example.jp".into(),
        ..campaigns::CampaignInput::default()
    };
    let campaign = campaigns::create_campaign(&console.db, console.org, &input).await.unwrap();
    campaigns::publish(&console.db, campaign.id).await.unwrap().slug
}

async fn kanpa_user_add_prints_a_one_time_sign_in_link_on_the_base_url(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    let url = console.database_url.clone();
    let (code, out, err) = run_kanpa(&url, &["org", "list"]);
    assert_eq!(code, 0, "{err}");
    let slugs: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert!(slugs.contains(&DEMO_ORG) && slugs.contains(&OTHER_ORG), "{out}");

    let (code, out, err) =
        run_kanpa(&url, &["user", "add", "--org", DEMO_ORG, "--email", "first.owner@example.jp", "--role", "owner"]);
    assert_eq!(code, 0, "{err}");
    let link = out.lines().find(|l| l.contains("/admin/sign-in/")).expect("a link is printed").trim().to_owned();
    assert!(link.starts_with("http://127.0.0.1:8080/admin/sign-in/"), "absolute, on server.base_url: {link}");
    let res = console.get(&path_of(&link)).await;
    assert_eq!(res.status(), 303);
    let cookie = session_of(&res);
    let (status, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}/staff"), &cookie).await;
    assert_eq!(status, 200, "the first owner manages staff");
    assert!(html.contains("first.owner@example.jp"));
    assert_eq!(console.get(&path_of(&link)).await.status(), 410, "once");

    for bad in [
        vec!["user", "add", "--org", "no-such-org", "--email", "a@example.jp", "--role", "owner"],
        vec!["user", "add", "--org", DEMO_ORG, "--email", "not-an-address", "--role", "owner"],
        vec!["user", "add", "--org", DEMO_ORG, "--email", "a@example.jp", "--role", "king"],
    ] {
        let (code, _, err) = run_kanpa(&url, &bad);
        assert_ne!(code, 0, "{bad:?}");
        assert!(!err.is_empty());
    }
    console.app.stop().await;
}

/// A field of a form on an HTML page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    html.split(&marker).nth(1).unwrap_or_else(|| panic!("no {name} in {html}")).split('"').next().unwrap().to_owned()
}

async fn a_refund_from_the_console_reaches_stripe_once_and_the_books_follow(backend: TestBackend) {
    use crate::campaigns::{Drive, fee, fund, seven_team_drive, subjects};
    let Some(d) = Drive::start(backend).await else { return };
    let (campaign, teams) = seven_team_drive(d.db(), "refund-2026", "keep_it_all").await;
    let id = d.pledge(&campaign, Some(&teams[0]), 10_000, "refund@example.jp").await;
    d.wait_status(&id, PledgeStatus::Collected).await;
    let org = OrgId(campaign.org_id);
    let slug = "org-refund-2026";
    add_staff(d.db(), "treasurer@example.jp", org, Role::Treasurer, None).await;
    add_staff(d.db(), "viewer@example.jp", org, Role::Viewer, None).await;
    let cookie = sign_in_as(&d.app, "treasurer@example.jp").await;
    let page_path = format!("/admin/o/{slug}/pledges/{id}");
    let html =
        d.app.client.get(d.app.url(&page_path)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("返金できる残り: ¥10,000"), "{html}");
    let (csrf, key) = (hidden(&html, "csrf"), hidden(&html, "key"));
    let refund_path = format!("{page_path}/refund");
    let stripe_refunds =
        || d.stripe.requests().iter().filter(|r| r.method == "POST" && r.path == "/v1/refunds").count();
    let net = 10_000 - fee(10_000);
    let fund_code = format!("fund:refund-2026:{}", teams[0].slug);
    assert_eq!(fund(d.db(), campaign.org_id, &fund_code).await, net);

    // More than was paid: refused before Stripe is asked.
    let res =
        post_as(&d.app, &refund_path, &[("csrf", &csrf), ("key", &key), ("amount", "10,001")], Some(&cookie)).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("未返金の額（¥10,000）を超えています"));
    // A viewer may not refund.
    let viewer = sign_in_as(&d.app, "viewer@example.jp").await;
    let viewer_csrf = hidden(
        &d.app
            .client
            .get(d.app.url("/admin/password"))
            .header("cookie", &viewer)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "csrf",
    );
    let res =
        post_as(&d.app, &refund_path, &[("csrf", &viewer_csrf), ("key", "v"), ("amount", "1")], Some(&viewer)).await;
    assert_eq!(res.status(), 403);
    assert_eq!(stripe_refunds(), 0);

    // A partial refund, the button pressed twice: Stripe is asked once.
    let fields = [("csrf", csrf.as_str()), ("key", key.as_str()), ("amount", "4000")];
    let first = post_as(&d.app, &refund_path, &fields, Some(&cookie));
    let second = post_as(&d.app, &refund_path, &fields, Some(&cookie));
    let (first, second) = tokio::join!(first, second);
    assert_eq!((first.status(), second.status()), (reqwest::StatusCode::SEE_OTHER, reqwest::StatusCode::SEE_OTHER));
    assert_eq!(stripe_refunds(), 1, "one request reaches Stripe");
    let request = d.stripe.requests().into_iter().find(|r| r.path == "/v1/refunds").unwrap();
    assert!(request.idempotency_key.as_deref().is_some_and(|k| k.starts_with("staff-refund:")), "{request:?}");

    // Stripe reports it with charge.refunded; the books and the pledge follow once.
    let events: serde_json::Value = d
        .app
        .client
        .get(format!("{}/v1/events?type=charge.refunded", d.stripe.api_base().trim_end_matches('/')))
        .bearer_auth("sk_test_kanpa")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = events["data"][0].clone();
    assert_eq!(event["data"]["object"]["amount_refunded"], 4000);
    for _ in 0..2 {
        assert_eq!(d.stripe.deliver(&event).await.unwrap(), 200);
    }
    crate::harness::eventually(30, "the refund is posted", || async {
        fund(d.db(), campaign.org_id, &fund_code).await == net - 4000
    })
    .await;
    let pledge = campaigns::pledge_by_public_id(d.db(), &id).await.unwrap();
    assert_eq!((pledge.amount_refunded, pledge.status), (4000, PledgeStatus::Collected));
    assert_eq!(campaigns::campaign_by_id(d.db(), campaign.id).await.unwrap().collected, 6000);
    crate::harness::eventually(30, "the supporter hears of the refund", || async {
        subjects(&d.sink).iter().filter(|s| s.contains("返金しました")).count() == 1
    })
    .await;
    // The page shows it; what is left can be refunded, not more.
    let html =
        d.app.client.get(d.app.url(&page_path)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(
        html.contains("返金できる残り: ¥6,000")
            && html.contains("Stripeが受付済み")
            && html.contains("treasurer@example.jp")
    );
    let key = hidden(&html, "key");
    let res = post_as(&d.app, &refund_path, &[("csrf", &csrf), ("key", &key), ("amount", "6001")], Some(&cookie)).await;
    assert_eq!(res.status(), 422);
    assert_eq!(stripe_refunds(), 1);
    assert!(kanpa_ledger::store::check(d.db()).await.unwrap().is_clean());
}

async fn a_sandbox_payment_is_refunded_through_the_api_and_the_console(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    let slug = second_campaign(&console).await;
    console.staff("owner@example.jp", console.org, Role::Owner, None).await;
    let cookie = console.sign_in("owner@example.jp").await;
    let res = console
        .post(
            &format!("/c/{slug}/pledge"),
            &[("amount", "3000"), ("display_name", "砂場"), ("email", "sand@example.jp")],
            None,
        )
        .await;
    assert_eq!(res.status(), 303);
    let checkout = path_of(res.headers()[LOCATION].to_str().unwrap());
    assert_eq!(console.post(&checkout, &[("action", "succeed")], None).await.status(), 303);
    let campaign = campaigns::campaign_by_slug(&console.db, &slug).await.unwrap();
    let find = || async {
        campaigns::pledges_of_campaign(&console.db, campaign.id)
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.email == "sand@example.jp")
            .unwrap()
    };
    crate::harness::eventually(30, "the sandbox payment is collected", || async {
        find().await.status == PledgeStatus::Collected
    })
    .await;
    let pledge = find().await;
    let page_path = format!("/admin/o/{DEMO_ORG}/pledges/{}", pledge.public_id);
    // The pledge is found by searching.
    let (_, list) = console.get_as(&format!("/admin/o/{DEMO_ORG}/pledges?q=SAND@example"), &cookie).await;
    assert!(list.contains(&pledge.public_id));
    let (_, list) = console.get_as(&format!("/admin/o/{DEMO_ORG}/pledges?q=nobody"), &cookie).await;
    assert!(!list.contains(&pledge.public_id));
    // Through the API: owner and treasurer tokens only, not another
    // organisation's, never more than was paid, once per key.
    let url = console.url(&format!("/api/v1/pledges/{}/refunds", pledge.public_id));
    let client = console.client.clone();
    let api = |token: String, body: serde_json::Value| {
        let (client, url) = (client.clone(), url.clone());
        async move { client.post(url).bearer_auth(token).json(&body).send().await.unwrap() }
    };
    let viewer = kanpa_server::api_token::create(&console.db, console.org, Role::Viewer, "v").await.unwrap();
    let outsider = kanpa_server::api_token::create(&console.db, console.other_org, Role::Owner, "o").await.unwrap();
    let owner = kanpa_server::api_token::create(&console.db, console.org, Role::Treasurer, "t").await.unwrap();
    let body = serde_json::json!({ "amount": 1000, "idempotency_key": "api-1" });
    assert_eq!(api(viewer, body.clone()).await.status(), 403);
    assert_eq!(api(outsider, body.clone()).await.status(), 404);
    let res = api(owner.clone(), serde_json::json!({ "amount": 3001, "idempotency_key": "api-0" })).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("¥3,000"));
    let res = api(owner.clone(), serde_json::json!({ "amount": "lots", "idempotency_key": "api-0" })).await;
    assert_eq!(res.status(), 400);
    assert_eq!(api(owner.clone(), body.clone()).await.status(), 202);
    let again: serde_json::Value = api(owner.clone(), body).await.json().await.unwrap();
    assert_eq!(again["already_requested"], true);
    crate::harness::eventually(30, "the API refund is applied", || async { find().await.amount_refunded == 1000 })
        .await;

    let (_, html) = console.get_as(&page_path, &cookie).await;
    assert!(html.contains("返金できる残り: ¥2,000"), "what is left");
    let (csrf, key) = (hidden(&html, "csrf"), hidden(&html, "key"));
    let res = console
        .post(&format!("{page_path}/refund"), &[("csrf", &csrf), ("key", &key), ("amount", "¥2,000")], Some(&cookie))
        .await;
    assert_eq!(res.status(), 303);
    crate::harness::eventually(30, "the refund is applied", || async { find().await.status == PledgeStatus::Refunded })
        .await;
    let after = campaigns::campaign_by_id(&console.db, campaign.id).await.unwrap();
    assert_eq!((after.collected, after.backers), (0, 0));
    let (_, html) = console.get_as(&page_path, &cookie).await;
    assert!(!html.contains(r#"name="key""#), "nothing is left to refund");
    assert!(kanpa_ledger::store::check(&console.db).await.unwrap().is_clean());
    console.app.stop().await;
}

async fn the_salon_page_charts_patrons_by_status_and_revenue_and_finds_patrons(backend: TestBackend) {
    use kanpa_patrons::demo::{self as salon_demo, DEMO_SALON, DEMO_SALON_ORG};
    let Some(console) = Console::spawn(backend).await else { return };
    assert!(salon_demo::seed(&console.db, Timestamp::now()).await.unwrap());
    let org = kanpa_ledger::store::organisation_by_slug(&console.db, DEMO_SALON_ORG).await.unwrap().unwrap().id;
    console.staff("salon-owner@example.jp", org, Role::Viewer, None).await;
    let cookie = console.sign_in("salon-owner@example.jp").await;
    let (status, dashboard) = console.get_as(&format!("/admin/o/{DEMO_SALON_ORG}"), &cookie).await;
    assert_eq!(status, 200);
    assert!(dashboard.contains(&format!("/admin/o/{DEMO_SALON_ORG}/salons/{DEMO_SALON}")));
    let past_due = kanpa_patrons::store::memberships_of_salon(
        &console.db,
        kanpa_patrons::store::salon_by_slug(&console.db, DEMO_SALON).await.unwrap().id,
    )
    .await
    .unwrap()
    .iter()
    .filter(|m| m.status == kanpa_patrons::MembershipStatus::PastDue)
    .count();
    if past_due > 0 {
        assert!(dashboard.contains(&format!("月額の支払いに失敗した会員が {past_due} 人います")), "{dashboard}");
    } else {
        assert!(dashboard.contains("支払い待ちの失敗した決済はありません"));
    }
    let path = format!("/admin/o/{DEMO_SALON_ORG}/salons/{DEMO_SALON}");
    let (status, html) = console.get_as(&path, &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("状態別の会員数") && html.contains("各月末の月額収入"), "both charts");
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains("有効: "), "a bar of active patrons, named in Japanese");
    let salon = kanpa_patrons::store::salon_by_slug(&console.db, DEMO_SALON).await.unwrap();
    let tiers = kanpa_patrons::store::tiers(&console.db, salon.id).await.unwrap();
    let memberships = kanpa_patrons::store::memberships_of_salon(&console.db, salon.id).await.unwrap();
    let roster = kanpa_patrons::roster::summarise(&memberships, &tiers, Timestamp::now(), 12);
    let mrr = kanpa_ledger::Money::yen(roster.mrr).format(kanpa_ledger::Locale::Ja);
    assert!(html.contains(&format!("MRR <strong>{mrr}</strong>")), "{mrr}");
    let bars =
        roster.counts.values().filter(|n| **n > 0).count() + roster.months.iter().filter(|m| m.mrr_at_end > 0).count();
    assert_eq!(html.matches("<rect").count(), bars, "one bar per status with patrons and per month with revenue");
    // Search by email, in any case.
    let one = memberships[0].email.clone();
    let (_, found) = console.get_as(&format!("{path}?q={}", one.to_uppercase()), &cookie).await;
    assert!(found.contains(one.as_str()));
    let (status, _) = console.get_as(&format!("{path}?q={}", "x".repeat(101)), &cookie).await;
    assert_eq!(status, 422);
    console.app.stop().await;
}

async fn an_organiser_sets_up_a_campaign_with_teams_and_publishes_it(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("organiser@example.jp", console.org, Role::Organiser, None).await;
    let cookie = console.sign_in("organiser@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let path = format!("/admin/o/{DEMO_ORG}/campaigns/new");
    let (status, form) = console.get_as(&path, &cookie).await;
    assert_eq!(status, 200);
    assert!(form.contains(r#"name="deadline""#));
    let fields = |slug: &'static str, goal: &'static str, deadline: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("slug", slug.to_owned()),
            ("title_ja", "<b>春の</b>勉強会".to_owned()),
            ("goal", goal.to_owned()),
            ("starts_at", "2026-01-01T10:00".to_owned()),
            ("deadline", deadline.to_owned()),
            ("funding_model", "keep_it_all".to_owned()),
            ("pool_rule", "equal".to_owned()),
            ("contact_email", "spring@example.jp".to_owned()),
        ]
    };
    let before = count(&console.db, "SELECT COUNT(*) FROM campaigns").await;
    for (slug, goal, deadline, words) in [
        ("Bad Slug!", "100000", "2099-01-01T10:00", "3〜64 文字"),
        ("spring-2026", "たくさん", "2099-01-01T10:00", ""),
        ("spring-2026", "100000", "2025-12-31T10:00", ""),
        (DEMO_CAMPAIGN, "100000", "2099-01-01T10:00", ""),
    ] {
        let form = fields(slug, goal, deadline);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = console.post(&path, &form, Some(&cookie)).await;
        assert!([409, 422].contains(&res.status().as_u16()), "{slug} {goal} {deadline}: {}", res.status());
        let html = res.text().await.unwrap();
        assert!(html.contains(r#"class="problem""#) && html.contains(words), "{html}");
    }
    assert_eq!(count(&console.db, "SELECT COUNT(*) FROM campaigns").await, before, "nothing was created");
    let form = fields("spring-2026", "100,000", "2099-01-01T10:00");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = console.post(&path, &form, Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    let page_path = format!("/admin/o/{DEMO_ORG}/campaigns/spring-2026");
    assert_eq!(res.headers()[LOCATION], page_path);
    let (_, html) = console.get_as(&page_path, &cookie).await;
    assert!(html.contains("&lt;b&gt;春の&lt;/b&gt;勉強会") || html.contains("&#60;b&#62;"), "escaped title");
    assert!(html.contains("下書き"));
    assert_eq!(console.get("/c/spring-2026").await.status(), 404, "a draft is not public");
    // A team: a bad goal is refused, a good one added.
    let teams = format!("{page_path}/teams");
    let res = console
        .post(&teams, &[("csrf", &csrf), ("slug", "venue"), ("name_ja", "会場"), ("goal", "-5")], Some(&cookie))
        .await;
    assert_eq!(res.status(), 422);
    let res = console
        .post(&teams, &[("csrf", &csrf), ("slug", "venue"), ("name_ja", "会場"), ("goal", "50000")], Some(&cookie))
        .await;
    assert_eq!(res.status(), 303);
    let campaign = campaigns::campaign_by_slug(&console.db, "spring-2026").await.unwrap();
    assert_eq!(campaigns::teams(&console.db, campaign.id).await.unwrap().len(), 1);
    // Editing: a bad goal or an empty title is refused; then the words and
    // the goal change.
    let edit = format!("{page_path}/edit");
    let res = console.post(&edit, &[("csrf", &csrf), ("title_ja", "春の勉強会"), ("goal", "abc")], Some(&cookie)).await;
    assert_eq!(res.status(), 422);
    let res = console.post(&edit, &[("csrf", &csrf), ("title_ja", "  "), ("goal", "")], Some(&cookie)).await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("入力してください"));
    let fields = [
        ("csrf", csrf.as_str()),
        ("title_ja", "春の勉強会 2026"),
        ("story_ja", "会場費を集めます。"),
        ("goal", "120,000"),
    ];
    assert_eq!(console.post(&edit, &fields, Some(&cookie)).await.status(), 303);
    let edited = campaigns::campaign_by_id(&console.db, campaign.id).await.unwrap();
    assert_eq!(
        (edited.title_ja.as_str(), edited.story_ja.as_str(), edited.goal),
        ("春の勉強会 2026", "会場費を集めます。", 120_000)
    );
    // A reward: bad amounts and quantities are refused, a good one added.
    let rewards = format!("{page_path}/rewards");
    for (min, quantity) in [("abc", ""), ("1000", "-1"), ("1000", "many")] {
        let fields = [("csrf", csrf.as_str()), ("title_ja", "お礼状"), ("min_amount", min), ("quantity", quantity)];
        assert_eq!(console.post(&rewards, &fields, Some(&cookie)).await.status(), 422, "{min} {quantity}");
    }
    assert!(campaigns::rewards(&console.db, campaign.id).await.unwrap().is_empty());
    let fields = [("csrf", csrf.as_str()), ("title_ja", "お礼状"), ("min_amount", "3,000"), ("quantity", "20")];
    assert_eq!(console.post(&rewards, &fields, Some(&cookie)).await.status(), 303);
    let added = campaigns::rewards(&console.db, campaign.id).await.unwrap();
    assert_eq!((added.len(), added[0].min_amount, added[0].quantity), (1, 3000, Some(20)));
    let res = console.post(&format!("{page_path}/publish"), &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(console.get("/c/spring-2026").await.status(), 200, "published");
    let res = console.post(&format!("{page_path}/publish"), &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(res.status(), 409, "published once");
    // A salon of the organisation is opened, then closed.
    salon_of(&console, console.org, OWN_SALON, "健康サロン").await;
    let tiers_path = format!("/admin/o/{DEMO_ORG}/salons/{OWN_SALON}/tiers");
    let tier = |price: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("slug", "basic".into()),
            ("name_ja", "ベーシック".into()),
            ("monthly_price", price.into()),
        ]
    };
    let bad = tier("月500円");
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(console.post(&tiers_path, &bad, Some(&cookie)).await.status(), 422);
    let good = tier("500");
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(console.post(&tiers_path, &good, Some(&cookie)).await.status(), 303);
    let salon = kanpa_patrons::store::salon_by_slug(&console.db, OWN_SALON).await.unwrap();
    let tiers = kanpa_patrons::store::tiers(&console.db, salon.id).await.unwrap();
    assert_eq!((tiers.len(), tiers[0].monthly_price), (1, 500));
    let status_path = format!("/admin/o/{DEMO_ORG}/salons/{OWN_SALON}/status");
    let res = console.post(&status_path, &[("csrf", &csrf), ("to", "sideways")], Some(&cookie)).await;
    assert_eq!(res.status(), 422);
    let open = console.post(&status_path, &[("csrf", &csrf), ("to", "open")], Some(&cookie)).await;
    assert_eq!(open.status(), 303);
    let salon = kanpa_patrons::store::salon_by_slug(&console.db, OWN_SALON).await.unwrap();
    assert_eq!(salon.status, kanpa_patrons::SalonStatus::Open);
    assert_eq!(console.post(&status_path, &[("csrf", &csrf), ("to", "closed")], Some(&cookie)).await.status(), 303);
    let salon = kanpa_patrons::store::salon_by_slug(&console.db, OWN_SALON).await.unwrap();
    assert_eq!(salon.status, kanpa_patrons::SalonStatus::Closed);
    console.app.stop().await;
}

/// The receipt number linked from a manual entry's page, and the link.
fn receipt_on(html: &str) -> Option<(String, String)> {
    let link = html.split(r#"class="receipt-link" href=""#).nth(1)?.split('"').next()?.to_owned();
    let number = html.split("領収書番号 ").nth(1)?.split('<').next()?.to_owned();
    Some((number, link))
}

async fn cash_against_a_pledge_gets_the_next_receipt_number_once_and_only_its_organisation_sees_it(
    backend: TestBackend,
) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("treasurer@example.jp", console.org, Role::Treasurer, None).await;
    console.staff("boss@example.jp", console.other_org, Role::Owner, None).await;
    let cookie = console.sign_in("treasurer@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let (drive, _) = console.drive_teams().await;
    // A reward at ¥1,100: ¥100 of it is consumption tax at 10%.
    let reward = campaigns::add_reward(
        &console.db,
        drive.id,
        &campaigns::RewardInput {
            title_ja: "記念ステッカー".into(),
            title_en: "A sticker".into(),
            min_amount: 1_100,
            ..campaigns::RewardInput::default()
        },
    )
    .await
    .unwrap();
    // Earlier receipts of this organisation (and one of the other, which
    // does not count): the cash gets the next number after this
    // organisation's last.
    let nurses = team(&console.drive_teams().await.1, "nurses").account;
    cash_into(&console.db, console.org, nurses, 1_000, "earlier-cash-1").await;
    cash_into(&console.db, console.org, nurses, 2_000, "earlier-cash-2").await;
    other_orgs_entry(&console).await;
    let before = kanpa_payments::receipt::numbers_of(&console.db, console.org).await.unwrap();
    assert_eq!(before, vec![1, 2]);
    let reward_id = reward.id.to_string();
    let res = console
        .post(
            &format!("/c/{DEMO_CAMPAIGN}/pledge"),
            &[
                ("amount", "1500"),
                ("reward", &reward_id),
                ("display_name", "ネットの名前"),
                ("email", "cash@example.jp"),
            ],
            None,
        )
        .await;
    assert_eq!(res.status(), 303);
    let pledge = campaigns::pledges_of_campaign(&console.db, drive.id)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.email == "cash@example.jp")
        .unwrap();
    let key = form_key(&console, &cookie).await;
    let fields = [
        ("csrf", csrf.as_str()),
        ("key", key.as_str()),
        ("kind", "receipt"),
        ("holding", "cash"),
        ("amount", "1500"),
        ("date", "2026-01-10"),
        ("party", "現金の花子"),
        ("pledge", pledge.public_id.as_str()),
    ];
    let path = format!("/admin/o/{DEMO_ORG}/entries/new");
    let res = console.post(&path, &fields, Some(&cookie)).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let entry_page = res.headers()[LOCATION].to_str().unwrap().to_owned();
    // Sent twice: one entry, one receipt.
    let res = console.post(&path, &fields, Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[LOCATION].to_str().unwrap(), entry_page);
    assert_eq!(kanpa_payments::receipt::numbers_of(&console.db, console.org).await.unwrap(), vec![1, 2, 3]);
    let manual = "SELECT COUNT(*) FROM receipts WHERE source_kind = 'manual'";
    assert_eq!(count(&console.db, manual).await, 4, "two earlier, one of the other organisation, this one");

    // The entry's page shows the number and links the printable receipt.
    let (status, html) = console.get_as(&entry_page, &cookie).await;
    assert_eq!(status, 200);
    let (number, link) = receipt_on(&html).expect("the entry links its receipt");
    assert_eq!(number, "00000003");
    assert_eq!(link, format!("{entry_page}/receipt"));
    let (status, receipt) = console.get_as(&link, &cookie).await;
    assert_eq!(status, 200);
    assert!(receipt.contains("00000003"), "{receipt}");
    assert!(receipt.contains("現金の花子"), "addressed to the payer named on the form: {receipt}");
    assert!(!receipt.contains("ネットの名前"));
    assert!(receipt.contains("¥1,500"), "the total");
    assert!(receipt.contains("記念ステッカー") && receipt.contains("¥1,100"), "the reward as a purchase");
    assert!(receipt.contains("10%対象 ¥1,100(うち消費税 ¥100)"), "tax once, on the reward only: {receipt}");
    assert!(receipt.contains("ご支援(寄付)") && receipt.contains("¥400") && receipt.contains("不課税"));
    assert!(receipt.contains(&pledge.public_id));

    // The supporter finds it from "my pledges".
    let me = crate::receipts::sign_in(&console.app, "cash@example.jp").await;
    let res = console.client.get(console.url("/me")).header("cookie", &me).send().await.unwrap();
    let mine = res.text().await.unwrap();
    let own = format!("/me/pledges/{}/receipt", pledge.public_id);
    assert!(mine.contains(&own), "{mine}");
    let res = console.client.get(console.url(&own)).header("cookie", &me).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("00000003") && html.contains("10%対象 ¥1,100(うち消費税 ¥100)"));

    // Another organisation's owner finds nothing, under either organisation.
    let boss = console.sign_in("boss@example.jp").await;
    let entry_id = entry_page.rsplit('/').next().unwrap();
    for org in [OTHER_ORG, DEMO_ORG] {
        let (status, body) = console.get_as(&format!("/admin/o/{org}/journal/{entry_id}/receipt"), &boss).await;
        assert_eq!(status, 404, "{org}");
        assert!(!body.contains("現金の花子") && !body.contains("00000003"));
    }

    // Reversed, the entry says so; the receipt stays as issued.
    let res =
        console.post(&format!("{entry_page}/reverse"), &[("csrf", &csrf), ("reason", "誤り")], Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    let (_, html) = console.get_as(&entry_page, &cookie).await;
    assert!(html.contains("この仕訳は取り消されました"), "{html}");
    assert_eq!(receipt_on(&html).map(|(n, _)| n).as_deref(), Some("00000003"));
    let (status, again) = console.get_as(&link, &cookie).await;
    assert_eq!(status, 200);
    assert!(again.contains("現金の花子") && again.contains("¥1,500"));
    assert_eq!(kanpa_payments::receipt::numbers_of(&console.db, console.org).await.unwrap(), vec![1, 2, 3]);
    console.app.stop().await;
}

async fn money_received_without_a_pledge_gets_an_untaxed_donation_receipt(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("treasurer@example.jp", console.org, Role::Treasurer, None).await;
    let cookie = console.sign_in("treasurer@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let nurses = team(&console.drive_teams().await.1, "nurses").account.0.to_string();
    let path = format!("/admin/o/{DEMO_ORG}/entries/new");
    let key = form_key(&console, &cookie).await;
    let received = [
        ("csrf", csrf.as_str()),
        ("key", key.as_str()),
        ("kind", "receipt"),
        ("fund", nurses.as_str()),
        ("holding", "bank"),
        ("amount", "2200"),
        ("date", "2026-01-11"),
        ("party", "振込の太郎"),
    ];
    let res = console.post(&path, &received, Some(&cookie)).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let entry_page = res.headers()[LOCATION].to_str().unwrap().to_owned();
    let (_, html) = console.get_as(&entry_page, &cookie).await;
    let (number, link) = receipt_on(&html).expect("the entry links its receipt");
    assert_eq!(number, "00000001");
    let (status, receipt) = console.get_as(&link, &cookie).await;
    assert_eq!(status, 200);
    assert!(receipt.contains("振込の太郎") && receipt.contains("¥2,200") && receipt.contains("不課税"));
    assert!(!receipt.contains("10%"), "a donation carries no consumption tax: {receipt}");
    // A disbursement is no receipt of money: it issues none.
    let key = form_key(&console, &cookie).await;
    let paid_out = [
        ("csrf", csrf.as_str()),
        ("key", key.as_str()),
        ("kind", "disbursement"),
        ("fund", nurses.as_str()),
        ("holding", "bank"),
        ("amount", "200"),
        ("date", "2026-01-12"),
        ("party", "会場"),
    ];
    let res = console.post(&path, &paid_out, Some(&cookie)).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    let out_page = res.headers()[LOCATION].to_str().unwrap().to_owned();
    let (_, html) = console.get_as(&out_page, &cookie).await;
    assert!(receipt_on(&html).is_none());
    let (status, _) = console.get_as(&format!("{out_page}/receipt"), &cookie).await;
    assert_eq!(status, 404);
    assert_eq!(kanpa_payments::receipt::numbers_of(&console.db, console.org).await.unwrap(), vec![1]);
    console.app.stop().await;
}

/// A form POST whose fields are owned strings.
async fn post_fields(console: &Console, path: &str, fields: &[(&str, String)], cookie: &str) -> (u16, String) {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = console.post(path, &fields, Some(cookie)).await;
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn an_organiser_edits_teams_and_rewards_within_what_may_change_once_live_and_retires_a_reward_and_a_tier(
    backend: TestBackend,
) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("organiser@example.jp", console.org, Role::Organiser, None).await;
    let cookie = console.sign_in("organiser@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let (drive, teams) = console.drive_teams().await;
    let nurses = team(&teams, "nurses").clone();
    let page_path = format!("/admin/o/{DEMO_ORG}/campaigns/{DEMO_CAMPAIGN}");
    let (status, html) = console.get_as(&page_path, &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("目標額(全体・チーム)は引き上げのみできます"), "the page says what may change");

    // A live drive's team goal may rise, never fall; bad input changes nothing.
    let team_path = format!("{page_path}/teams/nurses");
    let team_form = |goal: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("name_ja", "看護師<b>チーム</b>".to_owned()),
            ("name_en", "Nurses".to_owned()),
            ("goal", goal.to_owned()),
        ]
    };
    let (status, body) = post_fields(&console, &team_path, &team_form("400000"), &cookie).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("¥500,000"), "the error names the least the goal may be: {body}");
    let (status, _) = post_fields(&console, &team_path, &team_form("五十万"), &cookie).await;
    assert_eq!(status, 422);
    let unchanged = campaigns::team(&console.db, drive.id, nurses.id).await.unwrap();
    assert_eq!((unchanged.goal, unchanged.name_ja.as_str()), (500_000, nurses.name_ja.as_str()));
    let (status, _) = post_fields(&console, &team_path, &team_form("600,000"), &cookie).await;
    assert_eq!(status, 303);
    let raised = campaigns::team(&console.db, drive.id, nurses.id).await.unwrap();
    assert_eq!((raised.goal, raised.name_ja.as_str(), raised.pool_weight), (600_000, "看護師<b>チーム</b>", 1));
    let (_, html) = console.get_as(&page_path, &cookie).await;
    let escaped = html.contains("看護師&lt;b&gt;チーム") || html.contains("看護師&#60;b&#62;チーム");
    assert!(escaped && !html.contains("<b>チーム"), "names are escaped");
    let (status, _) = post_fields(&console, &format!("{page_path}/teams/nobody"), &team_form("1"), &cookie).await;
    assert_eq!(status, 404);
    // The campaign's goal too.
    let edit_path = format!("{page_path}/edit");
    let edit =
        |goal: &str| vec![("csrf", csrf.clone()), ("title_ja", drive.title_ja.clone()), ("goal", goal.to_owned())];
    let (status, body) = post_fields(&console, &edit_path, &edit("3000000"), &cookie).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(campaigns::campaign_by_id(&console.db, drive.id).await.unwrap().goal, 3_500_000);
    let (status, _) = post_fields(&console, &edit_path, &edit("4000000"), &cookie).await;
    assert_eq!(status, 303);
    assert_eq!(campaigns::campaign_by_id(&console.db, drive.id).await.unwrap().goal, 4_000_000);

    // A reward's words and quantity change; its price is fixed once live and
    // its quantity never falls below what is claimed.
    let rewards = campaigns::rewards(&console.db, drive.id).await.unwrap();
    let patch = rewards.iter().find(|r| r.team_id == Some(nurses.id)).unwrap().clone();
    let reward_path = format!("{page_path}/rewards/{}", patch.id);
    let reward_form = |min: &str, quantity: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("title_ja", "記念ワッペン(改)".to_owned()),
            ("title_en", "Patch".to_owned()),
            ("description_ja", patch.description_ja.clone()),
            ("min_amount", min.to_owned()),
            ("quantity", quantity.to_owned()),
        ]
    };
    let (status, _) = post_fields(&console, &reward_path, &reward_form("4000", "100"), &cookie).await;
    assert_eq!(status, 409, "the price is fixed once live");
    let (status, _) = post_fields(&console, &reward_path, &reward_form("5000", "-1"), &cookie).await;
    assert_eq!(status, 422);
    let (status, _) = post_fields(&console, &reward_path, &reward_form("5000", "120"), &cookie).await;
    assert_eq!(status, 303);
    let edited = campaigns::reward(&console.db, drive.id, patch.id).await.unwrap();
    assert_eq!(
        (edited.title_ja.as_str(), edited.quantity, edited.min_amount, edited.team_id, edited.description_en.as_str()),
        ("記念ワッペン(改)", Some(120), 5000, Some(nurses.id), patch.description_en.as_str()),
        "what the form does not show is kept"
    );

    // Retired: shown as such, no new pledge may take it.
    let retire = |to: &str| vec![("csrf", csrf.clone()), ("to", to.to_owned())];
    let (status, _) = post_fields(&console, &format!("{reward_path}/retire"), &retire("gone"), &cookie).await;
    assert_eq!(status, 422);
    let (status, _) = post_fields(&console, &format!("{reward_path}/retire"), &retire("retired"), &cookie).await;
    assert_eq!(status, 303);
    assert!(campaigns::reward(&console.db, drive.id, patch.id).await.unwrap().is_retired());
    let public = console.get(&format!("/c/{DEMO_CAMPAIGN}")).await.text().await.unwrap();
    assert!(public.contains("受付終了"), "the campaign page shows it retired");
    let pledges_before = campaigns::pledges_of_campaign(&console.db, drive.id).await.unwrap().len();
    let fields = [
        ("amount", "5000".to_owned()),
        ("team", nurses.id.to_string()),
        ("reward", patch.id.to_string()),
        ("display_name", "新しい人".to_owned()),
        ("email", "new@example.jp".to_owned()),
    ];
    let (status, body) = post_fields(&console, &format!("/c/{DEMO_CAMPAIGN}/pledge"), &fields, "x=y").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("このリターンは現在選べません"));
    assert_eq!(campaigns::pledges_of_campaign(&console.db, drive.id).await.unwrap().len(), pledges_before);
    let (_, html) = console.get_as(&page_path, &cookie).await;
    assert!(html.contains("受付を再開する"));
    let (status, _) = post_fields(&console, &format!("{reward_path}/retire"), &retire("active"), &cookie).await;
    assert_eq!(status, 303);
    assert!(!campaigns::reward(&console.db, drive.id, patch.id).await.unwrap().is_retired());
    let (status, _) =
        post_fields(&console, &format!("{page_path}/rewards/999999/retire"), &retire("retired"), &cookie).await;
    assert_eq!(status, 404);

    // A tier: its price changes for new patrons; retired, nobody new joins.
    salon_of(&console, console.org, OWN_SALON, "健康サロン").await;
    tier_and_patron_in(&console, OWN_SALON).await;
    let salon = kanpa_patrons::store::salon_by_slug(&console.db, OWN_SALON).await.unwrap();
    kanpa_patrons::store::set_salon_status(&console.db, salon.id, kanpa_patrons::SalonStatus::Open).await.unwrap();
    let tier_path = format!("/admin/o/{DEMO_ORG}/salons/{OWN_SALON}/tiers/{SALON_TIER}");
    let tier_form = |price: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("name_ja", "基本プラン".to_owned()),
            ("monthly_price", price.to_owned()),
            ("seat_limit", String::new()),
        ]
    };
    let (status, _) = post_fields(&console, &tier_path, &tier_form("千円"), &cookie).await;
    assert_eq!(status, 422);
    let (status, _) = post_fields(&console, &tier_path, &tier_form("1200"), &cookie).await;
    assert_eq!(status, 303);
    let tier = kanpa_patrons::store::tier_by_slug(&console.db, salon.id, SALON_TIER).await.unwrap();
    assert_eq!((tier.monthly_price, tier.name_ja.as_str()), (1200, "基本プラン"));
    let sql = format!("SELECT amount FROM memberships WHERE public_id = '{}'", patron_of(OWN_SALON));
    assert_eq!(count(&console.db, &sql).await, 1000, "the existing patron keeps their price");
    let retire_tier = vec![("csrf", csrf.clone()), ("status", "retired".to_owned())];
    let (status, _) = post_fields(&console, &tier_path, &retire_tier, &cookie).await;
    assert_eq!(status, 303);
    let (_, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}/salons/{OWN_SALON}"), &cookie).await;
    assert!(html.contains("終了") && html.contains("受付を再開する"), "shown retired");
    let join = [("tier", SALON_TIER.to_owned()), ("email", "new-patron@example.jp".to_owned())];
    let (status, body) = post_fields(&console, &format!("/s/{OWN_SALON}/join"), &join, "x=y").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("このプランは新規の入会を受け付けていません"));
    assert_eq!(count(&console.db, "SELECT COUNT(*) FROM memberships").await, 1);
    console.app.stop().await;
}

async fn an_organiser_closes_one_campaign_early_and_cancels_another_with_nobody_charged(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("organiser@example.jp", console.org, Role::Organiser, None).await;
    let cookie = console.sign_in("organiser@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let (drive, _) = console.drive_teams().await;
    let committed = campaigns::pledges_of_campaign(&console.db, drive.id)
        .await
        .unwrap()
        .iter()
        .filter(|p| p.status == PledgeStatus::Committed)
        .count();
    assert!(committed > 10 && drive.pledged > 0);
    let page_path = format!("/admin/o/{DEMO_ORG}/campaigns/{DEMO_CAMPAIGN}");
    let end = |confirm: &str| vec![("csrf", csrf.clone()), ("confirm", confirm.to_owned())];

    // Cancelling needs the address typed; without it nothing changes.
    let (status, body) = post_fields(&console, &format!("{page_path}/cancel"), &end("yes"), &cookie).await;
    assert_eq!(status, 422);
    assert!(body.contains(DEMO_CAMPAIGN), "{body}");
    assert_eq!(campaigns::campaign_by_id(&console.db, drive.id).await.unwrap().status.as_str(), "live");

    // A keep-it-all campaign with a payment on its way (a supporter at
    // Checkout) cannot be cancelled.
    let spring = second_campaign(&console).await;
    let fields = [("amount", "2000"), ("display_name", "春の人"), ("email", "haru@example.jp")];
    assert_eq!(console.post(&format!("/c/{spring}/pledge"), &fields, None).await.status(), 303);
    let spring_path = format!("/admin/o/{DEMO_ORG}/campaigns/{spring}");
    let (status, body) = post_fields(&console, &format!("{spring_path}/cancel"), &end(&spring), &cookie).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("すでにお金を受け取っています(入金済み ¥0、支払い待ち 1 件)"), "{body}");
    let en_path = format!("{spring_path}/cancel?lang=en");
    let (status, body) = post_fields(&console, &en_path, &end(&spring), &cookie).await;
    assert_eq!(status, 409);
    assert!(body.contains("Money has already been taken (¥0 collected, 1 payments on their way)"), "{body}");
    // It can be closed early: settled at once by the usual rules.
    let (status, _) = post_fields(&console, &format!("{spring_path}/close"), &end("spring"), &cookie).await;
    assert_eq!(status, 422);
    let (status, _) = post_fields(&console, &format!("{spring_path}/close"), &end(&spring), &cookie).await;
    assert_eq!(status, 303);
    crate::harness::eventually(30, "the early close settles", || async {
        let c = campaigns::campaign_by_slug(&console.db, &spring).await.unwrap();
        c.status.as_str() == "failed" && c.deadline <= Timestamp::now()
    })
    .await;
    let (status, _) = post_fields(&console, &format!("{spring_path}/close"), &end(&spring), &cookie).await;
    assert_eq!(status, 409, "closed once");

    // The all-or-nothing drive is cancelled: every saved card released,
    // totals back to nothing, every supporter told, nobody charged.
    let (status, _) = post_fields(&console, &format!("{page_path}/cancel"), &end(DEMO_CAMPAIGN), &cookie).await;
    assert_eq!(status, 303);
    let cancelled = campaigns::campaign_by_id(&console.db, drive.id).await.unwrap();
    assert_eq!((cancelled.status.as_str(), cancelled.pledged, cancelled.backers), ("cancelled", 0, 0));
    let pledges = campaigns::pledges_of_campaign(&console.db, drive.id).await.unwrap();
    assert!(pledges.iter().all(|p| p.status != PledgeStatus::Committed));
    assert_eq!(pledges.iter().filter(|p| p.status == PledgeStatus::Void).count(), committed);
    let teams = campaigns::teams(&console.db, drive.id).await.unwrap();
    assert!(teams.iter().all(|t| t.pledged == 0 && t.backers == 0));
    let sql = "SELECT COUNT(*) FROM outbox_emails WHERE template = 'campaign_cancelled'";
    assert_eq!(count(&console.db, sql).await, committed as i64);
    assert_eq!(count(&console.db, "SELECT COUNT(*) FROM sandbox_payments WHERE kind = 'payment_intent'").await, 0);
    assert_eq!(console.get(&format!("/c/{DEMO_CAMPAIGN}")).await.status(), 404, "no longer public");
    let (status, _) = post_fields(&console, &format!("{page_path}/cancel"), &end(DEMO_CAMPAIGN), &cookie).await;
    assert_eq!(status, 409, "cancelled once");
    // Its settlement (the job at the deadline, or the operator's command)
    // finds nothing to do and charges nobody.
    let (code, out, err) =
        run_kanpa(&console.database_url, &["campaign", "settle", DEMO_CAMPAIGN, "--before-deadline"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(campaigns::campaign_by_id(&console.db, drive.id).await.unwrap().status.as_str(), "cancelled");
    assert_eq!(count(&console.db, "SELECT COUNT(*) FROM sandbox_payments WHERE kind = 'payment_intent'").await, 0);
    assert!(kanpa_ledger::store::check(&console.db).await.unwrap().is_clean());
    console.app.stop().await;
}

/// The text part of a raw message, decoded (lettre writes UTF-8 bodies as
/// base64 or quoted-printable).
fn mail_text(data: &str) -> String {
    let start = data.find("Content-Type: text/plain").expect("a text part");
    let part = &data[start..];
    let (headers, rest) = part.split_once("\r\n\r\n").unwrap();
    let body = rest.split("\r\n--").next().unwrap();
    if headers.contains("Content-Transfer-Encoding: base64") {
        let joined: String = body.split("\r\n").collect();
        let mut out = Vec::new();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let (mut bits, mut n) = (0u32, 0);
        for c in joined.bytes().filter(|c| *c != b'=') {
            bits = (bits << 6) | alphabet.iter().position(|a| *a == c).unwrap() as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        String::from_utf8(out).unwrap()
    } else if headers.contains("Content-Transfer-Encoding: quoted-printable") {
        let mut out = Vec::new();
        let bytes = body.replace("=\r\n", "").into_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    } else {
        body.to_owned()
    }
}

async fn an_invitation_email_says_who_invited_whom_to_what_with_a_one_time_link_in_the_chosen_language(
    backend: TestBackend,
) {
    use crate::campaigns::{Drive, seven_team_drive, subjects};
    let Some(d) = Drive::start(backend).await else { return };
    let (campaign, teams) = seven_team_drive(d.db(), "invite-2026", "keep_it_all").await;
    let org = OrgId(campaign.org_id);
    let slug = "org-invite-2026";
    add_staff(d.db(), "owner@example.jp", org, Role::Owner, None).await;
    let cookie = sign_in_as(&d.app, "owner@example.jp").await;
    let staff_path = format!("/admin/o/{slug}/staff");
    let html =
        d.app.client.get(d.app.url(&staff_path)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let csrf = csrf_in(&html);
    let team = &teams[1];
    let invite = |email: &str, role: &str, team: &str, lang: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("email", email.to_owned()),
            ("role", role.to_owned()),
            ("team", team.to_owned()),
            ("lang", lang.to_owned()),
        ]
    };
    let send = |fields: Vec<(&'static str, String)>| {
        let (app, cookie, path) = (&d.app, cookie.clone(), staff_path.clone());
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_as(app, &path, &fields, Some(&cookie)).await.status().as_u16()
        }
    };
    // A language that is not offered is refused, and nobody is invited.
    assert_eq!(send(invite("t@example.jp", "treasurer", &team.id.to_string(), "fr")).await, 422);
    assert_eq!(count(d.db(), "SELECT COUNT(*) FROM outbox_emails WHERE template = 'staff_invitation'").await, 0);

    // In English, to a treasurer limited to one team.
    assert_eq!(send(invite("t@example.jp", "treasurer", &team.id.to_string(), "en")).await, 200);
    // In Japanese, to an organiser.
    assert_eq!(send(invite("o@example.jp", "organiser", "", "ja")).await, 200);
    crate::harness::eventually(30, "both invitations are delivered", || async {
        d.sink.messages().iter().filter(|m| m.to.iter().any(|t| t == "t@example.jp" || t == "o@example.jp")).count()
            == 2
    })
    .await;
    let mail_to = |to: &str| d.sink.messages().into_iter().find(|m| m.to.iter().any(|t| t == to)).unwrap();
    let english = mail_to("t@example.jp");
    let text = mail_text(&english.data);
    assert!(
        subjects(&d.sink).iter().any(|s| s.contains("invited") && s.contains("医療職連合")),
        "{:?}",
        subjects(&d.sink)
    );
    for part in
        ["owner@example.jp", "医療職連合", "Treasurer", team.name(kanpa_ledger::Locale::En), "72 hours", "(JST)"]
    {
        assert!(text.contains(part), "{part} in {text}");
    }
    let link = text.split_whitespace().find(|w| w.contains("/admin/sign-in/")).expect("the link").to_owned();
    let japanese = mail_text(&mail_to("o@example.jp").data);
    for part in ["owner@example.jp", "医療職連合", "企画", "72時間", "リンクの有効期限"] {
        assert!(japanese.contains(part), "{part} in {japanese}");
    }
    assert!(!japanese.contains("担当チーム"), "no team for an organiser");

    // The link signs the invitee in once, and they see only their team.
    let path = path_of(&link);
    let res = d.app.client.get(d.app.url(&path)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let invitee = session_of(&res);
    let res = d.app.client.get(d.app.url(&format!("/admin/o/{slug}"))).header("cookie", &invitee).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains(&team.name_ja));
    let again = d.app.client.get(d.app.url(&path)).send().await.unwrap();
    assert_ne!(again.status(), 303, "the link works once");
}

async fn an_organiser_creates_a_salon_as_a_draft_and_bad_input_creates_nothing(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("organiser@example.jp", console.org, Role::Organiser, None).await;
    let cookie = console.sign_in("organiser@example.jp").await;
    let csrf = console.csrf(&cookie).await;
    let (_, dashboard) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &cookie).await;
    let path = format!("/admin/o/{DEMO_ORG}/salons/new");
    assert!(dashboard.contains(&format!(r#"href="{path}""#)), "the dashboard offers it");
    let (status, form) = console.get_as(&path, &cookie).await;
    assert_eq!(status, 200);
    assert!(form.contains(r#"name="grace_days" id="grace_days" value="7""#) || form.contains(r#"name="grace_days""#));
    let fields = |slug: &str, grace: &str, anchor: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("slug", slug.to_owned()),
            ("name_ja", "<i>からだ</i>の勉強サロン".to_owned()),
            ("description_ja", "月に一度の勉強会。".to_owned()),
            ("billing_anchor", anchor.to_owned()),
            ("tier_change", "next_cycle".to_owned()),
            ("grace_days", grace.to_owned()),
            ("contact_email", "salon@example.jp".to_owned()),
        ]
    };
    let before = count(&console.db, "SELECT COUNT(*) FROM salons").await;
    for (slug, grace, anchor, words) in [
        ("Bad Slug!", "7", "start_date", "3〜64 文字"),
        ("karada", "たくさん", "start_date", "0〜30"),
        ("karada", "31", "start_date", "30"),
        ("karada", "7", "every_full_moon", ""),
    ] {
        let form = fields(slug, grace, anchor);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = console.post(&path, &form, Some(&cookie)).await;
        assert_eq!(res.status(), 422, "{slug} {grace} {anchor}");
        let html = res.text().await.unwrap();
        assert!(html.contains(r#"class="problem""#) && html.contains(words), "{html}");
        let kept = html.split(r#"id="name_ja" value=""#).nth(1).unwrap_or_default();
        assert!(!html.contains("<i>からだ</i>") && kept.contains("からだ") && !kept.starts_with("<i>"), "{kept}");
    }
    assert_eq!(count(&console.db, "SELECT COUNT(*) FROM salons").await, before, "nothing was created");
    let form = fields("karada", "7", "first_of_month");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = console.post(&path, &form, Some(&cookie)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()[LOCATION], format!("/admin/o/{DEMO_ORG}/salons/karada").as_str());
    let salon = kanpa_patrons::store::salon_by_slug(&console.db, "karada").await.unwrap();
    assert_eq!(salon.org_id, console.org.0);
    assert_eq!(salon.status, kanpa_patrons::SalonStatus::Draft);
    assert_eq!(salon.grace_days, 7);
    let (status, html) = console.get_as(&format!("/admin/o/{DEMO_ORG}/salons/karada"), &cookie).await;
    assert_eq!(status, 200);
    assert!(html.contains("の勉強サロン") && !html.contains("<i>からだ</i>"), "escaped: {html}");
    // The same address again is refused.
    let res = console.post(&path, &form, Some(&cookie)).await;
    assert!([409, 422].contains(&res.status().as_u16()));

    // Edited: its words and grace days; a bad value changes nothing.
    assert!(html.contains(&format!(r#"action="/admin/o/{DEMO_ORG}/salons/karada/edit""#)), "the edit form");
    let edit = format!("/admin/o/{DEMO_ORG}/salons/karada/edit");
    let changed = |grace: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("name_ja", "からだの勉強サロン".to_owned()),
            ("name_en", "Body study salon".to_owned()),
            ("description_ja", "毎月第2土曜に開催。".to_owned()),
            ("grace_days", grace.to_owned()),
            ("contact_email", "karada@example.jp".to_owned()),
        ]
    };
    for (grace, words) in [("x", "0〜30"), ("99", "30")] {
        let form = changed(grace);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = console.post(&edit, &form, Some(&cookie)).await;
        assert_eq!(res.status(), 422, "{grace}");
        assert!(res.text().await.unwrap().contains(words));
    }
    assert_eq!(kanpa_patrons::store::salon_by_slug(&console.db, "karada").await.unwrap().name_en, "");
    let form = changed("10");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(console.post(&edit, &form, Some(&cookie)).await.status(), 303);
    let salon = kanpa_patrons::store::salon_by_slug(&console.db, "karada").await.unwrap();
    assert_eq!((salon.name_en.as_str(), salon.grace_days), ("Body study salon", 10));
    assert_eq!(salon.contact_email, "karada@example.jp");
    assert_eq!(salon.billing_anchor.as_str(), "first_of_month", "the billing rule is not the form's to change");
    console.staff("viewer@example.jp", console.org, Role::Viewer, None).await;
    let viewer_cookie = console.sign_in("viewer@example.jp").await;
    let viewer_csrf = console.csrf(&viewer_cookie).await;
    let mut form = changed("3");
    form[0].1 = viewer_csrf;
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(console.post(&edit, &form, Some(&viewer_cookie)).await.status(), 403);
    console.app.stop().await;
}
