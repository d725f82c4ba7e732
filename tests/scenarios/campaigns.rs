//! The funding drive's money flows against the fake Stripe and a real SMTP
//! sink: pledges through Checkout, the webhooks that commit them,
//! settlement with declines and an authentication-required card, the pool
//! split, a missed goal, overselling under concurrency, and a crash in the
//! middle of settlement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kanpa_campaigns::model::PledgeStatus;
use kanpa_campaigns::pledge::{self, PledgeForm};
use kanpa_campaigns::settle::{self, Settler};
use kanpa_campaigns::store::{self, CampaignInput, RewardInput, TeamInput};
use kanpa_campaigns::{Campaign, CampaignError, Site, Team};
use kanpa_ledger::{Db, Locale, OrgId, Timestamp, on_db, store as ledger};
use kanpa_messaging::inbox::EventHandlers;
use kanpa_messaging::mailer::SmtpMailer;
use kanpa_payments::PaymentGateway;
use kanpa_payments::sandbox::{Sandbox, SandboxAction};
use kanpa_server::config::{Config, GatewayKind, Secret};
use kanpa_server::workers::{self, Extras};
use kanpa_testkit::smtp::SmtpSink;
use kanpa_testkit::stripe::FakeStripe;
use serde_json::Value;

use crate::harness::{TestApp, TestBackend, eventually, test_config};
use crate::on_both_backends;

on_both_backends!(
    seven_team_drive_goal_met_settles_with_declines_and_a_late_payment,
    a_missed_goal_charges_nothing_and_tells_everyone,
    two_hundred_concurrent_pledges_for_fifty_rewards_sell_exactly_fifty,
    a_crash_in_the_middle_of_settlement_resumes_without_double_charges,
    bad_pledges_are_refused_and_leave_nothing_behind,
    keep_it_all_payment_posts_gross_and_fee_to_the_team_fund,
);

const TEAMS: [&str; 7] = ["nurses", "pharmacists", "physio", "occupational", "laboratory", "radiography", "dietitians"];

/// Stripe's Japanese card fee as the fake charges it.
pub(crate) fn fee(amount: i64) -> i64 {
    (amount * 36 + 500) / 1000
}

pub(crate) struct Drive {
    pub(crate) app: TestApp,
    pub(crate) stripe: FakeStripe,
    pub(crate) sink: SmtpSink,
    gateway: Arc<dyn PaymentGateway>,
    site: Site,
}

impl Drive {
    /// The server on the Stripe gateway against the fake, mail to the sink.
    pub(crate) async fn start(backend: TestBackend) -> Option<Drive> {
        kanpa_server::install_crypto_provider();
        let stripe = FakeStripe::start().await.expect("fake Stripe starts");
        let sink = SmtpSink::start().expect("SMTP sink starts");
        let mailer = SmtpMailer::from_url(&sink.url()).expect("sink URL");
        let configure = {
            let (api_base, secret) = (stripe.api_base(), stripe.webhook_secret());
            move |c: &mut Config| {
                c.payments.gateway = GatewayKind::Stripe;
                c.payments.charge_rate = 90;
                c.stripe.secret_key = Secret::new("sk_test_kanpa");
                c.stripe.api_base = api_base.clone();
                c.stripe.webhook_secrets = Secret::new(&secret);
            }
        };
        let extras = Extras { event_handlers: EventHandlers::default(), mailer: Some(Arc::new(mailer)) };
        let app = TestApp::spawn_with(backend, extras, configure.clone()).await?;
        stripe.set_webhook_url(app.url("/webhooks/stripe"));
        let mut config = test_config(&app.database_url);
        configure(&mut config);
        let gateway = workers::gateway(&config, &app.db).expect("gateway");
        let site = config.site();
        Some(Drive { app, stripe, sink, gateway, site })
    }

    pub(crate) fn db(&self) -> &Db {
        &self.app.db
    }

    fn settler(&self) -> Settler {
        Settler { db: self.db().clone(), gateway: self.gateway.clone(), site: self.site.clone(), rate: 90 }
    }

    /// A pledge through Checkout, completed on the fake, its webhooks
    /// delivered; returns its public id once the inbox has committed it.
    pub(crate) async fn pledge(&self, campaign: &Campaign, team: Option<&Team>, amount: i64, email: &str) -> String {
        let (pledge, session) = self.open_pledge(campaign, team, amount, email).await;
        self.finish_checkout(&session).await;
        pledge
    }

    /// A pledge whose supporter is still at Checkout: (pledge, session id).
    async fn open_pledge(
        &self,
        campaign: &Campaign,
        team: Option<&Team>,
        amount: i64,
        email: &str,
    ) -> (String, String) {
        let form = PledgeForm {
            team: team.map(|t| t.id.to_string()).unwrap_or_default(),
            amount: amount.to_string(),
            display_name: format!("支援者 {email}"),
            email: email.to_owned(),
            message: "がんばって".into(),
            ..PledgeForm::default()
        };
        let started = pledge::start(self.db(), self.gateway.as_ref(), &self.site, &campaign.slug, &form, Locale::Ja)
            .await
            .expect("pledge starts");
        let session_id = started.checkout_url.rsplit('/').next().unwrap().to_owned();
        (started.pledge, session_id)
    }

    /// The supporter finishes Checkout; Stripe sends its events.
    async fn finish_checkout(&self, session_id: &str) {
        let session = self.stripe.complete_checkout_session(session_id).expect("checkout completes");
        self.deliver("checkout.session.completed", session.clone()).await;
        if let Some(seti) = session["setup_intent"].as_str() {
            let intent = self.stripe.object(seti).expect("setup intent exists");
            self.deliver("setup_intent.succeeded", intent).await;
        }
    }

    async fn deliver(&self, event_type: &str, object: Value) {
        let event = self.stripe.event(event_type, object);
        assert_eq!(self.stripe.deliver(&event).await.unwrap(), 200, "{event_type} accepted");
    }

    async fn status(&self, public_id: &str) -> PledgeStatus {
        store::pledge_by_public_id(self.db(), public_id).await.unwrap().status
    }

    pub(crate) async fn wait_status(&self, public_id: &str, status: PledgeStatus) {
        eventually(30, &format!("pledge {public_id} is {status}"), || async { self.status(public_id).await == status })
            .await;
    }
}

fn rfc(t: Timestamp) -> String {
    t.as_offset().format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// An organisation with a published seven-team all-or-nothing drive.
pub(crate) async fn seven_team_drive(db: &Db, slug: &str, model: &str) -> (Campaign, Vec<Team>) {
    let mut tx = db.begin().await.unwrap();
    let org = ledger::create_organisation(&mut tx, &format!("org-{slug}"), "医療職連合").await.unwrap();
    tx.commit().await.unwrap();
    kanpa_payments::seller::update(db, org.id, &kanpa_payments::seller::fictional("医療職連合")).await.unwrap();
    let now = Timestamp::now();
    let input = CampaignInput {
        slug: slug.into(),
        title_ja: "7職種 免許応援".into(),
        title_en: "Seven professions".into(),
        currency: "JPY".into(),
        goal: 3_500_000,
        starts_at: rfc(now.saturating_add(time::Duration::days(-1))),
        deadline: rfc(now.saturating_add(time::Duration::days(10))),
        time_zone: "Asia/Tokyo".into(),
        funding_model: model.into(),
        pool_rule: "equal".into(),
        contact_email: "organisers@example.jp".into(),
        ..CampaignInput::default()
    };
    let campaign = store::create_campaign(db, org.id, &input).await.unwrap();
    let mut teams = Vec::new();
    for slug in TEAMS {
        let team = TeamInput { slug: slug.into(), name_ja: slug.into(), goal: 500_000, ..TeamInput::default() };
        teams.push(store::add_team(db, campaign.id, &team).await.unwrap());
    }
    let campaign = store::publish(db, campaign.id).await.unwrap();
    (campaign, teams)
}

pub(crate) async fn fund(db: &Db, org: i64, code: &str) -> i64 {
    let account = ledger::account_by_code(db, OrgId(org), code).await.unwrap().expect("account exists");
    -ledger::balance(db, account.id).await.unwrap().amount()
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    on_db!(db, p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap())
}

pub(crate) fn subjects(sink: &SmtpSink) -> Vec<String> {
    sink.messages().iter().map(|m| mail_subject(&m.data)).collect()
}

/// The decoded Subject of a raw message (lettre writes non-ASCII subjects
/// as one or more RFC 2047 base64 words).
fn mail_subject(data: &str) -> String {
    let mut lines = data.split("\r\n");
    let mut subject = String::new();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("Subject: ") {
            subject.push_str(rest);
            for more in lines.by_ref() {
                if let Some(cont) = more.strip_prefix(' ') {
                    subject.push(' ');
                    subject.push_str(cont);
                } else {
                    break;
                }
            }
            break;
        }
    }
    // Encoded words may split a character: decode all their bytes, then the text.
    let mut bytes = Vec::new();
    for word in subject.split_whitespace() {
        match word.strip_prefix("=?utf-8?b?").and_then(|w| w.strip_suffix("?=")) {
            Some(encoded) => bytes.extend(base64_decode(encoded).unwrap_or_default()),
            None => bytes.extend(word.as_bytes()),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        bits = (bits << 6) | ALPHABET.iter().position(|a| *a == c)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

async fn seven_team_drive_goal_met_settles_with_declines_and_a_late_payment(backend: TestBackend) {
    let Some(d) = Drive::start(backend).await else { return };
    let (campaign, teams) = seven_team_drive(d.db(), "drive-2026", "all_or_nothing").await;

    // Each team gets 250,000 + 200,000; the pool 300,000 + 50,000: exactly the goal.
    let mut pledges: Vec<(String, Option<usize>, i64)> = Vec::new();
    for (i, team) in teams.iter().enumerate() {
        for (j, amount) in [250_000, 200_000].into_iter().enumerate() {
            let id = d.pledge(&campaign, Some(team), amount, &format!("t{i}p{j}@example.jp")).await;
            pledges.push((id, Some(i), amount));
        }
    }
    for (j, amount) in [300_000, 50_000].into_iter().enumerate() {
        let id = d.pledge(&campaign, None, amount, &format!("pool{j}@example.jp")).await;
        pledges.push((id, None, amount));
    }
    for (id, _, _) in &pledges {
        d.wait_status(id, PledgeStatus::Committed).await;
        eventually(30, "the saved card is known", || async {
            store::pledge_by_public_id(d.db(), id).await.unwrap().payment_method_id.is_some()
        })
        .await;
    }
    let live = store::campaign_by_id(d.db(), campaign.id).await.unwrap();
    assert_eq!((live.pledged, live.backers, live.collected), (3_500_000, 16, 0), "committed pledges are counted once");
    assert_eq!(live.pool_pledged, 350_000);
    assert_eq!(store::team(d.db(), campaign.id, teams[2].id).await.unwrap().pledged, 450_000);

    // One card has no funds; one needs its owner to authenticate.
    let declined = pledges[5].0.clone(); // team 2, 200,000
    let needs_auth = pledges[15].0.clone(); // pool, 50,000
    for (id, code) in [(&declined, "insufficient_funds"), (&needs_auth, "authentication_required")] {
        let pm = store::pledge_by_public_id(d.db(), id).await.unwrap().payment_method_id.expect("card saved");
        d.stripe.decline_payment_method(&pm, code);
    }
    // A dropped answer mid-settlement: the gateway retries with the same key.
    d.stripe.fail_next(1, kanpa_testkit::stripe::Fault::Dropped);

    // The organiser settles through the API.
    let token =
        kanpa_server::api_token::create(d.db(), OrgId(campaign.org_id), kanpa_server::api_token::Role::Organiser, "t")
            .await
            .unwrap();
    let response = d
        .app
        .client
        .post(d.app.url("/api/v1/campaigns/drive-2026/settlement"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    eventually(60, "settlement finished", || async { settle::report(d.db(), campaign.id).await.unwrap().finished })
        .await;
    let report = settle::report(d.db(), campaign.id).await.unwrap();
    assert_eq!(report.status, kanpa_campaigns::CampaignStatus::Succeeded);
    assert_eq!((report.collected_count, report.failed_count, report.committed_count), (14, 2, 0));
    assert_eq!(d.status(&declined).await, PledgeStatus::PaymentFailed);
    assert_eq!(d.status(&needs_auth).await, PledgeStatus::PaymentFailed);
    let failure: Option<String> = store::pledge_by_public_id(d.db(), &needs_auth).await.unwrap().failure_code;
    assert_eq!(failure.as_deref(), Some("authentication_required"));

    // The pool (300,000 collected, net of its fee) was shared equally.
    let pool_net = 300_000 - fee(300_000);
    let shares = kanpa_campaigns::pool::split(pool_net, &[1; 7]);
    assert_eq!(fund(d.db(), campaign.org_id, "fund:drive-2026:pool").await, 0, "the pool is emptied");

    // The authentication-required supporter pays on-session from the emailed link.
    // Opening the pay link twice closes the first checkout: only one can be paid.
    let supporter = "pool1@example.jp";
    let (db, gateway, site) = (d.db(), d.gateway.as_ref(), &d.site);
    let pay = kanpa_campaigns::supporter::pay_checkout;
    let first = pay(db, gateway, site, supporter, &needs_auth, Locale::Ja).await.unwrap();
    let session = pay(db, gateway, site, supporter, &needs_auth, Locale::Ja).await.unwrap();
    assert_ne!(first.id, session.id);
    assert_eq!(d.stripe.object(&first.id).unwrap()["status"], "expired");
    let completed = d.stripe.complete_checkout_session(&session.id).unwrap();
    d.deliver("checkout.session.completed", completed).await;
    d.wait_status(&needs_auth, PledgeStatus::Collected).await;
    let late_shares = kanpa_campaigns::pool::split(50_000 - fee(50_000), &[1; 7]);

    // The declined one is retried on day 1 (still declined), then dropped on day 7.
    let settler = d.settler();
    let retried = settler.retry(&declined).await.unwrap();
    assert!(matches!(retried, Some(kanpa_payments::ChargeOutcome::Declined { .. })), "{retried:?}");
    assert!(settler.drop_unpaid(&declined).await.unwrap());
    assert_eq!(d.status(&declined).await, PledgeStatus::Dropped);

    // Each team's fund is its collections net of fees plus both pool shares, to the yen.
    for (i, team) in teams.iter().enumerate() {
        let collected: i64 = pledges
            .iter()
            .filter(|(id, t, _)| *t == Some(i) && *id != declined)
            .map(|(_, _, amount)| amount - fee(*amount))
            .sum();
        let expected = collected + shares[i] + late_shares[i];
        let code = format!("fund:drive-2026:{}", team.slug);
        assert_eq!(fund(d.db(), campaign.org_id, &code).await, expected, "team {}", team.slug);
    }
    let stripe_balance = {
        let account =
            ledger::account_by_code(d.db(), OrgId(campaign.org_id), "stripe-balance:JPY").await.unwrap().unwrap();
        ledger::balance(d.db(), account.id).await.unwrap().amount()
    };
    let gross: i64 = pledges.iter().filter(|(id, _, _)| *id != declined).map(|(_, _, a)| a).sum();
    let fees: i64 = pledges.iter().filter(|(id, _, _)| *id != declined).map(|(_, _, a)| fee(*a)).sum();
    assert_eq!(stripe_balance, gross - fees, "the Stripe balance holds every yen collected, net of fees");
    assert!(ledger::check(d.db()).await.unwrap().is_clean());

    // Nobody was charged twice: one succeeded PaymentIntent per collected pledge.
    let mut succeeded: HashMap<String, usize> = HashMap::new();
    for pi in d.stripe.objects("payment_intent") {
        if pi["status"] == "succeeded" {
            *succeeded.entry(pi["metadata"]["kanpa_ref"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(succeeded.len(), 15);
    assert!(succeeded.values().all(|n| *n == 1), "{succeeded:?}");

    // Everyone heard: 16 confirmations, 15 receipts, failure notices, a drop, the report.
    eventually(60, "every email is sent", || async {
        let s = subjects(&d.sink);
        s.iter().filter(|s| s.contains("ご支援ありがとうございます")).count() == 16
            && s.iter().filter(|s| s.contains("お支払いの領収")).count() == 15
            && s.iter().filter(|s| s.contains("お支払いを完了してください")).count() == 3
            && s.iter().filter(|s| s.contains("ご支援を取り消しました")).count() == 1
            && s.iter().filter(|s| s.contains("精算レポート")).count() == 1
    })
    .await;
    let report_mail = d.sink.messages().into_iter().find(|m| mail_subject(&m.data).contains("精算レポート")).unwrap();
    assert_eq!(report_mail.to, vec!["organisers@example.jp".to_owned()]);
}

async fn a_missed_goal_charges_nothing_and_tells_everyone(backend: TestBackend) {
    let Some(d) = Drive::start(backend).await else { return };
    let (campaign, teams) = seven_team_drive(d.db(), "missed-2026", "all_or_nothing").await;
    let mut ids = Vec::new();
    for (i, team) in teams.iter().take(3).enumerate() {
        ids.push(d.pledge(&campaign, Some(team), 100_000, &format!("m{i}@example.jp")).await);
    }
    for id in &ids {
        d.wait_status(id, PledgeStatus::Committed).await;
    }
    let (late, late_session) = d.open_pledge(&campaign, Some(&teams[4]), 20_000, "late@example.jp").await;
    let report = d.settler().settle(campaign.id, true).await.unwrap();
    assert_eq!(report.status, kanpa_campaigns::CampaignStatus::Failed);
    // A checkout finished after the drive failed commits nothing.
    d.finish_checkout(&late_session).await;
    d.wait_status(&late, PledgeStatus::Void).await;
    for id in &ids {
        assert_eq!(d.status(id).await, PledgeStatus::Void);
    }
    let charges = d.stripe.requests().iter().filter(|r| r.path == "/v1/payment_intents").count();
    assert_eq!(charges, 0, "nobody is charged");
    assert_eq!(count(d.db(), "SELECT COUNT(*) FROM ledger_entries").await, 0, "no money moved");
    let live = store::campaign_by_id(d.db(), campaign.id).await.unwrap();
    assert_eq!((live.pledged, live.backers), (0, 0));
    eventually(30, "everyone is told", || async {
        subjects(&d.sink).iter().filter(|s| s.contains("目標に届きませんでした")).count() == 3
    })
    .await;
    // Settling again changes nothing.
    d.settler().settle(campaign.id, true).await.unwrap();
    assert_eq!(d.stripe.requests().iter().filter(|r| r.path == "/v1/payment_intents").count(), 0);
}

/// The sandbox gateway, on a campaign with a reward of 50.
async fn sandbox_drive(backend: TestBackend) -> Option<(TestApp, Campaign, Vec<Team>, i64, Site)> {
    let app = TestApp::spawn(backend).await?;
    let (campaign, teams) = seven_team_drive(&app.db, "sold-2026", "all_or_nothing").await;
    let reward = RewardInput {
        title_ja: "限定ワッペン".into(),
        min_amount: 5_000,
        quantity: Some(50),
        ..RewardInput::default()
    };
    let reward = store::add_reward(&app.db, campaign.id, &reward).await.unwrap();
    let config = test_config(&app.database_url);
    Some((app, campaign, teams, reward.id, config.site()))
}

async fn two_hundred_concurrent_pledges_for_fifty_rewards_sell_exactly_fifty(backend: TestBackend) {
    let Some((app, campaign, _, reward, site)) = sandbox_drive(backend).await else { return };
    let gateway: Arc<dyn PaymentGateway> = Arc::new(Sandbox::new(app.db.clone(), site.base_url.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (db, gateway, site, slug) = (app.db.clone(), gateway.clone(), site.clone(), campaign.slug.clone());
        tasks.spawn(async move {
            let form = PledgeForm {
                reward: reward.to_string(),
                amount: "5000".into(),
                display_name: format!("fan {i}"),
                email: format!("fan{i}@example.jp"),
                ..PledgeForm::default()
            };
            pledge::start(&db, gateway.as_ref(), &site, &slug, &form, Locale::Ja).await
        });
    }
    let (mut sold, mut refused) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(_) => sold += 1,
            Err(CampaignError::SoldOut) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((sold, refused), (50, 150));
    let reward_row = store::reward(&app.db, campaign.id, reward).await.unwrap();
    assert_eq!((reward_row.claimed, reward_row.remaining()), (50, Some(0)));
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM pledges").await, 50, "refused pledges store nothing");
    // An abandoned Checkout gives its unit back.
    let pledge = store::pledges_of_campaign(&app.db, campaign.id).await.unwrap().remove(0);
    let session = pledge.checkout_session_id.clone().unwrap();
    let expired = serde_json::json!({ "id": session, "object": "checkout.session", "client_reference_id": pledge.public_id,
                                      "metadata": { "kanpa_kind": "pledge", "kanpa_ref": pledge.public_id } });
    let event = serde_json::json!({ "id": "evt_expired_1", "object": "event", "type": "checkout.session.expired",
                                    "created": Timestamp::now().unix_seconds(), "livemode": false,
                                    "data": { "object": expired } });
    let incoming = kanpa_messaging::inbox::IncomingEvent::from_json(&event.to_string()).unwrap();
    kanpa_messaging::inbox::receive(&app.db, &incoming, kanpa_messaging::inbox::Via::Webhook).await.unwrap();
    eventually(30, "the expired pledge releases its reward", || async {
        store::reward(&app.db, campaign.id, reward).await.unwrap().claimed == 49
    })
    .await;
    // A checkout left unfinished for a day is closed and gives its unit back.
    let abandoned = store::pledges_of_campaign(&app.db, campaign.id).await.unwrap().remove(2);
    make_due(&app.db, kanpa_campaigns::pledge::EXPIRE_JOB, &abandoned.public_id).await;
    eventually(30, "the abandoned checkout expires", || async {
        store::pledge_by_public_id(&app.db, &abandoned.public_id).await.unwrap().status == PledgeStatus::Expired
    })
    .await;
    assert_eq!(store::reward(&app.db, campaign.id, reward).await.unwrap().claimed, 48);
    let closed = Sandbox::session(&app.db, abandoned.checkout_session_id.as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(closed.status, "expired");
    // The sandbox page's "save card" commits another.
    let other = store::pledges_of_campaign(&app.db, campaign.id).await.unwrap().remove(1);
    let result =
        Sandbox::act(&app.db, other.checkout_session_id.as_deref().unwrap(), SandboxAction::Succeed).await.unwrap();
    assert!(matches!(result, kanpa_payments::sandbox::SandboxResult::Completed { .. }));
    eventually(30, "the sandbox pledge is committed", || async {
        store::pledge_by_public_id(&app.db, &other.public_id).await.unwrap().status == PledgeStatus::Committed
    })
    .await;
    // Sold out again; its holder can still change the amount and keep it.
    let last = PledgeForm {
        reward: reward.to_string(),
        amount: "5000".into(),
        display_name: "last".into(),
        email: "last@example.jp".into(),
        ..PledgeForm::default()
    };
    pledge::start(&app.db, gateway.as_ref(), &site, &campaign.slug, &last, Locale::Ja).await.unwrap();
    pledge::start(
        &app.db,
        gateway.as_ref(),
        &site,
        &campaign.slug,
        &PledgeForm { email: "last2@example.jp".into(), ..last.clone() },
        Locale::Ja,
    )
    .await
    .unwrap();
    assert_eq!(store::reward(&app.db, campaign.id, reward).await.unwrap().remaining(), Some(0));
    let change = kanpa_campaigns::supporter::ChangeForm {
        amount: "8000".into(),
        team: String::new(),
        reward: reward.to_string(),
    };
    let changed = kanpa_campaigns::supporter::change(&app.db, &site, &other.email, &other.public_id, &change).await;
    assert_eq!(changed.unwrap().amount, 8_000);
    assert_eq!(store::reward(&app.db, campaign.id, reward).await.unwrap().claimed, 50);
}

async fn a_crash_in_the_middle_of_settlement_resumes_without_double_charges(backend: TestBackend) {
    let Some(d) = Drive::start(backend).await else { return };
    let (campaign, teams) = seven_team_drive(d.db(), "crash-2026", "all_or_nothing").await;
    let mut ids = Vec::new();
    for i in 0..28 {
        let amount = if i < 7 { 500_000 } else { 1_000 };
        ids.push(d.pledge(&campaign, Some(&teams[i % 7]), amount, &format!("c{i}@example.jp")).await);
    }
    for id in &ids {
        d.wait_status(id, PledgeStatus::Committed).await;
    }
    let (late, late_session) = d.open_pledge(&campaign, Some(&teams[0]), 3_000, "late@example.jp").await;
    // Slow answers, so the "crash" (dropping the settlement mid-flight)
    // leaves charges sent to Stripe whose answers were never recorded.
    d.stripe.set_latency(Duration::from_millis(150));
    let settler = Arc::new(d.settler());
    let running = {
        let settler = settler.clone();
        tokio::spawn(async move { settler.settle(campaign.id, true).await })
    };
    eventually(30, "some charges are recorded", || async {
        count(d.db(), "SELECT COUNT(*) FROM pledge_charge_attempts WHERE status = 'succeeded'").await >= 5
    })
    .await;
    running.abort();
    let _ = running.await;
    let in_flight = count(d.db(), "SELECT COUNT(*) FROM pledge_charge_attempts WHERE status = 'started'").await;
    assert!(in_flight > 0, "the crash left attempts in flight");
    d.stripe.set_latency(Duration::ZERO);

    let report = settler.settle(campaign.id, true).await.unwrap();
    assert_eq!(report.collected_count, 28);
    assert_eq!(
        count(d.db(), "SELECT COUNT(*) FROM pledge_charge_attempts").await,
        28,
        "one attempt (one key) per pledge"
    );
    let succeeded: Vec<Value> =
        d.stripe.objects("payment_intent").into_iter().filter(|pi| pi["status"] == "succeeded").collect();
    assert_eq!(succeeded.len(), 28, "exactly one charge per pledge");
    let replays = d.stripe.requests().iter().filter(|r| r.path == "/v1/payment_intents").count();
    assert!(replays > 28, "the resumed run resent the in-flight keys ({replays} requests)");
    assert_eq!(count(d.db(), "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE '%:gross'").await, 28);
    assert!(ledger::check(d.db()).await.unwrap().is_clean());

    // A checkout finished after the drive settled successfully is charged at once.
    d.finish_checkout(&late_session).await;
    d.wait_status(&late, PledgeStatus::Collected).await;
    let succeeded = d.stripe.objects("payment_intent").into_iter().filter(|pi| pi["status"] == "succeeded").count();
    assert_eq!(succeeded, 29);
}

async fn bad_pledges_are_refused_and_leave_nothing_behind(backend: TestBackend) {
    let Some((app, campaign, teams, reward, site)) = sandbox_drive(backend).await else { return };
    let (other, other_teams) = seven_team_drive(&app.db, "other-2026", "all_or_nothing").await;
    let gateway = Sandbox::new(app.db.clone(), site.base_url.clone());
    let base = PledgeForm {
        amount: "3000".into(),
        display_name: "花子".into(),
        email: "hanako@example.jp".into(),
        ..PledgeForm::default()
    };
    let cases: Vec<(PledgeForm, &str)> = vec![
        (PledgeForm { amount: "-100".into(), ..base.clone() }, "invalid_amount"),
        (PledgeForm { amount: "0".into(), ..base.clone() }, "below_minimum"),
        (PledgeForm { amount: "49".into(), ..base.clone() }, "below_minimum"),
        (PledgeForm { amount: "12.5".into(), ..base.clone() }, "invalid_amount"),
        (PledgeForm { amount: "３０００".into(), ..base.clone() }, "invalid_amount"),
        (PledgeForm { amount: "99999999999999999999".into(), ..base.clone() }, "invalid_amount"),
        (PledgeForm { amount: "1000001".into(), ..base.clone() }, "above_maximum"),
        (PledgeForm { amount: "lots".into(), ..base.clone() }, "invalid_amount"),
        (PledgeForm { team: "999999".into(), ..base.clone() }, "not_found"),
        (PledgeForm { team: other_teams[0].id.to_string(), ..base.clone() }, "not_found"),
        (PledgeForm { team: "x'; DROP TABLE pledges;--".into(), ..base.clone() }, "not_found"),
        (PledgeForm { reward: "424242".into(), ..base.clone() }, "not_found"),
        (PledgeForm { reward: reward.to_string(), amount: "4999".into(), ..base.clone() }, "below_minimum"),
        (PledgeForm { display_name: "あ".repeat(51), ..base.clone() }, "too_long"),
        (PledgeForm { message: "x".repeat(501), ..base.clone() }, "too_long"),
        (PledgeForm { email: "not-an-email".into(), ..base.clone() }, "invalid_email"),
        (PledgeForm { display_name: "".into(), ..base.clone() }, "required"),
    ];
    for (form, code) in cases {
        let err = pledge::start(&app.db, &gateway, &site, &campaign.slug, &form, Locale::Ja).await.unwrap_err();
        assert_eq!(err.code(), code, "{form:?}");
    }
    // After the deadline, nothing is taken.
    kanpa_testkit_set_deadline(&app.db, other.id).await;
    let late = PledgeForm { team: other_teams[0].id.to_string(), ..base.clone() };
    let err = pledge::start(&app.db, &gateway, &site, &other.slug, &late, Locale::Ja).await.unwrap_err();
    assert!(matches!(err, CampaignError::NotOpen), "{err}");
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM pledges").await, 0, "nothing stored");
    assert_eq!(store::reward(&app.db, campaign.id, reward).await.unwrap().claimed, 0, "no reservation leaked");
    // Anonymous pledges need no name; markup is kept as text (pages escape it).
    let ok =
        PledgeForm { display_name: "<script>alert(1)</script>".into(), team: teams[0].id.to_string(), ..base.clone() };
    pledge::start(&app.db, &gateway, &site, &campaign.slug, &ok, Locale::Ja).await.unwrap();
    let anonymous = PledgeForm { display_name: "".into(), anonymous: Some("on".into()), ..base };
    pledge::start(&app.db, &gateway, &site, &campaign.slug, &anonymous, Locale::Ja).await.unwrap();
}

/// Makes the jobs of `kind` whose payload mentions `about` due now, as a
/// day passing would.
async fn make_due(db: &Db, kind: &str, about: &str) {
    let mut tx = db.begin().await.unwrap();
    let sql = "UPDATE jobs SET run_at = $1 WHERE kind = $2 AND state = 'ready' AND payload LIKE $3";
    kanpa_ledger::on_tx!(&mut tx, c => sqlx::query(sql)
        .bind(Timestamp::now()).bind(kind).bind(format!("%{about}%")).execute(c).await.unwrap().rows_affected());
    tx.commit().await.unwrap();
}

/// Moves a campaign's deadline into the past, as time passing would.
async fn kanpa_testkit_set_deadline(db: &Db, campaign: i64) {
    let past = Timestamp::now().saturating_add(time::Duration::minutes(-1));
    let mut tx = db.begin().await.unwrap();
    kanpa_ledger::on_tx!(&mut tx, c => sqlx::query("UPDATE campaigns SET deadline = $1 WHERE id = $2")
        .bind(past).bind(campaign).execute(c).await.unwrap().rows_affected());
    tx.commit().await.unwrap();
}

async fn keep_it_all_payment_posts_gross_and_fee_to_the_team_fund(backend: TestBackend) {
    let Some(d) = Drive::start(backend).await else { return };
    let (campaign, teams) = seven_team_drive(d.db(), "kia-2026", "keep_it_all").await;
    let id = d.pledge(&campaign, Some(&teams[3]), 12_345, "kia@example.jp").await;
    d.wait_status(&id, PledgeStatus::Collected).await;
    // The event may arrive twice: nothing is posted twice.
    let pledge = store::pledge_by_public_id(d.db(), &id).await.unwrap();
    let pi = d.stripe.object(pledge.payment_intent_id.as_deref().unwrap()).unwrap();
    d.deliver("payment_intent.succeeded", pi).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fund(d.db(), campaign.org_id, "fund:kia-2026:occupational").await, 12_345 - fee(12_345));
    assert_eq!(count(d.db(), "SELECT COUNT(*) FROM ledger_entries").await, 2, "gross and fee, once each");
    let live = store::campaign_by_id(d.db(), campaign.id).await.unwrap();
    assert_eq!((live.collected, live.pledged, live.backers), (12_345, 0, 1));
    // Keep-it-all closes and reports, keeping the money.
    let report = d.settler().settle(campaign.id, true).await.unwrap();
    assert_eq!(report.collected, 12_345);
    assert_eq!(report.outcome.as_deref(), Some("closed"));

    // A partial refund made on Stripe: the fund and the totals follow, once.
    let charge_id = pledge.charge_id.clone().expect("charge recorded");
    let refund = d
        .app
        .client
        .post(format!("{}/v1/refunds", d.stripe.api_base().trim_end_matches('/')))
        .bearer_auth("sk_test_kanpa")
        .form(&[("charge", charge_id.as_str()), ("amount", "2345")])
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status(), 200, "{}", refund.text().await.unwrap_or_default());
    let charge = d.stripe.object(&charge_id).unwrap();
    assert_eq!(charge["amount_refunded"], 2345);
    d.deliver("charge.refunded", charge.clone()).await;
    d.deliver("charge.refunded", charge).await;
    let net = 12_345 - fee(12_345);
    eventually(30, "the refund is posted", || async {
        fund(d.db(), campaign.org_id, "fund:kia-2026:occupational").await == net - 2_345
    })
    .await;
    let refunded = store::pledge_by_public_id(d.db(), &id).await.unwrap();
    assert_eq!((refunded.amount_refunded, refunded.status), (2_345, PledgeStatus::Collected));
    assert_eq!(store::campaign_by_id(d.db(), campaign.id).await.unwrap().collected, 10_000);

    // A dispute: the disputed amount and Stripe's fee leave the fund; winning reinstates the amount.
    // Stripe's own example dispute and balance transactions, pointed at this charge.
    let dispute = |bts: Value| {
        let mut dispute = kanpa_testkit::stripe::fixture("dispute").unwrap();
        dispute["id"] = serde_json::json!("dp_kanpa_1");
        dispute["charge"] = serde_json::json!(charge_id);
        dispute["amount"] = serde_json::json!(10_000);
        dispute["currency"] = serde_json::json!("jpy");
        dispute["payment_intent"] = Value::Null;
        dispute["balance_transactions"] = bts;
        dispute
    };
    let bt = |id: &str, amount: i64, fee: i64| {
        let mut bt = kanpa_testkit::stripe::fixture("balance_transaction").unwrap();
        bt["id"] = serde_json::json!(id);
        bt["amount"] = serde_json::json!(amount);
        bt["fee"] = serde_json::json!(fee);
        bt["net"] = serde_json::json!(amount - fee);
        bt["currency"] = serde_json::json!("jpy");
        bt
    };
    let withdrawal = serde_json::json!([bt("txn_dispute_1", -10_000, 1_500)]);
    d.deliver("charge.dispute.created", dispute(withdrawal.clone())).await;
    eventually(30, "the dispute withdrawal is posted", || async {
        fund(d.db(), campaign.org_id, "fund:kia-2026:occupational").await == net - 2_345 - 10_000 - 1_500
    })
    .await;
    let mut both = withdrawal.as_array().unwrap().clone();
    both.push(bt("txn_dispute_2", 10_000, 0));
    d.deliver("charge.dispute.closed", dispute(Value::Array(both))).await;
    eventually(30, "the reinstatement is posted once", || async {
        fund(d.db(), campaign.org_id, "fund:kia-2026:occupational").await == net - 2_345 - 1_500
    })
    .await;
    assert!(ledger::check(d.db()).await.unwrap().is_clean());
    eventually(30, "the supporter hears of the refund", || async {
        subjects(&d.sink).iter().filter(|s| s.contains("返金しました")).count() == 1
    })
    .await;
}
