//! The ledger benchmark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kanpa_ledger::store;
use kanpa_ledger::{
    AccountId, AccountKind, Currency, Db, EntryHeader, IdempotencyKey, Money, NewAccount, NewEntry, NewPosting, OrgId,
    Timestamp, on_tx,
};

use crate::target::fresh;
use rand::Rng;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Entries posted per run (each has 3 postings).
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Concurrent writer counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    writers: Vec<usize>,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Postings on one account at which balance reads are timed.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    read_sizes: Vec<usize>,
    /// Accounts the entries spread over.
    #[arg(long, default_value_t = 50)]
    accounts: usize,
}

async fn open_accounts(db: &Db, n: usize) -> anyhow::Result<(OrgId, Vec<AccountId>)> {
    let mut tx = db.begin().await?;
    let org = store::create_organisation(&mut tx, "bench", "Bench").await?;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let new = NewAccount {
            org: org.id,
            code: format!("{i:04}"),
            name: format!("Account {i}"),
            kind: if i == 0 { AccountKind::Asset } else { AccountKind::Fund },
            currency: Currency::Jpy,
        };
        ids.push(store::create_account(&mut tx, &new).await?.id);
    }
    tx.commit().await?;
    Ok((org.id, ids))
}

/// Entry `i`: two fund debits credited to one asset, amounts varying.
fn entry(org: OrgId, accounts: &[AccountId], i: usize, prefix: &str) -> NewEntry {
    let mut rng = rand::rng();
    let a = accounts[rng.random_range(1..accounts.len())];
    let b = accounts[rng.random_range(1..accounts.len())];
    let fee = 1 + (i % 97) as i64;
    let gross = 1000 + (i % 5000) as i64;
    let header = EntryHeader {
        org,
        key: IdempotencyKey::parse(format!("{prefix}:{i}")).expect("valid key"),
        occurred_at: Timestamp::now(),
        description: "bench".into(),
        source: None,
        recorded_by: None,
    };
    NewEntry::new(
        header,
        vec![
            NewPosting::debit(a, Money::yen(gross)),
            NewPosting::debit(b, Money::yen(fee)),
            NewPosting::credit(accounts[0], Money::yen(gross + fee)).expect("in range"),
        ],
    )
    .expect("balanced")
}

/// The floor: the same entry and posting rows, one transaction per entry on
/// one connection, with no idempotency check, no validation and no balance
/// rows.
async fn floor(db: &Db, org: OrgId, accounts: &[AccountId], n: usize) -> anyhow::Result<Duration> {
    let entries: Vec<NewEntry> = (0..n).map(|i| entry(org, accounts, i, "floor")).collect();
    let insert_entry = "INSERT INTO ledger_entries (org_id, idempotency_key, occurred_at, recorded_at, description)
                        VALUES ($1, $2, $3, $4, $5) RETURNING id";
    let insert_postings = "INSERT INTO ledger_postings (entry_id, account_id, amount, currency)
                           VALUES ($1, $2, $3, $4), ($1, $5, $6, $7), ($1, $8, $9, $10)";
    let started = Instant::now();
    for e in &entries {
        let mut tx = db.begin().await?;
        let h = e.header();
        on_tx!(tx, c => {
            let id: i64 = sqlx::query_scalar(insert_entry)
                .bind(org.0).bind(h.key.as_str()).bind(h.occurred_at).bind(Timestamp::now()).bind(&h.description)
                .fetch_one(&mut *c).await?;
            let mut q = sqlx::query(insert_postings).bind(id);
            for p in e.postings() {
                q = q.bind(p.account.0).bind(p.amount.amount()).bind(p.amount.currency().code());
            }
            q.execute(c).await?;
        });
        tx.commit().await?;
    }
    Ok(started.elapsed())
}

async fn ledger_run(db: &Db, org: OrgId, accounts: &[AccountId], n: usize, writers: usize) -> anyhow::Result<Duration> {
    let entries: Arc<Vec<NewEntry>> = Arc::new((0..n).map(|i| entry(org, accounts, i, "ledger")).collect());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let db = db.clone();
        let entries = entries.clone();
        tasks.push(tokio::spawn(async move {
            for e in entries.iter().skip(w).step_by(writers) {
                store::post_entry(&db, e).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

/// Grows one account to `size` postings (2-posting entries, 5,000 per
/// transaction, through the ledger), then times balance reads.
async fn reads(
    db: &Db,
    org: OrgId,
    accounts: &[AccountId],
    sizes: &[usize],
) -> anyhow::Result<Vec<(usize, Duration, Duration)>> {
    let hot = accounts[0];
    let other = accounts[1];
    let mut have =
        store::balances(db, org).await?.iter().find(|b| b.account.id == hot).map_or(0, |b| b.n_postings as usize);
    let mut results = Vec::new();
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let mut i = 0usize;
    for size in sorted {
        while have < size {
            let mut tx = db.begin().await?;
            let batch = (size - have).min(5_000);
            for _ in 0..batch {
                let header = EntryHeader {
                    org,
                    key: IdempotencyKey::parse(format!("read:{i}"))?,
                    occurred_at: Timestamp::now(),
                    description: "read setup".into(),
                    source: None,
                    recorded_by: None,
                };
                store::post(&mut tx, &NewEntry::transfer(header, hot, other, Money::yen(1))?).await?;
                i += 1;
            }
            tx.commit().await?;
            have += batch;
        }
        let mut samples = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let t = Instant::now();
            std::hint::black_box(store::balance(db, hot).await?);
            samples.push(t.elapsed());
        }
        samples.sort_unstable();
        results.push((size, samples[samples.len() / 2], samples[samples.len() * 99 / 100]));
    }
    Ok(results)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "ledger bench: {} entries x 3 postings per run, {} accounts, writers {:?}",
        args.entries, args.accounts, args.writers
    );
    for backend in &args.backends {
        let cluster = crate::target::cluster_for(backend)?;
        println!(
            "\n== {backend} ({})",
            if backend == "sqlite" { "WAL, synchronous=FULL" } else { "fsync on, synchronous_commit on" }
        );
        println!("{:<28} {:>12} {:>12} {:>10}", "run", "seconds", "entries/s", "vs floor");
        let target = fresh(backend, cluster).await?;
        let (org, accounts) = open_accounts(&target.db, args.accounts).await?;
        let floor_time = floor(&target.db, org, &accounts, args.entries).await?;
        let floor_rate = args.entries as f64 / floor_time.as_secs_f64();
        println!(
            "{:<28} {:>12.2} {:>12.0} {:>10}",
            "floor (plain INSERTs, 1 conn)",
            floor_time.as_secs_f64(),
            floor_rate,
            "1.00"
        );
        for &writers in &args.writers {
            let target = fresh(backend, cluster).await?;
            let (org, accounts) = open_accounts(&target.db, args.accounts).await?;
            let elapsed = ledger_run(&target.db, org, &accounts, args.entries, writers).await?;
            let rate = args.entries as f64 / elapsed.as_secs_f64();
            let report = store::check(&target.db).await?;
            anyhow::ensure!(
                report.is_clean() && report.entries == args.entries as i64,
                "ledger check failed: {report:?}"
            );
            println!(
                "{:<28} {:>12.2} {:>12.0} {:>10.2}",
                format!("ledger, {writers} writer(s)"),
                elapsed.as_secs_f64(),
                rate,
                rate / floor_rate
            );
            target.db.close().await;
        }
        let target = fresh(backend, cluster).await?;
        let (org, accounts) = open_accounts(&target.db, 2).await?;
        println!("{:<28} {:>12} {:>12}", "balance read at N postings", "median µs", "p99 µs");
        for (size, median, p99) in reads(&target.db, org, &accounts, &args.read_sizes).await? {
            println!("{:<28} {:>12.1} {:>12.1}", size, median.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6);
        }
        target.db.close().await;
    }
    Ok(())
}
