//! The books: money, the database handle, and a double-entry ledger.
//!
//! This crate owns `organisations` and the `ledger_*` tables, the [`Db`]
//! handle every other crate queries through, and the migrations of the whole
//! schema. An entry that does not balance cannot be built ([`NewEntry::new`]);
//! postings are immutable (database triggers refuse UPDATE and DELETE);
//! corrections are reversing entries; the same idempotency key posts once.
//!
//! It knows nothing of campaigns, patrons, Stripe or HTTP.

pub mod account;
pub mod chart;
pub mod db;
pub mod entry;
pub mod export;
pub mod money;
pub mod reconcile;
pub mod rows;
pub mod store;
mod timestamp;

use serde::{Deserialize, Serialize};

pub use account::{Account, AccountBalance, AccountKind, NewAccount, Organisation};
pub use db::{Backend, Db, DbError, DbOptions, Tx};
pub use entry::{EntryError, EntryHeader, IdempotencyKey, NewEntry, NewPosting, SourceRef};
pub use money::{Currency, Money, MoneyError, ParseMoneyError};
pub use store::{CheckReport, Entry, JournalFilter, Posted};
pub use timestamp::Timestamp;

macro_rules! id_type {
    ($($(#[$m:meta])* $name:ident),*) => {$(
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

id_type!(
    /// An organisation (tenant).
    OrgId,
    /// A ledger account.
    AccountId,
    /// A journal entry.
    EntryId
);

/// The languages everything a person reads exists in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    #[default]
    Ja,
    En,
}

impl Locale {
    pub fn as_str(self) -> &'static str {
        match self {
            Locale::Ja => "ja",
            Locale::En => "en",
        }
    }

    /// "ja", "ja-JP", "en", "en-GB"; anything else is `None`.
    pub fn parse(tag: &str) -> Option<Locale> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "ja" => Some(Locale::Ja),
            "en" => Some(Locale::En),
            _ => None,
        }
    }
}

/// What can go wrong keeping the books.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error("account {0} does not exist")]
    UnknownAccount(AccountId),
    #[error("account {0} belongs to another organisation")]
    ForeignAccount(AccountId),
    #[error("account {account} does not keep {posted}")]
    CurrencyMismatch { account: AccountId, posted: Currency },
    #[error("idempotency key {0:?} was already used for a different entry")]
    IdempotencyConflict(String),
    #[error("entry {0} was already reversed")]
    AlreadyReversed(EntryId),
    #[error("entry {0} does not exist")]
    EntryNotFound(EntryId),
    #[error("an organisation with slug {0:?} already exists")]
    DuplicateOrganisation(String),
    #[error("an account with code {0:?} already exists")]
    DuplicateAccountCode(String),
    #[error("amount out of range")]
    Overflow,
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
