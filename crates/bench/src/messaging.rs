//! The messaging benchmark: Stripe webhook intake over HTTP, the time to
//! apply every stored event, and email throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kanpa_ledger::{
    AccountKind, Currency, Db, EntryHeader, IdempotencyKey, Money, NewAccount, NewEntry, OrgId, Timestamp, Tx, on_db,
    store,
};
use kanpa_messaging::email::{EmailAddress, EmailTemplate};
use kanpa_messaging::inbox::{EventHandlers, Handled, StoredEvent, StripeEventHandler};
use kanpa_messaging::mailer::{Mailer, SmtpMailer};
use kanpa_messaging::outbox::{self, NewEmail};
use kanpa_server::app::Server;
use kanpa_server::config::{Config, Overrides, Secret};
use kanpa_server::workers::{self, Extras};
use kanpa_testkit::postgres::{Durability, PgCluster};
use kanpa_testkit::smtp::SmtpSink;
use kanpa_testkit::stripe::FakeStripe;
use tokio::task::JoinSet;

use crate::target::{Target, event_jobs_left, events_pending, fresh, mail_dir, settle};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of webhook intake.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent HTTP clients posting events.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Emails sent per transport.
    #[arg(long, default_value_t = 2000)]
    emails: usize,
    /// Worker loops in the server (jobs.concurrency). Two loops applying
    /// large batches leave the most of the two cores to intake; more loops
    /// apply as events arrive, in small batches, and intake slows.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Jobs a worker loop claims, and events it applies, at once (jobs.batch).
    #[arg(long, default_value_t = 64)]
    batch: i64,
}

/// Books each event, as a real handler would: one ledger entry per event.
struct BookEvent {
    org: OrgId,
    stripe: kanpa_ledger::AccountId,
    fund: kanpa_ledger::AccountId,
}

#[async_trait]
impl StripeEventHandler for BookEvent {
    async fn handle(&self, tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<Handled> {
        let header = EntryHeader {
            org: self.org,
            key: IdempotencyKey::parse(format!("evt:{}", event.id))?,
            occurred_at: event.created,
            description: "bench charge".into(),
            source: None,
            recorded_by: None,
        };
        store::post(tx, &NewEntry::transfer(header, self.stripe, self.fund, Money::yen(3000))?).await?;
        Ok(Handled::Applied)
    }
}

fn config(url: &str, webhook_secret: &str, workers: usize, batch: i64) -> anyhow::Result<Config> {
    let mut config = Config::load_env("development", &Overrides::default())?;
    config.database.url = Secret::new(url);
    config.database.max_connections = 40;
    config.server.bind = "127.0.0.1:0".parse()?;
    config.stripe.webhook_secrets = Secret::new(webhook_secret);
    config.jobs.poll_interval_ms = 20;
    config.jobs.concurrency = workers;
    config.jobs.batch = batch;
    config.log.filter = "error".into();
    Ok(config)
}

struct Intake {
    accepted: u64,
    refused: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    drained_after: Duration,
}

async fn intake(target: &Target, args: &Args) -> anyhow::Result<Intake> {
    let stripe = FakeStripe::start().await?;
    let mut tx = target.db.begin().await?;
    let org = store::create_organisation(&mut tx, "bench", "Bench").await?;
    let account = |code: &str, kind| NewAccount {
        org: org.id,
        code: code.to_owned(),
        name: code.to_owned(),
        kind,
        currency: Currency::Jpy,
    };
    let stripe_account = store::create_account(&mut tx, &account("1100", AccountKind::Asset)).await?;
    let fund = store::create_account(&mut tx, &account("3000", AccountKind::Fund)).await?;
    tx.commit().await?;
    let mut handlers = EventHandlers::default();
    handlers
        .register("charge.succeeded", Arc::new(BookEvent { org: org.id, stripe: stripe_account.id, fund: fund.id }));
    let server = Server::build_with(
        config(&target.url, &stripe.webhook_secret(), args.workers, args.batch)?,
        Extras { event_handlers: handlers, mailer: None },
    )
    .await?;
    let url = format!("http://{}/webhooks/stripe", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let template = stripe.event("charge.succeeded", stripe.charge(3000, "jpy", 0, &[])?);
    let template_id = template["id"].as_str().unwrap_or_default().to_owned();
    // Each event is about its own charge, as in real traffic: events about
    // one object are applied one at a time.
    let template_charge = template["data"]["object"]["id"].as_str().unwrap_or_default().to_owned();
    let template = serde_json::to_string(&template)?;
    let stripe = Arc::new(stripe);
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    settle(&target.db).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut senders = JoinSet::new();
    for sender in 0..args.clients {
        let (client, url, template, template_id, template_charge, stripe) = (
            client.clone(),
            url.clone(),
            template.clone(),
            template_id.clone(),
            template_charge.clone(),
            stripe.clone(),
        );
        let (accepted, refused) = (accepted.clone(), refused.clone());
        senders.spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let body = template
                    .replace(&template_id, &format!("evt_bench_{sender}_{n}"))
                    .replace(&template_charge, &format!("ch_bench_{sender}_{n}"));
                n += 1;
                let signature = stripe.sign(&body, Timestamp::now().unix_seconds());
                let sent = Instant::now();
                let response = client.post(&url).header("stripe-signature", signature).body(body).send().await;
                latencies.push(sent.elapsed());
                match response {
                    Ok(r) if r.status().is_success() => accepted.fetch_add(1, Ordering::Relaxed),
                    _ => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = senders.join_next().await {
        latencies.extend(done?);
    }
    let elapsed = started.elapsed();
    while event_jobs_left(&target.db).await? > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_after = started.elapsed();
    // The clock has stopped: the inbox itself must agree that no event is
    // left, or the jobs counted above did not stand for the events.
    let pending = events_pending(&target.db).await?;
    anyhow::ensure!(pending == 0, "no job is left, yet {pending} events are still pending");
    let report = store::check(&target.db).await?;
    anyhow::ensure!(report.is_clean(), "ledger check failed after intake: {report:?}");
    let _ = stop.send(());
    running.await??;
    latencies.sort_unstable();
    let at = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    Ok(Intake {
        accepted: accepted.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        elapsed,
        p50: at(0.50).copied().unwrap_or_default(),
        p99: at(0.99).copied().unwrap_or_default(),
        drained_after,
    })
}

/// The floor: plain single-row INSERTs of the same payloads, by as many
/// concurrent writers, into a bare table of the same database.
async fn floor(target: &Target, args: &Args) -> anyhow::Result<f64> {
    let stripe = FakeStripe::start().await?;
    let payload = serde_json::to_string(&stripe.event("charge.succeeded", stripe.charge(3000, "jpy", 0, &[])?))?;
    floor_rate(target, payload, args.clients, Duration::from_secs(args.seconds)).await
}

/// Rows/s of `writers` concurrent writers inserting `payload` under fresh
/// ids, one plain single-row INSERT each, for `seconds`, into a bare table
/// made for it in `target` (the intake floor other benches compare with).
pub(crate) async fn floor_rate(
    target: &Target,
    payload: String,
    writers_n: usize,
    seconds: Duration,
) -> anyhow::Result<f64> {
    let create = "CREATE TABLE bench_floor (id TEXT PRIMARY KEY, payload TEXT NOT NULL)";
    let mut tx = target.db.begin().await?;
    kanpa_ledger::on_tx!(&mut tx, c => sqlx::query(create).execute(c).await?.rows_affected());
    tx.commit().await?;
    let inserted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + seconds;
    let mut writers = JoinSet::new();
    for writer in 0..writers_n {
        let (db, payload, inserted) = (target.db.clone(), payload.clone(), inserted.clone());
        writers.spawn(async move {
            let insert = "INSERT INTO bench_floor (id, payload) VALUES ($1, $2)";
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = format!("evt_floor_{writer}_{n}");
                n += 1;
                match &db {
                    Db::Sqlite { write, .. } => {
                        sqlx::query(insert).bind(id).bind(&payload).execute(write).await?.rows_affected()
                    }
                    Db::Postgres(pool) => {
                        sqlx::query(insert).bind(id).bind(&payload).execute(pool).await?.rows_affected()
                    }
                };
                inserted.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    Ok(inserted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Sends `n` emails through `mailer` with this process's workers; messages/s.
async fn emails(target: &Target, n: usize, workers: usize, mailer: Arc<dyn Mailer>) -> anyhow::Result<f64> {
    let config = config(&target.url, "whsec_unused", workers, 8)?;
    let pool = workers::build(
        &config,
        target.db.clone(),
        Extras { event_handlers: EventHandlers::default(), mailer: Some(mailer) },
    )?;
    let started = Instant::now();
    let mut tx = target.db.begin().await?;
    for i in 0..n {
        let email = NewEmail {
            key: format!("bench:{}:{i}", uuid_like(started)),
            to: EmailAddress::parse(&format!("patron{i}@example.jp"))?,
            to_name: None,
            locale: kanpa_ledger::Locale::Ja,
            template: EmailTemplate::TestMessage { sent_from: "kanpa-bench".into() },
        };
        outbox::enqueue(&mut tx, &email, "bench.kanpa").await?;
    }
    tx.commit().await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(pool.run(stopped));
    loop {
        let sql = "SELECT COUNT(*) FROM outbox_email_states WHERE status = 'pending'";
        let left: i64 = on_db!(&target.db, p => sqlx::query_scalar(sql).fetch_one(p).await?);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    running.await?;
    Ok(rate)
}

fn uuid_like(started: Instant) -> u128 {
    started.elapsed().as_nanos() ^ u128::from(std::process::id())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "messaging bench: {} clients posting signed Stripe events for {} s; {} emails per transport; {} worker loops claiming {} jobs at once",
        args.clients, args.seconds, args.emails, args.workers, args.batch
    );
    for backend in &args.backends {
        let cluster: Option<&'static PgCluster> = if backend == "postgres" {
            Some(Box::leak(Box::new(PgCluster::start(Durability::Durable)?)))
        } else {
            None
        };
        println!("\n== {backend}");
        let target = fresh(backend, cluster).await?;
        let measured = intake(&target, &args).await?;
        let floor_target = fresh(backend, cluster).await?;
        settle(&floor_target.db).await?;
        let floor_rate = floor(&floor_target, &args).await?;
        let rate = measured.accepted as f64 / measured.elapsed.as_secs_f64();
        println!("{:<40} {:>12.0} /s", "webhook intake (accepted events)", rate);
        println!("{:<40} {:>12}", "  refused", measured.refused);
        println!("{:<40} {:>12.1} ms", "  p50 latency", measured.p50.as_secs_f64() * 1e3);
        println!("{:<40} {:>12.1} ms", "  p99 latency", measured.p99.as_secs_f64() * 1e3);
        println!("{:<40} {:>12.0} /s", "floor (plain single-row INSERTs)", floor_rate);
        println!("{:<40} {:>12.2}", "intake / floor", rate / floor_rate);
        println!(
            "{:<40} {:>12.1} s ({:.2}x the intake time)",
            "all events applied after",
            measured.drained_after.as_secs_f64(),
            measured.drained_after.as_secs_f64() / measured.elapsed.as_secs_f64()
        );
        let file_dir = mail_dir(None)?;
        let file_rate = emails(
            &fresh(backend, cluster).await?,
            args.emails,
            args.workers,
            Arc::new(kanpa_messaging::mailer::FileMailer::new(file_dir.path())),
        )
        .await?;
        println!("{:<40} {:>12.0} /s", "emails through the file transport", file_rate);
        let sink = SmtpSink::start()?;
        let smtp = SmtpMailer::from_url(&sink.url()).map_err(anyhow::Error::msg)?;
        let smtp_rate = emails(&fresh(backend, cluster).await?, args.emails, args.workers, Arc::new(smtp)).await?;
        anyhow::ensure!(sink.messages().len() == args.emails, "the sink did not receive every email");
        println!("{:<40} {:>12.0} /s", "emails through SMTP to the sink", smtp_rate);
    }
    Ok(())
}
