use kanpa_ledger::LedgerError;
use kanpa_payments::GatewayError;

use crate::model::{Invalid, MembershipStatus, SalonStatus};

/// Everything a salon operation can refuse or fail with. The server maps
/// each variant to a status and a message in the user's language.
#[derive(Debug, thiserror::Error)]
pub enum PatronError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Unknown, or belonging to another salon, organisation or patron: the
    /// cases are reported alike.
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("the slug is already taken")]
    SlugTaken,
    #[error("not possible while the salon is {status}")]
    SalonState { status: SalonStatus },
    /// Not open, or the tier is retired.
    #[error("the tier is not taking new patrons")]
    TierRetired,
    #[error("the tier is full")]
    TierFull,
    #[error("this address already has a membership of this salon")]
    AlreadyMember,
    #[error("not possible while the membership is {status}")]
    MembershipState { status: MembershipStatus },
    /// The organisation's legal disclosure (seller details) lacks required
    /// fields: nothing may go live until they are filled in.
    #[error(transparent)]
    SellerIncomplete(#[from] kanpa_payments::seller::Incomplete),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Receipt(#[from] kanpa_payments::receipt::ReceiptError),
    #[error(transparent)]
    Seller(#[from] kanpa_payments::seller::SellerError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl PatronError {
    /// A stable machine-readable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            PatronError::Invalid(invalid) => invalid.problem.code(),
            PatronError::NotFound(_) => "not_found",
            PatronError::SlugTaken => "slug_taken",
            PatronError::SalonState { .. } => "wrong_state",
            PatronError::TierRetired => "tier_retired",
            PatronError::TierFull => "tier_full",
            PatronError::AlreadyMember => "already_member",
            PatronError::MembershipState { .. } => "membership_state",
            PatronError::SellerIncomplete(_) => "seller_details_incomplete",
            PatronError::Gateway(_) => "payment_provider_unavailable",
            PatronError::Ledger(_) | PatronError::Receipt(_) | PatronError::Seller(_) | PatronError::Database(_) => {
                "internal"
            }
        }
    }
}

impl From<kanpa_ledger::EntryError> for PatronError {
    fn from(e: kanpa_ledger::EntryError) -> Self {
        PatronError::Ledger(e.into())
    }
}
