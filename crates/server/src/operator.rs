//! The operator commands behind `kanpa org|mail|stripe|webhooks|jobs`.
//! Each prints what it did in plain lines and fails with a reason.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kanpa_ledger::{Locale, Timestamp, store};
use kanpa_messaging::email::{EmailAddress, EmailTemplate};
use kanpa_messaging::inbox::{self, IncomingEvent, Intake, Via};
use kanpa_messaging::{hooks, jobs, outbox};

use crate::app;
use crate::cli::{OrgCommand, WebhooksCommand};
use crate::config::Config;
use crate::workers::{self, Extras};

pub async fn org(config: Config, command: OrgCommand) -> anyhow::Result<()> {
    let db = app::connect(&config).await?;
    match command {
        OrgCommand::List => {
            for org in store::organisations(&db).await? {
                println!("{}\t{}", org.slug, org.name);
            }
        }
        OrgCommand::Add { slug, name } => {
            let valid = !slug.is_empty()
                && slug.len() <= 64
                && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                bail!("the slug may use a-z, 0-9 and -, at most 64 characters");
            }
            let mut tx = db.begin().await?;
            let org = store::create_organisation(&mut tx, &slug, name.trim()).await?;
            tx.commit().await?;
            println!("created organisation {} ({})", org.slug, org.name);
        }
        OrgCommand::Settings(args) => {
            let result = crate::seller_cli::run(&db, *args).await;
            db.close().await;
            return result;
        }
    }
    db.close().await;
    Ok(())
}

/// Queues a test message, then runs this process's workers until it is
/// sent or has failed, so the operator sees the outcome at once.
pub async fn mail_test(config: Config, to: &str, lang: &str) -> anyhow::Result<()> {
    let to = EmailAddress::parse(to).context("--to is not an email address")?;
    let locale = Locale::parse(lang).context("--lang must be ja or en")?;
    let db = app::connect(&config).await?;
    let workers = workers::build(&config, db.clone(), Extras::default())?;
    let email = outbox::NewEmail {
        key: format!("mail-test:{}", uuid::Uuid::now_v7()),
        to,
        to_name: None,
        locale,
        template: EmailTemplate::TestMessage { sent_from: config.server.base_url.clone() },
    };
    let mut tx = db.begin().await?;
    let queued = outbox::enqueue(&mut tx, &email, &config.host()).await?;
    tx.commit().await?;
    let outbox::Queued::New(id) = queued else { bail!("the test message was already queued") };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        workers.run_one("mail-test").await?;
        let row = outbox::get(&db, id).await?.context("the queued message disappeared")?;
        match row.status.as_str() {
            "sent" => {
                println!("sent test message to {} ({})", row.to_address, row.message_id);
                break;
            }
            "failed" => bail!("the message was refused: {}", row.last_error.unwrap_or_default()),
            _ if Instant::now() > deadline => {
                bail!(
                    "not sent within 60 s (last error: {}); it stays queued and `kanpa serve` will keep trying",
                    row.last_error.unwrap_or_default()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    db.close().await;
    Ok(())
}

/// "3d", "12h", "30m", "45s".
pub fn parse_since(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().with_context(|| format!("{text:?} is not a duration like 3d, 12h or 30m"))?;
    let seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => bail!("{text:?} is not a duration like 3d, 12h or 30m"),
    };
    if n == 0 || n > 30 * 86_400 / seconds {
        bail!("--since must be between 1s and 30d (Stripe keeps events for 30 days)");
    }
    Ok(Duration::from_secs(n * seconds))
}

pub async fn stripe_backfill(config: Config, since: &str) -> anyhow::Result<()> {
    let window = parse_since(since)?;
    let db = app::connect(&config).await?;
    let client = kanpa_payments::stripe_api::client(config.stripe.secret_key.expose(), &config.stripe.api_base)
        .context("could not build the Stripe client (stripe.secret_key, stripe.api_base)")?;
    let start = Timestamp::now().saturating_add(-time::Duration::try_from(window)?);
    let events = kanpa_payments::stripe_api::events_since(&client, start).await.context("listing Stripe events")?;
    let (mut new, mut known) = (0, 0);
    for (i, payload) in events.iter().enumerate() {
        let event = IncomingEvent::from_json(payload).context("Stripe returned an event without an envelope")?;
        match inbox::receive(&db, &event, Via::Backfill).await? {
            Intake::Stored => new += 1,
            Intake::Duplicate => known += 1,
        }
        if (i + 1) % 100 == 0 {
            eprintln!("… {} of {} events", i + 1, events.len());
        }
    }
    println!(
        "backfill since {start}: {} events listed, {new} new (queued for processing), {known} already in the inbox",
        events.len()
    );
    db.close().await;
    Ok(())
}

pub async fn webhooks(config: Config, command: WebhooksCommand) -> anyhow::Result<()> {
    let db = app::connect(&config).await?;
    match command {
        WebhooksCommand::Add { org, url, events } => {
            let org =
                store::organisation_by_slug(&db, &org).await?.with_context(|| format!("no organisation {org:?}"))?;
            let mut tx = db.begin().await?;
            let endpoint =
                hooks::register(&mut tx, org.id, &url, &events, config.webhooks.allow_http_loopback).await??;
            tx.commit().await?;
            println!("endpoint {} registered for {}", endpoint.id, endpoint.event_kinds.join(","));
            println!("signing secret (shown once): {}", endpoint.secret);
        }
        WebhooksCommand::Log { org, limit } => {
            let org =
                store::organisation_by_slug(&db, &org).await?.with_context(|| format!("no organisation {org:?}"))?;
            for delivery in hooks::delivery_log(&db, org.id, limit).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    delivery.id, delivery.event_kind, delivery.status, delivery.endpoint_url, delivery.event_id
                );
                for attempt in delivery.attempts {
                    let code = attempt.status_code.map_or("-".to_owned(), |c| c.to_string());
                    println!(
                        "\t{}\t{code}\t{} ms\t{}",
                        attempt.attempted_at,
                        attempt.duration_ms,
                        attempt.error.unwrap_or_default()
                    );
                }
            }
        }
    }
    db.close().await;
    Ok(())
}

pub async fn jobs(config: Config) -> anyhow::Result<()> {
    let db = app::connect(&config).await?;
    let (ready, running, dead) = jobs::counts(&db).await?;
    println!("ready {ready}, running {running}, dead {dead}");
    for job in jobs::dead_jobs(&db).await? {
        println!(
            "dead job {} ({}), {} attempts: {}",
            job.id,
            job.kind,
            job.attempts,
            job.last_error.unwrap_or_default()
        );
    }
    db.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_understands_days_hours_minutes() {
        assert_eq!(parse_since("3d").unwrap(), Duration::from_secs(3 * 86_400));
        assert_eq!(parse_since("12h").unwrap(), Duration::from_secs(12 * 3_600));
        assert_eq!(parse_since("30m").unwrap(), Duration::from_secs(1_800));
        assert!(parse_since("31d").is_err());
        assert!(parse_since("0d").is_err());
        assert!(parse_since("soon").is_err());
        assert!(parse_since("3w").is_err());
    }
}
