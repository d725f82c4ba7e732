//! The `kanpa` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kanpa_ledger::store;

use crate::app::{self, Server};
use crate::config::{Config, Overrides};
use crate::operator;
use crate::telemetry;

/// kanpa: self-hostable crowdfunding and membership billing on one
/// double-entry ledger.
///
/// Configuration comes from config/default.toml, then config/$KANPA_ENV.toml,
/// then KANPA__SECTION__KEY environment variables (for example
/// KANPA__DATABASE__URL=postgres://… or KANPA__SERVER__BIND=127.0.0.1:9000).
#[derive(Debug, Parser)]
#[command(name = "kanpa", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server (and its background workers) until Ctrl-C or SIGTERM.
    Serve {
        /// Address to listen on, overriding server.bind.
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
        /// Seed the demonstration drive first (once; restarts find it and seed nothing).
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Inspect the books.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Organisations (tenants) on this server.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Email: send a test message through the configured transport.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Stripe: pull events the webhook endpoint missed.
    Stripe {
        #[command(subcommand)]
        command: StripeCommand,
    },
    /// Outgoing webhooks of an organisation.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Background jobs: counts by state and the ones that gave up.
    Jobs,
    /// Funding drives: create from a JSON file, publish, settle, report.
    Campaign {
        #[command(subcommand)]
        command: CampaignCommand,
    },
    /// Patron salons: create from a JSON file with tiers, open, close, list.
    Salon {
        #[command(subcommand)]
        command: SalonCommand,
    },
    /// API tokens of an organisation.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Staff of an organisation (who may sign in to the console at /admin).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Write the books to stdout: the journal (one row per posting), the
    /// trial balance or the funds' ledger, as CSV, freee, Money Forward (mf)
    /// or Yayoi journal imports, hledger or Beancount; or the pledges or
    /// patrons as CSV.
    Export {
        /// journal, trial-balance, fund, pledges or patrons.
        report: String,
        /// Only this organisation (default: every one).
        #[arg(long, value_name = "SLUG")]
        org: Option<String>,
        /// Only entries touching this fund account (repeatable); other funds
        /// in them are shown summed as "funds:other".
        #[arg(long = "fund", value_name = "CODE")]
        funds: Vec<String>,
        /// First day, YYYY-MM-DD (dates in Japan).
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Last day, YYYY-MM-DD, included.
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        /// csv, freee, mf, yayoi, hledger or beancount.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Start CSV with a UTF-8 byte-order mark (for Excel).
        #[arg(long)]
        bom: bool,
    },
    /// Import Stripe's balance transactions and payouts, post missing fees
    /// and payouts (Stripe balance to in transit), and list what does not tie
    /// out on either side; exits 1 if anything is unmatched.
    Reconcile {
        /// Only this organisation's Stripe objects (default: all, and the
        /// Stripe balance compared with Stripe's).
        #[arg(long, value_name = "SLUG")]
        org: Option<String>,
        /// Only balance transactions from this day (YYYY-MM-DD, Japan) on;
        /// without it, the whole history.
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
    },
    /// Stripe payouts on their way to the bank.
    Payout {
        #[command(subcommand)]
        command: PayoutCommand,
    },
    /// Bank statements: confirm the payouts they show arriving.
    Bank {
        #[command(subcommand)]
        command: BankCommand,
    },
    /// Exit 0 if the server at ADDR answers /healthz (for container health checks).
    Healthcheck {
        /// Address of the running server; defaults to server.bind.
        #[arg(long, value_name = "ADDR")]
        addr: Option<SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// One campaign per line: slug, status, raised/goal, backers, deadline.
    List {
        #[arg(long, value_name = "SLUG")]
        org: Option<String>,
    },
    /// Create a draft from FILE: the API's campaign fields, plus optional
    /// "teams" and "rewards" arrays (see /api/v1/openapi.json).
    Create {
        #[arg(long, value_name = "SLUG")]
        org: String,
        file: std::path::PathBuf,
    },
    /// Open a draft for pledges.
    Publish { slug: String },
    /// Settle now: charge (all-or-nothing, goal met), or tell everyone the
    /// goal was missed, or close (keep-it-all). Resumes an interrupted run.
    Settle {
        slug: String,
        /// Settle even though the deadline has not passed.
        #[arg(long)]
        before_deadline: bool,
    },
    /// Print the settlement report.
    Report { slug: String },
}

#[derive(Debug, Subcommand)]
pub enum SalonCommand {
    /// One salon per line: slug, status, currency, tiers.
    List {
        #[arg(long, value_name = "SLUG")]
        org: Option<String>,
    },
    /// Create a draft from FILE: the API's salon fields, plus optional
    /// "tiers" and "posts" arrays (see /api/v1/openapi.json).
    Create {
        #[arg(long, value_name = "SLUG")]
        org: String,
        file: std::path::PathBuf,
    },
    /// Open a salon to new patrons.
    Open { slug: String },
    /// Take no new patrons; memberships run on.
    Close { slug: String },
    /// One tier per line: slug, status, monthly price, seats.
    Tiers { slug: String },
    /// Move a tier's renewing patrons onto its current price from their next
    /// renewal (no proration), emailing each the new amount; rerun to finish
    /// after a failure.
    Reprice { slug: String, tier: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (it is shown only once).
    Create {
        #[arg(long, value_name = "SLUG")]
        org: String,
        /// owner, organiser, treasurer or viewer.
        #[arg(long, default_value = "organiser")]
        role: String,
        /// A name to recognise (and revoke) it by.
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// Revoke the tokens with this label.
    Revoke {
        #[arg(long, value_name = "SLUG")]
        org: String,
        #[arg(long)]
        label: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Give a person a role in an organisation and print a single-use
    /// sign-in link for them (valid for three days).
    Add {
        #[arg(long, value_name = "SLUG")]
        org: String,
        #[arg(long, value_name = "ADDRESS")]
        email: String,
        /// owner, organiser, treasurer or viewer.
        #[arg(long)]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PayoutCommand {
    /// The payout arrived: move it from in transit to the bank.
    Confirm {
        #[arg(long, value_name = "SLUG")]
        org: String,
        /// The Stripe payout id (po_…), as `kanpa reconcile` posted it.
        payout: String,
        /// The day it arrived (YYYY-MM-DD); today without.
        #[arg(long, value_name = "DATE")]
        on: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BankCommand {
    /// Read a bank statement (UTF-8 CSV) and confirm each payout in transit
    /// whose deposit it shows (same amount, within a week).
    Import {
        #[arg(long, value_name = "SLUG")]
        org: String,
        /// generic (date,amount,description) or jp (日付, 摘要, お支払金額, お預り金額, …).
        #[arg(long, default_value = "generic")]
        layout: String,
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Print one organisation per line: slug, then name.
    List,
    /// Create an organisation.
    Add {
        /// Short unique name used in URLs and exports (a-z, 0-9, -).
        slug: String,
        /// The name people see.
        name: String,
    },
    /// Show or change the seller details: the legal disclosure page and the receipts' issuer.
    Settings(Box<crate::seller_cli::SettingsArgs>),
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Queue a test message to ADDRESS and send it now; exits 1 if it fails.
    Test {
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        /// Language of the message: ja or en.
        #[arg(long, default_value = "ja")]
        lang: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum StripeCommand {
    /// List events from the Stripe API created in the last DURATION (e.g. 3d,
    /// 12h, 30m) and queue every one the inbox has not seen.
    Backfill {
        #[arg(long, value_name = "DURATION", default_value = "3d")]
        since: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Register an endpoint; prints its signing secret once.
    Add {
        #[arg(long, value_name = "SLUG")]
        org: String,
        #[arg(long)]
        url: String,
        /// Comma-separated event kinds, e.g. pledge.created,campaign.goal_reached.
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// Show the newest deliveries with every attempt's status code.
    Log {
        #[arg(long, value_name = "SLUG")]
        org: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every balance from its postings and verify every entry
    /// balances; exits 1 and reports each mismatch if any.
    Check,
}

/// Runs the command; the exit code is the process's.
pub async fn run(cli: Cli) -> ExitCode {
    let overrides = match &cli.command {
        Command::Serve { bind, .. } => Overrides { bind: *bind },
        _ => Overrides::default(),
    };
    let config = match Config::load(&overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kanpa: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(&config.log);
    let result = match cli.command {
        Command::Serve { demo, .. } => serve(config, demo).await,
        Command::Migrate => migrate(config).await,
        Command::Ledger { command: LedgerCommand::Check } => return ledger_check(config).await,
        Command::Healthcheck { addr } => {
            return healthcheck(addr.unwrap_or(config.server.bind)).await;
        }
        Command::Org { command } => operator::org(config, command).await,
        Command::Mail { command: MailCommand::Test { to, lang } } => operator::mail_test(config, &to, &lang).await,
        Command::Stripe { command: StripeCommand::Backfill { since } } => {
            operator::stripe_backfill(config, &since).await
        }
        Command::Webhooks { command } => operator::webhooks(config, command).await,
        Command::Jobs => operator::jobs(config).await,
        Command::Campaign { command } => crate::campaign_cli::run(config, command).await,
        Command::Salon { command } => crate::salon_cli::run(config, command).await,
        Command::Token { command } => crate::campaign_cli::token(config, command).await,
        Command::User { command } => crate::staff::cli::run(config, command).await,
        Command::Payout { command: PayoutCommand::Confirm { org, payout, on } } => {
            crate::books_cli::confirm_payout(config, org, payout, on).await
        }
        Command::Bank { command: BankCommand::Import { org, layout, file } } => {
            crate::books_cli::import_bank(config, org, layout, file).await
        }
        Command::Reconcile { org, since } => {
            return match crate::books_cli::reconcile(config, org, since).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("kanpa: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Export { report, org, funds, from, to, format, bom } => {
            let args = crate::books_cli::ExportArgs { report, org, funds, from, to, format, bom };
            crate::books_cli::run(config, args).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kanpa: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    let demo_config = demo.then(|| config.clone());
    let server = Server::build(config).await?;
    if demo {
        let seeded = kanpa_campaigns::demo::seed(server.db(), kanpa_ledger::Timestamp::now()).await?;
        let base = server.base_url();
        if seeded {
            println!("demo drive seeded: {base}/c/{}", kanpa_campaigns::demo::DEMO_CAMPAIGN);
        } else {
            println!("demo drive already there: {base}/c/{}", kanpa_campaigns::demo::DEMO_CAMPAIGN);
        }
        let salon = kanpa_patrons::demo::DEMO_SALON;
        if kanpa_patrons::demo::seed(server.db(), kanpa_ledger::Timestamp::now()).await? {
            println!("demo salon seeded: {base}/s/{salon}");
            // The demo's payouts reach in transit, and the console shows the
            // demo month reconciled, from the start.
            let config = anyhow::Context::context(demo_config.as_ref(), "the demo's configuration")?;
            let source = crate::reconcile::source(config, server.db())?;
            let outcome = crate::reconcile::run(server.db(), source.as_ref(), None, None, &mut |_| {}).await?;
            let unmatched = outcome.report.unmatched_provider.len() + outcome.report.unmatched_ledger.len();
            println!("demo books reconciled against the {}: {unmatched} unmatched", outcome.source);
        } else {
            println!("demo salon already there: {base}/s/{salon}");
        }
    }
    tracing::info!(address = %server.local_addr(), backend = server.db().backend().name(), "kanpa is serving");
    server.run(app::shutdown_signal()).await
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let db = app::connect(&config).await?;
    println!("migrations applied ({})", db.backend().name());
    db.close().await;
    Ok(())
}

async fn ledger_check(config: Config) -> ExitCode {
    let report = async {
        let db = app::connect(&config).await?;
        let report = store::check(&db).await?;
        db.close().await;
        anyhow::Ok(report)
    }
    .await;
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("kanpa: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ =
        writeln!(out, "checked {} entries, {} postings, {} accounts", report.entries, report.postings, report.accounts);
    for (entry, currency, sum) in &report.unbalanced_entries {
        let _ = writeln!(out, "UNBALANCED entry {entry}: {currency} postings sum to {sum}");
    }
    for entry in &report.short_entries {
        let _ = writeln!(out, "SHORT entry {entry}: fewer than two postings");
    }
    for (account, stored, summed, n_stored, n_counted) in &report.balance_mismatches {
        let _ = writeln!(
            out,
            "BALANCE MISMATCH account {account}: stored {stored} ({n_stored} postings), postings sum to {summed} ({n_counted} postings)"
        );
    }
    for account in &report.missing_balances {
        let _ = writeln!(out, "MISSING balance row for account {account}");
    }
    for posting in &report.misplaced_postings {
        let _ = writeln!(out, "MISPLACED posting {posting}: currency or organisation differs from its account");
    }
    if report.is_clean() {
        let _ = writeln!(out, "ledger OK: every entry balances and every balance equals its postings");
        ExitCode::SUCCESS
    } else {
        let _ = writeln!(out, "ledger check FAILED");
        ExitCode::FAILURE
    }
}

/// A bare HTTP/1.1 GET, so the container image needs no curl.
async fn healthcheck(addr: SocketAddr) -> ExitCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(response.starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        _ => {
            eprintln!("kanpa: {addr} did not answer /healthz with 200");
            ExitCode::FAILURE
        }
    }
}
