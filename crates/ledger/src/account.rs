//! Organisations and accounts.

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};
use crate::{AccountId, OrgId};

/// A tenant: a community, chapter or association with its own books.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    pub id: OrgId,
    pub slug: String,
    pub name: String,
}

/// What an account represents. Debits are positive, credits negative;
/// assets and expenses normally carry a debit balance, the rest a credit one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// Money somewhere: Stripe balance, in transit, bank, cash box.
    Asset,
    /// Money owed to others.
    Liability,
    /// Money held for a purpose: a campaign team, the unallocated pool, a salon.
    Fund,
    Income,
    Expense,
}

impl AccountKind {
    pub const ALL: [AccountKind; 5] =
        [AccountKind::Asset, AccountKind::Liability, AccountKind::Fund, AccountKind::Income, AccountKind::Expense];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Asset => "asset",
            AccountKind::Liability => "liability",
            AccountKind::Fund => "fund",
            AccountKind::Income => "income",
            AccountKind::Expense => "expense",
        }
    }

    pub fn parse(s: &str) -> Option<AccountKind> {
        AccountKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// True where a positive (debit) balance is the normal state.
    pub fn is_debit_normal(self) -> bool {
        matches!(self, AccountKind::Asset | AccountKind::Expense)
    }
}

/// An account to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    pub org: OrgId,
    /// Unique within the organisation, stable, used in exports: "1100",
    /// "fund:drive-2026:nurses".
    pub code: String,
    pub name: String,
    pub kind: AccountKind,
    pub currency: Currency,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub org: OrgId,
    pub code: String,
    pub name: String,
    pub kind: AccountKind,
    pub currency: Currency,
}

/// An account with its stored balance (debit-positive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountBalance {
    pub account: Account,
    pub balance: Money,
    pub n_postings: i64,
}

impl AccountBalance {
    /// The balance as people read it: a fund holding ¥3,000 shows 3,000, not
    /// the -3,000 credit it carries.
    pub fn natural(&self) -> Money {
        if self.account.kind.is_debit_normal() {
            self.balance
        } else {
            Money::new(-self.balance.amount(), self.balance.currency())
        }
    }
}
