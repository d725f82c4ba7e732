//! A salon in the console: its patrons with search, counts by status and
//! monthly recurring revenue, with two server-rendered charts (patrons by
//! status; revenue at the end of each of the last 12 months), all from
//! `patrons::roster`. Salons are no team's fund: a treasurer limited to one
//! team does not see them.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kanpa_patrons::{PatronError, roster, store};
use serde::Deserialize;

use super::books::local_minute;
use super::{Answer, Nav, Need, Refused, Staff, access, page};
use crate::app::AppState;
use crate::charts::{self, BarChart};
use crate::error::AppError;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;

pub const MONTHS: usize = 12;
const QUERY_MAX: usize = 100;

fn failure(e: PatronError) -> Refused {
    match e {
        PatronError::NotFound(_) => Refused::Error(AppError::NotFound),
        other => Refused::Error(AppError::Internal(anyhow::anyhow!(other))),
    }
}

struct PatronRow {
    email: String,
    tier: String,
    status: String,
    amount: String,
    since: String,
    lifetime: String,
}

#[derive(Template)]
#[template(path = "admin_salon.html")]
struct SalonPage {
    tr: Tr,
    nav: Nav,
    name: String,
    slug: String,
    mrr: String,
    by_status: BarChart,
    revenue: BarChart,
    q: String,
    patrons: Vec<PatronRow>,
    error: Option<String>,
    open: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

pub async fn salon(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Query(search): Query<Search>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let salon = store::salon_by_slug(&state.db, &slug).await.map_err(failure)?;
            if salon.org_id != access.org_id().0 || access.team.is_some() {
                return Err(AppError::NotFound.into());
            }
            let tiers = store::tiers(&state.db, salon.id).await.map_err(failure)?;
            let memberships = store::memberships_of_salon(&state.db, salon.id).await.map_err(failure)?;
            let roster = roster::summarise(&memberships, &tiers, kanpa_ledger::Timestamp::now(), MONTHS);
            let money = |v: i64| kanpa_ledger::Money::new(v, salon.currency).format(tr.0);
            let counts: Vec<(String, i64)> =
                roster.counts.iter().map(|(status, n)| (tr.t(&format!("membership-status-{status}")), *n)).collect();
            let by_status = charts::simple(tr.t("admin-chart-by-status"), &counts, |n| n.to_string());
            let months: Vec<(String, i64)> = roster.months.iter().map(|m| (m.month.clone(), m.mrr_at_end)).collect();
            let revenue = charts::simple(tr.t("admin-chart-revenue"), &months, money);
            let q = search.q.trim().to_lowercase();
            let mut error = None;
            if q.chars().count() > QUERY_MAX {
                error = Some(tr.t_with("campaign-error-too-long", &[("max", &QUERY_MAX.to_string())]));
            }
            let patrons = roster
                .rows
                .iter()
                .filter(|_| error.is_none())
                .filter(|r| q.is_empty() || r.email.to_lowercase().contains(&q) || r.tier.to_lowercase().contains(&q))
                .map(|r| PatronRow {
                    email: r.email.clone(),
                    tier: r.tier.clone(),
                    status: tr.t(&format!("membership-status-{}", r.status.as_str())),
                    amount: money(r.amount),
                    since: r.since.map(local_minute).unwrap_or_default(),
                    lifetime: money(r.lifetime_paid),
                })
                .collect();
            let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
            let page_ = SalonPage {
                tr,
                nav: Nav::new(&staff, &access, None),
                name: salon.name(tr.0).to_owned(),
                slug: salon.slug.clone(),
                mrr: money(roster.mrr),
                by_status,
                revenue,
                q: search.q.clone(),
                patrons,
                error,
                open: salon.status == kanpa_patrons::SalonStatus::Open,
            };
            Ok(page(status, page_.render_html()))
        }
        .await,
    )
}
