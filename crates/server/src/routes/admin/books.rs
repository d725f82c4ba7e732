//! The books of one organisation: the dashboard (every fund's balance and
//! where the money is), the journal with its filters and each entry's
//! detail, manual entries (money received in cash or by bank transfer,
//! disbursements) and reversals.
//!
//! A treasurer limited to one team sees that team's fund only: its balance,
//! the entries that touch it, and forms that can move nothing else.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kanpa_ledger::chart::Holding;
use kanpa_ledger::{
    AccountId, Currency, Entry, EntryHeader, EntryId, IdempotencyKey, JournalFilter, Money, NewEntry, OrgId,
    ParseMoneyError, SourceRef, Timestamp, store as ledger,
};
use serde::Deserialize;

use super::{Answer, Nav, Need, Refused, Staff, access, check_form, page, see_other};
use crate::app::AppState;
use crate::error::AppError;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::staff::{Access, store as staff_store};

/// Dates typed in the console are days in Japan.
const OFFSET_HOURS: i8 = 9;

// ---------------------------------------------------------------- funds

/// A fund (a team, a campaign's pool, a salon) as the console shows it.
#[derive(Clone, Debug)]
pub struct Fund {
    pub account: AccountId,
    pub label: String,
    pub team: Option<i64>,
    pub currency: Currency,
    pub balance: Money,
}

/// Money held somewhere (Stripe, in transit, bank, cash).
pub struct Held {
    pub label: String,
    pub balance: String,
}

/// Every fund of the organisation the person may see, with its balance,
/// and (for whole-organisation roles) where the money is held.
pub async fn funds(state: &AppState, tr: Tr, access: &Access) -> Result<(Vec<Fund>, Vec<Held>), Refused> {
    let org = access.org_id();
    let balances = ledger::balances(&state.db, org).await?;
    let balance_of = |id: AccountId, currency: Currency| {
        balances.iter().find(|b| b.account.id == id).map(|b| b.natural()).unwrap_or(Money::zero(currency))
    };
    let campaign_failure = |e: kanpa_campaigns::CampaignError| Refused::Error(crate::forms::read_failure(e));
    let mut funds = Vec::new();
    for campaign in kanpa_campaigns::store::campaigns_of(&state.db, org).await.map_err(campaign_failure)? {
        let title = campaign.title(tr.0).to_owned();
        for team in kanpa_campaigns::store::teams(&state.db, campaign.id).await.map_err(campaign_failure)? {
            funds.push(Fund {
                account: team.account,
                label: format!("{title} — {}", team.name(tr.0)),
                team: Some(team.id),
                currency: campaign.currency,
                balance: balance_of(team.account, campaign.currency),
            });
        }
        funds.push(Fund {
            account: campaign.pool_account,
            label: format!("{title} — {}", tr.t("team-pool")),
            team: None,
            currency: campaign.currency,
            balance: balance_of(campaign.pool_account, campaign.currency),
        });
    }
    let salons = kanpa_patrons::store::salons_of(&state.db, org)
        .await
        .map_err(|e| Refused::Error(AppError::Internal(anyhow::anyhow!(e))))?;
    for salon in salons {
        funds.push(Fund {
            account: salon.fund_account,
            label: salon.name(tr.0).to_owned(),
            team: None,
            currency: salon.currency,
            balance: balance_of(salon.fund_account, salon.currency),
        });
    }
    if let Some(team) = access.team {
        funds.retain(|f| f.team == Some(team));
        return Ok((funds, Vec::new()));
    }
    let holdings = [
        (Holding::StripeBalance, "admin-held-stripe"),
        (Holding::InTransit, "admin-held-in-transit"),
        (Holding::Bank, "admin-held-bank"),
        (Holding::Cash, "admin-held-cash"),
    ];
    let mut currencies: Vec<Currency> = funds.iter().map(|f| f.currency).collect();
    currencies.sort_by_key(|c| c.code());
    currencies.dedup();
    if currencies.is_empty() {
        currencies.push(Currency::Jpy);
    }
    let mut held = Vec::new();
    for currency in currencies {
        for (holding, key) in holdings {
            let code = holding.code(currency);
            let balance =
                balances.iter().find(|b| b.account.code == code).map(|b| b.natural()).unwrap_or(Money::zero(currency));
            held.push(Held { label: format!("{} ({})", tr.t(key), currency.code()), balance: balance.format(tr.0) });
        }
    }
    Ok((funds, held))
}

fn team_label(funds: &[Fund], access: &Access) -> Option<String> {
    access.team.map(|team| funds.iter().find(|f| f.team == Some(team)).map(|f| f.label.clone()).unwrap_or_default())
}

// ---------------------------------------------------------------- home and dashboard

#[derive(Template)]
#[template(path = "admin_home.html")]
struct HomePage {
    tr: Tr,
    email: String,
    csrf: String,
    orgs: Vec<(String, String, String)>,
}

/// `/admin`: the organisations the person works for (straight to the
/// dashboard when there is one).
pub async fn home(State(state): State<AppState>, lang: Lang, staff: Staff) -> Result<Response, AppError> {
    let tr = lang.tr();
    let roles = staff_store::roles_of(&state.db, staff.user_id).await?;
    if let [only] = roles.as_slice() {
        return Ok(see_other(&format!("/admin/o/{}", only.org.slug)));
    }
    let orgs =
        roles.into_iter().map(|a| (a.org.slug, a.org.name, tr.t(&format!("admin-role-{}", a.role.as_str())))).collect();
    Ok(page(StatusCode::OK, HomePage { tr, email: staff.email.clone(), csrf: staff.csrf(), orgs }.render_html()))
}

struct FundRow {
    label: String,
    balance: String,
    account: i64,
    negative: bool,
}

#[derive(Template)]
#[template(path = "admin_dashboard.html")]
struct DashboardPage {
    tr: Tr,
    nav: Nav,
    role: String,
    funds: Vec<FundRow>,
    held: Vec<Held>,
    campaigns: Vec<(String, String)>,
    salons: Vec<(String, String)>,
    /// What went wrong and waits: failed pledge payments, past-due patrons.
    attention: Vec<String>,
}

fn fund_rows(tr: Tr, funds: &[Fund]) -> Vec<FundRow> {
    funds
        .iter()
        .map(|f| FundRow {
            label: f.label.clone(),
            balance: f.balance.format(tr.0),
            account: f.account.0,
            negative: f.balance.is_negative(),
        })
        .collect()
}

/// `/admin/o/{org}`: how much each fund has and where the money is.
pub async fn dashboard(State(state): State<AppState>, lang: Lang, staff: Staff, Path(org): Path<String>) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let (funds, held) = funds(&state, tr, &access).await?;
            let nav = Nav::new(&staff, &access, team_label(&funds, &access));
            let role = tr.t(&format!("admin-role-{}", access.role.as_str()));
            let campaign_failure = |e| Refused::Error(crate::forms::read_failure(e));
            let mut campaigns = Vec::new();
            let mut failed_pledges = 0;
            for c in kanpa_campaigns::store::campaigns_of(&state.db, access.org_id()).await.map_err(campaign_failure)? {
                let teams = kanpa_campaigns::store::teams(&state.db, c.id).await.map_err(campaign_failure)?;
                if access.team.is_none_or(|team| teams.iter().any(|t| t.id == team)) {
                    campaigns.push((c.slug.clone(), c.title(tr.0).to_owned()));
                    let pledges =
                        kanpa_campaigns::store::pledges_of_campaign(&state.db, c.id).await.map_err(campaign_failure)?;
                    failed_pledges += pledges
                        .iter()
                        .filter(|p| p.status == kanpa_campaigns::PledgeStatus::PaymentFailed)
                        .filter(|p| access.team.is_none() || p.team_id == access.team)
                        .count();
                }
            }
            let mut salons = Vec::new();
            let mut past_due_patrons = 0;
            if access.team.is_none() {
                let listed = kanpa_patrons::store::salons_of(&state.db, access.org_id())
                    .await
                    .map_err(|e| Refused::Error(AppError::Internal(anyhow::anyhow!(e))))?;
                for salon in &listed {
                    let memberships = kanpa_patrons::store::memberships_of_salon(&state.db, salon.id)
                        .await
                        .map_err(|e| Refused::Error(AppError::Internal(anyhow::anyhow!(e))))?;
                    past_due_patrons +=
                        memberships.iter().filter(|m| m.status == kanpa_patrons::MembershipStatus::PastDue).count();
                }
                salons = listed.into_iter().map(|s| (s.slug.clone(), s.name(tr.0).to_owned())).collect();
            }
            let mut attention = Vec::new();
            if failed_pledges > 0 {
                attention.push(tr.t_count("admin-failed-pledges", "n", failed_pledges as i64));
            }
            if past_due_patrons > 0 {
                attention.push(tr.t_count("admin-past-due-patrons", "n", past_due_patrons as i64));
            }
            // What the last reconciliation left unmatched, for those who reconcile.
            if access.role.can_keep_books() && access.team.is_none() {
                let unmatched = ledger::reconciliation_report(&state.db, access.org_id())
                    .await?
                    .map_or(0, |run| run.report.unmatched_provider.len() + run.report.unmatched_ledger.len());
                if unmatched > 0 {
                    attention.push(tr.t_count("admin-recon-attention", "n", unmatched as i64));
                }
            }
            let page_ =
                DashboardPage { tr, nav, role, funds: fund_rows(tr, &funds), held, campaigns, salons, attention };
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

// ---------------------------------------------------------------- the journal

#[derive(Debug, Default, Deserialize)]
pub struct JournalQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    fund: String,
    #[serde(default)]
    kind: String,
}

/// The kinds of source an entry may have, as the filter offers them.
const KINDS: [&str; 5] = ["stripe", "pledge", "membership", "manual", "reversal"];

struct JournalRow {
    id: i64,
    date: String,
    description: String,
    kind: String,
    lines: Vec<(String, String)>,
    recorded_by: String,
}

#[derive(Template)]
#[template(path = "admin_journal.html")]
struct JournalPage {
    tr: Tr,
    nav: Nav,
    rows: Vec<JournalRow>,
    funds: Vec<(i64, String, bool)>,
    kinds: Vec<(&'static str, String, bool)>,
    from: String,
    until: String,
    error: Option<String>,
}

/// "2026-04-01" as the start of that day in Japan.
fn parse_day(text: &str) -> Option<Timestamp> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text.trim(), &format).ok()?;
    let offset = time::UtcOffset::from_hms(OFFSET_HOURS, 0, 0).ok()?;
    Some(Timestamp::from(date.midnight().assume_offset(offset)))
}

fn local_day(at: Timestamp) -> String {
    let offset = time::UtcOffset::from_hms(OFFSET_HOURS, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let t = at.as_offset().to_offset(offset);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

fn label_of(funds: &[Fund], held_labels: &[(String, String)], account: AccountId) -> String {
    funds
        .iter()
        .find(|f| f.account == account)
        .map(|f| f.label.clone())
        .or_else(|| held_labels.iter().find(|(code, _)| code == &account.0.to_string()).map(|(_, l)| l.clone()))
        .unwrap_or_else(|| format!("#{}", account.0))
}

/// Names of every account of the organisation, by id: funds by their
/// labels, where money is held in the reader's language, other accounts by
/// their stored names.
async fn account_names(state: &AppState, tr: Tr, org: OrgId, funds: &[Fund]) -> Result<Vec<(String, String)>, Refused> {
    let balances = ledger::balances(&state.db, org).await?;
    let held = |code: &str| {
        let (name, currency) = code.split_once(':')?;
        let key = match name {
            "stripe-balance" => "admin-held-stripe",
            "in-transit" => "admin-held-in-transit",
            "bank" => "admin-held-bank",
            "cash" => "admin-held-cash",
            _ => return None,
        };
        Some(format!("{} ({currency})", tr.t(key)))
    };
    Ok(balances
        .into_iter()
        .filter(|b| !funds.iter().any(|f| f.account == b.account.id))
        .map(|b| (b.account.id.0.to_string(), held(&b.account.code).unwrap_or(b.account.name)))
        .collect())
}

/// "2026-04-01 18:30" in Japan.
pub(super) fn local_minute(at: Timestamp) -> String {
    let offset = time::UtcOffset::from_hms(OFFSET_HOURS, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let t = at.as_offset().to_offset(offset);
    format!("{} {:02}:{:02}", local_day(at), t.hour(), t.minute())
}

fn kind_words(tr: Tr, source: Option<&SourceRef>) -> String {
    match source {
        Some(s) if KINDS.contains(&s.kind.as_str()) => tr.t(&format!("admin-kind-{}", s.kind)),
        Some(s) => s.kind.clone(),
        None => String::new(),
    }
}

/// `/admin/o/{org}/journal?from=&until=&fund=&kind=`.
pub async fn journal(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path(org): Path<String>,
    Query(query): Query<JournalQuery>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let (funds, _) = funds(&state, tr, &access).await?;
            let mut error = None;
            let mut day = |text: &str| {
                if text.trim().is_empty() {
                    return None;
                }
                let parsed = parse_day(text);
                if parsed.is_none() {
                    error = Some(tr.t("admin-error-date"));
                }
                parsed
            };
            let from = day(&query.from);
            let until = day(&query.until).map(|t| t.saturating_add(time::Duration::days(1)));
            let fund = match query.fund.trim() {
                "" => None,
                text => match text.parse::<i64>().ok().and_then(|id| funds.iter().find(|f| f.account.0 == id)) {
                    Some(f) => Some(f.account),
                    None => return Err(Refused::Error(AppError::NotFound)),
                },
            };
            // A treasurer limited to a team reads that fund's entries only.
            let fund = match (access.team, fund) {
                (Some(_), None) => Some(funds.first().map(|f| f.account).ok_or(AppError::NotFound)?),
                (_, fund) => fund,
            };
            let kind = match query.kind.trim() {
                "" => None,
                k if KINDS.contains(&k) => Some(k.to_owned()),
                _ => {
                    error = Some(tr.t("campaign-error-choice"));
                    None
                }
            };
            let filter = JournalFilter { from, until, account: fund, source_kind: kind.clone(), limit: 200 };
            let entries =
                if error.is_some() { Vec::new() } else { ledger::journal(&state.db, access.org_id(), &filter).await? };
            let names = account_names(&state, tr, access.org_id(), &funds).await?;
            let rows = entries.iter().map(|e| journal_row(tr, &funds, &names, e)).collect();
            let nav = Nav::new(&staff, &access, team_label(&funds, &access));
            let page_ = JournalPage {
                tr,
                nav,
                rows,
                funds: funds.iter().map(|f| (f.account.0, f.label.clone(), fund == Some(f.account))).collect(),
                kinds: KINDS
                    .iter()
                    .map(|k| (*k, tr.t(&format!("admin-kind-{k}")), kind.as_deref() == Some(*k)))
                    .collect(),
                from: query.from.clone(),
                until: query.until.clone(),
                error: error.clone(),
            };
            let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
            Ok(page(status, page_.render_html()))
        }
        .await,
    )
}

fn journal_row(tr: Tr, funds: &[Fund], names: &[(String, String)], e: &Entry) -> JournalRow {
    JournalRow {
        id: e.id.0,
        date: local_day(e.occurred_at),
        description: e.description.clone(),
        kind: kind_words(tr, e.source.as_ref()),
        lines: e.postings.iter().map(|p| (label_of(funds, names, p.account), p.amount.format(tr.0))).collect(),
        recorded_by: e.recorded_by.clone().unwrap_or_default(),
    }
}

/// The entry with this id, if the person may see it: of their
/// organisation and, for a limited treasurer, touching their fund.
async fn visible_entry(state: &AppState, access: &Access, funds: &[Fund], id: &str) -> Result<Entry, Refused> {
    let id = id.parse::<i64>().map_err(|_| AppError::NotFound)?;
    let entry = ledger::entry(&state.db, EntryId(id)).await?.ok_or(AppError::NotFound)?;
    if entry.org != access.org_id() {
        return Err(AppError::NotFound.into());
    }
    if access.team.is_some() && !entry.postings.iter().any(|p| funds.iter().any(|f| f.account == p.account)) {
        return Err(AppError::NotFound.into());
    }
    Ok(entry)
}

#[derive(Template)]
#[template(path = "admin_entry.html")]
struct EntryPage {
    tr: Tr,
    nav: Nav,
    row: JournalRow,
    recorded_at: String,
    source_kind: String,
    source_ref: String,
    key: String,
    reverses: Option<i64>,
    reversed_by: Option<i64>,
    can_reverse: bool,
    /// The number of the receipt a manual receipt of money issued.
    receipt_number: Option<String>,
    error: Option<String>,
}

async fn entry_page(
    state: &AppState,
    tr: Tr,
    staff: &Staff,
    access: &Access,
    id: &str,
    error: Option<String>,
) -> Result<EntryPage, Refused> {
    let (funds, _) = funds(state, tr, access).await?;
    let entry = visible_entry(state, access, &funds, id).await?;
    let names = account_names(state, tr, access.org_id(), &funds).await?;
    let reversed_by = ledger::reversed_by(&state.db, entry.id).await?;
    let receipt =
        kanpa_payments::receipt::by_manual_entry(&state.db, entry.key.as_str()).await.map_err(receipt_failure)?;
    let nav = Nav::new(staff, access, team_label(&funds, access));
    Ok(EntryPage {
        tr,
        nav,
        row: journal_row(tr, &funds, &names, &entry),
        recorded_at: local_minute(entry.recorded_at),
        source_kind: kind_words(tr, entry.source.as_ref()),
        source_ref: entry.source.as_ref().map(|s| s.reference.clone()).unwrap_or_default(),
        key: entry.key.as_str().to_owned(),
        reverses: entry.reverses.map(|e| e.0),
        reversed_by: reversed_by.map(|e| e.0),
        can_reverse: access.role.can_keep_books() && reversed_by.is_none() && entry.reverses.is_none(),
        receipt_number: receipt.filter(|r| r.org == access.org_id()).map(|r| r.display_number()),
        error,
    })
}

/// `/admin/o/{org}/journal/{entry}/receipt`: the printable receipt a manual
/// receipt of money issued, as the payer's receipt pages show it. The entry
/// must be one the person may see (their organisation, their team's fund);
/// anything else is not found. A reversed entry keeps its receipt (receipts
/// are never changed); its entry page says it was reversed.
pub async fn entry_receipt(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path((org, id)): Path<(String, String)>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let (funds, _) = funds(&state, tr, &access).await?;
            let entry = visible_entry(&state, &access, &funds, &id).await?;
            let receipt = kanpa_payments::receipt::by_manual_entry(&state.db, entry.key.as_str())
                .await
                .map_err(receipt_failure)?
                .filter(|r| r.org == access.org_id())
                .ok_or(AppError::NotFound)?;
            let mut references =
                vec![crate::receipt_view::Reference { label: "receipt-entry", value: format!("#{}", entry.id.0) }];
            if let Some(source) = entry.source.as_ref().filter(|s| s.kind == "pledge") {
                references
                    .push(crate::receipt_view::Reference { label: "receipt-pledge", value: source.reference.clone() });
            }
            let legal = crate::routes::legal::legal_path_of(&state, receipt.org.0).await.ok();
            let html = crate::receipt_view::render(tr, &receipt, references, legal).map_err(AppError::Internal)?;
            Ok(page(StatusCode::OK, html))
        }
        .await,
    )
}

/// `/admin/o/{org}/journal/{entry}`: one entry, its source and who
/// recorded it.
pub async fn entry(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path((org, id)): Path<(String, String)>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let page_ = entry_page(&state, tr, &staff, &access, &id, None).await?;
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct ReverseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

pub const REASON_MAX: usize = 500;

/// Reverses an entry with a reason: a new entry negating every posting,
/// recorded by the person; the original stays as it was.
pub async fn reverse(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, id)): Path<(String, String)>,
    Form(form): Form<ReverseForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Books).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let (funds, _) = funds(&state, tr, &access).await?;
            let entry = visible_entry(&state, &access, &funds, &id).await?;
            let reason = form.reason.trim();
            let problem = if reason.is_empty() {
                Some(tr.t("admin-error-reason-required"))
            } else if reason.chars().count() > REASON_MAX {
                Some(tr.t_with("campaign-error-too-long", &[("max", &REASON_MAX.to_string())]))
            } else if entry.reverses.is_some() {
                Some(tr.t("admin-error-reverse-reversal"))
            } else {
                None
            };
            if ledger::reversed_by(&state.db, entry.id).await?.is_some() {
                let page_ =
                    entry_page(&state, tr, &staff, &access, &id, Some(tr.t("admin-error-already-reversed"))).await?;
                return Ok(page(StatusCode::CONFLICT, page_.render_html()));
            }
            if let Some(error) = problem {
                let page_ = entry_page(&state, tr, &staff, &access, &id, Some(error)).await?;
                return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, page_.render_html()));
            }
            if access.team.is_some() && !only_own_fund(&state, &access, &funds, &entry).await? {
                return Err(Refused::Forbidden);
            }
            let header = EntryHeader {
                org: access.org_id(),
                key: IdempotencyKey::parse(format!("reversal:{}", entry.id.0))
                    .map_err(kanpa_ledger::LedgerError::from)?,
                occurred_at: Timestamp::now(),
                description: format!("{}: {reason}", tr.t("admin-reversal-of")),
                source: Some(SourceRef { kind: "reversal".to_owned(), reference: entry.id.0.to_string() }),
                recorded_by: Some(staff.email.clone()),
            };
            let mut tx = state.db.begin().await.map_err(AppError::from)?;
            match ledger::reverse(&mut tx, entry.id, header).await {
                Ok(_) => {}
                Err(
                    kanpa_ledger::LedgerError::AlreadyReversed(_) | kanpa_ledger::LedgerError::IdempotencyConflict(_),
                ) => {
                    let page_ =
                        entry_page(&state, tr, &staff, &access, &id, Some(tr.t("admin-error-already-reversed")))
                            .await?;
                    return Ok(page(StatusCode::CONFLICT, page_.render_html()));
                }
                Err(e) => return Err(e.into()),
            }
            tx.commit().await.map_err(AppError::from)?;
            Ok(see_other(&format!("/admin/o/{}/journal/{}", access.org.slug, entry.id.0)))
        }
        .await,
    )
}

/// Whether every fund an entry moves is the limited treasurer's own; the
/// other postings may only be on where money is held (cash, bank, Stripe).
async fn only_own_fund(state: &AppState, access: &Access, own: &[Fund], entry: &Entry) -> Result<bool, Refused> {
    let balances = ledger::balances(&state.db, access.org_id()).await?;
    Ok(entry.postings.iter().all(|p| {
        own.iter().any(|f| f.account == p.account)
            || balances.iter().any(|b| b.account.id == p.account && b.account.kind == kanpa_ledger::AccountKind::Asset)
    }))
}

// ---------------------------------------------------------------- manual entries

#[derive(Debug, Default, Deserialize, Clone)]
pub struct EntryForm {
    #[serde(default)]
    csrf: String,
    /// Makes a double-submitted form post once.
    #[serde(default)]
    key: String,
    /// "receipt" or "disbursement".
    #[serde(default)]
    kind: String,
    #[serde(default)]
    fund: String,
    /// "cash" or "bank".
    #[serde(default)]
    holding: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    date: String,
    /// Who paid, or who was paid.
    #[serde(default)]
    party: String,
    #[serde(default)]
    note: String,
    /// The pledge (its public id) a receipt pays, if any.
    #[serde(default)]
    pledge: String,
    /// "yes" lets a disbursement take a fund below zero.
    #[serde(default)]
    overdraw: String,
}

pub const PARTY_MAX: usize = 200;
pub const NOTE_MAX: usize = 500;

#[derive(Template)]
#[template(path = "admin_new_entry.html")]
struct NewEntryPage {
    tr: Tr,
    nav: Nav,
    form: EntryForm,
    funds: Vec<(i64, String, bool)>,
    errors: Vec<String>,
}

fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn entry_form_page(
    state: &AppState,
    tr: Tr,
    staff: &Staff,
    access: &Access,
    form: EntryForm,
    errors: Vec<String>,
) -> Result<NewEntryPage, Refused> {
    let (funds, _) = funds(state, tr, access).await?;
    let nav = Nav::new(staff, access, team_label(&funds, access));
    let funds = funds.iter().map(|f| (f.account.0, f.label.clone(), form.fund == f.account.0.to_string())).collect();
    Ok(NewEntryPage { tr, nav, form, funds, errors })
}

pub async fn new_entry(State(state): State<AppState>, lang: Lang, staff: Staff, Path(org): Path<String>) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Books).await?;
            let form = EntryForm {
                key: new_key(),
                kind: "receipt".to_owned(),
                holding: "cash".to_owned(),
                date: local_day(Timestamp::now()),
                ..EntryForm::default()
            };
            let page_ = entry_form_page(&state, tr, &staff, &access, form, Vec::new()).await?;
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

/// A manual entry, checked and ready to post.
struct Manual {
    receipt: bool,
    fund: Fund,
    holding: Holding,
    amount: Money,
    occurred_at: Timestamp,
    description: String,
    /// Who paid (a receipt is addressed to them) or was paid.
    party: String,
    pledge: Option<kanpa_campaigns::Pledge>,
    key: IdempotencyKey,
}

fn amount_problem(tr: Tr, e: ParseMoneyError) -> String {
    match e {
        ParseMoneyError::Empty => tr.t("campaign-error-required"),
        ParseMoneyError::Negative => tr.t("campaign-error-amount-negative"),
        ParseMoneyError::TooManyDecimals { .. } => tr.t("campaign-error-amount-decimal"),
        ParseMoneyError::Overflow => tr.t("campaign-error-amount-huge"),
        ParseMoneyError::WrongCurrency | ParseMoneyError::NotANumber => tr.t("campaign-error-amount"),
    }
}

fn field(tr: Tr, key: &str, problem: String) -> String {
    tr.t_with("field-problem", &[("field", &tr.t(key)), ("problem", &problem)])
}

/// Checks a manual entry form. Unknown or foreign funds and pledges are
/// `NotFound`, exactly like missing ones.
async fn check_entry(
    state: &AppState,
    tr: Tr,
    access: &Access,
    form: &EntryForm,
) -> Result<Result<Manual, Vec<String>>, Refused> {
    let (funds, _) = funds(state, tr, access).await?;
    let mut errors = Vec::new();
    let receipt = match form.kind.as_str() {
        "receipt" => true,
        "disbursement" => false,
        _ => {
            errors.push(field(tr, "admin-field-kind", tr.t("campaign-error-choice")));
            true
        }
    };
    let holding = match form.holding.as_str() {
        "cash" => Holding::Cash,
        "bank" => Holding::Bank,
        _ => {
            errors.push(field(tr, "admin-field-holding", tr.t("campaign-error-choice")));
            Holding::Cash
        }
    };
    let pledge = match form.pledge.trim() {
        "" => None,
        id if id.len() > 64 => return Err(AppError::NotFound.into()),
        id => Some(pledge_of_org(state, access, id).await?),
    };
    let fund = match (&pledge, form.fund.trim()) {
        (Some((_, account)), _) => funds.iter().find(|f| f.account == *account).cloned(),
        (None, "") => {
            errors.push(field(tr, "admin-field-fund", tr.t("campaign-error-required")));
            None
        }
        (None, text) => match text.parse::<i64>().ok().and_then(|id| funds.iter().find(|f| f.account.0 == id)) {
            Some(f) => Some(f.clone()),
            None => return Err(AppError::NotFound.into()),
        },
    };
    // A pledge of a fund this person cannot see is not found.
    if pledge.is_some() && fund.is_none() {
        return Err(AppError::NotFound.into());
    }
    if pledge.is_some() && !receipt {
        errors.push(field(tr, "admin-field-pledge", tr.t("admin-error-pledge-receipt-only")));
    }
    let currency = fund.as_ref().map(|f| f.currency).unwrap_or(Currency::Jpy);
    let amount = match Money::parse(&form.amount, currency) {
        Ok(m) if m.is_zero() => {
            errors.push(field(tr, "field-amount", tr.t("admin-error-amount-zero")));
            None
        }
        Ok(m) => Some(m),
        Err(e) => {
            errors.push(field(tr, "field-amount", amount_problem(tr, e)));
            None
        }
    };
    if let (Some((p, _)), Some(a)) = (&pledge, amount)
        && a != p.money()
    {
        errors.push(field(
            tr,
            "field-amount",
            tr.t_with("admin-error-pledge-amount", &[("amount", &p.money().format(tr.0))]),
        ));
    }
    let occurred_at = match form.date.trim() {
        "" => {
            errors.push(field(tr, "admin-field-date", tr.t("campaign-error-required")));
            None
        }
        text => match parse_day(text) {
            Some(day) if day > Timestamp::now() => {
                errors.push(field(tr, "admin-field-date", tr.t("admin-error-date-future")));
                None
            }
            Some(day) => Some(day),
            None => {
                errors.push(field(tr, "admin-field-date", tr.t("admin-error-date")));
                None
            }
        },
    };
    let party = form.party.trim();
    if party.is_empty() {
        errors.push(field(tr, "admin-field-party", tr.t("campaign-error-required")));
    } else if party.chars().count() > PARTY_MAX {
        errors.push(field(
            tr,
            "admin-field-party",
            tr.t_with("campaign-error-too-long", &[("max", &PARTY_MAX.to_string())]),
        ));
    }
    let note = form.note.trim();
    if note.chars().count() > NOTE_MAX {
        errors.push(field(
            tr,
            "admin-field-note",
            tr.t_with("campaign-error-too-long", &[("max", &NOTE_MAX.to_string())]),
        ));
    }
    let key = IdempotencyKey::parse(format!("manual:{}", form.key.trim()));
    if form.key.trim().is_empty() || form.key.len() > 64 || key.is_err() {
        return Err(AppError::BadRequest("missing_form_key").into());
    }
    let (Some(fund), Some(amount), Some(occurred_at), Ok(key)) = (fund, amount, occurred_at, key) else {
        return Ok(Err(errors));
    };
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    if !receipt && form.overdraw != "yes" {
        let after = fund.balance.checked_sub(amount).map_err(|_| kanpa_ledger::LedgerError::Overflow)?;
        if after.is_negative() {
            let words = tr.t_with("admin-error-overdraw", &[("balance", &fund.balance.format(tr.0))]);
            return Ok(Err(vec![field(tr, "field-amount", words)]));
        }
    }
    let verb = if receipt { tr.t("admin-kind-receipt") } else { tr.t("admin-kind-disbursement") };
    let mut description = format!("{verb}: {party}");
    if !note.is_empty() {
        description.push_str(" — ");
        description.push_str(note);
    }
    Ok(Ok(Manual {
        receipt,
        fund,
        holding,
        amount,
        occurred_at,
        description,
        party: party.to_owned(),
        pledge: pledge.map(|(p, _)| p),
        key,
    }))
}

/// The pledge with this public id if it belongs to a campaign of the
/// organisation, with the fund its money goes to (its team's, or the pool).
async fn pledge_of_org(
    state: &AppState,
    access: &Access,
    public_id: &str,
) -> Result<(kanpa_campaigns::Pledge, AccountId), Refused> {
    use kanpa_campaigns::{CampaignError, store};
    let not_found = |e: CampaignError| match e {
        CampaignError::NotFound(_) => Refused::Error(AppError::NotFound),
        other => Refused::Error(crate::forms::read_failure(other)),
    };
    let pledge = store::pledge_by_public_id(&state.db, public_id).await.map_err(not_found)?;
    let campaign = store::campaign_by_id(&state.db, pledge.campaign_id).await.map_err(not_found)?;
    if campaign.org_id != access.org_id().0 {
        return Err(AppError::NotFound.into());
    }
    let account = match pledge.team_id {
        Some(team) => store::team(&state.db, campaign.id, team).await.map_err(not_found)?.account,
        None => campaign.pool_account,
    };
    Ok((pledge, account))
}

/// Records money received in cash or by bank transfer into a fund, or a
/// disbursement out of one. With a pledge, the pledge becomes collected in
/// the same transaction (through `pledge::change_status`, which moves the
/// campaign's and team's totals).
pub async fn record_entry(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path(org): Path<String>,
    Form(form): Form<EntryForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Books).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let manual = match check_entry(&state, tr, &access, &form).await? {
                Ok(manual) => manual,
                Err(errors) => {
                    let page_ = entry_form_page(&state, tr, &staff, &access, form, errors).await?;
                    return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, page_.render_html()));
                }
            };
            match post_manual(&state, &access, &staff, &manual).await? {
                Ok(entry) => Ok(see_other(&format!("/admin/o/{}/journal/{}", access.org.slug, entry.0))),
                Err(message) => {
                    let page_ = entry_form_page(&state, tr, &staff, &access, form, vec![tr.t(message)]).await?;
                    Ok(page(StatusCode::CONFLICT, page_.render_html()))
                }
            }
        }
        .await,
    )
}

/// Posts a checked manual entry; a pledge that is no longer payable (paid
/// meanwhile, cancelled) refuses the whole entry.
async fn post_manual(
    state: &AppState,
    access: &Access,
    staff: &Staff,
    manual: &Manual,
) -> Result<Result<EntryId, &'static str>, Refused> {
    use kanpa_campaigns::PledgeStatus as S;
    let campaign = match &manual.pledge {
        Some(p) => Some(
            kanpa_campaigns::store::campaign_by_id(&state.db, p.campaign_id)
                .await
                .map_err(|e| Refused::Error(crate::forms::read_failure(e)))?,
        ),
        None => None,
    };
    let mut tx = state.db.begin().await.map_err(AppError::from)?;
    let held = manual.holding.account(&mut tx, access.org_id(), manual.amount.currency()).await?;
    let header = EntryHeader {
        org: access.org_id(),
        key: manual.key.clone(),
        occurred_at: manual.occurred_at,
        description: manual.description.clone(),
        source: Some(match &manual.pledge {
            Some(p) => SourceRef { kind: "pledge".to_owned(), reference: p.public_id.clone() },
            None => SourceRef { kind: "manual".to_owned(), reference: manual.key.as_str().to_owned() },
        }),
        recorded_by: Some(staff.email.clone()),
    };
    // A fund carries a credit balance: money in is a credit to the fund and a
    // debit to where it is held; a disbursement the opposite.
    let entry = if manual.receipt {
        NewEntry::transfer(header, held, manual.fund.account, manual.amount)
    } else {
        NewEntry::transfer(header, manual.fund.account, held, manual.amount)
    }
    .map_err(kanpa_ledger::LedgerError::from)?;
    let posted = ledger::post(&mut tx, &entry).await?;
    if let kanpa_ledger::Posted::Replayed(id) = posted {
        // The same form sent twice: already recorded.
        return Ok(Ok(id));
    }
    if let Some(pledge) = &manual.pledge {
        if !matches!(pledge.status, S::Pending | S::Committed | S::AwaitingPayment | S::PaymentFailed) {
            return Ok(Err("admin-error-pledge-not-payable"));
        }
        let moved = kanpa_campaigns::pledge::change_status(&mut tx, pledge, S::Collected)
            .await
            .map_err(|e| Refused::Error(crate::forms::read_failure(e)))?;
        if !moved {
            return Ok(Err("admin-error-pledge-not-payable"));
        }
    }
    if manual.receipt {
        issue_manual_receipt(&mut tx, access, manual, campaign.as_ref()).await?;
    }
    tx.commit().await.map_err(AppError::from)?;
    Ok(Ok(posted.entry_id()))
}

fn receipt_failure(e: kanpa_payments::receipt::ReceiptError) -> Refused {
    Refused::Error(AppError::Internal(anyhow::Error::new(e)))
}

/// The receipt of money received, issued in the transaction that posts its
/// entry, once per entry (its source is the entry's idempotency key),
/// addressed to the payer named on the form. A pledge's receipt is built
/// like the card path's (a reward's price as a taxable purchase, the rest a
/// donation); money with no pledge is one donation line, outside
/// consumption tax.
async fn issue_manual_receipt(
    tx: &mut kanpa_ledger::Tx,
    access: &Access,
    manual: &Manual,
    campaign: Option<&kanpa_campaigns::Campaign>,
) -> Result<kanpa_payments::receipt::Receipt, Refused> {
    use kanpa_payments::receipt::{self, LineKind, NewReceipt, PriceBasis, ReceiptLine, ReceiptSource};
    let source = ReceiptSource::manual(manual.key.as_str());
    if let (Some(pledge), Some(campaign)) = (&manual.pledge, campaign) {
        let payment = kanpa_campaigns::events::PledgePayment {
            source,
            payer_name: manual.party.clone(),
            paid: manual.amount,
            paid_at: manual.occurred_at,
        };
        return kanpa_campaigns::events::issue_pledge_receipt(tx, campaign, pledge, &payment)
            .await
            .map_err(|e| Refused::Error(crate::forms::read_failure(e)));
    }
    let new = NewReceipt {
        org: access.org_id(),
        source,
        payer_name: manual.party.clone(),
        payer_email: String::new(),
        paid_at: manual.occurred_at,
        currency: manual.amount.currency(),
        basis: PriceBasis::TaxInclusive,
        lines: vec![ReceiptLine {
            kind: LineKind::Donation,
            description_ja: format!("ご支援(寄付)— {}", manual.fund.label),
            description_en: format!("Donation — {}", manual.fund.label),
            amount: manual.amount,
            tax_rate: None,
        }],
    };
    receipt::issue(tx, &new).await.map_err(receipt_failure)
}
