//! What a salon is made of, and the rules its inputs must follow.
//!
//! Plain types and plain functions: nothing here reads or writes.

use kanpa_ledger::{AccountId, Currency, Locale, Money, Timestamp};
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
    /// When a patron is charged each month.
    BillingAnchor { StartDate = "start_date", FirstOfMonth = "first_of_month" }
}

string_enum! {
    /// When a change of tier takes effect: at the next renewal, or at once
    /// with the difference prorated.
    TierChange { NextCycle = "next_cycle", ProrateNow = "prorate_now" }
}

string_enum! {
    /// `draft`: being set up, not joinable. `open`: taking patrons.
    /// `closed`: no new patrons; existing memberships run on.
    SalonStatus { Draft = "draft", Open = "open", Closed = "closed" }
}

string_enum! {
    /// A retired tier takes no new patrons; its patrons stay on it.
    TierStatus { Active = "active", Retired = "retired" }
}

string_enum! {
    /// Where a membership is in its life.
    ///
    /// `incomplete`: at Checkout, or the first invoice not yet paid.
    /// `active`: paid up. `past_due`: a renewal failed, Stripe is retrying;
    /// access is kept for the salon's grace period. `paused`: collection
    /// paused by the patron. `canceling`: cancelled at period end, active
    /// until then. `ended`: over.
    MembershipStatus {
        Incomplete = "incomplete", Active = "active", PastDue = "past_due", Paused = "paused",
        Canceling = "canceling", Ended = "ended",
    }
}

impl MembershipStatus {
    /// Whether the membership holds a seat of its tier.
    pub fn holds_seat(self) -> bool {
        self != MembershipStatus::Ended
    }
}

/// What a Stripe subscription's state means for its membership.
/// `cancel_pending`: `cancel_at_period_end` or a `cancel_at` is set;
/// `paused`: `pause_collection` is set.
pub fn status_of_subscription(stripe_status: &str, cancel_pending: bool, paused: bool) -> MembershipStatus {
    match stripe_status {
        "active" | "trialing" if paused => MembershipStatus::Paused,
        "active" | "trialing" if cancel_pending => MembershipStatus::Canceling,
        "active" | "trialing" => MembershipStatus::Active,
        "past_due" | "unpaid" => MembershipStatus::PastDue,
        "paused" => MembershipStatus::Paused,
        "canceled" | "incomplete_expired" => MembershipStatus::Ended,
        _ => MembershipStatus::Incomplete,
    }
}

/// The text in the reader's language, falling back to Japanese.
pub fn pick<'a>(locale: Locale, ja: &'a str, en: &'a str) -> &'a str {
    match locale {
        Locale::En if !en.trim().is_empty() => en,
        _ => ja,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Salon {
    pub id: i64,
    pub org_id: i64,
    pub slug: String,
    pub name_ja: String,
    pub name_en: String,
    pub description_ja: String,
    pub description_en: String,
    pub currency: Currency,
    pub billing_anchor: BillingAnchor,
    pub tier_change: TierChange,
    pub grace_days: i64,
    pub status: SalonStatus,
    /// Where patrons' payments are posted, net of fees.
    pub fund_account: AccountId,
    pub contact_email: String,
}

impl Salon {
    pub fn name(&self, locale: Locale) -> &str {
        pick(locale, &self.name_ja, &self.name_en)
    }

    pub fn description(&self, locale: Locale) -> &str {
        pick(locale, &self.description_ja, &self.description_en)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tier {
    pub id: i64,
    pub salon_id: i64,
    pub slug: String,
    pub name_ja: String,
    pub name_en: String,
    pub benefits_ja: String,
    pub benefits_en: String,
    /// What a new patron pays per month, in minor units.
    pub monthly_price: i64,
    pub currency: Currency,
    pub seat_limit: Option<i64>,
    pub seats_taken: i64,
    pub status: TierStatus,
    pub position: i32,
    pub stripe_product_id: Option<String>,
    pub stripe_price_id: Option<String>,
}

impl Tier {
    pub fn name(&self, locale: Locale) -> &str {
        pick(locale, &self.name_ja, &self.name_en)
    }

    pub fn benefits(&self, locale: Locale) -> &str {
        pick(locale, &self.benefits_ja, &self.benefits_en)
    }

    pub fn price(&self) -> Money {
        Money::new(self.monthly_price, self.currency)
    }

    pub fn seats_left(&self) -> Option<i64> {
        self.seat_limit.map(|limit| (limit - self.seats_taken).max(0))
    }

    /// Whether a new patron may choose it now.
    pub fn is_joinable(&self) -> bool {
        self.status == TierStatus::Active && self.seats_left() != Some(0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub id: i64,
    pub public_id: String,
    pub salon_id: i64,
    pub tier_id: i64,
    pub next_tier_id: Option<i64>,
    pub email: String,
    pub locale: Locale,
    /// What this patron pays per month (their price, which may be older
    /// than the tier's current one).
    pub amount: i64,
    pub currency: Currency,
    pub stripe_price_id: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub status: MembershipStatus,
    pub current_period_end: Option<Timestamp>,
    pub cancel_at: Option<Timestamp>,
    pub paused_until: Option<Timestamp>,
    pub past_due_since: Option<Timestamp>,
    pub since: Option<Timestamp>,
    pub last_payment_at: Option<Timestamp>,
    pub lifetime_paid: i64,
    pub ended_at: Option<Timestamp>,
}

impl Membership {
    pub fn money(&self) -> Money {
        Money::new(self.amount, self.currency)
    }

    pub fn lifetime_paid(&self) -> Money {
        Money::new(self.lifetime_paid, self.currency)
    }

    /// Whether the patron may see the members' area at `now`: active,
    /// canceling until the period ends, or past due within the grace period.
    pub fn in_good_standing(&self, grace_days: i64, now: Timestamp) -> bool {
        match self.status {
            MembershipStatus::Active => true,
            MembershipStatus::Canceling => self.current_period_end.is_none_or(|end| now < end),
            MembershipStatus::PastDue => {
                self.past_due_since.is_some_and(|since| now < since.saturating_add(time::Duration::days(grace_days)))
            }
            MembershipStatus::Incomplete | MembershipStatus::Paused | MembershipStatus::Ended => false,
        }
    }
}

/// A post in the members' area.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberPost {
    pub id: i64,
    pub salon_id: i64,
    pub title_ja: String,
    pub title_en: String,
    pub body_ja: String,
    pub body_en: String,
    pub link_url: Option<String>,
    pub created_at: Timestamp,
}

impl MemberPost {
    pub fn title(&self, locale: Locale) -> &str {
        pick(locale, &self.title_ja, &self.title_en)
    }

    pub fn body(&self, locale: Locale) -> &str {
        pick(locale, &self.body_ja, &self.body_en)
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
    #[error("must be at least {min}")]
    BelowMinimum { min: Money },
    #[error("must be at most {max}")]
    AboveMaximum { max: Money },
    #[error("not a valid email address")]
    Email,
    #[error("use 3 to 64 lowercase letters, digits and hyphens")]
    Slug,
    #[error("not one of the allowed values")]
    Choice,
    #[error("unknown currency")]
    Currency,
    #[error("not an http(s) link")]
    Url,
    #[error("must be between {min} and {max}")]
    OutOfRange { min: i64, max: i64 },
}

impl Problem {
    pub fn code(&self) -> &'static str {
        match self {
            Problem::Required => "required",
            Problem::TooLong { .. } => "too_long",
            Problem::BelowMinimum { .. } => "below_minimum",
            Problem::AboveMaximum { .. } => "above_maximum",
            Problem::Email => "invalid_email",
            Problem::Slug => "invalid_slug",
            Problem::Choice => "invalid_choice",
            Problem::Currency => "invalid_currency",
            Problem::Url => "invalid_url",
            Problem::OutOfRange { .. } => "out_of_range",
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

/// Largest monthly price accepted: ten million minor units.
pub const MAX_MONTHLY_PRICE: i64 = 10_000_000;

/// A monthly price: at least what Stripe can charge, at most
/// [`MAX_MONTHLY_PRICE`].
pub fn monthly_price(field: &'static str, value: i64, currency: Currency) -> Result<i64, Invalid> {
    let min = currency.stripe_minimum();
    if value < min.amount() {
        return Err(invalid(field, Problem::BelowMinimum { min }));
    }
    if value > MAX_MONTHLY_PRICE {
        return Err(invalid(field, Problem::AboveMaximum { max: Money::new(MAX_MONTHLY_PRICE, currency) }));
    }
    Ok(value)
}

pub fn in_range(field: &'static str, value: i64, min: i64, max: i64) -> Result<i64, Invalid> {
    if (min..=max).contains(&value) { Ok(value) } else { Err(invalid(field, Problem::OutOfRange { min, max })) }
}

/// An absolute http(s) link, as organisers give for members' posts.
pub fn url(field: &'static str, value: &str) -> Result<String, Invalid> {
    let value = value.trim();
    let ok = (value.starts_with("https://") || value.starts_with("http://"))
        && value.len() <= 2000
        && value.len() > "https://".len()
        && !value.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>'));
    if ok { Ok(value.to_owned()) } else { Err(invalid(field, Problem::Url)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(status: MembershipStatus) -> Membership {
        Membership {
            id: 1,
            public_id: "m_1".into(),
            salon_id: 1,
            tier_id: 1,
            next_tier_id: None,
            email: "hanako@example.jp".into(),
            locale: Locale::Ja,
            amount: 1000,
            currency: Currency::Jpy,
            stripe_price_id: None,
            stripe_customer_id: None,
            stripe_subscription_id: None,
            status,
            current_period_end: None,
            cancel_at: None,
            paused_until: None,
            past_due_since: None,
            since: None,
            last_payment_at: None,
            lifetime_paid: 0,
            ended_at: None,
        }
    }

    #[test]
    fn good_standing_follows_status_period_and_grace() {
        let now = Timestamp::from_unix_seconds(1_800_000_000).unwrap();
        let day = time::Duration::days(1);
        assert!(membership(MembershipStatus::Active).in_good_standing(7, now));
        for status in [MembershipStatus::Incomplete, MembershipStatus::Paused, MembershipStatus::Ended] {
            assert!(!membership(status).in_good_standing(7, now), "{status}");
        }
        let mut canceling = membership(MembershipStatus::Canceling);
        canceling.current_period_end = Some(now.saturating_add(day));
        assert!(canceling.in_good_standing(0, now));
        canceling.current_period_end = Some(now);
        assert!(!canceling.in_good_standing(0, now));
        let mut past_due = membership(MembershipStatus::PastDue);
        past_due.past_due_since = Some(now.saturating_add(-day * 6));
        assert!(past_due.in_good_standing(7, now));
        assert!(!past_due.in_good_standing(5, now));
        assert!(!past_due.in_good_standing(0, now));
    }

    #[test]
    fn subscription_states_map_to_membership_states() {
        use MembershipStatus as M;
        assert_eq!(status_of_subscription("active", false, false), M::Active);
        assert_eq!(status_of_subscription("active", true, false), M::Canceling);
        assert_eq!(status_of_subscription("active", true, true), M::Paused);
        assert_eq!(status_of_subscription("trialing", false, false), M::Active);
        assert_eq!(status_of_subscription("past_due", false, false), M::PastDue);
        assert_eq!(status_of_subscription("unpaid", false, false), M::PastDue);
        assert_eq!(status_of_subscription("canceled", false, false), M::Ended);
        assert_eq!(status_of_subscription("incomplete_expired", false, false), M::Ended);
        assert_eq!(status_of_subscription("incomplete", false, false), M::Incomplete);
    }

    #[test]
    fn tiers_know_their_seats() {
        let mut tier = Tier {
            id: 1,
            salon_id: 1,
            slug: "gold".into(),
            name_ja: "ゴールド".into(),
            name_en: String::new(),
            benefits_ja: String::new(),
            benefits_en: String::new(),
            monthly_price: 3000,
            currency: Currency::Jpy,
            seat_limit: Some(2),
            seats_taken: 1,
            status: TierStatus::Active,
            position: 1,
            stripe_product_id: None,
            stripe_price_id: None,
        };
        assert_eq!(tier.name(Locale::En), "ゴールド");
        assert_eq!(tier.seats_left(), Some(1));
        assert!(tier.is_joinable());
        tier.seats_taken = 2;
        assert!(!tier.is_joinable());
        tier.seat_limit = None;
        assert!(tier.is_joinable());
        tier.status = TierStatus::Retired;
        assert!(!tier.is_joinable());
    }

    #[test]
    fn inputs_are_checked() {
        assert_eq!(monthly_price("p", 49, Currency::Jpy).unwrap_err().problem.code(), "below_minimum");
        assert_eq!(monthly_price("p", 500, Currency::Jpy), Ok(500));
        assert!(monthly_price("p", MAX_MONTHLY_PRICE + 1, Currency::Jpy).is_err());
        assert_eq!(slug("slug", " dr-salon "), Ok("dr-salon".into()));
        assert!(slug("slug", "Dr Salon").is_err());
        assert!(url("link", "https://example.jp/live").is_ok());
        for bad in ["javascript:alert(1)", "https://", "https://a b", "ftp://x"] {
            assert!(url("link", bad).is_err(), "{bad}");
        }
        assert!(in_range("grace_days", 31, 0, 30).is_err());
    }
}
