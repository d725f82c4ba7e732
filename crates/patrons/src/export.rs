//! The patrons of every salon in scope as CSV, streamed row by row (the
//! writing is the ledger's export sink and formula-safe cells).

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use kanpa_ledger::export::{ExportError, FilterParam, Period, RowFilter, Sink, books_date, cells, decimal};
use kanpa_ledger::{AccountId, Currency, Db, LedgerError, OrgId, Timestamp, on_db};
use sqlx::AssertSqlSafe;
use tokio::io::AsyncWrite;

#[derive(sqlx::FromRow)]
struct Row {
    org_id: i64,
    salon: String,
    currency: String,
    public_id: String,
    email: String,
    tier: String,
    status: String,
    amount: i64,
    since: Option<Timestamp>,
    last_payment_at: Option<Timestamp>,
    lifetime_paid: i64,
    ended_at: Option<Timestamp>,
}

const HEADER: [&str; 12] = [
    "organisation",
    "salon",
    "membership",
    "email",
    "tier",
    "status",
    "monthly_amount",
    "currency",
    "since",
    "last_payment",
    "lifetime_paid",
    "ended",
];

/// Every membership of the salons in scope (one organisation or all; only
/// salons whose fund is in `funds` when given), joined in `period` (by when
/// the membership was created), oldest first.
pub async fn patrons_csv<W: AsyncWrite + Unpin + Send>(
    db: &Db,
    org_slugs: &BTreeMap<OrgId, String>,
    org: Option<OrgId>,
    funds: Option<&BTreeSet<AccountId>>,
    period: &Period,
    bom: bool,
    out: &mut W,
) -> Result<(), ExportError> {
    let (sql, params) = RowFilter::new(
        "SELECT s.org_id, s.slug AS salon, s.currency, m.public_id, m.email, t.slug AS tier, m.status, m.amount,
                m.since, m.last_payment_at, m.lifetime_paid, m.ended_at
         FROM memberships m JOIN salons s ON s.id = m.salon_id JOIN salon_tiers t ON t.id = m.tier_id",
    )
    .org("s.org_id", org)
    .funds("s.fund_account_id", funds)
    .period("m.created_at", period)
    .order_by("m.id");
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
    let date = |t: Option<Timestamp>| t.map(books_date).unwrap_or_default();
    while let Some(r) = rows.try_next().await? {
        let currency = Currency::from_code(&r.currency).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let org = org_slugs.get(&OrgId(r.org_id)).map(String::as_str).unwrap_or_default();
        let text = line
            .text(org)
            .text(&r.salon)
            .text(&r.public_id)
            .text(&r.email)
            .text(&r.tier)
            .text(&r.status)
            .plain(&decimal(r.amount, currency))
            .plain(currency.code())
            .plain(&date(r.since))
            .plain(&date(r.last_payment_at))
            .plain(&decimal(r.lifetime_paid, currency))
            .plain(&date(r.ended_at))
            .finish();
        sink.line(&text).await?;
    }
    sink.finish().await?;
    Ok(())
}
