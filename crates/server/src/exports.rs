//! What an export request asks for, checked the same way for the CLI and
//! the API: the report, the format, the period and the funds it is limited
//! to. The writing is `kanpa_ledger::export`.

use kanpa_ledger::export::{self, ExportError, Format, Options, Period, Report, Scope};
use kanpa_ledger::{AccountKind, Db, OrgId, store};
use tokio::io::AsyncWrite;

/// What is exported: the books, or the pledges or patrons beside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    Books(Report),
    Pledges,
    Patrons,
}

impl What {
    pub fn parse(text: &str) -> Option<What> {
        match text {
            "pledges" => Some(What::Pledges),
            "patrons" => Some(What::Patrons),
            other => Report::parse(other).map(What::Books),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            What::Books(report) => report.as_str(),
            What::Pledges => "pledges",
            What::Patrons => "patrons",
        }
    }

    fn supports(self, format: Format) -> bool {
        match self {
            What::Books(report) => format.supports(report),
            What::Pledges | What::Patrons => format == Format::Csv,
        }
    }
}

/// Why an export request is refused before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum ExportRefusal {
    #[error("unknown export {0:?}: journal, trial-balance, fund, pledges or patrons")]
    UnknownReport(String),
    #[error("unknown format {0:?}: csv, freee, mf, yayoi, hledger or beancount")]
    UnknownFormat(String),
    #[error("the {} export is available as csv only", .0.as_str())]
    Unsupported(What),
    #[error("{0} must be a date written YYYY-MM-DD")]
    BadDate(&'static str),
    #[error("the period ends before it starts")]
    PeriodReversed,
    #[error("no fund account has the code {0:?}")]
    UnknownFund(String),
    #[error(transparent)]
    Ledger(#[from] kanpa_ledger::LedgerError),
}

impl ExportRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            ExportRefusal::UnknownReport(_) => "unknown_export",
            ExportRefusal::UnknownFormat(_) => "unknown_format",
            ExportRefusal::Unsupported(_) => "format_not_available",
            ExportRefusal::BadDate(_) => "invalid_date",
            ExportRefusal::PeriodReversed => "invalid_period",
            ExportRefusal::UnknownFund(_) => "unknown_fund",
            ExportRefusal::Ledger(_) => "internal",
        }
    }

    /// The request field at fault.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ExportRefusal::UnknownReport(_) => Some("report"),
            ExportRefusal::UnknownFormat(_) | ExportRefusal::Unsupported(_) => Some("format"),
            ExportRefusal::BadDate(field) => Some(field),
            ExportRefusal::PeriodReversed => Some("to"),
            ExportRefusal::UnknownFund(_) => Some("fund"),
            ExportRefusal::Ledger(_) => None,
        }
    }

    /// The message in the reader's language.
    pub fn describe(&self, locale: kanpa_ledger::Locale) -> String {
        use kanpa_ledger::Locale::{En, Ja};
        match (self, locale) {
            (_, En) | (ExportRefusal::Ledger(_), Ja) => self.to_string(),
            (ExportRefusal::UnknownReport(r), Ja) => {
                format!(
                    "エクスポートの種類 {r:?} はありません(journal、trial-balance、fund、pledges、patrons のいずれか)"
                )
            }
            (ExportRefusal::UnknownFormat(f), Ja) => {
                format!("形式 {f:?} はありません(csv、freee、mf、yayoi、hledger、beancount のいずれか)")
            }
            (ExportRefusal::Unsupported(r), Ja) => format!("{} は csv 形式でのみ出力できます", r.as_str()),
            (ExportRefusal::BadDate(field), Ja) => format!("{field} は YYYY-MM-DD 形式の日付で指定してください"),
            (ExportRefusal::PeriodReversed, Ja) => "期間の終わりが始まりより前です".to_owned(),
            (ExportRefusal::UnknownFund(code), Ja) => format!("コード {code:?} の基金勘定はありません"),
        }
    }
}

/// A checked export request.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub what: What,
    pub format: Format,
    pub scope: Scope,
    pub period: Period,
}

impl ExportRequest {
    /// Checks the words of a request; `funds` are fund account codes, looked
    /// up in `org` (or every organisation when `None`, for the operator).
    pub async fn parse(
        db: &Db,
        org: Option<OrgId>,
        report: &str,
        format: &str,
        from: Option<&str>,
        to: Option<&str>,
        funds: &[String],
    ) -> Result<ExportRequest, ExportRefusal> {
        let what = What::parse(report).ok_or_else(|| ExportRefusal::UnknownReport(report.to_owned()))?;
        let format = Format::parse(format).ok_or_else(|| ExportRefusal::UnknownFormat(format.to_owned()))?;
        if !what.supports(format) {
            return Err(ExportRefusal::Unsupported(what));
        }
        let date = |text: Option<&str>, field| {
            text.filter(|t| !t.trim().is_empty())
                .map(|t| Period::parse_date(t).ok_or(ExportRefusal::BadDate(field)))
                .transpose()
        };
        let period = Period { from: date(from, "from")?, to: date(to, "to")? };
        if let (Some(from), Some(to)) = (period.from, period.to)
            && to < from
        {
            return Err(ExportRefusal::PeriodReversed);
        }
        let mut scope = Scope { org, funds: None };
        if !funds.is_empty() {
            let mut ids = Vec::new();
            for code in funds {
                let found: Vec<_> = store::accounts_with_code(db, org, code)
                    .await?
                    .into_iter()
                    .filter(|a| a.kind == AccountKind::Fund)
                    .collect();
                if found.is_empty() {
                    return Err(ExportRefusal::UnknownFund(code.clone()));
                }
                ids.extend(found.into_iter().map(|a| a.id));
            }
            scope.funds = Some(ids.into_iter().collect());
        }
        Ok(ExportRequest { what, format, scope, period })
    }

    /// "iryo-journal-2026-11-01-2026-11-30.csv"
    pub fn file_name(&self, org_slug: &str) -> String {
        let mut name = format!("{org_slug}-{}", self.what.as_str());
        for date in [self.period.from, self.period.to].into_iter().flatten() {
            name.push_str(&format!("-{date}"));
        }
        format!("{name}.{}", self.format.file_type().0)
    }
}

/// Writes the export to `out`.
pub async fn run<W: AsyncWrite + Unpin + Send>(
    db: &Db,
    request: &ExportRequest,
    options: &Options,
    out: &mut W,
) -> Result<(), ExportError> {
    let ExportRequest { what, format, scope, period } = request;
    let slugs = || async {
        Ok::<_, ExportError>(store::organisations(db).await?.into_iter().map(|o| (o.id, o.slug)).collect())
    };
    match what {
        What::Books(report) => export::export(db, *report, *format, scope, period, options, out).await,
        What::Pledges => {
            let slugs = slugs().await?;
            kanpa_campaigns::export::pledges_csv(db, &slugs, scope.org, scope.funds.as_ref(), period, options.bom, out)
                .await
        }
        What::Patrons => {
            let slugs = slugs().await?;
            kanpa_patrons::export::patrons_csv(db, &slugs, scope.org, scope.funds.as_ref(), period, options.bom, out)
                .await
        }
    }
}
