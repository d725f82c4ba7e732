//! Where reconciliation reads what the payment processor did with the
//! money: the [`BalanceSource`] port, read by `kanpa reconcile`, the API,
//! the console and the scheduled job alike.
//!
//! Two adapters: [`StripeBalance`] lists Stripe's balance transactions,
//! payouts and balance through its API; the sandbox's
//! ([`crate::sandbox::SandboxBalance`]) reads the sandbox processor's own
//! records of its charges, fees, refunds and payouts, so a server on the
//! sandbox gateway (the demo) reconciles the same way. Both answer in the
//! ledger's words ([`StatementLine`], [`Money`]).

use async_trait::async_trait;
use kanpa_ledger::reconcile::StatementLine;
use kanpa_ledger::{Money, Timestamp};

use crate::stripe_api::{self, ListError};

#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error(transparent)]
    Stripe(#[from] ListError),
    #[error("the sandbox's records: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the sandbox's records are not valid: {0}")]
    Corrupt(String),
}

/// A payment processor's statement of its balance.
#[async_trait]
pub trait BalanceSource: Send + Sync {
    /// "stripe" or "sandbox".
    fn name(&self) -> &'static str;

    /// Every balance line created at or after `since` (all without), oldest
    /// first; a refund's or dispute's line names its charge. `progress` is
    /// told the count so far.
    async fn lines(
        &self,
        since: Option<Timestamp>,
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Vec<StatementLine>, BalanceError>;

    /// The lines a payout paid out (not the payout's own line).
    async fn payout_lines(&self, payout: &str) -> Result<Vec<StatementLine>, BalanceError>;

    /// The balance per currency: available plus pending.
    async fn balance(&self) -> Result<Vec<Money>, BalanceError>;
}

/// Stripe's balance, through its API.
pub struct StripeBalance {
    pub client: crate::stripe_api::Client,
}

#[async_trait]
impl BalanceSource for StripeBalance {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn lines(
        &self,
        since: Option<Timestamp>,
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<Vec<StatementLine>, BalanceError> {
        Ok(stripe_api::balance_lines(&self.client, since, progress).await?)
    }

    async fn payout_lines(&self, payout: &str) -> Result<Vec<StatementLine>, BalanceError> {
        Ok(stripe_api::payout_lines(&self.client, payout).await?)
    }

    async fn balance(&self) -> Result<Vec<Money>, BalanceError> {
        Ok(stripe_api::balance(&self.client).await?)
    }
}
