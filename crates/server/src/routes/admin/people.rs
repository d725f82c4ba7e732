//! The people of an organisation (owners only): staff and their roles,
//! invitations by email, and API tokens (shown once, stored hashed).

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use kanpa_messaging::email::{EmailAddress, EmailTemplate};
use kanpa_messaging::outbox::{self, NewEmail};
use serde::Deserialize;

use super::books::funds;
use super::{Answer, Nav, Need, Refused, Staff, access, check_form, page, see_other};
use crate::api_token;
use crate::app::AppState;
use crate::error::AppError;
use crate::i18n::{Lang, Tr};
use crate::pages::RenderHtml;
use crate::staff::{self, Access, Role, store};

const ROLES: [Role; 4] = [Role::Owner, Role::Organiser, Role::Treasurer, Role::Viewer];

struct Person {
    user_id: i64,
    email: String,
    role: String,
    team: String,
    is_me: bool,
}

#[derive(Template)]
#[template(path = "admin_staff.html")]
struct StaffPage {
    tr: Tr,
    nav: Nav,
    people: Vec<Person>,
    roles: Vec<(&'static str, String)>,
    teams: Vec<(i64, String)>,
    form: InviteForm,
    errors: Vec<String>,
    notice: Option<String>,
}

/// The teams of the organisation, for scoping a treasurer.
async fn teams(state: &AppState, tr: Tr, access: &Access) -> Result<Vec<(i64, String)>, Refused> {
    let (funds, _) = funds(state, tr, access).await?;
    Ok(funds.into_iter().filter_map(|f| Some((f.team?, f.label))).collect())
}

fn role_choices(tr: Tr) -> Vec<(&'static str, String)> {
    ROLES.iter().map(|r| (r.as_str(), tr.t(&format!("admin-role-{}", r.as_str())))).collect()
}

async fn staff_page(
    state: &AppState,
    tr: Tr,
    me: &Staff,
    access: &Access,
    form: InviteForm,
    errors: Vec<String>,
    notice: Option<String>,
) -> Result<StaffPage, Refused> {
    let teams = teams(state, tr, access).await?;
    let people = store::staff_of(&state.db, access.org_id())
        .await?
        .into_iter()
        .map(|m| Person {
            user_id: m.user_id,
            is_me: m.user_id == me.user_id,
            email: m.email,
            role: tr.t(&format!("admin-role-{}", m.role.as_str())),
            team: m
                .team
                .and_then(|t| teams.iter().find(|(id, _)| *id == t))
                .map(|(_, l)| l.clone())
                .unwrap_or_default(),
        })
        .collect();
    Ok(StaffPage { tr, nav: Nav::new(me, access, None), people, roles: role_choices(tr), teams, form, errors, notice })
}

pub async fn staff(State(state): State<AppState>, lang: Lang, me: Staff, Path(org): Path<String>) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &me, &org, Need::Staff).await?;
            let page_ = staff_page(&state, tr, &me, &access, InviteForm::default(), Vec::new(), None).await?;
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize, Clone)]
pub struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    team: String,
    /// The invitation's language ("ja" or "en"); empty: the inviter's.
    #[serde(default)]
    lang: String,
}

/// Parses a role and team choice: a team only for a treasurer, and only
/// one of this organisation's (another's is not found).
fn role_and_team(
    tr: Tr,
    teams: &[(i64, String)],
    role: &str,
    team: &str,
    errors: &mut Vec<String>,
) -> Result<(Role, Option<i64>), Refused> {
    let role = match Role::parse(role) {
        Some(r) => r,
        None => {
            errors.push(field(tr, "admin-field-role", tr.t("campaign-error-choice")));
            Role::Viewer
        }
    };
    let team = match team.trim() {
        "" => None,
        text => match text.parse::<i64>().ok().filter(|id| teams.iter().any(|(t, _)| t == id)) {
            Some(id) => Some(id),
            None => return Err(AppError::NotFound.into()),
        },
    };
    if team.is_some() && role != Role::Treasurer {
        errors.push(field(tr, "admin-field-team", tr.t("admin-error-team-treasurer-only")));
    }
    Ok((role, team))
}

fn field(tr: Tr, key: &str, problem: String) -> String {
    tr.t_with("field-problem", &[("field", &tr.t(key)), ("problem", &problem)])
}

/// Invites a person: their role is set now and they get a single-use
/// sign-in link by email (valid for three days).
pub async fn invite(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    me: Staff,
    Path(org): Path<String>,
    Form(form): Form<InviteForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &me, &org, Need::Staff).await?;
            check_form(&state, &headers, &me, &form.csrf)?;
            let teams = teams(&state, tr, &access).await?;
            let mut errors = Vec::new();
            let email = form.email.trim().to_lowercase();
            let address = if email.is_empty() {
                errors.push(field(tr, "field-email", tr.t("campaign-error-required")));
                None
            } else if email.len() > 254 {
                errors.push(field(tr, "field-email", tr.t_with("campaign-error-too-long", &[("max", "254")])));
                None
            } else {
                match EmailAddress::parse(&email) {
                    Ok(a) => Some(a),
                    Err(_) => {
                        errors.push(field(tr, "field-email", tr.t("campaign-error-email")));
                        None
                    }
                }
            };
            let (role, team) = role_and_team(tr, &teams, &form.role, &form.team, &mut errors)?;
            let email_locale = match form.lang.trim() {
                "" => lang.0,
                text => kanpa_ledger::Locale::parse(text).unwrap_or_else(|| {
                    errors.push(field(tr, "admin-field-language", tr.t("campaign-error-choice")));
                    lang.0
                }),
            };
            let Some(address) = address.filter(|_| errors.is_empty()) else {
                let page_ = staff_page(&state, tr, &me, &access, form, errors, None).await?;
                return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, page_.render_html()));
            };
            let mut tx = state.db.begin().await.map_err(AppError::from)?;
            let user = store::ensure_user(&mut tx, &email).await?;
            store::set_role(&mut tx, user, access.org_id(), role, team, Some(&me.email)).await?;
            let token = store::create_link(&mut tx, user, staff::INVITATION_HOURS * 60).await?;
            let expires = kanpa_ledger::Timestamp::now().saturating_add(time::Duration::hours(staff::INVITATION_HOURS));
            // The role and team in the words of the invitation's language.
            let words = Tr(email_locale);
            let team_name = match team {
                Some(id) => super::books::funds(&state, words, &access)
                    .await?
                    .0
                    .into_iter()
                    .find(|f| f.team == Some(id))
                    .map(|f| f.label),
                None => None,
            };
            let message = NewEmail {
                key: format!("staff-invitation:{}", &token[..32]),
                to: address,
                to_name: None,
                locale: email_locale,
                template: EmailTemplate::StaffInvitation {
                    inviter: me.email.clone(),
                    organisation: access.org.name.clone(),
                    role: words.t(&format!("admin-role-{}", role.as_str())),
                    team: team_name,
                    link: format!("{}/admin/sign-in/{token}", state.site.base_url),
                    expires_at: format!("{} (JST)", super::books::local_minute(expires)),
                    expires_in_hours: staff::INVITATION_HOURS as u32,
                },
            };
            outbox::enqueue(&mut tx, &message, &state.site.mail_domain)
                .await
                .map_err(|e| AppError::Internal(e.into()))?;
            tx.commit().await.map_err(AppError::from)?;
            state.workers.notify();
            let notice = Some(tr.t_with("admin-invited", &[("email", &email)]));
            let page_ = staff_page(&state, tr, &me, &access, InviteForm::default(), Vec::new(), notice).await?;
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Removes a person's role in this organisation; the last owner stays.
pub async fn remove(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    me: Staff,
    Path((org, user)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &me, &org, Need::Staff).await?;
            check_form(&state, &headers, &me, &form.csrf)?;
            let user = user.parse::<i64>().map_err(|_| AppError::NotFound)?;
            let people = store::staff_of(&state.db, access.org_id()).await?;
            let person = people.iter().find(|p| p.user_id == user).ok_or(AppError::NotFound)?;
            let owners = people.iter().filter(|p| p.role == Role::Owner).count();
            if person.role == Role::Owner && owners == 1 {
                let errors = vec![tr.t("admin-error-last-owner")];
                let page_ = staff_page(&state, tr, &me, &access, InviteForm::default(), errors, None).await?;
                return Ok(page(StatusCode::CONFLICT, page_.render_html()));
            }
            store::remove_role(&state.db, access.org_id(), user).await?;
            Ok(see_other(&format!("/admin/o/{}/staff", access.org.slug)))
        }
        .await,
    )
}

// ---------------------------------------------------------------- API tokens

struct TokenRow {
    id: i64,
    label: String,
    role: String,
    team: String,
    created: String,
}

#[derive(Template)]
#[template(path = "admin_tokens.html")]
struct TokensPage {
    tr: Tr,
    nav: Nav,
    tokens: Vec<TokenRow>,
    roles: Vec<(&'static str, String)>,
    teams: Vec<(i64, String)>,
    form: TokenForm,
    errors: Vec<String>,
    /// The token just created, shown this once.
    created: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    team: String,
}

pub const LABEL_MAX: usize = 100;

async fn tokens_page(
    state: &AppState,
    tr: Tr,
    me: &Staff,
    access: &Access,
    form: TokenForm,
    errors: Vec<String>,
    created: Option<String>,
) -> Result<TokensPage, Refused> {
    let teams = teams(state, tr, access).await?;
    let tokens = api_token::live_tokens(&state.db, access.org_id())
        .await?
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            label: t.label,
            role: tr.t(&format!("admin-role-{}", t.role.as_str())),
            team: t
                .team
                .and_then(|id| teams.iter().find(|(t, _)| *t == id))
                .map(|(_, l)| l.clone())
                .unwrap_or_default(),
            created: super::books::local_minute(t.created_at),
        })
        .collect();
    Ok(TokensPage {
        tr,
        nav: Nav::new(me, access, None),
        tokens,
        roles: role_choices(tr),
        teams,
        form,
        errors,
        created,
    })
}

pub async fn tokens(State(state): State<AppState>, lang: Lang, me: Staff, Path(org): Path<String>) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &me, &org, Need::Staff).await?;
            let page_ = tokens_page(&state, tr, &me, &access, TokenForm::default(), Vec::new(), None).await?;
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

/// Creates a token and shows it once; only its hash is kept.
pub async fn create_token(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    me: Staff,
    Path(org): Path<String>,
    Form(form): Form<TokenForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &me, &org, Need::Staff).await?;
            check_form(&state, &headers, &me, &form.csrf)?;
            let teams = teams(&state, tr, &access).await?;
            let mut errors = Vec::new();
            let label = form.label.trim().to_owned();
            if label.is_empty() {
                errors.push(field(tr, "admin-field-label", tr.t("campaign-error-required")));
            } else if label.chars().count() > LABEL_MAX {
                errors.push(field(
                    tr,
                    "admin-field-label",
                    tr.t_with("campaign-error-too-long", &[("max", &LABEL_MAX.to_string())]),
                ));
            }
            let (role, team) = role_and_team(tr, &teams, &form.role, &form.team, &mut errors)?;
            if !errors.is_empty() {
                let page_ = tokens_page(&state, tr, &me, &access, form, errors, None).await?;
                return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, page_.render_html()));
            }
            let token = api_token::create_scoped(&state.db, access.org_id(), role, team, &label).await?;
            let page_ = tokens_page(&state, tr, &me, &access, TokenForm::default(), Vec::new(), Some(token)).await?;
            Ok(page(StatusCode::OK, page_.render_html()))
        }
        .await,
    )
}

pub async fn revoke_token(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    me: Staff,
    Path((org, id)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Answer {
    let tr = lang.tr();
    Answer(
        tr,
        async {
            let access = access(&state, &me, &org, Need::Staff).await?;
            check_form(&state, &headers, &me, &form.csrf)?;
            let id = id.parse::<i64>().map_err(|_| AppError::NotFound)?;
            if !api_token::revoke_id(&state.db, access.org_id(), id).await? {
                return Err(AppError::NotFound.into());
            }
            Ok(see_other(&format!("/admin/o/{}/tokens", access.org.slug)))
        }
        .await,
    )
}
