//! Exports of the books: the journal (one row per posting), the trial
//! balance and a fund's ledger, as spreadsheet-safe CSV, as journal imports
//! for freee, Money Forward and Yayoi, and as hledger and Beancount files.
//!
//! Every export takes an explicit [`Scope`] (an organisation or all of them,
//! and optionally a set of fund accounts) and [`Period`], reads the postings
//! as a stream from the database in date order and writes each entry as soon
//! as its last posting has arrived: memory holds one entry and one output
//! buffer of at most [`FLUSH_BYTES`] (plus one row per account for the trial
//! balance), however many postings there are.
//!
//! Dates are calendar dates in Japan (UTC+9), the books' time zone. Files
//! are UTF-8, except Yayoi's, which are Shift_JIS (CP932) as Yayoi Kaikei
//! reads them (see [`charset`]).

pub mod cells;
pub mod charset;
mod filter;
mod formats;
pub mod mapping;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub use self::charset::Charset;
pub use self::filter::{FilterParam, RowFilter};
pub use self::mapping::{MappedAccount, Mapping};
use crate::account::AccountKind;
use crate::db::Db;
use crate::money::{Currency, Money};
use crate::{AccountId, EntryId, LedgerError, OrgId, Timestamp};

/// Output is handed to the writer whenever this much has accumulated.
pub const FLUSH_BYTES: usize = 32 * 1024;

/// The books' time zone: dates in exports are dates in Japan.
pub const BOOKS_OFFSET: time::UtcOffset = match time::UtcOffset::from_hms(9, 0, 0) {
    Ok(offset) => offset,
    Err(_) => time::UtcOffset::UTC,
};

/// Whose rows an export may contain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// One organisation, or every one (the operator's CLI).
    pub org: Option<OrgId>,
    /// Only entries touching these fund accounts (a treasurer limited to one
    /// team). Within such an entry, postings on funds outside the set are
    /// shown summed as one "other funds" line, so entries still balance but
    /// no other fund is named.
    pub funds: Option<BTreeSet<AccountId>>,
}

impl Scope {
    pub fn everything() -> Scope {
        Scope::default()
    }

    pub fn organisation(org: OrgId) -> Scope {
        Scope { org: Some(org), funds: None }
    }

    pub fn with_funds(mut self, funds: impl IntoIterator<Item = AccountId>) -> Scope {
        self.funds = Some(funds.into_iter().collect());
        self
    }
}

/// Which days: both ends inclusive, dates in Japan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Period {
    pub from: Option<time::Date>,
    pub to: Option<time::Date>,
}

impl Period {
    /// The first instant included, if bounded.
    pub fn start(&self) -> Option<Timestamp> {
        self.from.map(|d| Timestamp::from(d.midnight().assume_offset(BOOKS_OFFSET)))
    }

    /// The first instant after the period, if bounded.
    pub fn end(&self) -> Option<Timestamp> {
        self.to.and_then(|d| d.next_day()).map(|d| Timestamp::from(d.midnight().assume_offset(BOOKS_OFFSET)))
    }

    /// "2026-11-01" as people type it.
    pub fn parse_date(text: &str) -> Option<time::Date> {
        time::Date::parse(text.trim(), time::macros::format_description!("[year]-[month]-[day]")).ok()
    }
}

/// What is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Report {
    /// One row per posting.
    Journal,
    /// Per account: debits, credits and the balance over the period.
    TrialBalance,
    /// One row per posting on a fund, with the fund's running balance.
    Fund,
}

impl Report {
    pub fn parse(text: &str) -> Option<Report> {
        match text {
            "journal" => Some(Report::Journal),
            "trial-balance" => Some(Report::TrialBalance),
            "fund" => Some(Report::Fund),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Report::Journal => "journal",
            Report::TrialBalance => "trial-balance",
            Report::Fund => "fund",
        }
    }
}

/// How it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Freee,
    Mf,
    Yayoi,
    Hledger,
    Beancount,
}

impl Format {
    pub const ALL: [Format; 6] =
        [Format::Csv, Format::Freee, Format::Mf, Format::Yayoi, Format::Hledger, Format::Beancount];

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Freee => "freee",
            Format::Mf => "mf",
            Format::Yayoi => "yayoi",
            Format::Hledger => "hledger",
            Format::Beancount => "beancount",
        }
    }

    /// How the file's text is encoded: Shift_JIS (CP932) for Yayoi Kaikei,
    /// whose journal import reads nothing else, UTF-8 for the others.
    pub fn charset(self) -> Charset {
        match self {
            Format::Yayoi => Charset::ShiftJis,
            _ => Charset::Utf8,
        }
    }

    /// The file name extension and the media type.
    pub fn file_type(self) -> (&'static str, &'static str) {
        match self {
            Format::Yayoi => ("csv", "text/csv; charset=Shift_JIS"),
            Format::Csv | Format::Freee | Format::Mf => ("csv", "text/csv; charset=utf-8"),
            Format::Hledger => ("journal", "text/plain; charset=utf-8"),
            Format::Beancount => ("beancount", "text/plain; charset=utf-8"),
        }
    }

    /// Whether `report` can be written in this format: the journal in all
    /// six; the trial balance and a fund's ledger as CSV.
    pub fn supports(self, report: Report) -> bool {
        matches!((report, self), (Report::Journal, _) | (_, Format::Csv))
    }
}

/// Settings beside the scope.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Start UTF-8 CSV output with a byte-order mark, so Excel reads
    /// Japanese text correctly (Yayoi's Shift_JIS files never have one).
    pub bom: bool,
    /// Accounts of the organisations' charts, for freee, Money Forward and
    /// Yayoi: these rules, or an organisation's own (by slug) if it has them.
    pub mapping: Mapping,
    pub org_mappings: BTreeMap<String, Mapping>,
}

impl Options {
    pub fn mapping_for(&self, org_slug: &str) -> &Mapping {
        self.org_mappings.get(org_slug).unwrap_or(&self.mapping)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the {} export is not available as {}", report.as_str(), format.as_str())]
    Unsupported { report: Report, format: Format },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
}

impl From<sqlx::Error> for ExportError {
    fn from(e: sqlx::Error) -> ExportError {
        ExportError::Ledger(LedgerError::Database(e))
    }
}

/// One posting with its entry, as the database streams it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct JournalRow {
    pub entry_id: i64,
    pub org_id: i64,
    pub occurred_at: Timestamp,
    pub description: String,
    pub idempotency_key: String,
    pub source_kind: Option<String>,
    pub source_ref: Option<String>,
    pub recorded_by: Option<String>,
    pub account_id: i64,
    pub amount: i64,
    pub currency: String,
}

/// One entry with its postings, as the database streams it for an export:
/// `postings` is "ACCOUNT AMOUNT CURRENCY" per posting, joined by commas,
/// in posting order ("7 3000 JPY,2 -3000 JPY").
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct JournalEntryRow {
    pub entry_id: i64,
    pub org_id: i64,
    pub occurred_at: Timestamp,
    pub description: String,
    pub idempotency_key: String,
    pub source_kind: Option<String>,
    pub source_ref: Option<String>,
    pub recorded_by: Option<String>,
    pub postings: Option<String>,
}

/// An account as exports show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportAccount {
    pub id: AccountId,
    pub org: OrgId,
    pub org_slug: String,
    pub code: String,
    pub name: String,
    pub kind: AccountKind,
    pub currency: Currency,
    /// The name in hledger and Beancount files: `Assets:Iryo:Stripe-balance:JPY`.
    pub plain_name: String,
}

/// The code of the line that stands for funds outside a fund scope.
pub const OTHER_FUNDS_CODE: &str = "funds:other";

/// The accounts an export may name, looked up by id: every non-fund account
/// of the organisations in scope, the funds in scope, and per organisation
/// and currency an "other funds" line when the scope is limited to funds.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    accounts: BTreeMap<AccountId, ExportAccount>,
}

impl Directory {
    /// Builds it from every account of the organisations in scope.
    pub fn new(all: Vec<ExportAccount>, scope: &Scope) -> Directory {
        let mut accounts = BTreeMap::new();
        let mut other: BTreeSet<(OrgId, String, Currency)> = BTreeSet::new();
        for account in all {
            let visible = match (&scope.funds, account.kind) {
                (Some(funds), AccountKind::Fund) => {
                    if !funds.contains(&account.id) {
                        other.insert((account.org, account.org_slug.clone(), account.currency));
                    }
                    funds.contains(&account.id)
                }
                _ => true,
            };
            if visible {
                accounts.insert(account.id, account);
            }
        }
        for (org, org_slug, currency) in other {
            let id = other_funds_id(org, currency);
            let code = format!("{OTHER_FUNDS_CODE}:{}", currency.code());
            accounts.insert(
                id,
                ExportAccount {
                    id,
                    org,
                    org_slug,
                    code,
                    name: format!("Other funds ({})", currency.code()),
                    kind: AccountKind::Fund,
                    currency,
                    plain_name: String::new(),
                },
            );
        }
        // Plain-text names, unique even where two codes sanitise alike.
        let mut taken: HashMap<String, AccountId> = HashMap::new();
        for account in accounts.values_mut() {
            let mut name = plain_name(&account.org_slug, account.kind, &account.code);
            if taken.contains_key(&name) {
                name = format!("{name}-{}", account.id.0.unsigned_abs());
            }
            taken.insert(name.clone(), account.id);
            account.plain_name = name;
        }
        Directory { accounts }
    }

    pub fn get(&self, id: AccountId) -> Option<&ExportAccount> {
        self.accounts.get(&id)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &ExportAccount> {
        self.accounts.values()
    }

    pub fn currencies(&self) -> BTreeSet<Currency> {
        self.accounts.values().map(|a| a.currency).collect()
    }
}

/// The synthetic id of an organisation's "other funds" line (negative, so no
/// real account has it).
fn other_funds_id(org: OrgId, currency: Currency) -> AccountId {
    let c = Currency::ALL.iter().position(|x| *x == currency).unwrap_or(0) as i64;
    AccountId(-(org.0 * 8 + c) - 1)
}

/// An account name hledger and Beancount accept: a root by kind (funds are
/// net assets held for a purpose, so equity), the organisation, then each
/// `:`-separated part of the code, capitalised, with anything but ASCII
/// letters, digits and `-` turned into `-`.
pub fn plain_name(org_slug: &str, kind: AccountKind, code: &str) -> String {
    let root = match kind {
        AccountKind::Asset => "Assets",
        AccountKind::Liability => "Liabilities",
        AccountKind::Fund => "Equity",
        AccountKind::Income => "Income",
        AccountKind::Expense => "Expenses",
    };
    let mut name = String::from(root);
    for part in std::iter::once(org_slug).chain(code.split(':')) {
        name.push(':');
        name.push_str(&component(part));
    }
    name
}

fn component(part: &str) -> String {
    let mut out: String = part.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    match out.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() => {
            let upper = c.to_ascii_uppercase();
            out.replace_range(0..1, &upper.to_string());
        }
        _ => out.insert(0, 'X'),
    }
    out
}

/// One posting of an [`Entry`], with its account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub account: AccountId,
    pub amount: Money,
}

/// One journal entry as exported (after the scope's folding of other funds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub org: OrgId,
    pub occurred_at: Timestamp,
    pub date: time::Date,
    pub description: String,
    pub key: String,
    pub source: Option<(String, String)>,
    pub recorded_by: Option<String>,
    pub lines: Vec<Line>,
}

impl Entry {
    fn start(row: &JournalRow) -> Result<Entry, LedgerError> {
        Ok(Entry {
            id: EntryId(row.entry_id),
            org: OrgId(row.org_id),
            occurred_at: row.occurred_at,
            date: row.occurred_at.as_offset().to_offset(BOOKS_OFFSET).date(),
            description: row.description.clone(),
            key: row.idempotency_key.clone(),
            source: row.source_kind.clone().zip(row.source_ref.clone()),
            recorded_by: row.recorded_by.clone(),
            lines: Vec::with_capacity(2),
        })
    }

    /// The entry of one aggregated row.
    pub fn from_row(row: JournalEntryRow) -> Result<Entry, LedgerError> {
        let corrupt = || LedgerError::Corrupt(format!("postings of entry {}: {:?}", row.entry_id, row.postings));
        let text = row.postings.as_deref().unwrap_or_default();
        let mut lines = Vec::with_capacity(text.bytes().filter(|b| *b == b',').count() + 1);
        for posting in text.split(',').filter(|p| !p.is_empty()) {
            let mut parts = posting.split(' ');
            let (Some(account), Some(amount), Some(currency), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(corrupt());
            };
            let account = account.parse().map_err(|_| corrupt())?;
            let amount = amount.parse().map_err(|_| corrupt())?;
            let currency = Currency::from_code(currency).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
            lines.push(Line { account: AccountId(account), amount: Money::new(amount, currency) });
        }
        Ok(Entry {
            id: EntryId(row.entry_id),
            org: OrgId(row.org_id),
            occurred_at: row.occurred_at,
            date: row.occurred_at.as_offset().to_offset(BOOKS_OFFSET).date(),
            description: row.description,
            key: row.idempotency_key,
            source: row.source_kind.zip(row.source_ref),
            recorded_by: row.recorded_by,
            lines,
        })
    }

    fn push(&mut self, row: &JournalRow) -> Result<(), LedgerError> {
        let currency = Currency::from_code(&row.currency).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        self.lines.push(Line { account: AccountId(row.account_id), amount: Money::new(row.amount, currency) });
        Ok(())
    }

    /// Sums postings on funds the directory does not show into the
    /// organisation's "other funds" line, per currency.
    fn fold(mut self, directory: &Directory) -> Entry {
        let mut folded: BTreeMap<Currency, i64> = BTreeMap::new();
        self.lines.retain(|line| {
            if directory.get(line.account).is_some() {
                true
            } else {
                *folded.entry(line.amount.currency()).or_default() += line.amount.amount();
                false
            }
        });
        for (currency, amount) in folded {
            if amount != 0 {
                self.lines
                    .push(Line { account: other_funds_id(self.org, currency), amount: Money::new(amount, currency) });
            }
        }
        self
    }

    /// The fund this entry's money belongs to, when there is exactly one.
    pub fn fund<'d>(&self, directory: &'d Directory) -> Option<&'d ExportAccount> {
        let mut only: Option<&ExportAccount> = None;
        for account in self.lines.iter().filter_map(|l| directory.get(l.account)) {
            if account.kind != AccountKind::Fund {
                continue;
            }
            match only {
                Some(found) if found.id != account.id => return None,
                _ => only = Some(account),
            }
        }
        only
    }

    /// Who is on the other side: Stripe for money moved through it.
    pub fn counterparty(&self) -> &'static str {
        if self.key.starts_with("stripe:") { "Stripe" } else { "" }
    }

    /// "pledge:p_123 stripe:ch_1:gross": the source and the idempotency key.
    pub fn source_ids(&self) -> String {
        match &self.source {
            Some((kind, reference)) => format!("{kind}:{reference} {}", self.key),
            None => self.key.clone(),
        }
    }
}

/// An amount in the currency's major unit without a sign: "3000", "12.50".
pub fn decimal(amount: i64, currency: Currency) -> String {
    let exponent = currency.exponent();
    let magnitude = amount.unsigned_abs();
    if exponent == 0 {
        return magnitude.to_string();
    }
    let divisor = 10u64.pow(exponent);
    format!("{}.{:0width$}", magnitude / divisor, magnitude % divisor, width = exponent as usize)
}

/// As [`decimal`], with a leading `-` when negative.
pub fn signed_decimal(amount: i64, currency: Currency) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    format!("{sign}{}", decimal(amount, currency))
}

/// Writes `report` of the postings in `scope` and `period` to `out`.
pub async fn export<W: AsyncWrite + Unpin + Send>(
    db: &Db,
    report: Report,
    format: Format,
    scope: &Scope,
    period: &Period,
    options: &Options,
    out: &mut W,
) -> Result<(), ExportError> {
    if !format.supports(report) {
        return Err(ExportError::Unsupported { report, format });
    }
    let directory = Directory::new(crate::store::export_accounts(db, scope.org).await?, scope);
    let opening = match (report, period.start()) {
        (Report::Fund, Some(start)) => crate::store::balances_before(db, scope, start).await?,
        _ => BTreeMap::new(),
    };
    let entries = crate::store::journal_entries(db, scope, period).map(|row| row.and_then(Entry::from_row));
    write_entries(report, format, entries, &directory, &opening, options, out).await
}

/// [`write_entries`] over a stream of rows, one per posting, ordered by
/// entry (as a test or another source may have them): each entry is handed
/// on as soon as its last posting has arrived.
pub async fn write<S, W>(
    report: Report,
    format: Format,
    rows: S,
    directory: &Directory,
    opening: &BTreeMap<AccountId, i64>,
    options: &Options,
    out: &mut W,
) -> Result<(), ExportError>
where
    S: Stream<Item = Result<JournalRow, LedgerError>>,
    W: AsyncWrite + Unpin + Send,
{
    let entries =
        futures::stream::unfold((Box::pin(rows), None::<Entry>, false), |(mut rows, mut current, done)| async move {
            if done {
                return None;
            }
            loop {
                match rows.next().await {
                    None => return current.take().map(|e| (Ok(e), (rows, None, true))),
                    Some(Err(e)) => return Some((Err(e), (rows, None, true))),
                    Some(Ok(row)) => {
                        let finished = match &current {
                            Some(entry) if entry.id.0 != row.entry_id => current.take(),
                            _ => None,
                        };
                        let entry = match &mut current {
                            Some(entry) => entry,
                            None => match Entry::start(&row) {
                                Ok(entry) => current.insert(entry),
                                Err(e) => return Some((Err(e), (rows, None, true))),
                            },
                        };
                        if let Err(e) = entry.push(&row) {
                            return Some((Err(e), (rows, None, true)));
                        }
                        if let Some(finished) = finished {
                            return Some((Ok(finished), (rows, current, false)));
                        }
                    }
                }
            }
        });
    write_entries(report, format, entries, directory, opening, options, out).await
}

/// The writing half of [`export`], over any stream of entries (and so
/// testable without a database): each entry is formatted as it arrives and
/// the output handed on every [`FLUSH_BYTES`], in the format's character
/// set.
pub async fn write_entries<S, W>(
    report: Report,
    format: Format,
    entries: S,
    directory: &Directory,
    opening: &BTreeMap<AccountId, i64>,
    options: &Options,
    out: &mut W,
) -> Result<(), ExportError>
where
    S: Stream<Item = Result<Entry, LedgerError>>,
    W: AsyncWrite + Unpin + Send,
{
    if !format.supports(report) {
        return Err(ExportError::Unsupported { report, format });
    }
    let mut writer = formats::Writer::new(report, format, directory, opening, options);
    let mut buffer = String::with_capacity(FLUSH_BYTES + 4096);
    let mut encoded = Vec::new();
    writer.begin(&mut buffer);
    let mut entries = std::pin::pin!(entries);
    while let Some(entry) = entries.next().await {
        writer.entry(&entry?.fold(directory), &mut buffer);
        if buffer.len() >= FLUSH_BYTES {
            hand_on(out, &buffer, format.charset(), &mut encoded).await?;
            buffer.clear();
        }
    }
    writer.end(&mut buffer);
    hand_on(out, &buffer, format.charset(), &mut encoded).await?;
    out.flush().await?;
    Ok(())
}

/// Writes whole lines of text to `out` in `charset`.
async fn hand_on<W: AsyncWrite + Unpin + Send>(
    out: &mut W,
    text: &str,
    charset: Charset,
    encoded: &mut Vec<u8>,
) -> std::io::Result<()> {
    match charset {
        Charset::Utf8 => out.write_all(text.as_bytes()).await,
        Charset::ShiftJis => {
            encoded.clear();
            charset::encode_cp932(text, encoded);
            out.write_all(encoded).await
        }
    }
}

/// CSV lines handed to a writer every [`FLUSH_BYTES`]: for exports of
/// other crates' rows (pledges, patrons), streamed the same way.
pub struct Sink<'w, W> {
    out: &'w mut W,
    buffer: String,
}

impl<'w, W: AsyncWrite + Unpin + Send> Sink<'w, W> {
    /// Starts with a UTF-8 byte-order mark if `bom`.
    pub fn new(out: &'w mut W, bom: bool) -> Sink<'w, W> {
        let mut buffer = String::with_capacity(FLUSH_BYTES + 4096);
        if bom {
            buffer.push('\u{feff}');
        }
        Sink { out, buffer }
    }

    pub async fn line(&mut self, line: &str) -> std::io::Result<()> {
        self.buffer.push_str(line);
        if self.buffer.len() >= FLUSH_BYTES {
            self.out.write_all(self.buffer.as_bytes()).await?;
            self.buffer.clear();
        }
        Ok(())
    }

    pub async fn finish(self) -> std::io::Result<()> {
        self.out.write_all(self.buffer.as_bytes()).await?;
        self.out.flush().await
    }
}

/// A calendar date in Japan, as exports write it: "2026-11-02".
pub fn books_date(t: Timestamp) -> String {
    let d = t.as_offset().to_offset(BOOKS_OFFSET).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A trial balance row: an account with its debits and credits over the
/// period. Used by tests and the API's JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrialBalanceRow {
    pub organisation: String,
    pub code: String,
    pub name: String,
    pub kind: AccountKind,
    pub currency: Currency,
    pub debits: i64,
    pub credits: i64,
    /// Debits minus credits.
    pub balance: i64,
}

#[cfg(test)]
mod tests;
