//! The shared ledger on both databases: idempotency, immutability,
//! reversals, tenancy, concurrency, and properties over random workloads.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kanpa_ledger::store::{self, Posted};
use kanpa_ledger::{
    Account, AccountKind, Currency, Db, EntryHeader, IdempotencyKey, LedgerError, Money, NewAccount, NewEntry,
    NewPosting, OrgId, Timestamp,
};
use proptest::prelude::*;

use crate::harness::{TestBackend, TestDb, exec_raw, run_kanpa};
use crate::on_both_backends;

pub struct Books {
    pub org: OrgId,
    pub accounts: Vec<Account>,
}

/// An organisation with a Stripe balance, a bank account and `n_funds` funds.
pub async fn open_books(db: &Db, slug: &str, n_funds: usize) -> Books {
    let mut tx = db.begin().await.unwrap();
    let org = store::create_organisation(&mut tx, slug, "Test Org").await.unwrap();
    let mut accounts = Vec::new();
    let mut specs = vec![
        ("1100".to_owned(), "Stripe balance".to_owned(), AccountKind::Asset),
        ("1200".to_owned(), "Bank".to_owned(), AccountKind::Asset),
    ];
    for i in 0..n_funds {
        specs.push((format!("3{i:03}"), format!("Fund {i}"), AccountKind::Fund));
    }
    for (code, name, kind) in specs {
        let new = NewAccount { org: org.id, code, name, kind, currency: Currency::Jpy };
        accounts.push(store::create_account(&mut tx, &new).await.unwrap());
    }
    tx.commit().await.unwrap();
    Books { org: org.id, accounts }
}

pub fn header(org: OrgId, key: &str) -> EntryHeader {
    EntryHeader {
        org,
        key: IdempotencyKey::parse(key).unwrap(),
        occurred_at: Timestamp::now(),
        description: format!("entry {key}"),
        source: None,
        recorded_by: Some("tests".into()),
    }
}

async fn count(db: &Db, table: &str) -> i64 {
    let sql = match table {
        "entries" => "SELECT COUNT(*) FROM ledger_entries",
        "postings" => "SELECT COUNT(*) FROM ledger_postings",
        other => panic!("unknown table {other}"),
    };
    match db {
        Db::Sqlite { read, .. } => sqlx::query_scalar(sql).fetch_one(read).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

on_both_backends!(
    posting_the_same_key_twice_writes_one_entry,
    postings_and_entries_cannot_be_changed_even_with_raw_sql,
    the_ledgers_references_hold_even_with_raw_sql,
    a_reversal_restores_balances_and_happens_once,
    another_organisations_account_or_currency_is_refused_and_nothing_is_written,
    many_concurrent_posters_keep_the_books_true_and_ledger_check_says_so,
    a_batch_posts_what_one_by_one_would_and_replays_the_keys_it_knows,
);

async fn posting_the_same_key_twice_writes_one_entry(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let books = open_books(&t.db, "chapter", 1).await;
    let (stripe, fund) = (books.accounts[0].id, books.accounts[2].id);
    let entry = NewEntry::transfer(header(books.org, "stripe:ch_1:gross"), stripe, fund, Money::yen(3000)).unwrap();

    let first = store::post_entry(&t.db, &entry).await.unwrap();
    let second = store::post_entry(&t.db, &entry).await.unwrap();
    assert!(matches!(first, Posted::Created(_)));
    assert_eq!(second, Posted::Replayed(first.entry_id()));
    assert_eq!(count(&t.db, "entries").await, 1);
    assert_eq!(count(&t.db, "postings").await, 2);
    assert_eq!(store::balance(&t.db, stripe).await.unwrap(), Money::yen(3000));

    // The same key for a different movement is refused, and writes nothing.
    let different = NewEntry::transfer(header(books.org, "stripe:ch_1:gross"), stripe, fund, Money::yen(5000)).unwrap();
    let err = store::post_entry(&t.db, &different).await.unwrap_err();
    assert!(matches!(err, LedgerError::IdempotencyConflict(_)), "{err:?}");
    assert_eq!(count(&t.db, "entries").await, 1);
    assert_eq!(store::balance(&t.db, stripe).await.unwrap(), Money::yen(3000));

    let stored = store::entry(&t.db, first.entry_id()).await.unwrap().unwrap();
    assert_eq!(stored.postings.len(), 2);
    assert_eq!(stored.recorded_by.as_deref(), Some("tests"));
}

async fn postings_and_entries_cannot_be_changed_even_with_raw_sql(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let books = open_books(&t.db, "chapter", 1).await;
    let entry =
        NewEntry::transfer(header(books.org, "k1"), books.accounts[0].id, books.accounts[2].id, Money::yen(700))
            .unwrap();
    store::post_entry(&t.db, &entry).await.unwrap();

    for sql in [
        "UPDATE ledger_postings SET amount = amount * 2",
        "DELETE FROM ledger_postings",
        "UPDATE ledger_entries SET description = 'edited'",
        "DELETE FROM ledger_entries",
    ] {
        let err = exec_raw(&t.db, sql).await.expect_err(sql).to_string();
        assert!(err.contains("immutable"), "{sql}: {err}");
    }
    assert_eq!(count(&t.db, "postings").await, 2);
    assert!(store::check(&t.db).await.unwrap().is_clean());
}

/// What a posting or an entry refers to must exist, and what the ledger
/// refers to cannot be removed or renumbered: foreign keys on SQLite,
/// statement-level checks on PostgreSQL (migration 0021), the same errors.
async fn the_ledgers_references_hold_even_with_raw_sql(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let books = open_books(&t.db, "chapter", 1).await;
    let (stripe, fund) = (books.accounts[0].id.0, books.accounts[2].id.0);
    let entry =
        NewEntry::transfer(header(books.org, "k1"), books.accounts[0].id, books.accounts[2].id, Money::yen(700))
            .unwrap();
    let entry_id = store::post_entry(&t.db, &entry).await.unwrap().entry_id().0;
    let org = books.org.0;
    // An organisation with an entry but no accounts of its own, which
    // nothing but the entry refers to.
    exec_raw(&t.db, &format!("INSERT INTO organisations (slug, name, created_at) SELECT 'bare', 'Bare', created_at FROM organisations WHERE id = {org}"))
        .await
        .unwrap();
    exec_raw(
        &t.db,
        &format!(
            "INSERT INTO ledger_entries (org_id, idempotency_key, occurred_at, recorded_at, description)
         SELECT o.id, 'bare-1', e.occurred_at, e.recorded_at, e.description
         FROM organisations o, ledger_entries e WHERE o.slug = 'bare' AND e.id = {entry_id}"
        ),
    )
    .await
    .unwrap();
    let fund_before = store::balance(&t.db, books.accounts[2].id).await.unwrap();

    let refused = [
        // A posting's account, in a statement whose other row is sound.
        format!(
            "INSERT INTO ledger_postings (entry_id, account_id, amount, currency)
             VALUES ({entry_id}, {stripe}, 5, 'JPY'), ({entry_id}, 999999, -5, 'JPY')"
        ),
        format!(
            "INSERT INTO ledger_postings (entry_id, account_id, amount, currency) VALUES (999999, {fund}, 5, 'JPY')"
        ),
        format!(
            "INSERT INTO ledger_entries (org_id, idempotency_key, occurred_at, recorded_at, description)
             SELECT 999999, 'orphan', occurred_at, recorded_at, description FROM ledger_entries WHERE id = {entry_id}"
        ),
        format!("DELETE FROM ledger_accounts WHERE id = {fund}"),
        format!("UPDATE ledger_accounts SET id = 999999 WHERE id = {stripe}"),
        format!("DELETE FROM organisations WHERE id = {org}"),
        format!("UPDATE organisations SET id = 999999 WHERE id = {org}"),
        "DELETE FROM organisations WHERE slug = 'bare'".to_owned(),
        "UPDATE organisations SET id = 999999 WHERE slug = 'bare'".to_owned(),
    ];
    for sql in &refused {
        match exec_raw(&t.db, sql).await {
            Err(sqlx::Error::Database(e)) => {
                assert_eq!(e.kind(), sqlx::error::ErrorKind::ForeignKeyViolation, "{sql}: {e}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    // What does not renumber a row is not refused.
    let renamed = exec_raw(&t.db, &format!("UPDATE ledger_accounts SET name = 'Renamed fund' WHERE id = {fund}")).await;
    assert_eq!(renamed.unwrap(), 1);

    assert_eq!(count(&t.db, "entries").await, 2);
    assert_eq!(count(&t.db, "postings").await, 2);
    assert_eq!(store::balance(&t.db, books.accounts[2].id).await.unwrap(), fund_before);
    // The bare organisation's entry has no postings, and the check says so;
    // nothing else is amiss.
    let report = store::check(&t.db).await.unwrap();
    assert_eq!(report.short_entries.len(), 1, "{report:?}");
    assert!(report.unbalanced_entries.is_empty() && report.balance_mismatches.is_empty(), "{report:?}");
    assert!(report.missing_balances.is_empty() && report.misplaced_postings.is_empty(), "{report:?}");
}

async fn a_reversal_restores_balances_and_happens_once(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let books = open_books(&t.db, "chapter", 1).await;
    let (bank, fund) = (books.accounts[1].id, books.accounts[2].id);
    let original = store::post_entry(
        &t.db,
        &NewEntry::transfer(header(books.org, "manual:1"), bank, fund, Money::yen(12_000)).unwrap(),
    )
    .await
    .unwrap()
    .entry_id();

    let mut tx = t.db.begin().await.unwrap();
    let reversal = store::reverse(&mut tx, original, header(books.org, "manual:1:reversal")).await.unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(reversal, Posted::Created(_)));
    assert_eq!(store::balance(&t.db, bank).await.unwrap(), Money::yen(0));
    assert_eq!(store::balance(&t.db, fund).await.unwrap(), Money::yen(0));
    let stored = store::entry(&t.db, reversal.entry_id()).await.unwrap().unwrap();
    assert_eq!(stored.reverses, Some(original));

    let mut tx = t.db.begin().await.unwrap();
    let again = store::reverse(&mut tx, original, header(books.org, "manual:1:reversal-again")).await;
    tx.rollback().await.unwrap();
    assert!(matches!(again, Err(LedgerError::AlreadyReversed(id)) if id == original), "{again:?}");
    assert_eq!(count(&t.db, "entries").await, 2);
}

/// `post_many` (one statement on PostgreSQL) gives each entry what `post`
/// would: new ones created, a known key replayed, a known key with another
/// movement refused, a foreign account refused before anything is written;
/// the balances are the sum of the batch and the books check clean.
async fn a_batch_posts_what_one_by_one_would_and_replays_the_keys_it_knows(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let books = open_books(&t.db, "batch", 2).await;
    let theirs = open_books(&t.db, "theirs", 1).await;
    let (stripe, fund_a, fund_b) = (books.accounts[0].id, books.accounts[2].id, books.accounts[3].id);
    let known = NewEntry::transfer(header(books.org, "stripe:ch_0:gross"), stripe, fund_a, Money::yen(3000)).unwrap();
    let first = store::post_entry(&t.db, &known).await.unwrap();

    let mut batch = vec![known.clone()];
    for i in 1..=40 {
        let fund = if i % 2 == 0 { fund_a } else { fund_b };
        batch.push(
            NewEntry::transfer(header(books.org, &format!("stripe:ch_{i}:gross")), stripe, fund, Money::yen(3000))
                .unwrap(),
        );
        let fee = vec![NewPosting::debit(fund, Money::yen(108)), NewPosting::credit(stripe, Money::yen(108)).unwrap()];
        batch.push(NewEntry::new(header(books.org, &format!("stripe:ch_{i}:fee")), fee).unwrap());
    }
    let mut tx = t.db.begin().await.unwrap();
    let posted = store::post_many(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(posted.len(), batch.len());
    assert_eq!(posted[0], Posted::Replayed(first.entry_id()));
    assert!(posted[1..].iter().all(|p| matches!(p, Posted::Created(_))), "{posted:?}");
    let ids: HashSet<_> = posted.iter().map(|p| p.entry_id()).collect();
    assert_eq!(ids.len(), batch.len(), "every entry has its own id");
    let stored = store::entry(&t.db, posted[2].entry_id()).await.unwrap().unwrap();
    assert_eq!(stored.key.as_str(), "stripe:ch_1:fee");
    assert_eq!(stored.postings.len(), 2);
    assert_eq!(count(&t.db, "entries").await, 81);
    assert_eq!(count(&t.db, "postings").await, 162);
    assert_eq!(store::balance(&t.db, stripe).await.unwrap(), Money::yen(3000 + 40 * (3000 - 108)));
    assert_eq!(store::balance(&t.db, fund_a).await.unwrap(), Money::yen(-(3000 + 20 * (3000 - 108))));
    assert_eq!(store::balance(&t.db, fund_b).await.unwrap(), Money::yen(-20 * (3000 - 108)));

    // The whole batch again: every entry replayed, nothing written.
    let mut tx = t.db.begin().await.unwrap();
    let again = store::post_many(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again, posted.iter().map(|p| Posted::Replayed(p.entry_id())).collect::<Vec<_>>());
    assert_eq!(count(&t.db, "entries").await, 81);

    // A known key with another amount, or a foreign account: refused, and
    // the new entries of the same batch are not kept.
    let new = NewEntry::transfer(header(books.org, "stripe:ch_99:gross"), stripe, fund_a, Money::yen(500)).unwrap();
    let changed = NewEntry::transfer(header(books.org, "stripe:ch_1:gross"), stripe, fund_b, Money::yen(1)).unwrap();
    let foreign =
        NewEntry::transfer(header(books.org, "stripe:ch_98:gross"), stripe, theirs.accounts[2].id, Money::yen(1))
            .unwrap();
    for (bad, expected) in [(changed, "IdempotencyConflict"), (foreign, "ForeignAccount")] {
        let mut tx = t.db.begin().await.unwrap();
        let err = store::post_many(&mut tx, &[new.clone(), bad]).await.unwrap_err();
        tx.rollback().await.unwrap();
        assert!(format!("{err:?}").starts_with(expected), "{err:?}");
    }
    assert_eq!(count(&t.db, "entries").await, 81);
    assert_eq!(store::balance(&t.db, stripe).await.unwrap(), Money::yen(3000 + 40 * (3000 - 108)));
    assert!(store::check(&t.db).await.unwrap().is_clean());
}

async fn another_organisations_account_or_currency_is_refused_and_nothing_is_written(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let ours = open_books(&t.db, "ours", 1).await;
    let theirs = open_books(&t.db, "theirs", 1).await;

    let foreign =
        NewEntry::transfer(header(ours.org, "x1"), ours.accounts[0].id, theirs.accounts[2].id, Money::yen(100))
            .unwrap();
    let err = store::post_entry(&t.db, &foreign).await.unwrap_err();
    assert!(matches!(err, LedgerError::ForeignAccount(id) if id == theirs.accounts[2].id), "{err:?}");

    let dollars = NewEntry::transfer(
        header(ours.org, "x2"),
        ours.accounts[0].id,
        ours.accounts[2].id,
        Money::new(100, Currency::Usd),
    )
    .unwrap();
    let err = store::post_entry(&t.db, &dollars).await.unwrap_err();
    assert!(matches!(err, LedgerError::CurrencyMismatch { .. }), "{err:?}");

    let missing = NewEntry::transfer(
        header(ours.org, "x3"),
        ours.accounts[0].id,
        kanpa_ledger::AccountId(999_999),
        Money::yen(1),
    )
    .unwrap();
    let err = store::post_entry(&t.db, &missing).await.unwrap_err();
    assert!(matches!(err, LedgerError::UnknownAccount(_)), "{err:?}");

    assert_eq!(count(&t.db, "entries").await, 0);
    for account in ours.accounts.iter().chain(&theirs.accounts) {
        assert_eq!(store::balance(&t.db, account.id).await.unwrap(), Money::yen(0));
    }
}

/// 32 posters, each posting entries across shared accounts, a fifth of them
/// replays of keys another poster also sends. Every call succeeds (no
/// "database is locked" reaches a caller), each key posts once, balances
/// match a model, and `kanpa ledger check` agrees. Then a planted mismatch
/// is found.
async fn many_concurrent_posters_keep_the_books_true_and_ledger_check_says_so(backend: TestBackend) {
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    let books = Arc::new(open_books(&t.db, "drive", 7).await);
    let posters = 32;
    let per_poster = 25;
    let mut tasks = Vec::new();
    for poster in 0..posters {
        let db = t.db.clone();
        let books = books.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..per_poster {
                // Every fifth entry uses a key shared by all posters.
                let key = if i % 5 == 0 { format!("shared:{i}") } else { format!("p{poster}:{i}") };
                let fund = books.accounts[2 + (poster + i) % 7].id;
                let amount = Money::yen(if i % 5 == 0 { 1000 } else { 100 + (poster * per_poster + i) as i64 });
                let entry = NewEntry::new(
                    header(books.org, &key),
                    vec![
                        NewPosting::debit(books.accounts[0].id, amount),
                        NewPosting::credit(if i % 5 == 0 { books.accounts[2].id } else { fund }, amount).unwrap(),
                    ],
                )
                .unwrap();
                let posted = store::post_entry(&db, &entry).await.expect("every post succeeds");
                outcomes.push((key, amount, posted));
            }
            outcomes
        }));
    }
    let mut created = BTreeMap::new();
    let mut keys = HashSet::new();
    for task in tasks {
        for (key, amount, posted) in task.await.unwrap() {
            keys.insert(key.clone());
            if let Posted::Created(_) = posted {
                assert!(created.insert(key, amount).is_none(), "a key was created twice");
            }
        }
    }
    assert_eq!(created.len(), keys.len());
    assert_eq!(count(&t.db, "entries").await, keys.len() as i64);
    let total: i64 = created.values().map(|m| m.amount()).sum();
    assert_eq!(store::balance(&t.db, books.accounts[0].id).await.unwrap(), Money::yen(total));
    let funds: i64 = {
        let mut sum = 0;
        for account in &books.accounts[2..] {
            sum += store::balance(&t.db, account.id).await.unwrap().amount();
        }
        sum
    };
    assert_eq!(funds, -total);
    assert!(store::check(&t.db).await.unwrap().is_clean());

    let (code, out, err) = run_kanpa(&t.url, &["ledger", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ledger OK"), "{out}");
    assert!(out.contains(&format!("checked {} entries", keys.len())), "{out}");

    // Balance rows are derived data; corrupt one and the check must notice.
    let id = books.accounts[3].id;
    let plant = format!(
        "UPDATE ledger_balances SET balance = balance + 1
         WHERE account_id = {id} AND slot = (SELECT MIN(slot) FROM ledger_balances WHERE account_id = {id})"
    );
    assert_eq!(exec_raw(&t.db, &plant).await.unwrap(), 1);
    let (code, out, _) = run_kanpa(&t.url, &["ledger", "check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("BALANCE MISMATCH account {}", books.accounts[3].id)), "{out}");
    assert!(out.contains("FAILED"), "{out}");
}

// ------------------------------------------------------------------ properties

/// One generated entry: postings over account indexes, balanced by a last
/// posting on the Stripe account.
#[derive(Clone, Debug)]
struct GenEntry {
    lines: Vec<(usize, i64)>,
}

fn gen_entry(n_accounts: usize) -> impl Strategy<Value = GenEntry> {
    prop::collection::vec((1..n_accounts, -50_000i64..50_000), 1..4).prop_map(|lines| GenEntry { lines })
}

fn build(books: &Books, key: &str, generated: &GenEntry) -> Result<NewEntry, kanpa_ledger::EntryError> {
    let mut postings: Vec<NewPosting> =
        generated.lines.iter().map(|(i, a)| NewPosting::debit(books.accounts[*i].id, Money::yen(*a))).collect();
    let sum: i64 = generated.lines.iter().map(|(_, a)| a).sum();
    postings.push(NewPosting::debit(books.accounts[0].id, Money::yen(-sum)));
    NewEntry::new(header(books.org, key), postings)
}

/// Random entries posted by 4 concurrent posters, each entry also replayed
/// by another poster, and some keys reused for different postings: after
/// it, each valid key is one entry, balances equal a model and the sum of
/// postings, and the check is clean.
fn random_workloads_keep_the_books_true(backend: TestBackend) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(entries in prop::collection::vec(gen_entry(6), 1..40), conflicts in prop::collection::vec(any::<prop::sample::Index>(), 0..5))| {
        runtime.block_on(async {
            let Some(t) = TestDb::new(backend).await else { return };
            let books = Arc::new(open_books(&t.db, "prop", 4).await);
            let valid: Vec<(String, NewEntry)> = entries
                .iter()
                .enumerate()
                .filter_map(|(i, g)| build(&books, &format!("e{i}"), g).ok().map(|e| (format!("e{i}"), e)))
                .collect();
            let valid = Arc::new(valid);
            let mut tasks = Vec::new();
            for poster in 0..4usize {
                let db = t.db.clone();
                let valid = valid.clone();
                tasks.push(tokio::spawn(async move {
                    // Poster p posts entries p, p+4, … and replays those of poster p+1.
                    for (i, (_, entry)) in valid.iter().enumerate() {
                        if i % 4 == poster || i % 4 == (poster + 1) % 4 {
                            store::post_entry(&db, entry).await.expect("post or replay succeeds");
                        }
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            // Reusing a key for a different movement is refused.
            for index in &conflicts {
                if valid.is_empty() {
                    break;
                }
                let (key, original) = &valid[index.index(valid.len())];
                let altered = NewEntry::transfer(
                    header(books.org, key),
                    books.accounts[1].id,
                    books.accounts[0].id,
                    Money::yen(original.postings()[0].amount.amount().abs() + 1),
                )
                .unwrap();
                let err = store::post_entry(&t.db, &altered).await.unwrap_err();
                assert!(matches!(err, LedgerError::IdempotencyConflict(_)), "{err:?}");
            }

            let mut model: BTreeMap<kanpa_ledger::AccountId, i64> = BTreeMap::new();
            for (_, entry) in valid.iter() {
                for p in entry.postings() {
                    *model.entry(p.account).or_default() += p.amount.amount();
                }
            }
            assert_eq!(count(&t.db, "entries").await, valid.len() as i64);
            for account in &books.accounts {
                let expected = model.get(&account.id).copied().unwrap_or(0);
                assert_eq!(store::balance(&t.db, account.id).await.unwrap(), Money::yen(expected));
            }
            let report = store::check(&t.db).await.unwrap();
            assert!(report.is_clean(), "{report:?}");
        });
    });
}

#[test]
fn random_workloads_keep_the_books_true_on_sqlite() {
    random_workloads_keep_the_books_true(TestBackend::Sqlite);
}

#[test]
fn random_workloads_keep_the_books_true_on_postgres() {
    random_workloads_keep_the_books_true(TestBackend::Postgres);
}
