//! The pledges as CSV, streamed row by row (the writing is the ledger's
//! export sink and formula-safe cells).

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use kanpa_ledger::export::{ExportError, FilterParam, Period, RowFilter, Sink, books_date, cells, decimal};
use kanpa_ledger::{AccountId, Currency, Db, LedgerError, OrgId, Timestamp, on_db};
use sqlx::AssertSqlSafe;
use tokio::io::AsyncWrite;

#[derive(sqlx::FromRow)]
struct Row {
    org_id: i64,
    campaign: String,
    public_id: String,
    created_at: Timestamp,
    status: String,
    team: Option<String>,
    reward: Option<String>,
    amount: i64,
    amount_refunded: i64,
    currency: String,
    email: String,
    display_name: String,
    anonymous: bool,
    message: String,
    charge_id: Option<String>,
}

const HEADER: [&str; 15] = [
    "organisation",
    "campaign",
    "pledge",
    "created",
    "status",
    "team",
    "reward",
    "amount",
    "refunded",
    "currency",
    "email",
    "display_name",
    "anonymous",
    "message",
    "charge",
];

/// Every pledge of the campaigns in scope (one organisation or all; only
/// pledges to these fund accounts — a team's, or a campaign's pool — when
/// `funds` is given) made in `period`, oldest first. `org_slugs` names the
/// organisations.
pub async fn pledges_csv<W: AsyncWrite + Unpin + Send>(
    db: &Db,
    org_slugs: &BTreeMap<OrgId, String>,
    org: Option<OrgId>,
    funds: Option<&BTreeSet<AccountId>>,
    period: &Period,
    bom: bool,
    out: &mut W,
) -> Result<(), ExportError> {
    let (sql, params) = RowFilter::new(
        "SELECT c.org_id, c.slug AS campaign, p.public_id, p.created_at, p.status, t.slug AS team,
                r.title_ja AS reward, p.amount, p.amount_refunded, p.currency, p.email, p.display_name,
                p.anonymous, p.message, p.charge_id
         FROM pledges p JOIN campaigns c ON c.id = p.campaign_id
         LEFT JOIN campaign_teams t ON t.id = p.team_id LEFT JOIN campaign_rewards r ON r.id = p.reward_id",
    )
    .org("c.org_id", org)
    .funds("COALESCE(t.account_id, c.pool_account_id)", funds)
    .period("p.created_at", period)
    .order_by("p.id");
    let mut rows = on_db!(db, p => {
        let mut q = sqlx::query_as::<_, Row>(AssertSqlSafe(sql));
        for param in params {
            q = match param {
                FilterParam::Int(v) => q.bind(v),
                FilterParam::Time(v) => q.bind(v),
            };
        }
        q.fetch(p)
    });
    let mut sink = Sink::new(out, bom);
    let mut line = cells::Line::new();
    for name in HEADER {
        line.text(name);
    }
    sink.line(&line.finish()).await?;
    while let Some(r) = rows.try_next().await? {
        let currency = Currency::from_code(&r.currency).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let org = org_slugs.get(&OrgId(r.org_id)).map(String::as_str).unwrap_or_default();
        let text = line
            .text(org)
            .text(&r.campaign)
            .text(&r.public_id)
            .plain(&books_date(r.created_at))
            .text(&r.status)
            .text(r.team.as_deref().unwrap_or_default())
            .text(r.reward.as_deref().unwrap_or_default())
            .plain(&decimal(r.amount, currency))
            .plain(&decimal(r.amount_refunded, currency))
            .plain(currency.code())
            .text(&r.email)
            .text(&r.display_name)
            .plain(if r.anonymous { "yes" } else { "no" })
            .text(&r.message)
            .text(r.charge_id.as_deref().unwrap_or_default())
            .finish();
        sink.line(&text).await?;
    }
    sink.finish().await?;
    Ok(())
}
