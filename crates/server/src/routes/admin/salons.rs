//! A salon in the console: its patrons with search, counts by status and
//! monthly recurring revenue, with two server-rendered charts (patrons by
//! status; revenue at the end of each of the last 12 months), all from
//! `patrons::roster`. Salons are no team's fund: a treasurer limited to one
//! team does not see them.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use kanpa_ledger::Money;
use kanpa_patrons::{Membership, PatronError, Salon, roster, store};
use serde::Deserialize;

use super::books::local_minute;
use super::{Answer, Nav, Need, Refused, Staff, access, check_form, page, see_other};
use crate::app::AppState;
use crate::charts::{self, BarChart};
use crate::error::AppError;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::staff::Access;
use crate::staff::refund::{self, Refundable};

pub const MONTHS: usize = 12;
const QUERY_MAX: usize = 100;

fn failure(e: PatronError) -> Refused {
    match e {
        PatronError::NotFound(_) => Refused::Error(AppError::NotFound),
        other => Refused::Error(AppError::Internal(anyhow::anyhow!(other))),
    }
}

struct PatronRow {
    id: String,
    email: String,
    tier: String,
    status: String,
    amount: String,
    since: String,
    lifetime: String,
}

struct PostLine {
    id: i64,
    title: String,
    body: String,
    link: Option<String>,
    at: String,
}

struct TierLine {
    slug: String,
    name: String,
    name_ja: String,
    name_en: String,
    benefits_ja: String,
    price: String,
    price_digits: String,
    seat_limit: String,
    seats_taken: i64,
    retired: bool,
}

#[derive(Template)]
#[template(path = "admin_salon.html")]
struct SalonPage {
    tr: Tr,
    nav: Nav,
    tiers: Vec<TierLine>,
    posts: Vec<PostLine>,
    name: String,
    slug: String,
    mrr: String,
    by_status: BarChart,
    revenue: BarChart,
    q: String,
    patrons: Vec<PatronRow>,
    error: Option<String>,
    open: bool,
    /// The salon's words and settings as its edit form shows them.
    edit: super::setup::SalonForm,
}

#[derive(Debug, Default, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

pub async fn salon(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Query(search): Query<Search>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let salon = own_salon(&state, &access, &slug).await?;
            let tiers = store::tiers(&state.db, salon.id).await.map_err(failure)?;
            let memberships = store::memberships_of_salon(&state.db, salon.id).await.map_err(failure)?;
            let roster = roster::summarise(&memberships, &tiers, kanpa_ledger::Timestamp::now(), MONTHS);
            let money = |v: i64| kanpa_ledger::Money::new(v, salon.currency).format(tr.0);
            let counts: Vec<(String, i64)> =
                roster.counts.iter().map(|(status, n)| (tr.t(&format!("membership-status-{status}")), *n)).collect();
            let by_status = charts::simple(tr.t("admin-chart-by-status"), &counts, |n| n.to_string());
            let months: Vec<(String, i64)> = roster.months.iter().map(|m| (m.month.clone(), m.mrr_at_end)).collect();
            let revenue = charts::simple(tr.t("admin-chart-revenue"), &months, money);
            let q = search.q.trim().to_lowercase();
            let mut error = None;
            if q.chars().count() > QUERY_MAX {
                error = Some(tr.t_with("campaign-error-too-long", &[("max", &QUERY_MAX.to_string())]));
            }
            let patrons = roster
                .rows
                .iter()
                .filter(|_| error.is_none())
                .filter(|r| q.is_empty() || r.email.to_lowercase().contains(&q) || r.tier.to_lowercase().contains(&q))
                .map(|r| PatronRow {
                    id: r.membership.clone(),
                    email: r.email.clone(),
                    tier: r.tier.clone(),
                    status: tr.t(&format!("membership-status-{}", r.status.as_str())),
                    amount: money(r.amount),
                    since: r.since.map(local_minute).unwrap_or_default(),
                    lifetime: money(r.lifetime_paid),
                })
                .collect();
            let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
            let tier_lines = tiers
                .iter()
                .map(|t| TierLine {
                    slug: t.slug.clone(),
                    name: t.name(tr.0).to_owned(),
                    name_ja: t.name_ja.clone(),
                    name_en: t.name_en.clone(),
                    benefits_ja: t.benefits_ja.clone(),
                    price: money(t.monthly_price),
                    price_digits: t.monthly_price.to_string(),
                    seat_limit: t.seat_limit.map(|n| n.to_string()).unwrap_or_default(),
                    seats_taken: t.seats_taken,
                    retired: t.status == kanpa_patrons::TierStatus::Retired,
                })
                .collect();
            let page_ = SalonPage {
                tr,
                nav: Nav::new(&staff, &access, None),
                tiers: tier_lines,
                posts: store::posts(&state.db, salon.id)
                    .await
                    .map_err(failure)?
                    .iter()
                    .map(|p| PostLine {
                        id: p.id,
                        title: p.title(tr.0).to_owned(),
                        body: p.body(tr.0).to_owned(),
                        link: p.link_url.clone(),
                        at: local_minute(p.created_at),
                    })
                    .collect(),
                edit: super::setup::SalonForm::of(&salon),
                name: salon.name(tr.0).to_owned(),
                slug: salon.slug.clone(),
                mrr: money(roster.mrr),
                by_status,
                revenue,
                q: search.q.clone(),
                patrons,
                error,
                open: salon.status == kanpa_patrons::SalonStatus::Open,
            };
            Ok(page(status, page_.render_html()))
        }
        .await,
    )
}

// ---------------------------------------------------------------- one patron

/// The organisation's salon by slug; another's (or any, for a treasurer
/// limited to one team) is not found.
pub(super) async fn own_salon(state: &AppState, access: &Access, slug: &str) -> Result<Salon, Refused> {
    if slug.len() > 64 {
        return Err(AppError::NotFound.into());
    }
    let salon = store::salon_by_slug(&state.db, slug).await.map_err(failure)?;
    if salon.org_id != access.org_id().0 || access.team.is_some() {
        return Err(AppError::NotFound.into());
    }
    Ok(salon)
}

/// The salon's membership by public id; another salon's is not found.
async fn own_patron(state: &AppState, salon: &Salon, id: &str) -> Result<Membership, Refused> {
    if id.len() > 64 {
        return Err(AppError::NotFound.into());
    }
    let membership = store::membership_by_public_id(&state.db, id).await.map_err(failure)?;
    if membership.salon_id != salon.id {
        return Err(AppError::NotFound.into());
    }
    Ok(membership)
}

struct InvoiceRow {
    invoice: String,
    paid_at: String,
    paid: String,
    refunded: String,
    /// What is left to refund, when a card paid and the person may refund.
    refundable: Option<String>,
    refunds: Vec<RefundLine>,
}

struct RefundLine {
    amount: String,
    by: String,
    status: String,
    at: String,
}

#[derive(Template)]
#[template(path = "admin_patron.html")]
struct PatronPage {
    tr: Tr,
    nav: Nav,
    salon_name: String,
    salon_slug: String,
    id: String,
    email: String,
    tier: String,
    status: String,
    amount: String,
    since: String,
    lifetime: String,
    invoices: Vec<InvoiceRow>,
    /// One per page shown, so a form sent twice refunds once.
    key: String,
    /// The invoice and amount typed, shown again with a refusal.
    chosen: String,
    typed: String,
    error: Option<String>,
}

#[expect(clippy::too_many_arguments, reason = "the page and what the refused form carried")]
async fn patron_page(
    state: &AppState,
    tr: Tr,
    staff: &Staff,
    access: &Access,
    salon: &Salon,
    membership: &Membership,
    chosen: String,
    typed: String,
    error: Option<String>,
) -> Result<PatronPage, Refused> {
    let money = |v: i64| Money::new(v, salon.currency).format(tr.0);
    let tier = store::tier(&state.db, salon.id, membership.tier_id).await.map_err(failure)?;
    let mut invoices = Vec::new();
    for paid in store::paid_invoices(&state.db, membership.id).await.map_err(failure)? {
        let found = store::invoice_of_salon(&state.db, salon.id, &paid.stripe_invoice_id).await.map_err(failure)?;
        let refundable = refund::invoice_refundable(&found, salon.currency)
            .filter(|left| left.amount() > 0 && access.role.can_keep_books())
            .map(|left| left.format(tr.0));
        let refunds = refund::of_invoice(&state.db, found.id, salon.currency)
            .await?
            .into_iter()
            .map(|r| RefundLine {
                amount: r.amount.format(tr.0),
                by: r.requested_by,
                status: tr.t(&format!("admin-refund-{}", r.status)),
                at: local_minute(r.created_at),
            })
            .collect();
        invoices.push(InvoiceRow {
            invoice: paid.stripe_invoice_id.clone(),
            paid_at: local_minute(paid.paid_at),
            paid: money(paid.amount_paid),
            refunded: money(paid.amount_refunded),
            refundable,
            refunds,
        });
    }
    Ok(PatronPage {
        tr,
        nav: Nav::new(staff, access, None),
        salon_name: salon.name(tr.0).to_owned(),
        salon_slug: salon.slug.clone(),
        id: membership.public_id.clone(),
        email: membership.email.clone(),
        tier: tier.name(tr.0).to_owned(),
        status: tr.t(&format!("membership-status-{}", membership.status.as_str())),
        amount: membership.money().format(tr.0),
        since: membership.since.map(local_minute).unwrap_or_default(),
        lifetime: money(membership.lifetime_paid),
        invoices,
        key: uuid::Uuid::now_v7().to_string(),
        chosen,
        typed,
        error,
    })
}

/// `/admin/o/{org}/salons/{salon}/patrons/{patron}`: a patron's paid
/// invoices, what was refunded of each, and a refund form per invoice.
pub async fn patron(
    State(state): State<AppState>,
    lang: Lang,
    staff: Staff,
    Path((org, slug, id)): Path<(String, String, String)>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Read).await?;
            let salon = own_salon(&state, &access, &slug).await?;
            let membership = own_patron(&state, &salon, &id).await?;
            let page_ =
                patron_page(&state, tr, &staff, &access, &salon, &membership, String::new(), String::new(), None)
                    .await?;
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct InvoiceRefundForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    /// The provider's invoice id.
    #[serde(default)]
    invoice: String,
    #[serde(default)]
    amount: String,
}

/// Refunds part or all of one of the patron's paid invoices, through the
/// same flow as the API (`staff::refund::refund`).
pub async fn refund_invoice(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug, id)): Path<(String, String, String)>,
    Form(form): Form<InvoiceRefundForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Books).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let salon = own_salon(&state, &access, &slug).await?;
            let membership = own_patron(&state, &salon, &id).await?;
            let key = form.key.trim();
            if key.is_empty() || key.len() > 64 {
                return Err(AppError::BadRequest("missing_form_key").into());
            }
            // An invoice of another patron (or salon) is not found, like a
            // missing one.
            let invoice = form.invoice.trim();
            if invoice.is_empty() || invoice.len() > 255 {
                return Err(AppError::NotFound.into());
            }
            let found = match store::invoice_of_salon(&state.db, salon.id, invoice).await {
                Ok(found) if found.membership_public_id == membership.public_id => found,
                Ok(_) | Err(PatronError::NotFound(_)) => return Err(AppError::NotFound.into()),
                Err(e) => return Err(failure(e)),
            };
            let refusal = match Money::parse(&form.amount, salon.currency) {
                Err(e) => Some(super::pledges::amount_refusal(tr, "admin-field-refund-amount", e)),
                Ok(amount) => {
                    let request_key = format!("console:{}:{}:{key}", membership.public_id, found.stripe_invoice_id);
                    let what = Refundable::invoice(&found, salon.currency);
                    let outcome = refund::refund(
                        &state.db,
                        state.gateway.as_ref(),
                        access.org_id(),
                        &what,
                        amount,
                        &request_key,
                        &staff.email,
                    )
                    .await?;
                    super::pledges::refund_refusal(tr, outcome, &found.stripe_invoice_id)
                }
            };
            match refusal {
                None => Ok(see_other(&format!(
                    "/admin/o/{}/salons/{}/patrons/{}",
                    access.org.slug, salon.slug, membership.public_id
                ))),
                Some((message, status)) => {
                    let page_ = patron_page(
                        &state,
                        tr,
                        &staff,
                        &access,
                        &salon,
                        &membership,
                        found.stripe_invoice_id.clone(),
                        form.amount.clone(),
                        Some(message),
                    )
                    .await?;
                    Ok(page(status, page_.render_html()))
                }
            }
        }
        .await,
    )
}

// ---------------------------------------------------------------- members' posts

#[derive(Debug, Default, Deserialize)]
pub struct PostForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title_ja: String,
    #[serde(default)]
    title_en: String,
    #[serde(default)]
    body_ja: String,
    #[serde(default)]
    body_en: String,
    #[serde(default)]
    link_url: String,
}

/// A salon setup form refused: its status and words on the refusal page.
fn salon_refusal(
    tr: Tr,
    staff: &Staff,
    access: &Access,
    e: PatronError,
    back: String,
) -> Result<axum::response::Response, Refused> {
    let (status, field) = crate::salon_errors::status_and_field(&e);
    if status.is_server_error() {
        return Err(Refused::Error(AppError::Internal(anyhow::anyhow!(e))));
    }
    let mut message = crate::salon_errors::describe(&e, tr);
    if let Some(name) = field.and_then(|f| post_field_name(tr, f)) {
        message = tr.t_with("field-problem", &[("field", &name), ("problem", &message)]);
    }
    Ok(super::setup::refused(tr, staff, access, status, message, back))
}

fn post_field_name(tr: Tr, field: &str) -> Option<String> {
    let key = match field {
        "title_ja" => "admin-field-title-ja",
        "title_en" => "admin-field-title-en",
        "body_ja" => "admin-field-body-ja",
        "body_en" => "admin-field-body-en",
        "link_url" => "admin-field-link",
        _ => return None,
    };
    Some(tr.t(key))
}

/// Publishes a post to the salon's members' area (`/s/{slug}/members`,
/// members in good standing only).
pub async fn add_post(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug)): Path<(String, String)>,
    Form(form): Form<PostForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Organise).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let salon = own_salon(&state, &access, &slug).await?;
            let back = format!("/admin/o/{}/salons/{}", access.org.slug, salon.slug);
            let input = store::PostInput {
                title_ja: form.title_ja.clone(),
                title_en: form.title_en.clone(),
                body_ja: form.body_ja.clone(),
                body_en: form.body_en.clone(),
                link_url: Some(form.link_url.clone()).filter(|l| !l.trim().is_empty()),
            };
            match store::add_post(&state.db, salon.id, &input).await {
                Ok(_) => Ok(see_other(&format!("{back}#posts"))),
                Err(e) => salon_refusal(tr, &staff, &access, e, back),
            }
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct DeletePostForm {
    #[serde(default)]
    csrf: String,
    /// The box ticked: members will no longer see the post.
    #[serde(default)]
    confirm: String,
}

/// Takes a post out of the members' area.
pub async fn delete_post(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    staff: Staff,
    Path((org, slug, post)): Path<(String, String, String)>,
    Form(form): Form<DeletePostForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &staff, &org, Need::Organise).await?;
            check_form(&state, &headers, &staff, &form.csrf)?;
            let salon = own_salon(&state, &access, &slug).await?;
            let Ok(post) = post.parse::<i64>() else {
                return Err(AppError::NotFound.into());
            };
            let back = format!("/admin/o/{}/salons/{}", access.org.slug, salon.slug);
            if form.confirm != "yes" {
                let message = tr.t("admin-error-confirm-delete");
                return Ok(super::setup::refused(tr, &staff, &access, StatusCode::UNPROCESSABLE_ENTITY, message, back));
            }
            match store::delete_post(&state.db, salon.id, post).await {
                Ok(()) => Ok(see_other(&format!("{back}#posts"))),
                Err(PatronError::NotFound(_)) => Err(AppError::NotFound.into()),
                Err(e) => Err(failure(e)),
            }
        }
        .await,
    )
}
