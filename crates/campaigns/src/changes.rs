//! What may change about a campaign once people can see it, and how it
//! ends early. Plain decisions, no I/O: the store and the cancellation
//! flow call them inside their transactions.
//!
//! - Words (titles, stories, descriptions, names) may change until the
//!   campaign settles.
//! - A goal (the campaign's or a team's) may change freely in a draft; once
//!   live it may only rise: supporters of an all-or-nothing drive pledged
//!   on the promise that the goal they saw decides whether they are
//!   charged, so lowering it would charge people who would not have been.
//! - A reward's minimum pledge is fixed once live (supporters chose it at
//!   that price); its quantity may change but never below what is claimed.
//! - The currency never changes.
//! - A reward or a tier is retired rather than deleted: it takes no new
//!   pledges or members, and those who have it keep it.
//! - Closing early moves the deadline to now and settles by the usual
//!   rules (an all-or-nothing drive that has met its goal charges; one
//!   that has not voids every pledge and tells everyone).
//! - Cancelling ends a drive with nobody charged. It is possible while no
//!   money can have been taken: a draft, or a live drive with nothing
//!   collected and no payment on its way (a konbini voucher waiting to be
//!   paid, or for keep-it-all a Checkout still open). Money already taken
//!   is refunded pledge by pledge first, so nothing is lost.

use crate::error::CampaignError;
use crate::model::{CampaignStatus, FundingModel, Problem, invalid};
use kanpa_ledger::Money;

/// Whether a goal may change from `current` to `new` (both in the campaign's
/// currency) while the campaign is `status`.
pub fn goal_change(
    field: &'static str,
    status: CampaignStatus,
    current: Money,
    new: Money,
) -> Result<(), CampaignError> {
    match status {
        CampaignStatus::Draft => Ok(()),
        CampaignStatus::Live if new.amount() >= current.amount() => Ok(()),
        CampaignStatus::Live => Err(invalid(field, Problem::BelowMinimum { min: current }).into()),
        CampaignStatus::Settling | CampaignStatus::Succeeded | CampaignStatus::Failed | CampaignStatus::Cancelled => {
            Err(CampaignError::WrongState { status })
        }
    }
}

/// Whether words may change while the campaign is `status`.
pub fn words_change(status: CampaignStatus) -> Result<(), CampaignError> {
    match status {
        CampaignStatus::Draft | CampaignStatus::Live => Ok(()),
        CampaignStatus::Settling | CampaignStatus::Succeeded | CampaignStatus::Failed | CampaignStatus::Cancelled => {
            Err(CampaignError::WrongState { status })
        }
    }
}

/// Whether a reward's minimum pledge may change from `current` to `new`.
pub fn reward_minimum_change(status: CampaignStatus, current: i64, new: i64) -> Result<(), CampaignError> {
    words_change(status)?;
    if current != new && status != CampaignStatus::Draft {
        return Err(CampaignError::WrongState { status });
    }
    Ok(())
}

/// Whether a reward may be retired (or brought back) while the campaign is
/// `status`.
pub fn reward_retirement(status: CampaignStatus) -> Result<(), CampaignError> {
    words_change(status)
}

/// What stands in the way of cancelling: the campaign's state, and money
/// that has been or may yet be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelCheck {
    pub status: CampaignStatus,
    pub funding_model: FundingModel,
    /// Collected and not refunded (the maintained aggregate).
    pub collected: Money,
    /// Pledges whose money is on its way: konbini vouchers issued, and for
    /// keep-it-all, Checkouts still open.
    pub payments_on_their_way: i64,
}

/// Whether the campaign may be cancelled.
pub fn may_cancel(check: CancelCheck) -> Result<(), CampaignError> {
    match check.status {
        CampaignStatus::Draft => Ok(()),
        CampaignStatus::Live if check.collected.amount() == 0 && check.payments_on_their_way == 0 => Ok(()),
        CampaignStatus::Live => {
            Err(CampaignError::MoneyTaken { collected: check.collected, on_their_way: check.payments_on_their_way })
        }
        CampaignStatus::Settling | CampaignStatus::Succeeded | CampaignStatus::Failed | CampaignStatus::Cancelled => {
            Err(CampaignError::WrongState { status: check.status })
        }
    }
}

/// Whether the campaign may close before its deadline.
pub fn may_close_early(status: CampaignStatus) -> Result<(), CampaignError> {
    match status {
        CampaignStatus::Live => Ok(()),
        CampaignStatus::Draft
        | CampaignStatus::Settling
        | CampaignStatus::Succeeded
        | CampaignStatus::Failed
        | CampaignStatus::Cancelled => Err(CampaignError::WrongState { status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CampaignStatus as S;

    fn yen(n: i64) -> Money {
        Money::yen(n)
    }

    #[test]
    fn a_goal_changes_freely_in_a_draft_only_rises_once_live_and_is_fixed_after() {
        assert!(goal_change("goal", S::Draft, yen(500_000), yen(100_000)).is_ok());
        assert!(goal_change("goal", S::Live, yen(500_000), yen(600_000)).is_ok());
        assert!(goal_change("goal", S::Live, yen(500_000), yen(500_000)).is_ok());
        let lowered = goal_change("goal", S::Live, yen(500_000), yen(499_999));
        assert!(
            matches!(&lowered, Err(CampaignError::Invalid(i)) if i.field == "goal"
                && i.problem == Problem::BelowMinimum { min: yen(500_000) }),
            "{lowered:?}"
        );
        for status in [S::Settling, S::Succeeded, S::Failed, S::Cancelled] {
            assert!(matches!(
                goal_change("goal", status, yen(1), yen(2)),
                Err(CampaignError::WrongState { status: s }) if s == status
            ));
        }
    }

    #[test]
    fn a_rewards_minimum_is_fixed_once_live_and_words_until_it_settles() {
        assert!(reward_minimum_change(S::Draft, 3000, 5000).is_ok());
        assert!(reward_minimum_change(S::Live, 3000, 3000).is_ok());
        assert!(matches!(reward_minimum_change(S::Live, 3000, 2000), Err(CampaignError::WrongState { .. })));
        assert!(words_change(S::Live).is_ok());
        assert!(matches!(words_change(S::Succeeded), Err(CampaignError::WrongState { .. })));
        assert!(reward_retirement(S::Live).is_ok());
        assert!(reward_retirement(S::Failed).is_err());
    }

    #[test]
    fn only_a_campaign_that_has_taken_no_money_can_be_cancelled() {
        let check = |status, collected, on_their_way| {
            may_cancel(CancelCheck {
                status,
                funding_model: FundingModel::AllOrNothing,
                collected: yen(collected),
                payments_on_their_way: on_their_way,
            })
        };
        assert!(check(S::Draft, 0, 0).is_ok());
        assert!(check(S::Live, 0, 0).is_ok(), "committed cards are not money taken");
        assert!(matches!(
            check(S::Live, 3000, 0),
            Err(CampaignError::MoneyTaken { collected, on_their_way: 0 }) if collected == yen(3000)
        ));
        assert!(matches!(check(S::Live, 0, 2), Err(CampaignError::MoneyTaken { on_their_way: 2, .. })));
        for status in [S::Settling, S::Succeeded, S::Failed, S::Cancelled] {
            assert!(matches!(check(status, 0, 0), Err(CampaignError::WrongState { .. })));
        }
        assert!(may_close_early(S::Live).is_ok());
        assert!(may_close_early(S::Draft).is_err() && may_close_early(S::Settling).is_err());
    }
}
