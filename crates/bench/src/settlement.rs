//! Settlement of many all-or-nothing pledges against the fake Stripe, which
//! answers after a delay and rate-limits like Stripe; kanpa charges at its
//! configured rate. Measures the wall time against the ideal
//! (pledges / rate), and checks that every pledge was charged exactly once
//! and that every 429 was retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kanpa_campaigns::settle::Settler;
use kanpa_campaigns::store::{self, CampaignInput, TeamInput};
use kanpa_campaigns::{PledgeStatus, Site};
use kanpa_ledger::{Timestamp, on_tx, store as ledger};
use kanpa_payments::PaymentGateway;
use kanpa_payments::stripe_api;
use kanpa_payments::stripe_gateway::StripeGateway;
use kanpa_testkit::postgres::PgCluster;
use kanpa_testkit::stripe::FakeStripe;

use crate::target;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Committed pledges to charge.
    #[arg(long, default_value_t = 10_000)]
    pledges: usize,
    /// kanpa's charge rate (payments.charge_rate), per second.
    #[arg(long, default_value_t = 90)]
    rate: u32,
    /// The fake Stripe's rate limit, requests per second.
    #[arg(long, default_value_t = 100)]
    stripe_limit: u32,
    /// The fake Stripe's answer delay, milliseconds.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "settlement: {} pledges at {}/s, fake Stripe {} ms latency, limit {}/s",
        args.pledges, args.rate, args.latency_ms, args.stripe_limit
    );
    println!("| backend | wall time | ideal | vs ideal | charged | double charges | 429s (all retried) |");
    println!("|---|---|---|---|---|---|---|");
    for backend in &args.backends {
        measure(&args, backend, target::cluster_for(backend)?).await?;
    }
    Ok(())
}

async fn measure(args: &Args, backend: &str, cluster: Option<&'static PgCluster>) -> anyhow::Result<()> {
    let target = target::fresh(backend, cluster).await?;
    let db = target.db.clone();
    let stripe = FakeStripe::start().await?;
    let client = stripe_api::client("sk_test_bench", &stripe.api_base())?;
    let gateway: Arc<dyn PaymentGateway> = Arc::new(StripeGateway::new(client));
    let site =
        Site { base_url: "http://127.0.0.1:8080".into(), mail_domain: "kanpa.bench".into(), max_pledge: 1_000_000 };

    // A live drive whose committed pledges already meet the goal.
    let mut tx = db.begin().await?;
    let org = ledger::create_organisation(&mut tx, "bench", "Bench").await?;
    tx.commit().await?;
    kanpa_payments::seller::update(&db, org.id, &kanpa_payments::seller::fictional("Bench")).await?;
    let now = Timestamp::now();
    let rfc = |t: Timestamp| t.as_offset().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let input = CampaignInput {
        slug: "bench-drive".into(),
        title_ja: "ベンチ".into(),
        currency: "JPY".into(),
        goal: 1_000,
        starts_at: rfc(now.saturating_add(time::Duration::days(-1))),
        deadline: rfc(now.saturating_add(time::Duration::days(1))),
        time_zone: "Asia/Tokyo".into(),
        funding_model: "all_or_nothing".into(),
        pool_rule: "equal".into(),
        contact_email: "bench@example.jp".into(),
        ..CampaignInput::default()
    };
    let campaign = store::create_campaign(&db, org.id, &input).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut teams = Vec::new();
    for slug in ["alpha", "bravo", "charlie"] {
        let team = TeamInput { slug: slug.into(), name_ja: slug.into(), goal: 1_000, ..TeamInput::default() };
        teams.push(store::add_team(&db, campaign.id, &team).await.map_err(|e| anyhow::anyhow!("{e}"))?.id);
    }
    store::publish(&db, campaign.id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let total = seed_pledges(&db, &stripe, campaign.id, &teams, args.pledges).await?;
    let mut tx = db.begin().await?;
    let sql = "UPDATE campaigns SET pledged = $1, backers = $2 WHERE id = $3";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(total).bind(args.pledges as i64).bind(campaign.id)
        .execute(c).await?.rows_affected());
    tx.commit().await?;

    stripe.set_latency(Duration::from_millis(args.latency_ms));
    stripe.set_rate_limit(args.stripe_limit);
    let settler = Settler { db: db.clone(), gateway, site, rate: args.rate };
    let started = Instant::now();
    let report = settler.settle(campaign.id, true).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let wall = started.elapsed().as_secs_f64();
    let ideal = args.pledges as f64 / f64::from(args.rate);

    let mut per_pledge: HashMap<String, usize> = HashMap::new();
    for pi in stripe.objects("payment_intent") {
        if pi["status"] == "succeeded" {
            *per_pledge.entry(pi["metadata"]["kanpa_ref"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        }
    }
    let doubles = per_pledge.values().filter(|n| **n > 1).count();
    let collected = store::pledges_of_campaign(&db, campaign.id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .filter(|p| p.status == PledgeStatus::Collected)
        .count();
    let limited = stripe.rate_limited();
    let all_retried = collected == args.pledges && report.failed_count == 0;
    println!(
        "| {backend} | {wall:.1} s | {ideal:.1} s | {:.3}x | {collected}/{} | {doubles} | {limited} ({}) |",
        wall / ideal,
        args.pledges,
        if all_retried { "yes" } else { "NO" }
    );
    Ok(())
}

/// Inserts committed pledges with saved cards the fake knows, in batches.
async fn seed_pledges(
    db: &kanpa_ledger::Db,
    stripe: &FakeStripe,
    campaign: i64,
    teams: &[i64],
    n: usize,
) -> anyhow::Result<i64> {
    let customer = stripe.customer("bench@example.jp", &[]);
    let customer = customer["id"].as_str().unwrap_or_default().to_owned();
    let now = Timestamp::now();
    let mut total = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut tx = db.begin().await?;
        for i in chunk {
            let amount = 1_000 + (*i as i64 % 50) * 100;
            total += amount;
            let sql = "INSERT INTO pledges (public_id, campaign_id, team_id, amount, currency, email, display_name,
                           anonymous, message, locale, status, customer_id, payment_method_id, created_at, updated_at,
                           committed_at)
                       VALUES ($1, $2, $3, $4, 'JPY', $5, 'bench', FALSE, '', 'ja', $6, $7, $8, $9, $9, $9)";
            on_tx!(&mut tx, c => sqlx::query(sql)
                .bind(format!("bench{i:08}")).bind(campaign).bind(teams[i % teams.len()]).bind(amount)
                .bind(format!("backer{i}@example.jp")).bind(PledgeStatus::Committed.as_str()).bind(&customer)
                .bind(format!("pm_bench_{i}")).bind(now)
                .execute(c).await?.rows_affected());
        }
        tx.commit().await?;
    }
    Ok(total)
}
