//! `/`: what this server hosts: the live campaigns and the open salons.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use kanpa_campaigns::store;
use kanpa_ledger::Timestamp;

use crate::app::AppState;
use crate::error::AppError;
use crate::forms::read_failure;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::routes::campaigns::{Bar, bar, time_left};

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(home))
}

struct CampaignSummary {
    slug: String,
    title: String,
    total: Bar,
    backers: String,
    time_left: String,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    tr: Tr,
    campaigns: Vec<CampaignSummary>,
    salons: Vec<SalonSummary>,
}

struct SalonSummary {
    slug: String,
    name: String,
    /// "From ¥500 / month".
    from: Option<String>,
}

async fn home(State(state): State<AppState>, lang: Lang) -> Result<Html<String>, AppError> {
    let tr = lang.tr();
    let now = Timestamp::now();
    let campaigns = store::public_campaigns(&state.db, true).await.map_err(read_failure)?;
    let campaigns = campaigns
        .iter()
        .map(|c| CampaignSummary {
            slug: c.slug.clone(),
            title: c.title(tr.0).to_owned(),
            total: bar(tr, c.currency, c.raised(), c.goal),
            backers: tr.t_count("backers-count", "n", c.backers),
            time_left: time_left(tr, c, now),
        })
        .collect();
    let failure = |e: kanpa_patrons::PatronError| AppError::Internal(anyhow::anyhow!(e));
    let mut salons = Vec::new();
    for salon in kanpa_patrons::store::public_salons(&state.db).await.map_err(failure)? {
        let tiers = kanpa_patrons::store::tiers(&state.db, salon.id).await.map_err(failure)?;
        let cheapest =
            tiers.iter().filter(|t| t.status == kanpa_patrons::TierStatus::Active).min_by_key(|t| t.monthly_price);
        salons.push(SalonSummary {
            slug: salon.slug.clone(),
            name: salon.name(tr.0).to_owned(),
            from: cheapest.map(|t| tr.t_with("home-salon-from", &[("price", &t.price().format(tr.0))])),
        });
    }
    Ok(Html(HomePage { tr, campaigns, salons }.render_html()))
}
