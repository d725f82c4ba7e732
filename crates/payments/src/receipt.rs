//! Receipts: one per payment (a pledge's charge, a patron's invoice, a
//! manual receipt of cash or a bank transfer), numbered by one sequence per
//! organisation that campaigns and salons share, issued in the transaction
//! that records the payment and never changed afterwards.
//!
//! When the issuer has a qualified-invoice registration number the receipt
//! is a simplified qualified invoice (適格簡易請求書): issuer and number, date,
//! what was bought, the amount per tax rate and the consumption tax per
//! rate — computed once per receipt and rate from the rate's total, never
//! summed from rounded lines ([`tax_by_rate`]).
//!
//! Owns `receipts`, `receipt_lines` and `receipt_sequences`. Callers describe
//! the lines; this module knows nothing of campaigns or salons.

use kanpa_ledger::rows::{Rows, Scalar};
use kanpa_ledger::{Currency, Db, Money, MoneyError, OrgId, Timestamp, Tx, on_db, on_tx};
use rand::Rng;
use serde::Serialize;

use crate::seller::{self, InvoiceRegistrationNumber, SellerError, TaxRounding};

/// A consumption tax rate in percent. Japan's standard rate is 10 %, the
/// reduced rate (food, newspapers) 8 %.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TaxRate(u8);

impl TaxRate {
    pub const STANDARD: TaxRate = TaxRate(10);
    pub const REDUCED: TaxRate = TaxRate(8);

    pub fn percent(self) -> u8 {
        self.0
    }

    pub fn new(percent: u8) -> Option<TaxRate> {
        (1..=99).contains(&percent).then_some(TaxRate(percent))
    }
}

/// Whether the line amounts include the tax (what a card was charged) or
/// the tax comes on top of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceBasis {
    #[default]
    TaxInclusive,
    TaxExclusive,
}

impl PriceBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceBasis::TaxInclusive => "tax_inclusive",
            PriceBasis::TaxExclusive => "tax_exclusive",
        }
    }

    fn parse(s: &str) -> Option<PriceBasis> {
        match s {
            "tax_inclusive" => Some(PriceBasis::TaxInclusive),
            "tax_exclusive" => Some(PriceBasis::TaxExclusive),
            _ => None,
        }
    }
}

/// What a line records; donations carry no consumption tax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A reward bought with a pledge: a taxable purchase.
    Reward,
    /// Money given with nothing in return.
    Donation,
    /// A month of a salon membership: a taxable service.
    Membership,
    /// Recorded by a treasurer (cash, bank transfer).
    Manual,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Reward => "reward",
            LineKind::Donation => "donation",
            LineKind::Membership => "membership",
            LineKind::Manual => "manual",
        }
    }

    fn parse(s: &str) -> Option<LineKind> {
        match s {
            "reward" => Some(LineKind::Reward),
            "donation" => Some(LineKind::Donation),
            "membership" => Some(LineKind::Membership),
            "manual" => Some(LineKind::Manual),
            _ => None,
        }
    }
}

/// One line of a receipt. `tax_rate` is `None` for what is outside
/// consumption tax (a donation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReceiptLine {
    pub kind: LineKind,
    pub description_ja: String,
    pub description_en: String,
    pub amount: Money,
    pub tax_rate: Option<TaxRate>,
}

impl ReceiptLine {
    pub fn description(&self, locale: kanpa_ledger::Locale) -> &str {
        match locale {
            kanpa_ledger::Locale::Ja => &self.description_ja,
            kanpa_ledger::Locale::En => &self.description_en,
        }
    }
}

/// The lines of one tax rate (or of no tax), added up, and their tax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RateTotal {
    pub rate: Option<TaxRate>,
    /// The lines' amounts added up, on the receipt's price basis.
    pub subtotal: Money,
    /// The consumption tax in `subtotal` (tax-inclusive) or on it (tax-exclusive).
    pub tax: Money,
    /// What the payer pays for these lines.
    pub total: Money,
}

/// The consumption tax of a receipt: the lines grouped by rate (taxable
/// rates from the highest, then the untaxed lines), and each rate's tax
/// computed once from its subtotal with `rounding` — never per line, as the
/// qualified-invoice rules require.
pub fn tax_by_rate(
    lines: &[ReceiptLine],
    currency: Currency,
    basis: PriceBasis,
    rounding: TaxRounding,
) -> Result<Vec<RateTotal>, MoneyError> {
    let mut rates: Vec<Option<TaxRate>> = lines.iter().map(|l| l.tax_rate).collect();
    rates.sort_by(|a, b| match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(a), Some(b)) => b.cmp(a),
    });
    rates.dedup();
    let mut totals = Vec::with_capacity(rates.len());
    for rate in rates {
        let mut subtotal = Money::zero(currency);
        for line in lines.iter().filter(|l| l.tax_rate == rate) {
            subtotal = subtotal.checked_add(line.amount)?;
        }
        let amount = i128::from(subtotal.amount());
        let tax = match rate {
            None => 0,
            Some(rate) => {
                let percent = i128::from(rate.percent());
                match basis {
                    PriceBasis::TaxExclusive => rounding.divide(amount * percent, 100),
                    PriceBasis::TaxInclusive => rounding.divide(amount * percent, 100 + percent),
                }
            }
        };
        // The tax is at most the subtotal, which fits an i64.
        let tax = Money::new(i64::try_from(tax).unwrap_or(i64::MAX), currency);
        let total = match basis {
            PriceBasis::TaxInclusive => subtotal,
            PriceBasis::TaxExclusive => subtotal.checked_add(tax)?,
        };
        totals.push(RateTotal { rate, subtotal, tax, total });
    }
    Ok(totals)
}

/// A payment for something priced at `price` (tax included), of which
/// whatever is paid above the price is a gift: (the purchase, the donation).
/// A payment below the price is all purchase.
pub fn purchase_and_donation(paid: Money, price: Money) -> Result<(Money, Money), MoneyError> {
    let purchase = if price.checked_sub(paid)?.is_negative() { price } else { paid };
    Ok((purchase, paid.checked_sub(purchase)?))
}

// ---------------------------------------------------------------- issuing

/// Identifies the payment a receipt is for, once: a receipt exists at most
/// once per source. Stripe payments use ("stripe-charge", the charge id);
/// manual receipts their own kind and reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptSource {
    pub kind: String,
    pub reference: String,
}

impl ReceiptSource {
    pub fn stripe_charge(charge: &str) -> ReceiptSource {
        ReceiptSource { kind: "stripe-charge".into(), reference: charge.to_owned() }
    }

    /// A payment a treasurer records (cash, bank transfer): `reference` is
    /// the recording's own stable id, e.g. its ledger entry's idempotency
    /// key, so recording it again finds the same receipt. The caller issues
    /// it with [`issue`] in the transaction that posts the entry, with
    /// [`LineKind::Manual`] lines (a tax rate for a purchase, none for a gift).
    pub fn manual(reference: &str) -> ReceiptSource {
        ReceiptSource { kind: "manual".into(), reference: reference.to_owned() }
    }
}

/// What a caller asks to be receipted.
#[derive(Clone, Debug)]
pub struct NewReceipt {
    pub org: OrgId,
    pub source: ReceiptSource,
    /// The name to address the receipt to; the email when none was given.
    pub payer_name: String,
    pub payer_email: String,
    pub paid_at: Timestamp,
    pub currency: Currency,
    pub basis: PriceBasis,
    pub lines: Vec<ReceiptLine>,
}

/// An issued receipt, with the issuer's details as they were when it was
/// issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub id: i64,
    /// Random, for links (`/me/receipts/{public_id}`).
    pub public_id: String,
    pub org: OrgId,
    /// 1, 2, 3… within the organisation.
    pub number: i64,
    pub source_kind: String,
    pub source_ref: String,
    pub payer_name: String,
    pub payer_email: String,
    pub paid_at: Timestamp,
    pub currency: Currency,
    pub issuer_name: String,
    pub registration_number: Option<String>,
    pub rounding: TaxRounding,
    pub basis: PriceBasis,
    pub issued_at: Timestamp,
    pub lines: Vec<ReceiptLine>,
}

impl Receipt {
    /// The number as printed: zero-padded, unique within the organisation.
    pub fn display_number(&self) -> String {
        format!("{:08}", self.number)
    }

    /// A qualified invoice carries the issuer's registration number.
    pub fn is_qualified_invoice(&self) -> bool {
        self.registration_number.is_some()
    }

    pub fn tax_by_rate(&self) -> Result<Vec<RateTotal>, MoneyError> {
        tax_by_rate(&self.lines, self.currency, self.basis, self.rounding)
    }

    /// What the payer paid in all.
    pub fn total(&self) -> Result<Money, MoneyError> {
        self.tax_by_rate()?.iter().try_fold(Money::zero(self.currency), |sum, r| sum.checked_add(r.total))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("a receipt needs at least one line")]
    NoLines,
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error(transparent)]
    Seller(#[from] SellerError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn random_public_id() -> String {
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let suffix: String = (0..20).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect();
    format!("rc_{suffix}")
}

/// Issues the receipt of a payment inside the transaction that records it,
/// or returns the one already issued for the same source. The number is the
/// organisation's next: its sequence row stays locked until the caller
/// commits, so numbers are unique and, as a rolled-back payment gives its
/// number back, without gaps.
pub async fn issue(tx: &mut Tx, new: &NewReceipt) -> Result<Receipt, ReceiptError> {
    check_lines(new)?;
    // Take the organisation's sequence row first: a concurrent issuer of the
    // same source waits here and then finds the receipt below.
    let last = lock_sequence(tx, new.org).await?;
    if let Some(existing) = by_source_in(tx, &new.source).await? {
        return Ok(existing);
    }
    let number = last + 1;
    bump_sequence(tx, new.org, number).await?;
    let issuer = Issuer::of(tx, new.org).await?;
    let mut issued = insert(tx, std::slice::from_ref(new), number, &issuer).await?;
    issued.pop().ok_or(ReceiptError::Database(sqlx::Error::RowNotFound))
}

/// Issues the receipts of several payments recorded for the first time in
/// the caller's transaction, numbered as [`issue`] would number them one
/// after the other, but taking and moving each organisation's sequence row
/// once (give them grouped by organisation): a month-end batch holds the
/// numbering lock for as short a time as it can. Every source must be new:
/// one that already has a receipt fails the call (a unique index), and the
/// caller falls back to [`issue`] one payment at a time.
pub async fn issue_many(tx: &mut Tx, news: &[NewReceipt]) -> Result<Vec<Receipt>, ReceiptError> {
    let mut issued = Vec::with_capacity(news.len());
    for group in news.chunk_by(|a, b| a.org == b.org) {
        group.iter().try_for_each(check_lines)?;
        let org = group[0].org;
        let issuer = Issuer::of(tx, org).await?;
        // From here to the commit the organisation's numbering is ours: two
        // statements, whatever the number of receipts.
        let last = take_numbers(tx, org, group.len() as i64).await?;
        issued.extend(insert(tx, group, last - group.len() as i64 + 1, &issuer).await?);
    }
    Ok(issued)
}

fn check_lines(new: &NewReceipt) -> Result<(), ReceiptError> {
    if new.lines.is_empty() {
        return Err(ReceiptError::NoLines);
    }
    for line in &new.lines {
        if line.amount.currency() != new.currency {
            return Err(MoneyError::CurrencyMismatch { left: new.currency, right: line.amount.currency() }.into());
        }
    }
    Ok(())
}

/// Locks the organisation's sequence row (made on first use) until the
/// transaction ends, and returns the last number issued.
async fn lock_sequence(tx: &mut Tx, org: OrgId) -> Result<i64, ReceiptError> {
    let lock = "INSERT INTO receipt_sequences (organisation_id, last_number) VALUES ($1, 0)
                ON CONFLICT (organisation_id) DO UPDATE SET last_number = receipt_sequences.last_number
                RETURNING last_number";
    Ok(on_tx!(tx, c => sqlx::query_scalar(lock).bind(org.0).fetch_one(c).await?))
}

async fn bump_sequence(tx: &mut Tx, org: OrgId, last: i64) -> Result<(), ReceiptError> {
    let bump = "UPDATE receipt_sequences SET last_number = $1 WHERE organisation_id = $2";
    on_tx!(tx, c => sqlx::query(bump).bind(last).bind(org.0).execute(c).await?.rows_affected());
    Ok(())
}

/// Takes the organisation's next `n` numbers in one statement, locking its
/// sequence row (made on first use) until the transaction ends; the last
/// of them.
async fn take_numbers(tx: &mut Tx, org: OrgId, n: i64) -> Result<i64, ReceiptError> {
    let sql = "INSERT INTO receipt_sequences (organisation_id, last_number) VALUES ($1, $2)
               ON CONFLICT (organisation_id) DO UPDATE SET last_number = receipt_sequences.last_number + $2
               RETURNING last_number";
    Ok(on_tx!(tx, c => sqlx::query_scalar(sql).bind(org.0).bind(n).fetch_one(c).await?))
}

/// Who issues an organisation's receipts, as each receipt keeps it.
struct Issuer {
    seller: seller::SellerSettings,
    name: String,
}

impl Issuer {
    async fn of(tx: &mut Tx, org: OrgId) -> Result<Issuer, ReceiptError> {
        let seller = seller::settings_in(tx, org).await?;
        let name = if seller.seller_name.is_empty() {
            let sql = "SELECT name FROM organisations WHERE id = $1";
            on_tx!(tx, c => sqlx::query_scalar::<_, String>(sql).bind(org.0).fetch_one(c).await?)
        } else {
            seller.seller_name.clone()
        };
        Ok(Issuer { seller, name })
    }
}

/// Writes receipts and their lines, numbered from `first` in order: two
/// statements however many there are.
async fn insert(tx: &mut Tx, news: &[NewReceipt], first: i64, issuer: &Issuer) -> Result<Vec<Receipt>, ReceiptError> {
    let seller = &issuer.seller;
    let registration = seller.registration_number.as_ref().map(InvoiceRegistrationNumber::as_str);
    let numbers: Vec<i64> = (first..).take(news.len()).collect();
    let public_ids: Vec<String> = news.iter().map(|_| random_public_id()).collect();
    let rows = Rows::new(news.len())
        .text("public_id", public_ids.iter().map(String::as_str))
        .int("number", numbers.iter().copied())
        .text("source_kind", news.iter().map(|r| r.source.kind.as_str()))
        .text("source_ref", news.iter().map(|r| r.source.reference.as_str()))
        .text("payer_name", news.iter().map(|r| r.payer_name.as_str()))
        .text("payer_email", news.iter().map(|r| r.payer_email.as_str()))
        .text("currency", news.iter().map(|r| r.currency.code()))
        .time("paid_at", news.iter().map(|r| r.paid_at))
        .text("price_basis", news.iter().map(|r| r.basis.as_str()));
    let sql = format!(
        "{} INSERT INTO receipts (public_id, organisation_id, number, source_kind, source_ref, payer_name, payer_email,
                currency, paid_at, issuer_name, registration_number, tax_rounding, price_basis, issued_at)
            SELECT public_id, $1, number, source_kind, source_ref, payer_name, payer_email, currency, paid_at, $2, $3,
                   $4, price_basis, $5
            FROM r WHERE true ORDER BY n
            RETURNING number, id, paid_at, issued_at",
        rows.with_clause("r", tx.backend(), 5)
    );
    let scalars: [Scalar; 5] = [
        Scalar::Int(news[0].org.0),
        Scalar::Text(issuer.name.clone()),
        Scalar::OptText(registration.map(str::to_owned)),
        Scalar::Text(seller.tax_rounding.as_str().to_owned()),
        Scalar::Time(Timestamp::now()),
    ];
    let written: Vec<(i64, i64, Timestamp, Timestamp)> = rows.fetch_all(tx, &sql, &scalars).await?;
    let written: std::collections::HashMap<i64, (i64, Timestamp, Timestamp)> =
        written.into_iter().map(|(number, id, paid_at, issued_at)| (number, (id, paid_at, issued_at))).collect();
    let stored = |number: i64| written.get(&number).copied().ok_or(sqlx::Error::RowNotFound);
    let mut lines: Vec<(i64, i64, &ReceiptLine)> = Vec::new();
    for (new, &number) in news.iter().zip(&numbers) {
        let (id, _, _) = stored(number)?;
        lines.extend(new.lines.iter().enumerate().map(|(position, line)| (id, position as i64, line)));
    }
    let line_rows = Rows::new(lines.len())
        .int("receipt_id", lines.iter().map(|l| l.0))
        .int("position", lines.iter().map(|l| l.1))
        .text("kind", lines.iter().map(|l| l.2.kind.as_str()))
        .text("description_ja", lines.iter().map(|l| l.2.description_ja.as_str()))
        .text("description_en", lines.iter().map(|l| l.2.description_en.as_str()))
        .int("amount", lines.iter().map(|l| l.2.amount.amount()))
        .opt_int("tax_rate", lines.iter().map(|l| l.2.tax_rate.map(|r| i64::from(r.percent()))));
    let sql = format!(
        "{} INSERT INTO receipt_lines (receipt_id, position, kind, description_ja, description_en, amount, tax_rate)
            SELECT receipt_id, position, kind, description_ja, description_en, amount, tax_rate FROM l WHERE true
            ORDER BY n",
        line_rows.with_clause("l", tx.backend(), 0)
    );
    line_rows.execute(tx, &sql, &[]).await?;
    // Exactly the rows just written (their times as stored, read back with
    // the id), without reading them again.
    news.iter()
        .zip(public_ids)
        .zip(&numbers)
        .map(|((new, public_id), &number)| {
            let (id, paid_at, issued_at) = stored(number)?;
            Ok(Receipt {
                id,
                public_id,
                org: new.org,
                number,
                source_kind: new.source.kind.clone(),
                source_ref: new.source.reference.clone(),
                payer_name: new.payer_name.clone(),
                payer_email: new.payer_email.clone(),
                paid_at,
                currency: new.currency,
                issuer_name: issuer.name.clone(),
                registration_number: registration.map(str::to_owned),
                rounding: seller.tax_rounding,
                basis: new.basis,
                issued_at,
                lines: new.lines.clone(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------- reading

#[derive(sqlx::FromRow)]
struct ReceiptRow {
    id: i64,
    public_id: String,
    organisation_id: i64,
    number: i64,
    source_kind: String,
    source_ref: String,
    payer_name: String,
    payer_email: String,
    currency: String,
    paid_at: Timestamp,
    issuer_name: String,
    registration_number: Option<String>,
    tax_rounding: String,
    price_basis: String,
    issued_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    kind: String,
    description_ja: String,
    description_en: String,
    amount: i64,
    tax_rate: Option<i32>,
}

fn corrupt(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("receipt with unknown {what} {value:?}").into())
}

fn assemble(row: ReceiptRow, lines: Vec<LineRow>) -> Result<Receipt, ReceiptError> {
    let currency = Currency::from_code(&row.currency).map_err(|_| corrupt("currency", &row.currency))?;
    let lines = lines
        .into_iter()
        .map(|l| {
            Ok(ReceiptLine {
                kind: LineKind::parse(&l.kind).ok_or_else(|| corrupt("line kind", &l.kind))?,
                description_ja: l.description_ja,
                description_en: l.description_en,
                amount: Money::new(l.amount, currency),
                tax_rate: match l.tax_rate {
                    None => None,
                    Some(p) => Some(
                        u8::try_from(p)
                            .ok()
                            .and_then(TaxRate::new)
                            .ok_or_else(|| corrupt("tax rate", &p.to_string()))?,
                    ),
                },
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Receipt {
        id: row.id,
        public_id: row.public_id,
        org: OrgId(row.organisation_id),
        number: row.number,
        source_kind: row.source_kind,
        source_ref: row.source_ref,
        payer_name: row.payer_name,
        payer_email: row.payer_email,
        paid_at: row.paid_at,
        currency,
        issuer_name: row.issuer_name,
        registration_number: row.registration_number,
        rounding: TaxRounding::parse(&row.tax_rounding).map_err(|_| corrupt("rounding", &row.tax_rounding))?,
        basis: PriceBasis::parse(&row.price_basis).ok_or_else(|| corrupt("price basis", &row.price_basis))?,
        issued_at: row.issued_at,
        lines,
    })
}

const COLUMNS: &str = "id, public_id, organisation_id, number, source_kind, source_ref, payer_name, payer_email,
    currency, paid_at, issuer_name, registration_number, tax_rounding, price_basis, issued_at";
const LINES: &str = "SELECT kind, description_ja, description_en, amount, tax_rate FROM receipt_lines
    WHERE receipt_id = $1 ORDER BY position";

async fn by_source_in(tx: &mut Tx, source: &ReceiptSource) -> Result<Option<Receipt>, ReceiptError> {
    let sql = format!("SELECT {COLUMNS} FROM receipts WHERE source_kind = $1 AND source_ref = $2");
    let row: Option<ReceiptRow> = on_tx!(tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
        .bind(&source.kind).bind(&source.reference).fetch_optional(c).await?);
    let Some(row) = row else { return Ok(None) };
    let lines: Vec<LineRow> = on_tx!(tx, c => sqlx::query_as(LINES).bind(row.id).fetch_all(c).await?);
    assemble(row, lines).map(Some)
}

async fn read_one(db: &Db, filter: &str, value: &str) -> Result<Option<Receipt>, ReceiptError> {
    let sql = format!("SELECT {COLUMNS} FROM receipts WHERE {filter}");
    let row: Option<ReceiptRow> =
        on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(value).fetch_optional(p).await?);
    let Some(row) = row else { return Ok(None) };
    let lines: Vec<LineRow> = on_db!(db, p => sqlx::query_as(LINES).bind(row.id).fetch_all(p).await?);
    assemble(row, lines).map(Some)
}

/// The receipt a link names.
pub async fn by_public_id(db: &Db, public_id: &str) -> Result<Option<Receipt>, ReceiptError> {
    read_one(db, "public_id = $1", public_id).await
}

/// The receipt of a Stripe charge, if one was issued.
pub async fn by_stripe_charge(db: &Db, charge: &str) -> Result<Option<Receipt>, ReceiptError> {
    read_one(db, "source_kind = 'stripe-charge' AND source_ref = $1", charge).await
}

/// The receipt of a treasurer's manual receipt of money, by the ledger
/// entry's idempotency key (its [`ReceiptSource::manual`] reference).
pub async fn by_manual_entry(db: &Db, entry_key: &str) -> Result<Option<Receipt>, ReceiptError> {
    read_one(db, "source_kind = 'manual' AND source_ref = $1", entry_key).await
}

/// The receipt of a pledge paid by a manual entry (cash, bank transfer), if
/// any: the receipt of the latest manual entry whose source is the pledge.
pub async fn manual_of_pledge(db: &Db, pledge_public_id: &str) -> Result<Option<Receipt>, ReceiptError> {
    let filter = "source_kind = 'manual' AND source_ref IN (SELECT idempotency_key FROM ledger_entries
        WHERE source_kind = 'pledge' AND source_ref = $1) ORDER BY number DESC LIMIT 1";
    read_one(db, filter, pledge_public_id).await
}

/// An organisation's receipts by number, for checks and the treasurer.
pub async fn numbers_of(db: &Db, org: OrgId) -> Result<Vec<i64>, ReceiptError> {
    let sql = "SELECT number FROM receipts WHERE organisation_id = $1 ORDER BY number";
    Ok(on_db!(db, p => sqlx::query_scalar(sql).bind(org.0).fetch_all(p).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(kind: LineKind, yen: i64, rate: Option<TaxRate>) -> ReceiptLine {
        ReceiptLine {
            kind,
            description_ja: "品".into(),
            description_en: "item".into(),
            amount: Money::yen(yen),
            tax_rate: rate,
        }
    }

    fn taxed(yen: i64) -> ReceiptLine {
        line(LineKind::Manual, yen, Some(TaxRate::STANDARD))
    }

    #[test]
    fn three_lines_at_105_yen_at_10_percent_carry_31_yen_of_tax_computed_once() {
        // Issue 7: three lines at ¥105 with 10 % tax show ¥31 of tax. Per line
        // it would be 3 × floor(10.5) = ¥30; once on the ¥315 it is floor(31.5).
        let lines = vec![taxed(105), taxed(105), taxed(105)];
        let totals = tax_by_rate(&lines, Currency::Jpy, PriceBasis::TaxExclusive, TaxRounding::Floor).unwrap();
        assert_eq!(
            totals,
            vec![RateTotal {
                rate: Some(TaxRate::STANDARD),
                subtotal: Money::yen(315),
                tax: Money::yen(31),
                total: Money::yen(346),
            }]
        );
        let round = tax_by_rate(&lines, Currency::Jpy, PriceBasis::TaxExclusive, TaxRounding::Round).unwrap();
        assert_eq!(round[0].tax, Money::yen(32));
        let ceil = tax_by_rate(&lines, Currency::Jpy, PriceBasis::TaxExclusive, TaxRounding::Ceil).unwrap();
        assert_eq!(ceil[0].tax, Money::yen(32));
    }

    #[test]
    fn tax_included_in_the_price_is_the_rate_over_one_hundred_and_the_rate() {
        // ¥315 paid, tax included: 315 × 10 / 110 = 28.63…
        let lines = vec![taxed(105), taxed(105), taxed(105)];
        let floor = tax_by_rate(&lines, Currency::Jpy, PriceBasis::TaxInclusive, TaxRounding::Floor).unwrap();
        assert_eq!((floor[0].tax, floor[0].total), (Money::yen(28), Money::yen(315)));
        let round = tax_by_rate(&lines, Currency::Jpy, PriceBasis::TaxInclusive, TaxRounding::Round).unwrap();
        assert_eq!(round[0].tax, Money::yen(29));
        // ¥1,100 tax included at 10 % is exactly ¥100 whatever the rounding.
        for rounding in [TaxRounding::Floor, TaxRounding::Round, TaxRounding::Ceil] {
            let t = tax_by_rate(&[taxed(1100)], Currency::Jpy, PriceBasis::TaxInclusive, rounding).unwrap();
            assert_eq!(t[0].tax, Money::yen(100));
        }
    }

    #[test]
    fn each_rate_is_taxed_on_its_own_and_donations_carry_no_tax() {
        let lines = vec![
            line(LineKind::Donation, 2000, None),
            taxed(3300),
            line(LineKind::Manual, 1080, Some(TaxRate::REDUCED)),
            taxed(1100),
        ];
        let totals = tax_by_rate(&lines, Currency::Jpy, PriceBasis::TaxInclusive, TaxRounding::Floor).unwrap();
        assert_eq!(totals.len(), 3);
        assert_eq!(
            (totals[0].rate, totals[0].subtotal, totals[0].tax),
            (Some(TaxRate(10)), Money::yen(4400), Money::yen(400))
        );
        assert_eq!(
            (totals[1].rate, totals[1].subtotal, totals[1].tax),
            (Some(TaxRate(8)), Money::yen(1080), Money::yen(80))
        );
        assert_eq!((totals[2].rate, totals[2].subtotal, totals[2].tax), (None, Money::yen(2000), Money::yen(0)));
    }

    #[test]
    fn two_decimal_currencies_are_taxed_in_cents() {
        let lines = vec![ReceiptLine { amount: Money::new(999, Currency::Usd), ..taxed(0) }];
        let totals = tax_by_rate(&lines, Currency::Usd, PriceBasis::TaxExclusive, TaxRounding::Round).unwrap();
        assert_eq!(totals[0].tax, Money::new(100, Currency::Usd));
        assert_eq!(totals[0].total, Money::new(1099, Currency::Usd));
    }

    #[test]
    fn a_payment_above_the_reward_price_splits_into_the_purchase_and_a_donation() {
        let split = |paid, price| purchase_and_donation(Money::yen(paid), Money::yen(price)).unwrap();
        assert_eq!(split(10_000, 3_000), (Money::yen(3_000), Money::yen(7_000)));
        assert_eq!(split(3_000, 3_000), (Money::yen(3_000), Money::yen(0)));
        // A reward charged below its price (the price changed) is all purchase.
        assert_eq!(split(2_000, 3_000), (Money::yen(2_000), Money::yen(0)));
        assert!(purchase_and_donation(Money::yen(1), Money::new(1, Currency::Usd)).is_err());
    }
}
