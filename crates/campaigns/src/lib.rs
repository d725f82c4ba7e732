//! Funding drives: campaigns with teams and rewards, the pledges made to
//! them, the Stripe events that move pledges along, and settlement at the
//! deadline.
//!
//! - [`model`]: the types and the rules their inputs follow;
//! - [`store`]: creating, editing and reading campaigns, teams, rewards;
//! - [`changes`]: what may change once a campaign is live, retiring
//!   rewards, closing early and cancelling (plain decisions);
//! - [`pledge`]: making a pledge, and [`pledge::change_status`], the one
//!   place a pledge changes state (keeping totals and rewards right);
//! - [`events`]: the Stripe event handlers and the job that records money
//!   taken in the ledger;
//! - [`settle`]: the deadline: charging saved cards, retries, dropping, the
//!   pool split and the report;
//! - [`supporter`]: "my pledges" changes (signing in is
//!   `kanpa_messaging::signin`);
//! - [`demo`]: the demonstration drive `kanpa serve --demo` seeds.
//!
//! Pledged-but-not-charged money lives in the pledge table and the
//! aggregates, never in the ledger; money taken is posted to the team's (or
//! pool's) fund with the Stripe fee as its own entry.

pub mod changes;
pub mod demo;
pub mod error;
pub mod events;
pub mod export;
pub mod model;
pub mod pledge;
pub mod pool;
pub mod settle;
pub mod store;
pub mod supporter;

use kanpa_ledger::{Locale, Money, Timestamp, Tx, on_tx};

pub use error::CampaignError;
pub use model::{Campaign, CampaignStatus, FundingModel, Pledge, PledgeStatus, PoolRule, Reward, Team};

/// What campaign flows need to know about the server they run in.
#[derive(Clone, Debug)]
pub struct Site {
    /// Absolute, without a trailing slash: "https://kanpa.example".
    pub base_url: String,
    /// The domain of outgoing Message-IDs.
    pub mail_domain: String,
    /// The largest pledge accepted, in minor units.
    pub max_pledge: i64,
}

impl Site {
    /// "My pledges", where every supporter email links.
    pub fn manage_link(&self) -> String {
        format!("{}/me", self.base_url)
    }

    /// A receipt's page (shown to the signed-in payer).
    pub fn receipt_link(&self, receipt: &str) -> String {
        format!("{}/me/receipts/{receipt}", self.base_url)
    }

    pub fn pay_link(&self, pledge: &str) -> String {
        format!("{}/me/pledges/{pledge}/pay", self.base_url)
    }
}

/// An amount as a person reads it: "¥3,000".
pub fn money_text(money: Money, locale: Locale) -> String {
    money.format(locale)
}

/// A time in the campaign's own time zone: "2026年12月31日 23:59 (Asia/Tokyo)".
pub fn local_time(campaign: &Campaign, at: Timestamp, locale: Locale) -> String {
    let offset = time::UtcOffset::from_whole_seconds(campaign.utc_offset_min * 60).unwrap_or(time::UtcOffset::UTC);
    let t = at.as_offset().to_offset(offset);
    match locale {
        Locale::Ja => format!(
            "{}年{}月{}日 {:02}:{:02} ({})",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            campaign.time_zone
        ),
        Locale::En => format!(
            "{} {} {} {:02}:{:02} ({})",
            t.day(),
            &t.month().to_string()[..3],
            t.year(),
            t.hour(),
            t.minute(),
            campaign.time_zone
        ),
    }
}

/// What a pledge supports: its team's name, or the whole drive.
pub(crate) async fn target_name(
    tx: &mut Tx,
    campaign: &Campaign,
    team_id: Option<i64>,
    locale: Locale,
) -> Result<String, CampaignError> {
    let Some(team_id) = team_id else {
        return Ok(match locale {
            Locale::Ja => format!("{}(全体)", campaign.title(locale)),
            Locale::En => format!("{} (the whole drive)", campaign.title(locale)),
        });
    };
    let names: Option<(String, String)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT name_ja, name_en FROM campaign_teams WHERE id = $1").bind(team_id).fetch_optional(c).await?);
    Ok(names.map(|(ja, en)| model::pick(locale, &ja, &en).to_owned()).unwrap_or_default())
}
