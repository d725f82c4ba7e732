//! `/s/{slug}`: a salon's public page with its tiers and the subscription
//! terms shown before paying (Japanese law requires the price per cycle,
//! when each charge happens and how to cancel), the join form that opens
//! Checkout, the welcome page, and the members' area, shown only to a
//! signed-in patron in good standing.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::from_fn;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use kanpa_ledger::Timestamp;
use kanpa_patrons::join::{self, JoinForm};
use kanpa_patrons::{BillingAnchor, MembershipStatus, PatronError, Salon, SalonStatus, Tier, TierStatus, store};

use crate::app::AppState;
use crate::error::AppError;
use crate::forms;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/s/{slug}", get(salon_page))
        .route("/s/{slug}/join", post(join_salon))
        .route("/s/{slug}/welcome/{membership}", get(welcome))
        .route("/s/{slug}/members", get(members))
        .route_layer(from_fn(forms::deny_framing))
}

fn failure(e: PatronError) -> AppError {
    match e {
        PatronError::NotFound(_) => AppError::NotFound,
        PatronError::Database(e) => AppError::from(e),
        PatronError::Ledger(e) => AppError::Ledger(e),
        other => AppError::Internal(anyhow::anyhow!(other)),
    }
}

struct TierView {
    slug: String,
    name: String,
    price: String,
    benefits: String,
    seats_left: Option<i64>,
    joinable: bool,
    checked: bool,
}

#[derive(Template)]
#[template(path = "salon.html")]
struct SalonPage {
    tr: Tr,
    slug: String,
    name: String,
    description: String,
    open: bool,
    tiers: Vec<TierView>,
    /// When each charge happens, by the salon's billing anchor.
    charge_timing: String,
    /// The organiser's legal disclosure page.
    legal_link: String,
    email: String,
    error: Option<String>,
}

fn tier_views(tr: Tr, tiers: &[Tier], chosen: &str) -> Vec<TierView> {
    tiers
        .iter()
        .filter(|t| t.status == TierStatus::Active)
        .map(|t| TierView {
            slug: t.slug.clone(),
            name: t.name(tr.0).to_owned(),
            price: tr.t_with("salon-per-month", &[("price", &t.price().format(tr.0))]),
            benefits: t.benefits(tr.0).to_owned(),
            seats_left: t.seats_left(),
            joinable: t.is_joinable(),
            checked: t.slug == chosen,
        })
        .collect()
}

async fn render_salon(
    state: &AppState,
    tr: Tr,
    salon: &Salon,
    email: String,
    chosen: &str,
    error: Option<String>,
) -> Result<String, AppError> {
    let tiers = store::tiers(&state.db, salon.id).await.map_err(failure)?;
    let charge_timing = match salon.billing_anchor {
        BillingAnchor::StartDate => tr.t("salon-terms-start-date"),
        BillingAnchor::FirstOfMonth => tr.t("salon-terms-first-of-month"),
    };
    let page = SalonPage {
        tr,
        slug: salon.slug.clone(),
        name: salon.name(tr.0).to_owned(),
        description: salon.description(tr.0).to_owned(),
        open: salon.status == SalonStatus::Open,
        tiers: tier_views(tr, &tiers, chosen),
        charge_timing,
        legal_link: crate::routes::legal::legal_path_of(state, salon.org_id).await?,
        email,
        error,
    };
    Ok(page.render_html())
}

async fn public_salon(state: &AppState, slug: &str) -> Result<Salon, AppError> {
    let salon = store::salon_by_slug(&state.db, slug).await.map_err(failure)?;
    if salon.status == SalonStatus::Draft {
        return Err(AppError::NotFound);
    }
    Ok(salon)
}

async fn salon_page(State(state): State<AppState>, lang: Lang, Path(slug): Path<String>) -> Result<Response, AppError> {
    let salon = public_salon(&state, &slug).await?;
    let html = render_salon(&state, lang.tr(), &salon, String::new(), "", None).await?;
    Ok(Html(html).into_response())
}

/// The words for a refused join, in the person's language, and its status.
fn refused(tr: Tr, e: &PatronError) -> Option<(StatusCode, String)> {
    let (status, field) = crate::salon_errors::status_and_field(e);
    if status.is_server_error() && !matches!(e, PatronError::Gateway(_)) {
        return None;
    }
    let message = crate::salon_errors::describe(e, tr);
    let message = match field {
        Some("email") if matches!(e, PatronError::Invalid(_)) => {
            tr.t_with("field-problem", &[("field", &tr.t("pledge-email")), ("problem", &message)])
        }
        _ => message,
    };
    Some((status, message))
}

async fn join_salon(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(slug): Path<String>,
    Form(form): Form<JoinForm>,
) -> Result<Response, AppError> {
    let tr = lang.tr();
    if !forms::same_origin(&headers, &state.site.base_url) {
        return Ok(forms::cross_site(tr));
    }
    let salon = public_salon(&state, &slug).await?;
    let site = state.config.salon_site();
    match join::join(&state.db, state.gateway.as_ref(), &site, &slug, &form, lang.0).await {
        Ok(joined) => Ok((StatusCode::SEE_OTHER, [(LOCATION, joined.checkout_url)]).into_response()),
        Err(e) => {
            let Some((status, message)) = refused(tr, &e) else { return Err(failure(e)) };
            if let PatronError::Gateway(g) = &e {
                tracing::warn!(error = %g, "payment provider failed; nothing was charged");
            }
            let html = render_salon(&state, tr, &salon, form.email.clone(), form.tier.trim(), Some(message)).await?;
            Ok((status, Html(html)).into_response())
        }
    }
}

#[derive(Template)]
#[template(path = "salon_welcome.html")]
struct WelcomePage {
    tr: Tr,
    slug: String,
    name: String,
    confirmed: bool,
}

/// Where Checkout sends a new patron. It only reads, and reloads itself
/// until the payment's events have made the membership active.
async fn welcome(
    State(state): State<AppState>,
    lang: Lang,
    Path((slug, membership)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let salon = public_salon(&state, &slug).await?;
    let m = store::membership_by_public_id(&state.db, &membership).await.map_err(failure)?;
    if m.salon_id != salon.id {
        return Err(AppError::NotFound);
    }
    let tr = lang.tr();
    let page = WelcomePage {
        tr,
        slug: salon.slug.clone(),
        name: salon.name(tr.0).to_owned(),
        confirmed: m.status != MembershipStatus::Incomplete,
    };
    Ok(([(CACHE_CONTROL, "no-store")], Html(page.render_html())).into_response())
}

struct PostView {
    title: String,
    body: String,
    link: Option<String>,
}

#[derive(Template)]
#[template(path = "salon_members.html")]
struct MembersPage {
    tr: Tr,
    slug: String,
    name: String,
    signed_in: bool,
    /// Set for a member in good standing.
    posts: Option<Vec<PostView>>,
    /// Why a signed-in person sees no posts.
    reason: Option<String>,
}

async fn members(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Result<Response, AppError> {
    let salon = public_salon(&state, &slug).await?;
    let tr = lang.tr();
    let who = crate::routes::me::signed_in(&state, &headers).await?;
    let mut page = MembersPage {
        tr,
        slug: salon.slug.clone(),
        name: salon.name(tr.0).to_owned(),
        signed_in: who.is_some(),
        posts: None,
        reason: None,
    };
    if let Some((_, email)) = who {
        let mine = store::memberships_of_email(&state.db, &email).await.map_err(failure)?;
        let membership = mine.into_iter().find(|m| m.salon_id == salon.id && m.status != MembershipStatus::Ended);
        let now = Timestamp::now();
        match membership {
            Some(m) if m.in_good_standing(salon.grace_days, now) => {
                let posts = store::posts(&state.db, salon.id).await.map_err(failure)?;
                page.posts = Some(
                    posts
                        .iter()
                        .map(|p| PostView {
                            title: p.title(tr.0).to_owned(),
                            body: p.body(tr.0).to_owned(),
                            link: p.link_url.clone(),
                        })
                        .collect(),
                );
            }
            Some(m) if m.status == MembershipStatus::PastDue => page.reason = Some(tr.t("salon-members-past-due")),
            Some(m) if m.status == MembershipStatus::Paused => page.reason = Some(tr.t("salon-members-paused")),
            _ => page.reason = Some(tr.t("salon-members-not-member")),
        }
    }
    Ok(([(CACHE_CONTROL, "no-store")], Html(page.render_html())).into_response())
}
