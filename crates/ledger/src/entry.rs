//! Journal entries as values: what may be posted, decided without I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};
use crate::{AccountId, OrgId, Timestamp};

/// A key that makes posting an entry idempotent: the same key posted twice
/// writes one entry. Callers derive it from the thing that caused the money
/// movement ("stripe:ch_123:gross", "pledge:42:charge").
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 200;

    pub fn parse(key: impl Into<String>) -> Result<IdempotencyKey, EntryError> {
        let key = key.into();
        if key.trim().is_empty() || key.len() > Self::MAX_LEN || key.chars().any(char::is_control) {
            return Err(EntryError::BadIdempotencyKey);
        }
        Ok(IdempotencyKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an entry came from, for drilling down from the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// A short noun: "stripe", "pledge", "membership", "manual", "reversal".
    pub kind: String,
    /// The id within that kind: a Stripe object id, a pledge id.
    pub reference: String,
}

/// One line of an entry: a signed amount on an account. Positive is a debit,
/// negative a credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPosting {
    pub account: AccountId,
    pub amount: Money,
}

impl NewPosting {
    pub fn debit(account: AccountId, amount: Money) -> NewPosting {
        NewPosting { account, amount }
    }

    /// A credit of `amount` (given positive) to `account`.
    pub fn credit(account: AccountId, amount: Money) -> Result<NewPosting, EntryError> {
        let amount = amount.checked_neg().map_err(|_| EntryError::Overflow)?;
        Ok(NewPosting { account, amount })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("an entry needs at least two postings")]
    TooFewPostings,
    #[error("a posting of zero changes nothing")]
    ZeroPosting,
    #[error("postings in {currency} sum to {sum}, not zero")]
    Unbalanced { currency: Currency, sum: i64 },
    #[error("amounts out of range")]
    Overflow,
    #[error("idempotency keys are 1 to 200 printable characters")]
    BadIdempotencyKey,
    #[error("an entry needs a description")]
    EmptyDescription,
}

/// What a new entry says besides its postings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    pub org: OrgId,
    pub key: IdempotencyKey,
    pub occurred_at: Timestamp,
    pub description: String,
    pub source: Option<SourceRef>,
    /// Who recorded it: a staff email, "stripe", "system".
    pub recorded_by: Option<String>,
}

/// A balanced entry, ready to post. It cannot be built unbalanced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    header: EntryHeader,
    postings: Vec<NewPosting>,
    reverses: Option<crate::EntryId>,
}

impl NewEntry {
    /// Checks that the postings are at least two, none zero, and that they sum
    /// to zero in every currency.
    pub fn new(header: EntryHeader, postings: Vec<NewPosting>) -> Result<NewEntry, EntryError> {
        if header.description.trim().is_empty() {
            return Err(EntryError::EmptyDescription);
        }
        if postings.len() < 2 {
            return Err(EntryError::TooFewPostings);
        }
        let mut sums: BTreeMap<Currency, i64> = BTreeMap::new();
        for posting in &postings {
            if posting.amount.is_zero() {
                return Err(EntryError::ZeroPosting);
            }
            let sum = sums.entry(posting.amount.currency()).or_default();
            *sum = sum.checked_add(posting.amount.amount()).ok_or(EntryError::Overflow)?;
        }
        if let Some((currency, sum)) = sums.into_iter().find(|(_, sum)| *sum != 0) {
            return Err(EntryError::Unbalanced { currency, sum });
        }
        Ok(NewEntry { header, postings, reverses: None })
    }

    /// Moves `amount` from `from` (credited) to `to` (debited).
    pub fn transfer(
        header: EntryHeader,
        to: AccountId,
        from: AccountId,
        amount: Money,
    ) -> Result<NewEntry, EntryError> {
        NewEntry::new(header, vec![NewPosting::debit(to, amount), NewPosting::credit(from, amount)?])
    }

    /// The entry that undoes `original`: every posting negated.
    pub fn reversal(
        header: EntryHeader,
        original: crate::EntryId,
        postings: &[NewPosting],
    ) -> Result<NewEntry, EntryError> {
        let negated =
            postings.iter().map(|p| NewPosting::credit(p.account, p.amount)).collect::<Result<Vec<_>, _>>()?;
        let mut entry = NewEntry::new(header, negated)?;
        entry.reverses = Some(original);
        Ok(entry)
    }

    pub fn header(&self) -> &EntryHeader {
        &self.header
    }

    pub fn postings(&self) -> &[NewPosting] {
        &self.postings
    }

    pub fn reverses(&self) -> Option<crate::EntryId> {
        self.reverses
    }

    /// The net change per account (an entry may touch one account twice),
    /// ordered by account id so that concurrent posters lock balance rows in
    /// the same order and cannot deadlock.
    pub fn net_by_account(&self) -> Vec<(AccountId, Money)> {
        let mut net: BTreeMap<AccountId, Money> = BTreeMap::new();
        for p in &self.postings {
            net.entry(p.account)
                .and_modify(|m| *m = Money::new(m.amount() + p.amount.amount(), m.currency()))
                .or_insert(p.amount);
        }
        net.into_iter().collect()
    }

    /// The postings in a canonical order, for comparing a replay with the
    /// original.
    pub fn canonical_postings(&self) -> Vec<(AccountId, i64, Currency)> {
        canonical(self.postings.iter().copied())
    }
}

pub(crate) fn canonical(postings: impl Iterator<Item = NewPosting>) -> Vec<(AccountId, i64, Currency)> {
    let mut v: Vec<_> = postings.map(|p| (p.account, p.amount.amount(), p.amount.currency())).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> EntryHeader {
        EntryHeader {
            org: OrgId(1),
            key: IdempotencyKey::parse("k").unwrap(),
            occurred_at: Timestamp::now(),
            description: "test".into(),
            source: None,
            recorded_by: None,
        }
    }

    #[test]
    fn an_unbalanced_entry_cannot_be_built() {
        let postings = vec![
            NewPosting::debit(AccountId(1), Money::yen(3000)),
            NewPosting::credit(AccountId(2), Money::yen(2999)).unwrap(),
        ];
        assert_eq!(NewEntry::new(header(), postings), Err(EntryError::Unbalanced { currency: Currency::Jpy, sum: 1 }));
    }

    #[test]
    fn balance_is_checked_per_currency() {
        let postings = vec![
            NewPosting::debit(AccountId(1), Money::yen(100)),
            NewPosting::credit(AccountId(2), Money::new(100, Currency::Usd)).unwrap(),
        ];
        assert!(matches!(NewEntry::new(header(), postings), Err(EntryError::Unbalanced { .. })));
    }

    #[test]
    fn single_zero_and_undescribed_entries_are_refused() {
        let one = vec![NewPosting::debit(AccountId(1), Money::yen(0))];
        assert_eq!(NewEntry::new(header(), one), Err(EntryError::TooFewPostings));
        let zeros =
            vec![NewPosting::debit(AccountId(1), Money::yen(0)), NewPosting::debit(AccountId(2), Money::yen(0))];
        assert_eq!(NewEntry::new(header(), zeros), Err(EntryError::ZeroPosting));
        let mut h = header();
        h.description = "  ".into();
        assert_eq!(NewEntry::transfer(h, AccountId(1), AccountId(2), Money::yen(1)), Err(EntryError::EmptyDescription));
    }

    #[test]
    fn a_reversal_negates_every_posting() {
        let original = NewEntry::transfer(header(), AccountId(1), AccountId(2), Money::yen(500)).unwrap();
        let reversal = NewEntry::reversal(header(), crate::EntryId(7), original.postings()).unwrap();
        assert_eq!(reversal.reverses(), Some(crate::EntryId(7)));
        assert_eq!(reversal.net_by_account(), vec![(AccountId(1), Money::yen(-500)), (AccountId(2), Money::yen(500))]);
    }

    #[test]
    fn idempotency_keys_are_printable_and_bounded() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("a\nb").is_err());
        assert!(IdempotencyKey::parse("x".repeat(201)).is_err());
        assert!(IdempotencyKey::parse("stripe:ch_1:gross").is_ok());
    }

    proptest! {
        #[test]
        fn entries_that_build_always_sum_to_zero(amounts in prop::collection::vec(-1_000_000i64..1_000_000, 1..6)) {
            let mut postings: Vec<NewPosting> = amounts
                .iter()
                .enumerate()
                .map(|(i, a)| NewPosting::debit(AccountId(i as i64), Money::yen(*a)))
                .collect();
            let sum: i64 = amounts.iter().sum();
            postings.push(NewPosting::debit(AccountId(99), Money::yen(-sum)));
            match NewEntry::new(header(), postings) {
                Ok(entry) => {
                    let total: i64 = entry.postings().iter().map(|p| p.amount.amount()).sum();
                    prop_assert_eq!(total, 0);
                }
                Err(e) => prop_assert_eq!(e, EntryError::ZeroPosting),
            }
        }
    }
}
