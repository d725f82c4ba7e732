//! The export benchmark: the real `kanpa export journal --format csv`
//! binary over 1,000,000 postings, against the database's own CSV dump of
//! the same joined rows (`COPY … TO STDOUT WITH CSV` through psql,
//! `sqlite3 -csv`).
//!
//! Each side runs as a child process with its standard output read into a
//! sink that counts bytes and lines; its peak memory is the child's
//! `ru_maxrss` from `wait4`, as GNU time reports it. Seeding is bulk multi-row inserts in a few
//! transactions and is not measured.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kanpa_ledger::store;
use kanpa_ledger::{AccountId, AccountKind, Currency, Db, NewAccount, OrgId, Timestamp, on_tx};

use crate::target::fresh;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Postings to seed and export.
    #[arg(long, default_value_t = 1_000_000)]
    postings: usize,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Runs of each side; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The `kanpa` binary to measure (default: the one beside this bench).
    #[arg(long)]
    kanpa: Option<PathBuf>,
}

/// The same joined columns the journal export reads (entry, posting, account,
/// organisation), in its order. Both dialects accept it.
const FLOOR_SELECT: &str = "SELECT o.slug, e.occurred_at, e.id, a.code, a.name, p.amount, p.currency, e.description, \
     e.source_kind, e.source_ref, e.idempotency_key, e.recorded_by \
     FROM ledger_entries e JOIN ledger_postings p ON p.entry_id = e.id \
     JOIN ledger_accounts a ON a.id = p.account_id JOIN organisations o ON o.id = e.org_id \
     ORDER BY e.occurred_at, e.id, p.id";

/// Fictional organisations. An organisation: slug, name, and its funds (code suffix, name).
type Organisation = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

const ORGANISATIONS: [Organisation; 2] = [
    (
        "iryo",
        "地域医療支援ネットワーク",
        &[
            ("nurses", "看護チーム"),
            ("doctors", "医師チーム"),
            ("pharmacy", "薬剤チーム"),
            ("rehab", "リハビリチーム"),
            ("emergency", "救急チーム"),
            ("pool", "共通基金"),
        ],
    ),
    (
        "kodomo",
        "こども食堂ひだまり",
        &[("meals", "食材費"), ("rent", "会場費"), ("study", "学習支援"), ("pool", "共通基金")],
    ),
];

struct Books {
    org: OrgId,
    stripe: AccountId,
    in_transit: AccountId,
    bank: AccountId,
    fees: AccountId,
    funds: Vec<(AccountId, &'static str)>,
}

async fn open_books(db: &Db) -> anyhow::Result<Vec<Books>> {
    let mut tx = db.begin().await?;
    let mut all = Vec::new();
    for (slug, name, funds) in ORGANISATIONS {
        let org = store::create_organisation(&mut tx, slug, name).await?.id;
        let mut open = async |code: String, name: &str, kind| -> anyhow::Result<AccountId> {
            let new = NewAccount { org, code, name: name.to_owned(), kind, currency: Currency::Jpy };
            Ok(store::create_account(&mut tx, &new).await?.id)
        };
        let stripe = open("stripe-balance:JPY".into(), "Stripe 残高", AccountKind::Asset).await?;
        let in_transit = open("in-transit:JPY".into(), "振込中(Stripe → 銀行)", AccountKind::Asset).await?;
        let bank = open("bank:JPY".into(), "普通預金", AccountKind::Asset).await?;
        let fees = open("fees:stripe:JPY".into(), "Stripe 決済手数料", AccountKind::Expense).await?;
        let mut fund_ids = Vec::new();
        for (code, fund_name) in funds.iter() {
            fund_ids.push((open(format!("fund:drive:{code}"), fund_name, AccountKind::Fund).await?, *fund_name));
        }
        all.push(Books { org, stripe, in_transit, bank, fees, funds: fund_ids });
    }
    tx.commit().await?;
    Ok(all)
}

struct SeedEntry {
    id: i64,
    org: i64,
    key: String,
    occurred_at: Timestamp,
    description: String,
    source: Option<(&'static str, String)>,
    recorded_by: Option<&'static str>,
}

/// Entry `i` with `remaining` postings still to seed: a card charge (3
/// postings: the Stripe balance net of the fee, the fee, the fund credited),
/// a partial refund, a payout or a purchase from a fund (2 postings each).
/// Never leaves exactly one posting to seed.
fn seed_entry(books: &[Books], i: usize, remaining: usize, start: i64) -> (SeedEntry, Vec<(i64, i64)>) {
    let b = &books[i % 7 % books.len()];
    let (fund, fund_name) = b.funds[(i / 7) % b.funds.len()];
    let kind = match remaining {
        3 => 0,
        2 | 4 => 7 + i % 3,
        _ => i % 10,
    };
    let id = i as i64 + 1;
    // About ten seconds apart, so the million postings span a few months.
    let occurred_at =
        Timestamp::from_unix_micros((start + i as i64 * 10) * 1_000_000 + (i as i64 % 997) * 1_000).expect("in range");
    let gross = 500 + (i as i64 * 37 % 30_000);
    let (key, description, source, recorded_by, postings) = match kind {
        0..=6 => {
            let fee = gross * 36 / 1000;
            (
                format!("stripe:ch_3Q{i:010}:gross"),
                format!("{fund_name}へのご支援(カード決済)"),
                Some(("pledge", format!("pl_{i:08}"))),
                Some("stripe"),
                vec![(b.stripe.0, gross - fee), (b.fees.0, fee), (fund.0, -gross)],
            )
        }
        7 => (
            format!("stripe:re_3Q{i:010}:refund"),
            format!("一部返金:{fund_name}(支援者のご依頼)"),
            Some(("pledge", format!("pl_{:08}", i.saturating_sub(7)))),
            Some("stripe"),
            vec![(fund.0, gross / 2 + 1), (b.stripe.0, -(gross / 2 + 1))],
        ),
        8 => (
            format!("stripe:po_1Q{i:010}:payout"),
            "Stripe からの入金(週次振込)".to_owned(),
            None,
            Some("stripe"),
            vec![(b.in_transit.0, gross * 3), (b.stripe.0, -(gross * 3))],
        ),
        _ => (
            format!("manual:{i}"),
            format!("{fund_name}:医療物資の購入(マスク・手袋 {} 箱)", 1 + i % 40),
            Some(("manual", format!("voucher-{i}"))),
            None,
            vec![(fund.0, gross), (b.bank.0, -gross)],
        ),
    };
    let entry = SeedEntry { id, org: b.org.0, key, occurred_at, description, source, recorded_by };
    (entry, postings)
}

/// Seeds `n` postings in balanced entries: multi-row INSERTs of 1,000
/// entries (and their postings), 100 statements per transaction. Entry ids
/// are given, so postings need no round trip; balance rows are set from
/// the postings at the end, so the ledger's consistency check holds.
async fn seed(db: &Db, books: &[Books], n: usize) -> anyhow::Result<usize> {
    let start = Timestamp::now().unix_seconds() - (n as i64 / 3 * 10) - 86_400;
    let mut remaining = n;
    let mut i = 0usize;
    let mut entries_seeded = 0usize;
    while remaining > 0 {
        let mut tx = db.begin().await?;
        for _ in 0..100 {
            if remaining == 0 {
                break;
            }
            let mut entries = Vec::with_capacity(1000);
            let mut postings = Vec::with_capacity(3000);
            while remaining > 0 && entries.len() < 1000 {
                let (entry, lines) = seed_entry(books, i, remaining, start);
                remaining -= lines.len();
                postings.extend(lines.into_iter().map(|(account, amount)| (entry.id, account, amount)));
                entries.push(entry);
                i += 1;
            }
            entries_seeded += entries.len();
            let recorded_at = Timestamp::now();
            let mut sql = String::from(
                "INSERT INTO ledger_entries (id, org_id, idempotency_key, occurred_at, recorded_at, description,
                 source_kind, source_ref, recorded_by) VALUES ",
            );
            for k in 0..entries.len() {
                let b = k * 9;
                if k > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${},${},${},${},${},${},${},${},${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9
                ));
            }
            let mut posting_sql =
                String::from("INSERT INTO ledger_postings (entry_id, account_id, amount, currency) VALUES ");
            for k in 0..postings.len() {
                let b = k * 3;
                if k > 0 {
                    posting_sql.push(',');
                }
                posting_sql.push_str(&format!("(${},${},${},'JPY')", b + 1, b + 2, b + 3));
            }
            on_tx!(tx, c => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for e in &entries {
                    q = q
                        .bind(e.id)
                        .bind(e.org)
                        .bind(e.key.as_str())
                        .bind(e.occurred_at)
                        .bind(recorded_at)
                        .bind(e.description.as_str())
                        .bind(e.source.as_ref().map(|s| s.0))
                        .bind(e.source.as_ref().map(|s| s.1.as_str()))
                        .bind(e.recorded_by);
                }
                q.execute(&mut *c).await?;
                let mut q = sqlx::query(sqlx::AssertSqlSafe(posting_sql));
                for (entry, account, amount) in &postings {
                    q = q.bind(*entry).bind(*account).bind(*amount);
                }
                q.execute(&mut *c).await?;
            });
        }
        tx.commit().await?;
    }
    let mut tx = db.begin().await?;
    on_tx!(tx, c => {
        sqlx::query(
            "UPDATE ledger_balances SET
                 balance = (SELECT COALESCE(SUM(p.amount), 0) FROM ledger_postings p WHERE p.account_id = ledger_balances.account_id),
                 n_postings = (SELECT COUNT(*) FROM ledger_postings p WHERE p.account_id = ledger_balances.account_id)
             WHERE slot = 0",
        )
        .execute(&mut *c)
        .await?;
    });
    if db.backend() == kanpa_ledger::Backend::Postgres {
        on_tx!(tx, c => {
            sqlx::query("SELECT setval(pg_get_serial_sequence('ledger_entries', 'id'), (SELECT MAX(id) FROM ledger_entries))")
                .execute(&mut *c)
                .await?;
        });
    }
    tx.commit().await?;
    Ok(entries_seeded)
}

/// What one child process did.
#[derive(Clone, Copy, Debug)]
struct Measured {
    wall: Duration,
    bytes: u64,
    lines: u64,
    /// Peak resident set, KiB.
    max_rss_kib: i64,
}

/// Runs `command` with its standard output counted (bytes, newlines) and
/// discarded, and returns its wall time and peak memory. Fails if it exits
/// unsuccessfully, showing its standard error.
///
/// The child is started through GNU time, which reports its `ru_maxrss`
/// from `wait4`: a child forked straight from this process would report
/// this process's own resident set (the seeding data) if that were larger,
/// because Linux carries the high-water mark across fork.
fn measure(command: Command) -> anyhow::Result<Measured> {
    let rss_file = tempfile::NamedTempFile::new()?;
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%M").arg("-o").arg(rss_file.path()).arg(command.get_program()).args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            timed.env(key, value);
        }
    }
    timed.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = timed.spawn().map_err(|e| anyhow::anyhow!("cannot run /usr/bin/time (GNU time): {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let counter = std::thread::spawn(move || -> std::io::Result<(u64, u64)> {
        let mut buffer = vec![0u8; 256 * 1024];
        let (mut bytes, mut lines) = (0u64, 0u64);
        loop {
            let n = stdout.read(&mut buffer)?;
            if n == 0 {
                return Ok((bytes, lines));
            }
            bytes += n as u64;
            lines += buffer[..n].iter().filter(|b| **b == b'\n').count() as u64;
        }
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = child.wait()?;
    let (bytes, lines) = counter.join().expect("counter thread")?;
    let wall = started.elapsed();
    let errors = errors.join().expect("stderr thread");
    anyhow::ensure!(status.success(), "{command:?} failed ({status}): {errors}");
    let report = std::fs::read_to_string(rss_file.path())?;
    let max_rss_kib = report
        .lines()
        .filter_map(|l| l.trim().parse::<i64>().ok())
        .next_back()
        .ok_or_else(|| anyhow::anyhow!("GNU time reported no peak memory: {report:?}"))?;
    Ok(Measured { wall, bytes, lines, max_rss_kib })
}

fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by_key(|m| m.wall);
    runs[runs.len() / 2]
}

fn kanpa_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.kanpa {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("kanpa"),
    };
    anyhow::ensure!(
        path.exists(),
        "no kanpa binary at {} (cargo build --release -p kanpa-server, or --kanpa PATH)",
        path.display()
    );
    Ok(path)
}

fn kanpa_export(kanpa: &Path, url: &str, workdir: &Path) -> Command {
    let mut command = Command::new(kanpa);
    command
        .args(["export", "journal", "--format", "csv"])
        .current_dir(workdir)
        .env("KANPA_ENV", "development")
        .env("KANPA__DATABASE__URL", url);
    command
}

fn floor_command(backend: &str, url: &str) -> Command {
    match backend {
        "postgres" => {
            let mut command = Command::new("psql");
            command
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c"])
                .arg(format!("COPY ({FLOOR_SELECT}) TO STDOUT WITH CSV"));
            command
        }
        _ => {
            let mut command = Command::new("sqlite3");
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            command.args(["-readonly", "-csv", path, FLOOR_SELECT]);
            command
        }
    }
}

fn row(label: &str, m: &Measured, rows: usize, floor: Option<&Measured>) {
    let secs = m.wall.as_secs_f64();
    let ratio = floor.map_or_else(|| "1.00".to_owned(), |f| format!("{:.2}", secs / f.wall.as_secs_f64()));
    println!(
        "{:<34} {:>9.2} {:>12.0} {:>10.1} {:>12.1} {:>9}",
        label,
        secs,
        rows as f64 / secs,
        m.bytes as f64 / 1_048_576.0,
        m.max_rss_kib as f64 / 1024.0,
        ratio
    );
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.postings >= 2 && args.runs >= 1, "--postings must be at least 2 and --runs at least 1");
    let kanpa = kanpa_binary(&args)?;
    let workdir = tempfile::tempdir()?;
    println!(
        "export bench: {} postings, journal CSV, median of {} run(s); floor: the database's own CSV dump of the same rows",
        args.postings, args.runs
    );
    for backend in &args.backends {
        let cluster = crate::target::cluster_for(backend)?;
        let target = fresh(backend, cluster).await?;
        let seeding = Instant::now();
        let books = open_books(&target.db).await?;
        let entries = seed(&target.db, &books, args.postings).await?;
        let report = store::check(&target.db).await?;
        anyhow::ensure!(
            report.is_clean() && report.entries == entries as i64,
            "seeded books fail the check: {report:?}"
        );
        match &target.db {
            Db::Postgres(pool) => {
                sqlx::query("VACUUM ANALYZE").execute(pool).await?;
            }
            Db::Sqlite { write, .. } => {
                sqlx::query("ANALYZE").execute(write).await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(write).await?;
            }
        }
        target.db.close().await;
        println!(
            "\n== {backend}: {} postings in {entries} entries, seeded and checked in {:.1} s",
            args.postings,
            seeding.elapsed().as_secs_f64()
        );
        println!(
            "{:<34} {:>9} {:>12} {:>10} {:>12} {:>9}",
            "run", "seconds", "rows/s", "MiB out", "peak RSS MiB", "vs floor"
        );
        let mut floors = Vec::new();
        let mut exports = Vec::new();
        for _ in 0..args.runs {
            floors.push(measure(floor_command(backend, &target.url))?);
            exports.push(measure(kanpa_export(&kanpa, &target.url, workdir.path()))?);
        }
        let floor = median(floors);
        let export = median(exports);
        anyhow::ensure!(
            floor.lines == args.postings as u64,
            "the floor wrote {} lines for {} postings",
            floor.lines,
            args.postings
        );
        anyhow::ensure!(
            export.lines == args.postings as u64 + 1,
            "kanpa export wrote {} lines for {} postings and a header",
            export.lines,
            args.postings
        );
        let floor_label =
            if backend == "postgres" { "floor: psql COPY … TO STDOUT CSV" } else { "floor: sqlite3 -csv" };
        row(floor_label, &floor, args.postings, None);
        row("kanpa export journal --format csv", &export, args.postings, Some(&floor));
        let ratio = export.wall.as_secs_f64() / floor.wall.as_secs_f64();
        let peak_mib = export.max_rss_kib as f64 / 1024.0;
        println!(
            "target (within 2x of the floor, peak memory under 64 MiB): {}",
            if ratio <= 2.0 && peak_mib < 64.0 { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_gives_exactly_the_postings_asked_for_in_balanced_entries() {
        let a = |i| AccountId(i);
        let books = vec![
            Books {
                org: OrgId(1),
                stripe: a(1),
                in_transit: a(2),
                bank: a(3),
                fees: a(4),
                funds: vec![(a(5), "看護")],
            },
            Books {
                org: OrgId(2),
                stripe: a(6),
                in_transit: a(7),
                bank: a(8),
                fees: a(9),
                funds: vec![(a(10), "食材")],
            },
        ];
        for n in (2..400).chain([1_000_000]) {
            let (mut remaining, mut i) = (n, 0);
            while remaining > 0 {
                let (_, postings) = seed_entry(&books, i, remaining, 1_790_000_000);
                assert_eq!(postings.iter().map(|p| p.1).sum::<i64>(), 0, "entry {i} balances");
                assert!(postings.len() <= remaining, "n = {n}: entry {i} overshoots");
                remaining -= postings.len();
                i += 1;
            }
        }
    }
}
