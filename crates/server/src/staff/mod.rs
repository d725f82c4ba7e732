//! Staff: the people who run an organisation from the console (`/admin`).
//!
//! A staff user is an email address with an optional password (argon2id)
//! and one role per organisation; a treasurer may be limited to one team's
//! fund. Signing in opens a session whose id lives only in an `HttpOnly`
//! cookie and is stored as a SHA-256 hash; every state-changing console form
//! carries a CSRF token derived from that session. Failed sign-ins are
//! counted per account and per client address, and past a limit refused
//! before the password is even checked.
//!
//! This module decides (plain functions, no I/O); [`store`] holds every
//! query on the tables it owns: `staff_users`, `staff_roles`,
//! `staff_sign_in_tokens`, `staff_sessions`, `staff_sign_in_failures`.

pub mod cli;
pub mod refund;
pub mod store;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use kanpa_ledger::{OrgId, Organisation};
use sha2::{Digest, Sha256};

pub use crate::api_token::Role;

/// Sessions last a working day at most; staff sign in again after that.
pub const SESSION_HOURS: i64 = 12;
/// An emailed sign-in link works for 30 minutes.
pub const LINK_MINUTES: i64 = 30;
/// A link printed by `kanpa user add` or sent with an invitation works for
/// three days: the person may not read it at once.
pub const INVITATION_HOURS: i64 = 72;
/// Failed sign-ins counted over this many minutes.
pub const THROTTLE_MINUTES: i64 = 15;
/// At most this many failures per account in the window…
pub const ACCOUNT_FAILURES: i64 = 5;
/// …and per client address (several people may share one).
pub const ADDRESS_FAILURES: i64 = 20;

pub const PASSWORD_MIN: usize = 10;
pub const PASSWORD_MAX: usize = 256;

/// What a role may do in its organisation. Reading is open to every role.
impl Role {
    /// Invite and remove staff, create and revoke API tokens.
    pub fn can_manage_staff(self) -> bool {
        matches!(self, Role::Owner)
    }

    /// Record manual entries and disbursements, reverse entries, refund,
    /// export the books and reconcile them.
    pub fn can_keep_books(self) -> bool {
        matches!(self, Role::Owner | Role::Treasurer)
    }
}

/// A signed-in staff user's standing in one organisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub user_id: i64,
    pub email: String,
    pub org: Organisation,
    pub role: Role,
    /// A treasurer limited to one campaign team's fund.
    pub team: Option<i64>,
}

impl Access {
    pub fn org_id(&self) -> OrgId {
        self.org.id
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    #[error("a password needs at least {PASSWORD_MIN} characters")]
    TooShort,
    #[error("a password has at most {PASSWORD_MAX} characters")]
    TooLong,
}

/// Length is the only rule: long passphrases beat composition rules.
pub fn check_new_password(password: &str) -> Result<(), PasswordProblem> {
    let n = password.chars().count();
    if n < PASSWORD_MIN {
        return Err(PasswordProblem::TooShort);
    }
    if n > PASSWORD_MAX {
        return Err(PasswordProblem::TooLong);
    }
    Ok(())
}

/// The PHC string of an argon2id hash with a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("could not hash a password: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `password` matches a stored PHC string. A malformed stored hash
/// matches nothing.
pub fn verify_password(password: &str, stored: &str) -> bool {
    if password.len() > PASSWORD_MAX * 4 {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Whether another sign-in attempt may be checked, given the failures
/// counted in the window for the account and for the client address.
pub fn may_attempt(account_failures: i64, address_failures: i64) -> bool {
    account_failures < ACCOUNT_FAILURES && address_failures < ADDRESS_FAILURES
}

/// The CSRF token of a session: a hash of its secret id, so it needs no
/// storage, is unguessable without the cookie, and dies with the session.
pub fn csrf_token(session_id: &str) -> String {
    hex::encode(Sha256::digest(format!("kanpa-csrf:{session_id}").as_bytes()))
}

/// Compares a submitted CSRF token with the session's in constant time.
pub fn csrf_matches(session_id: &str, submitted: &str) -> bool {
    let expected = csrf_token(session_id);
    if expected.len() != submitted.len() {
        return false;
    }
    expected.bytes().zip(submitted.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_argon2id_and_only_the_right_one_matches() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterz", &hash));
        assert!(!verify_password("anything", "not a hash"));
        assert_ne!(hash, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn new_passwords_need_ten_to_256_characters() {
        assert_eq!(check_new_password("short"), Err(PasswordProblem::TooShort));
        assert_eq!(check_new_password("ながいパスワードです。"), Ok(()));
        assert_eq!(check_new_password(&"x".repeat(257)), Err(PasswordProblem::TooLong));
    }

    #[test]
    fn attempts_stop_at_either_limit() {
        assert!(may_attempt(0, 0));
        assert!(may_attempt(ACCOUNT_FAILURES - 1, ADDRESS_FAILURES - 1));
        assert!(!may_attempt(ACCOUNT_FAILURES, 0));
        assert!(!may_attempt(0, ADDRESS_FAILURES));
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let token = csrf_token("session-a");
        assert!(csrf_matches("session-a", &token));
        assert!(!csrf_matches("session-b", &token));
        assert!(!csrf_matches("session-a", ""));
        assert!(!csrf_matches("session-a", &token[1..]));
    }

    #[test]
    fn roles_grant_what_the_issue_says() {
        assert!(Role::Owner.can_manage_staff() && Role::Owner.can_keep_books() && Role::Owner.can_organise());
        assert!(Role::Treasurer.can_keep_books() && !Role::Treasurer.can_organise());
        assert!(Role::Organiser.can_organise() && !Role::Organiser.can_keep_books());
        assert!(!Role::Viewer.can_organise() && !Role::Viewer.can_keep_books() && !Role::Viewer.can_manage_staff());
    }
}
