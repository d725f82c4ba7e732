//! What a campaign is made of, and the rules its inputs must follow.

use kanpa_ledger::{AccountId, Currency, Locale, Money, ParseMoneyError, Timestamp};
use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Whether money is taken only if the goal is met.
    FundingModel { AllOrNothing = "all_or_nothing", KeepItAll = "keep_it_all" }
}

string_enum! {
    CampaignStatus {
        Draft = "draft", Live = "live", Settling = "settling", Succeeded = "succeeded",
        Failed = "failed", Cancelled = "cancelled",
    }
}

string_enum! {
    /// How unallocated pool money is shared among the teams at settlement.
    PoolRule { Equal = "equal", ProRata = "pro_rata", Manual = "manual" }
}

string_enum! {
    /// Where a pledge is in its life.
    ///
    /// `pending`: at Checkout. `committed`: card saved (all-or-nothing),
    /// to be charged at the deadline. `awaiting_payment`: konbini voucher
    /// issued, not yet paid. `collected`: money taken. `payment_failed`:
    /// the deadline charge failed; retries and a pay link follow for 7 days.
    /// `dropped`: not paid within those 7 days. `cancelled`: by the
    /// supporter. `expired`: Checkout abandoned or failed. `void`: the
    /// all-or-nothing goal was missed, nothing charged. `refunded`: money
    /// taken, then returned in full.
    PledgeStatus {
        Pending = "pending", Committed = "committed", AwaitingPayment = "awaiting_payment",
        Collected = "collected", PaymentFailed = "payment_failed", Dropped = "dropped",
        Cancelled = "cancelled", Expired = "expired", Void = "void", Refunded = "refunded",
    }
}

impl PledgeStatus {
    /// What a pledge in this state adds to its campaign's and team's
    /// aggregates: (promised but not charged, collected, backers).
    pub fn contribution(self, amount: i64, refunded: i64) -> (i64, i64, i64) {
        match self {
            PledgeStatus::Committed | PledgeStatus::PaymentFailed => (amount, 0, 1),
            PledgeStatus::Collected => (0, amount - refunded, 1),
            _ => (0, 0, 0),
        }
    }

    /// Holds a reward's unit while in this state.
    pub fn holds_reward(self) -> bool {
        !matches!(
            self,
            PledgeStatus::Cancelled
                | PledgeStatus::Expired
                | PledgeStatus::Void
                | PledgeStatus::Dropped
                | PledgeStatus::Refunded
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Campaign {
    pub id: i64,
    pub org_id: i64,
    pub slug: String,
    pub title_ja: String,
    pub title_en: String,
    pub story_ja: String,
    pub story_en: String,
    pub currency: Currency,
    pub goal: i64,
    pub starts_at: Timestamp,
    pub deadline: Timestamp,
    pub utc_offset_min: i32,
    pub time_zone: String,
    pub funding_model: FundingModel,
    pub status: CampaignStatus,
    pub pool_rule: PoolRule,
    #[serde(skip)]
    pub pool_account: AccountId,
    pub contact_email: String,
    pub pledged: i64,
    pub collected: i64,
    pub backers: i64,
    pub pool_pledged: i64,
    pub pool_collected: i64,
}

impl Campaign {
    pub fn title(&self, locale: Locale) -> &str {
        pick(locale, &self.title_ja, &self.title_en)
    }

    pub fn story(&self, locale: Locale) -> &str {
        pick(locale, &self.story_ja, &self.story_en)
    }

    pub fn money(&self, amount: i64) -> Money {
        Money::new(amount, self.currency)
    }

    /// Promised and collected, as the drive's progress shows it.
    pub fn raised(&self) -> i64 {
        self.pledged + self.collected
    }

    /// Whether pool money is shared among the teams now: after an
    /// all-or-nothing success, or once a keep-it-all drive has closed.
    pub fn pool_is_shared(&self) -> bool {
        match self.status {
            CampaignStatus::Succeeded => true,
            CampaignStatus::Failed => self.funding_model == FundingModel::KeepItAll,
            _ => false,
        }
    }

    pub fn is_open_at(&self, now: Timestamp) -> bool {
        self.status == CampaignStatus::Live && now >= self.starts_at && now < self.deadline
    }
}

/// The Japanese text, or the English one where it is asked for and given.
pub fn pick<'a>(locale: Locale, ja: &'a str, en: &'a str) -> &'a str {
    match locale {
        Locale::En if !en.trim().is_empty() => en,
        _ => ja,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Team {
    pub id: i64,
    pub campaign_id: i64,
    pub slug: String,
    pub name_ja: String,
    pub name_en: String,
    pub goal: i64,
    pub position: i32,
    pub pool_weight: i64,
    #[serde(skip)]
    pub account: AccountId,
    pub pledged: i64,
    pub collected: i64,
    pub backers: i64,
}

impl Team {
    pub fn name(&self, locale: Locale) -> &str {
        pick(locale, &self.name_ja, &self.name_en)
    }

    pub fn raised(&self) -> i64 {
        self.pledged + self.collected
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reward {
    pub id: i64,
    pub campaign_id: i64,
    pub team_id: Option<i64>,
    pub title_ja: String,
    pub title_en: String,
    pub description_ja: String,
    pub description_en: String,
    pub min_amount: i64,
    pub quantity: Option<i64>,
    pub claimed: i64,
    pub available_from: Option<Timestamp>,
    pub available_until: Option<Timestamp>,
    pub position: i32,
    /// When it stopped taking new pledges; `None` while offered.
    pub retired_at: Option<Timestamp>,
}

impl Reward {
    pub fn is_retired(&self) -> bool {
        self.retired_at.is_some()
    }

    pub fn title(&self, locale: Locale) -> &str {
        pick(locale, &self.title_ja, &self.title_en)
    }

    pub fn description(&self, locale: Locale) -> &str {
        pick(locale, &self.description_ja, &self.description_en)
    }

    /// Units left, when the reward is limited.
    pub fn remaining(&self) -> Option<i64> {
        self.quantity.map(|q| (q - self.claimed).max(0))
    }

    pub fn is_available_at(&self, now: Timestamp) -> bool {
        !self.is_retired()
            && self.available_from.is_none_or(|from| now >= from)
            && self.available_until.is_none_or(|until| now < until)
            && self.remaining() != Some(0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pledge {
    pub id: i64,
    pub public_id: String,
    pub campaign_id: i64,
    pub team_id: Option<i64>,
    pub reward_id: Option<i64>,
    pub amount: i64,
    pub currency: Currency,
    pub email: String,
    pub display_name: String,
    pub anonymous: bool,
    pub message: String,
    pub locale: Locale,
    pub status: PledgeStatus,
    pub checkout_session_id: Option<String>,
    pub customer_id: Option<String>,
    pub setup_intent_id: Option<String>,
    pub payment_method_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub charge_id: Option<String>,
    pub amount_refunded: i64,
    pub failure_code: Option<String>,
    pub failed_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub committed_at: Option<Timestamp>,
    pub collected_at: Option<Timestamp>,
}

impl Pledge {
    pub fn money(&self) -> Money {
        Money::new(self.amount, self.currency)
    }
}

// ---------------------------------------------------------------- validation

/// Why an input was refused. Each has a stable code (for the API) and a
/// message in both languages (see the server's locales).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("required")]
    Required,
    #[error("longer than {max} characters")]
    TooLong { max: usize },
    #[error("not a valid amount: {0}")]
    Amount(ParseMoneyError),
    #[error("write the amount with half-width digits")]
    FullWidthDigits,
    #[error("must be at least {min}")]
    BelowMinimum { min: Money },
    #[error("must be at most {max}")]
    AboveMaximum { max: Money },
    #[error("not a valid email address")]
    Email,
    #[error("use 3 to 64 lowercase letters, digits and hyphens")]
    Slug,
    #[error("not a date and time with an offset, like 2026-12-31T23:59:00+09:00")]
    DateTime,
    #[error("must come after the start")]
    DeadlineBeforeStart,
    #[error("not one of the allowed values")]
    Choice,
    #[error("unknown currency")]
    Currency,
}

impl Problem {
    pub fn code(&self) -> &'static str {
        match self {
            Problem::Required => "required",
            Problem::TooLong { .. } => "too_long",
            Problem::Amount(_) | Problem::FullWidthDigits => "invalid_amount",
            Problem::BelowMinimum { .. } => "below_minimum",
            Problem::AboveMaximum { .. } => "above_maximum",
            Problem::Email => "invalid_email",
            Problem::Slug => "invalid_slug",
            Problem::DateTime => "invalid_datetime",
            Problem::DeadlineBeforeStart => "deadline_before_start",
            Problem::Choice => "invalid_choice",
            Problem::Currency => "invalid_currency",
        }
    }
}

/// A refused input field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: &'static str,
    pub problem: Problem,
}

pub fn invalid(field: &'static str, problem: Problem) -> Invalid {
    Invalid { field, problem }
}

/// Trims and checks a text field's length in characters.
pub fn text(field: &'static str, value: &str, required: bool, max: usize) -> Result<String, Invalid> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(invalid(field, Problem::Required));
    }
    if value.chars().count() > max {
        return Err(invalid(field, Problem::TooLong { max }));
    }
    Ok(value.to_owned())
}

pub fn slug(field: &'static str, value: &str) -> Result<String, Invalid> {
    let value = value.trim();
    let ok = (3..=64).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok { Ok(value.to_owned()) } else { Err(invalid(field, Problem::Slug)) }
}

pub fn email(field: &'static str, value: &str) -> Result<String, Invalid> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, Problem::Required));
    }
    if value.len() > 254 {
        return Err(invalid(field, Problem::TooLong { max: 254 }));
    }
    kanpa_messaging::email::EmailAddress::parse(value).map_err(|_| invalid(field, Problem::Email))?;
    Ok(value.to_owned())
}

/// An amount typed by a person ("3000", "3,000"), in minor units.
pub fn amount(field: &'static str, value: &str, currency: Currency) -> Result<Money, Invalid> {
    // An IME's full-width digits are refused with their own message rather
    // than guessed at: what is charged must be exactly what was typed.
    if value.chars().any(|c| ('\u{FF10}'..='\u{FF19}').contains(&c)) {
        return Err(invalid(field, Problem::FullWidthDigits));
    }
    let money = Money::parse(value, currency).map_err(|e| invalid(field, Problem::Amount(e)))?;
    if money.amount() <= 0 {
        return Err(invalid(field, Problem::BelowMinimum { min: currency.stripe_minimum() }));
    }
    Ok(money)
}

/// An RFC 3339 time with its offset ("2026-12-31T23:59:00+09:00"), and
/// that offset in minutes.
pub fn date_time(field: &'static str, value: &str) -> Result<(Timestamp, i32), Invalid> {
    let parsed = time::OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|_| invalid(field, Problem::DateTime))?;
    let micros = parsed.unix_timestamp_nanos() / 1_000;
    let ts = Timestamp::from_unix_micros(micros as i64).ok_or_else(|| invalid(field, Problem::DateTime))?;
    Ok((ts, parsed.offset().whole_minutes() as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_count_money_once() {
        assert_eq!(PledgeStatus::Committed.contribution(3000, 0), (3000, 0, 1));
        assert_eq!(PledgeStatus::Collected.contribution(3000, 1000), (0, 2000, 1));
        for status in [PledgeStatus::Pending, PledgeStatus::Expired, PledgeStatus::Void, PledgeStatus::Dropped] {
            assert_eq!(status.contribution(3000, 0), (0, 0, 0), "{status}");
        }
    }

    #[test]
    fn inputs_are_checked() {
        assert_eq!(slug("slug", "drive-2026"), Ok("drive-2026".into()));
        for bad in ["ab", "Drive", "-x-y", "x y z", "ドライブ"] {
            assert!(slug("slug", bad).is_err(), "{bad}");
        }
        assert_eq!(text("name", "  花子  ", true, 5), Ok("花子".into()));
        assert_eq!(text("name", "   ", true, 5).unwrap_err().problem, Problem::Required);
        assert_eq!(text("name", "あいうえおか", true, 5).unwrap_err().problem, Problem::TooLong { max: 5 });
        assert_eq!(amount("amount", "3,000", Currency::Jpy), Ok(Money::yen(3000)));
        for bad in ["-100", "0", "12.5", "３０００", "abc", ""] {
            assert!(amount("amount", bad, Currency::Jpy).is_err(), "{bad}");
        }
        let (ts, offset) = date_time("deadline", "2026-12-31T23:59:00+09:00").unwrap();
        assert_eq!(offset, 540);
        assert_eq!(ts.unix_seconds(), 1_798_729_140);
        assert!(date_time("deadline", "2026-12-31 23:59").is_err());
    }
}
