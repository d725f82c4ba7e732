//! `kanpa export …`: the books to stdout, as the operator (every
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
