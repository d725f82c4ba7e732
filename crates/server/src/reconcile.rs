//! Reconciling the books with the payment processor: a flow over a
//! [`BalanceSource`] (what Stripe's balance did, or the sandbox's) and the
//! ledger (what kanpa booked), run by `kanpa reconcile`, the API, the
//! console and the scheduled job.
//!
//! 1. Import every balance transaction since the date (all of them without).
//! 2. Post what the ledger lacks that Stripe's data settles: a charge's fee
//!    (same key and postings as the live handler, so a late webhook writes
//!    nothing), and each payout, per organisation, from the Stripe balance to
//!    in transit (`stripe:{payout}:in-transit:{org}`).
//! 3. Compare per Stripe object (`kanpa_ledger::reconcile`) and, over the
//!    whole history, the Stripe balance accounts with Stripe's balance.
//! 4. Keep each organisation's report for the console
//!    (`store::save_reconciliation_report`).

use std::collections::BTreeMap;

use anyhow::Context;
use kanpa_ledger::chart::Holding;
use kanpa_ledger::reconcile::{self, BalanceCheck, LastRun, StatementLine};
use kanpa_ledger::{EntryHeader, IdempotencyKey, Money, NewEntry, NewPosting, OrgId, Timestamp, store};
use kanpa_payments::balance::{BalanceSource, StripeBalance};
use kanpa_payments::sandbox::SandboxBalance;

use crate::config::{Config, GatewayKind};

/// The balance source of the configured gateway: Stripe's API, or the
/// sandbox processor's own records.
pub fn source(config: &Config, db: &kanpa_ledger::Db) -> anyhow::Result<Box<dyn BalanceSource>> {
    Ok(match config.payments.gateway {
        GatewayKind::Stripe => {
            let client = kanpa_payments::stripe_api::client(config.stripe.secret_key.expose(), &config.stripe.api_base)
                .context("could not build the Stripe client (stripe.secret_key, stripe.api_base)")?;
            Box::new(StripeBalance { client })
        }
        GatewayKind::Sandbox => Box::new(SandboxBalance { db: db.clone() }),
    })
}

/// What a run did and found.
#[derive(Debug)]
pub struct Outcome {
    pub report: reconcile::Report,
    pub fees_posted: usize,
    /// Entries of dispute balance transactions posted from Stripe's data.
    pub disputes_posted: usize,
    pub payouts_posted: usize,
    /// Over the whole history (no `since`) of every organisation, or of the
    /// one asked for when no other holds money at the provider: the
    /// provider's balance and the sum of the Stripe balance accounts, per
    /// currency.
    pub balances: Option<Vec<(Money, Money)>>,
    /// "stripe" or "sandbox".
    pub source: &'static str,
}

fn key(text: String) -> anyhow::Result<IdempotencyKey> {
    IdempotencyKey::parse(text).context("a reconciliation key")
}

/// Posts a charge's missing fee from its gross entry: out of the same fund,
/// out of the same Stripe balance account.
async fn post_missing_fee(db: &kanpa_ledger::Db, line: &StatementLine) -> anyhow::Result<bool> {
    let charge = line.object();
    if store::entry_by_key(db, &format!("stripe:{charge}:fee")).await?.is_some() {
        return Ok(false);
    }
    let Some(gross) = store::entry_by_key(db, &format!("stripe:{charge}:gross")).await? else {
        return Ok(false);
    };
    let (Some(stripe), Some(fund)) = (
        gross.postings.iter().find(|p| p.amount.amount() > 0).map(|p| p.account),
        gross.postings.iter().find(|p| p.amount.amount() < 0).map(|p| p.account),
    ) else {
        return Ok(false);
    };
    let header = EntryHeader {
        org: gross.org,
        key: key(format!("stripe:{charge}:fee"))?,
        occurred_at: line.created,
        description: "Stripe fee".to_owned(),
        source: gross.source.clone(),
        recorded_by: Some("reconciliation".to_owned()),
    };
    let entry = NewEntry::new(header, vec![NewPosting::debit(fund, line.fee), NewPosting::credit(stripe, line.fee)?])?;
    Ok(matches!(store::post_entry(db, &entry).await?, store::Posted::Created(_)))
}

/// Posts a dispute's balance transaction the ledger lacks, as the live
/// handler would: the withdrawn (or reinstated) amount and the dispute fee,
/// keyed by the transaction, between the disputed charge's fund and the
/// Stripe balance.
async fn post_missing_dispute(db: &kanpa_ledger::Db, line: &StatementLine) -> anyhow::Result<usize> {
    let Some(charge) = &line.charge else { return Ok(0) };
    let Some(gross) = store::entry_by_key(db, &format!("stripe:{charge}:gross")).await? else {
        return Ok(0);
    };
    let (Some(stripe), Some(fund)) = (
        gross.postings.iter().find(|p| p.amount.amount() > 0).map(|p| p.account),
        gross.postings.iter().find(|p| p.amount.amount() < 0).map(|p| p.account),
    ) else {
        return Ok(0);
    };
    let mut posted = 0;
    for (suffix, delta, what) in [
        ("amount", line.amount.amount(), "Dispute: disputed amount"),
        ("fee", -line.fee.amount(), "Dispute: Stripe dispute fee"),
    ] {
        if delta == 0 {
            continue;
        }
        let header = EntryHeader {
            org: gross.org,
            key: key(format!("stripe:{}:{suffix}", line.id))?,
            occurred_at: line.created,
            description: what.to_owned(),
            source: gross.source.clone(),
            recorded_by: Some("reconciliation".to_owned()),
        };
        let money = Money::new(delta.abs(), line.amount.currency());
        let entry = if delta > 0 {
            NewEntry::transfer(header, stripe, fund, money)?
        } else {
            NewEntry::transfer(header, fund, stripe, money)?
        };
        if matches!(store::post_entry(db, &entry).await?, store::Posted::Created(_)) {
            posted += 1;
        }
    }
    Ok(posted)
}

/// Posts a payout per organisation whose money it carried: what its lines
/// added to that organisation's Stripe balance moves to in transit.
async fn post_payout(
    db: &kanpa_ledger::Db,
    source: &dyn BalanceSource,
    line: &StatementLine,
    owners: &BTreeMap<String, reconcile::LedgerSide>,
) -> anyhow::Result<usize> {
    let payout = line.object();
    let paid = source.payout_lines(&payout).await?;
    let mut per_org: BTreeMap<OrgId, i64> = BTreeMap::new();
    for l in &paid {
        // A dispute booked only now is known by its charge.
        let owner = owners.get(&l.object()).or_else(|| l.charge.as_ref().and_then(|c| owners.get(c)));
        if let Some(owner) = owner {
            *per_org.entry(owner.org).or_default() += l.net();
        }
    }
    let currency = line.amount.currency();
    let mut posted = 0;
    for (org, amount) in per_org {
        if amount <= 0 {
            continue;
        }
        let mut tx = db.begin().await?;
        let stripe = Holding::StripeBalance.account(&mut tx, org, currency).await?;
        let in_transit = Holding::InTransit.account(&mut tx, org, currency).await?;
        let header = EntryHeader {
            org,
            key: key(format!("stripe:{payout}:in-transit:{org}"))?,
            occurred_at: line.created,
            description: format!("Stripe payout {payout} to the bank"),
            source: Some(kanpa_ledger::SourceRef { kind: "stripe".into(), reference: payout.clone() }),
            recorded_by: Some("reconciliation".to_owned()),
        };
        let entry = NewEntry::transfer(header, in_transit, stripe, Money::new(amount, currency))?;
        if matches!(store::post(&mut tx, &entry).await?, store::Posted::Created(_)) {
            posted += 1;
        }
        tx.commit().await?;
    }
    Ok(posted)
}

/// Runs the reconciliation for one organisation (or all), telling
/// `progress` how far the import is, and keeps each organisation's report.
pub async fn run(
    db: &kanpa_ledger::Db,
    source: &dyn BalanceSource,
    org: Option<OrgId>,
    since: Option<Timestamp>,
    progress: &mut (dyn FnMut(String) + Send),
) -> anyhow::Result<Outcome> {
    let ran_at = Timestamp::now();
    let lines = source
        .lines(since, &mut |n| progress(format!("{n} balance transactions imported")))
        .await
        .with_context(|| format!("listing the {} balance transactions", source.name()))?;
    let owners = store::provider_objects(db, None).await?;
    let in_scope =
        |line: &StatementLine| org.is_none_or(|o| owners.get(&line.object()).is_some_and(|side| side.org == o));
    let mut fees_posted = 0;
    let mut disputes_posted = 0;
    let mut payouts_posted = 0;
    for (i, line) in lines.iter().enumerate() {
        if matches!(line.kind.as_str(), "charge" | "payment") && line.fee.amount() > 0 && in_scope(line) {
            fees_posted += usize::from(post_missing_fee(db, line).await?);
        }
        if line.source.as_deref().is_some_and(|s| s.starts_with("dp_"))
            && org.is_none_or(|o| line.charge.as_ref().and_then(|c| owners.get(c)).is_some_and(|s| s.org == o))
        {
            disputes_posted += post_missing_dispute(db, line).await?;
        }
        if line.is_payout() {
            payouts_posted += post_payout(db, source, line, &owners).await?;
        }
        if (i + 1) % 100 == 0 {
            progress(format!("{} of {} lines checked", i + 1, lines.len()));
        }
    }
    let ledger = store::provider_objects(db, None).await?;
    let report = reconcile::compare(&lines, &ledger, org, since);

    // The provider's balance is the whole account's: compared over the whole
    // history, for every organisation, or for one when no other holds money
    // at the provider (so nobody learns of another's money).
    let mut booked: BTreeMap<OrgId, BTreeMap<kanpa_ledger::Currency, i64>> = BTreeMap::new();
    for o in store::organisations(db).await? {
        for b in store::balances(db, o.id).await? {
            if b.account.code.starts_with("stripe-balance:") && b.balance.amount() != 0 {
                *booked.entry(o.id).or_default().entry(b.account.currency).or_default() += b.balance.amount();
            }
        }
    }
    let sole_holder = |o: OrgId| booked.keys().all(|holder| *holder == o);
    let balances = if since.is_none() && org.is_none_or(sole_holder) {
        let provider = source.balance().await.with_context(|| format!("reading the {} balance", source.name()))?;
        let mut totals: BTreeMap<kanpa_ledger::Currency, i64> = BTreeMap::new();
        for per_currency in booked.values() {
            for (currency, amount) in per_currency {
                *totals.entry(*currency).or_default() += amount;
            }
        }
        let mut checks: Vec<(Money, Money)> = provider
            .iter()
            .map(|s| (*s, Money::new(totals.get(&s.currency()).copied().unwrap_or(0), s.currency())))
            .collect();
        // Money booked in a currency the provider does not report.
        for (currency, amount) in totals {
            if !provider.iter().any(|s| s.currency() == currency) {
                checks.push((Money::zero(currency), Money::new(amount, currency)));
            }
        }
        Some(checks)
    } else {
        None
    };

    let orgs = match org {
        Some(org) => vec![org],
        None => store::organisations(db).await?.into_iter().map(|o| o.id).collect(),
    };
    for o in orgs {
        let run = LastRun {
            ran_at,
            source: source.name().to_owned(),
            report: if org.is_some() { report.clone() } else { reconcile::compare(&lines, &ledger, Some(o), since) },
            balances: balances.as_ref().filter(|_| sole_holder(o)).map(|checks| {
                checks.iter().map(|(provider, ledger)| BalanceCheck { provider: *provider, ledger: *ledger }).collect()
            }),
        };
        store::save_reconciliation_report(db, o, &run).await?;
    }
    Ok(Outcome { report, fees_posted, disputes_posted, payouts_posted, balances, source: source.name() })
}

/// Why a payout cannot be confirmed as arrived.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("no payout {0:?} is in transit for this organisation (run kanpa reconcile first)")]
    NotInTransit(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Moves a payout from in transit to the bank (`stripe:{payout}:banked:{org}`),
/// on `date` (today without). Confirming twice writes nothing.
pub async fn confirm_payout(
    db: &kanpa_ledger::Db,
    org: OrgId,
    payout: &str,
    date: Option<time::Date>,
) -> Result<bool, ConfirmError> {
    let in_transit = store::entry_by_key(db, &format!("stripe:{payout}:in-transit:{org}"))
        .await
        .map_err(anyhow::Error::from)?
        .filter(|e| e.org == org)
        .ok_or_else(|| ConfirmError::NotInTransit(payout.to_owned()))?;
    let Some(moved) = in_transit.postings.iter().find(|p| p.amount.amount() > 0) else {
        return Err(ConfirmError::NotInTransit(payout.to_owned()));
    };
    let occurred_at = match date {
        Some(d) => Timestamp::from(d.midnight().assume_offset(kanpa_ledger::export::BOOKS_OFFSET)),
        None => Timestamp::now(),
    };
    let mut tx = db.begin().await.map_err(anyhow::Error::from)?;
    let bank = Holding::Bank.account(&mut tx, org, moved.amount.currency()).await.map_err(anyhow::Error::from)?;
    let header = EntryHeader {
        org,
        key: key(format!("stripe:{payout}:banked:{org}"))?,
        occurred_at,
        description: format!("Stripe payout {payout} arrived in the bank"),
        source: Some(kanpa_ledger::SourceRef { kind: "stripe".into(), reference: payout.to_owned() }),
        recorded_by: Some("reconciliation".to_owned()),
    };
    let entry = NewEntry::transfer(header, bank, moved.account, moved.amount).map_err(anyhow::Error::from)?;
    let posted = store::post(&mut tx, &entry).await.map_err(anyhow::Error::from)?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(matches!(posted, store::Posted::Created(_)))
}

/// What a bank statement confirmed, and the deposits nothing explains.
#[derive(Debug, Default)]
pub struct StatementOutcome {
    pub confirmed: Vec<(kanpa_ledger::reconcile::bank::BankLine, String)>,
    pub unexplained: Vec<kanpa_ledger::reconcile::bank::BankLine>,
}

/// Confirms each payout in transit whose deposit the statement shows.
pub async fn import_bank_statement(
    db: &kanpa_ledger::Db,
    org: OrgId,
    lines: Vec<kanpa_ledger::reconcile::bank::BankLine>,
) -> anyhow::Result<StatementOutcome> {
    use kanpa_ledger::reconcile::bank::{InTransit, match_deposits};
    let pending: Vec<InTransit> = store::payouts_in_transit(db, org)
        .await?
        .into_iter()
        .map(|(payout, amount, at)| InTransit {
            payout,
            amount: amount.amount(),
            date: at.as_offset().to_offset(kanpa_ledger::export::BOOKS_OFFSET).date(),
        })
        .collect();
    let pairs = match_deposits(&lines, &pending);
    let mut outcome = StatementOutcome::default();
    let mut explained = vec![false; lines.len()];
    for (li, pi) in pairs {
        let payout = pending[pi].payout.clone();
        if confirm_payout(db, org, &payout, Some(lines[li].date)).await.map_err(anyhow::Error::from)? {
            outcome.confirmed.push((lines[li].clone(), payout));
        }
        explained[li] = true;
    }
    outcome.unexplained =
        lines.into_iter().zip(explained).filter(|(l, seen)| l.amount > 0 && !seen).map(|(l, _)| l).collect();
    Ok(outcome)
}

/// The job kind of the scheduled reconciliation.
pub const JOB_KIND: &str = "books.reconcile";

/// How far back each scheduled run looks: a month and its stragglers.
const SCHEDULED_WINDOW: time::Duration = time::Duration::days(35);

/// The scheduled reconciliation: every organisation, the last 35 days; it
/// posts what Stripe settles, records how many objects are unmatched (and
/// warns), and queues the next run.
pub struct ReconcileJob {
    pub source: Box<dyn BalanceSource>,
    pub every: std::time::Duration,
}

#[async_trait::async_trait]
impl kanpa_messaging::jobs::JobHandler for ReconcileJob {
    fn retry_policy(&self) -> kanpa_messaging::jobs::RetryPolicy {
        kanpa_messaging::jobs::RetryPolicy {
            base: std::time::Duration::from_secs(60),
            cap: std::time::Duration::from_secs(3600),
            max_attempts: 10,
        }
    }

    async fn run(
        &self,
        db: &kanpa_ledger::Db,
        _job: &kanpa_messaging::jobs::ClaimedJob,
    ) -> Result<kanpa_ledger::Tx, kanpa_messaging::jobs::JobFailure> {
        let now = Timestamp::now();
        let outcome =
            run(db, self.source.as_ref(), None, Some(now.saturating_add(-SCHEDULED_WINDOW)), &mut |_| {}).await?;
        let r = &outcome.report;
        let unmatched = (r.unmatched_provider.len() + r.unmatched_ledger.len()) as i64;
        if unmatched > 0 {
            tracing::warn!(unmatched, "reconciliation with Stripe found objects that do not tie out");
        }
        metrics::gauge!("kanpa_reconciliation_unmatched").set(unmatched as f64);
        let next = now.saturating_add(time::Duration::try_from(self.every).unwrap_or(time::Duration::DAY));
        let mut tx = db.begin().await?;
        store::record_reconciliation(&mut tx, now, next, unmatched).await?;
        let job = kanpa_messaging::jobs::NewJob {
            kind: JOB_KIND,
            payload: serde_json::json!({}),
            run_at: next,
            max_attempts: 10,
        };
        kanpa_messaging::jobs::enqueue(&mut tx, &job).await?;
        Ok(tx)
    }

    async fn on_dead(
        &self,
        tx: &mut kanpa_ledger::Tx,
        _job: &kanpa_messaging::jobs::ClaimedJob,
        _error: &str,
    ) -> Result<(), sqlx::Error> {
        match store::disarm_reconciliation(tx).await {
            Ok(()) => Ok(()),
            Err(kanpa_ledger::LedgerError::Database(e)) => Err(e),
            Err(e) => Err(sqlx::Error::Protocol(e.to_string())),
        }
    }
}

/// Arms the scheduled reconciliation at start, once across processes: the
/// first run is now.
pub async fn arm(db: &kanpa_ledger::Db) -> anyhow::Result<bool> {
    let now = Timestamp::now();
    let mut tx = db.begin().await?;
    let armed = store::arm_reconciliation(&mut tx, now).await?;
    if armed {
        let job = kanpa_messaging::jobs::NewJob {
            kind: JOB_KIND,
            payload: serde_json::json!({}),
            run_at: now,
            max_attempts: 10,
        };
        kanpa_messaging::jobs::enqueue(&mut tx, &job).await?;
    }
    tx.commit().await?;
    Ok(armed)
}
