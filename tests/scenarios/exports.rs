//! Exports of the books on both databases: the CLI and the API, every
//! format, formula-safe CSV, the external checkers (hledger, Beancount) and
//! their balances against kanpa's trial balance, and a fund scope.

use std::collections::BTreeMap;
use std::process::Command;

use kanpa_ledger::export::{self, Charset, Format, Options, Period, Report, Scope, cells};
use kanpa_ledger::store;
use kanpa_ledger::{
    AccountId, AccountKind, Currency, Db, EntryHeader, IdempotencyKey, Money, NewAccount, NewEntry, NewPosting, OrgId,
    SourceRef, Timestamp,
};
use kanpa_server::api_token::{self, Role};

use crate::harness::{TestApp, TestBackend, TestDb, run_kanpa};
use crate::on_both_backends;

/// Descriptions a supporter could have typed, which a spreadsheet would run.
const PAYLOADS: [&str; 4] = ["=HYPERLINK(\"http://evil.example/\",\"click\")", "@SUM(1)", "-1+1", "\tleading tab"];

struct Drive {
    org: OrgId,
    stripe: AccountId,
    bank: AccountId,
    nurses: AccountId,
    doctors: AccountId,
    pool: AccountId,
}

fn at(text: &str) -> Timestamp {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
    Timestamp::from(t)
}

/// Keys are unique across organisations: each one's are its own.
fn header(org: OrgId, key: &str, when: &str, description: &str) -> EntryHeader {
    let key = key.replacen(':', &format!(":{}-", org.0), 1);
    EntryHeader {
        org,
        key: IdempotencyKey::parse(&key).unwrap(),
        occurred_at: at(when),
        description: description.to_owned(),
        source: Some(SourceRef { kind: "pledge".into(), reference: key.replace(':', "_") }),
        recorded_by: Some("stripe".into()),
    }
}

/// A drive with two teams and a pool: pledges with fees (one message per
/// payload), a pool shared among both teams in one entry, a refund, a payout
/// to the bank, and one entry in October (outside November).
async fn seed(db: &Db, slug: &str) -> Drive {
    let mut tx = db.begin().await.unwrap();
    let org = store::create_organisation(&mut tx, slug, "医療職連合").await.unwrap().id;
    let mut open = async |code: &str, name: &str, kind| {
        let new = NewAccount { org, code: code.into(), name: name.into(), kind, currency: Currency::Jpy };
        store::create_account(&mut tx, &new).await.unwrap().id
    };
    let stripe = open("stripe-balance:JPY", "Stripe balance (JPY)", AccountKind::Asset).await;
    let bank = open("bank:JPY", "Bank (JPY)", AccountKind::Asset).await;
    let nurses = open("fund:drive:nurses", "看護師チーム", AccountKind::Fund).await;
    let doctors = open("fund:drive:doctors", "医師チーム", AccountKind::Fund).await;
    let pool = open("fund:drive:pool", "Unallocated pool", AccountKind::Fund).await;
    tx.commit().await.unwrap();
    let d = Drive { org, stripe, bank, nurses, doctors, pool };

    let mut entries = Vec::new();
    let pledges = [(d.nurses, 3000, PAYLOADS[0]), (d.doctors, 5000, PAYLOADS[1]), (d.pool, 10_000, PAYLOADS[2])];
    for (i, (fund, amount, message)) in pledges.into_iter().enumerate() {
        let when = format!("2026-11-0{}T10:00:00+09:00", i + 2);
        let charge = format!("stripe:ch_{i}");
        entries.push(
            NewEntry::transfer(
                header(org, &format!("{charge}:gross"), &when, message),
                d.stripe,
                fund,
                Money::yen(amount),
            )
            .unwrap(),
        );
        let fee = Money::yen(amount * 36 / 1000);
        let postings = vec![NewPosting::debit(fund, fee), NewPosting::credit(d.stripe, fee).unwrap()];
        entries.push(
            NewEntry::new(header(org, &format!("{charge}:fee"), &when, "Stripe fee; 決済手数料"), postings).unwrap(),
        );
    }
    let shared = vec![
        NewPosting::debit(d.pool, Money::yen(9640)),
        NewPosting::credit(d.nurses, Money::yen(4820)).unwrap(),
        NewPosting::credit(d.doctors, Money::yen(4820)).unwrap(),
    ];
    entries.push(
        NewEntry::new(header(org, "campaign:1:pool-split:1", "2026-11-10T00:00:00+09:00", PAYLOADS[3]), shared)
            .unwrap(),
    );
    entries.push(
        NewEntry::transfer(
            header(org, "stripe:ch_0:refunded-to:1000", "2026-11-11T09:00:00+09:00", "Refund \"partial\""),
            d.nurses,
            d.stripe,
            Money::yen(1000),
        )
        .unwrap(),
    );
    entries.push(
        NewEntry::transfer(
            header(org, "stripe:po_1:paid", "2026-11-20T09:00:00+09:00", "Payout to the bank"),
            d.bank,
            d.stripe,
            Money::yen(8000),
        )
        .unwrap(),
    );
    entries.push(
        NewEntry::transfer(
            header(org, "stripe:ch_old:gross", "2026-10-31T23:59:00+09:00", "October pledge"),
            d.stripe,
            d.nurses,
            Money::yen(2000),
        )
        .unwrap(),
    );
    for entry in &entries {
        store::post_entry(db, entry).await.unwrap();
    }
    d
}

fn kanpa_ok(url: &str, args: &[&str]) -> String {
    let (code, out, err) = run_kanpa(url, args);
    assert_eq!(code, 0, "kanpa {args:?} failed: {err}");
    out
}

/// The external checkers, or `None` (a failure under
/// `KANPA_REQUIRE_CHECKERS=1`, as CI sets it).
fn checkers() -> Option<()> {
    let have = |tool: &str, arg: &str| Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success());
    if have("hledger", "--version") && have("bean-check", "--help") && have("bean-query", "--help") {
        return Some(());
    }
    let why = "hledger, bean-check or bean-query is not on PATH (apt-get install -y hledger beancount)";
    if std::env::var("KANPA_REQUIRE_CHECKERS").is_ok_and(|v| v == "1") {
        panic!("KANPA_REQUIRE_CHECKERS=1 but {why}");
    }
    eprintln!(
        "\n*** SKIPPING the hledger/Beancount checks: {why}. Set KANPA_REQUIRE_CHECKERS=1 to make this a failure.\n"
    );
    None
}

fn run_tool(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{tool} {args:?} failed:\n{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// kanpa's trial balance by plain-text account name: debits minus credits.
fn trial_balance(csv: &str) -> BTreeMap<String, i64> {
    let records = cells::read_records(csv);
    let header = &records[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (org, code, kind, bd, bc) =
        (col("organisation"), col("account_code"), col("kind"), col("balance_debit"), col("balance_credit"));
    records[1..]
        .iter()
        .map(|r| {
            let kind = AccountKind::parse(&r[kind]).unwrap();
            let name = export::plain_name(cells::restore(&r[org]), kind, cells::restore(&r[code]));
            (name, r[bd].parse::<i64>().unwrap() - r[bc].parse::<i64>().unwrap())
        })
        .collect()
}

/// `hledger bal` of a file, by account.
fn hledger_balances(path: &str) -> BTreeMap<String, i64> {
    let out = run_tool("hledger", &["bal", "-f", path, "--flat", "--no-total", "-E", "-O", "csv"]);
    cells::read_records(&out)[1..]
        .iter()
        .map(|r| {
            let amount = r[1].trim().trim_end_matches("JPY").trim().replace(',', "");
            (r[0].clone(), amount.parse::<i64>().unwrap_or_else(|_| panic!("amount {:?}", r[1])))
        })
        .collect()
}

/// Beancount's sums by account, through bean-query.
fn beancount_balances(path: &str) -> BTreeMap<String, i64> {
    let out = run_tool("bean-query", &["-f", "csv", path, "SELECT account, sum(number) AS total GROUP BY account"]);
    cells::read_records(&out)[1..]
        .iter()
        .map(|r| (r[0].trim().to_owned(), r[1].trim().parse::<i64>().unwrap_or_else(|_| panic!("amount {:?}", r[1]))))
        .collect()
}

fn nonzero(map: BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    map.into_iter().filter(|(_, v)| *v != 0).collect()
}

on_both_backends!(
    hledger_and_beancount_exports_pass_their_checkers_and_equal_the_trial_balance,
    csv_from_the_api_neutralises_formulas_that_read_back_as_typed_and_only_book_keepers_may_export,
    a_team_scope_exports_only_that_teams_rows,
    japanese_accounting_imports_follow_their_layouts_with_the_mapped_accounts,
    a_team_treasurers_token_exports_only_that_teams_fund,
);

async fn hledger_and_beancount_exports_pass_their_checkers_and_equal_the_trial_balance(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let d = seed(&t.db, "iryo").await;
    let dir = tempfile::tempdir().unwrap();

    // The whole trial balance equals the ledger's own balances.
    let tb = trial_balance(&kanpa_ok(&t.url, &["export", "trial-balance", "--org", "iryo"]));
    let ledger: BTreeMap<String, i64> = store::balances(&t.db, d.org)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (export::plain_name("iryo", b.account.kind, &b.account.code), b.balance.amount()))
        .collect();
    assert_eq!(tb, ledger);
    assert_eq!(tb["Assets:Iryo:Stripe-balance:JPY"], 3000 + 5000 + 10_000 - 108 - 180 - 360 - 1000 - 8000 + 2000);

    let Some(()) = checkers() else { return };
    for (args, label) in [(vec![], "all"), (vec!["--from", "2026-11-01", "--to", "2026-11-30"], "november")] {
        let tb = nonzero(trial_balance(&kanpa_ok(&t.url, &[&["export", "trial-balance"][..], &args].concat())));
        if label == "november" {
            assert_eq!(tb["Equity:Iryo:Fund:Drive:Nurses"], -(3000 - 108 + 4820 - 1000), "October is left out");
        }
        let journal = dir.path().join(format!("{label}.journal"));
        std::fs::write(
            &journal,
            kanpa_ok(&t.url, &[&["export", "journal", "--format", "hledger"][..], &args].concat()),
        )
        .unwrap();
        let journal = journal.to_str().unwrap();
        run_tool("hledger", &["check", "-s", "-f", journal, "ordereddates"]);
        assert_eq!(nonzero(hledger_balances(journal)), tb, "hledger's balances are kanpa's trial balance ({label})");

        let bean = dir.path().join(format!("{label}.beancount"));
        std::fs::write(&bean, kanpa_ok(&t.url, &[&["export", "journal", "--format", "beancount"][..], &args].concat()))
            .unwrap();
        let bean = bean.to_str().unwrap();
        run_tool("bean-check", &[bean]);
        assert_eq!(nonzero(beancount_balances(bean)), tb, "Beancount's balances are kanpa's trial balance ({label})");
    }
}

async fn csv_from_the_api_neutralises_formulas_that_read_back_as_typed_and_only_book_keepers_may_export(
    backend: TestBackend,
) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let d = seed(&app.db, "iryo").await;
    let get = async |role: Role, query: &str, lang: &str| {
        let token = api_token::create(&app.db, d.org, role, role.as_str()).await.unwrap();
        app.client
            .get(app.url(&format!("/api/v1/exports/journal{query}")))
            .bearer_auth(token)
            .header("accept-language", lang)
            .send()
            .await
            .unwrap()
    };

    let res = get(Role::Treasurer, "?format=csv&bom=true&from=2026-11-01", "ja").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(res.headers()["content-disposition"].to_str().unwrap().contains("iryo-journal-2026-11-01.csv"));
    let body = res.text().await.unwrap();
    assert!(body.starts_with('\u{feff}'), "a byte-order mark for Excel");
    let records = cells::read_records(&body);
    let column = records[0].iter().position(|h| h == "description").unwrap();
    for payload in PAYLOADS {
        let cells_of_payload: Vec<&String> =
            records.iter().map(|r| &r[column]).filter(|c| cells::restore(c) == payload).collect();
        assert!(cells_of_payload.len() >= 2, "{payload:?} is in the journal once per posting");
        for cell in cells_of_payload {
            assert!(cell.starts_with('\''), "{cell:?} reaches the spreadsheet neutralised");
        }
    }
    assert!(!body.contains("October pledge"), "the period leaves October out");
    // Every posting is one row, and the rows balance.
    let (debit, credit) =
        (records[0].iter().position(|h| h == "debit").unwrap(), records[0].iter().position(|h| h == "credit").unwrap());
    let sum = |c: usize| records[1..].iter().map(|r| r[c].parse::<i64>().unwrap_or(0)).sum::<i64>();
    assert_eq!(records.len() - 1, 2 * 6 + 3 + 2 + 2);
    assert_eq!(sum(debit), sum(credit));

    for role in [Role::Owner, Role::Treasurer] {
        assert_eq!(get(role, "?format=beancount", "en").await.status(), 200);
    }
    // Yayoi's import is Shift_JIS, and says so.
    let res = get(Role::Treasurer, "?format=yayoi&bom=true", "ja").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=Shift_JIS");
    let bytes = res.bytes().await.unwrap();
    let (text, _, had_errors) = encoding_rs::SHIFT_JIS.decode(&bytes);
    assert!(!had_errors && std::str::from_utf8(&bytes).is_err(), "Shift_JIS, not UTF-8");
    let rows = cells::read_records(&text);
    assert!(rows.iter().all(|r| r.len() == 25) && rows.len() >= 8, "{rows:?}");
    assert!(rows.iter().any(|r| r[16].starts_with("Stripe fee; 決済手数料 [")), "{rows:?}");
    for role in [Role::Viewer, Role::Organiser] {
        assert_eq!(get(role, "", "en").await.status(), 403, "{role:?}");
    }
    let res = get(Role::Treasurer, "?format=xlsx", "ja").await;
    assert_eq!(res.status(), 422);
    let error: serde_json::Value = res.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unknown_format");
    assert!(error["error"]["message"].as_str().unwrap().contains("形式"), "{error}");
    let res = get(Role::Treasurer, "?from=2026-11-31", "en").await;
    let error: serde_json::Value = res.json().await.unwrap();
    assert_eq!(error["error"]["field"], "from", "{error}");
    let res = get(Role::Treasurer, "?fund=fund:drive:nowhere", "en").await;
    assert_eq!(res.status(), 404);
    app.stop().await;
}

async fn a_team_scope_exports_only_that_teams_rows(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let d = seed(&t.db, "iryo").await;
    // Another organisation with a fund of the same code is never included.
    let other = seed(&t.db, "other-org").await;

    // At the function level: only entries touching the nurses' fund, the
    // other funds in them summed as one line.
    let scope = Scope::organisation(d.org).with_funds([d.nurses]);
    let mut out = Vec::new();
    export::export(&t.db, Report::Journal, Format::Csv, &scope, &Period::default(), &Options::default(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("doctors") && !text.contains("医師") && !text.contains("fund:drive:pool"), "{text}");
    assert!(!text.contains("other-org") && !text.contains(PAYLOADS[1]), "{text}");
    assert!(text.contains("funds:other:JPY"));
    let _ = (d.doctors, d.pool, d.bank, other.org);

    // Through the CLI: the team's trial balance shows its own fund as in the
    // ledger, and its share of the Stripe balance.
    let tb =
        trial_balance(&kanpa_ok(&t.url, &["export", "trial-balance", "--org", "iryo", "--fund", "fund:drive:nurses"]));
    let nurses = store::balance(&t.db, d.nurses).await.unwrap().amount();
    assert_eq!(tb["Equity:Iryo:Fund:Drive:Nurses"], nurses);
    assert!(!tb.keys().any(|k| k.contains("Doctors") || k.contains("Pool")), "{tb:?}");
    assert_eq!(
        tb["Equity:Iryo:Funds:Other:JPY"],
        9640 - 4820,
        "the pool and the doctors in the split, summed and unnamed"
    );
    let journal = kanpa_ok(&t.url, &["export", "journal", "--org", "iryo", "--fund", "fund:drive:nurses"]);
    let rows = cells::read_records(&journal);
    assert_eq!(rows.len() - 1, 2 + 2 + 3 - 1 + 2 + 2, "pledge, fee, split (pool folded), refund, October");
    assert!(rows[1..].iter().all(|r| cells::restore(&r[0]) == "iryo"));

    // Without --org the operator's --fund finds the code in every organisation.
    let both = kanpa_ok(&t.url, &["export", "journal", "--fund", "fund:drive:nurses"]);
    assert!(both.contains("\"other-org\""));
    let (code, _, err) = run_kanpa(&t.url, &["export", "journal", "--fund", "fund:drive:nowhere"]);
    assert_ne!(code, 0);
    assert!(err.contains("fund:drive:nowhere"), "{err}");

    if checkers().is_some() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nurses.journal");
        std::fs::write(
            &path,
            kanpa_ok(
                &t.url,
                &["export", "journal", "--org", "iryo", "--fund", "fund:drive:nurses", "--format", "hledger"],
            ),
        )
        .unwrap();
        run_tool("hledger", &["check", "-s", "-f", path.to_str().unwrap()]);
        assert_eq!(nonzero(hledger_balances(path.to_str().unwrap())), nonzero(tb));
    }
}

async fn japanese_accounting_imports_follow_their_layouts_with_the_mapped_accounts(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let d = seed(&t.db, "iryo").await;
    let config: kanpa_server::config::ExportsConfig = serde_json::from_value(serde_json::json!({
        "accounts": { "fund:*": { "account": "受取寄付金", "tax": "対象外" } },
        "orgs": { "iryo": { "accounts": { "fund:drive:nurses": { "account": "受取寄付金", "sub": "看護師" } } } },
    }))
    .unwrap();
    // A supporter's message with a character Shift_JIS cannot hold.
    let onigiri = NewEntry::transfer(
        header(d.org, "stripe:ch_9:gross", "2026-11-21T12:00:00+09:00", "おにぎり🍙の差し入れ代"),
        d.stripe,
        d.nurses,
        Money::yen(700),
    )
    .unwrap();
    store::post_entry(&t.db, &onigiri).await.unwrap();
    let options = config.options(true);
    let scope = Scope::organisation(d.org);
    let render = async |format: Format| {
        let mut out = Vec::new();
        export::export(&t.db, Report::Journal, format, &scope, &Period::default(), &options, &mut out).await.unwrap();
        let text = match format.charset() {
            Charset::Utf8 => String::from_utf8(out).unwrap(),
            Charset::ShiftJis => {
                assert!(std::str::from_utf8(&out).is_err(), "{format:?} is not UTF-8");
                let (text, _, had_errors) = encoding_rs::SHIFT_JIS.decode(&out);
                assert!(!had_errors, "{format:?} is valid Shift_JIS (CP932)");
                assert!(!text.starts_with('\u{feff}'), "no byte-order mark in Shift_JIS");
                text.into_owned()
            }
        };
        cells::read_records(&text)
    };

    let freee = render(Format::Freee).await;
    assert_eq!(freee[0][0], "日付");
    assert!(freee.iter().all(|r| r.len() == 16));
    // The first pledge: Stripe balance 3,000 to the nurses' fund, one row.
    let pledge = freee.iter().find(|r| r[7] == "3000").unwrap();
    assert_eq!((pledge[0].as_str(), pledge[3].as_str(), pledge[4].as_str()), ("2026/11/02", "預け金", "Stripe"));
    assert_eq!(
        (pledge[9].as_str(), pledge[10].as_str(), pledge[12].as_str(), pledge[13].as_str()),
        ("受取寄付金", "看護師", "対象外", "3000")
    );

    let mf = render(Format::Mf).await;
    assert_eq!(mf[0][0], "取引No");
    assert!(mf.iter().all(|r| r.len() == 27));
    // The pool split is a compound journal: three rows with one entry number.
    let split: Vec<_> =
        mf.iter().filter(|r| r[18].contains("[") && cells::restore(&r[18]).starts_with(PAYLOADS[3])).collect();
    assert_eq!(split.len(), 3);
    assert!(split.iter().all(|r| r[0] == split[0][0] && r[1] == "2026/11/10"));
    assert!(cells::read_records("x").len() == 1);

    let yayoi = render(Format::Yayoi).await;
    assert!(yayoi.iter().all(|r| r.len() == 25), "no header, 25 columns");
    let flags: Vec<&str> = yayoi.iter().map(|r| r[0].as_str()).collect();
    assert!(flags.windows(3).any(|w| w == ["2110", "2100", "2101"]), "{flags:?}");
    assert_eq!(flags.iter().filter(|f| **f == "2000").count(), 10);
    let blank_side = yayoi.iter().find(|r| r[0] == "2110").unwrap();
    assert_eq!((blank_side[10].as_str(), blank_side[14].as_str()), ("", "0"), "the empty side is 0");
    assert!(yayoi.iter().all(|r| r[19] == if r[0] == "2000" { "0" } else { "3" }), "タイプ: 仕訳 0, 振替伝票 3");
    // Read back from Shift_JIS: the mapped Japanese accounts, and the emoji as
    // one 〓.
    let pledge = yayoi.iter().find(|r| r[0] == "2000" && r[8] == "3000").unwrap();
    assert_eq!((pledge[3].as_str(), pledge[4].as_str(), pledge[5].as_str()), ("2026/11/02", "預け金", "Stripe"));
    assert_eq!((pledge[10].as_str(), pledge[11].as_str(), pledge[13].as_str()), ("受取寄付金", "看護師", "対象外"));
    let onigiri = yayoi.iter().find(|r| r[8] == "700").unwrap();
    assert!(onigiri[16].starts_with("おにぎり〓の差し入れ代 ["), "{onigiri:?}");
}

on_both_backends!(the_demo_books_export_in_all_six_formats_and_pass_the_checkers_and_its_pledges_and_patrons_as_csv);

async fn the_demo_books_export_in_all_six_formats_and_pass_the_checkers_and_its_pledges_and_patrons_as_csv(
    backend: TestBackend,
) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    assert!(kanpa_campaigns::demo::seed(&t.db, Timestamp::now()).await.unwrap());
    assert!(kanpa_patrons::demo::seed(&t.db, Timestamp::now()).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut files = BTreeMap::new();
    for format in Format::ALL {
        let out = kanpa_ok(&t.url, &["export", "journal", "--format", format.as_str()]);
        assert!(out.lines().count() > 100, "{format:?}: {} lines", out.lines().count());
        let path = dir.path().join(format!("demo.{}", format.as_str()));
        std::fs::write(&path, out).unwrap();
        files.insert(format, path.to_str().unwrap().to_owned());
    }
    let tb = nonzero(trial_balance(&kanpa_ok(&t.url, &["export", "trial-balance"])));
    assert!(!tb.is_empty());

    // Pledges and patrons beside the books: every row, and a team's only.
    let count = async |sql: &str| -> i64 {
        match &t.db {
            Db::Sqlite { read, .. } => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(read).await.unwrap()
            }
            Db::Postgres(pool) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap()
            }
        }
    };
    let pledges = cells::read_records(&kanpa_ok(&t.url, &["export", "pledges", "--org", "iryo-rengo"]));
    assert_eq!(pledges.len() as i64 - 1, count("SELECT COUNT(*) FROM pledges").await);
    let team: String = {
        let sql = "SELECT t.slug FROM campaign_teams t ORDER BY t.id LIMIT 1";
        match &t.db {
            Db::Sqlite { read, .. } => sqlx::query_scalar(sql).fetch_one(read).await.unwrap(),
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    };
    let fund = format!("fund:licence-drive-2026:{team}");
    let of_team = cells::read_records(&kanpa_ok(&t.url, &["export", "pledges", "--fund", &fund]));
    let in_db = count(&format!(
        "SELECT COUNT(*) FROM pledges p JOIN campaign_teams t ON t.id = p.team_id WHERE t.slug = '{team}'"
    ))
    .await;
    assert!(in_db > 0);
    assert_eq!(of_team.len() as i64 - 1, in_db);
    assert!(of_team[1..].iter().all(|r| r[5] == team), "only {team}'s pledges");
    let patrons = cells::read_records(&kanpa_ok(&t.url, &["export", "patrons", "--bom"]));
    assert!(patrons[0][0] == "organisation", "the byte-order mark is not part of the first cell");
    assert_eq!(patrons.len() as i64 - 1, count("SELECT COUNT(*) FROM memberships").await);
    let (code, _, err) = run_kanpa(&t.url, &["export", "patrons", "--format", "beancount"]);
    assert_ne!(code, 0);
    assert!(err.contains("csv only"), "{err}");
    if checkers().is_some() {
        run_tool("hledger", &["check", "-s", "-f", &files[&Format::Hledger], "ordereddates"]);
        run_tool("bean-check", &[&files[&Format::Beancount]]);
        assert_eq!(nonzero(hledger_balances(&files[&Format::Hledger])), tb);
        assert_eq!(nonzero(beancount_balances(&files[&Format::Beancount])), tb);
    }
}

async fn a_team_treasurers_token_exports_only_that_teams_fund(backend: TestBackend) {
    use kanpa_campaigns::demo::{DEMO_CAMPAIGN, DEMO_ORG};
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    assert!(kanpa_campaigns::demo::seed(&app.db, Timestamp::now()).await.unwrap());
    let org = store::organisation_by_slug(&app.db, DEMO_ORG).await.unwrap().unwrap().id;
    let campaign = kanpa_campaigns::store::campaign_by_slug(&app.db, DEMO_CAMPAIGN).await.unwrap();
    let teams = kanpa_campaigns::store::teams(&app.db, campaign.id).await.unwrap();
    let (mine, theirs) = (&teams[0], &teams[1]);
    // Cash received for two teams.
    let mut tx = app.db.begin().await.unwrap();
    let cash = kanpa_ledger::chart::Holding::Cash.account(&mut tx, org, Currency::Jpy).await.unwrap();
    for (team, amount) in [(mine, 3000), (theirs, 5000)] {
        let header = EntryHeader {
            org,
            key: IdempotencyKey::parse(format!("test:cash:{}", team.id)).unwrap(),
            occurred_at: Timestamp::now(),
            description: format!("cash for team {}", team.slug),
            source: None,
            recorded_by: None,
        };
        store::post(&mut tx, &NewEntry::transfer(header, cash, team.account, Money::yen(amount)).unwrap())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let accounts = store::balances(&app.db, org).await.unwrap();
    let code = |account: AccountId| accounts.iter().find(|b| b.account.id == account).unwrap().account.code.clone();
    let (my_code, their_code) = (code(mine.account), code(theirs.account));

    let export = async |token: &str, query: &str| {
        let res = app
            .client
            .get(app.url(&format!("/api/v1/exports/journal{query}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    };
    let limited = api_token::create_scoped(&app.db, org, Role::Treasurer, Some(mine.id), "team").await.unwrap();
    let body = export(&limited, "").await;
    assert!(body.contains(&my_code) && body.contains("3000"), "{body}");
    assert!(!body.contains(&their_code) && !body.contains("5000"), "another team's fund leaks: {body}");
    // Asking for another team's fund by its code gives nothing of it.
    let body = export(&limited, &format!("?fund={their_code}")).await;
    assert!(!body.contains(&their_code) && !body.contains("5000"), "{body}");
    // A treasurer of the whole organisation sees both.
    let whole = api_token::create(&app.db, org, Role::Treasurer, "whole").await.unwrap();
    let body = export(&whole, "").await;
    assert!(body.contains(&my_code) && body.contains(&their_code), "{body}");
}
