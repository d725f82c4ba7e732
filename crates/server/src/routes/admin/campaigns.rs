//! A campaign in the console: its totals per team (the maintained
//! aggregates) and the chart of money raised per day, stacked by team, with
//! the goal line. A treasurer limited to one team sees the campaigns of
//! that team (whose totals are public on the campaign page anyway).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kanpa_campaigns::{CampaignError, PledgeStatus, store};
use time::Date;

use super::{Answer, Nav, Need, Refused, Staff, access, page};
use crate::app::AppState;
use crate::charts::{self, BarChart};
use crate::error::AppError;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;

/// At most this many days are drawn (the most recent).
pub const CHART_DAYS: usize = 60;

fn failure(e: CampaignError) -> Refused {
    Refused::Error(crate::forms::read_failure(e))
}

struct TeamLine {
    slug: String,
    name: String,
    name_ja: String,
    name_en: String,
    raised: String,
    goal: String,
    /// The goal as typed in the edit form (digits).
    goal_digits: String,
    backers: i64,
}

struct RewardLine {
    id: i64,
    title: String,
    title_ja: String,
    title_en: String,
    description_ja: String,
    min_amount: String,
    min_digits: String,
    quantity: String,
    claimed: i64,
    retired: bool,
}

#[derive(Template)]
#[template(path = "admin_campaign.html")]
struct CampaignPage {
    tr: Tr,
    nav: Nav,
    title: String,
    slug: String,
    raised: String,
    goal: String,
    backers: i64,
    teams: Vec<TeamLine>,
    rewards: Vec<RewardLine>,
    chart: BarChart,
    id: &'static str,
    draft: bool,
    live: bool,
    /// The campaign's state, in words.
    status: String,
    title_ja: String,
    title_en: String,
    story_ja: String,
}

/// Money counted toward the drive, per day (in the campaign's time zone)
/// and per part (each team in order, then the pool), accumulated: what the
/// drive had raised at the end of each day. Pledges are read here only to
/// place amounts on days; the totals shown beside come from the maintained
/// aggregates.
pub fn raised_by_day(
    offset: time::UtcOffset,
    team_ids: &[i64],
    pledges: &[kanpa_campaigns::Pledge],
    today: Date,
) -> Vec<(Date, Vec<i64>)> {
    let parts = team_ids.len() + 1;
    let mut daily: BTreeMap<Date, Vec<i64>> = BTreeMap::new();
    for pledge in pledges {
        let (pledged, collected, _) = pledge.status.contribution(pledge.amount, pledge.amount_refunded);
        let amount = pledged + collected;
        if amount == 0
            || !matches!(pledge.status, PledgeStatus::Committed | PledgeStatus::PaymentFailed | PledgeStatus::Collected)
        {
            continue;
        }
        let at = pledge.committed_at.or(pledge.collected_at).unwrap_or(pledge.created_at);
        let day = at.as_offset().to_offset(offset).date();
        let part = pledge.team_id.and_then(|t| team_ids.iter().position(|id| *id == t)).unwrap_or(parts - 1);
        daily.entry(day).or_insert_with(|| vec![0; parts])[part] += amount;
    }
    let Some(first) = daily.keys().next().copied() else {
        return Vec::new();
    };
    let mut days = Vec::new();
    let mut running = vec![0; parts];
    let mut day = first;
    while day <= today {
        if let Some(amounts) = daily.get(&day) {
            for (total, amount) in running.iter_mut().zip(amounts) {
                *total += amount;
            }
        }
        days.push((day, running.clone()));
        day = match day.next_day() {
            Some(next) => next,
            None => break,
        };
    }
    let skip = days.len().saturating_sub(CHART_DAYS);
    days.into_iter().skip(skip).collect()
}

pub async fn campaign(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let campaign = match store::campaign_by_slug(&state.db, &slug).await {
                Ok(c) if c.org_id == access.org_id().0 => c,
                Ok(_) | Err(CampaignError::NotFound(_)) => return Err(AppError::NotFound.into()),
                Err(e) => return Err(failure(e)),
            };
            let teams = store::teams(&state.db, campaign.id).await.map_err(failure)?;
            if let Some(team) = access.team
                && !teams.iter().any(|t| t.id == team)
            {
                return Err(AppError::NotFound.into());
            }
            let pledges = store::pledges_of_campaign(&state.db, campaign.id).await.map_err(failure)?;
            let offset =
                time::UtcOffset::from_whole_seconds(campaign.utc_offset_min * 60).unwrap_or(time::UtcOffset::UTC);
            let today = kanpa_ledger::Timestamp::now().as_offset().to_offset(offset).date();
            let ids: Vec<i64> = teams.iter().map(|t| t.id).collect();
            let days = raised_by_day(offset, &ids, &pledges, today);
            let mut series: Vec<String> = teams.iter().map(|t| t.name(tr.0).to_owned()).collect();
            series.push(tr.t("team-pool"));
            let bars: Vec<(String, Vec<i64>)> =
                days.into_iter().map(|(d, v)| (format!("{}/{}", u8::from(d.month()), d.day()), v)).collect();
            let money = |v: i64| campaign.money(v).format(tr.0);
            let goal_label = tr.t_with("admin-chart-goal", &[("amount", &money(campaign.goal))]);
            let chart =
                charts::stacked(tr.t("admin-chart-raised"), &series, &bars, Some((campaign.goal, goal_label)), money);
            let page_ = CampaignPage {
                tr,
                nav: Nav::new(&staff, &access, None),
                title: campaign.title(tr.0).to_owned(),
                slug: campaign.slug.clone(),
                raised: money(campaign.raised()),
                goal: money(campaign.goal),
                backers: campaign.backers,
                teams: teams
                    .iter()
                    .map(|t| TeamLine {
                        slug: t.slug.clone(),
                        name: t.name(tr.0).to_owned(),
                        name_ja: t.name_ja.clone(),
                        name_en: t.name_en.clone(),
                        raised: money(t.raised()),
                        goal: money(t.goal),
                        goal_digits: t.goal.to_string(),
                        backers: t.backers,
                    })
                    .collect(),
                rewards: store::rewards(&state.db, campaign.id)
                    .await
                    .map_err(failure)?
                    .iter()
                    .map(|r| RewardLine {
                        id: r.id,
                        title: r.title(tr.0).to_owned(),
                        title_ja: r.title_ja.clone(),
                        title_en: r.title_en.clone(),
                        description_ja: r.description_ja.clone(),
                        min_amount: money(r.min_amount),
                        min_digits: r.min_amount.to_string(),
                        quantity: r.quantity.map(|q| q.to_string()).unwrap_or_default(),
                        claimed: r.claimed,
                        retired: r.is_retired(),
                    })
                    .collect(),
                chart,
                id: "raised",
                draft: campaign.status == kanpa_campaigns::CampaignStatus::Draft,
                live: campaign.status == kanpa_campaigns::CampaignStatus::Live,
                status: tr.t(&format!("admin-campaign-status-{}", campaign.status.as_str())),
                title_ja: campaign.title_ja.clone(),
                title_en: campaign.title_en.clone(),
                story_ja: campaign.story_ja.clone(),
            };
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use kanpa_campaigns::Pledge;
    use kanpa_ledger::{Currency, Locale, Timestamp};

    use super::*;

    #[test]
    fn days_accumulate_by_team_and_skip_what_does_not_count() {
        let day = |d: u8| time::Date::from_calendar_date(2026, time::Month::March, d).unwrap();
        let at = |d: u8| Timestamp::from(day(d).with_hms(12, 0, 0).unwrap().assume_utc());
        let pledge = |team: Option<i64>, amount: i64, status: PledgeStatus, d: u8| Pledge {
            id: 1,
            public_id: "p".into(),
            campaign_id: 1,
            team_id: team,
            reward_id: None,
            amount,
            currency: Currency::Jpy,
            email: String::new(),
            display_name: String::new(),
            anonymous: false,
            message: String::new(),
            locale: Locale::Ja,
            status,
            checkout_session_id: None,
            customer_id: None,
            setup_intent_id: None,
            payment_method_id: None,
            payment_intent_id: None,
            charge_id: None,
            amount_refunded: 0,
            failure_code: None,
            failed_at: None,
            created_at: at(d),
            committed_at: Some(at(d)),
            collected_at: None,
        };
        let pledges = vec![
            pledge(Some(10), 3000, PledgeStatus::Committed, 1),
            pledge(None, 1000, PledgeStatus::Collected, 1),
            pledge(Some(20), 5000, PledgeStatus::Committed, 3),
            pledge(Some(10), 9999, PledgeStatus::Cancelled, 2),
        ];
        let japan = time::UtcOffset::from_hms(9, 0, 0).unwrap();
        let days = raised_by_day(japan, &[10, 20], &pledges, day(4));
        assert_eq!(days.len(), 4);
        assert_eq!(days[0], (day(1), vec![3000, 0, 1000]));
        assert_eq!(days[1], (day(2), vec![3000, 0, 1000]), "a cancelled pledge does not count");
        assert_eq!(days[2], (day(3), vec![3000, 5000, 1000]));
        assert_eq!(days[3].1, vec![3000, 5000, 1000]);
    }
}
