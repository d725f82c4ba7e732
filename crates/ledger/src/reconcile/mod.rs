//! Reconciliation: a payment provider's statement of its balance, line by
//! line, against the ledger, by the provider's own ids.
//!
//! Entries about money at the provider are keyed `stripe:{object}:…` (see
//! the invariants): the object is the charge for its gross, fee and refunds,
//! the balance transaction for a dispute's withdrawal, fee or reinstatement,
//! the payout for money sent to the bank. A statement line belongs to the
//! same object ([`StatementLine::object`]), so matching is summing both sides
//! per object and comparing: what the provider's balance gained or lost
//! through the object (amount less fee), and what the ledger's provider
//! balance accounts did in entries keyed by it.
//!
//! This module decides; it does no I/O. It knows the key scheme, not Stripe.

pub mod bank;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};
use crate::{OrgId, Timestamp};

/// One line of the provider's balance history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    /// The provider's id of the line ("txn_…").
    pub id: String,
    /// "charge", "payment", "refund", "payment_refund", "adjustment",
    /// "payout", …
    pub kind: String,
    /// The object the line is about ("ch_…", "re_…", "dp_…", "po_…").
    pub source: Option<String>,
    /// For a refund, the charge refunded.
    pub charge: Option<String>,
    /// Signed: what the line added to the balance before fees.
    pub amount: Money,
    /// What the provider kept.
    pub fee: Money,
    pub created: Timestamp,
}

impl StatementLine {
    /// The object whose ledger entries account for this line: the charge of
    /// a charge or refund, the line itself for a dispute's adjustments
    /// (which the ledger keys by balance transaction), the source otherwise.
    pub fn object(&self) -> String {
        match self.kind.as_str() {
            "refund" | "payment_refund" => self.charge.clone().or_else(|| self.source.clone()),
            "adjustment" | "dispute" | "dispute_reversal" => Some(self.id.clone()),
            _ => self.source.clone(),
        }
        .unwrap_or_else(|| self.id.clone())
    }

    /// What the line did to the balance: amount less fee.
    pub fn net(&self) -> i64 {
        self.amount.amount() - self.fee.amount()
    }

    pub fn is_payout(&self) -> bool {
        self.kind == "payout"
    }
}

/// The object a ledger idempotency key is about: `stripe:ch_1:gross` → `ch_1`.
pub fn object_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("stripe:")?;
    let object = rest.split(':').next()?;
    (!object.is_empty()).then_some(object)
}

/// The ledger's side for one object: its organisation and what its entries
/// did to the provider balance accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSide {
    pub org: OrgId,
    pub currency: Currency,
    pub amount: i64,
    /// The newest entry's time, to tell whether it falls in the period.
    pub last_at: Timestamp,
}

/// Something that does not tie out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmatched {
    pub object: String,
    pub org: Option<OrgId>,
    pub currency: Currency,
    /// The provider's net for the object (0 if it has no line).
    pub provider: i64,
    /// The ledger's (0 if it has no entry).
    pub ledger: i64,
    /// provider − ledger.
    pub difference: i64,
    /// The lines' kinds, for the reader ("charge+refund").
    pub kinds: String,
}

/// What reconciling found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub lines: usize,
    pub matched_objects: usize,
    /// Objects whose lines the ledger does not account for (or differently).
    pub unmatched_provider: Vec<Unmatched>,
    /// Objects with ledger entries in the period and no provider line.
    pub unmatched_ledger: Vec<Unmatched>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.unmatched_provider.is_empty() && self.unmatched_ledger.is_empty()
    }
}

/// The provider's balance against the ledger's provider balance accounts,
/// in one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceCheck {
    pub provider: Money,
    pub ledger: Money,
}

impl BalanceCheck {
    pub fn ties_out(&self) -> bool {
        self.provider == self.ledger
    }
}

/// A reconciliation as last run for one organisation, kept for the console.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub ran_at: Timestamp,
    /// The provider read: "stripe" or "sandbox".
    pub source: String,
    pub report: Report,
    /// Known only for a run over the whole history, and only shown to an
    /// organisation that is the sole holder of money at the provider (the
    /// provider's balance is the whole account's).
    pub balances: Option<Vec<BalanceCheck>>,
}

/// Compares the provider's lines with the ledger, per object.
///
/// Only objects of `org` count when it is given (a line whose object has no
/// entry belongs to nobody and counts only for the operator, `org = None`).
/// Ledger objects without any line count only if their newest entry is at or
/// after `since` (lines before it were not imported).
pub fn compare(
    lines: &[StatementLine],
    ledger: &BTreeMap<String, LedgerSide>,
    org: Option<OrgId>,
    since: Option<Timestamp>,
) -> Report {
    let mut provider: BTreeMap<String, (Currency, i64, Vec<String>)> = BTreeMap::new();
    for line in lines {
        let entry = provider.entry(line.object()).or_insert((line.amount.currency(), 0, Vec::new()));
        entry.1 += line.net();
        if !entry.2.contains(&line.kind) {
            entry.2.push(line.kind.clone());
        }
    }
    let mut report = Report { lines: lines.len(), ..Report::default() };
    for (object, (currency, net, kinds)) in &provider {
        let side = ledger.get(object);
        let owner = side.map(|s| s.org);
        if org.is_some() && owner != org {
            continue;
        }
        let booked = side.map_or(0, |s| s.amount);
        if booked == *net {
            report.matched_objects += 1;
        } else {
            report.unmatched_provider.push(Unmatched {
                object: object.clone(),
                org: owner,
                currency: *currency,
                provider: *net,
                ledger: booked,
                difference: net - booked,
                kinds: kinds.join("+"),
            });
        }
    }
    for (object, side) in ledger {
        if provider.contains_key(object) || org.is_some_and(|o| o != side.org) || side.amount == 0 {
            continue;
        }
        if since.is_some_and(|s| side.last_at < s) {
            continue;
        }
        report.unmatched_ledger.push(Unmatched {
            object: object.clone(),
            org: Some(side.org),
            currency: side.currency,
            provider: 0,
            ledger: side.amount,
            difference: -side.amount,
            kinds: String::new(),
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, kind: &str, source: &str, charge: Option<&str>, amount: i64, fee: i64) -> StatementLine {
        StatementLine {
            id: id.into(),
            kind: kind.into(),
            source: Some(source.into()),
            charge: charge.map(str::to_owned),
            amount: Money::yen(amount),
            fee: Money::yen(fee),
            created: Timestamp::from_unix_seconds(1_790_000_000).unwrap(),
        }
    }

    fn side(amount: i64) -> LedgerSide {
        LedgerSide {
            org: OrgId(1),
            currency: Currency::Jpy,
            amount,
            last_at: Timestamp::from_unix_seconds(1_790_000_000).unwrap(),
        }
    }

    #[test]
    fn keys_name_their_object() {
        assert_eq!(object_of_key("stripe:ch_1:gross"), Some("ch_1"));
        assert_eq!(object_of_key("stripe:txn_9:fee"), Some("txn_9"));
        assert_eq!(object_of_key("campaign:1:pool-split:1"), None);
    }

    #[test]
    fn a_charge_its_refund_a_dispute_and_a_payout_tie_out_and_a_difference_is_reported() {
        let lines = vec![
            line("txn_1", "charge", "ch_1", None, 10_000, 360),
            line("txn_2", "refund", "re_1", Some("ch_1"), -4000, 0),
            line("txn_3", "adjustment", "dp_1", None, -5000, 1500),
            line("txn_4", "payout", "po_1", None, -2000, 0),
            line("txn_5", "charge", "ch_2", None, 3000, 108),
        ];
        let mut ledger = BTreeMap::new();
        ledger.insert("ch_1".to_owned(), side(10_000 - 360 - 4000));
        ledger.insert("txn_3".to_owned(), side(-6500));
        ledger.insert("po_1".to_owned(), side(-2000));
        // The fee of ch_2 was never posted.
        ledger.insert("ch_2".to_owned(), side(3000));
        // A manual entry keyed like Stripe's with no line.
        ledger.insert("ch_9".to_owned(), side(700));
        let report = compare(&lines, &ledger, None, None);
        assert_eq!(report.matched_objects, 3);
        assert_eq!(report.unmatched_provider.len(), 1);
        let missing = &report.unmatched_provider[0];
        assert_eq!(
            (missing.object.as_str(), missing.provider, missing.ledger, missing.difference),
            ("ch_2", 2892, 3000, -108)
        );
        assert_eq!(report.unmatched_ledger.len(), 1);
        assert_eq!((report.unmatched_ledger[0].object.as_str(), report.unmatched_ledger[0].difference), ("ch_9", -700));
        assert!(!report.is_clean());
        // Another organisation sees none of it; a line nobody booked is the operator's.
        assert!(compare(&lines, &ledger, Some(OrgId(2)), None).is_clean());
        let stray = vec![line("txn_7", "charge", "ch_7", None, 500, 18)];
        assert_eq!(compare(&stray, &BTreeMap::new(), None, None).unmatched_provider[0].org, None);
        assert!(compare(&stray, &BTreeMap::new(), Some(OrgId(1)), None).is_clean());
    }
}
