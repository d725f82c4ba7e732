//! `kanpa campaign …` and `kanpa token …`.

use std::time::Duration;

use anyhow::{Context, bail};
use kanpa_campaigns::settle::{self, Report};
use kanpa_campaigns::store::{self, CampaignInput, RewardInput, TeamInput};
use kanpa_campaigns::{Campaign, CampaignError, local_time};
use kanpa_ledger::{Db, Locale, Money, store as ledger};
use serde::Deserialize;

use crate::api_token::{self, Role};
use crate::app;
use crate::cli::{CampaignCommand, TokenCommand};
use crate::config::Config;
use crate::workers;

/// A campaign file: the API's fields plus its teams and rewards.
#[derive(Deserialize)]
struct CampaignFile {
    #[serde(flatten)]
    campaign: CampaignInput,
    #[serde(default)]
    teams: Vec<TeamInput>,
    #[serde(default)]
    rewards: Vec<RewardInput>,
}

fn explain(e: CampaignError) -> anyhow::Error {
    let (_, field) = crate::campaign_errors::status_and_field(&e);
    let message = crate::campaign_errors::describe(&e, crate::i18n::Tr(Locale::En));
    match field {
        Some(field) => anyhow::anyhow!("{field}: {message}"),
        None => anyhow::anyhow!("{message}"),
    }
}

pub async fn run(config: Config, command: CampaignCommand) -> anyhow::Result<()> {
    let db = app::connect(&config).await?;
    let result = dispatch(&config, &db, command).await;
    db.close().await;
    result
}

async fn by_slug(db: &Db, slug: &str) -> anyhow::Result<Campaign> {
    store::campaign_by_slug(db, slug).await.map_err(|_| anyhow::anyhow!("no campaign {slug:?}"))
}

async fn dispatch(config: &Config, db: &Db, command: CampaignCommand) -> anyhow::Result<()> {
    match command {
        CampaignCommand::List { org } => {
            let campaigns = match org {
                Some(slug) => {
                    let org = ledger::organisation_by_slug(db, &slug).await?.context("no such organisation")?;
                    store::campaigns_of(db, org.id).await.map_err(explain)?
                }
                None => store::public_campaigns(db, false).await.map_err(explain)?,
            };
            for c in campaigns {
                println!(
                    "{}\t{}\t{}/{}\t{} backers\t{}",
                    c.slug,
                    c.status,
                    c.money(c.raised()).format(Locale::En),
                    c.money(c.goal).format(Locale::En),
                    c.backers,
                    local_time(&c, c.deadline, Locale::En)
                );
            }
        }
        CampaignCommand::Create { org, file } => {
            let org = ledger::organisation_by_slug(db, &org).await?.context("no such organisation")?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("could not read {}", file.display()))?;
            let spec: CampaignFile =
                serde_json::from_str(&text).with_context(|| format!("{} is not valid", file.display()))?;
            let campaign = store::create_campaign(db, org.id, &spec.campaign).await.map_err(explain)?;
            for team in &spec.teams {
                store::add_team(db, campaign.id, team)
                    .await
                    .map_err(explain)
                    .with_context(|| format!("team {}", team.slug))?;
            }
            for reward in &spec.rewards {
                store::add_reward(db, campaign.id, reward)
                    .await
                    .map_err(explain)
                    .with_context(|| format!("reward {}", reward.title_ja))?;
            }
            println!(
                "created draft {} with {} teams and {} rewards; publish with `kanpa campaign publish {}`",
                campaign.slug,
                spec.teams.len(),
                spec.rewards.len(),
                campaign.slug
            );
        }
        CampaignCommand::Publish { slug } => {
            let campaign = by_slug(db, &slug).await?;
            let campaign = store::publish(db, campaign.id).await.map_err(explain)?;
            println!("{} is live until {}", campaign.slug, local_time(&campaign, campaign.deadline, Locale::En));
        }
        CampaignCommand::Settle { slug, before_deadline } => {
            let campaign = by_slug(db, &slug).await?;
            let gateway = workers::gateway(config, db)?;
            let settler = workers::settler(config, db.clone(), gateway);
            let watch_db = db.clone();
            let id = campaign.id;
            let progress = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(r) = settle::report(&watch_db, id).await {
                        eprintln!(
                            "  charged {} · failed {} · left {}",
                            r.collected_count, r.failed_count, r.committed_count
                        );
                    }
                }
            });
            let result = settler.settle(campaign.id, before_deadline).await;
            progress.abort();
            let report = result.map_err(|e| match e {
                CampaignError::WrongState { status: kanpa_campaigns::CampaignStatus::Live } => {
                    anyhow::anyhow!("the deadline has not passed; add --before-deadline to settle now")
                }
                e => explain(e),
            })?;
            print_report(&campaign, &report);
            println!("(the emails are sent by the running server's workers)");
        }
        CampaignCommand::Report { slug } => {
            let campaign = by_slug(db, &slug).await?;
            print_report(&campaign, &settle::report(db, campaign.id).await.map_err(explain)?);
        }
    }
    Ok(())
}

fn print_report(c: &Campaign, r: &Report) {
    let m = |amount: i64| Money::new(amount, c.currency).format(Locale::En);
    println!("campaign\t{}\t{}\toutcome {}", r.campaign, r.status, r.outcome.as_deref().unwrap_or("-"));
    println!("collected\t{}\t{} pledges", m(r.collected), r.collected_count);
    println!("committed\t{}\t{} pledges", m(r.committed), r.committed_count);
    println!("failed\t{}\t{} pledges (awaiting payment)", m(r.failed), r.failed_count);
    println!("dropped\t{}\t{} pledges", m(r.dropped), r.dropped_count);
    for t in &r.teams {
        println!("team {}\tfund {}\tcollected {}\tgoal {}", t.slug, m(t.fund_balance), m(t.collected), m(t.goal));
    }
    println!("pool\tfund {}", m(r.pool_balance));
}

pub async fn token(config: Config, command: TokenCommand) -> anyhow::Result<()> {
    let db = app::connect(&config).await?;
    match command {
        TokenCommand::Create { org, role, label } => {
            let org = ledger::organisation_by_slug(&db, &org).await?.context("no such organisation")?;
            let Some(role) = Role::parse(&role) else { bail!("--role must be owner, organiser, treasurer or viewer") };
            let token = api_token::create(&db, org.id, role, &label).await?;
            println!("{token}");
            eprintln!("(shown once; it acts as {} of {})", role.as_str(), org.slug);
        }
        TokenCommand::Revoke { org, label } => {
            let org = ledger::organisation_by_slug(&db, &org).await?.context("no such organisation")?;
            let n = api_token::revoke(&db, org.id, &label).await?;
            println!("revoked {n} token(s) labelled {label:?}");
        }
    }
    db.close().await;
    Ok(())
}
