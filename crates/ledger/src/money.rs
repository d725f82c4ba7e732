//! Money: an integer count of a currency's minor unit, never a float.
//!
//! JPY has no minor unit (¥3,000 is stored as 3000), USD and EUR have cents
//! ($12.50 is stored as 1250). Stripe takes exactly this integer, so
//! [`Money::stripe_amount`] is the identity on the amount; it exists so that
//! the one place we hand an amount to Stripe is easy to find.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Locale;

/// The currencies kanpa can keep books in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    Jpy,
    Usd,
    Eur,
}

impl Currency {
    pub const ALL: [Currency; 3] = [Currency::Jpy, Currency::Usd, Currency::Eur];

    /// ISO 4217 code, upper case, as stored in the database.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Jpy => "JPY",
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
        }
    }

    /// Stripe's lower-case spelling.
    pub fn stripe_code(self) -> &'static str {
        match self {
            Currency::Jpy => "jpy",
            Currency::Usd => "usd",
            Currency::Eur => "eur",
        }
    }

    /// Number of decimal digits of the minor unit.
    pub fn exponent(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            Currency::Usd | Currency::Eur => 2,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Currency::Jpy => "¥",
            Currency::Usd => "$",
            Currency::Eur => "€",
        }
    }

    /// The smallest charge Stripe accepts in this currency, in minor units.
    pub fn stripe_minimum(self) -> Money {
        let amount = match self {
            Currency::Jpy => 50,
            Currency::Usd | Currency::Eur => 50,
        };
        Money::new(amount, self)
    }

    /// Parses an ISO code in either case ("JPY", "jpy").
    pub fn from_code(code: &str) -> Result<Currency, UnknownCurrency> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code().eq_ignore_ascii_case(code.trim()))
            .ok_or_else(|| UnknownCurrency(code.to_owned()))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown currency {0:?}")]
pub struct UnknownCurrency(pub String);

/// An amount in a currency's minor unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount: i64,
    currency: Currency,
}

/// Arithmetic that would mix currencies or leave the i64 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("cannot combine {left} and {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount out of range")]
    Overflow,
}

/// Why a typed-in amount was refused. Each case gets its own message in the UI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseMoneyError {
    #[error("no amount given")]
    Empty,
    #[error("the amount must not be negative")]
    Negative,
    #[error("{currency} amounts have at most {allowed} decimal places")]
    TooManyDecimals { currency: Currency, allowed: u32 },
    #[error("the amount is too large")]
    Overflow,
    #[error("the amount is written in another currency")]
    WrongCurrency,
    #[error("not an amount of money")]
    NotANumber,
}

impl Money {
    pub const fn new(amount: i64, currency: Currency) -> Money {
        Money { amount, currency }
    }

    pub const fn zero(currency: Currency) -> Money {
        Money::new(0, currency)
    }

    pub fn yen(amount: i64) -> Money {
        Money::new(amount, Currency::Jpy)
    }

    /// The amount in minor units (yen, cents).
    pub fn amount(self) -> i64 {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    /// The integer Stripe expects for this amount (minor units, unscaled for JPY).
    pub fn stripe_amount(self) -> i64 {
        self.amount
    }

    pub fn is_zero(self) -> bool {
        self.amount == 0
    }

    pub fn is_negative(self) -> bool {
        self.amount < 0
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self.amount.checked_sub(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        let amount = self.amount.checked_neg().ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }

    /// Parses what a person typed into an amount field.
    ///
    /// Accepts grouping commas ("3,000"), the currency's symbol ("¥3,000",
    /// "$12.50"), its code ("JPY 3000"), "円" after a yen amount, and
    /// full-width digits and punctuation ("３，０００"). Refuses negatives,
    /// more decimals than the currency has, amounts beyond i64, and anything
    /// else, each with its own error.
    pub fn parse(input: &str, currency: Currency) -> Result<Money, ParseMoneyError> {
        let normalised: String = input.chars().map(fold_full_width).collect();
        let mut text = normalised.trim();
        if text.is_empty() {
            return Err(ParseMoneyError::Empty);
        }
        let mut negative = false;
        if let Some(rest) = text.strip_prefix(['-', '−']) {
            negative = true;
            text = rest.trim_start();
        }
        text = strip_currency_marks(text, currency)?;
        if let Some(rest) = text.strip_prefix(['-', '−']) {
            negative = true;
            text = rest.trim_start();
        }
        if text.is_empty() {
            return Err(ParseMoneyError::Empty);
        }
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let whole_digits = ungroup(whole)?;
        let allowed = currency.exponent();
        let fraction_digits = match fraction {
            None => "",
            Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => f,
            Some(_) => return Err(ParseMoneyError::NotANumber),
        };
        if fraction_digits.len() > allowed as usize {
            return Err(ParseMoneyError::TooManyDecimals { currency, allowed });
        }
        let mut amount: i64 = 0;
        let padded = fraction_digits.chars().chain(std::iter::repeat('0')).take(allowed as usize);
        for digit in whole_digits.chars().chain(padded) {
            let d = i64::from(digit.to_digit(10).ok_or(ParseMoneyError::NotANumber)?);
            amount = amount.checked_mul(10).and_then(|a| a.checked_add(d)).ok_or(ParseMoneyError::Overflow)?;
        }
        if negative && amount != 0 {
            return Err(ParseMoneyError::Negative);
        }
        Ok(Money::new(amount, currency))
    }

    /// Formats for display: "¥3,000", "$12.50", "-€0.05".
    ///
    /// Both locales use the symbol-first form today; the locale is part of the
    /// signature so that a future locale-specific form changes no caller.
    pub fn format(self, _locale: Locale) -> String {
        let exponent = self.currency.exponent();
        let magnitude = self.amount.unsigned_abs();
        let divisor = 10u64.pow(exponent);
        let whole = group_thousands(magnitude / divisor);
        let sign = if self.amount < 0 { "-" } else { "" };
        let symbol = self.currency.symbol();
        if exponent == 0 {
            format!("{sign}{symbol}{whole}")
        } else {
            let fraction = magnitude % divisor;
            format!("{sign}{symbol}{whole}.{fraction:0width$}", width = exponent as usize)
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(Locale::En))
    }
}

/// Maps full-width digits and the punctuation people type with a Japanese IME
/// to their ASCII forms.
fn fold_full_width(c: char) -> char {
    match c {
        '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
        '，' | '、' => ',',
        '．' => '.',
        '￥' => '¥',
        '＄' => '$',
        '－' | 'ー' => '-',
        '\u{3000}' => ' ',
        other => other,
    }
}

fn strip_currency_marks(text: &str, currency: Currency) -> Result<&str, ParseMoneyError> {
    let mut text = text;
    for other in Currency::ALL.into_iter().filter(|c| *c != currency) {
        if text.starts_with(other.symbol()) || text.starts_with(other.code()) {
            return Err(ParseMoneyError::WrongCurrency);
        }
    }
    if let Some(rest) = text.strip_prefix(currency.symbol()) {
        text = rest.trim_start();
    } else if let Some(rest) = text.strip_prefix(currency.code()) {
        text = rest.trim_start();
    }
    if let Some(rest) = text.strip_suffix(currency.code()) {
        text = rest.trim_end();
    }
    if currency == Currency::Jpy {
        if let Some(rest) = text.strip_suffix('円') {
            text = rest.trim_end();
        }
    } else if text.ends_with('円') {
        return Err(ParseMoneyError::WrongCurrency);
    }
    Ok(text)
}

/// Removes grouping commas, accepting them only in groups of three
/// ("3,000" but not "3,00", which could be a European decimal).
fn ungroup(whole: &str) -> Result<String, ParseMoneyError> {
    if whole.is_empty() {
        return Err(ParseMoneyError::NotANumber);
    }
    let groups: Vec<&str> = whole.split(',').collect();
    let first_ok = !groups[0].is_empty() && (groups.len() == 1 || groups[0].len() <= 3);
    let rest_ok = groups[1..].iter().all(|g| g.len() == 3);
    let digits_ok = groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()));
    if !(first_ok && rest_ok && digits_ok) {
        return Err(ParseMoneyError::NotANumber);
    }
    Ok(groups.concat())
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn jpy(s: &str) -> Result<Money, ParseMoneyError> {
        Money::parse(s, Currency::Jpy)
    }

    #[test]
    fn accepts_the_ways_people_write_yen() {
        for input in ["3000", "3,000", "¥3,000", "￥3,000", "３０００", "３，０００", " 3000 ", "3,000円", "JPY 3000"]
        {
            assert_eq!(jpy(input), Ok(Money::yen(3000)), "{input}");
        }
    }

    #[test]
    fn accepts_dollars_and_cents() {
        let usd = |s| Money::parse(s, Currency::Usd);
        assert_eq!(usd("12.50"), Ok(Money::new(1250, Currency::Usd)));
        assert_eq!(usd("$12.5"), Ok(Money::new(1250, Currency::Usd)));
        assert_eq!(usd("1,234.05"), Ok(Money::new(123_405, Currency::Usd)));
        assert_eq!(usd("7"), Ok(Money::new(700, Currency::Usd)));
    }

    #[test]
    fn refuses_each_kind_of_bad_input_with_its_own_error() {
        assert_eq!(jpy(""), Err(ParseMoneyError::Empty));
        assert_eq!(jpy("   "), Err(ParseMoneyError::Empty));
        assert_eq!(jpy("¥"), Err(ParseMoneyError::Empty));
        assert_eq!(jpy("-100"), Err(ParseMoneyError::Negative));
        assert_eq!(jpy("－１００"), Err(ParseMoneyError::Negative));
        assert_eq!(jpy("¥-100"), Err(ParseMoneyError::Negative));
        assert_eq!(jpy("100.5"), Err(ParseMoneyError::TooManyDecimals { currency: Currency::Jpy, allowed: 0 }));
        assert_eq!(
            Money::parse("1.005", Currency::Usd),
            Err(ParseMoneyError::TooManyDecimals { currency: Currency::Usd, allowed: 2 })
        );
        assert_eq!(jpy("99999999999999999999"), Err(ParseMoneyError::Overflow));
        assert_eq!(jpy("abc"), Err(ParseMoneyError::NotANumber));
        assert_eq!(jpy("3,00"), Err(ParseMoneyError::NotANumber));
        assert_eq!(jpy("1e5"), Err(ParseMoneyError::NotANumber));
        assert_eq!(jpy("12.-"), Err(ParseMoneyError::NotANumber));
        assert_eq!(jpy("$12"), Err(ParseMoneyError::WrongCurrency));
        assert_eq!(Money::parse("500円", Currency::Usd), Err(ParseMoneyError::WrongCurrency));
    }

    #[test]
    fn formats_per_currency() {
        assert_eq!(Money::yen(3000).format(Locale::Ja), "¥3,000");
        assert_eq!(Money::yen(3000).format(Locale::En), "¥3,000");
        assert_eq!(Money::yen(3_500_000).format(Locale::Ja), "¥3,500,000");
        assert_eq!(Money::new(1250, Currency::Usd).format(Locale::En), "$12.50");
        assert_eq!(Money::new(-5, Currency::Eur).format(Locale::En), "-€0.05");
        assert_eq!(Money::yen(0).format(Locale::Ja), "¥0");
    }

    #[test]
    fn arithmetic_never_mixes_currencies() {
        let yen = Money::yen(100);
        let dollars = Money::new(100, Currency::Usd);
        assert_eq!(
            yen.checked_add(dollars),
            Err(MoneyError::CurrencyMismatch { left: Currency::Jpy, right: Currency::Usd })
        );
        assert_eq!(yen.checked_add(Money::yen(50)), Ok(Money::yen(150)));
        assert_eq!(Money::yen(i64::MAX).checked_add(Money::yen(1)), Err(MoneyError::Overflow));
        assert_eq!(Money::yen(i64::MIN).checked_neg(), Err(MoneyError::Overflow));
    }

    #[test]
    fn currency_codes_round_trip() {
        for c in Currency::ALL {
            assert_eq!(Currency::from_code(c.code()), Ok(c));
            assert_eq!(Currency::from_code(c.stripe_code()), Ok(c));
        }
        assert!(Currency::from_code("XXX").is_err());
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_gives_back_the_amount(amount in 0i64..=i64::MAX, idx in 0usize..3) {
            let currency = Currency::ALL[idx];
            let money = Money::new(amount, currency);
            prop_assert_eq!(Money::parse(&money.format(Locale::Ja), currency), Ok(money));
        }
    }
}
