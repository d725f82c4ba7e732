//! API tokens: a bearer token per organisation and role, for automation and
//! for organisers until the console exists. Stored as SHA-256 hashes; the
//! token itself is shown once, when created.

use kanpa_ledger::{Db, OrgId, Timestamp, on_db, on_tx};
use rand::Rng;
use sha2::{Digest, Sha256};

/// What a token may do in its organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    Organiser,
    Treasurer,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Organiser => "organiser",
            Role::Treasurer => "treasurer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Owner, Role::Organiser, Role::Treasurer, Role::Viewer].into_iter().find(|r| r.as_str() == text)
    }

    /// Owners and organisers set up campaigns.
    pub fn can_organise(self) -> bool {
        matches!(self, Role::Owner | Role::Organiser)
    }

    /// Owners and treasurers export the books and reconcile them.
    pub fn can_keep_books(self) -> bool {
        matches!(self, Role::Owner | Role::Treasurer)
    }
}

/// The organisation and role a request's token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub org: OrgId,
    pub role: Role,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token and returns it; only its hash is kept.
pub async fn create(db: &Db, org: OrgId, role: Role, label: &str) -> Result<String, sqlx::Error> {
    let bytes: [u8; 24] = rand::rng().random();
    let token = format!("kanpa_{}", hex::encode(bytes));
    let sql = "INSERT INTO api_tokens (org_id, token_hash, role, label, created_at) VALUES ($1, $2, $3, $4, $5)";
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query(sql).bind(org.0).bind(hash(&token)).bind(role.as_str()).bind(label)
        .bind(Timestamp::now()).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(token)
}

/// The caller behind a token, if it exists and is not revoked.
pub async fn authenticate(db: &Db, token: &str) -> Result<Option<Caller>, sqlx::Error> {
    let sql = "SELECT org_id, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL";
    let row: Option<(i64, String)> = on_db!(db, p => sqlx::query_as(sql).bind(hash(token)).fetch_optional(p).await?);
    Ok(row.and_then(|(org, role)| Role::parse(&role).map(|role| Caller { org: OrgId(org), role })))
}

/// Revokes a token by its label; returns how many were revoked.
pub async fn revoke(db: &Db, org: OrgId, label: &str) -> Result<u64, sqlx::Error> {
    let sql = "UPDATE api_tokens SET revoked_at = $1 WHERE org_id = $2 AND label = $3 AND revoked_at IS NULL";
    let mut tx = db.begin().await?;
    let n = on_tx!(&mut tx, c => sqlx::query(sql).bind(Timestamp::now()).bind(org.0).bind(label)
        .execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(n)
}
