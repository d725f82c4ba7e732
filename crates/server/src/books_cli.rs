//! `kanpa export …`, `kanpa reconcile`, `kanpa payout confirm` and `kanpa bank import`: the books, as the operator (every
//! organisation unless `--org` narrows it).

use anyhow::Context;
use kanpa_ledger::store;

use crate::app;
use crate::config::Config;
use crate::exports::ExportRequest;

pub struct ExportArgs {
    pub report: String,
    pub org: Option<String>,
    pub funds: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub format: String,
    pub bom: bool,
}

pub async fn run(config: Config, args: ExportArgs) -> anyhow::Result<()> {
    let db = app::connect(&config).await?;
    let org = match &args.org {
        Some(slug) => {
            Some(store::organisation_by_slug(&db, slug).await?.with_context(|| format!("no organisation {slug:?}"))?.id)
        }
        None => None,
    };
    let request = ExportRequest::parse(
        &db,
        org,
        &args.report,
        &args.format,
        args.from.as_deref(),
        args.to.as_deref(),
        &args.funds,
    )
    .await?;
    let options = config.exports.options(args.bom);
    let mut out = tokio::io::stdout();
    crate::exports::run(&db, &request, &options, &mut out).await?;
    db.close().await;
    Ok(())
}

/// `kanpa reconcile`: imports Stripe's balance history (or the sandbox
/// processor's, on a sandbox-configured server), posts what it settles, prints what does not tie out; exits 1 if anything is unmatched.
pub async fn reconcile(config: Config, org: Option<String>, since: Option<String>) -> anyhow::Result<bool> {
    let db = app::connect(&config).await?;
    let org = match &org {
        Some(slug) => {
            Some(store::organisation_by_slug(&db, slug).await?.with_context(|| format!("no organisation {slug:?}"))?)
        }
        None => None,
    };
    let since = match since {
        Some(text) => {
            let period = kanpa_ledger::export::Period {
                from: Some(
                    kanpa_ledger::export::Period::parse_date(&text)
                        .with_context(|| format!("--since must be a date written YYYY-MM-DD, not {text:?}"))?,
                ),
                to: None,
            };
            period.start()
        }
        None => None,
    };
    let source = crate::reconcile::source(&config, &db)?;
    let slugs: std::collections::BTreeMap<_, _> =
        store::organisations(&db).await?.into_iter().map(|o| (o.id, o.slug)).collect();
    let outcome = crate::reconcile::run(&db, source.as_ref(), org.as_ref().map(|o| o.id), since, &mut |step| {
        eprintln!("… {step}")
    })
    .await?;
    let r = &outcome.report;
    let (at, who) = if outcome.source == "sandbox" { ("the sandbox", "sandbox") } else { ("Stripe", "Stripe") };
    println!(
        "reconciled {} {who} balance transactions: {} objects matched; posted {} missing fees, {} dispute entries and {} payouts to in transit",
        r.lines, r.matched_objects, outcome.fees_posted, outcome.disputes_posted, outcome.payouts_posted
    );
    let name = |o: Option<kanpa_ledger::OrgId>| {
        o.and_then(|o| slugs.get(&o).cloned()).unwrap_or_else(|| "(no organisation)".to_owned())
    };
    for u in &r.unmatched_provider {
        println!(
            "UNMATCHED at {at}: {} ({}) {} {}: {who} {}, ledger {}, difference {}",
            u.object,
            u.kinds,
            name(u.org),
            u.currency.code(),
            u.provider,
            u.ledger,
            u.difference
        );
    }
    for u in &r.unmatched_ledger {
        println!(
            "UNMATCHED in the ledger: {} {} {}: ledger {}, no {who} balance transaction",
            u.object,
            name(u.org),
            u.currency.code(),
            u.ledger
        );
    }
    let mut balanced = true;
    for (stripe, booked) in outcome.balances.iter().flatten() {
        let verdict = if stripe == booked { "=" } else { "≠" };
        balanced &= stripe == booked;
        println!(
            "{who} balance {} {} ledger Stripe balance accounts {}",
            stripe.format(kanpa_ledger::Locale::En),
            verdict,
            booked.format(kanpa_ledger::Locale::En)
        );
    }
    let clean = r.is_clean() && balanced;
    if clean {
        println!("nothing unmatched");
    }
    db.close().await;
    Ok(clean)
}

async fn organisation(db: &kanpa_ledger::Db, slug: &str) -> anyhow::Result<kanpa_ledger::OrgId> {
    Ok(store::organisation_by_slug(db, slug).await?.with_context(|| format!("no organisation {slug:?}"))?.id)
}

/// `kanpa payout confirm`: the treasurer saw the payout arrive.
pub async fn confirm_payout(config: Config, org: String, payout: String, on: Option<String>) -> anyhow::Result<()> {
    let db = app::connect(&config).await?;
    let org = organisation(&db, &org).await?;
    let on = match on {
        Some(text) => Some(
            kanpa_ledger::export::Period::parse_date(&text)
                .with_context(|| format!("--on must be a date written YYYY-MM-DD, not {text:?}"))?,
        ),
        None => None,
    };
    if crate::reconcile::confirm_payout(&db, org, &payout, on).await? {
        println!("payout {payout} moved from in transit to the bank");
    } else {
        println!("payout {payout} was already confirmed; nothing written");
    }
    db.close().await;
    Ok(())
}

/// `kanpa bank import`: confirms the payouts a bank statement shows arriving.
pub async fn import_bank(config: Config, org: String, layout: String, file: std::path::PathBuf) -> anyhow::Result<()> {
    use kanpa_ledger::reconcile::bank::{self, Layout};
    let layout = Layout::parse(&layout).with_context(|| format!("--layout must be generic or jp, not {layout:?}"))?;
    let text = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let text =
        bank::decode(&text).with_context(|| format!("{} is neither UTF-8 nor Shift_JIS text", file.display()))?;
    let lines = bank::parse(&text, layout).with_context(|| format!("{} was not imported", file.display()))?;
    let db = app::connect(&config).await?;
    let org = organisation(&db, &org).await?;
    let outcome = crate::reconcile::import_bank_statement(&db, org, lines).await?;
    for (line, payout) in &outcome.confirmed {
        println!("line {}: {} {} is payout {payout}: moved to the bank", line.line, line.date, line.amount);
    }
    for line in &outcome.unexplained {
        println!(
            "line {}: deposit {} {} ({}) matches no payout in transit",
            line.line, line.date, line.amount, line.description
        );
    }
    println!("{} payouts confirmed, {} deposits unexplained", outcome.confirmed.len(), outcome.unexplained.len());
    db.close().await;
    Ok(())
}
