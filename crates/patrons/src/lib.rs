//! The patron salon: an organisation's salon offers monthly tiers, and
//! patrons hold memberships, each one Stripe subscription to one tier's
//! price.
//!
//! - [`model`]: the types and the rules their inputs follow;
//! - [`store`]: creating, editing and reading salons, tiers, members'
//!   posts and memberships, and the atomic seat claim of a tier;
//! - [`join`]: a tier's Stripe price, and joining through Checkout in
//!   subscription mode;
//! - [`events`]: the Stripe Billing events and the job that posts a paid
//!   invoice to the salon's fund;
//! - [`roster`]: the organiser's view: patrons, counts, MRR and churn;
//! - [`selfservice`]: a patron's own changes: tier, cancel and undo, pause
//!   and resume, the card;
//! - [`repricing`]: the organiser moves a tier's patrons onto its current
//!   price, from their next renewal.
//!
//! Each salon opens a fund account in the ledger; money a patron pays is
//! posted there with the Stripe fee as its own entry. Owns the tables
//! `salons`, `salon_tiers`, `salon_tier_prices`, `salon_member_posts`,
//! `memberships`, `membership_invoices` and `membership_waiting_events`.
//! Knows nothing of campaigns or of HTTP; signing in is
//! `kanpa_messaging::signin`.

pub mod demo;
pub mod error;
pub mod events;
pub mod export;
pub mod join;
pub mod model;
pub mod repricing;
pub mod roster;
pub mod selfservice;
pub mod store;

pub use error::PatronError;
/// What salon flows need to know about the server they run in.
#[derive(Clone, Debug)]
pub struct Site {
    /// Absolute, without a trailing slash: "https://kanpa.example".
    pub base_url: String,
    /// The domain of outgoing Message-IDs.
    pub mail_domain: String,
}

impl Site {
    /// The patron's own page, where every patron email links.
    pub fn manage_link(&self) -> String {
        format!("{}/me", self.base_url)
    }

    /// A receipt's page (shown to the signed-in payer).
    pub fn receipt_link(&self, receipt: &str) -> String {
        format!("{}/me/receipts/{receipt}", self.base_url)
    }
}

pub use model::{
    BillingAnchor, MemberPost, Membership, MembershipStatus, Salon, SalonStatus, Tier, TierChange, TierStatus,
};
