//! Every query on the staff tables. Tokens and session ids are random and
//! stored only as SHA-256 hashes.

use kanpa_ledger::{Db, OrgId, Organisation, Timestamp, Tx, on_db, on_tx};
use rand::Rng;
use sha2::{Digest, Sha256};

use super::{Access, Role};

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn later(minutes: i64) -> Timestamp {
    Timestamp::now().saturating_add(time::Duration::minutes(minutes))
}

/// A staff user as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffUser {
    pub id: i64,
    pub email: String,
    pub password_hash: Option<String>,
}

/// One person's role in an organisation, for the staff list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaffMember {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub team: Option<i64>,
    pub invited_by: Option<String>,
}

/// The user with this address, created if new. Addresses are compared
/// lower-cased.
pub async fn ensure_user(tx: &mut Tx, email: &str) -> Result<i64, sqlx::Error> {
    let email = email.trim().to_lowercase();
    let insert = "INSERT INTO staff_users (email, created_at) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING";
    let select = "SELECT id FROM staff_users WHERE email = $1";
    Ok(on_tx!(tx, c => {
        sqlx::query(insert).bind(&email).bind(Timestamp::now()).execute(&mut *c).await?;
        sqlx::query_scalar(select).bind(&email).fetch_one(c).await?
    }))
}

pub async fn user_by_email(db: &Db, email: &str) -> Result<Option<StaffUser>, sqlx::Error> {
    let sql = "SELECT id, email, password_hash FROM staff_users WHERE email = $1";
    let row: Option<(i64, String, Option<String>)> =
        on_db!(db, p => sqlx::query_as(sql).bind(email.trim().to_lowercase()).fetch_optional(p).await?);
    Ok(row.map(|(id, email, password_hash)| StaffUser { id, email, password_hash }))
}

/// Gives `user` a role in `org`, replacing any earlier one.
pub async fn set_role(
    tx: &mut Tx,
    user: i64,
    org: OrgId,
    role: Role,
    team: Option<i64>,
    invited_by: Option<&str>,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO staff_roles (user_id, org_id, role, team_id, invited_by, created_at)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (user_id, org_id) DO UPDATE SET role = excluded.role, team_id = excluded.team_id,
                   invited_by = excluded.invited_by";
    on_tx!(tx, c => sqlx::query(sql).bind(user).bind(org.0).bind(role.as_str()).bind(team).bind(invited_by)
        .bind(Timestamp::now()).execute(c).await?.rows_affected());
    Ok(())
}

/// Removes a person's role in `org`; their sessions stay for any other
/// organisation they work for. Returns whether there was one.
pub async fn remove_role(db: &Db, org: OrgId, user: i64) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, c => sqlx::query("DELETE FROM staff_roles WHERE org_id = $1 AND user_id = $2")
        .bind(org.0).bind(user).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(n > 0)
}

type AccessRow = (i64, String, i64, String, String, String, Option<i64>);

fn access(row: AccessRow) -> Option<Access> {
    let (user_id, email, org_id, slug, name, role, team) = row;
    Some(Access {
        user_id,
        email,
        org: Organisation { id: OrgId(org_id), slug, name },
        role: Role::parse(&role)?,
        team,
    })
}

const ACCESS_SQL: &str = "SELECT u.id, u.email, o.id, o.slug, o.name, r.role, r.team_id
    FROM staff_roles r JOIN staff_users u ON u.id = r.user_id JOIN organisations o ON o.id = r.org_id";

/// Every organisation `user` has a role in, by slug.
pub async fn roles_of(db: &Db, user: i64) -> Result<Vec<Access>, sqlx::Error> {
    let sql = format!("{ACCESS_SQL} WHERE r.user_id = $1 ORDER BY o.slug");
    let rows: Vec<AccessRow> = on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user).fetch_all(p).await?);
    Ok(rows.into_iter().filter_map(access).collect())
}

/// `user`'s standing in the organisation with this slug; `None` when the
/// organisation does not exist or the user has no role in it (alike).
pub async fn access_in(db: &Db, user: i64, org_slug: &str) -> Result<Option<Access>, sqlx::Error> {
    let sql = format!("{ACCESS_SQL} WHERE r.user_id = $1 AND o.slug = $2");
    let row: Option<AccessRow> = on_db!(db, p => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user).bind(org_slug).fetch_optional(p).await?);
    Ok(row.and_then(access))
}

pub async fn staff_of(db: &Db, org: OrgId) -> Result<Vec<StaffMember>, sqlx::Error> {
    let sql = "SELECT u.id, u.email, r.role, r.team_id, r.invited_by FROM staff_roles r
               JOIN staff_users u ON u.id = r.user_id WHERE r.org_id = $1 ORDER BY u.email";
    type Row = (i64, String, String, Option<i64>, Option<String>);
    let rows: Vec<Row> = on_db!(db, p => sqlx::query_as(sql).bind(org.0).fetch_all(p).await?);
    Ok(rows
        .into_iter()
        .filter_map(|(user_id, email, role, team, invited_by)| {
            Some(StaffMember { user_id, email, role: Role::parse(&role)?, team, invited_by })
        })
        .collect())
}

/// A single-use sign-in link's token for `user`, valid for `minutes`.
pub async fn create_link(tx: &mut Tx, user: i64, minutes: i64) -> Result<String, sqlx::Error> {
    let token = random_token();
    let sql = "INSERT INTO staff_sign_in_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
    on_tx!(tx, c => sqlx::query(sql).bind(hash(&token)).bind(user).bind(Timestamp::now()).bind(later(minutes))
        .execute(c).await?.rows_affected());
    Ok(token)
}

/// Uses a link once; unknown, expired and used links are refused alike.
pub async fn redeem_link(db: &Db, token: &str) -> Result<Option<i64>, sqlx::Error> {
    let now = Timestamp::now();
    let sql = "UPDATE staff_sign_in_tokens SET used_at = $1
               WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING user_id";
    let mut tx = db.begin().await?;
    let user: Option<i64> =
        on_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(now).bind(hash(token)).fetch_optional(c).await?);
    tx.commit().await?;
    Ok(user)
}

/// Opens a new session for `user` and ends `replacing` (the session the
/// browser presented before signing in, if any), so an id known before
/// sign-in is worthless after it. Returns the raw session id.
pub async fn open_session(db: &Db, user: i64, replacing: Option<&str>) -> Result<String, sqlx::Error> {
    let id = random_token();
    let now = Timestamp::now();
    let mut tx = db.begin().await?;
    if let Some(old) = replacing {
        on_tx!(&mut tx, c => sqlx::query("DELETE FROM staff_sessions WHERE id_hash = $1")
            .bind(hash(old)).execute(c).await?.rows_affected());
    }
    let sql = "INSERT INTO staff_sessions (id_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(hash(&id)).bind(user).bind(now)
        .bind(later(super::SESSION_HOURS * 60)).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(id)
}

/// The user of a live session: (id, email).
pub async fn session_user(db: &Db, session_id: &str) -> Result<Option<(i64, String)>, sqlx::Error> {
    let sql = "SELECT u.id, u.email FROM staff_sessions s JOIN staff_users u ON u.id = s.user_id
               WHERE s.id_hash = $1 AND s.expires_at > $2";
    Ok(on_db!(db, p => sqlx::query_as(sql).bind(hash(session_id)).bind(Timestamp::now()).fetch_optional(p).await?))
}

pub async fn end_session(db: &Db, session_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query("DELETE FROM staff_sessions WHERE id_hash = $1")
        .bind(hash(session_id)).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(())
}

/// Sets a new password hash, ends every session of the user (on every
/// device) and opens a fresh one for the browser that changed it.
pub async fn change_password(db: &Db, user: i64, password_hash: &str) -> Result<String, sqlx::Error> {
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => {
        sqlx::query("UPDATE staff_users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
            .bind(password_hash).bind(Timestamp::now()).bind(user).execute(&mut *c).await?;
        sqlx::query("DELETE FROM staff_sessions WHERE user_id = $1").bind(user).execute(c).await?.rows_affected()
    });
    tx.commit().await?;
    open_session(db, user, None).await
}

/// Notes a refused sign-in against each scope ("account:…", "address:…").
pub async fn record_failure(db: &Db, scopes: &[String]) -> Result<(), sqlx::Error> {
    let now = Timestamp::now();
    let mut tx = db.begin().await?;
    for scope in scopes {
        on_tx!(&mut tx, c => sqlx::query("INSERT INTO staff_sign_in_failures (scope, failed_at) VALUES ($1, $2)")
            .bind(scope).bind(now).execute(c).await?.rows_affected());
    }
    // Old rows say nothing any more.
    let old = Timestamp::now().saturating_add(time::Duration::days(-1));
    on_tx!(&mut tx, c => sqlx::query("DELETE FROM staff_sign_in_failures WHERE failed_at < $1")
        .bind(old).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(())
}

/// Failures of `scope` within the throttling window.
pub async fn recent_failures(db: &Db, scope: &str) -> Result<i64, sqlx::Error> {
    let since = later(-super::THROTTLE_MINUTES);
    let sql = "SELECT COUNT(*) FROM staff_sign_in_failures WHERE scope = $1 AND failed_at > $2";
    Ok(on_db!(db, p => sqlx::query_scalar(sql).bind(scope).bind(since).fetch_one(p).await?))
}
