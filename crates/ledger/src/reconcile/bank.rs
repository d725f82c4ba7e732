//! Bank statements as CSV, and which deposit is which payout.
//!
//! A file is read as UTF-8 (a byte-order mark dropped) or, failing that, as
//! Shift_JIS as Windows writes it (CP932), which is how Japanese banks
//! download their statements ([`decode`]). Two layouts:
//!
//! - `generic`: a header row `date,amount,description`; dates `2026-11-20`
//!   or `2026/11/20`; amounts signed whole units, commas allowed.
//! - `jp`: the common Japanese net-banking layout, columns found by their
//!   header: the date (`日付`, `取引日`, `年月日`…), the description
//!   (`摘要`, `内容`), money out (`お支払金額`, `支払金額`, `出金`…) and money
//!   in (`お預り金額`, `預り金額`, `入金`…), other columns (balance, memo)
//!   ignored; dates also `2026年11月20日`; amounts may carry `¥`, `円` and
//!   commas.

use crate::export::cells::read_records;

/// One line of a bank statement: a deposit (positive) or a withdrawal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankLine {
    /// The line's number in the file (1 is the header).
    pub line: usize,
    pub date: time::Date,
    pub amount: i64,
    pub description: String,
}

/// A statement file's bytes as text: UTF-8 if they are, else CP932;
/// `None` if they are neither (nothing is guessed or replaced).
pub fn decode(bytes: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Some(text.into());
    }
    encoding_rs::SHIFT_JIS.decode_without_bom_handling_and_without_replacement(bytes)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Generic,
    Japanese,
}

impl Layout {
    pub fn parse(text: &str) -> Option<Layout> {
        match text {
            "generic" => Some(Layout::Generic),
            "jp" => Some(Layout::Japanese),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BankCsvError {
    #[error("the statement has no header row")]
    Empty,
    #[error("the header has no {0} column")]
    MissingColumn(&'static str),
    #[error("line {line}: {value:?} is not a date")]
    BadDate { line: usize, value: String },
    #[error("line {line}: {value:?} is not an amount")]
    BadAmount { line: usize, value: String },
}

fn date(text: &str) -> Option<time::Date> {
    let cleaned: String = text
        .trim()
        .chars()
        .map(|c| match c {
            '年' | '月' | '/' | '.' => '-',
            '日' => ' ',
            other => other,
        })
        .collect();
    let mut parts = cleaned.trim().split('-').map(str::trim);
    let (y, m, d) = (parts.next()?.parse().ok()?, parts.next()?.parse::<u8>().ok()?, parts.next()?.parse().ok()?);
    if parts.next().is_some() {
        return None;
    }
    time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()
}

fn amount(text: &str) -> Option<i64> {
    let cleaned: String = text.trim().chars().filter(|c| !matches!(c, ',' | '¥' | '￥' | '円' | ' ')).collect();
    if cleaned.is_empty() {
        return Some(0);
    }
    cleaned.parse().ok()
}

/// Reads a statement in `layout`; refuses the whole file at the first bad
/// line, naming it.
pub fn parse(text: &str, layout: Layout) -> Result<Vec<BankLine>, BankCsvError> {
    let records = read_records(text);
    let (header, rows) = records.split_first().ok_or(BankCsvError::Empty)?;
    let find = |names: &[&str], what: &'static str| {
        header.iter().position(|h| names.iter().any(|n| h.trim().contains(n))).ok_or(BankCsvError::MissingColumn(what))
    };
    let columns = match layout {
        Layout::Generic => {
            (find(&["date"], "date")?, find(&["description"], "description")?, None, find(&["amount"], "amount")?)
        }
        Layout::Japanese => (
            find(&["日付", "取引日", "年月日", "日"], "日付")?,
            find(&["摘要", "内容"], "摘要")?,
            Some(find(&["支払", "出金", "引出"], "お支払金額")?),
            find(&["預り", "預入", "入金"], "お預り金額")?,
        ),
    };
    let (date_col, description_col, out_col, in_col) = columns;
    let mut lines = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let line = i + 2;
        let cell = |c: usize| row.get(c).map(|s| crate::export::cells::restore(s)).unwrap_or_default();
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let date =
            date(cell(date_col)).ok_or_else(|| BankCsvError::BadDate { line, value: cell(date_col).to_owned() })?;
        let money_in =
            amount(cell(in_col)).ok_or_else(|| BankCsvError::BadAmount { line, value: cell(in_col).to_owned() })?;
        let money_out = match out_col {
            Some(c) => amount(cell(c)).ok_or_else(|| BankCsvError::BadAmount { line, value: cell(c).to_owned() })?,
            None => 0,
        };
        lines.push(BankLine {
            line,
            date,
            amount: money_in - money_out,
            description: cell(description_col).to_owned(),
        });
    }
    Ok(lines)
}

/// A payout on its way to the bank, not yet seen arriving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InTransit {
    pub payout: String,
    pub amount: i64,
    pub date: time::Date,
}

/// Pairs deposits with payouts in transit: the same amount, arriving within
/// seven days after the payout (the nearest first); each used once.
pub fn match_deposits(lines: &[BankLine], pending: &[InTransit]) -> Vec<(usize, usize)> {
    let mut used = vec![false; pending.len()];
    let mut pairs = Vec::new();
    for (li, line) in lines.iter().enumerate() {
        if line.amount <= 0 {
            continue;
        }
        let best = pending
            .iter()
            .enumerate()
            .filter(|(pi, p)| !used[*pi] && p.amount == line.amount)
            .map(|(pi, p)| (pi, (line.date - p.date).whole_days()))
            .filter(|(_, days)| (0..=7).contains(days))
            .min_by_key(|(_, days)| *days);
        if let Some((pi, _)) = best {
            used[pi] = true;
            pairs.push((li, pi));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn a_statement_is_read_as_utf8_or_else_as_shift_jis_and_never_guessed() {
        let text = "日付,摘要,お支払金額,お預り金額\r\n2026/11/20,振込 ストライプ,,16352\r\n";
        assert_eq!(decode(text.as_bytes()).unwrap(), text);
        let (sjis, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
        assert!(!unmappable && std::str::from_utf8(&sjis).is_err(), "a real Shift_JIS file");
        let decoded = decode(&sjis).unwrap();
        assert_eq!(decoded, text);
        assert_eq!(parse(&decoded, Layout::Japanese).unwrap()[0].amount, 16_352);
        // Bytes neither UTF-8 nor Shift_JIS are refused, not mangled.
        assert!(decode(&[0x82, 0xa0, 0xff, 0xfe]).is_none());
    }

    #[test]
    fn a_japanese_statement_reads_deposits_and_withdrawals() {
        let text = "\u{feff}\"日付\",\"摘要\",\"お支払金額\",\"お預り金額\",\"差引残高\"\r\n\
                    \"2026年11月20日\",\"振込 ストライプジヤパン(カ\",\"\",\"16,352\",\"116,352\"\r\n\
                    \"2026/11/21\",\"カード\",\"¥3,000\",\"\",\"113,352\"\r\n";
        let lines = parse(text, Layout::Japanese).unwrap();
        assert_eq!(
            lines[0],
            BankLine {
                line: 2,
                date: date!(2026 - 11 - 20),
                amount: 16_352,
                description: "振込 ストライプジヤパン(カ".into()
            }
        );
        assert_eq!((lines[1].date, lines[1].amount), (date!(2026 - 11 - 21), -3_000));
    }

    #[test]
    fn a_generic_statement_and_its_mistakes() {
        let lines = parse("date,amount,description\n2026-11-20,\"1,000\",STRIPE\n", Layout::Generic).unwrap();
        assert_eq!((lines[0].amount, lines[0].description.as_str()), (1_000, "STRIPE"));
        assert_eq!(
            parse("date,amount,description\n2026-13-01,5,x\n", Layout::Generic),
            Err(BankCsvError::BadDate { line: 2, value: "2026-13-01".into() })
        );
        assert_eq!(parse("when,amount\n", Layout::Generic), Err(BankCsvError::MissingColumn("date")));
        assert_eq!(
            parse("date,amount,description\n2026-11-01,ten,x\n", Layout::Generic),
            Err(BankCsvError::BadAmount { line: 2, value: "ten".into() })
        );
    }

    #[test]
    fn deposits_pair_with_payouts_of_the_same_amount_arriving_within_a_week() {
        let line = |d, amount| BankLine { line: 0, date: d, amount, description: String::new() };
        let pending = vec![
            InTransit { payout: "po_1".into(), amount: 5000, date: date!(2026 - 11 - 01) },
            InTransit { payout: "po_2".into(), amount: 5000, date: date!(2026 - 11 - 10) },
            InTransit { payout: "po_3".into(), amount: 700, date: date!(2026 - 11 - 10) },
        ];
        let lines = vec![
            line(date!(2026 - 11 - 12), 5000),
            line(date!(2026 - 11 - 03), 5000),
            line(date!(2026 - 11 - 30), 700),
            line(date!(2026 - 11 - 12), -700),
        ];
        assert_eq!(match_deposits(&lines, &pending), vec![(0, 1), (1, 0)]);
    }
}
