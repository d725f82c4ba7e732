//! `kanpa salon …`: organisers' salon set-up from the command line, the
//! same operations as `/api/v1/salons`.

use anyhow::Context;
use kanpa_ledger::{Db, Locale, Money, store as ledger};
use kanpa_patrons::store::{self, PostInput, SalonInput, TierInput};
use kanpa_patrons::{PatronError, Salon, SalonStatus};
use serde::Deserialize;

use crate::app;
use crate::cli::SalonCommand;
use crate::config::Config;

/// A salon file: the API's fields plus its tiers and members' posts.
#[derive(Deserialize)]
struct SalonFile {
    #[serde(flatten)]
    salon: SalonInput,
    #[serde(default)]
    tiers: Vec<TierInput>,
    #[serde(default)]
    posts: Vec<PostInput>,
}

fn explain(e: PatronError) -> anyhow::Error {
    let (_, field) = crate::salon_errors::status_and_field(&e);
    let message = crate::salon_errors::describe(&e, crate::i18n::Tr(Locale::En));
    match field {
        Some(field) => anyhow::anyhow!("{field}: {message}"),
        None => anyhow::anyhow!("{message}"),
    }
}

pub async fn run(config: Config, command: SalonCommand) -> anyhow::Result<()> {
    let db = app::connect(&config).await?;
    let result = dispatch(&config, &db, command).await;
    db.close().await;
    result
}

/// `kanpa salon reprice SLUG TIER`: through the configured payment gateway.
async fn reprice(config: &Config, db: &Db, slug: &str, tier: &str) -> anyhow::Result<()> {
    crate::install_crypto_provider();
    let salon = by_slug(db, slug).await?;
    let gateway = crate::workers::gateway(config, db)?;
    let site = config.salon_site();
    let done = kanpa_patrons::repricing::move_to_current_price(db, gateway.as_ref(), &site, &salon, tier)
        .await
        .map_err(explain)?;
    println!(
        "{slug}/{}: {} moved to {}/month from their next renewal, {} already on it, {} cancelling left alone",
        done.tier,
        done.moved,
        done.amount.format(Locale::En),
        done.already_current,
        done.canceling
    );
    Ok(())
}

async fn by_slug(db: &Db, slug: &str) -> anyhow::Result<Salon> {
    store::salon_by_slug(db, slug).await.map_err(|_| anyhow::anyhow!("no salon {slug:?}"))
}

async fn dispatch(config: &Config, db: &Db, command: SalonCommand) -> anyhow::Result<()> {
    match command {
        SalonCommand::List { org } => {
            let salons = match org {
                Some(slug) => {
                    let org = ledger::organisation_by_slug(db, &slug).await?.context("no such organisation")?;
                    store::salons_of(db, org.id).await.map_err(explain)?
                }
                None => store::public_salons(db).await.map_err(explain)?,
            };
            for s in salons {
                let tiers = store::tiers(db, s.id).await.map_err(explain)?;
                println!("{}\t{}\t{}\t{} tiers\t{}", s.slug, s.status, s.currency.code(), tiers.len(), s.name_ja);
            }
        }
        SalonCommand::Create { org, file } => {
            let org = ledger::organisation_by_slug(db, &org).await?.context("no such organisation")?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("could not read {}", file.display()))?;
            let spec: SalonFile =
                serde_json::from_str(&text).with_context(|| format!("{} is not valid", file.display()))?;
            let salon = store::create_salon(db, org.id, &spec.salon).await.map_err(explain)?;
            for tier in &spec.tiers {
                store::add_tier(db, salon.id, tier)
                    .await
                    .map_err(explain)
                    .with_context(|| format!("tier {}", tier.slug))?;
            }
            for post in &spec.posts {
                store::add_post(db, salon.id, post)
                    .await
                    .map_err(explain)
                    .with_context(|| format!("post {}", post.title_ja))?;
            }
            println!(
                "created draft salon {} with {} tiers and {} posts; open it with `kanpa salon open {}`",
                salon.slug,
                spec.tiers.len(),
                spec.posts.len(),
                salon.slug
            );
        }
        SalonCommand::Open { slug } => {
            let salon = by_slug(db, &slug).await?;
            let salon = store::set_salon_status(db, salon.id, SalonStatus::Open).await.map_err(explain)?;
            println!("{} is open to new patrons", salon.slug);
        }
        SalonCommand::Close { slug } => {
            let salon = by_slug(db, &slug).await?;
            let salon = store::set_salon_status(db, salon.id, SalonStatus::Closed).await.map_err(explain)?;
            println!("{} takes no new patrons; memberships run on", salon.slug);
        }
        SalonCommand::Reprice { slug, tier } => reprice(config, db, &slug, &tier).await?,
        SalonCommand::Tiers { slug } => {
            let salon = by_slug(db, &slug).await?;
            for t in store::tiers(db, salon.id).await.map_err(explain)? {
                let seats = match t.seat_limit {
                    Some(limit) => format!("{}/{limit} seats", t.seats_taken),
                    None => format!("{} members", t.seats_taken),
                };
                let price = Money::new(t.monthly_price, t.currency).format(Locale::En);
                println!("{}\t{}\t{price}/month\t{seats}\t{}", t.slug, t.status, t.name_ja);
            }
        }
    }
    Ok(())
}
