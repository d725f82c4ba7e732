//! `/admin/o/{org}/reconciliation`: the books against the payment processor.
//!
//! The page shows the organisation's last reconciliation (kept by
//! [`crate::reconcile::run`], whoever ran it: the console, the API, `kanpa
//! reconcile` or the scheduled job) with what is unmatched on either side
//! and, when known, the processor's balance against the Stripe balance
//! accounts; the payouts in transit, each with a form to confirm it arrived
//! ([`crate::reconcile::confirm_payout`]); a bank statement upload
//! ([`crate::reconcile::import_bank_statement`]); and a button that runs the
//! reconciliation now, as the API does. It reads Stripe or, on a
//! sandbox-configured server, the sandbox processor's own records.
//!
//! Reconciliation concerns every fund at once, so it is for owners and
//! treasurers of the whole organisation ([`Need::WholeBooks`]).

use askama::Template;
use axum::Form;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kanpa_ledger::reconcile::bank::{self, Layout};
use kanpa_ledger::reconcile::{LastRun, Unmatched};
use kanpa_ledger::{Money, store as ledger};
use serde::Deserialize;

use super::books::local_minute;
use super::{Answer, Nav, Need, Refused, Staff, access, check_form, page};
use crate::app::AppState;
use crate::error::AppError;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::reconcile::ConfirmError;
use crate::staff::Access;

struct UnmatchedRow {
    object: String,
    kinds: String,
    provider: String,
    ledger: String,
    difference: String,
}

struct PayoutRow {
    id: String,
    amount: String,
    sent: String,
}

#[derive(Template)]
#[template(path = "admin_reconciliation.html")]
struct ReconciliationPage {
    tr: Tr,
    nav: Nav,
    source: String,
    last_run: Option<String>,
    summary: String,
    clean: bool,
    unmatched_provider: Vec<UnmatchedRow>,
    unmatched_ledger: Vec<UnmatchedRow>,
    /// Processor's balance, the books', equal.
    balances: Vec<(String, String, bool)>,
    in_transit: Vec<PayoutRow>,
    today: String,
    notices: Vec<String>,
    errors: Vec<String>,
}

fn today() -> String {
    kanpa_ledger::Timestamp::now().as_offset().to_offset(kanpa_ledger::export::BOOKS_OFFSET).date().to_string()
}

fn rows(tr: Tr, items: &[Unmatched]) -> Vec<UnmatchedRow> {
    let money = |amount: i64, u: &Unmatched| Money::new(amount, u.currency).format(tr.0);
    items
        .iter()
        .map(|u| UnmatchedRow {
            object: u.object.clone(),
            kinds: u.kinds.clone(),
            provider: money(u.provider, u),
            ledger: money(u.ledger, u),
            difference: money(u.difference, u),
        })
        .collect()
}

fn source_words(tr: Tr, source: &str) -> String {
    tr.t(&format!("admin-recon-source-{source}"))
}

/// The page, with what the last action did (`notices`) or why it was
/// refused (`errors`, answered 422).
async fn render(
    state: &AppState,
    tr: Tr,
    staff: &Staff,
    access: &Access,
    notices: Vec<String>,
    errors: Vec<String>,
) -> Result<Response, Refused> {
    let org = access.org_id();
    let last: Option<LastRun> = ledger::reconciliation_report(&state.db, org).await?;
    let configured = match state.config.payments.gateway {
        crate::config::GatewayKind::Stripe => "stripe",
        crate::config::GatewayKind::Sandbox => "sandbox",
    };
    let in_transit = ledger::payouts_in_transit(&state.db, org)
        .await?
        .into_iter()
        .map(|(id, amount, at)| PayoutRow { id, amount: amount.format(tr.0), sent: local_minute(at) })
        .collect();
    let (last_run, summary, clean, unmatched_provider, unmatched_ledger, balances) = match &last {
        None => (None, String::new(), false, Vec::new(), Vec::new(), Vec::new()),
        Some(run) => {
            let r = &run.report;
            let summary = tr.t_with(
                "admin-recon-summary",
                &[("lines", &r.lines.to_string()), ("matched", &r.matched_objects.to_string())],
            );
            let balances = run
                .balances
                .iter()
                .flatten()
                .map(|b| (b.provider.format(tr.0), b.ledger.format(tr.0), b.ties_out()))
                .collect();
            (
                Some(format!("{} · {}", local_minute(run.ran_at), source_words(tr, &run.source))),
                summary,
                r.is_clean(),
                rows(tr, &r.unmatched_provider),
                rows(tr, &r.unmatched_ledger),
                balances,
            )
        }
    };
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let html = ReconciliationPage {
        tr,
        nav: Nav::new(staff, access, None),
        source: source_words(tr, configured),
        last_run,
        summary,
        clean,
        unmatched_provider,
        unmatched_ledger,
        balances,
        in_transit,
        today: today(),
        notices,
        errors,
    }
    .render_html();
    Ok(page(status, html))
}

/// `GET /admin/o/{org}/reconciliation`.
pub async fn show(State(state): State<AppState>, lang: Lang, staff: Staff, Path(org): Path<String>) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::WholeBooks).await?;
            render(&state, tr, &staff, &access, Vec::new(), Vec::new()).await
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST …/reconciliation/run`: reconciles the organisation now (as the API
/// does) and shows what it found.
pub async fn run(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path(org): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::WholeBooks).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let source = crate::reconcile::source(&state.config, &state.db).map_err(AppError::Internal)?;
            let outcome = crate::reconcile::run(&state.db, source.as_ref(), Some(access.org_id()), None, &mut |_| {})
                .await
                .map_err(AppError::Internal)?;
            let r = &outcome.report;
            let unmatched = r.unmatched_provider.len() + r.unmatched_ledger.len();
            let notice = tr.t_with(
                "admin-recon-ran",
                &[
                    ("lines", &r.lines.to_string()),
                    ("matched", &r.matched_objects.to_string()),
                    ("unmatched", &unmatched.to_string()),
                ],
            );
            render(&state, tr, &staff, &access, vec![notice], Vec::new()).await
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    on: String,
}

/// `POST …/reconciliation/payouts/{payout}/confirm`: the payout arrived in
/// the bank (on the date given, today without).
pub async fn confirm(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, payout)): Path<(String, String)>,
    Form(form): Form<ConfirmForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::WholeBooks).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let on = match form.on.trim() {
                "" => None,
                text => match kanpa_ledger::export::Period::parse_date(text) {
                    Some(date) => Some(date),
                    None => {
                        let error = tr.t("admin-recon-error-date");
                        return render(&state, tr, &staff, &access, Vec::new(), vec![error]).await;
                    }
                },
            };
            let payout = payout.trim().to_owned();
            match crate::reconcile::confirm_payout(&state.db, access.org_id(), &payout, on).await {
                Ok(created) => {
                    let key = if created { "admin-recon-confirmed" } else { "admin-recon-already-confirmed" };
                    let notice = tr.t_with(key, &[("payout", &payout)]);
                    render(&state, tr, &staff, &access, vec![notice], Vec::new()).await
                }
                Err(ConfirmError::NotInTransit(p)) => {
                    let error = tr.t_with("admin-recon-error-not-in-transit", &[("payout", &p)]);
                    render(&state, tr, &staff, &access, Vec::new(), vec![error]).await
                }
                Err(ConfirmError::Other(e)) => Err(AppError::Internal(e).into()),
            }
        }
        .await,
    )
}

/// The fields of a form: `multipart/form-data` (a file input, read with
/// `multer`) or `application/x-www-form-urlencoded` (text pasted into a
/// textarea). `None` if the body is neither, or broken.
pub async fn form_fields(content_type: &str, body: Bytes) -> Option<Vec<(String, Vec<u8>)>> {
    let mime = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).ok()?;
            Some(pairs.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
        }
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(content_type).ok()?;
            let stream = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
            let mut parts = multer::Multipart::new(stream, boundary);
            let mut fields = Vec::new();
            while let Some(field) = parts.next_field().await.ok()? {
                let name = field.name()?.to_owned();
                fields.push((name, field.bytes().await.ok()?.to_vec()));
            }
            Some(fields)
        }
        _ => None,
    }
}

/// `POST …/reconciliation/statement`: a bank statement (a CSV file, or its
/// text pasted); each payout in transit whose deposit it shows moves to the
/// bank.
pub async fn statement(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path(org): Path<String>,
    body: Bytes,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::WholeBooks).await?;
            let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let fields = form_fields(content_type, body).await.ok_or(Refused::Forbidden)?;
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice());
            let csrf = field("csrf").and_then(|v| std::str::from_utf8(v).ok()).unwrap_or_default();
            check_form(&state, &headers, &staff, csrf)?;
            let refuse = |error: String| render(&state, tr, &staff, &access, Vec::new(), vec![error]);
            let layout = field("layout").and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("generic");
            let Some(layout) = Layout::parse(layout) else {
                return refuse(tr.t("admin-recon-error-layout")).await;
            };
            // The file if one was chosen, else the pasted text.
            let content =
                [field("file"), field("text")].into_iter().flatten().find(|c| !c.iter().all(u8::is_ascii_whitespace));
            let Some(content) = content else {
                return refuse(tr.t("admin-recon-error-no-file")).await;
            };
            let Some(text) = bank::decode(content) else {
                return refuse(tr.t("admin-recon-error-not-utf8")).await;
            };
            let lines = match bank::parse(&text, layout) {
                Ok(lines) => lines,
                Err(e) => {
                    let problem = match (&e, tr.0) {
                        (_, kanpa_ledger::Locale::En) => e.to_string(),
                        (bank::BankCsvError::Empty, _) => "明細に見出し行がありません".to_owned(),
                        (bank::BankCsvError::MissingColumn(c), _) => format!("見出しに {c} の列がありません"),
                        (bank::BankCsvError::BadDate { line, value }, _) => {
                            format!("{line} 行目: {value:?} は日付ではありません")
                        }
                        (bank::BankCsvError::BadAmount { line, value }, _) => {
                            format!("{line} 行目: {value:?} は金額ではありません")
                        }
                    };
                    return refuse(tr.t_with("admin-recon-error-statement", &[("problem", &problem)])).await;
                }
            };
            let outcome = crate::reconcile::import_bank_statement(&state.db, access.org_id(), lines)
                .await
                .map_err(AppError::Internal)?;
            let mut notices: Vec<String> = outcome
                .confirmed
                .iter()
                .map(|(_, payout)| tr.t_with("admin-recon-confirmed", &[("payout", payout)]))
                .collect();
            notices.push(tr.t_with(
                "admin-recon-imported",
                &[
                    ("confirmed", &outcome.confirmed.len().to_string()),
                    ("unexplained", &outcome.unexplained.len().to_string()),
                ],
            ));
            let currency = kanpa_ledger::Currency::Jpy;
            notices.extend(outcome.unexplained.iter().map(|l| {
                tr.t_with(
                    "admin-recon-unexplained",
                    &[
                        ("line", &l.line.to_string()),
                        ("amount", &Money::new(l.amount, currency).format(tr.0)),
                        ("description", &l.description),
                    ],
                )
            }));
            render(&state, tr, &staff, &access, notices, Vec::new()).await
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;

    use super::form_fields;

    #[tokio::test]
    async fn a_multipart_body_gives_its_fields_and_a_urlencoded_one_too() {
        let body: &'static [u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n\
                     --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.csv\"\r\n\
                     Content-Type: text/csv\r\n\r\ndate,amount,description\r\n2026-11-20,1000,STRIPE\r\n\r\n\
                     --XyZ--\r\n";
        let fields = form_fields("multipart/form-data; boundary=XyZ", Bytes::from_static(body)).await.unwrap();
        assert_eq!(fields[0], ("csrf".to_owned(), b"abc".to_vec()));
        assert_eq!(fields[1].0, "file");
        assert_eq!(fields[1].1, b"date,amount,description\r\n2026-11-20,1000,STRIPE\r\n".to_vec());
        assert_eq!(fields.len(), 2);
        let urlencoded = Bytes::from_static(b"csrf=a%2Bb&text=x");
        let fields = form_fields("application/x-www-form-urlencoded", urlencoded).await.unwrap();
        assert_eq!(fields, vec![("csrf".into(), b"a+b".to_vec()), ("text".into(), b"x".to_vec())]);
        // Broken or foreign bodies give nothing.
        let broken = Bytes::from_static(b"--XyZ\r\nno end");
        assert!(form_fields("multipart/form-data; boundary=XyZ", broken).await.is_none());
        assert!(form_fields("multipart/form-data", Bytes::from_static(body)).await.is_none());
        assert!(form_fields("text/plain", Bytes::from_static(b"csrf=abc")).await.is_none());
    }
}
