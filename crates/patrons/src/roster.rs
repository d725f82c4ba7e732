//! The organiser's view of a salon: every membership with its standing,
//! counts by status, monthly recurring revenue and churn per month.
//!
//! Plain functions over memberships read once; nothing here writes.

use std::collections::BTreeMap;

use kanpa_ledger::{Db, Timestamp};
use serde::Serialize;

use crate::error::PatronError;
use crate::model::{Membership, MembershipStatus, Tier};
use crate::store;

/// One patron as the roster lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RosterRow {
    pub membership: String,
    pub email: String,
    pub tier: String,
    pub status: MembershipStatus,
    /// Per month, in minor units.
    pub amount: i64,
    pub since: Option<Timestamp>,
    pub last_payment_at: Option<Timestamp>,
    pub lifetime_paid: i64,
}

/// One calendar month (Japan time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MonthStats {
    /// "2026-04".
    pub month: String,
    /// Paying members at the start of the month.
    pub members_at_start: i64,
    pub joined: i64,
    pub ended: i64,
    /// `ended / members_at_start`, in basis points (1 % = 100); 0 when
    /// the month started with no members.
    pub churn_bp: i64,
    /// What the members at the end of the month pay per month.
    pub mrr_at_end: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Roster {
    pub rows: Vec<RosterRow>,
    pub counts: BTreeMap<&'static str, i64>,
    /// What the members paying now pay per month (active, canceling and
    /// past due; not paused, incomplete or ended).
    pub mrr: i64,
    pub months: Vec<MonthStats>,
}

/// Whether a membership pays toward this month's revenue.
fn is_paying(status: MembershipStatus) -> bool {
    matches!(status, MembershipStatus::Active | MembershipStatus::Canceling | MembershipStatus::PastDue)
}

/// A member at the instant `t`: started before it and not ended before it.
/// Someone starting exactly at a month's start joins in that month; someone
/// ending exactly then was a member at its start and leaves in it.
fn member_at(m: &Membership, t: Timestamp) -> bool {
    m.since.is_some_and(|since| since < t) && m.ended_at.is_none_or(|end| end >= t)
}

const JST: time::UtcOffset = match time::UtcOffset::from_hms(9, 0, 0) {
    Ok(offset) => offset,
    Err(_) => time::UtcOffset::UTC,
};

fn month_start(year: i32, month: time::Month) -> Timestamp {
    let date = time::Date::from_calendar_date(year, month, 1).unwrap_or(time::Date::MIN);
    let start = date.midnight().assume_offset(JST);
    Timestamp::from_unix_micros((start.unix_timestamp_nanos() / 1_000) as i64).unwrap_or_else(Timestamp::now)
}

/// The roster, counts, MRR, and the last `months` calendar months up to the
/// one containing `now`, oldest first.
pub fn summarise(memberships: &[Membership], tiers: &[Tier], now: Timestamp, months: usize) -> Roster {
    let tier_name = |id: i64| tiers.iter().find(|t| t.id == id).map(|t| t.slug.clone()).unwrap_or_default();
    let rows = memberships
        .iter()
        .filter(|m| m.status != MembershipStatus::Incomplete || m.since.is_some())
        .map(|m| RosterRow {
            membership: m.public_id.clone(),
            email: m.email.clone(),
            tier: tier_name(m.tier_id),
            status: m.status,
            amount: m.amount,
            since: m.since,
            last_payment_at: m.last_payment_at,
            lifetime_paid: m.lifetime_paid,
        })
        .collect::<Vec<_>>();
    let mut counts: BTreeMap<&'static str, i64> = MembershipStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for m in memberships {
        *counts.entry(m.status.as_str()).or_default() += 1;
    }
    let mrr = memberships.iter().filter(|m| is_paying(m.status)).map(|m| m.amount).sum();

    let local = now.as_offset().to_offset(JST);
    let (mut year, mut month) = (local.year(), local.month());
    let mut starts = Vec::with_capacity(months);
    for _ in 0..months {
        starts.push((year, month));
        if month == time::Month::January {
            year -= 1;
        }
        month = month.previous();
    }
    starts.reverse();
    let stats = starts
        .into_iter()
        .map(|(year, month)| {
            let start = month_start(year, month);
            let (next_year, next_month) =
                if month == time::Month::December { (year + 1, time::Month::January) } else { (year, month.next()) };
            let end = month_start(next_year, next_month);
            let within = |t: Option<Timestamp>| t.is_some_and(|t| start <= t && t < end);
            let members_at_start = memberships.iter().filter(|m| member_at(m, start)).count() as i64;
            let joined = memberships.iter().filter(|m| within(m.since)).count() as i64;
            let ended = memberships.iter().filter(|m| m.since.is_some() && within(m.ended_at)).count() as i64;
            let at_end = end.min(now);
            let mrr_at_end = memberships.iter().filter(|m| member_at(m, at_end)).map(|m| m.amount).sum();
            MonthStats {
                month: format!("{year:04}-{:02}", u8::from(month)),
                members_at_start,
                joined,
                ended,
                churn_bp: if members_at_start == 0 { 0 } else { ended * 10_000 / members_at_start },
                mrr_at_end,
            }
        })
        .collect();
    Roster { rows, counts, mrr, months: stats }
}

pub async fn roster(db: &Db, salon_id: i64, now: Timestamp) -> Result<Roster, PatronError> {
    let memberships = store::memberships_of_salon(db, salon_id).await?;
    let tiers = store::tiers(db, salon_id).await?;
    Ok(summarise(&memberships, &tiers, now, 12))
}

/// One CSV field: quoted, quotes doubled, and a leading `= + - @`, tab or
/// CR (which a spreadsheet would run as a formula) neutralised the ledger's
/// way (`kanpa_ledger::export::cells`), so reading strips it back.
fn field(value: &str) -> String {
    let mut cell = String::new();
    kanpa_ledger::export::cells::push_text(&mut cell, value);
    cell
}

fn date(t: Option<Timestamp>) -> String {
    t.map(|t| {
        let local = t.as_offset().to_offset(JST);
        format!("{:04}-{:02}-{:02}", local.year(), u8::from(local.month()), local.day())
    })
    .unwrap_or_default()
}

/// The roster as CSV (UTF-8, CRLF lines), one patron per line.
pub fn csv(roster: &Roster) -> String {
    let mut out = String::from("membership,email,tier,status,monthly_amount,since,last_payment,lifetime_paid\r\n");
    for r in &roster.rows {
        let line = [
            field(&r.membership),
            field(&r.email),
            field(&r.tier),
            field(r.status.as_str()),
            r.amount.to_string(),
            field(&date(r.since)),
            field(&date(r.last_payment_at)),
            r.lifetime_paid.to_string(),
        ];
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use kanpa_ledger::{Currency, Locale};

    use super::*;

    fn at(s: &str) -> Timestamp {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        Timestamp::from_unix_seconds(t.unix_timestamp()).unwrap()
    }

    fn member(id: &str, amount: i64, status: MembershipStatus, since: &str, ended: Option<&str>) -> Membership {
        Membership {
            id: 1,
            public_id: id.into(),
            salon_id: 1,
            tier_id: 1,
            next_tier_id: None,
            email: format!("{id}@example.jp"),
            locale: Locale::Ja,
            amount,
            currency: Currency::Jpy,
            stripe_price_id: None,
            stripe_customer_id: None,
            stripe_subscription_id: None,
            status,
            current_period_end: None,
            cancel_at: None,
            paused_until: None,
            past_due_since: None,
            since: Some(at(since)),
            last_payment_at: None,
            lifetime_paid: 0,
            ended_at: ended.map(at),
        }
    }

    #[test]
    fn mrr_and_churn_per_month() {
        use MembershipStatus as S;
        let members = [
            member("a", 500, S::Active, "2026-01-10T10:00:00+09:00", None),
            member("b", 1500, S::Ended, "2026-01-20T10:00:00+09:00", Some("2026-03-05T10:00:00+09:00")),
            member("c", 5000, S::Canceling, "2026-02-01T00:00:00+09:00", None),
            member("d", 1500, S::Paused, "2026-03-15T10:00:00+09:00", None),
            member("e", 500, S::PastDue, "2026-03-20T10:00:00+09:00", None),
        ];
        let roster = summarise(&members, &[], at("2026-03-25T12:00:00+09:00"), 3);
        assert_eq!(roster.mrr, 500 + 5000 + 500);
        assert_eq!(roster.counts["active"], 1);
        assert_eq!(roster.counts["ended"], 1);
        assert_eq!(roster.counts["incomplete"], 0);
        let months: Vec<(&str, i64, i64, i64, i64)> = roster
            .months
            .iter()
            .map(|m| (m.month.as_str(), m.members_at_start, m.joined, m.ended, m.churn_bp))
            .collect();
        // February starts with a and b; c joins at midnight on the 1st (Japan time).
        // March starts with a, b, c; b leaves: churn 1/3.
        assert_eq!(months, [("2026-01", 0, 2, 0, 0), ("2026-02", 2, 1, 0, 0), ("2026-03", 3, 2, 1, 3333)]);
        assert_eq!(roster.months[1].mrr_at_end, 500 + 1500 + 5000);
        assert_eq!(roster.months[2].mrr_at_end, 500 + 5000 + 1500 + 500);
    }

    #[test]
    fn the_csv_quotes_and_defuses_formulas() {
        let mut m = member("x", 500, MembershipStatus::Active, "2026-01-10T10:00:00+09:00", None);
        m.email = "=HYPERLINK(\"evil\")@example.jp".into();
        let text = csv(&summarise(&[m], &[], at("2026-02-01T00:00:00Z"), 1));
        let line = text.lines().nth(1).unwrap();
        assert!(line.starts_with("\"x\",\"'=HYPERLINK(\"\"evil\"\")@example.jp\""), "{line}");
        assert!(line.contains(",500,\"2026-01-10\",\"\",0"), "{line}");
    }
}
