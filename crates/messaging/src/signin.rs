//! Single-use sign-in links sent by email, and the sessions they open.
//!
//! Supporters of campaigns and patrons of salons sign in the same way, to
//! the same "my page" (`/me`), so this lives here rather than in either
//! domain: it knows an email address, never what that address pledged or
//! joined.
//!
//! Owns the tables `sign_in_tokens` and `supporter_sessions`. Tokens and
//! session ids are random and stored only as SHA-256 hashes.

use kanpa_ledger::{Db, Locale, Timestamp, on_db, on_tx};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::email::{EmailAddress, EmailTemplate};
use crate::outbox::{self, NewEmail, OutboxError};

pub const LINK_MINUTES: u32 = 30;
pub const SESSION_DAYS: i64 = 30;

/// Where links point and what domain Message-IDs use.
#[derive(Clone, Copy, Debug)]
pub struct LinkSite<'a> {
    /// Absolute, without a trailing slash.
    pub base_url: &'a str,
    pub mail_domain: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("an email address is required")]
    EmailRequired,
    #[error("longer than 254 characters")]
    EmailTooLong,
    #[error("not an email address")]
    InvalidEmail,
    /// A link that is unknown, expired or already used: refused alike.
    #[error("the sign-in link has expired or was already used")]
    LinkExpired,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The address as typed, trimmed, if it is one.
pub fn parse_email(input: &str) -> Result<EmailAddress, SignInError> {
    let value = input.trim();
    if value.is_empty() {
        return Err(SignInError::EmailRequired);
    }
    if value.len() > 254 {
        return Err(SignInError::EmailTooLong);
    }
    EmailAddress::parse(value).map_err(|_| SignInError::InvalidEmail)
}

/// Emails a sign-in link to `/me/sign-in/{token}`. Says nothing about
/// whether the address has pledges or memberships, so the page cannot be
/// used to find out who supports what.
pub async fn request_link(db: &Db, site: LinkSite<'_>, email: &str, locale: Locale) -> Result<(), SignInError> {
    let to = parse_email(email)?;
    let token = random_token();
    let now = Timestamp::now();
    let expires = now.saturating_add(time::Duration::minutes(i64::from(LINK_MINUTES)));
    let mut tx = db.begin().await?;
    let sql = "INSERT INTO sign_in_tokens (token_hash, email, created_at, expires_at) VALUES ($1, $2, $3, $4)";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(hash(&token)).bind(to.as_str()).bind(now).bind(expires)
        .execute(c).await?.rows_affected());
    let message = NewEmail {
        key: format!("sign-in:{}", hash(&token)),
        to,
        to_name: None,
        locale,
        template: EmailTemplate::SignInLink {
            link: format!("{}/me/sign-in/{token}", site.base_url),
            expires_in_minutes: LINK_MINUTES,
        },
    };
    outbox::enqueue(&mut tx, &message, site.mail_domain).await?;
    tx.commit().await?;
    Ok(())
}

/// A signed-in person: the raw session id goes in the cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub email: String,
}

/// Uses a sign-in link once and opens a session. An unknown, expired or
/// already used link is refused alike.
pub async fn redeem(db: &Db, token: &str) -> Result<Session, SignInError> {
    let now = Timestamp::now();
    let mut tx = db.begin().await?;
    let sql = "UPDATE sign_in_tokens SET used_at = $1
               WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING email";
    let email: Option<String> =
        on_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(now).bind(hash(token)).fetch_optional(c).await?);
    let email = email.ok_or(SignInError::LinkExpired)?;
    let id = random_token();
    let expires = now.saturating_add(time::Duration::days(SESSION_DAYS));
    let sql = "INSERT INTO supporter_sessions (id_hash, email, created_at, expires_at) VALUES ($1, $2, $3, $4)";
    on_tx!(&mut tx, c => sqlx::query(sql).bind(hash(&id)).bind(&email).bind(now).bind(expires)
        .execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(Session { id, email })
}

/// The email of a live session.
pub async fn session_email(db: &Db, session_id: &str) -> Result<Option<String>, SignInError> {
    let sql = "SELECT email FROM supporter_sessions WHERE id_hash = $1 AND expires_at > $2";
    Ok(on_db!(db, p => sqlx::query_scalar(sql).bind(hash(session_id)).bind(Timestamp::now()).fetch_optional(p).await?))
}

pub async fn sign_out(db: &Db, session_id: &str) -> Result<(), SignInError> {
    let sql = "DELETE FROM supporter_sessions WHERE id_hash = $1";
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query(sql).bind(hash(session_id)).execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_checked() {
        assert_eq!(parse_email("  hanako@example.jp ").unwrap().as_str(), "hanako@example.jp");
        assert!(matches!(parse_email("   "), Err(SignInError::EmailRequired)));
        assert!(matches!(parse_email(&format!("{}@example.jp", "a".repeat(250))), Err(SignInError::EmailTooLong)));
        assert!(matches!(parse_email("no-at"), Err(SignInError::InvalidEmail)));
    }

    #[test]
    fn only_hashes_are_stored() {
        let token = random_token();
        assert_eq!(token.len(), 64);
        assert_ne!(hash(&token), token);
        assert_eq!(hash(&token), hash(&token));
    }
}
