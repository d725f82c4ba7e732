//! `/api/v1/exports/{report}`: the books of the token's organisation as a
//! file, streamed as it is written. Owners and treasurers only: the journal
//! carries every supporter's payment and message.
//!
//! `?format=csv|freee|mf|yayoi|hledger|beancount&from=YYYY-MM-DD&to=YYYY-MM-DD&fund=CODE&bom=true`;
//! `fund` may repeat. A refusal is the API's JSON error in the caller's
//! language, before anything is written.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::AsyncReadExt;

use kanpa_campaigns::CampaignError;
use kanpa_ledger::OrgId;

use crate::app::AppState;
use crate::exports::{ExportRefusal, ExportRequest};
use crate::routes::api::{Api, ApiError};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/exports/{report}", get(export_books))
}

/// Bytes in flight between the export and the client.
const PIPE_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct Query {
    format: Option<String>,
    from: Option<String>,
    to: Option<String>,
    funds: Vec<String>,
    bom: bool,
}

fn query(raw: Option<&str>) -> Query {
    let mut q = Query::default();
    let pairs: Vec<(String, String)> = raw.and_then(|r| serde_urlencoded::from_str(r).ok()).unwrap_or_default();
    for (key, value) in pairs {
        match key.as_str() {
            "format" => q.format = Some(value),
            "from" => q.from = Some(value),
            "to" => q.to = Some(value),
            "fund" => q.funds.push(value),
            "bom" => q.bom = matches!(value.as_str(), "true" | "1" | "yes"),
            _ => {}
        }
    }
    q
}

fn refuse(api: &Api, e: ExportRefusal) -> ApiError {
    let status = match e {
        ExportRefusal::UnknownReport(_) | ExportRefusal::UnknownFund(_) => StatusCode::NOT_FOUND,
        ExportRefusal::Ledger(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ExportRefusal::UnknownFormat(_)
        | ExportRefusal::Unsupported(_)
        | ExportRefusal::BadDate(_)
        | ExportRefusal::PeriodReversed => StatusCode::UNPROCESSABLE_ENTITY,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "export refused");
    }
    ApiError::with_field(status, e.code(), e.field(), e.describe(api.tr().0))
}

async fn export_books(
    State(state): State<AppState>,
    api: Api,
    Path(report): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    api.must_keep_books()?;
    let q = query(raw.as_deref());
    let format = q.format.as_deref().unwrap_or("csv");
    let request =
        ExportRequest::parse(&state.db, Some(api.org()), &report, format, q.from.as_deref(), q.to.as_deref(), &q.funds)
            .await
            .map_err(|e| refuse(&api, e))?;
    download(&state, api.org(), api.team(), request, q.bom).await.map_err(|e| api.fail(e))
}

/// The export as a streamed file download: the one path for the API and
/// the console. A treasurer limited to one team exports that team's fund
/// only: the funds asked for, if any, narrowed to it.
pub(crate) async fn download(
    state: &AppState,
    org: OrgId,
    team: Option<i64>,
    mut request: ExportRequest,
    bom: bool,
) -> Result<Response, CampaignError> {
    if let Some(team) = team {
        let fund = kanpa_campaigns::store::team_fund(&state.db, org, team).await?;
        let allowed = request.scope.funds.as_ref().is_none_or(|asked| asked.contains(&fund));
        request.scope.funds = Some(if allowed { [fund].into_iter().collect() } else { Default::default() });
    }
    let org_slug = kanpa_ledger::store::organisations(&state.db)
        .await
        .ok()
        .and_then(|orgs| orgs.into_iter().find(|o| o.id == org).map(|o| o.slug))
        .unwrap_or_else(|| "books".to_owned());
    let disposition = format!("attachment; filename=\"{}\"", request.file_name(&org_slug));
    let content_type = request.format.file_type().1;
    let options = state.config.exports.options(bom);

    // The export writes into a bounded pipe as the rows arrive; the body
    // reads from it, so a slow client slows the export instead of memory
    // filling up. A failure half-way ends the body with an error, so the
    // client sees a broken transfer rather than a short file.
    let (mut writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let db = state.db.clone();
    let task = tokio::spawn(async move {
        let result = crate::exports::run(&db, &request, &options, &mut writer).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "export failed half-way");
        }
        result.map_err(|e| std::io::Error::other(e.to_string()))
    });
    let body = futures::stream::unfold(Some((reader, task)), |state| async move {
        let (mut reader, task) = state?;
        let mut buffer = vec![0u8; 16 * 1024];
        match reader.read(&mut buffer).await {
            Ok(0) => match task.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some((Err(e), None)),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            },
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(Bytes::from(buffer)), Some((reader, task))))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
