//! The books in the console (issue 7): exports downloaded from the console
//! through the API's own path, the reconciliation page against the fake
//! Stripe, and the demo reconciled against the sandbox processor's records.

use kanpa_campaigns::demo::DEMO_ORG;
use kanpa_ledger::chart::Holding;
use kanpa_ledger::{AccountId, Currency, Db, EntryHeader, IdempotencyKey, Money, NewEntry, OrgId, Timestamp, store};
use kanpa_server::api_token;
use kanpa_server::staff::Role;
use reqwest::header::ORIGIN;
use serde_json::Value;

use crate::admin::{Console, count, csrf_in};
use crate::harness::{TestApp, TestBackend, run_kanpa};
use crate::on_both_backends;

on_both_backends!(
    a_console_download_is_the_apis_file_and_honours_role_and_team,
    bad_export_requests_in_the_console_are_explained_in_japanese_and_english,
    the_console_reconciles_with_stripe_confirms_a_payout_and_imports_a_bank_statement,
    the_demo_reconciles_against_the_sandbox_to_the_yen_and_a_planted_difference_is_reported,
);

/// Posts `amount` from `from` to `to` (a debit of `to`), keyed `key`.
async fn transfer(db: &Db, org: OrgId, key: &str, to: AccountId, from: AccountId, amount: i64, what: &str) {
    let header = EntryHeader {
        org,
        key: IdempotencyKey::parse(key).unwrap(),
        occurred_at: Timestamp::now(),
        description: what.to_owned(),
        source: None,
        recorded_by: Some("test".into()),
    };
    store::post_entry(db, &NewEntry::transfer(header, to, from, Money::yen(amount)).unwrap()).await.unwrap();
}

async fn holding(db: &Db, org: OrgId, holding: Holding) -> AccountId {
    let mut tx = db.begin().await.unwrap();
    let account = holding.account(&mut tx, org, Currency::Jpy).await.unwrap();
    tx.commit().await.unwrap();
    account
}

async fn get_bytes(console: &Console, path: &str, cookie: Option<&str>, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = console.client.get(console.url(path));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
}

async fn a_console_download_is_the_apis_file_and_honours_role_and_team(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    let db = &console.db;
    let org = console.org;
    let (_, teams) = console.drive_teams().await;
    let nurses = teams.iter().find(|t| t.slug == "nurses").unwrap();
    let pharmacists = teams.iter().find(|t| t.slug == "pharmacists").unwrap();
    let cash = holding(db, org, Holding::Cash).await;
    transfer(db, org, "test:nurses-cash", cash, nurses.account, 12_000, "=HYPERLINK(\"x\") 看護師の会").await;
    transfer(db, org, "test:pharmacists-cash", cash, pharmacists.account, 8_000, "薬剤師チームの会費").await;
    let codes: Vec<String> = store::balances(db, org)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.account.id == nurses.account || b.account.id == pharmacists.account)
        .map(|b| b.account.code)
        .collect();
    assert_eq!(codes.len(), 2);

    console.staff("owner@example.jp", org, Role::Owner, None).await;
    console.staff("nurses-treasurer@example.jp", org, Role::Treasurer, Some(nurses.id)).await;
    console.staff("viewer@example.jp", org, Role::Viewer, None).await;
    console.staff("organiser@example.jp", org, Role::Organiser, None).await;
    let owner = console.sign_in("owner@example.jp").await;
    let nurse = console.sign_in("nurses-treasurer@example.jp").await;

    // The form, linked from the console's menu.
    let (status, dashboard) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &owner).await;
    assert_eq!(status, 200);
    assert!(dashboard.contains(&format!("/admin/o/{DEMO_ORG}/exports")), "linked from the menu");
    let (status, form) = console.get_as(&format!("/admin/o/{DEMO_ORG}/exports"), &owner).await;
    assert_eq!(status, 200);
    for format in ["csv", "freee", "mf", "yayoi", "hledger", "beancount"] {
        assert!(form.contains(&format!("value=\"{format}\"")), "offers {format}");
    }
    assert!(form.contains("看護師") && form.contains("薬剤師"), "every fund for the owner");

    // The console's file is the API's, byte for byte, for the same request.
    let token = api_token::create(db, org, api_token::Role::Owner, "exports").await.unwrap();
    for query in [
        "report=journal&format=csv&bom=yes".to_owned(),
        "report=journal&format=freee".to_owned(),
        format!("report=trial-balance&format=csv&from=2020-01-01&to=2099-12-31&fund={}", codes[0]),
        "report=pledges&format=csv".to_owned(),
    ] {
        let (status, from_console) =
            get_bytes(&console, &format!("/admin/o/{DEMO_ORG}/exports/download?{query}"), Some(&owner), None).await;
        assert_eq!(status, 200, "{query}");
        let api_query = query.replacen("report=", "x=", 1).replace("bom=yes", "bom=true");
        let report = query.split('&').next().unwrap().trim_start_matches("report=");
        let (status, from_api) =
            get_bytes(&console, &format!("/api/v1/exports/{report}?{api_query}"), None, Some(&token)).await;
        assert_eq!(status, 200, "{query}");
        assert!(!from_console.is_empty());
        assert_eq!(from_console, from_api, "{query}: the console's file is the API's");
    }
    let (_, journal) = get_bytes(
        &console,
        &format!("/admin/o/{DEMO_ORG}/exports/download?report=journal&bom=yes"),
        Some(&owner),
        None,
    )
    .await;
    assert!(journal.starts_with(&[0xEF, 0xBB, 0xBF]), "the BOM asked for");
    let journal = String::from_utf8(journal).unwrap();
    assert!(journal.contains("'=HYPERLINK"), "formula neutralised: {journal}");

    // A treasurer limited to the nurses gets the nurses' fund only, asked
    // for everything or for another team's fund, as the team's API token.
    let team_token =
        api_token::create_scoped(db, org, api_token::Role::Treasurer, Some(nurses.id), "nurses").await.unwrap();
    let (status, form) = console.get_as(&format!("/admin/o/{DEMO_ORG}/exports"), &nurse).await;
    assert_eq!(status, 200);
    assert!(form.contains("看護師") && !form.contains("薬剤師"), "only the team's fund is offered");
    for query in ["report=journal&format=csv".to_owned(), format!("report=journal&format=csv&fund={}", codes[1])] {
        let (status, bytes) =
            get_bytes(&console, &format!("/admin/o/{DEMO_ORG}/exports/download?{query}"), Some(&nurse), None).await;
        assert_eq!(status, 200);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("薬剤師チームの会費") && !text.contains("8000"), "{query}: {text}");
        let (_, from_api) = get_bytes(
            &console,
            &format!("/api/v1/exports/journal?{}", query.replace("report=journal&", "")),
            None,
            Some(&team_token),
        )
        .await;
        assert_eq!(bytes, from_api, "{query}: as the team's API token");
    }
    let (_, bytes) =
        get_bytes(&console, &format!("/admin/o/{DEMO_ORG}/exports/download?report=journal"), Some(&nurse), None).await;
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("看護師の会") && text.contains("12000"), "the team's own rows: {text}");

    // Viewers and organisers are refused, as the API refuses them.
    for (email, role) in
        [("viewer@example.jp", api_token::Role::Viewer), ("organiser@example.jp", api_token::Role::Organiser)]
    {
        let cookie = console.sign_in(email).await;
        let (status, page) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &cookie).await;
        assert_eq!(status, 200);
        assert!(!page.contains("/exports"), "{email}: no link to exports");
        let (status, body) = console.get_as(&format!("/admin/o/{DEMO_ORG}/exports"), &cookie).await;
        assert_eq!(status, 403, "{email}");
        assert!(!body.contains("看護師の会"));
        let (status, body) =
            get_bytes(&console, &format!("/admin/o/{DEMO_ORG}/exports/download?report=journal"), Some(&cookie), None)
                .await;
        assert_eq!(status, 403, "{email}");
        assert!(!String::from_utf8_lossy(&body).contains("看護師の会"));
        let token = api_token::create(db, org, role, "refused").await.unwrap();
        let (status, _) = get_bytes(&console, "/api/v1/exports/journal", None, Some(&token)).await;
        assert_eq!(status, 403, "{email}: the API refuses them too");
    }
    // Another organisation's exports are not found.
    let (status, body) = console.get_as(&format!("/admin/o/{}/exports", crate::admin::OTHER_ORG), &owner).await;
    assert_eq!(status, 404);
    assert!(!body.contains(crate::admin::OTHER_ORG_NAME));
    console.app.stop().await;
}

async fn bad_export_requests_in_the_console_are_explained_in_japanese_and_english(backend: TestBackend) {
    let Some(console) = Console::spawn(backend).await else { return };
    console.staff("treasurer@example.jp", console.org, Role::Treasurer, None).await;
    let cookie = console.sign_in("treasurer@example.jp").await;
    let entries = console.entries().await;
    let base = format!("/admin/o/{DEMO_ORG}/exports/download");
    for (query, ja, en) in [
        (
            "report=journal&from=2026-13-01",
            "from は YYYY-MM-DD 形式の日付で指定してください",
            "from must be a date written YYYY-MM-DD",
        ),
        (
            "report=journal&to=yesterday",
            "to は YYYY-MM-DD 形式の日付で指定してください",
            "to must be a date written YYYY-MM-DD",
        ),
        (
            "report=journal&from=2026-11-30&to=2026-11-01",
            "期間の終わりが始まりより前です",
            "the period ends before it starts",
        ),
        (
            "report=pledges&format=yayoi",
            "pledges は csv 形式でのみ出力できます",
            "the pledges export is available as csv only",
        ),
        ("report=ledger", "エクスポートの種類", "unknown export"),
        ("report=journal&fund=fund:nowhere", "基金勘定はありません", "no fund account has the code"),
    ] {
        let (status, page) = console.get_as(&format!("{base}?{query}"), &cookie).await;
        assert_eq!(status, 422, "{query}");
        assert!(page.contains(ja), "{query}: {page}");
        assert!(page.contains("role=\"alert\"") && page.contains("exports/download"), "the form again");
        let (status, page) = console.get_as(&format!("{base}?{query}&lang=en"), &cookie).await;
        assert_eq!(status, 422);
        assert!(page.contains(en), "{query}: {page}");
    }
    // The form keeps what was typed.
    let (_, page) =
        console.get_as(&format!("{base}?report=trial-balance&from=2026-11-30&to=2026-11-01"), &cookie).await;
    assert!(page.contains("value=\"2026-11-30\"") && page.contains("value=\"trial-balance\" selected"), "{page}");
    assert_eq!(console.entries().await, entries, "nothing changed");
    console.app.stop().await;
}

/// A `multipart/form-data` body as a browser sends a file input.
fn multipart(fields: &[(&str, &str)], file: &str) -> (String, Vec<u8>) {
    let boundary = "----kanpaTestBoundary7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
    }
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"meisai.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n{file}\r\n--{boundary}--\r\n"
    ));
    (format!("multipart/form-data; boundary={boundary}"), body.into_bytes())
}

async fn the_console_reconciles_with_stripe_confirms_a_payout_and_imports_a_bank_statement(backend: TestBackend) {
    kanpa_server::install_crypto_provider();
    let stripe = kanpa_testkit::stripe::FakeStripe::start().await.unwrap();
    let api_base = stripe.api_base();
    let Some(console) = Console::spawn_with(backend, move |c| {
        c.payments.gateway = kanpa_server::config::GatewayKind::Stripe;
        c.stripe.api_base = api_base.clone();
    })
    .await
    else {
        return;
    };
    let db = &console.db;
    let org = console.org;
    let (_, teams) = console.drive_teams().await;
    let nurses = teams.iter().find(|t| t.slug == "nurses").unwrap();
    let stripe_balance = holding(db, org, Holding::StripeBalance).await;
    // Two charges for the nurses; the fee of the second never reached the books.
    let a = stripe.charge(10_000, "jpy", 0, &[]).unwrap();
    let b = stripe.charge(5_000, "jpy", 0, &[]).unwrap();
    for (charge, with_fee) in [(&a, true), (&b, false)] {
        let id = charge["id"].as_str().unwrap();
        let amount = charge["amount"].as_i64().unwrap();
        transfer(db, org, &format!("stripe:{id}:gross"), stripe_balance, nurses.account, amount, "card").await;
        if with_fee {
            let txn = stripe.object(charge["balance_transaction"].as_str().unwrap()).unwrap();
            let fee = txn["fee"].as_i64().unwrap();
            transfer(db, org, &format!("stripe:{id}:fee"), nurses.account, stripe_balance, fee, "fee").await;
        }
    }
    let payout = stripe.pay_out("jpy").unwrap();
    let payout_id = payout["id"].as_str().unwrap().to_owned();
    let payout_amount = payout["amount"].as_i64().unwrap();

    console.staff("treasurer@example.jp", org, Role::Treasurer, None).await;
    console.staff("nurses-treasurer@example.jp", org, Role::Treasurer, Some(nurses.id)).await;
    console.staff("viewer@example.jp", org, Role::Viewer, None).await;
    let cookie = console.sign_in("treasurer@example.jp").await;
    let path = format!("/admin/o/{DEMO_ORG}/reconciliation");
    let (status, page) = console.get_as(&path, &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("まだ照合していません") && page.contains("Stripe"), "{page}");
    // Not for a treasurer limited to one team, nor a viewer; not without the token.
    for email in ["nurses-treasurer@example.jp", "viewer@example.jp"] {
        let other = console.sign_in(email).await;
        assert_eq!(console.get_as(&path, &other).await.0, 403, "{email}");
        let (_, dashboard) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &other).await;
        assert!(!dashboard.contains("/reconciliation"), "{email}: not in the menu");
    }
    let csrf = csrf_in(&page);
    let res = console.post(&format!("{path}/run"), &[("csrf", "forged")], Some(&cookie)).await;
    assert_eq!(res.status(), 403);
    assert_eq!(count(db, "SELECT COUNT(*) FROM reconciliation_reports").await, 0, "nothing ran");

    // Run now: the missing fee and the payout are booked, nothing is unmatched,
    // and Stripe's balance is the books' to the yen.
    let res = console.post(&format!("{path}/run"), &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("照合しました: 明細 3 行、一致 3 件、不一致 0 件"), "{page}");
    assert!(page.contains("不一致はありません"), "{page}");
    assert!(page.contains(&payout_id), "the payout is in transit: {page}");
    let reported: i64 = stripe.objects("balance_transaction").iter().map(|t| t["net"].as_i64().unwrap()).sum();
    let booked = store::balance(db, stripe_balance).await.unwrap().amount();
    assert_eq!(booked, reported);
    let yen = |n: i64| Money::yen(n).format(kanpa_ledger::Locale::Ja);
    assert!(page.contains(&yen(reported)) && page.contains("1円単位で一致しています"), "{page}");
    let (_, english) = console.get_as(&format!("{path}?lang=en"), &cookie).await;
    assert!(english.contains("Nothing is unmatched.") && english.contains("Equal to the yen."), "{english}");

    // Confirming: a payout not in transit and a bad date are explained.
    let res = console
        .post(&format!("{path}/payouts/po_nowhere/confirm"), &[("csrf", &csrf), ("on", "")], Some(&cookie))
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("振込中の入金 po_nowhere はありません"));
    let res = console
        .post(&format!("{path}/payouts/{payout_id}/confirm"), &[("csrf", &csrf), ("on", "2026-02-30")], Some(&cookie))
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("着金日は YYYY-MM-DD"));

    // A bank statement, uploaded as a file: a broken one changes nothing, the
    // right one moves the payout to the bank.
    let bank = holding(db, org, Holding::Bank).await;
    let upload = |fields: Vec<(&'static str, String)>, file: String| {
        let fields: Vec<(&str, String)> = fields;
        let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (content_type, body) = multipart(&refs, &file);
        console
            .client
            .post(console.url(&format!("{path}/statement")))
            .header(ORIGIN, console.url(""))
            .header("cookie", &cookie)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let res = upload(
        vec![("csrf", csrf.clone()), ("layout", "generic".into())],
        "date,amount,description\n2026-11-31,1,x\n".into(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("2 行目"), "the line at fault");
    let res = upload(vec![("csrf", "forged".into()), ("layout", "generic".into())], String::new()).await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(store::balance(db, bank).await.unwrap().amount(), 0);
    let today = Timestamp::now().as_offset().to_offset(kanpa_ledger::export::BOOKS_OFFSET).date();
    let statement = format!(
        "\"日付\",\"摘要\",\"お支払金額\",\"お預り金額\",\"差引残高\"\r\n\
         \"{today}\",\"振込 ストライプジヤパン(カ\",\"\",\"{payout_amount}\",\"1,000,000\"\r\n\
         \"{today}\",\"振込 カンパ タロウ\",\"\",\"12,345\",\"1,012,345\"\r\n"
    );
    let res = upload(vec![("csrf", csrf.clone()), ("layout", "jp".into())], statement).await.unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains(&format!("振込 {payout_id} を振込中から銀行へ移しました")), "{page}");
    assert!(page.contains("1 件の振込を確認しました。1 件の入金はどの振込とも一致しません。"), "{page}");
    assert!(page.contains("振込 カンパ タロウ"), "the unexplained deposit is named");
    assert!(page.contains("振込中の入金はありません"), "{page}");
    assert_eq!(store::balance(db, bank).await.unwrap().amount(), payout_amount);
    // Confirming by hand now writes nothing.
    let res = console
        .post(&format!("{path}/payouts/{payout_id}/confirm"), &[("csrf", &csrf), ("on", "")], Some(&cookie))
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains(&format!("振込 {payout_id} はすでに銀行にあります")));
    assert_eq!(store::balance(db, bank).await.unwrap().amount(), payout_amount);

    // A planted discrepancy: the books name a charge Stripe never made.
    transfer(db, org, "stripe:ch_nowhere:gross", stripe_balance, nurses.account, 700, "planted").await;
    let res = console.post(&format!("{path}/run"), &[("csrf", &csrf)], Some(&cookie)).await;
    let page = res.text().await.unwrap();
    assert!(page.contains("不一致 1 件"), "{page}");
    assert!(page.contains("帳簿にあり、決済代行に明細がないもの") && page.contains("ch_nowhere"), "{page}");
    assert!(page.contains(&yen(700)) && page.contains(&yen(-700)), "with its amount: {page}");
    assert!(page.contains("一致していません"), "the balances differ by the planted amount: {page}");
    assert!(!page.contains("不一致はありません"));
    // The dashboard says so first, to those who reconcile.
    let (_, dashboard) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &cookie).await;
    assert!(dashboard.contains("前回の照合で不一致が 1 件あります"), "{dashboard}");
    let viewer = console.sign_in("viewer@example.jp").await;
    let (_, dashboard) = console.get_as(&format!("/admin/o/{DEMO_ORG}"), &viewer).await;
    assert!(!dashboard.contains("前回の照合"), "not for a viewer");
    console.app.stop().await;
    stripe.shutdown();
}

async fn the_demo_reconciles_against_the_sandbox_to_the_yen_and_a_planted_difference_is_reported(backend: TestBackend) {
    let Some(app) = TestApp::spawn(backend).await else { return };
    let db = &app.db;
    let now = Timestamp::now();
    assert!(kanpa_campaigns::demo::seed(db, now).await.unwrap());
    assert!(kanpa_patrons::demo::seed(db, now).await.unwrap());
    let salon_org = store::organisation_by_slug(db, kanpa_patrons::demo::DEMO_SALON_ORG).await.unwrap().unwrap().id;
    let payouts = count(db, "SELECT COUNT(*) FROM sandbox_payouts").await;
    assert_eq!(payouts, 2, "the sandbox paid out twice");
    let paid = count(db, "SELECT COUNT(*) FROM membership_invoices WHERE status = 'paid'").await;
    let recorded = count(db, "SELECT COUNT(*) FROM sandbox_payments WHERE kind = 'payment_intent'").await;
    assert_eq!(paid, recorded, "every demo payment exists at the sandbox too");

    // A patron's invoice partly refunded through the sandbox today: its
    // refund line names the charge the books key it by.
    let token = api_token::create(db, salon_org, api_token::Role::Treasurer, "books").await.unwrap();
    let invoice: String = kanpa_ledger::on_db!(db, p => sqlx::query_scalar(
        "SELECT stripe_invoice_id FROM membership_invoices WHERE status = 'paid' ORDER BY id LIMIT 1")
        .fetch_one(p).await.unwrap());
    let res = app
        .client
        .post(app.url(&format!("/api/v1/salons/{}/invoices/{invoice}/refunds", kanpa_patrons::demo::DEMO_SALON)))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "amount": 300, "idempotency_key": "demo-partial" }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let refunded = format!("stripe:{}:refunded-to:300", invoice.replace("in_", "ch_"));
    crate::harness::eventually(30, "the refund is booked", || async {
        store::entry_by_key(db, &refunded).await.unwrap().is_some()
    })
    .await;

    // The operator's run: the payouts are booked, nothing is unmatched, and
    // the sandbox's balance is the Stripe balance account's.
    let (code, out, err) = run_kanpa(&app.database_url, &["reconcile"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("posted 0 missing fees, 0 dispute entries and 2 payouts"), "{out}");
    assert!(out.contains("nothing unmatched"), "{out}");
    let stripe_balance = holding(db, salon_org, Holding::StripeBalance).await;
    let booked = store::balance(db, stripe_balance).await.unwrap().amount();
    assert!(booked > 0);
    let source = kanpa_payments::sandbox::SandboxBalance { db: db.clone() };
    let sandbox = kanpa_payments::balance::BalanceSource::balance(&source).await.unwrap();
    assert_eq!(sandbox, vec![Money::yen(booked)], "to the yen");
    assert!(
        out.contains(&format!(
            "sandbox balance {} = ledger Stripe balance accounts",
            Money::yen(booked).format(kanpa_ledger::Locale::En)
        )),
        "{out}"
    );
    let in_transit = holding(db, salon_org, Holding::InTransit).await;
    let payouts_total = count(db, "SELECT CAST(SUM(amount) AS BIGINT) FROM sandbox_payouts").await;
    assert_eq!(store::balance(db, in_transit).await.unwrap().amount(), payouts_total);

    // The salon's owner sees the same on the console page, and through the API.
    crate::admin::add_staff(db, "salon-owner@example.jp", salon_org, Role::Owner, None).await;
    let cookie = crate::admin::sign_in_as(&app, "salon-owner@example.jp").await;
    let path = format!("/admin/o/{}/reconciliation", kanpa_patrons::demo::DEMO_SALON_ORG);
    let page = app.client.get(app.url(&path)).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("サンドボックス決済") && page.contains("不一致はありません"), "{page}");
    assert!(page.contains("1円単位で一致しています"), "{page}");
    let csrf = csrf_in(&page);
    let res = crate::admin::post_as(&app, &format!("{path}/run"), &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("不一致 0 件") && page.contains("不一致はありません"), "{page}");
    let res = app.client.post(app.url("/api/v1/reconciliation")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!((report["clean"].clone(), report["source"].clone()), (Value::Bool(true), "sandbox".into()), "{report}");
    // A token limited to one team does not reconcile the whole organisation.
    let org = store::organisation_by_slug(db, DEMO_ORG).await.unwrap().unwrap().id;
    let drive = kanpa_campaigns::store::campaign_by_slug(db, kanpa_campaigns::demo::DEMO_CAMPAIGN).await.unwrap();
    let team = kanpa_campaigns::store::teams(db, drive.id).await.unwrap()[0].id;
    let team_token = api_token::create_scoped(db, org, api_token::Role::Treasurer, Some(team), "team").await.unwrap();
    for path in ["/api/v1/reconciliation", "/api/v1/payouts/po_x/confirm", "/api/v1/bank-statements"] {
        let res = app.client.post(app.url(path)).bearer_auth(&team_token).send().await.unwrap();
        assert_eq!(res.status(), 403, "{path}");
    }

    // Planted: the books took ¥500 more for one demo charge than the sandbox
    // did, and the sandbox holds a payment the books never heard of.
    let charge: String = {
        let sql = "SELECT id FROM sandbox_payments WHERE kind = 'payment_intent' ORDER BY id LIMIT 1";
        let pi: String = kanpa_ledger::on_db!(db, p => sqlx::query_scalar(sql).fetch_one(p).await.unwrap());
        pi.replace("pi_", "ch_")
    };
    let fund = store::entry_by_key(db, &format!("stripe:{charge}:gross"))
        .await
        .unwrap()
        .unwrap()
        .postings
        .iter()
        .find(|p| p.amount.amount() < 0)
        .unwrap()
        .account;
    transfer(db, salon_org, &format!("stripe:{charge}:planted"), stripe_balance, fund, 500, "planted").await;
    let mut tx = db.begin().await.unwrap();
    kanpa_payments::sandbox::record_payment(&mut tx, "pi_sandbox_planted", "nobody", Money::yen(1_000), now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (code, out, _) = run_kanpa(&app.database_url, &["reconcile"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("UNMATCHED at the sandbox: {charge} (charge+refund) salon-demo JPY")), "{out}");
    assert!(out.contains("difference -500"), "{out}");
    assert!(
        out.contains("UNMATCHED at the sandbox: ch_sandbox_planted (charge) (no organisation) JPY: sandbox 964, ledger 0, difference 964"),
        "{out}"
    );
    assert!(out.contains("≠"), "the balances differ: {out}");
    assert!(!out.contains("nothing unmatched"));
    let res = crate::admin::post_as(&app, &format!("{path}/run"), &[("csrf", &csrf)], Some(&cookie)).await;
    let page = res.text().await.unwrap();
    assert!(page.contains(&charge) && page.contains(&Money::yen(-500).format(kanpa_ledger::Locale::Ja)), "{page}");
    assert!(!page.contains("ch_sandbox_planted"), "a payment nobody booked is the operator's, not the salon's");
    app.stop().await;
}
