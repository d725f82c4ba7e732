//! The deadline.
//!
//! All-or-nothing, goal met: every committed pledge is charged off-session,
//! at a bounded request rate. Each attempt's idempotency key is stored
//! before Stripe is called, so a crash (or two workers racing) resends the
//! same key and Stripe answers with the first result: nothing is charged
//! twice. A declined or authentication-required charge gets an email with a
//! link to pay on-session, retries on days 1, 3 and 5, and is dropped after
//! 7 days. Goal missed: nothing is charged and every supporter is told.
//! Keep-it-all: the money is already in; the campaign closes.
//!
//! In every case the pool is shared among the teams by the campaign's rule
//! and the organiser gets a report.
//!
//! Settlement runs as `campaign.settle` jobs, each doing at most a slice of
//! the work (well inside a job lease) and queueing the next slice, or all
//! at once from `kanpa campaign settle`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use kanpa_ledger::store as ledger;
use kanpa_ledger::{Db, Locale, Timestamp, Tx, on_db, on_tx};
use kanpa_messaging::email::{EmailAddress, EmailTemplate};
use kanpa_messaging::jobs::{self, ClaimedJob, JobFailure, JobHandler, NewJob, RetryPolicy};
use kanpa_messaging::outbox::{self, NewEmail};
use kanpa_payments::{ChargeOutcome, OffSessionCharge, PaymentGateway, SavedCard};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::error::CampaignError;
use crate::events::record_collection;
use crate::model::{Campaign, CampaignStatus, FundingModel, Pledge, PledgeStatus};
use crate::pledge::{change_status, email_supporter};
use crate::{Site, local_time, money_text, pool, store};

pub const SETTLE_JOB: &str = "campaign.settle";
pub const RETRY_JOB: &str = "pledge.retry_charge";
pub const DROP_JOB: &str = "pledge.drop";
/// Charges one pledge committed after its drive had already settled.
pub const CHARGE_JOB: &str = "pledge.charge_late";

/// Days after the first failure on which the charge is tried again.
pub const RETRY_DAYS: [i64; 3] = [1, 3, 5];
/// Days after the first failure when an unpaid pledge is dropped.
pub const DROP_AFTER_DAYS: i64 = 7;
/// Stripe allows about 100 requests per second in live mode.
pub const MAX_RATE: u32 = 90;

/// Queues the settlement of a campaign at its deadline.
pub(crate) async fn schedule(tx: &mut Tx, campaign: &Campaign) -> Result<(), CampaignError> {
    let job = NewJob {
        kind: SETTLE_JOB,
        payload: json!({ "campaign": campaign.id }),
        run_at: campaign.deadline,
        max_attempts: 50,
    };
    jobs::enqueue(tx, &job).await?;
    Ok(())
}

/// Spaces requests evenly at a fixed rate, shared by concurrent callers.
struct Pace {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pace {
    fn new(per_second: u32) -> Pace {
        let per_second = per_second.clamp(1, MAX_RATE);
        Pace { interval: Duration::from_secs_f64(1.0 / f64::from(per_second)), next: Mutex::new(Instant::now()) }
    }

    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// Where a campaign's settlement stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub campaign: String,
    pub status: CampaignStatus,
    /// "charging", "succeeded", "failed" or "closed"; none before the deadline.
    pub outcome: Option<String>,
    pub finished: bool,
    pub currency: kanpa_ledger::Currency,
    pub goal: i64,
    pub collected: i64,
    pub collected_count: i64,
    pub committed: i64,
    pub committed_count: i64,
    pub failed: i64,
    pub failed_count: i64,
    pub dropped: i64,
    pub dropped_count: i64,
    pub teams: Vec<TeamReport>,
    /// The unallocated pool's fund balance (zero once shared).
    pub pool_balance: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TeamReport {
    pub slug: String,
    pub name: String,
    pub goal: i64,
    pub collected: i64,
    /// The team's fund: its collections net of fees, plus its pool share.
    pub fund_balance: i64,
}

/// What one slice of settlement did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More to do: run again.
    Continue,
    Finished,
}

/// Charges, retries, drops and reports.
pub struct Settler {
    pub db: Db,
    pub gateway: Arc<dyn PaymentGateway>,
    pub site: Site,
    /// Off-session charges per second (at most [`MAX_RATE`]).
    pub rate: u32,
}

impl Settler {
    /// Settles a campaign to the end, however long it takes. `force`
    /// settles before the deadline (an operator's decision).
    pub async fn settle(&self, campaign_id: i64, force: bool) -> Result<Report, CampaignError> {
        while self.settle_slice(campaign_id, force, None).await? == Progress::Continue {}
        report(&self.db, campaign_id).await
    }

    /// Does settlement work for at most `budget` (or to the end).
    pub async fn settle_slice(
        &self,
        campaign_id: i64,
        force: bool,
        budget: Option<Duration>,
    ) -> Result<Progress, CampaignError> {
        let started = Instant::now();
        let campaign = store::campaign_by_id(&self.db, campaign_id).await?;
        let outcome = match campaign.status {
            CampaignStatus::Live => {
                if !force && Timestamp::now() < campaign.deadline {
                    return Err(CampaignError::WrongState { status: campaign.status });
                }
                self.open(&campaign).await?
            }
            CampaignStatus::Settling => settlement_outcome(&self.db, campaign_id).await?,
            // A cancelled drive has nothing to settle: its job at the
            // deadline finds it so and ends.
            CampaignStatus::Succeeded | CampaignStatus::Failed | CampaignStatus::Cancelled => {
                return Ok(Progress::Finished);
            }
            CampaignStatus::Draft => {
                return Err(CampaignError::WrongState { status: campaign.status });
            }
        };
        let pledges = committed_pledges(&self.db, campaign_id, 1000).await?;
        match outcome.as_str() {
            "failed" => {
                for pledge in &pledges {
                    let mut tx = self.db.begin().await?;
                    if change_status(&mut tx, pledge, PledgeStatus::Void).await? {
                        let template = EmailTemplate::CampaignMissed {
                            campaign: campaign.title(pledge.locale).to_owned(),
                            goal: money_text(campaign.money(campaign.goal), pledge.locale),
                            raised: money_text(campaign.money(campaign.raised()), pledge.locale),
                            manage_link: self.site.manage_link(),
                        };
                        email_supporter(&mut tx, &self.site, pledge, "campaign-missed", template).await?;
                    }
                    tx.commit().await?;
                }
            }
            "charging" => {
                let pace = Pace::new(self.rate);
                let concurrency = (self.rate as usize / 3).clamp(4, 32);
                let (pace, campaign) = (&pace, &campaign);
                let charges = pledges.into_iter().map(move |pledge| async move {
                    if budget.is_some_and(|b| started.elapsed() >= b) {
                        return Ok(());
                    }
                    pace.wait().await;
                    self.charge(campaign, &pledge).await.map(|_| ())
                });
                let results: Vec<Result<(), CampaignError>> =
                    futures::stream::iter(charges).buffer_unordered(concurrency).collect().await;
                results.into_iter().collect::<Result<(), _>>()?;
            }
            _ => {}
        }
        if !committed_pledges(&self.db, campaign_id, 1).await?.is_empty() {
            return Ok(Progress::Continue);
        }
        self.finish(campaign_id, &outcome).await?;
        Ok(Progress::Finished)
    }

    /// Moves a live campaign to settling and decides what happens.
    async fn open(&self, campaign: &Campaign) -> Result<String, CampaignError> {
        let outcome = match campaign.funding_model {
            FundingModel::AllOrNothing if campaign.raised() >= campaign.goal => "charging",
            FundingModel::AllOrNothing => "failed",
            FundingModel::KeepItAll => "closed",
        };
        let mut tx = self.db.begin().await?;
        store::set_status(&mut tx, campaign.id, CampaignStatus::Live, CampaignStatus::Settling).await?;
        let sql = "INSERT INTO campaign_settlements (campaign_id, outcome, started_at) VALUES ($1, $2, $3)
                   ON CONFLICT (campaign_id) DO NOTHING";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(campaign.id).bind(outcome).bind(Timestamp::now())
            .execute(c).await?.rows_affected());
        tx.commit().await?;
        tracing::info!(campaign = %campaign.slug, outcome, "settlement started");
        Ok(outcome.to_owned())
    }

    /// Closes the campaign, shares the pool and sends the organiser the report.
    async fn finish(&self, campaign_id: i64, outcome: &str) -> Result<(), CampaignError> {
        let mut tx = self.db.begin().await?;
        let campaign = store::campaign_in(&mut tx, campaign_id).await?;
        let to = match outcome {
            "charging" => CampaignStatus::Succeeded,
            "failed" => CampaignStatus::Failed,
            _ if campaign.raised() >= campaign.goal => CampaignStatus::Succeeded,
            _ => CampaignStatus::Failed,
        };
        // Taking the campaign row here orders this against any collection
        // into the pool: it lands before the share-out, or is shared itself.
        store::set_status(&mut tx, campaign_id, CampaignStatus::Settling, to).await?;
        let settled = Campaign { status: to, ..campaign };
        if settled.pool_is_shared() {
            pool::share_pool(&mut tx, &settled).await?;
        }
        let sql = "UPDATE campaign_settlements SET finished_at = $1,
                       outcome = CASE WHEN outcome = 'charging' THEN 'succeeded' ELSE outcome END
                   WHERE campaign_id = $2";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(Timestamp::now()).bind(campaign_id).execute(c).await?.rows_affected());
        tx.commit().await?;
        let report = report(&self.db, campaign_id).await?;
        let mut tx = self.db.begin().await?;
        self.email_report(&mut tx, &settled, &report).await?;
        tx.commit().await?;
        tracing::info!(campaign = %settled.slug, status = %to, collected = report.collected, "settlement finished");
        Ok(())
    }

    async fn email_report(&self, tx: &mut Tx, campaign: &Campaign, report: &Report) -> Result<(), CampaignError> {
        let Ok(to) = EmailAddress::parse(&campaign.contact_email) else { return Ok(()) };
        let locale = Locale::Ja;
        let m = |amount: i64, count: i64| format!("{} ({count})", money_text(campaign.money(amount), locale));
        let template = EmailTemplate::SettlementReport {
            campaign: campaign.title(locale).to_owned(),
            outcome: report.status.to_string(),
            collected: m(report.collected, report.collected_count),
            failed: m(report.failed, report.failed_count),
            dropped: m(report.dropped, report.dropped_count),
            teams: report
                .teams
                .iter()
                .map(|t| (t.name.clone(), money_text(campaign.money(t.fund_balance), locale)))
                .collect(),
            report_link: format!("{}/api/v1/campaigns/{}/settlement", self.site.base_url, campaign.slug),
        };
        let email = NewEmail {
            key: format!("campaign:{}:settlement-report:{}", campaign.id, report.status),
            to,
            to_name: None,
            locale,
            template,
        };
        outbox::enqueue(tx, &email, &self.site.mail_domain)
            .await
            .map_err(|e| CampaignError::Database(sqlx::Error::Protocol(e.to_string())))?;
        Ok(())
    }

    /// Charges one pledge off-session. The attempt (and its idempotency key)
    /// is committed before the gateway is called; an attempt left `started`
    /// by a crash is resent with the same key.
    pub async fn charge(&self, campaign: &Campaign, pledge: &Pledge) -> Result<ChargeOutcome, CampaignError> {
        let key = self.attempt_key(pledge).await?;
        let card = match self.card(pledge).await {
            Ok(card) => card,
            Err(CampaignError::Gateway(e)) if !e.is_transient() => {
                let outcome = ChargeOutcome::Declined { code: "no_saved_card".into(), payment_intent: None };
                self.record(campaign, pledge, &key, &outcome).await?;
                return Ok(outcome);
            }
            Err(e) => return Err(e),
        };
        let request = OffSessionCharge {
            card,
            amount: pledge.money(),
            description: format!("{} ({})", campaign.title(pledge.locale), pledge.public_id),
            kind: "pledge",
            reference: pledge.public_id.clone(),
            idempotency_key: key.clone(),
        };
        let outcome = self.gateway.charge_off_session(&request).await?;
        self.record(campaign, pledge, &key, &outcome).await?;
        Ok(outcome)
    }

    async fn attempt_key(&self, pledge: &Pledge) -> Result<String, CampaignError> {
        let mut tx = self.db.begin().await?;
        let open: Option<String> = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT idempotency_key FROM pledge_charge_attempts WHERE pledge_id = $1 AND status = 'started'")
            .bind(pledge.id).fetch_optional(c).await?);
        if let Some(key) = open {
            return Ok(key);
        }
        let n: i32 = on_tx!(&mut tx, c => sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(attempt), 0) + 1 AS INTEGER) FROM pledge_charge_attempts WHERE pledge_id = $1")
            .bind(pledge.id).fetch_one(c).await?);
        let key = format!("pledge:{}:charge:{n}", pledge.public_id);
        let sql = "INSERT INTO pledge_charge_attempts (pledge_id, attempt, idempotency_key, status, created_at)
                   VALUES ($1, $2, $3, 'started', $4)";
        on_tx!(&mut tx, c => sqlx::query(sql).bind(pledge.id).bind(n).bind(&key).bind(Timestamp::now())
            .execute(c).await?.rows_affected());
        tx.commit().await?;
        Ok(key)
    }

    /// The saved card, read from the setup intent if the webhook that names
    /// it has not been seen.
    async fn card(&self, pledge: &Pledge) -> Result<SavedCard, CampaignError> {
        if let (Some(customer), Some(payment_method)) = (&pledge.customer_id, &pledge.payment_method_id) {
            return Ok(SavedCard { customer: customer.clone(), payment_method: payment_method.clone() });
        }
        let Some(setup_intent) = &pledge.setup_intent_id else {
            return Err(CampaignError::Gateway(kanpa_payments::GatewayError::Rejected("no saved card".into())));
        };
        let card = self.gateway.saved_card(setup_intent).await?;
        let sql = "UPDATE pledges SET customer_id = $1, payment_method_id = $2 WHERE id = $3";
        let mut tx = self.db.begin().await?;
        on_tx!(&mut tx, c => sqlx::query(sql).bind(&card.customer).bind(&card.payment_method).bind(pledge.id)
            .execute(c).await?.rows_affected());
        tx.commit().await?;
        Ok(card)
    }

    async fn record(
        &self,
        campaign: &Campaign,
        pledge: &Pledge,
        key: &str,
        outcome: &ChargeOutcome,
    ) -> Result<(), CampaignError> {
        let (status, intent, code) = match outcome {
            ChargeOutcome::Succeeded(c) => ("succeeded", Some(c.payment_intent.clone()), None),
            ChargeOutcome::Declined { code, payment_intent } => {
                ("declined", payment_intent.clone(), Some(code.clone()))
            }
            ChargeOutcome::AuthenticationRequired { payment_intent } => {
                ("authentication_required", payment_intent.clone(), Some("authentication_required".to_owned()))
            }
        };
        let mut tx = self.db.begin().await?;
        let sql = "UPDATE pledge_charge_attempts SET status = $1, payment_intent_id = $2, error_code = $3,
                       finished_at = $4 WHERE idempotency_key = $5 AND status = 'started'";
        let n = on_tx!(&mut tx, c => sqlx::query(sql).bind(status).bind(&intent).bind(&code).bind(Timestamp::now())
            .bind(key).execute(c).await?.rows_affected());
        if n == 0 {
            // Another worker recorded this attempt already.
            return Ok(());
        }
        let Some(current) = store::pledge_in(&mut tx, &pledge.public_id).await? else {
            return Err(CampaignError::NotFound("pledge"));
        };
        match outcome {
            ChargeOutcome::Succeeded(collected) => {
                record_collection(&mut tx, &self.site, &current, collected).await?;
            }
            _ => self.failed(&mut tx, campaign, &current, code.as_deref().unwrap_or("card_declined")).await?,
        }
        tx.commit().await?;
        Ok(())
    }

    /// A charge failed: the first time, the pledge becomes `payment_failed`
    /// and its retries and its drop are scheduled; each time the supporter
    /// gets the pay link.
    async fn failed(&self, tx: &mut Tx, campaign: &Campaign, pledge: &Pledge, code: &str) -> Result<(), CampaignError> {
        let now = Timestamp::now();
        let first = pledge.status != PledgeStatus::PaymentFailed;
        if first {
            if !change_status(tx, pledge, PledgeStatus::PaymentFailed).await? {
                return Ok(());
            }
            let sql = "UPDATE pledges SET failed_at = $1 WHERE id = $2";
            on_tx!(tx, c => sqlx::query(sql).bind(now).bind(pledge.id).execute(c).await?.rows_affected());
            for day in RETRY_DAYS {
                let job = NewJob {
                    kind: RETRY_JOB,
                    payload: json!({ "pledge": pledge.public_id, "day": day }),
                    run_at: now.saturating_add(time::Duration::days(day)),
                    max_attempts: 10,
                };
                jobs::enqueue(tx, &job).await?;
            }
            let job = NewJob {
                kind: DROP_JOB,
                payload: json!({ "pledge": pledge.public_id }),
                run_at: now.saturating_add(time::Duration::days(DROP_AFTER_DAYS)),
                max_attempts: 10,
            };
            jobs::enqueue(tx, &job).await?;
        }
        let sql = "UPDATE pledges SET failure_code = $1 WHERE id = $2";
        on_tx!(tx, c => sqlx::query(sql).bind(code).bind(pledge.id).execute(c).await?.rows_affected());
        let failed_at = if first { now } else { pledge.failed_at.unwrap_or(now) };
        let pay_by = failed_at.saturating_add(time::Duration::days(DROP_AFTER_DAYS));
        let attempts: i64 = on_tx!(tx, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM pledge_charge_attempts WHERE pledge_id = $1").bind(pledge.id).fetch_one(c).await?);
        let template = EmailTemplate::PaymentFailed {
            campaign: campaign.title(pledge.locale).to_owned(),
            amount: money_text(pledge.money(), pledge.locale),
            pay_link: self.site.pay_link(&pledge.public_id),
            pay_by: local_time(campaign, pay_by, pledge.locale),
            manage_link: self.site.manage_link(),
        };
        email_supporter(tx, &self.site, pledge, &format!("payment-failed:{attempts}"), template).await
    }

    /// A scheduled retry: charges again if the pledge is still unpaid.
    pub async fn retry(&self, public_id: &str) -> Result<Option<ChargeOutcome>, CampaignError> {
        let pledge = store::pledge_by_public_id(&self.db, public_id).await?;
        if pledge.status != PledgeStatus::PaymentFailed {
            return Ok(None);
        }
        // Never charge the card while the supporter may be paying through
        // their pay link: close that checkout first.
        if crate::supporter::close_pay_checkout(&self.db, self.gateway.as_ref(), pledge.id).await?
            == kanpa_payments::SessionState::Complete
        {
            return Ok(None);
        }
        let campaign = store::campaign_by_id(&self.db, pledge.campaign_id).await?;
        self.charge(&campaign, &pledge).await.map(Some)
    }

    /// Charges a pledge committed after its campaign settled successfully.
    pub async fn charge_late(&self, public_id: &str) -> Result<Option<ChargeOutcome>, CampaignError> {
        let pledge = store::pledge_by_public_id(&self.db, public_id).await?;
        let campaign = store::campaign_by_id(&self.db, pledge.campaign_id).await?;
        if pledge.status != PledgeStatus::Committed || campaign.status != CampaignStatus::Succeeded {
            return Ok(None);
        }
        self.charge(&campaign, &pledge).await.map(Some)
    }

    /// Drops a pledge still unpaid at the end of its window.
    pub async fn drop_unpaid(&self, public_id: &str) -> Result<bool, CampaignError> {
        let mut tx = self.db.begin().await?;
        let Some(pledge) = store::pledge_in(&mut tx, public_id).await? else { return Ok(false) };
        if pledge.status != PledgeStatus::PaymentFailed
            || !change_status(&mut tx, &pledge, PledgeStatus::Dropped).await?
        {
            return Ok(false);
        }
        let campaign = store::campaign_in(&mut tx, pledge.campaign_id).await?;
        let template = EmailTemplate::PledgeDropped {
            campaign: campaign.title(pledge.locale).to_owned(),
            amount: money_text(pledge.money(), pledge.locale),
            manage_link: self.site.manage_link(),
        };
        email_supporter(&mut tx, &self.site, &pledge, "dropped", template).await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn settlement_outcome(db: &Db, campaign_id: i64) -> Result<String, CampaignError> {
    let sql = "SELECT outcome FROM campaign_settlements WHERE campaign_id = $1";
    let outcome: Option<String> = on_db!(db, p => sqlx::query_scalar(sql).bind(campaign_id).fetch_optional(p).await?);
    outcome.ok_or(CampaignError::NotFound("settlement"))
}

/// Closes a live campaign before its deadline (see [`crate::changes`]): the
/// deadline becomes now and the settlement job is queued to run at once, so
/// the drive settles by the usual rules.
pub async fn close_early(db: &Db, campaign_id: i64) -> Result<Campaign, CampaignError> {
    let mut tx = db.begin().await?;
    store::lock_campaign(&mut tx, campaign_id).await?;
    let campaign = store::campaign_in(&mut tx, campaign_id).await?;
    crate::changes::may_close_early(campaign.status)?;
    let now = Timestamp::now();
    let sql = "UPDATE campaigns SET deadline = $1, updated_at = $1 WHERE id = $2 AND status = 'live' AND deadline > $1";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(now).bind(campaign_id).execute(c).await?.rows_affected());
    let job = NewJob { kind: SETTLE_JOB, payload: json!({ "campaign": campaign_id }), run_at: now, max_attempts: 50 };
    jobs::enqueue(&mut tx, &job).await?;
    tx.commit().await?;
    store::campaign_by_id(db, campaign_id).await
}

/// Cancels a campaign (see [`crate::changes`]): nobody is charged. In one
/// transaction the campaign is locked, checked, marked cancelled, and every
/// committed pledge voided (the totals and reward counts follow through
/// `change_status`) with an email to its supporter. Returns how many
/// pledges were voided. A card saved at a Checkout that was still open is
/// voided when its event arrives (`events`), like one for a missed drive.
pub async fn cancel(db: &Db, site: &Site, campaign_id: i64) -> Result<usize, CampaignError> {
    let mut tx = db.begin().await?;
    store::lock_campaign(&mut tx, campaign_id).await?;
    let campaign = store::campaign_in(&mut tx, campaign_id).await?;
    let keep_it_all = campaign.funding_model == FundingModel::KeepItAll;
    let sql = "SELECT COUNT(*) FROM pledges
               WHERE campaign_id = $1 AND (status = 'awaiting_payment' OR (status = 'pending' AND $2))";
    let on_their_way: i64 =
        on_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(campaign_id).bind(keep_it_all).fetch_one(c).await?);
    crate::changes::may_cancel(crate::changes::CancelCheck {
        status: campaign.status,
        funding_model: campaign.funding_model,
        collected: campaign.money(campaign.collected),
        payments_on_their_way: on_their_way,
    })?;
    store::set_status(&mut tx, campaign_id, campaign.status, CampaignStatus::Cancelled).await?;
    let sql = format!(
        "SELECT {} FROM pledges WHERE campaign_id = $1 AND status = 'committed' ORDER BY id",
        store::PLEDGE_COLUMNS
    );
    let rows: Vec<store::PledgeRow> = on_tx!(&mut tx, c => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
        .bind(campaign_id).fetch_all(c).await?);
    let pledges = rows.into_iter().map(Pledge::try_from).collect::<Result<Vec<_>, _>>()?;
    let mut voided = 0;
    for pledge in &pledges {
        if change_status(&mut tx, pledge, PledgeStatus::Void).await? {
            let template = EmailTemplate::CampaignCancelled {
                campaign: campaign.title(pledge.locale).to_owned(),
                manage_link: site.manage_link(),
            };
            email_supporter(&mut tx, site, pledge, "campaign-cancelled", template).await?;
            voided += 1;
        }
    }
    tx.commit().await?;
    tracing::info!(campaign = %campaign.slug, voided, "campaign cancelled");
    Ok(voided)
}

async fn committed_pledges(db: &Db, campaign_id: i64, limit: i64) -> Result<Vec<Pledge>, CampaignError> {
    let sql = format!(
        "SELECT {} FROM pledges WHERE campaign_id = $1 AND status = 'committed' ORDER BY id LIMIT $2",
        store::PLEDGE_COLUMNS
    );
    let rows: Vec<store::PledgeRow> = on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql.clone())).bind(campaign_id).bind(limit).fetch_all(p).await?);
    rows.into_iter().map(Pledge::try_from).collect()
}

/// The settlement report: what was collected, what is still failing, what
/// was dropped, and each team's fund.
pub async fn report(db: &Db, campaign_id: i64) -> Result<Report, CampaignError> {
    let campaign = store::campaign_by_id(db, campaign_id).await?;
    let sums = "SELECT status, CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(amount - amount_refunded), 0) AS BIGINT)
                FROM pledges WHERE campaign_id = $1 GROUP BY status";
    let rows: Vec<(String, i64, i64)> = on_db!(db, p => sqlx::query_as(sums).bind(campaign_id).fetch_all(p).await?);
    let of = |status: &str| rows.iter().find(|r| r.0 == status).map(|r| (r.2, r.1)).unwrap_or((0, 0));
    let settlement: Option<(String, Option<Timestamp>)> = on_db!(db, p => sqlx::query_as(
        "SELECT outcome, finished_at FROM campaign_settlements WHERE campaign_id = $1")
        .bind(campaign_id).fetch_optional(p).await?);
    let balances = ledger::balances(db, kanpa_ledger::OrgId(campaign.org_id)).await?;
    let fund = |account: kanpa_ledger::AccountId| {
        balances.iter().find(|b| b.account.id == account).map(|b| b.natural().amount()).unwrap_or(0)
    };
    let teams = store::teams(db, campaign_id)
        .await?
        .into_iter()
        .map(|t| TeamReport {
            name: t.name(Locale::Ja).to_owned(),
            fund_balance: fund(t.account),
            collected: t.collected,
            goal: t.goal,
            slug: t.slug,
        })
        .collect();
    let (collected, collected_count) = of("collected");
    let (committed, committed_count) = of("committed");
    let (failed, failed_count) = of("payment_failed");
    let (dropped, dropped_count) = of("dropped");
    Ok(Report {
        campaign: campaign.slug.clone(),
        status: campaign.status,
        outcome: settlement.as_ref().map(|s| s.0.clone()),
        finished: settlement.as_ref().is_some_and(|s| s.1.is_some()),
        currency: campaign.currency,
        goal: campaign.goal,
        collected,
        collected_count,
        committed,
        committed_count,
        failed,
        failed_count,
        dropped,
        dropped_count,
        teams,
        pool_balance: fund(campaign.pool_account),
    })
}

/// The job kinds of settlement.
pub struct SettleJob {
    pub settler: Arc<Settler>,
    /// How long one run may work before queueing the next (inside the lease).
    pub slice: Duration,
}

#[async_trait]
impl JobHandler for SettleJob {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(10), cap: Duration::from_secs(600), max_attempts: 50 }
    }

    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        let campaign = job.payload["campaign"].as_i64().ok_or_else(|| JobFailure::GiveUp("no campaign".into()))?;
        let progress = match self.settler.settle_slice(campaign, false, Some(self.slice)).await {
            Ok(progress) => progress,
            Err(CampaignError::WrongState { status: CampaignStatus::Live }) => {
                // The deadline moved or the clock is early: try again later.
                return Err(JobFailure::Retry("the deadline has not passed".into()));
            }
            Err(CampaignError::WrongState { status }) => {
                tracing::info!(campaign, %status, "nothing to settle");
                Progress::Finished
            }
            Err(e) => return Err(JobFailure::Retry(e.to_string())),
        };
        let mut tx = db.begin().await?;
        if progress == Progress::Continue {
            let next =
                NewJob { kind: SETTLE_JOB, payload: job.payload.clone(), run_at: Timestamp::now(), max_attempts: 50 };
            jobs::enqueue(&mut tx, &next).await?;
        }
        Ok(tx)
    }
}

pub struct RetryChargeJob {
    pub settler: Arc<Settler>,
}

#[async_trait]
impl JobHandler for RetryChargeJob {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(60), cap: Duration::from_secs(3600), max_attempts: 10 }
    }

    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        let pledge = job.payload["pledge"].as_str().ok_or_else(|| JobFailure::GiveUp("no pledge".into()))?;
        self.settler.retry(pledge).await.map_err(|e| JobFailure::Retry(e.to_string()))?;
        Ok(db.begin().await?)
    }
}

pub struct ChargeLateJob {
    pub settler: Arc<Settler>,
}

#[async_trait]
impl JobHandler for ChargeLateJob {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(30), cap: Duration::from_secs(3600), max_attempts: 10 }
    }

    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        let pledge = job.payload["pledge"].as_str().ok_or_else(|| JobFailure::GiveUp("no pledge".into()))?;
        self.settler.charge_late(pledge).await.map_err(|e| JobFailure::Retry(e.to_string()))?;
        Ok(db.begin().await?)
    }
}

pub struct DropJob {
    pub settler: Arc<Settler>,
}

#[async_trait]
impl JobHandler for DropJob {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { base: Duration::from_secs(60), cap: Duration::from_secs(3600), max_attempts: 10 }
    }

    async fn run(&self, db: &Db, job: &ClaimedJob) -> Result<Tx, JobFailure> {
        let pledge = job.payload["pledge"].as_str().ok_or_else(|| JobFailure::GiveUp("no pledge".into()))?;
        self.settler.drop_unpaid(pledge).await.map_err(|e| JobFailure::Retry(e.to_string()))?;
        Ok(db.begin().await?)
    }
}

/// Registers the settlement and collection jobs.
pub fn register(registry: &mut jobs::Registry, settler: Arc<Settler>, slice: Duration) {
    registry.register(SETTLE_JOB, Arc::new(SettleJob { settler: settler.clone(), slice }));
    registry.register(RETRY_JOB, Arc::new(RetryChargeJob { settler: settler.clone() }));
    registry.register(DROP_JOB, Arc::new(DropJob { settler: settler.clone() }));
    registry.register(CHARGE_JOB, Arc::new(ChargeLateJob { settler: settler.clone() }));
    registry.register(
        crate::pledge::EXPIRE_JOB,
        Arc::new(crate::pledge::ExpirePending { gateway: settler.gateway.clone() }),
    );
    registry.register(
        crate::events::COLLECT_JOB,
        Arc::new(crate::events::CollectPayment { gateway: settler.gateway.clone(), site: settler.site.clone() }),
    );
}
