//! The month-end renewal benchmark (issue 5): every patron of a salon renews
//! at once. Signed `invoice.paid` events arrive at the webhook endpoint of a
//! real `kanpa serve` process; the bench times how long until every invoice
//! has its gross ledger entry and its queued receipt email, reads the
//! server's memory from `/proc`, and checks the books afterwards.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use kanpa_ledger::{Db, Timestamp, on_db, store as ledger};
use kanpa_patrons::Salon;
use kanpa_patrons::store::{self as patrons, SalonInput, TierInput};
use kanpa_testkit::postgres::PgCluster;
use kanpa_testkit::stripe::FakeStripe;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::messaging::floor_rate;
use crate::target::{Target, cluster_for, event_jobs_left, events_pending, fresh, mail_dir, settle};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Paid invoices delivered (one per membership).
    #[arg(long, default_value_t = 100_000)]
    invoices: usize,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Concurrent HTTP clients posting events.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Worker loops in the server (jobs.concurrency).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Jobs a worker loop claims, and applies together, at once (jobs.batch).
    #[arg(long, default_value_t = 256)]
    batch: i64,
    /// Salons (each its own organisation) the memberships are spread over.
    #[arg(long, default_value_t = 1)]
    salons: usize,
    /// Seconds of the plain-INSERT floor.
    #[arg(long, default_value_t = 20)]
    floor_seconds: u64,
    /// Give up when not every invoice is applied after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// The `kanpa` binary to run (default: beside this one).
    #[arg(long)]
    kanpa: Option<PathBuf>,
    /// Where the server's file transport writes the receipt emails, one
    /// file each, in a new directory removed afterwards (default: /dev/shm
    /// where it exists, else the system's temporary directory; see
    /// `target::mail_dir` for why).
    #[arg(long)]
    mail_dir: Option<PathBuf>,
}

/// What every membership pays per month, and the fee the fake Stripe takes
/// from it (3.6 %, rounded).
const MONTHLY: i64 = 3000;
const FEE: i64 = (MONTHLY * 36 + 500) / 1000;

/// The Stripe ids of one renewal in the templates, replaced per invoice.
struct Ids {
    event: String,
    invoice: String,
    subscription: String,
    customer: String,
    payment_intent: String,
    charge: String,
    balance_transaction: String,
}

impl Ids {
    fn of(i: usize) -> Ids {
        Ids {
            event: format!("evt_renew_{i}"),
            invoice: format!("in_renew_{i}"),
            subscription: format!("sub_renew_{i}"),
            customer: format!("cus_renew_{i}"),
            payment_intent: format!("pi_renew_{i}"),
            charge: format!("ch_renew_{i}"),
            balance_transaction: format!("txn_renew_{i}"),
        }
    }

    fn all(&self) -> [&str; 7] {
        [
            &self.event,
            &self.invoice,
            &self.subscription,
            &self.customer,
            &self.payment_intent,
            &self.charge,
            &self.balance_transaction,
        ]
    }
}

/// A JSON text cut where the fake's ids appear, so that the copy about
/// renewal `i` is written in one pass (the load generator's own work stays
/// small beside the server's).
#[derive(Clone)]
struct Template {
    /// Text, then the id (by its place in [`Ids::all`]) that follows it.
    parts: Vec<(String, Option<usize>)>,
}

impl Template {
    fn cut(text: &str, ids: &Ids) -> Template {
        let ids = ids.all();
        let mut parts = Vec::new();
        let mut rest = text;
        loop {
            let next = ids.iter().enumerate().filter_map(|(n, id)| Some((rest.find(id)?, n))).min();
            match next {
                Some((at, n)) => {
                    parts.push((rest[..at].to_owned(), Some(n)));
                    rest = &rest[at + ids[n].len()..];
                }
                None => {
                    parts.push((rest.to_owned(), None));
                    return Template { parts };
                }
            }
        }
    }

    /// The text about renewal `i`.
    fn for_renewal(&self, i: usize) -> String {
        let ids = Ids::of(i);
        let ids = ids.all();
        let mut out = String::with_capacity(self.parts.iter().map(|(text, _)| text.len() + 24).sum());
        for (text, id) in &self.parts {
            out.push_str(text);
            if let Some(n) = id {
                out.push_str(ids[*n]);
            }
        }
        out
    }
}

/// One renewal as the fake Stripe built it: the signed event's body and the
/// objects the Stripe adapter reads when it asks what the payment took.
struct Templates {
    event: Template,
    objects: Vec<Template>,
    /// The ids the templates were cut at: the fake's own renewal.
    ids: Ids,
}

impl Templates {
    fn build(stripe: &FakeStripe) -> anyhow::Result<Templates> {
        let subscription = stripe.subscription(MONTHLY, "jpy", "month", "active", &[])?;
        let subscription_id = id(&subscription["id"])?;
        let invoice = stripe.invoice(Some(&subscription_id), MONTHLY, "jpy", "paid", &[])?;
        let payment_intent = id(&invoice["payments"]["data"][0]["payment"]["payment_intent"])?;
        let intent = stripe.object(&payment_intent).context("the invoice's PaymentIntent")?;
        let charge_id = id(&intent["latest_charge"])?;
        let charge = stripe.object(&charge_id).context("the PaymentIntent's charge")?;
        let balance_transaction_id = id(&charge["balance_transaction"])?;
        let balance_transaction = stripe.object(&balance_transaction_id).context("the charge's balance transaction")?;
        anyhow::ensure!(balance_transaction["fee"] == FEE, "the fake's fee is not {FEE}: {balance_transaction}");
        let event = stripe.event("invoice.paid", invoice.clone());
        let ids = Ids {
            event: id(&event["id"])?,
            invoice: id(&invoice["id"])?,
            subscription: subscription_id,
            customer: id(&invoice["customer"])?,
            payment_intent,
            charge: charge_id,
            balance_transaction: balance_transaction_id,
        };
        let mut objects = Vec::new();
        for object in [intent, charge, balance_transaction] {
            objects.push(Template::cut(&serde_json::to_string(&object)?, &ids));
        }
        Ok(Templates { event: Template::cut(&serde_json::to_string(&event)?, &ids), objects, ids })
    }
}

fn id(value: &Value) -> anyhow::Result<String> {
    value
        .as_str()
        .or_else(|| value["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no Stripe id in {value}"))
}

/// Organisations with a salon each, one tier at [`MONTHLY`], and
/// `invoices` active memberships spread over them, inserted in one
/// statement per salon.
async fn seed(db: &Db, args: &Args) -> anyhow::Result<Vec<Salon>> {
    let mut salons = Vec::new();
    for s in 0..args.salons.max(1) {
        let mut tx = db.begin().await?;
        let org = ledger::create_organisation(&mut tx, &format!("renewal-{s}"), "架空ドクターサロン").await?;
        tx.commit().await?;
        kanpa_payments::seller::update(db, org.id, &kanpa_payments::seller::fictional("架空ドクターサロン")).await?;
        let input = SalonInput {
            slug: format!("renewal-{s}"),
            name_ja: "月末更新サロン".into(),
            name_en: "Month-end salon".into(),
            currency: "JPY".into(),
            contact_email: "organiser@example.jp".into(),
            ..SalonInput::default()
        };
        let salon = patrons::create_salon(db, org.id, &input).await?;
        let tier = TierInput {
            slug: "member".into(),
            name_ja: "会員".into(),
            name_en: "Member".into(),
            monthly_price: MONTHLY,
            ..TierInput::default()
        };
        let tier = patrons::add_tier(db, salon.id, &tier).await?;
        let salon = patrons::set_salon_status(db, salon.id, kanpa_patrons::SalonStatus::Open).await?;
        let since = Timestamp::now().saturating_add(time::Duration::days(-30));
        let period_end = Timestamp::now().saturating_add(time::Duration::days(30));
        let insert = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1)
            INSERT INTO memberships (public_id, salon_id, tier_id, email, locale, amount, stripe_customer_id,
                stripe_subscription_id, status, current_period_end, since, created_at, updated_at)
            SELECT 'mb_renew_' || i, $2, $3, 'patron' || i || '@example.jp', 'ja', $4, 'cus_renew_' || i,
                'sub_renew_' || i, 'active', $5, $6, $6, $6
            FROM n WHERE i % $7 = $8";
        let seats = "UPDATE salon_tiers SET seats_taken = (SELECT COUNT(*) FROM memberships WHERE tier_id = $1)
                     WHERE id = $1";
        let mut tx = db.begin().await?;
        kanpa_ledger::on_tx!(&mut tx, c => {
            sqlx::query(insert).bind(args.invoices as i64).bind(salon.id).bind(tier.id).bind(MONTHLY)
                .bind(period_end).bind(since).bind(args.salons.max(1) as i64).bind(s as i64)
                .execute(&mut *c).await?;
            sqlx::query(seats).bind(tier.id).execute(&mut *c).await?.rows_affected()
        });
        tx.commit().await?;
        salons.push(salon);
    }
    Ok(salons)
}

/// The fake Stripe holding, for every invoice, the PaymentIntent, charge
/// and balance transaction the adapter reads (`GET /v1/payment_intents/…`
/// with the charge's balance transaction expanded).
fn stock(stripe: &FakeStripe, templates: &Templates, invoices: usize) -> anyhow::Result<()> {
    for i in 0..invoices {
        for object in &templates.objects {
            stripe.insert_object(serde_json::from_str(&object.for_renewal(i))?)?;
        }
    }
    Ok(())
}

/// What the Stripe adapter asks for each renewal: its PaymentIntent, with
/// the charge and balance transaction expanded.
const EXPAND_FEE: &str = "latest_charge.balance_transaction";

/// Has the fake answer the adapter's reads of renewal PaymentIntents from
/// one template of its own answer, with each renewal's ids filled in,
/// rather than render three stored objects into JSON for every read: the
/// fake shares the two cores with the server, and its rendering was most
/// of the bench's own CPU. The template's answer for renewal 0 is first
/// checked, byte for byte, against the fake's rendering of the objects
/// stocked for it. Keys, the request log and any other read are the
/// fake's as usual.
async fn answer_renewal_reads(stripe: &FakeStripe, templates: &Templates, invoices: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let read = |payment_intent: String| {
        let url = format!("{}v1/payment_intents/{payment_intent}?expand[]={EXPAND_FEE}", stripe.api_base());
        let request = http.get(url).bearer_auth("sk_test_renewal_bench");
        async move {
            let response = request.send().await?.error_for_status()?;
            anyhow::Ok(response.text().await?)
        }
    };
    let template: String = read(templates.ids.payment_intent.clone()).await?;
    anyhow::ensure!(template.contains(r#""object":"balance_transaction""#), "not expanded: {template}");
    let reply = Template::cut(&template, &templates.ids);
    let rendered = read(Ids::of(0).payment_intent).await?;
    anyhow::ensure!(reply.for_renewal(0) == rendered, "the kept answer differs from the fake's own: {rendered}");
    stripe.answer_reads_with(move |path, expand| {
        let i: usize = path.strip_prefix("/v1/payment_intents/pi_renew_")?.parse().ok()?;
        (i < invoices && expand == [EXPAND_FEE]).then(|| reply.for_renewal(i))
    });
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `kanpa serve` as its own process, on the Stripe gateway against the
/// fake, emails written as files into a new directory (see `--mail-dir`).
struct ServerProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    async fn start(kanpa: &PathBuf, target: &Target, stripe: &FakeStripe, args: &Args) -> anyhow::Result<Self> {
        let dir = mail_dir(args.mail_dir.as_deref())?;
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(kanpa)
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("KANPA_ENV")
            .env("KANPA__DATABASE__URL", &target.url)
            .env("KANPA__DATABASE__MAX_CONNECTIONS", "40")
            .env("KANPA__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("KANPA__SERVER__BASE_URL", &url)
            .env("KANPA__PAYMENTS__GATEWAY", "stripe")
            .env("KANPA__STRIPE__SECRET_KEY", "sk_test_renewal_bench")
            .env("KANPA__STRIPE__API_BASE", stripe.api_base())
            .env("KANPA__STRIPE__WEBHOOK_SECRETS", stripe.webhook_secret())
            .env("KANPA__JOBS__CONCURRENCY", args.workers.to_string())
            .env("KANPA__JOBS__BATCH", args.batch.to_string())
            .env("KANPA__JOBS__POLL_INTERVAL_MS", "20")
            .env("KANPA__MAIL__TRANSPORT", "file")
            .env("KANPA__MAIL__FILE_DIR", dir.path().join("outbox"))
            .env("KANPA__RECONCILE__EVERY_HOURS", "0")
            .env("KANPA__LOG__FILTER", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", kanpa.display()))?;
        let mut server = ServerProcess { child, url, _dir: dir };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("kanpa serve exited at start: {status}");
            }
            if client.get(format!("{}/healthz", server.url)).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(server);
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "kanpa serve did not answer /healthz");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resident set of a process, in KiB (`VmRSS` of `/proc/PID/status`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user and system) a process has used, from
/// `/proc/PID/stat`; with `reaped`, also those of its children that have
/// exited and been waited for.
fn cpu_seconds(pid: u32, reaped: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, ppid, …; utime and
    // stime are the 14th and 15th fields, cutime and cstime the next two.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    let ticks = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let own = ticks(14)? + ticks(15)?;
    let children = if reaped { ticks(16)? + ticks(17)? } else { 0.0 };
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((own + children) / per_second)
}

/// CPU seconds used by a PostgreSQL server: its main process and the
/// backends it has reaped, plus every process still running under it.
fn cluster_cpu_seconds(postmaster: u32) -> Option<f64> {
    let mut total = cpu_seconds(postmaster, true)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let parent = stat.get(stat.rfind(')').unwrap_or(0) + 2..).and_then(|rest| rest.split_whitespace().nth(1));
        if parent.and_then(|p| p.parse::<u32>().ok()) == Some(postmaster) {
            total += cpu_seconds(pid, false).unwrap_or(0.0);
        }
    }
    Some(total)
}

/// CPU seconds used so far by the server, the database server (none for
/// SQLite, which runs inside the server) and this process (the clients and
/// the fake Stripe).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    server: f64,
    database: f64,
    bench: f64,
}

impl CpuUse {
    fn now(server: u32, postmaster: Option<u32>) -> CpuUse {
        CpuUse {
            server: cpu_seconds(server, false).unwrap_or(0.0),
            database: postmaster.and_then(cluster_cpu_seconds).unwrap_or(0.0),
            bench: cpu_seconds(std::process::id(), false).unwrap_or(0.0),
        }
    }

    fn since(self, start: CpuUse) -> CpuUse {
        CpuUse {
            server: self.server - start.server,
            database: self.database - start.database,
            bench: self.bench - start.bench,
        }
    }
}

async fn scalar(db: &Db, sql: &'static str) -> anyhow::Result<i64> {
    Ok(on_db!(db, p => sqlx::query_scalar(sql).fetch_one(p).await?))
}

/// Receipts issued so far: one row per organisation, however many receipts.
/// A receipt commits with its payment's entries and its queued email, so
/// this counts invoices applied without scanning the outbox while the server
/// works; the books check afterwards counts the emails themselves.
const RECEIPTS_QUEUED: &str = "SELECT CAST(COALESCE(SUM(last_number), 0) AS BIGINT) FROM receipt_sequences";

struct Run {
    seeded: Duration,
    intake: Duration,
    refused: u64,
    events_applied: Duration,
    applied: Duration,
    peak_rss: u64,
    end_rss: u64,
    /// From the first request until every invoice was applied.
    cpu: CpuUse,
}

async fn renewal(
    target: &Target,
    cluster: Option<&PgCluster>,
    kanpa: &PathBuf,
    args: &Args,
) -> anyhow::Result<(Run, String)> {
    let n = args.invoices;
    let seeding = Instant::now();
    let stripe = FakeStripe::start().await?;
    let templates = Templates::build(&stripe)?;
    let salons = seed(&target.db, args).await?;
    stock(&stripe, &templates, n)?;
    answer_renewal_reads(&stripe, &templates, n).await?;
    let seeded = seeding.elapsed();
    let server = ServerProcess::start(kanpa, target, &stripe, args).await?;
    let pid = server.pid();

    let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
    let (stop_sampling, mut sampling_stopped) = tokio::sync::watch::channel(false);
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = sampling_stopped.changed() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    };

    let url = format!("{}/webhooks/stripe", server.url);
    let stripe = Arc::new(stripe);
    let templates = Arc::new(templates);
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let refused = Arc::new(AtomicU64::new(0));
    let postmaster = cluster.and_then(PgCluster::postmaster_pid);
    settle(&target.db).await?;
    let cpu_at_start = CpuUse::now(pid, postmaster);
    let started = Instant::now();
    let mut senders = JoinSet::new();
    for sender in 0..args.clients.max(1) {
        let (client, url, stripe, templates, refused) =
            (client.clone(), url.clone(), stripe.clone(), templates.clone(), refused.clone());
        let clients = args.clients.max(1);
        senders.spawn(async move {
            for i in (sender..n).step_by(clients) {
                let body = templates.event.for_renewal(i);
                // Stripe retries a delivery that was not answered 2xx.
                let mut attempt = 0;
                loop {
                    let signature = stripe.sign(&body, Timestamp::now().unix_seconds());
                    let response =
                        client.post(&url).header("stripe-signature", signature).body(body.clone()).send().await;
                    if response.is_ok_and(|r| r.status().is_success()) {
                        break;
                    }
                    refused.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    anyhow::ensure!(attempt < 10, "invoice {i} was refused ten times");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = senders.join_next().await {
        done??;
    }
    let intake = started.elapsed();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut reported = Instant::now();
    let mut events_applied = None;
    loop {
        if events_applied.is_none() && event_jobs_left(&target.db).await? == 0 {
            events_applied = Some(started.elapsed());
        }
        let queued = scalar(&target.db, RECEIPTS_QUEUED).await?;
        if queued as usize >= n {
            break;
        }
        if reported.elapsed() > Duration::from_secs(10) {
            eprintln!("  … {queued} of {n} receipts queued after {:.0} s", started.elapsed().as_secs_f64());
            reported = Instant::now();
        }
        anyhow::ensure!(Instant::now() < deadline, "only {queued} of {n} invoices applied after {} s", args.timeout);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let applied = started.elapsed();
    let cpu = CpuUse::now(pid, postmaster).since(cpu_at_start);
    // The clock has stopped: the inbox itself must agree that no event is
    // left, or the jobs counted above did not stand for the events.
    let pending = events_pending(&target.db).await?;
    anyhow::ensure!(pending == 0, "every receipt is queued, yet {pending} events are still pending");
    let end_rss = rss_kib(pid).unwrap_or(0);
    let _ = stop_sampling.send(true);
    sampler.await?;
    drop(server);
    let check = books(&target.db, &salons, n).await?;
    let payload = templates.event.for_renewal(0);
    let run = Run {
        seeded,
        intake,
        refused: refused.load(Ordering::Relaxed),
        events_applied: events_applied.unwrap_or(applied),
        applied,
        peak_rss: peak.load(Ordering::Relaxed),
        end_rss,
        cpu,
    };
    println!("{check}");
    Ok((run, payload))
}

/// `kanpa ledger check` and what a month-end must leave: each invoice
/// posted once, one receipt each with numbers 1..n per organisation, one
/// receipt email each, each salon's fund equal to its invoices' gross less
/// fees, no dead job.
async fn books(db: &Db, salons: &[Salon], n: usize) -> anyhow::Result<String> {
    let report = ledger::check(db).await?;
    anyhow::ensure!(report.is_clean(), "ledger check failed: {report:?}");
    let n = n as i64;
    let gross = "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'stripe:%:gross'";
    anyhow::ensure!(scalar(db, gross).await? == n, "gross entries: {} for {n} invoices", scalar(db, gross).await?);
    let fees = "SELECT COUNT(*) FROM ledger_entries WHERE idempotency_key LIKE 'stripe:%:fee'";
    anyhow::ensure!(scalar(db, fees).await? == n, "fee entries: {} for {n} invoices", scalar(db, fees).await?);
    let paid = "SELECT COUNT(DISTINCT stripe_charge_id) FROM membership_invoices WHERE status = 'paid'";
    anyhow::ensure!(scalar(db, paid).await? == n, "paid invoices: {} of {n}", scalar(db, paid).await?);
    let emails = "SELECT COUNT(DISTINCT idempotency_key) FROM outbox_emails WHERE template = 'membership_receipt'";
    anyhow::ensure!(scalar(db, emails).await? == n, "receipt emails: {} for {n}", scalar(db, emails).await?);
    let dead = "SELECT COUNT(*) FROM jobs WHERE state = 'dead'";
    anyhow::ensure!(scalar(db, dead).await? == 0, "dead jobs: {}", scalar(db, dead).await?);
    let mut funds = 0;
    for salon in salons {
        let sql = "SELECT COUNT(*), CAST(COALESCE(SUM(i.amount_paid - i.fee), 0) AS BIGINT), COUNT(DISTINCT r.number),
                          COALESCE(MAX(r.number), 0)
                   FROM membership_invoices i JOIN memberships m ON m.id = i.membership_id
                   JOIN receipts r ON r.source_kind = 'stripe-charge' AND r.source_ref = i.stripe_charge_id
                   WHERE m.salon_id = $1";
        let (invoices, net, numbers, highest): (i64, i64, i64, i64) =
            on_db!(db, p => sqlx::query_as(sql).bind(salon.id).fetch_one(p).await?);
        let fund = -ledger::balance(db, salon.fund_account).await?.amount();
        anyhow::ensure!(
            fund == net && net == invoices * (MONTHLY - FEE),
            "salon {}: fund {fund}, invoices' gross less fees {net}, {invoices} invoices",
            salon.slug
        );
        anyhow::ensure!(
            numbers == invoices && highest == invoices,
            "salon {}: {invoices} receipts numbered {numbers} ways up to {highest}",
            salon.slug
        );
        funds += fund;
    }
    Ok(format!("{:<40} {:>12}", "books", format!("clean: {n} posted once, receipts 1..n, funds ¥{funds}")))
}

fn kanpa_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.kanpa {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("kanpa"),
    };
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it first (cargo build --release -p kanpa-server --bin kanpa) or pass --kanpa",
        path.display()
    );
    Ok(path)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let kanpa = kanpa_binary(&args)?;
    println!(
        "renewal bench: {} invoice.paid events from {} clients to kanpa serve ({} worker loops claiming {}), {} salon(s)",
        args.invoices, args.clients, args.workers, args.batch, args.salons
    );
    for backend in &args.backends {
        let cluster: Option<&'static PgCluster> = cluster_for(backend)?;
        println!("\n== {backend}");
        let target = fresh(backend, cluster).await?;
        let (run, payload) = renewal(&target, cluster, &kanpa, &args).await?;
        drop(target);
        let floor_target = fresh(backend, cluster).await?;
        settle(&floor_target.db).await?;
        let floor = floor_rate(&floor_target, payload, args.clients, Duration::from_secs(args.floor_seconds)).await?;
        let n = args.invoices as f64;
        let intake_rate = n / run.intake.as_secs_f64();
        let applied_rate = n / run.applied.as_secs_f64();
        println!("{:<40} {:>12.1} s", "seeded memberships and fake Stripe", run.seeded.as_secs_f64());
        println!("{:<40} {:>12.0} /s ({:.1} s)", "webhook intake", intake_rate, run.intake.as_secs_f64());
        println!("{:<40} {:>12}", "  refused (retried)", run.refused);
        println!("{:<40} {:>12.1} s", "every invoice.paid event applied after", run.events_applied.as_secs_f64());
        println!("{:<40} {:>12.1} s", "every invoice applied after", run.applied.as_secs_f64());
        println!("{:<40} {:>12.0} /s", "applied", applied_rate);
        println!("{:<40} {:>12.0} /s", "floor (plain single-row INSERTs)", floor);
        println!("{:<40} {:>12.2}", "applied / floor", applied_rate / floor);
        println!("{:<40} {:>12.2}", "intake / floor", intake_rate / floor);
        println!("{:<40} {:>12.0} MiB", "server RSS, peak", run.peak_rss as f64 / 1024.0);
        println!("{:<40} {:>12.0} MiB", "server RSS, at the end", run.end_rss as f64 / 1024.0);
        // Where the machine's time went, from the first request until every
        // invoice was applied: steadier from run to run than the rates,
        // which move with whatever else the cores were doing.
        let per_invoice = |seconds: f64| seconds * 1e6 / args.invoices.max(1) as f64;
        let cpu = run.cpu;
        for (what, seconds) in [("server", cpu.server), ("database server", cpu.database), ("bench", cpu.bench)] {
            println!("{:<40} {:>12.0} µs", format!("CPU per invoice, {what}"), per_invoice(seconds));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let busy = (cpu.server + cpu.database + cpu.bench) / (run.applied.as_secs_f64() * cores);
        println!("{:<40} {:>12.0} %", format!("of {cores} cores busy with these"), busy * 100.0);
    }
    Ok(())
}
