//! The accounts every organisation has, per currency: where its money
//! physically is. Funds (teams, pools, salons) are opened by their owners.

use crate::account::{AccountKind, NewAccount};
use crate::db::Tx;
use crate::money::Currency;
use crate::{AccountId, LedgerError, OrgId};

/// Money held somewhere: at Stripe, on its way to the bank, in the bank, in
/// a cash box. Kept apart so a payout reconciles to the yen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    StripeBalance,
    InTransit,
    Bank,
    Cash,
}

impl Holding {
    /// The account code: "stripe-balance:JPY".
    pub fn code(self, currency: Currency) -> String {
        let name = match self {
            Holding::StripeBalance => "stripe-balance",
            Holding::InTransit => "in-transit",
            Holding::Bank => "bank",
            Holding::Cash => "cash",
        };
        format!("{name}:{}", currency.code())
    }

    fn name(self, currency: Currency) -> String {
        let name = match self {
            Holding::StripeBalance => "Stripe balance",
            Holding::InTransit => "In transit to the bank",
            Holding::Bank => "Bank",
            Holding::Cash => "Cash",
        };
        format!("{name} ({})", currency.code())
    }

    /// The organisation's account for this holding, opened on first use.
    pub async fn account(self, tx: &mut Tx, org: OrgId, currency: Currency) -> Result<AccountId, LedgerError> {
        let new = NewAccount {
            org,
            code: self.code(currency),
            name: self.name(currency),
            kind: AccountKind::Asset,
            currency,
        };
        Ok(crate::store::ensure_account(tx, &new).await?.id)
    }
}
