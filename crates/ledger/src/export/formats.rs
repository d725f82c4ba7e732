//! The six formats, each writing one entry at a time into a buffer.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::cells::{Line as CsvLine, push_text};
use super::{Directory, Entry, Format, Options, Report, decimal, signed_decimal};
use crate::AccountId;
use crate::account::AccountKind;
use crate::money::Currency;

pub(super) struct Writer<'a> {
    report: Report,
    format: Format,
    directory: &'a Directory,
    options: &'a Options,
    /// Trial balance: (debits, credits) per account; fund ledger: running
    /// balance per fund. One value per account, never per posting.
    totals: BTreeMap<AccountId, (i64, i64)>,
    /// Journal CSV: each account's cells, quoted and neutralised once.
    account_cells: HashMap<AccountId, AccountCells>,
    /// Journal CSV: the current entry's cells after the amounts, written
    /// once per entry and copied onto each of its rows.
    entry_tail: String,
}

/// An account's cells in the journal CSV: `"org"`, `"code","name"` and the
/// fund column when the account is a fund.
struct AccountCells {
    org: String,
    code_name: String,
    fund: Option<String>,
}

impl AccountCells {
    fn new(account: &super::ExportAccount) -> AccountCells {
        let quoted = |text: &str| {
            let mut cell = String::new();
            push_text(&mut cell, text);
            cell
        };
        AccountCells {
            org: quoted(&account.org_slug),
            code_name: format!("{},{}", quoted(&account.code), quoted(&account.name)),
            fund: (account.kind == AccountKind::Fund).then(|| quoted(&account.code)),
        }
    }
}

/// Appends `amount` in the currency's major unit without a sign, as
/// [`decimal`] writes it, without allocating.
fn push_decimal(out: &mut String, amount: i64, currency: Currency) {
    let exponent = currency.exponent();
    let magnitude = amount.unsigned_abs();
    if exponent == 0 {
        let _ = write!(out, "{magnitude}");
    } else {
        let divisor = 10u64.pow(exponent);
        let _ = write!(out, "{}.{:0width$}", magnitude / divisor, magnitude % divisor, width = exponent as usize);
    }
}

const JOURNAL_CSV_HEADER: [&str; 14] = [
    "organisation",
    "date",
    "entry_id",
    "account_code",
    "account_name",
    "fund",
    "debit",
    "credit",
    "currency",
    "description",
    "counterparty",
    "source_ids",
    "recorded_by",
    "occurred_at",
];

const FREEE_HEADER: [&str; 16] = [
    "日付",
    "伝票番号",
    "決算整理仕訳",
    "借方勘定科目",
    "借方補助科目",
    "借方部門",
    "借方税区分",
    "借方金額",
    "借方税額",
    "貸方勘定科目",
    "貸方補助科目",
    "貸方部門",
    "貸方税区分",
    "貸方金額",
    "貸方税額",
    "摘要",
];

const MF_HEADER: [&str; 27] = [
    "取引No",
    "取引日",
    "借方勘定科目",
    "借方補助科目",
    "借方部門",
    "借方取引先",
    "借方税区分",
    "借方インボイス",
    "借方金額(円)",
    "借方税額",
    "貸方勘定科目",
    "貸方補助科目",
    "貸方部門",
    "貸方取引先",
    "貸方税区分",
    "貸方インボイス",
    "貸方金額(円)",
    "貸方税額",
    "摘要",
    "仕訳メモ",
    "タグ",
    "MF仕訳タイプ",
    "決算整理仕訳",
    "作成日時",
    "作成者",
    "最終更新日時",
    "最終更新者",
];

fn header_line(names: &[&str]) -> String {
    let mut line = CsvLine::new();
    for name in names {
        line.text(name);
    }
    line.finish()
}

fn slash_date(date: time::Date) -> String {
    format!("{:04}/{:02}/{:02}", date.year(), u8::from(date.month()), date.day())
}

fn iso_date(date: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// Text on one line of a plain-text journal: control characters become
/// spaces.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A Beancount string literal.
fn bean_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in one_line(text).chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// One side of a Japanese journal row: account, sub-account, tax class,
/// amount.
struct Side {
    account: String,
    sub: String,
    tax: String,
    amount: String,
}

impl Side {
    fn empty() -> Side {
        Side { account: String::new(), sub: String::new(), tax: String::new(), amount: String::new() }
    }
}

impl<'a> Writer<'a> {
    pub(super) fn new(
        report: Report,
        format: Format,
        directory: &'a Directory,
        opening: &BTreeMap<AccountId, i64>,
        options: &'a Options,
    ) -> Writer<'a> {
        let totals = opening.iter().map(|(a, b)| (*a, (*b, 0))).collect();
        let account_cells = if (report, format) == (Report::Journal, Format::Csv) {
            directory.accounts().map(|a| (a.id, AccountCells::new(a))).collect()
        } else {
            HashMap::new()
        };
        Writer { report, format, directory, options, totals, account_cells, entry_tail: String::new() }
    }

    pub(super) fn begin(&mut self, out: &mut String) {
        let utf8_csv = matches!(self.format, Format::Csv | Format::Freee | Format::Mf);
        if utf8_csv && self.options.bom {
            out.push('\u{feff}');
        }
        match (self.report, self.format) {
            (Report::Journal, Format::Csv) => out.push_str(&header_line(&JOURNAL_CSV_HEADER)),
            (Report::Journal, Format::Freee) => out.push_str(&header_line(&FREEE_HEADER)),
            (Report::Journal, Format::Mf) => out.push_str(&header_line(&MF_HEADER)),
            // Yayoi's import format has no header row.
            (Report::Journal, Format::Yayoi) => {}
            (Report::Journal, Format::Hledger) => self.hledger_declarations(out),
            (Report::Journal, Format::Beancount) => self.beancount_declarations(out),
            (Report::TrialBalance, _) => out.push_str(&header_line(&[
                "organisation",
                "account_code",
                "account_name",
                "kind",
                "currency",
                "debits",
                "credits",
                "balance_debit",
                "balance_credit",
            ])),
            (Report::Fund, _) => out.push_str(&header_line(&[
                "organisation",
                "fund",
                "fund_name",
                "date",
                "entry_id",
                "description",
                "in",
                "out",
                "balance",
                "currency",
                "source_ids",
                "recorded_by",
            ])),
        }
    }

    pub(super) fn entry(&mut self, entry: &Entry, out: &mut String) {
        match (self.report, self.format) {
            (Report::Journal, Format::Csv) => self.journal_csv(entry, out),
            (Report::Journal, Format::Freee) => self.japanese(entry, out, Format::Freee),
            (Report::Journal, Format::Mf) => self.japanese(entry, out, Format::Mf),
            (Report::Journal, Format::Yayoi) => self.japanese(entry, out, Format::Yayoi),
            (Report::Journal, Format::Hledger) => self.hledger(entry, out),
            (Report::Journal, Format::Beancount) => self.beancount(entry, out),
            (Report::TrialBalance, _) => {
                for line in &entry.lines {
                    let t = self.totals.entry(line.account).or_default();
                    if line.amount.amount() > 0 {
                        t.0 += line.amount.amount();
                    } else {
                        t.1 -= line.amount.amount();
                    }
                }
            }
            (Report::Fund, _) => self.fund(entry, out),
        }
    }

    pub(super) fn end(&mut self, out: &mut String) {
        if self.report != Report::TrialBalance {
            return;
        }
        for account in self.directory.accounts() {
            let Some((debits, credits)) = self.totals.get(&account.id).copied() else {
                continue;
            };
            let balance = debits - credits;
            let c = account.currency;
            let (bd, bc) = if balance >= 0 {
                (decimal(balance, c), String::from("0"))
            } else {
                (String::from("0"), decimal(balance, c))
            };
            out.push_str(
                &CsvLine::new()
                    .text(&account.org_slug)
                    .text(&account.code)
                    .text(&account.name)
                    .text(account.kind.as_str())
                    .plain(c.code())
                    .plain(&decimal(debits, c))
                    .plain(&decimal(credits, c))
                    .plain(&bd)
                    .plain(&bc)
                    .finish(),
            );
        }
    }

    /// One row per posting. The entry's cells are rendered once per entry
    /// and the account's once per export; a row is copied together from
    /// them with its amounts, straight into the output buffer.
    fn journal_csv(&mut self, entry: &Entry, out: &mut String) {
        let fund =
            entry.fund(self.directory).and_then(|f| self.account_cells.get(&f.id)).and_then(|c| c.fund.as_deref());
        let tail = &mut self.entry_tail;
        tail.clear();
        tail.push(',');
        push_text(tail, &entry.description);
        tail.push(',');
        push_text(tail, entry.counterparty());
        tail.push(',');
        match &entry.source {
            Some((kind, reference)) => push_text(tail, &format!("{kind}:{reference} {}", entry.key)),
            None => push_text(tail, &entry.key),
        }
        tail.push(',');
        push_text(tail, entry.recorded_by.as_deref().unwrap_or_default());
        let _ = write!(tail, ",{}\r\n", entry.occurred_at);
        let mut head = String::new();
        let _ = write!(head, ",{},{},", iso_date(entry.date), entry.id.0);
        for line in &entry.lines {
            let Some(cells) = self.account_cells.get(&line.account) else { continue };
            let c = line.amount.currency();
            let amount = line.amount.amount();
            out.push_str(&cells.org);
            out.push_str(&head);
            out.push_str(&cells.code_name);
            out.push(',');
            out.push_str(cells.fund.as_deref().or(fund).unwrap_or("\"\""));
            out.push(',');
            if amount > 0 {
                push_decimal(out, amount, c);
                out.push(',');
            } else {
                out.push(',');
                push_decimal(out, amount, c);
            }
            out.push(',');
            out.push_str(c.code());
            out.push_str(tail);
        }
    }

    fn side(&self, line: &super::Line) -> Side {
        let Some(account) = self.directory.get(line.account) else { return Side::empty() };
        let mapped = self.options.mapping_for(&account.org_slug).resolve(&account.code, &account.name, account.kind);
        Side {
            tax: mapped.tax_class().to_owned(),
            account: mapped.account,
            sub: mapped.sub,
            amount: decimal(line.amount.amount(), line.amount.currency()),
        }
    }

    /// freee, Money Forward and Yayoi: an entry of one debit and one credit
    /// is one row; any other entry is a compound journal, one row per
    /// posting with the other side left empty, tied together by the entry id
    /// (and for Yayoi by the 2110/2100/2101 flags).
    ///
    /// Yayoi's import layout (弥生インポート形式, 25 columns, no header):
    /// 識別フラグ (2000 a journal row; 2110, 2100, 2101 the first, middle and
    /// last rows of a transfer slip), 伝票No., 決算, 取引日付 (`2026/11/02`),
    /// then for 借方 and for 貸方 勘定科目, 補助科目, 部門, 税区分, 金額 (an
    /// integer, never negative, `0` for an empty side), 税金額; 摘要, 番号,
    /// 期日, タイプ (0 仕訳データ, 3 振替伝票), 生成元, 仕訳メモ, 付箋1, 付箋2,
    /// 調整 (`no`). The text is written in Shift_JIS by the caller.
    fn japanese(&self, entry: &Entry, out: &mut String, format: Format) {
        let lines = &entry.lines;
        let rows: Vec<(Side, Side)> =
            if lines.len() == 2 && (lines[0].amount.amount() > 0) != (lines[1].amount.amount() > 0) {
                let (d, c) = if lines[0].amount.amount() > 0 { (&lines[0], &lines[1]) } else { (&lines[1], &lines[0]) };
                vec![(self.side(d), self.side(c))]
            } else {
                lines
                    .iter()
                    .map(|l| {
                        if l.amount.amount() > 0 {
                            (self.side(l), Side::empty())
                        } else {
                            (Side::empty(), self.side(l))
                        }
                    })
                    .collect()
            };
        let n = rows.len();
        let description = format!("{} [{}]", entry.description, entry.id);
        for (i, (debit, credit)) in rows.into_iter().enumerate() {
            let mut line = CsvLine::new();
            match format {
                Format::Freee => {
                    line.plain(&slash_date(entry.date)).plain(&entry.id.0.to_string()).plain("");
                    for side in [&debit, &credit] {
                        line.text(&side.account).text(&side.sub).text("").text(&side.tax).plain(&side.amount).plain("");
                    }
                    line.text(&description);
                }
                Format::Mf => {
                    line.plain(&entry.id.0.to_string()).plain(&slash_date(entry.date));
                    for side in [&debit, &credit] {
                        line.text(&side.account)
                            .text(&side.sub)
                            .text("")
                            .text(if side.account.is_empty() { "" } else { entry.counterparty() })
                            .text(&side.tax)
                            .text("")
                            .plain(&side.amount)
                            .plain("");
                    }
                    line.text(&description).text(&entry.source_ids()).text("").text("").text("");
                    line.text("").text(entry.recorded_by.as_deref().unwrap_or_default()).text("").text("");
                }
                _ => {
                    let flag = match (n, i) {
                        (1, _) => "2000",
                        (_, 0) => "2110",
                        (_, i) if i + 1 == n => "2101",
                        _ => "2100",
                    };
                    line.plain(flag).plain("").plain("").plain(&slash_date(entry.date));
                    for side in [&debit, &credit] {
                        let amount = if side.amount.is_empty() { "0" } else { side.amount.as_str() };
                        line.text(&side.account).text(&side.sub).text("").text(&side.tax).plain(amount).plain("");
                    }
                    // タイプ: 0 for a journal row (2000), 3 for the rows of a
                    // transfer slip (振替伝票: 2110, 2100, 2101).
                    let kind = if n == 1 { "0" } else { "3" };
                    line.text(&description).plain("").plain("").plain(kind).text("kanpa").text(&entry.source_ids());
                    line.plain("0").plain("0").plain("no");
                }
            }
            out.push_str(&line.finish());
        }
    }

    fn hledger_declarations(&self, out: &mut String) {
        out.push_str("; kanpa journal export (hledger)\n");
        for currency in self.directory.currencies() {
            // hledger wants a decimal mark in the sample: "1000. JPY".
            let sample = decimal(100_000 * 10i64.pow(currency.exponent()), currency);
            let mark = if currency.exponent() == 0 { "." } else { "" };
            let _ = writeln!(out, "commodity {sample}{mark} {}", currency.code());
        }
        for account in self.directory.accounts() {
            let _ = writeln!(out, "account {}", account.plain_name);
        }
        out.push('\n');
    }

    fn hledger(&self, entry: &Entry, out: &mut String) {
        // A `;` would start a comment in the description: use its full-width
        // form.
        let description = one_line(&entry.description).replace(';', "；");
        let _ = writeln!(out, "{} ({}) {}", iso_date(entry.date), entry.id, description.trim());
        let _ = writeln!(out, "    ; source: {}", one_line(&entry.source_ids()));
        for line in &entry.lines {
            let Some(account) = self.directory.get(line.account) else { continue };
            let c = line.amount.currency();
            let _ =
                writeln!(out, "    {}  {} {}", account.plain_name, signed_decimal(line.amount.amount(), c), c.code());
        }
        out.push('\n');
    }

    fn beancount_declarations(&self, out: &mut String) {
        out.push_str("; kanpa journal export (Beancount)\n");
        let currencies = self.directory.currencies();
        if let Some(first) = currencies.iter().next() {
            let _ = writeln!(out, "option \"operating_currency\" \"{}\"", first.code());
        }
        for currency in &currencies {
            let _ = writeln!(out, "1970-01-01 commodity {}", currency.code());
        }
        for account in self.directory.accounts() {
            let _ = writeln!(out, "1970-01-01 open {} {}", account.plain_name, account.currency.code());
        }
        out.push('\n');
    }

    fn beancount(&self, entry: &Entry, out: &mut String) {
        let _ = writeln!(out, "{} * {}", iso_date(entry.date), bean_string(&entry.description));
        let _ = writeln!(out, "  entry: \"{}\"", entry.id);
        let _ = writeln!(out, "  source: {}", bean_string(&entry.source_ids()));
        for line in &entry.lines {
            let Some(account) = self.directory.get(line.account) else { continue };
            let c = line.amount.currency();
            let _ = writeln!(out, "  {}  {} {}", account.plain_name, signed_decimal(line.amount.amount(), c), c.code());
        }
        out.push('\n');
    }

    /// A fund's ledger: postings on funds, money in (credits) and out
    /// (debits) with the fund's running balance as people read it.
    fn fund(&mut self, entry: &Entry, out: &mut String) {
        for line in &entry.lines {
            let Some(account) = self.directory.get(line.account) else { continue };
            if account.kind != AccountKind::Fund || account.code.starts_with(super::OTHER_FUNDS_CODE) {
                continue;
            }
            let c: Currency = line.amount.currency();
            let amount = line.amount.amount();
            let running = self.totals.entry(account.id).or_default();
            running.0 += amount;
            let (money_in, money_out) =
                if amount < 0 { (decimal(amount, c), String::new()) } else { (String::new(), decimal(amount, c)) };
            // Funds carry credit balances: people read -balance.
            let natural = -running.0;
            let balance = if natural < 0 { format!("({})", decimal(natural, c)) } else { decimal(natural, c) };
            out.push_str(
                &CsvLine::new()
                    .text(&account.org_slug)
                    .text(&account.code)
                    .text(&account.name)
                    .plain(&iso_date(entry.date))
                    .plain(&entry.id.0.to_string())
                    .text(&entry.description)
                    .plain(&money_in)
                    .plain(&money_out)
                    .plain(&balance)
                    .plain(c.code())
                    .text(&entry.source_ids())
                    .text(entry.recorded_by.as_deref().unwrap_or_default())
                    .finish(),
            );
        }
    }
}
