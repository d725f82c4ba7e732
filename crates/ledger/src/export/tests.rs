use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use super::*;

fn account(id: i64, code: &str, kind: AccountKind) -> ExportAccount {
    ExportAccount {
        id: AccountId(id),
        org: OrgId(1),
        org_slug: "iryo".into(),
        code: code.into(),
        name: format!("name of {code}"),
        kind,
        currency: Currency::Jpy,
        plain_name: String::new(),
    }
}

fn row(entry: i64, account: i64, amount: i64, description: &str) -> JournalRow {
    JournalRow {
        entry_id: entry,
        org_id: 1,
        occurred_at: Timestamp::from_unix_seconds(1_790_000_000 + entry).unwrap(),
        description: description.into(),
        idempotency_key: format!("stripe:ch_{entry}:gross"),
        source_kind: Some("pledge".into()),
        source_ref: Some(format!("p_{entry}")),
        recorded_by: Some("stripe".into()),
        account_id: account,
        amount,
        currency: "JPY".into(),
    }
}

fn accounts() -> Vec<ExportAccount> {
    vec![
        account(1, "stripe-balance:JPY", AccountKind::Asset),
        account(2, "fund:drive:nurses", AccountKind::Fund),
        account(3, "fund:drive:doctors", AccountKind::Fund),
        account(4, "fund:drive:pool", AccountKind::Fund),
    ]
}

async fn render(report: Report, format: Format, scope: &Scope, rows: Vec<JournalRow>) -> String {
    let directory = Directory::new(accounts(), scope);
    let mut out = Vec::new();
    let stream = futures::stream::iter(rows.into_iter().map(Ok));
    write(report, format, stream, &directory, &BTreeMap::new(), &Options::default(), &mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn csv_cells_carrying_formulas_are_neutralised_and_read_back_as_written() {
    let payloads = ["=HYPERLINK(\"http://evil.example\",\"x\")", "@SUM(1)", "-1+1", "\tlead"];
    let mut rows = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let e = i as i64 + 1;
        rows.push(row(e, 1, 1000, p));
        rows.push(row(e, 2, -1000, p));
    }
    let text = render(Report::Journal, Format::Csv, &Scope::everything(), rows).await;
    let mut reader = cells::read_records(&text);
    let header = reader.remove(0);
    let column = header.iter().position(|h| h == "description").unwrap();
    let read: Vec<String> = reader.iter().map(|r| cells::restore(&r[column]).to_owned()).collect();
    for (i, p) in payloads.iter().enumerate() {
        for cell in [&reader[2 * i][column], &reader[2 * i + 1][column]] {
            assert!(cell.starts_with('\''), "{cell:?} is not neutralised");
        }
        assert_eq!(read[2 * i], *p);
    }
}

#[tokio::test]
async fn a_fund_scope_names_no_other_fund_and_entries_still_balance() {
    // Entry 1: a pledge to the nurses; entry 2: to the doctors; entry 3: the
    // pool shared among both teams.
    let rows = vec![
        row(1, 1, 3000, "nurses pledge"),
        row(1, 2, -3000, "nurses pledge"),
        row(2, 1, 5000, "doctors pledge"),
        row(2, 3, -5000, "doctors pledge"),
        row(3, 4, 1000, "pool shared"),
        row(3, 2, -600, "pool shared"),
        row(3, 3, -400, "pool shared"),
    ];
    let scope = Scope::organisation(OrgId(1)).with_funds([AccountId(2)]);
    // The database filter keeps entries touching the nurses' fund.
    let rows: Vec<_> = rows.into_iter().filter(|r| r.entry_id != 2).collect();
    let text = render(Report::Journal, Format::Csv, &scope, rows).await;
    assert!(!text.contains("doctors") && !text.contains("fund:drive:pool"), "{text}");
    assert!(text.contains("funds:other:JPY"), "{text}");
    let hledger = render(
        Report::Journal,
        Format::Hledger,
        &scope,
        vec![row(3, 4, 1000, "p"), row(3, 2, -600, "p"), row(3, 3, -400, "p")],
    )
    .await;
    assert!(hledger.contains("Equity:Iryo:Funds:Other:JPY  600 JPY"), "{hledger}");
}

/// A row source that counts the rows handed out, and a writer that checks,
/// at every write, that few rows have been pulled beyond those written (each
/// posting is one CSV line): the export cannot be collecting rows.
struct CountingWriter {
    pulled: Arc<AtomicUsize>,
    lines: usize,
    max_ahead: usize,
    writes: usize,
}

impl AsyncWrite for CountingWriter {
    fn poll_write(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.lines += buf.iter().filter(|b| **b == b'\n').count();
        self.writes += 1;
        let ahead = self.pulled.load(Ordering::SeqCst).saturating_sub(self.lines);
        self.max_ahead = self.max_ahead.max(ahead);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn the_journal_is_written_while_rows_are_still_arriving() {
    const ENTRIES: i64 = 50_000;
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let rows = futures::stream::iter(0..ENTRIES * 2).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        let entry = i / 2 + 1;
        Ok(if i % 2 == 0 { row(entry, 1, 1000, "pledge") } else { row(entry, 2, -1000, "pledge") })
    });
    let directory = Directory::new(accounts(), &Scope::everything());
    let mut out = CountingWriter { pulled: pulled.clone(), lines: 0, max_ahead: 0, writes: 0 };
    write(Report::Journal, Format::Csv, rows, &directory, &BTreeMap::new(), &Options::default(), &mut out)
        .await
        .unwrap();
    assert_eq!(out.lines, (ENTRIES * 2 + 1) as usize);
    assert!(out.writes > 100, "written in {} pieces", out.writes);
    // One buffer's worth of rows (FLUSH_BYTES / ~150 bytes) plus one entry.
    assert!(out.max_ahead < 1_000, "{} rows were held before writing", out.max_ahead);
}

#[tokio::test]
async fn the_trial_balance_sums_debits_and_credits_per_account() {
    let rows = vec![row(1, 1, 3000, "a"), row(1, 2, -3000, "a"), row(2, 2, 100, "fee"), row(2, 1, -100, "fee")];
    let text = render(Report::TrialBalance, Format::Csv, &Scope::everything(), rows).await;
    assert!(
        text.contains("\"iryo\",\"stripe-balance:JPY\",\"name of stripe-balance:JPY\",\"asset\",JPY,3000,100,2900,0"),
        "{text}"
    );
    assert!(
        text.contains("\"fund:drive:nurses\",\"name of fund:drive:nurses\",\"fund\",JPY,100,3000,0,2900"),
        "{text}"
    );
}

#[test]
fn plain_names_are_valid_for_hledger_and_beancount() {
    assert_eq!(plain_name("iryo", AccountKind::Asset, "stripe-balance:JPY"), "Assets:Iryo:Stripe-balance:JPY");
    assert_eq!(plain_name("iryo", AccountKind::Fund, "fund:drive_2026:-x"), "Equity:Iryo:Fund:Drive-2026:X-x");
    assert_eq!(plain_name("a", AccountKind::Expense, "1100"), "Expenses:A:1100");
}

async fn render_bytes(format: Format, options: &Options, rows: Vec<JournalRow>) -> Vec<u8> {
    let directory = Directory::new(accounts(), &Scope::everything());
    let mut out = Vec::new();
    let stream = futures::stream::iter(rows.into_iter().map(Ok));
    write(Report::Journal, format, stream, &directory, &BTreeMap::new(), options, &mut out).await.unwrap();
    out
}

#[tokio::test]
async fn yayoi_files_are_shift_jis_and_a_character_it_cannot_hold_is_a_geta_mark() {
    let rows = vec![
        row(1, 1, 3000, "看護チームへのご支援①(髙橋さんより)🍙"),
        row(1, 2, -3000, "看護チームへのご支援①(髙橋さんより)🍙"),
        row(2, 4, 1000, "共通基金の配分"),
        row(2, 2, -600, "共通基金の配分"),
        row(2, 3, -400, "共通基金の配分"),
    ];
    // A byte-order mark is asked for, but has no place in Shift_JIS.
    let options = Options { bom: true, ..Options::default() };
    let bytes = render_bytes(Format::Yayoi, &options, rows).await;
    let (text, _, had_errors) = encoding_rs::SHIFT_JIS.decode(&bytes);
    assert!(!had_errors, "the file is valid CP932");
    assert!(std::str::from_utf8(&bytes).is_err(), "the file is not UTF-8");
    assert!(!text.starts_with('\u{feff}'));
    assert!(!bytes.windows(2).any(|w| w == b"&#"), "no HTML character references");
    let records = cells::read_records(&text);
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r.len() == 25), "{records:?}");
    // The emoji is one 〓; everything CP932 holds (① and 髙 included) is kept.
    assert_eq!(records[0][16], "看護チームへのご支援①(髙橋さんより)〓 [1]");
    assert_eq!((records[0][0].as_str(), records[0][3].as_str(), records[0][19].as_str()), ("2000", "2026/09/21", "0"));
    let flags: Vec<(&str, &str)> = records.iter().map(|r| (r[0].as_str(), r[19].as_str())).collect();
    assert_eq!(flags, [("2000", "0"), ("2110", "3"), ("2100", "3"), ("2101", "3")]);
    assert_eq!(records[3][24], "no");
    assert_eq!(Format::Yayoi.file_type(), ("csv", "text/csv; charset=Shift_JIS"));

    // The other formats stay UTF-8, with the mark when asked for.
    let csv = render_bytes(Format::Mf, &options, vec![row(1, 1, 3000, "🍙"), row(1, 2, -3000, "🍙")]).await;
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with('\u{feff}') && csv.contains("🍙 [1]"), "{csv}");
}

#[test]
fn an_aggregated_row_gives_the_entry_with_its_postings_in_order() {
    let row = JournalEntryRow {
        entry_id: 7,
        org_id: 1,
        occurred_at: Timestamp::from_unix_seconds(1_790_000_000).unwrap(),
        description: "共通基金の配分".into(),
        idempotency_key: "campaign:1:pool-split:1".into(),
        source_kind: None,
        source_ref: None,
        recorded_by: None,
        postings: Some("4 1000 JPY,2 -600 JPY,3 -400 JPY".into()),
    };
    let entry = Entry::from_row(row.clone()).unwrap();
    let lines: Vec<(i64, i64)> = entry.lines.iter().map(|l| (l.account.0, l.amount.amount())).collect();
    assert_eq!(lines, [(4, 1000), (2, -600), (3, -400)]);
    assert_eq!((entry.id, entry.description.as_str()), (EntryId(7), "共通基金の配分"));
    for corrupt in ["4 1000", "4 x JPY", "4 1000 JPY extra", "4 1000 XYZ"] {
        let bad = JournalEntryRow { postings: Some(corrupt.into()), ..row.clone() };
        assert!(matches!(Entry::from_row(bad), Err(LedgerError::Corrupt(_))), "{corrupt:?}");
    }
}
