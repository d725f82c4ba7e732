use kanpa_ledger::LedgerError;
use kanpa_payments::GatewayError;

use crate::model::{CampaignStatus, Invalid};

/// Everything a campaign operation can refuse or fail with. The server maps
/// each variant to a status and a message in the user's language.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Unknown, or belonging to another campaign or organisation: the two are
    /// reported alike.
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("the slug is already taken")]
    SlugTaken,
    #[error("not possible while the campaign is {status}")]
    WrongState { status: CampaignStatus },
    /// Not live, not started, or past its deadline.
    #[error("the campaign is not taking pledges")]
    NotOpen,
    /// Cancelling is refused: money has been collected (and not refunded)
    /// or payments are on their way.
    #[error("money has been taken ({collected}, {on_their_way} payments on their way)")]
    MoneyTaken { collected: kanpa_ledger::Money, on_their_way: i64 },
    #[error("the reward is sold out")]
    SoldOut,
    /// Outside its availability window, or for another team.
    #[error("the reward is not available")]
    RewardUnavailable,
    /// The pledge can no longer be changed (charged, cancelled, or past the deadline).
    #[error("the pledge can no longer be changed")]
    PledgeLocked,
    /// A sign-in link that is unknown, expired or already used.
    #[error("the sign-in link has expired or was already used")]
    LinkExpired,
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

impl CampaignError {
    /// A stable machine-readable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            CampaignError::Invalid(invalid) => invalid.problem.code(),
            CampaignError::NotFound(_) => "not_found",
            CampaignError::SlugTaken => "slug_taken",
            CampaignError::WrongState { .. } => "wrong_state",
            CampaignError::NotOpen => "campaign_closed",
            CampaignError::MoneyTaken { .. } => "money_taken",
            CampaignError::SoldOut => "sold_out",
            CampaignError::RewardUnavailable => "reward_unavailable",
            CampaignError::PledgeLocked => "pledge_locked",
            CampaignError::LinkExpired => "link_expired",
            CampaignError::SellerIncomplete(_) => "seller_details_incomplete",
            CampaignError::Gateway(_) => "payment_provider_unavailable",
            CampaignError::Ledger(_)
            | CampaignError::Receipt(_)
            | CampaignError::Seller(_)
            | CampaignError::Database(_) => "internal",
        }
    }
}

impl From<kanpa_ledger::EntryError> for CampaignError {
    fn from(e: kanpa_ledger::EntryError) -> Self {
        CampaignError::Ledger(e.into())
    }
}

/// A sign-in refusal in the words of the pledge forms: the same field and
/// problems as any email a supporter types.
impl From<kanpa_messaging::signin::SignInError> for CampaignError {
    fn from(e: kanpa_messaging::signin::SignInError) -> Self {
        use crate::model::{Problem, invalid};
        use kanpa_messaging::signin::SignInError as E;
        match e {
            E::EmailRequired => invalid("email", Problem::Required).into(),
            E::EmailTooLong => invalid("email", Problem::TooLong { max: 254 }).into(),
            E::InvalidEmail => invalid("email", Problem::Email).into(),
            E::LinkExpired => CampaignError::LinkExpired,
            E::Database(e) => CampaignError::Database(e),
            E::Outbox(e) => CampaignError::Database(sqlx::Error::Protocol(e.to_string())),
        }
    }
}
