//! Reconciliation with Stripe on both databases: a month of card charges,
//! fees, a partial refund, a lost and a won dispute and two payouts ties out
//! to the yen, and a planted discrepancy is reported with its amount.

use kanpa_ledger::chart::Holding;
use kanpa_ledger::store;
use kanpa_ledger::{
    AccountId, AccountKind, Currency, Db, EntryHeader, IdempotencyKey, Money, NewAccount, NewEntry, OrgId, Timestamp,
};
use kanpa_testkit::stripe::FakeStripe;
use serde_json::{Value, json};

use crate::harness::{TestApp, TestBackend, TestDb, run_kanpa_with};
use crate::on_both_backends;

on_both_backends!(
    a_month_with_refunds_disputes_and_payouts_reconciles_to_zero_and_a_planted_discrepancy_is_reported,
    a_treasurer_reconciles_and_confirms_payouts_through_the_api,
);

struct Books {
    org: OrgId,
    stripe: AccountId,
    fund: AccountId,
}

async fn open_books(db: &Db) -> Books {
    let mut tx = db.begin().await.unwrap();
    let org = store::create_organisation(&mut tx, "iryo", "医療職連合").await.unwrap().id;
    let stripe = Holding::StripeBalance.account(&mut tx, org, Currency::Jpy).await.unwrap();
    let new = NewAccount {
        org,
        code: "fund:drive:nurses".into(),
        name: "看護師チーム".into(),
        kind: AccountKind::Fund,
        currency: Currency::Jpy,
    };
    let fund = store::create_account(&mut tx, &new).await.unwrap().id;
    tx.commit().await.unwrap();
    Books { org, stripe, fund }
}

impl Books {
    /// Posts as the live handlers do: into the Stripe balance from the fund
    /// when `amount` is positive, the other way when negative.
    async fn post(&self, db: &Db, key: &str, amount: i64) {
        let header = EntryHeader {
            org: self.org,
            key: IdempotencyKey::parse(key).unwrap(),
            occurred_at: Timestamp::now(),
            description: key.to_owned(),
            source: None,
            recorded_by: Some("stripe".into()),
        };
        let entry = if amount > 0 {
            NewEntry::transfer(header, self.stripe, self.fund, Money::yen(amount))
        } else {
            NewEntry::transfer(header, self.fund, self.stripe, Money::yen(-amount))
        };
        store::post_entry(db, &entry.unwrap()).await.unwrap();
    }

    /// A charge collected: its gross, and its fee unless `with_fee` is false.
    async fn collected(&self, db: &Db, charge: &Value, stripe: &FakeStripe, with_fee: bool) {
        let id = charge["id"].as_str().unwrap();
        self.post(db, &format!("stripe:{id}:gross"), charge["amount"].as_i64().unwrap()).await;
        let txn = stripe.object(charge["balance_transaction"].as_str().unwrap()).unwrap();
        if with_fee {
            self.post(db, &format!("stripe:{id}:fee"), -txn["fee"].as_i64().unwrap()).await;
        }
    }
}

/// A dispute of `charge` (Stripe's example object), stored in the fake.
fn dispute(stripe: &FakeStripe, id: &str, charge: &Value) {
    let mut dispute = kanpa_testkit::stripe::fixture("dispute").unwrap();
    dispute["id"] = json!(id);
    dispute["charge"] = charge["id"].clone();
    dispute["amount"] = charge["amount"].clone();
    dispute["currency"] = json!("jpy");
    dispute["payment_intent"] = charge["payment_intent"].clone();
    stripe.insert_object(dispute).unwrap();
}

/// A dispute's balance transaction, as Stripe writes one (an adjustment
/// whose source is the dispute), stored in the fake.
fn dispute_transaction(stripe: &FakeStripe, like: &str, id: &str, dispute: &str, amount: i64, fee: i64) -> Value {
    let mut txn = stripe.object(like).unwrap();
    txn["id"] = json!(id);
    txn["type"] = json!("adjustment");
    txn["reporting_category"] = json!("dispute");
    txn["source"] = json!(dispute);
    txn["amount"] = json!(amount);
    txn["fee"] = json!(fee);
    txn["net"] = json!(amount - fee);
    txn["created"] = json!(stripe.now());
    txn["description"] = json!("Chargeback");
    txn["fee_details"] = if fee > 0 {
        json!([{ "amount": fee, "application": null, "currency": "jpy", "description": "Dispute fee", "type": "stripe_fee" }])
    } else {
        json!([])
    };
    stripe.insert_object(txn.clone()).unwrap();
    txn
}

async fn a_month_with_refunds_disputes_and_payouts_reconciles_to_zero_and_a_planted_discrepancy_is_reported(
    backend: TestBackend,
) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.unwrap();
    let books = open_books(&t.db).await;
    let db = &t.db;

    // Card charges, one partly refunded; the fee of one never reached the ledger.
    let a = stripe.charge(10_000, "jpy", 0, &[]).unwrap();
    let b = stripe.charge(5_000, "jpy", 0, &[]).unwrap();
    let c = stripe.charge(3_000, "jpy", 1_000, &[]).unwrap();
    books.collected(db, &a, &stripe, true).await;
    books.collected(db, &b, &stripe, false).await;
    books.collected(db, &c, &stripe, true).await;
    books.post(db, &format!("stripe:{}:refunded-to:1000", c["id"].as_str().unwrap()), -1000).await;
    let first = stripe.pay_out("jpy").unwrap();

    // A lost dispute (withdrawn with a fee) and a won one (withdrawn, then reinstated).
    let d = stripe.charge(8_000, "jpy", 0, &[]).unwrap();
    let e = stripe.charge(4_000, "jpy", 0, &[]).unwrap();
    books.collected(db, &d, &stripe, true).await;
    books.collected(db, &e, &stripe, true).await;
    let like = d["balance_transaction"].as_str().unwrap();
    dispute(&stripe, "dp_lost", &d);
    dispute(&stripe, "dp_won", &e);
    for (txn, dispute, amount, fee) in [
        ("txn_dispute_lost", "dp_lost", -8_000, 1_500),
        ("txn_dispute_won_1", "dp_won", -4_000, 1_500),
        ("txn_dispute_won_2", "dp_won", 4_000, 0),
    ] {
        dispute_transaction(&stripe, like, txn, dispute, amount, fee);
        // The lost dispute's webhook never arrived: reconciliation posts it.
        if dispute == "dp_lost" {
            continue;
        }
        books.post(db, &format!("stripe:{txn}:amount"), amount).await;
        if fee > 0 {
            books.post(db, &format!("stripe:{txn}:fee"), -fee).await;
        }
    }
    let second = stripe.pay_out("jpy").unwrap();

    let env = [("KANPA__STRIPE__API_BASE", stripe.api_base()), ("KANPA__PAYMENTS__GATEWAY", "stripe".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out, err) = run_kanpa_with(&t.url, &env, &["reconcile"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("posted 1 missing fees, 2 dispute entries and 2 payouts"), "{out}");
    assert!(out.contains("nothing unmatched"), "{out}");
    assert!(err.contains("balance transactions imported"), "a progress display: {err}");

    // To the yen: the Stripe balance account is Stripe's balance, and in
    // transit holds both payouts.
    let stripe_balance = store::balance(db, books.stripe).await.unwrap().amount();
    let reported: i64 = stripe.objects("balance_transaction").iter().map(|t| t["net"].as_i64().unwrap()).sum();
    assert_eq!(stripe_balance, reported);
    assert!(out.contains(&format!("Stripe balance ¥{} = ledger", group(reported))), "{out}");
    let mut tx = db.begin().await.unwrap();
    let in_transit = Holding::InTransit.account(&mut tx, books.org, Currency::Jpy).await.unwrap();
    tx.commit().await.unwrap();
    let paid = first["amount"].as_i64().unwrap() + second["amount"].as_i64().unwrap();
    assert_eq!(store::balance(db, in_transit).await.unwrap().amount(), paid);
    let fee_b = stripe.object(b["balance_transaction"].as_str().unwrap()).unwrap()["fee"].as_i64().unwrap();
    assert!(fee_b > 0);
    assert!(store::entry_by_key(db, &format!("stripe:{}:fee", b["id"].as_str().unwrap())).await.unwrap().is_some());
    let lost =
        store::entry_by_key(db, "stripe:txn_dispute_lost:amount").await.unwrap().expect("posted from Stripe's data");
    assert_eq!(
        lost.postings.iter().find(|p| p.account == books.fund).unwrap().amount,
        Money::yen(8_000),
        "out of the fund"
    );
    assert!(store::entry_by_key(db, "stripe:txn_dispute_lost:fee").await.unwrap().is_some());

    // Again: nothing new is posted.
    let (code, out, _) = run_kanpa_with(&t.url, &env, &["reconcile", "--org", "iryo"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("posted 0 missing fees, 0 dispute entries and 0 payouts"), "{out}");

    // The treasurer saw the first payout arrive; the bank statement shows the second.
    let first_id = first["id"].as_str().unwrap();
    let (code, out, err) = run_kanpa_with(&t.url, &env, &["payout", "confirm", "--org", "iryo", first_id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("moved from in transit to the bank"), "{out}");
    let (_, out, _) = run_kanpa_with(&t.url, &env, &["payout", "confirm", "--org", "iryo", first_id]);
    assert!(out.contains("already confirmed"), "{out}");
    let (code, _, err) = run_kanpa_with(&t.url, &env, &["payout", "confirm", "--org", "iryo", "po_unknown"]);
    assert_ne!(code, 0);
    assert!(err.contains("po_unknown"), "{err}");

    let today = Timestamp::now().as_offset().to_offset(kanpa_ledger::export::BOOKS_OFFSET).date();
    let second_amount = second["amount"].as_i64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let statement = dir.path().join("statement.csv");
    // As Japanese banks download it: Shift_JIS.
    let text = format!(
        "\"日付\",\"摘要\",\"お支払金額\",\"お預り金額\",\"差引残高\"\r\n\
             \"{y}年{m}月{d}日\",\"振込 ストライプジヤパン(カ\",\"\",\"{amount}\",\"1,000,000\"\r\n\
             \"{y}/{m:02}/{d:02}\",\"振込 カンパ タロウ\",\"\",\"12,345\",\"1,012,345\"\r\n\
             \"{y}/{m:02}/{d:02}\",\"振替手数料\",\"330\",\"\",\"1,012,015\"\r\n",
        y = today.year(),
        m = u8::from(today.month()),
        d = today.day(),
        amount = group(second_amount),
    );
    let (sjis, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&text);
    assert!(!unmappable && std::str::from_utf8(&sjis).is_err());
    std::fs::write(&statement, &sjis).unwrap();
    let file = statement.to_str().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "date,amount,description\n2026-11-20,lots,STRIPE\n").unwrap();
    let (code, _, err) = run_kanpa_with(&t.url, &env, &["bank", "import", "--org", "iryo", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("line 2") && err.contains("lots"), "{err}");
    let (code, out, err) = run_kanpa_with(&t.url, &env, &["bank", "import", "--org", "iryo", "--layout", "jp", file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 payouts confirmed, 1 deposits unexplained"), "{out}");
    assert!(out.contains("deposit") && out.contains("12345 (振込 カンパ タロウ) matches no payout"), "{out}");
    let (_, out, _) = run_kanpa_with(&t.url, &env, &["bank", "import", "--org", "iryo", "--layout", "jp", file]);
    assert!(out.contains("0 payouts confirmed, 2 deposits unexplained"), "importing twice moves nothing: {out}");
    let mut tx = db.begin().await.unwrap();
    let bank = Holding::Bank.account(&mut tx, books.org, Currency::Jpy).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store::balance(db, bank).await.unwrap().amount(), paid);
    assert_eq!(store::balance(db, in_transit).await.unwrap().amount(), 0);

    // A discrepancy: the ledger booked ¥500 more than Stripe charged, and an
    // entry names a charge Stripe never made.
    let f = stripe.charge(6_000, "jpy", 0, &[]).unwrap();
    let f_id = f["id"].as_str().unwrap().to_owned();
    books.post(db, &format!("stripe:{f_id}:gross"), 6_500).await;
    books.post(db, "stripe:ch_nowhere:gross", 700).await;
    let (code, out, _) = run_kanpa_with(&t.url, &env, &["reconcile"]);
    assert_eq!(code, 1, "{out}");
    let fee_f = stripe.object(f["balance_transaction"].as_str().unwrap()).unwrap()["fee"].as_i64().unwrap();
    assert!(
        out.contains(&format!(
            "UNMATCHED at Stripe: {f_id} (charge) iryo JPY: Stripe {}, ledger {}, difference -500",
            6_000 - fee_f,
            6_500 - fee_f
        )),
        "{out}"
    );
    assert!(out.contains("UNMATCHED in the ledger: ch_nowhere iryo JPY: ledger 700"), "{out}");
    assert!(!out.contains("nothing unmatched"));
    stripe.shutdown();
}

fn group(amount: i64) -> String {
    kanpa_ledger::Money::yen(amount).format(kanpa_ledger::Locale::En).trim_start_matches('¥').to_owned()
}

async fn a_treasurer_reconciles_and_confirms_payouts_through_the_api(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let stripe = FakeStripe::start().await.unwrap();
    let api_base = stripe.api_base();
    let Some(app) = TestApp::spawn_with(backend, Default::default(), move |c| {
        c.payments.gateway = kanpa_server::config::GatewayKind::Stripe;
        c.stripe.secret_key = kanpa_server::config::Secret::new("sk_test_kanpa");
        c.stripe.api_base = api_base.clone();
        c.stripe.webhook_secrets = kanpa_server::config::Secret::new("whsec_test");
        c.reconcile.every_hours = 24;
    })
    .await
    else {
        return;
    };
    let db = &app.db;
    // The scheduled run at start found nothing yet (no organisation, no
    // charge) and queued the next one a day later.
    crate::harness::eventually(30, "the scheduled reconciliation ran", || async {
        store::last_reconciliation(db).await.unwrap().is_some()
    })
    .await;
    assert_eq!(store::last_reconciliation(db).await.unwrap().map(|(_, n)| n), Some(0));
    // A second process on the same database does not arm a second chain.
    assert!(!kanpa_server::reconcile::arm(db).await.unwrap(), "already armed");
    let books = open_books(db).await;
    let charge = stripe.charge(20_000, "jpy", 0, &[]).unwrap();
    books.collected(db, &charge, &stripe, true).await;
    let payout = stripe.pay_out("jpy").unwrap();
    let payout_id = payout["id"].as_str().unwrap();
    let token = |role| async move { kanpa_server::api_token::create(db, books.org, role, "t").await.unwrap() };
    let treasurer = token(kanpa_server::api_token::Role::Treasurer).await;
    let viewer = token(kanpa_server::api_token::Role::Viewer).await;
    let post = async |path: &str, token: &str, body: &str| {
        app.client.post(app.url(path)).bearer_auth(token).body(body.to_owned()).send().await.unwrap()
    };

    assert_eq!(post("/api/v1/reconciliation", &viewer, "").await.status(), 403);
    let res = post("/api/v1/reconciliation", &treasurer, "").await;
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["payouts_posted"], 1, "{report}");
    assert_eq!(report["matched_objects"], 2, "the charge and the payout: {report}");

    let res = post("/api/v1/payouts/po_nowhere/confirm", &treasurer, "").await;
    assert_eq!(res.status(), 404);
    let error: Value = res.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("振込"), "{error}");
    let res =
        post("/api/v1/bank-statements?layout=generic", &treasurer, "date,amount,description\n2026-11-31,1,x\n").await;
    assert_eq!(res.status(), 422);
    let error: Value = res.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("2 行目"), "{error}");

    let amount = payout["amount"].as_i64().unwrap();
    let today = Timestamp::now().as_offset().to_offset(kanpa_ledger::export::BOOKS_OFFSET).date();
    let statement = format!("date,amount,description\n{today},{amount},STRIPE PAYOUT\n");
    let res = post("/api/v1/bank-statements", &treasurer, &statement).await;
    assert_eq!(res.status(), 200);
    let outcome: Value = res.json().await.unwrap();
    assert_eq!(outcome["confirmed"][0]["payout"], payout_id, "{outcome}");
    let res = post(&format!("/api/v1/payouts/{payout_id}/confirm"), &treasurer, "").await;
    let confirmed: Value = res.json().await.unwrap();
    assert_eq!(confirmed["already_confirmed"], true, "{confirmed}");
    let mut tx = db.begin().await.unwrap();
    let bank = Holding::Bank.account(&mut tx, books.org, Currency::Jpy).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store::balance(db, bank).await.unwrap().amount(), amount);
    app.stop().await;
    stripe.shutdown();
}
